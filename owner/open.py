"""Opening artifacts on the owner's machine: verify the device's signature and the ciphertext
hash, then decrypt with the owner's age identity. Plaintext is written only where the owner
asks."""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from doorstep.core.errors import DoorstepError, KeyFileError, SealError
from doorstep.core.fsutil import write_atomic
from doorstep.owner.store import STORED_NAME
from doorstep.protocol.age import AgeReader, X25519Identity, decrypt, load_identities
from doorstep.protocol.keys import parse_public_key
from doorstep.protocol.manifest import Manifest, open_envelope

EXTENSIONS = {"clip": ".mp4", "clip_partial": ".mp4", "snapshot": ".jpg", "thumbnail": ".jpg",
              "event": ".json"}


@dataclass(frozen=True)
class Opened:
    manifest: Manifest
    plaintext: bytes
    out: Path | None


def device_key_for(path: Path) -> Ed25519PublicKey:
    """The device key stored beside an artifact in an inbox store (``device.pub``)."""
    pub = path.parent / "device.pub"
    try:
        return parse_public_key(pub.read_text().strip())
    except OSError as exc:
        raise KeyFileError(f"{pub}: no device key beside the artifact; pass --device-key "
                           f"({exc.strerror})") from exc


def open_artifact(path: Path, identities: list[X25519Identity],
                  device_key: Ed25519PublicKey | None = None) -> tuple[Manifest, bytes]:
    """Verify ``path`` against its ``.env`` manifest and decrypt it."""
    env = path.with_suffix(".env")
    try:
        envelope = env.read_bytes()
        ciphertext = path.read_bytes()
    except OSError as exc:
        raise SealError(f"{exc.filename}: cannot read: {exc.strerror}") from exc
    manifest = open_envelope(envelope, device_key or device_key_for(path))
    if len(ciphertext) != manifest.size or \
            hashlib.sha256(ciphertext).hexdigest() != manifest.sha256:
        raise SealError(f"{path}: the ciphertext does not match the device's signed manifest "
                        "(altered or corrupt)")
    if manifest.kind == "clip_partial":
        # the device signed it as cut short by a crash: every whole chunk authenticates, and
        # only the missing final chunk is excused
        return manifest, AgeReader(io.BytesIO(ciphertext), identities,
                                   allow_truncated=True).read()
    return manifest, decrypt(ciphertext, identities)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("open", help="verify and decrypt artifacts with the owner's key",
                       description="Verify each artifact's signed manifest and hash, then "
                       "decrypt it. Writes NAME.mp4 / .jpg / .json into --out-dir.")
    p.add_argument("artifacts", nargs="+", metavar="FILE.age",
                   help="artifacts from an inbox store (a directory opens every one in it)")
    p.add_argument("-i", "--identity", default="owner.key", metavar="FILE",
                   help="the owner's age identity file (default: owner.key)")
    p.add_argument("--device-key", metavar="ed25519:...",
                   help="the device's public key (default: device.pub beside the artifact)")
    p.add_argument("--out-dir", default=".", metavar="DIR", help="where to write plaintext")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        identities = load_identities(args.identity)
        device_key = parse_public_key(args.device_key) if args.device_key else None
    except DoorstepError as exc:
        print(f"doorstep open: {exc}", file=sys.stderr)
        return 2
    paths: list[Path] = []
    for a in args.artifacts:
        p = Path(a)
        # in a store directory, only the artifacts themselves (not shared copies beside them)
        paths.extend(sorted(q for q in p.glob("*.age") if STORED_NAME.match(q.name))
                     if p.is_dir() else [p])
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    failures = 0
    for path in paths:
        try:
            manifest, plaintext = open_artifact(path, identities, device_key)
        except DoorstepError as exc:
            print(f"doorstep open: {path}: {exc}", file=sys.stderr)
            failures += 1
            continue
        out = out_dir / (path.name.removesuffix(".age").rsplit(".", 1)[0] + "." +
                         manifest.kind + EXTENSIONS.get(manifest.kind, ".bin"))
        write_atomic(out, plaintext)
        detail = ""
        if manifest.kind == "event":
            body = json.loads(plaintext)
            detail = f" type={body.get('type')}"
        print(f"{path.name}: verified seq {manifest.seq} {manifest.kind}{detail} -> {out}")
    return 1 if failures else 0
