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
from typing import Any

from doorstep.core.errors import DoorstepError, SealError
from doorstep.core.fmp4 import join
from doorstep.core.fsutil import atomic_file, write_atomic
from doorstep.owner.open import device_key_for
from doorstep.owner.shareclip import (
    BUNDLE_SUFFIX,
    check_copy,
    clip_files,
    is_bundle,
    proof_of,
    share_clip_files,
    verify_bundle,
)
from doorstep.protocol.age import (
    X25519Identity,
    X25519Recipient,
    load_identities,
    read_header,
    rewrap,
)
from doorstep.protocol.keys import parse_public_key
from doorstep.protocol.manifest import Manifest, open_envelope

PROOF_SUFFIX = ".proof.json"

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
    envelope, manifest = verified_source(src)     # never re-wrap what does not verify
    source_sha = manifest.sha256
    with src.open("rb") as f:
        header = read_header(f)
        f.seek(0)
        original_header = f.read(header.length)
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
        write_atomic(proof_path(dst), proof_file(envelope, original_header), mode=0o600)
    log.info("shared %s with %s as %s", src.name, recipient, dst.name)
    return record


def share_clip(src_path: str | os.PathLike[str], identities: Sequence[X25519Identity],
               recipient: X25519Recipient, dst_path: str | os.PathLike[str],
               audit_log_path: str | os.PathLike[str], note: str = "",
               clock: Callable[[], float] = time.time) -> ShareRecord:
    """Write dst_path: the whole clip that the segment ``src_path`` belongs to, as one bundle
    (owner/shareclip.py) readable by ``recipient`` only; every file verified first, the audit
    line appended before the bundle is renamed into place."""
    src, dst = Path(src_path), Path(dst_path)
    if dst.exists():
        raise FileExistsError(f"{dst}: already exists; choose another --out or remove it")
    _, manifest = verified_source(src)
    first = manifest.seq if manifest.parent == "" else int(manifest.parent)
    segments, event = clip_files(src.parent, first, identities, device_key_for(src))
    if not segments or int(segments[0].name.split(".")[0]) != first:
        raise SealError(f"{src}: the clip's first segment (seq {first}) is not in {src.parent}")
    with atomic_file(dst, 0o600) as out:
        share_clip_files([*segments, *([event] if event else [])], identities, recipient,
                         manifest.device, first, out, verified_source)
        out.flush()
        out.seek(0)
        shared_sha = hashlib.sha256()
        while block := out.read(1024 * 1024):
            shared_sha.update(block)
        record = ShareRecord(time=clock(), source=f"{segments[0].name} and "
                             f"{len(segments) - 1} more segment(s)"
                             + (f", with its clip event {event.name}" if event else ""),
                             source_sha256=verified_source(segments[0])[1].sha256,
                             recipient=str(recipient), shared=dst.name,
                             shared_sha256=shared_sha.hexdigest(), note=note)
        append_audit(Path(audit_log_path), record)
    log.info("shared the clip from %s (%d segments) with %s as %s", segments[0].name,
             len(segments), recipient, dst.name)
    return record


def proof_file(envelope: bytes, ciphertext: bytes) -> bytes:
    """The proof beside a one-file share (`doorstep share`, and the app's share through the
    hub): the device's signed manifest and the header it signed (``ciphertext`` starts with
    it), so whoever gets the copy can check that the device made it (`doorstep
    verify-share`)."""
    return json.dumps({"v": 1, **proof_of(envelope, ciphertext)}, sort_keys=True).encode()


def proof_path(shared: Path) -> Path:
    return shared.with_name(shared.name.removesuffix(".age") + PROOF_SUFFIX)


def verified_source(src: Path) -> tuple[bytes, Manifest]:
    """The signed manifest beside ``src`` (in an inbox store), checked: signature by the
    device key stored there, and the ciphertext's size and SHA-256. Raises SealError."""
    try:
        envelope = src.with_suffix(".env").read_bytes()
    except OSError as exc:
        raise SealError(f"{src}: no signed manifest beside it ({exc.strerror}); only artifacts "
                        "that verify are shared") from exc
    manifest = open_envelope(envelope, device_key_for(src))
    if src.stat().st_size != manifest.size or _sha256_file(src) != manifest.sha256:
        raise SealError(f"{src}: the ciphertext does not match the device's signed manifest "
                        "(altered or corrupt); refusing to share it")
    return envelope, manifest


