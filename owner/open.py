"""Opening artifacts on the owner's machine: verify the device's signature and the ciphertext
hash, then decrypt with the owner's age identity, and join each clip's segments into one MP4.
Plaintext is written only where the owner asks."""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from doorstep.core.errors import DoorstepError, KeyFileError, SealError
from doorstep.core.fmp4 import join
from doorstep.core.fsutil import write_atomic
from doorstep.owner.store import STORED_NAME
from doorstep.protocol.age import AgeReader, X25519Identity, decrypt, load_identities
from doorstep.protocol.keys import parse_public_key
from doorstep.protocol.manifest import Manifest, open_envelope

EXTENSIONS = {"clip": ".mp4", "clip_partial": ".mp4", "segment": ".mp4", "snapshot": ".jpg",
              "thumbnail": ".jpg", "event": ".json", "voicemail": ".ogg"}


@dataclass(frozen=True)
class Opened:
    manifest: Manifest
    plaintext: bytes
    out: Path | None


@dataclass(frozen=True)
class JoinedClip:
    """A clip put back together from its segments. ``listed``: the seqs its clip event names
    (empty when no clip event is at hand: the clip still records, or a crash cut it);
    ``joined``: the seqs actually in ``mp4``; ``lost``: indexes of segments the doorbell could
    not store. ``complete`` only when the clip event says it is whole and every segment it
    names is here."""

    first: int
    joined: list[int]
    mp4: bytes
    listed: list[int] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)
    event: dict[str, Any] | None = None

    @property
    def missing(self) -> list[int]:
        return [s for s in self.listed if s not in self.joined]

    @property
    def complete(self) -> bool:
        return self.event is not None and not self.missing and not self.lost


def join_clips(opened: dict[int, tuple[Manifest, bytes]]) -> list[JoinedClip]:
    """Every clip among ``opened`` (seq -> manifest and plaintext) whose segments are here,
    joined in order: by its clip event's ``segments`` list, or (no event yet) by the segments'
    ``parent`` links. Raises SealError if a segment is not a clip segment."""
    clips: list[JoinedClip] = []
    claimed: set[int] = set()
    for seq in sorted(opened):
        manifest, plain = opened[seq]
        if manifest.kind != "event":
            continue
        body = json.loads(plain)
        if body.get("type") != "clip" or not isinstance(body.get("segments"), list):
            continue
        listed = [int(s) for s in body["segments"]]
        have = [s for s in listed if s in opened and opened[s][0].kind == "segment"]
        claimed.update(listed)
        if not have:
            continue
        body.pop("thumbnail", None)
        clips.append(JoinedClip(listed[0], have, join([opened[s][1] for s in have]), listed,
                                [int(i) for i in body.get("segments_lost", [])], body))
    groups: dict[int, list[int]] = {}
    for seq in sorted(opened):
        manifest = opened[seq][0]
        if manifest.kind == "segment" and seq not in claimed:
            anchor = int(manifest.parent) if manifest.parent.isdigit() else seq
            groups.setdefault(anchor, []).append(seq)
    for seqs in groups.values():
        clips.append(JoinedClip(seqs[0], seqs, join([opened[s][1] for s in seqs])))
    return sorted(clips, key=lambda c: c.first)


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
                       "decrypt it. Writes NAME.mp4 / .jpg / .json into --out-dir, and joins "
                       "each clip's segments into NNNNNNNNNN.clip.mp4 (named by its first "
                       "segment), saying if one its clip event names is missing.")
    p.add_argument("artifacts", nargs="+", metavar="FILE.age",
                   help="artifacts from an inbox store (a directory opens every one in it)")
    p.add_argument("-i", "--identity", default="owner.key", metavar="FILE",
                   help="the owner's age identity file (default: owner.key)")
    p.add_argument("--device-key", metavar="ed25519:...",
                   help="the device's public key (default: device.pub beside the artifact)")
    p.add_argument("--out-dir", default=".", metavar="DIR", help="where to write plaintext")
    p.add_argument("--segments", action="store_true",
                   help="also write each clip segment as its own MP4 (by default a clip's "
                   "segments are only joined into NNNNNNNNNN.clip.mp4)")
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
    segments: dict[int, tuple[Manifest, bytes]] = {}
    for path in paths:
        try:
            manifest, plaintext = open_artifact(path, identities, device_key)
        except DoorstepError as exc:
            print(f"doorstep open: {path}: {exc}", file=sys.stderr)
            failures += 1
            continue
        if manifest.kind in ("segment", "event"):
            segments[manifest.seq] = (manifest, plaintext)
            if manifest.kind == "segment" and not args.segments:
                continue
        out = out_dir / (path.name.removesuffix(".age").rsplit(".", 1)[0] + "." +
                         manifest.kind + EXTENSIONS.get(manifest.kind, ".bin"))
        write_atomic(out, plaintext)
        detail = ""
        if manifest.kind == "event":
            body = json.loads(plaintext)
            detail = f" type={body.get('type')}"
        print(f"{path.name}: verified seq {manifest.seq} {manifest.kind}{detail} -> {out}")
    return 1 if failures + _write_clips(segments, out_dir) else 0


def _write_clips(opened: dict[int, tuple[Manifest, bytes]], out_dir: Path) -> int:
    """Join and write every clip among the opened segments; the count of clips known to miss
    a segment (each is still written, with what there is)."""
    try:
        clips = join_clips(opened)
    except (SealError, ValueError, TypeError) as exc:
        print(f"doorstep open: cannot join the clip segments: {exc}", file=sys.stderr)
        return 1
    incomplete = 0
    for clip in clips:
        out = out_dir / f"{clip.first:010d}.clip.mp4"
        write_atomic(out, clip.mp4)
        state = ("whole" if clip.complete else
                 "no clip event yet (still recording, or cut short)" if clip.event is None else
                 "INCOMPLETE")
        print(f"clip from seq {clip.first}: joined {len(clip.joined)} segment(s) "
              f"({state}) -> {out}")
        if clip.event is not None and not clip.complete:
            incomplete += 1
            why = []
            if clip.missing:
                why.append(f"segments seq {', '.join(map(str, clip.missing))} are not here")
            if clip.lost:
                why.append(f"the doorbell could not store segment(s) "
                           f"{', '.join(map(str, clip.lost))} (counted from 0)")
            print(f"doorstep open: clip from seq {clip.first} is incomplete: "
                  f"{'; '.join(why)}; what there is was written to {out}", file=sys.stderr)
    return incomplete
