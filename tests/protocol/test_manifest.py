"""Signed manifests and their hash chain: what lets the owner prove a clip is from their doorbell
and notice what a relay dropped or changed."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from pathlib import Path

import pytest

from doorstep.core.errors import KeyFileError, SealError, SignatureError
from doorstep.protocol.keys import DeviceKey, SigningKey, fingerprint, parse_public_key, verify
from doorstep.protocol.manifest import (
    Chain,
    Manifest,
    manifest_hash,
    open_envelope,
    sign_manifest,
    verify_chain,
)


def digest(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def make_chain(n: int, size: int = 1000) -> tuple[Chain, list[Manifest]]:
    chain = Chain("door")
    ms = [chain.next("clip" if i % 2 else "event", size + i, digest(i), created=1.7e9 + i,
                     clock_synced=True, priority=i % 2) for i in range(n)]
    return chain, ms


def test_key_file_round_trip(tmp_path: Path) -> None:
    key = DeviceKey.generate()
    path = tmp_path / "device.key"
    key.save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.listdir(tmp_path) == ["device.key"]               # no temporary file left behind
    loaded = SigningKey.load(path)
    assert loaded.public_text() == key.public_text()
    pub = parse_public_key(key.public_text())
    verify(pub, loaded.sign(b"ring"), b"ring")
    with pytest.raises(SignatureError, match=fingerprint(pub)):
        verify(pub, loaded.sign(b"ring"), b"rang")
    assert len(fingerprint(pub)) == 19


def test_key_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match=r"missing\.key: cannot read"):
        SigningKey.load(tmp_path / "missing.key")
    (tmp_path / "junk.key").write_text("not a key")
    with pytest.raises(KeyFileError, match=r"junk\.key: not an unencrypted PEM"):
        SigningKey.load(tmp_path / "junk.key")
    with pytest.raises(KeyFileError, match="does not start with 'ed25519:'"):
        parse_public_key("ssh-ed25519 AAAA")
    with pytest.raises(KeyFileError, match="want 32"):
        parse_public_key("ed25519:" + base64.b64encode(b"short").decode())


def test_sign_and_open_round_trip() -> None:
    key = DeviceKey.generate()
    _, ms = make_chain(2)
    env = sign_manifest(key, ms[1])
    assert open_envelope(env, key.public_key, expect_device="door") == ms[1]
    assert manifest_hash(env) == ms[1].hash()
    # Re-spacing the JSON (as a relay might) changes neither validity nor the chain hash.
    respaced = json.dumps(json.loads(env), indent=2).encode()
    assert open_envelope(respaced, key.public_key) == ms[1]
    assert manifest_hash(respaced) == manifest_hash(env)


def test_forgery_and_tampering_are_rejected() -> None:
    key = DeviceKey.generate()
    _, ms = make_chain(1)
    env = sign_manifest(key, ms[0])
    with pytest.raises(SignatureError, match="bad signature"):
        open_envelope(env, DeviceKey.generate().public_key)      # someone else's key
    forged = sign_manifest(DeviceKey.generate(), ms[0])
    with pytest.raises(SignatureError):
        open_envelope(forged, key.public_key)
    doc = json.loads(env)
    doc["manifest"]["size"] += 1
    with pytest.raises(SignatureError):
        open_envelope(json.dumps(doc).encode(), key.public_key)
    with pytest.raises(SignatureError, match="expected 'porch'"):
        open_envelope(env, key.public_key, expect_device="porch")


@pytest.mark.parametrize("data, message", [
    (b"{" * 20_000, "more than 16384"),
    (b'{"manifest": {', "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b'{"manifest": {}, "sig": "", "x": 1}', "must be"),
    (b'{"manifest": {"seq": 1}, "sig": ""}', "missing"),
    (b'{"manifest": {}, "manifest": {}, "sig": ""}', "duplicate key"),
])
def test_malformed_envelopes(data: bytes, message: str) -> None:
    with pytest.raises(SealError, match=message):
        open_envelope(data, DeviceKey.generate().public_key)


def test_invalid_field_values_are_named() -> None:
    key = DeviceKey.generate()
    _, ms = make_chain(1)
    doc = json.loads(sign_manifest(key, ms[0]))
    doc["manifest"].update(kind="selfie", seq=True, sha256="XYZ")
    with pytest.raises(SealError, match=r"seq True.*kind 'selfie'.*sha256"):
        open_envelope(json.dumps(doc).encode(), key.public_key)
    doc = json.loads(sign_manifest(key, ms[0]))
    doc["manifest"]["created"] = float("nan")
    with pytest.raises(SealError, match="NaN is not allowed"):
        open_envelope(json.dumps(doc).encode(), key.public_key)


def test_chain_links_and_persists() -> None:
    chain, ms = make_chain(3)
    assert [m.seq for m in ms] == [1, 2, 3]
    assert ms[0].prev == "" and ms[1].prev == ms[0].hash() and ms[2].prev == ms[1].hash()
    assert ms[2].artifact == "door-3"
    restored = Chain.from_json(chain.to_json())
    assert restored.next("event", 1, digest(9), created=0, clock_synced=False).prev == ms[2].hash()
    assert Chain.after(ms[2]).last_hash == chain.last_hash
    with pytest.raises(SealError, match="unreadable"):
        Chain.from_json("{}")
    assert verify_chain(ms) == []
    assert verify_chain(ms, [m.hash() for m in ms]) == []


def test_verify_chain_finds_gap_broken_link_and_duplicate() -> None:
    _, ms = make_chain(7)
    got = [ms[0], ms[1], ms[1], ms[4], ms[5], ms[6]]           # 3-4 missing, 2 twice
    assert verify_chain(got) == ["door seq 2: duplicate (received 2 times)",
                                 "door: missing seq 3-4"]
    _, other = make_chain(7, size=5)                                  # a second, different history
    spliced = [ms[0], ms[1], other[2], ms[3]]
    problems = verify_chain(spliced)
    assert "door seq 3: prev does not match seq 2 (broken link)" in problems
    assert "door seq 4: prev does not match seq 3 (broken link)" in problems
    assert "door seq 2: 2 different manifests (fork or forgery)" in verify_chain(
        [ms[0], ms[1], other[1]])
    assert verify_chain(ms[2:]) == ["door: missing seq 1-2"]
