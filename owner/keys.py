"""`doorstep keys`: make the owner's identity (age X25519 for decryption, Ed25519 for signing
commands), a device key, or an inbox key. Secret files are written 0600, atomically, and never
overwritten."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from doorstep.core.fsutil import atomic_file
from doorstep.protocol.age import X25519Identity
from doorstep.protocol.keys import SigningKey, fingerprint


def make_owner(out: Path) -> tuple[str, str]:
    """Writes owner.key (age identity) and owner-command.key; returns (recipient, command pub)."""
    identity = X25519Identity.generate()
    command = SigningKey.generate()
    _refuse_existing(out / "owner.key", out / "owner-command.key")
    with atomic_file(out / "owner.key", 0o600) as f:
        f.write(f"# doorstep owner identity\n# public key: {identity.recipient}\n"
                f"{identity}\n".encode())
    command.save(out / "owner-command.key")
    return str(identity.recipient), command.public_text()


def make_signing(path: Path) -> SigningKey:
    _refuse_existing(path)
    key = SigningKey.generate()
    key.save(path)
    return key


def _refuse_existing(*paths: Path) -> None:
    for p in paths:
        if p.exists():
            raise FileExistsError(f"{p} already exists; refusing to overwrite a key")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("keys", help="create owner, device or inbox keys",
                       description="owner: owner.key (age identity; works with `age -d -i`) and "
                       "owner-command.key (Ed25519, signs commands). device: device.key "
                       "(Ed25519, signs manifests). inbox: inbox.key (Ed25519, signs receipts).")
    p.add_argument("which", choices=["owner", "device", "inbox"])
    p.add_argument("--out", default=".", metavar="DIR", help="directory for the key files")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        if args.which == "owner":
            recipient, command = make_owner(out)
            print(f"wrote {out / 'owner.key'} and {out / 'owner-command.key'}")
            print(f"put in the device config: [owner] recipients = [\"{recipient}\"]")
            print(f"                          [owner] command_key = \"{command}\"")
        else:
            path = out / f"{args.which}.key"
            key = make_signing(path)
            print(f"wrote {path}")
            print(f"public key: {key.public_text()}")
            print(f"fingerprint: {fingerprint(key.public_key)}")
    except OSError as exc:
        print(f"doorstep keys: {exc}", file=sys.stderr)
        return 1
    return 0
