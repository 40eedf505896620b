"""Update bundles: a Doorstep wheel (and any wheels it should install offline), signed with the
installer's Ed25519 key (protocol/keys.py). The layout, all of it covered by the checks below:

    b"DOORSTEP-BUNDLE/1\\n"                magic
    8 bytes, big-endian                   length of the header
    header                                JSON: version, notes, created, signer, payload size
                                          and SHA-256, and each file's name, size and SHA-256
    64 bytes                              Ed25519 signature over magic + length + header
    payload                               an uncompressed tar of exactly those files

``verify`` reads in that order and refuses, with the reason, a file that is not a bundle, a
truncated one (anywhere), a signature no trusted key made, a payload whose hash differs from
the signed one, and a tar holding anything but the signed files. Nothing in the header is
believed before the signature over it has been checked.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import struct
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from doorstep.core.errors import DoorstepError, SignatureError
from doorstep.protocol.keys import SigningKey, fingerprint, verify
from doorstep.provision.release import version_key, wheel_version

MAGIC = b"DOORSTEP-BUNDLE/1\n"
FORMAT = 1
MAX_HEADER = 1 << 20
SIGNATURE = 64
CHUNK = 1 << 20


class BundleRefused(DoorstepError, ValueError):
    """The bundle will not be installed; the message says why."""


@dataclass(frozen=True)
class Header:
    version: str
    notes: str
    created: str
    signer: str                              # the fingerprint of the key that signed it
    payload_size: int
    payload_sha256: str
    files: tuple[tuple[str, int, str], ...]  # (name, size, sha256)

    @property
    def wheel(self) -> str:
        return f"doorstep-{self.version}-py3-none-any.whl"

    def to_json(self) -> bytes:
        return json.dumps({"format": FORMAT, "version": self.version, "notes": self.notes,
                           "created": self.created, "signer": self.signer,
                           "payload_size": self.payload_size,
                           "payload_sha256": self.payload_sha256,
                           "files": [{"name": n, "size": s, "sha256": h}
                                     for n, s, h in self.files]},
                          sort_keys=True, separators=(",", ":")).encode("utf-8")

    @classmethod
    def parse(cls, raw: bytes) -> Header:
        try:
            doc = json.loads(raw)
            if doc.get("format") != FORMAT:
                raise BundleRefused(f"bundle format {doc.get('format')!r}; this Doorstep "
                                    f"reads format {FORMAT}")
            files = tuple((str(f["name"]), int(f["size"]), str(f["sha256"]))
                          for f in doc["files"])
            header = cls(str(doc["version"]), str(doc.get("notes", "")),
                         str(doc.get("created", "")), str(doc.get("signer", "")),
                         int(doc["payload_size"]), str(doc["payload_sha256"]), files)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BundleRefused(f"the signed header is malformed: {exc}") from exc
        version_key(header.version)
        if header.wheel not in {n for n, _, _ in files}:
            raise BundleRefused(f"the bundle does not hold {header.wheel}")
        for name, _, _ in files:
            if "/" in name or name.startswith(".") or not name:
                raise BundleRefused(f"the bundle names a file {name!r}: only plain names")
        return header


def _sha256_file(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def make(out: Path, *, key: SigningKey, wheel: Path, extra: Sequence[Path] = (),
         notes: str = "", now: dt.datetime | None = None) -> Header:
    """Write a signed bundle of ``wheel`` and ``extra`` (wheels to install offline)."""
    version = wheel_version(wheel)
    files = []
    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in (wheel, *extra):
            size, digest = _sha256_file(path)
            files.append((path.name, size, digest))
            info = tarfile.TarInfo(path.name)
            info.size, info.mode, info.mtime = size, 0o644, 0
            with open(path, "rb") as f:
                tar.addfile(info, f)
    body = payload.getvalue()
    stamp = (now or dt.datetime.now(dt.UTC)).isoformat(timespec="seconds")
    header = Header(version, notes, stamp, fingerprint(key.public_key), len(body),
                    hashlib.sha256(body).hexdigest(), tuple(files))
    raw = header.to_json()
    signed = MAGIC + struct.pack(">Q", len(raw)) + raw
    tmp = out.with_name(f".{out.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(signed)
        f.write(key.sign(signed))
        f.write(body)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out)
    return header


def _read_exactly(f: BinaryIO, n: int, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise BundleRefused(f"truncated: the file ends inside the {what} ({len(data)} of {n} "
                            f"bytes)")
    return data


def read_header(path: Path, trusted: Sequence[Ed25519PublicKey]) -> tuple[Header, int]:
    """The signed header, and where the payload starts; raises BundleRefused with the reason."""
    if not trusted:
        raise BundleRefused("no installer keys to check it against: set update.keys in the "
                            "config to the installer's public key (ed25519:...)")
    try:
        with open(path, "rb") as f:
            return _read_header(f, trusted)
    except OSError as exc:
        raise BundleRefused(f"cannot read {path}: {exc.strerror}") from exc


def _read_header(f: BinaryIO, trusted: Sequence[Ed25519PublicKey]) -> tuple[Header, int]:
    magic = f.read(len(MAGIC))
    if magic != MAGIC:
        if MAGIC.startswith(magic):
            raise BundleRefused(f"truncated: the file ends inside the magic ({len(magic)} "
                                f"bytes)")
        raise BundleRefused("not a Doorstep bundle (it does not start with "
                            "DOORSTEP-BUNDLE/1)")
    (length,) = struct.unpack(">Q", _read_exactly(f, 8, "header length"))
    if length > MAX_HEADER:
        raise BundleRefused(f"the header claims {length} bytes; at most {MAX_HEADER}")
    raw = _read_exactly(f, length, "header")
    signature = _read_exactly(f, SIGNATURE, "signature")
    signed = MAGIC + struct.pack(">Q", length) + raw
    for public in trusted:
        try:
            verify(public, signature, signed)
            break
        except SignatureError:
            continue
    else:
        names = ", ".join(fingerprint(k) for k in trusted)
        raise BundleRefused(f"bad signature: no installer key in update.keys ({names}) "
                            f"signed this bundle")
    return Header.parse(raw), len(signed) + SIGNATURE


def verify_payload(path: Path, header: Header, offset: int) -> None:
    """The payload is exactly the signed size and hash."""
    size = path.stat().st_size - offset
    if size < header.payload_size:
        raise BundleRefused(f"truncated: the payload is {size} of {header.payload_size} bytes")
    if size > header.payload_size:
        raise BundleRefused(f"{size - header.payload_size} bytes follow the signed payload")
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(offset)
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    if digest.hexdigest() != header.payload_sha256:
        raise BundleRefused("the payload does not match its signed SHA-256: it was altered "
                            "or damaged")


def extract(path: Path, header: Header, offset: int, into: Path) -> list[Path]:
    """Write the signed files into ``into``, refusing any other member."""
    wanted = {name: (size, digest) for name, size, digest in header.files}
    into.mkdir(parents=True, exist_ok=True)
    out = []
    with open(path, "rb") as f:
        f.seek(offset)
        with tarfile.open(fileobj=f, mode="r:") as tar:
            for member in tar:
                if member.name not in wanted or not member.isreg():
                    raise BundleRefused(f"the payload holds {member.name!r}, which the "
                                        f"signed header does not list")
                source = tar.extractfile(member)
                assert source is not None  # a regular file
                target = into / member.name
                digest = hashlib.sha256()
                with open(target, "wb") as dest:
                    while chunk := source.read(CHUNK):
                        digest.update(chunk)
                        dest.write(chunk)
                if (member.size, digest.hexdigest()) != wanted[member.name]:
                    raise BundleRefused(f"{member.name}: not the file the header signed")
                out.append(target)
    missing = set(wanted) - {p.name for p in out}
    if missing:
        raise BundleRefused(f"the payload lacks {', '.join(sorted(missing))}")
    return out


def describe(header: Header) -> dict[str, Any]:
    return {"version": header.version, "notes": header.notes, "created": header.created,
            "signer": header.signer,
            "files": [{"name": n, "size": s} for n, s, _ in header.files]}