def verify_share(shared: Path, identities: Sequence[X25519Identity],
                 device_public: Any) -> Manifest:
    """Check a shared copy against its proof: the device's signature on the manifest, the
    signed SHA-256 over the device's header and this copy's payload, and that both headers
    wrap the same file key. Returns the device's manifest; raises SealError."""
    try:
        proof = json.loads(proof_path(shared).read_bytes())
    except (OSError, ValueError, RecursionError) as exc:
        raise SealError(f"{proof_path(shared)}: no readable proof ({exc})") from exc
    if not isinstance(proof, dict):
        raise SealError(f"{proof_path(shared)}: no readable proof (not an object)")
    with shared.open("rb") as f:
        manifest = check_copy(proof, f, identities, device_public, str(shared))
    return manifest


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
    p.add_argument("artifact", metavar="ARTIFACT",
                   help="the sealed .age file to share; for any segment of a clip, the whole "
                   "clip is shared as one NAME.share.tar (every segment, its proofs and the "
                   "clip event)")
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
    v = sub.add_parser("verify-share", help="check that a shared copy is what the doorbell made",
                       description="For whoever received a shared artifact: check it against "
                       "the proof beside it (NAME.proof.json) and the doorbell's public key, "
                       "with your own age identity. Exit 0 if the device made it.")
    v.add_argument("shared", metavar="FILE", help="the shared .age file")
    v.add_argument("--identity", required=True, metavar="FILE", help="your age identity file")
    v.add_argument("--device-key", required=True, metavar="ed25519:...",
                   help="the doorbell's public key, as the owner gave it to you")
    v.add_argument("--mp4", metavar="FILE",
                   help="for a shared clip of segments (NAME.share.tar): also write the clip, "
                   "joined, to FILE")
    v.set_defaults(func=run_verify)


def run_verify(args: argparse.Namespace) -> int:
    if is_bundle(Path(args.shared)):
        return _verify_clip(args)
    try:
        manifest = verify_share(Path(args.shared), load_identities(args.identity),
                                parse_public_key(args.device_key))
    except (DoorstepError, OSError) as e:
        print(f"doorstep verify-share: {args.shared}: NOT verified: {e}", file=sys.stderr)
        return 1
    print(f"{args.shared}: made by {manifest.device}, seq {manifest.seq}, {manifest.kind}, "
          f"created {manifest.created:.0f}: verified")
    return 0


def _verify_clip(args: argparse.Namespace) -> int:
    try:
        clip, plains = verify_bundle(Path(args.shared), load_identities(args.identity),
                                     parse_public_key(args.device_key))
        if args.mp4:
            write_atomic(Path(args.mp4), join(plains), mode=0o600)
    except (DoorstepError, OSError) as e:
        print(f"doorstep verify-share: {args.shared}: NOT verified: {e}", file=sys.stderr)
        return 1
    print(f"{args.shared}: a clip made by {clip.device}, {len(clip.segments)} segment(s) from "
          f"seq {clip.first}, each signed by it: verified"
          + (f"; joined into {args.mp4}" if args.mp4 else ""))
    if clip.complete:
        return 0
    why = ("its clip event (the doorbell's list of its segments) is not in the share"
           if clip.event is None else
           "; ".join(filter(None, [
               f"segments seq {', '.join(map(str, clip.missing))} are not in the share"
               if clip.missing else "",
               f"the doorbell could not store segment(s) {', '.join(map(str, clip.lost))}"
               if clip.lost else ""])))
    print(f"doorstep verify-share: {args.shared}: the clip may be incomplete: {why}",
          file=sys.stderr)
    return 1


def run(args: argparse.Namespace) -> int:
    """The `share` subcommand: 0 on success, 1 on any failure (explained on stderr)."""
    src = Path(args.artifact)
    try:
        recipient = X25519Recipient.parse(args.to)
        identities = load_identities(args.identity)
        name = src.name.removesuffix(".age")
        clip = verified_source(src)[1].kind == "segment"    # a clip of segments: all of it
        if clip:
            name = name.removesuffix(".segment") + ".clip"
        default_out = Path.cwd() / (f"{name}.shared-{str(recipient)[4:12]}"
                                    + (BUNDLE_SUFFIX if clip else ".age"))
        dst = Path(args.out) if args.out else default_out
        audit = Path(args.audit) if args.audit else src.with_name("share-audit.jsonl")
        (share_clip if clip else share)(src, identities, recipient, dst, audit, note=args.note)
    except (DoorstepError, OSError) as e:
        print(f"doorstep share: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {dst} for {recipient}; recorded in {audit}")
    return 0
