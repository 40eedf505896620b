"""Sealed boxes for the wire (version 2): small messages that only one party can read, padded so
that their length says little. What the broker may learn is docs/wire.md's "What the broker
sees"; this module is how the rest is hidden from it.

A box is ``magic`` followed by an age v1 file (one X25519 recipient) of
``u32 length || content || zero padding`` up to a multiple of ``bucket`` bytes. Anyone may seal a
box to a public key, so a box only hides; what it carries is signed inside (manifests, the
chunking, the status), and the opener checks that signature.

Both ends already hold Ed25519 keys (the device key signs manifests, the inbox key signs
receipts), so a box is sealed to the X25519 form of the reader's Ed25519 key, as age's
ssh-ed25519 recipients and libsodium's ``crypto_sign_ed25519_pk_to_curve25519`` do: the public
point maps to Montgomery form, u = (1 + y) / (1 - y), and the secret scalar is the first half of
SHA-512 of the Ed25519 seed. No new key has to be made, stored or typed into a config.
"""

from __future__ import annotations

import hashlib
import struct

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from doorstep.core.errors import SealError
from doorstep.protocol.age import X25519Identity, X25519Recipient, decrypt, encrypt
from doorstep.protocol.keys import SigningKey

_P = 2**255 - 19
MIN_PADDED = 1024


def recipient_of(public: Ed25519PublicKey) -> X25519Recipient:
    """The X25519 recipient of an Ed25519 public key (its birational Montgomery form)."""
    y = int.from_bytes(public.public_bytes_raw(), "little") & ((1 << 255) - 1)
    if y >= _P or (1 - y) % _P == 0:
        raise SealError("an Ed25519 key with no X25519 form (the neutral point)")
    u = (1 + y) * pow(1 - y, _P - 2, _P) % _P
    return X25519Recipient(u.to_bytes(32, "little"))


def identity_of(key: SigningKey) -> X25519Identity:
    """The X25519 identity matching ``recipient_of(key.public_key)``."""
    seed = key.private_seed()
    scalar = hashlib.sha512(seed).digest()[:32]
    return X25519Identity(X25519PrivateKey.from_private_bytes(scalar))


def pad_size(size: int) -> int:
    """The padded length of ``size`` bytes: Padmé (Nikitin et al., "Reducing metadata leakage
    from encrypted files and communication with PURBs", PETS 2019). At most 12% is added, and a
    length leaks O(log log size) bits instead of O(log size). Nothing is smaller than
    MIN_PADDED."""
    if size <= MIN_PADDED:
        return MIN_PADDED
    e = size.bit_length() - 1            # floor(log2 size)
    s = e.bit_length()                   # floor(log2 e) + 1
    mask = (1 << (e - s)) - 1
    return (size + mask) & ~mask


def seal(content: bytes, recipient: X25519Recipient, bucket: int = 1024) -> bytes:
    """An age file of ``u32 length || content || zeros``, its length a multiple of ``bucket``
    before sealing (so the sealed length hides the content's to that bucket)."""
    framed = struct.pack(">I", len(content)) + content
    framed += bytes(-len(framed) % bucket)
    return encrypt(framed, [recipient])


def unseal(sealed: bytes, identity: X25519Identity, what: str) -> bytes:
    """The content of ``seal(...)``; SealError says what was wrong."""
    try:
        framed = decrypt(sealed, [identity])
    except SealError as exc:
        raise SealError(f"{what}: cannot be opened: {exc}") from None
    if len(framed) < 4:
        raise SealError(f"{what}: sealed content too short")
    (n,) = struct.unpack(">I", framed[:4])
    if 4 + n > len(framed) or any(framed[4 + n:]):
        raise SealError(f"{what}: bad length or padding inside the seal")
    return framed[4:4 + n]


def seal_box(magic: bytes, content: bytes, recipient: X25519Recipient,
             bucket: int = 1024) -> bytes:
    """A whole message: ``magic`` then the sealed content."""
    return magic + seal(content, recipient, bucket)


def open_box(magic: bytes, payload: bytes, identity: X25519Identity, what: str,
             limit: int) -> bytes:
    """The content of a ``seal_box`` message, checked against its magic and a size limit."""
    if len(payload) > limit:
        raise SealError(f"{what}: {len(payload)} bytes is over the {limit}-byte limit")
    if payload[:4] != magic:
        raise SealError(f"{what}: not a Doorstep v2 {what} (bad magic)")
    return unseal(payload[4:], identity, what)
