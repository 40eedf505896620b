"""Sealed boxes (wire version 2): the X25519 form of an Ed25519 key, checked against the real
age CLI, Padmé padding, and boxes that refuse what was not sealed to them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from doorstep.core.errors import SealError
from doorstep.protocol.keys import SigningKey
from doorstep.protocol.seal import (
    MIN_PADDED,
    identity_of,
    open_box,
    pad_size,
    recipient_of,
    seal,
    seal_box,
)


def test_the_x25519_form_of_a_key_pairs_with_the_form_of_its_secret() -> None:
    for _ in range(20):
        key = SigningKey.generate()
        assert identity_of(key).recipient == recipient_of(key.public_key)


@pytest.mark.skipif(shutil.which("age") is None, reason="the age CLI is not installed")
def test_a_box_sealed_to_the_derived_key_opens_with_the_age_cli(tmp_path: Path) -> None:
    """The derived identity is an ordinary age X25519 identity: age itself opens the box."""
    key = SigningKey.generate()
    identity = tmp_path / "inbox-x25519.key"
    identity.write_text(f"{identity_of(key)}\n")
    sealed = tmp_path / "box.age"
    sealed.write_bytes(seal(b"the manifest", recipient_of(key.public_key), 64))
    out = subprocess.run(["age", "-d", "-i", str(identity), str(sealed)],
                         capture_output=True, check=True).stdout
    assert out[4:4 + len(b"the manifest")] == b"the manifest" and len(out) == 64
    assert not any(out[4 + len(b"the manifest"):])


def test_padme_adds_at_most_12_percent_and_leaves_few_sizes() -> None:
    assert pad_size(0) == pad_size(MIN_PADDED) == MIN_PADDED
    for size in (1025, 4097, 18_488, 111_000, 180_620, 1_552_115, 30_000_000):
        padded = pad_size(size)
        assert size <= padded <= size * 1.12 and pad_size(padded) == padded
    # from 64 KiB to 128 KiB: multiples of 2 KiB, 33 sizes (the last is 128 KiB) for 65,536
    sizes = {pad_size(n) for n in range(65_536, 131_072)}
    assert len(sizes) == 33 and all(s % 2048 == 0 for s in sizes)


def test_a_box_refuses_another_key_another_magic_and_bad_padding() -> None:
    key, other = SigningKey.generate(), SigningKey.generate()
    box = seal_box(b"DS2X", b"hello", recipient_of(key.public_key))
    assert open_box(b"DS2X", box, identity_of(key), "test", 4096) == b"hello"
    with pytest.raises(SealError, match="cannot be opened"):
        open_box(b"DS2X", box, identity_of(other), "test", 4096)
    with pytest.raises(SealError, match="bad magic"):
        open_box(b"DS2Y", box, identity_of(key), "test", 4096)
    with pytest.raises(SealError, match="over the"):
        open_box(b"DS2X", box, identity_of(key), "test", 100)
    # a length field that overruns, or padding that is not zeros: someone else's box
    from doorstep.protocol.age import encrypt
    for framed in (b"\x00\x00\x10\x00" + bytes(60), b"\x00\x00\x00\x01h" + b"x" * 59):
        forged = b"DS2X" + encrypt(framed, [recipient_of(key.public_key)])
        with pytest.raises(SealError, match="length or padding"):
            open_box(b"DS2X", forged, identity_of(key), "test", 4096)
