"""Sharing one artifact: re-wrap its age header for one new recipient (the payload is copied, not
re-encrypted), write the copy atomically and record the act in the owner's audit log."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from doorstep.core.errors import DoorstepError
from doorstep.core.fsutil import atomic_file
from doorstep.protocol.age import X25519Identity, X25519Recipient, load_identities, rewrap

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShareRecord:
    """One line of the audit log."""

    time: float
    source: str
    source_sha256: str
    recipient: str
    shared: str
    shared_sha256: str
    note: str


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1024 * 1024):
            h.update(block)
    return h.hexdigest()


def share(src_path: str | os.PathLike[str], identities: Sequence[X25519Identity],
          recipient: X25519Recipient, dst_path: str | os.PathLike[str],
          audit_log_path: str | os.PathLike[str], note: str = "",
          clock: Callable[[], float] = time.time) -> ShareRecord:
    """Write dst_path: src_path's artifact readable by `recipient` only. src_path is only read.

    The audit line is appended (and fsynced) before the copy is renamed into place, so a share
    that exists is always on record. An existing dst_path is refused, never overwritten.
    """
    src, dst = Path(src_path), Path(dst_path)
    if dst.exists():
        raise FileExistsError(f"{dst}: already exists; choose another --out or remove it")
    source_sha = _sha256_file(src)
    with atomic_file(dst, 0o600) as out, src.open("rb") as f:
        rewrap(f, identities, [recipient], out)
        out.flush()
        out.seek(0)
        shared_sha = hashlib.sha256()
        while block := out.read(1024 * 1024):
            shared_sha.update(block)
        record = ShareRecord(time=clock(), source=src.name, source_sha256=source_sha,
                             recipient=str(recipient), shared=dst.name,
                             shared_sha256=shared_sha.hexdigest(), note=note)
        append_audit(Path(audit_log_path), record)
    log.info("shared %s with %s as %s", src.name, recipient, dst.name)
    return record


def append_audit(path: Path, record: ShareRecord) -> None:
    line = json.dumps(asdict(record), sort_keys=True, ensure_ascii=False) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    dfd = os.open(path.parent, os.O_RDONLY)   # the log may have just been created
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `share ARTIFACT --to age1...` to the doorstep CLI; it sets `func` to the handler."""
    p = sub.add_parser("share", help="re-wrap one artifact for one recipient, with an audit record",
                       description="Make a copy of one sealed artifact that only RECIPIENT can "
                       "open. Nothing else is exposed; the act is recorded in the audit log.")
    p.add_argument("artifact", metavar="ARTIFACT", help="the sealed .age file to share")
    p.add_argument("--to", required=True, metavar="RECIPIENT", help="their age1... public key")
    p.add_argument("--identity", default="owner.key", metavar="FILE",
                   help="your age identity file (default: owner.key)")
    p.add_argument("--out", metavar="FILE",
                   help="where to write the copy (default: NAME.shared-<recipient>.age in the "
                   "current directory, never inside the inbox store)")
    p.add_argument("--audit", metavar="FILE",
                   help="audit log (default: share-audit.jsonl next to ARTIFACT)")
    p.add_argument("--note", default="", help="why, for whom: kept in the audit log")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """The `share` subcommand: 0 on success, 1 on any failure (explained on stderr)."""
    src = Path(args.artifact)
    try:
        recipient = X25519Recipient.parse(args.to)
        identities = load_identities(args.identity)
        name = src.name.removesuffix(".age")
        default_out = Path.cwd() / f"{name}.shared-{str(recipient)[4:12]}.age"
        dst = Path(args.out) if args.out else default_out
        audit = Path(args.audit) if args.audit else src.with_name("share-audit.jsonl")
        share(src, identities, recipient, dst, audit, note=args.note)
    except (DoorstepError, OSError) as e:
        print(f"doorstep share: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {dst} for {recipient}; recorded in {audit}")
    return 0
