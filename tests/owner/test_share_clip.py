"""Sharing a clip stored as segments (issue 15) from the command line: `doorstep share` on any
of its segments writes one bundle of the whole clip for one recipient; `doorstep verify-share`
checks every segment against the device's key, with the recipient's own identity, and joins
them into an MP4 that PyAV decodes; a bundle that was altered, or leaves a segment out, says
so. Each segment in it also opens with the real `age -d`."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from doorstep.cli import main
from doorstep.core.errors import DoorstepError
from doorstep.protocol import age
from tests.conftest import Keys
from tests.owner.test_open_segments import FRAMES, frames_of, store_with_a_clip


@pytest.fixture
def shared(tmp_path: Path, keys: Keys) -> tuple[Path, Path, list[int], Path]:
    store, seqs = store_with_a_clip(tmp_path, keys)
    neighbour = age.X25519Identity.generate()
    key = tmp_path / "neighbour.key"
    key.write_text(f"{neighbour}\n")
    out = tmp_path / "clip.share.tar"
    # the middle segment: the whole clip is shared
    assert main(["-q", "share", str(store / f"{seqs[1]:010d}.segment.age"),
                 "--to", str(neighbour.recipient), "--identity", str(keys.owner_file),
                 "--out", str(out), "--note", "for the police"]) == 0
    return store, out, seqs, key


def verify(keys: Keys, bundle: Path, key: Path, *extra: str) -> int:
    return main(["-q", "verify-share", str(bundle), "--identity", str(key),
                 "--device-key", keys.device.public_text(), *extra])


def test_a_shared_clip_verifies_and_joins(shared: tuple[Path, Path, list[int], Path],
                                          keys: Keys, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    store, bundle, seqs, key = shared
    with tarfile.open(bundle) as tar:
        names = tar.getnames()
        assert names[0] == "share.json"
        assert [n for n in names if n.endswith(".segment.age")] == \
            [f"{s:010d}.segment.age" for s in seqs]
        assert len([n for n in names if n.endswith(".event.age")]) == 1
        first = tar.extractfile(f"{seqs[0]:010d}.segment.age")
        assert first is not None
        data = first.read()
    # the copy is for the neighbour alone, and the real age CLI opens it
    assert len(age.read_header(io.BytesIO(data)).stanzas) == 1
    with pytest.raises(DoorstepError):
        age.decrypt(data, [keys.owner])
    (tmp_path / "one.age").write_bytes(data)
    plain = subprocess.run(["age", "-d", "-i", str(key), str(tmp_path / "one.age")],
                           check=True, capture_output=True).stdout
    assert plain[4:8] == b"ftyp"
    capsys.readouterr()
    mp4 = tmp_path / "clip.mp4"
    assert verify(keys, bundle, key, "--mp4", str(mp4)) == 0
    said = capsys.readouterr().out
    assert f"{len(seqs)} segment(s) from seq {seqs[0]}, each signed by it: verified" in said
    assert len(frames_of(mp4)) == FRAMES
    audit = json.loads((store / "share-audit.jsonl").read_text().splitlines()[-1])
    assert audit["shared"] == bundle.name and audit["note"] == "for the police"
    assert f"and {len(seqs) - 1} more segment(s), with its clip event" in audit["source"]


def _rewrite(bundle: Path, change: dict[str, bytes | None]) -> None:
    """The bundle with some files replaced (bytes) or left out (None)."""
    with tarfile.open(bundle) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    for name, data in change.items():
        if data is None:
            del files[name]
        else:
            files[name] = data
    bundle.unlink()
    with tarfile.open(bundle, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_an_altered_segment_is_named(shared: tuple[Path, Path, list[int], Path], keys: Keys,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    _, bundle, seqs, key = shared
    name = f"{seqs[2]:010d}.segment.age"
    with tarfile.open(bundle) as tar:
        data = bytearray(tar.extractfile(name).read())  # type: ignore[union-attr]
    data[-50] ^= 1
    _rewrite(bundle, {name: bytes(data)})
    assert verify(keys, bundle, key) == 1
    err = capsys.readouterr().err
    assert f"NOT verified: {bundle}: {name}: its payload is not the one the device signed" in err


def test_a_segment_left_out_is_named(shared: tuple[Path, Path, list[int], Path], keys: Keys,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    _, bundle, seqs, key = shared
    name = f"{seqs[1]:010d}.segment.age"
    with tarfile.open(bundle) as tar:
        index = json.loads(tar.extractfile("share.json").read())  # type: ignore[union-attr]
    index["files"] = [f for f in index["files"] if f["file"] != name]
    _rewrite(bundle, {name: None, "share.json": json.dumps(index).encode()})
    assert verify(keys, bundle, key) == 1
    err = capsys.readouterr().err
    assert f"the clip may be incomplete: segments seq {seqs[1]} are not in the share" in err


def test_another_devices_key_refuses_it(shared: tuple[Path, Path, list[int], Path],
                                        keys: Keys, capsys: pytest.CaptureFixture[str]) -> None:
    from doorstep.protocol.keys import SigningKey
    _, bundle, _, key = shared
    assert main(["-q", "verify-share", str(bundle), "--identity", str(key),
                 "--device-key", SigningKey.generate().public_text()]) == 1
    assert "NOT verified" in capsys.readouterr().err


def test_a_file_that_is_not_a_bundle_is_named_not_a_traceback(
        tmp_path: Path, keys: Keys, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "clip.share.tar"
    junk.write_bytes(b"not a tar at all" * 100)
    key = tmp_path / "k.key"
    key.write_text(f"{age.X25519Identity.generate()}\n")
    assert verify(keys, junk, key) == 1
    assert f"NOT verified: {junk}: not a readable clip share" in capsys.readouterr().err
