"""Ed25519 signing keys (the device's, the inbox's, the owner's): files, public-key text,
fingerprints, sign and verify. Also the atomic file write that key files and shares rely on.

Public keys are written "ed25519:<standard base64 of the raw 32 bytes>".
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from doorstep.core.errors import KeyFileError, SignatureError
from doorstep.core.fsutil import atomic_file

PUBLIC_PREFIX = "ed25519:"


class SigningKey:
    """An Ed25519 private key."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.public_key: Ed25519PublicKey = key.public_key()

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the key as PKCS#8 PEM, mode 0600, atomically."""
        pem = self._key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())
        with atomic_file(path, 0o600) as f:
            f.write(pem)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SigningKey:
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise KeyFileError(f"{path}: cannot read signing key: {e.strerror or e}") from None
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as e:
            raise KeyFileError(f"{path}: not an unencrypted PEM private key: {e}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFileError(f"{path}: holds a {type(key).__name__}, not an Ed25519 key")
        return cls(key)

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    def private_seed(self) -> bytes:
        """The 32-byte Ed25519 seed: only for deriving this key's X25519 form
        (``protocol/seal.py``), never to be written anywhere."""
        return self._key.private_bytes_raw()

    def public_text(self) -> str:
        return public_text(self.public_key)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({fingerprint(self.public_key)})"


class DeviceKey(SigningKey):
    """The doorbell's own key: signs manifests and events."""


def public_text(public: Ed25519PublicKey) -> str:
    return PUBLIC_PREFIX + base64.b64encode(public.public_bytes_raw()).decode("ascii")


def parse_public_key(text: str) -> Ed25519PublicKey:
    """Parse "ed25519:<base64>"; raises KeyFileError naming what is wrong."""
    text = text.strip()
    if not text.startswith(PUBLIC_PREFIX):
        raise KeyFileError(f"public key {text[:20]!r} does not start with {PUBLIC_PREFIX!r}")
    try:
        raw = base64.b64decode(text[len(PUBLIC_PREFIX):], validate=True)
    except binascii.Error:
        raise KeyFileError(f"public key {text[:20]!r}...: invalid base64") from None
    if len(raw) != 32:
        raise KeyFileError(f"public key {text[:20]!r}...: {len(raw)} bytes, want 32")
    return Ed25519PublicKey.from_public_bytes(raw)


def fingerprint(public: Ed25519PublicKey) -> str:
    """Short and human-checkable: the first 16 hex digits of SHA-256(raw key), e.g. 1a2b-3c4d-..."""
    digest = hashlib.sha256(public.public_bytes_raw()).hexdigest()[:16]
    return "-".join(digest[i:i + 4] for i in range(0, 16, 4))


def verify(public: Ed25519PublicKey, sig: bytes, data: bytes) -> None:
    """Raise SignatureError unless `sig` is `public`'s signature over `data`."""
    try:
        public.verify(sig, data)
    except InvalidSignature:
        raise SignatureError(f"bad signature (key {fingerprint(public)})") from None
