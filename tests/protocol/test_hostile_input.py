"""Hostile envelopes (issue 13 item 6): deep nesting, numbers too long to parse or too large
for a float, NaN. Each is refused with a SealError naming the problem, never another
exception, and `doorstep open` and `doorstep inbox verify` report it without a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from doorstep.cli import main
from doorstep.core.errors import SealError
from doorstep.protocol.keys import SigningKey
from doorstep.protocol.manifest import Chain, open_envelope, sign_manifest

KEY = SigningKey.generate()


def genuine() -> dict[str, object]:
    m = Chain("door").next("event", 10, "0" * 64, created=1.7e9, clock_synced=True)
    return json.loads(sign_manifest(KEY, m))


def with_created(text: str) -> bytes:
    doc = json.dumps(genuine()).replace('"created": 1700000000.0', f'"created": {text}')
    assert text in doc
    return doc.encode()


HOSTILE = {
    "nested": b"[" * 16_000,
    "nested object": b'{"manifest":' * 5000,
    "400 digits": with_created("1" * 400),
    "5000 digits": with_created("9" * 5000),
    "NaN": with_created("NaN"),
    "float overflow": with_created("1e400"),
    "not utf-8": b'{"manifest": "\xff\xfe"}',
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_envelopes_are_refused_with_a_seal_error(name: str) -> None:
    with pytest.raises(SealError) as err:
        open_envelope(HOSTILE[name], KEY.public_key)
    assert "Traceback" not in str(err.value) and len(str(err.value)) < 300


@pytest.mark.parametrize("name", ["nested", "400 digits", "float overflow"])
def test_open_and_verify_report_a_hostile_file_without_a_traceback(
        tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store"
    door = store / "door"
    door.mkdir(parents=True)
    (door / "device.pub").write_text(KEY.public_text() + "\n")
    (door / "0000000001.event.age").write_bytes(b"age-encryption.org/v1\n")
    (door / "0000000001.event.env").write_bytes(HOSTILE[name])
    (tmp_path / "owner.key").write_text(
        "AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX\n")
    assert main(["inbox", "verify", str(store)]) != 0
    assert main(["open", str(door / "0000000001.event.age"), "-i",
                 str(tmp_path / "owner.key"), "--out-dir", str(tmp_path / "out")]) != 0
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    assert "0000000001" in out.out + out.err
