"""Sharing one clip: the copy opens with the new recipient's key only (via the real `age` CLI),
the original is untouched, and the act is in the audit log."""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
from pathlib import Path

import pytest

from doorstep.core.errors import SealError
from doorstep.owner import share as share_mod
from doorstep.protocol import age
from doorstep.protocol.keys import SigningKey
from doorstep.protocol.manifest import Chain, sign_manifest

DEVICE = SigningKey.generate()


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path, bytes, str]:
    """An owner key file, a sealed clip for it, and a neighbour's key made by age-keygen."""
    owner = age.X25519Identity.generate()
    (tmp_path / "owner.key").write_text(f"# public key: {owner.recipient}\n{owner}\n")
    clip = os.urandom(150_000)
    sealed = age.encrypt(clip, [owner.recipient])
    (tmp_path / "door-7.age").write_bytes(sealed)
    # as in an inbox store: the device's signed manifest beside it, and the device's key
    manifest = Chain("door").next("clip", len(sealed), hashlib.sha256(sealed).hexdigest(),
                                  created=1.8e9, clock_synced=True)
    (tmp_path / "door-7.env").write_bytes(sign_manifest(DEVICE, manifest))
    (tmp_path / "device.pub").write_text(DEVICE.public_text() + "\n")
    subprocess.run(["age-keygen", "-o", str(tmp_path / "neighbour.key")], check=True,
                   capture_output=True)
    neighbour = subprocess.run(["age-keygen", "-y", str(tmp_path / "neighbour.key")], check=True,
                               capture_output=True).stdout.decode().strip()
    return tmp_path, tmp_path / "door-7.age", clip, neighbour


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="doorstep")
    share_mod.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


def test_share_via_cli(setup: tuple[Path, Path, bytes, str],
                       monkeypatch: pytest.MonkeyPatch) -> None:
    d, src, clip, neighbour = setup
    monkeypatch.chdir(d)                                       # default --identity owner.key
    before = src.read_bytes()
    assert cli("share", str(src), "--to", neighbour, "--note", "parcel thief") == 0

    shared = d / f"door-7.shared-{neighbour[4:12]}.age"          # in the current directory
    opened = subprocess.run(["age", "-d", "-i", str(d / "neighbour.key")],
                            input=shared.read_bytes(), capture_output=True, check=True)
    assert opened.stdout == clip
    with pytest.raises(SealError, match="no identity matches"):   # the owner's own copy is gone
        age.decrypt(shared.read_bytes(), age.load_identities(d / "owner.key"))

    assert src.read_bytes() == before                           # the original is untouched
    old_h = age.header_length(io.BytesIO(before))
    new_h = age.header_length(io.BytesIO(shared.read_bytes()))
    assert shared.read_bytes()[new_h:] == before[old_h:]        # payload copied, not re-sealed

    [line] = (d / "share-audit.jsonl").read_text().splitlines()
    record = json.loads(line)
    assert record["source"] == "door-7.age"
    assert record["source_sha256"] == hashlib.sha256(before).hexdigest()
    assert record["recipient"] == neighbour
    assert record["shared_sha256"] == hashlib.sha256(shared.read_bytes()).hexdigest()
    assert record["note"] == "parcel thief"


def test_share_failures_leave_no_copy_and_no_record(
        setup: tuple[Path, Path, bytes, str], capsys: pytest.CaptureFixture[str]) -> None:
    d, src, _, neighbour = setup
    out = d / "out.age"
    wrong = d / "neighbour.key"                                # cannot open the owner's clip
    assert cli("share", str(src), "--to", neighbour, "--identity", str(wrong),
               "--out", str(out)) == 1
    assert "no identity matches" in capsys.readouterr().err
    assert cli("share", str(src), "--to", "age1nope", "--identity", str(d / "owner.key")) == 1
    assert "not an age recipient" in capsys.readouterr().err
    assert not out.exists() and not (d / "share-audit.jsonl").exists()
    assert sorted(p.name for p in d.iterdir()) == ["device.pub", "door-7.age", "door-7.env",
                                                   "neighbour.key", "owner.key"]


def test_share_refuses_to_overwrite(setup: tuple[Path, Path, bytes, str]) -> None:
    d, src, _, neighbour = setup
    ids = age.load_identities(d / "owner.key")
    with pytest.raises(FileExistsError):
        share_mod.share(src, ids, age.X25519Recipient.parse(neighbour), src, d / "audit.jsonl")
    assert not (d / "audit.jsonl").exists()


def test_share_refuses_a_forged_file_that_open_refuses(
        setup: tuple[Path, Path, bytes, str], capsys: pytest.CaptureFixture[str]) -> None:
    # issue 13 item 11: share used to re-wrap and audit a file `doorstep open` refuses
    d, src, _, neighbour = setup
    data = bytearray(src.read_bytes())
    data[-1] ^= 1
    src.write_bytes(bytes(data))
    out = d / "out.age"
    assert cli("share", str(src), "--to", neighbour, "--identity", str(d / "owner.key"),
               "--out", str(out)) == 1
    assert "does not match the device's signed manifest" in capsys.readouterr().err
    assert not out.exists() and not (d / "share-audit.jsonl").exists()


def test_the_recipient_can_check_the_device_made_the_shared_copy(
        setup: tuple[Path, Path, bytes, str], capsys: pytest.CaptureFixture[str]) -> None:
    d, src, clip, neighbour = setup
    out = d / "for-neighbour.age"
    assert cli("share", str(src), "--to", neighbour, "--identity", str(d / "owner.key"),
               "--out", str(out)) == 0
    proof = d / "for-neighbour.proof.json"
    assert proof.exists() and proof.stat().st_mode & 0o077 == 0
    ok = ["verify-share", str(out), "--identity", str(d / "neighbour.key"),
          "--device-key", DEVICE.public_text()]
    assert cli(*ok) == 0
    assert "made by door, seq 1, clip" in capsys.readouterr().out
    # another device's key: refused
    assert cli("verify-share", str(out), "--identity", str(d / "neighbour.key"),
               "--device-key", SigningKey.generate().public_text()) == 1
    assert "NOT verified" in capsys.readouterr().err
    # a payload swapped for another sealing to the same recipient: refused
    other = age.encrypt(os.urandom(len(clip)),
                        [age.X25519Recipient.parse(neighbour)])
    out.write_bytes(other)
    assert cli(*ok) == 1
    assert "not the one the device signed" in capsys.readouterr().err
