"""Sharing a clip stored as segments (issue 15): one bundle, an uncompressed tar of every
segment re-wrapped for the one recipient (and the clip's event, the doorbell's signed list of
its segments, when it is at hand), with ``share.json``: for each file the device's signed
manifest and the header it signed, the proof a one-file share ships beside its copy
(owner/share.py). The owner's CLI (`doorstep share`) and the app both make it; the recipient
checks it with `doorstep verify-share` and the doorbell's public key, and gets the joined MP4
(core.fmp4.join).
Why a set of segments and not one joined file: docs/design.md, "Sharing a clip of segments"."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from doorstep.core.errors import SealError
from doorstep.protocol.age import (
    X25519Identity,
    X25519Recipient,
    b64decode,
    b64encode,
    decrypt,
    read_header,
    rewrap,
    same_file_key,
)
from doorstep.protocol.manifest import Manifest, open_envelope

BUNDLE_SUFFIX = ".share.tar"
INDEX = "share.json"
MAX_MEMBERS = 2000                 # a 2-hour clip of 2 s segments is 3,600 s / 2 = 1,800
MAX_BUNDLE = 1 << 31


@dataclass(frozen=True)
class SharedClip:
    """What a verified bundle holds: the device's manifests of its segments (in seq order),
    the clip event's body if it came with it, and the seqs that event lists but the bundle
    lacks (with the indexes the doorbell itself could not store)."""

    device: str
    first: int
    segments: list[Manifest]
    event: dict[str, Any] | None
    missing: list[int]
    lost: list[int]

    @property
    def complete(self) -> bool:
        return self.event is not None and not self.missing and not self.lost


def is_bundle(path: Path) -> bool:
    return path.name.endswith(BUNDLE_SUFFIX)


def proof_of(envelope: bytes, ciphertext: bytes) -> dict[str, str]:
    """The proof for one file: the device's signed manifest and the header it signed."""
    length = read_header(io.BytesIO(ciphertext)).length
    return {"manifest": envelope.decode(),
            "original_header": b64encode(ciphertext[:length]).decode()}


def check_copy(proof: dict[str, Any], copy: BinaryIO,
               identities: Sequence[X25519Identity], device_public: Any, where: str) -> Manifest:
    """One shared copy against its proof: the device's signature on the manifest, the signed
    SHA-256 over the device's header and this copy's payload, and that both headers wrap the
    same file key. ``copy`` is read from its start. Raises SealError naming ``where``."""
    try:
        envelope = str(proof["manifest"]).encode()
        original = b64decode(str(proof["original_header"]).encode())
    except (KeyError, TypeError, ValueError) as exc:
        raise SealError(f"{where}: no readable proof ({exc})") from exc
    manifest = open_envelope(envelope, device_public)
    new_header = read_header(copy)
    digest = hashlib.sha256(original)
    size = len(original)
    while block := copy.read(1024 * 1024):
        digest.update(block)
        size += len(block)
    if size != manifest.size or digest.hexdigest() != manifest.sha256:
        raise SealError(f"{where}: its payload is not the one the device signed")
    if not same_file_key(read_header(io.BytesIO(original)), new_header, identities):
        raise SealError(f"{where}: its header does not wrap the device's file key")
    return manifest


# -- making a bundle ------------------------------------------------------------------------------
def write_bundle(out: BinaryIO, device: str, first: int,
                 files: Sequence[tuple[str, bytes, dict[str, str]]]) -> None:
    """The tar: share.json first, then each (name, re-wrapped copy, proof)."""
    index = {"v": 1, "kind": "clip", "device": device, "first": first,
             "files": [{"file": name, **proof} for name, _, proof in files]}
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in [(INDEX, json.dumps(index, sort_keys=True).encode()),
                           *((n, d) for n, d, _ in files)]:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
            tar.addfile(info, io.BytesIO(data))


def clip_files(folder: Path, first: int, identities: Sequence[X25519Identity],
               device_public: Any) -> tuple[list[Path], Path | None]:
    """In an inbox store's device folder: the clip's segments (the first, and every segment
    the device signed with ``parent`` = the first's seq), in seq order, and its clip event if
    it is here (an event whose body has ``clip_seq`` = first; found by decrypting events after
    the first segment, with the owner's identities)."""
    segments: list[Path] = []
    for env in sorted(folder.glob("*.segment.env")):
        m = open_envelope(env.read_bytes(), device_public)
        if m.seq == first or (m.seq > first and m.parent == str(first)):
            segments.append(env.with_suffix(".age"))
    event = None
    for env in sorted(folder.glob("*.event.env")):
        if int(env.name.split(".")[0]) <= first:
            continue
        try:
            body = json.loads(decrypt(env.with_suffix(".age").read_bytes(), identities))
        except (SealError, OSError, ValueError):
            continue
        if isinstance(body, dict) and body.get("type") == "clip" and body.get("clip_seq") == first:
            event = env.with_suffix(".age")
            break
    return segments, event


def share_clip_files(sources: Sequence[Path], identities: Sequence[X25519Identity],
                     recipient: X25519Recipient, device: str, first: int,
                     out: BinaryIO,
                     verified: Callable[[Path], tuple[bytes, Manifest]]) -> None:
    """Write the bundle of ``sources`` (each verified first by ``verified``) to ``out``."""
    files = []
    for src in sources:
        envelope, _ = verified(src)
        data = src.read_bytes()
        copy = io.BytesIO()
        rewrap(io.BytesIO(data), identities, [recipient], copy)
        files.append((src.name, copy.getvalue(), proof_of(envelope, data)))
    write_bundle(out, device, first, files)


# -- reading and checking one -------------------------------------------------------------------
def read_bundle(data: BinaryIO, where: str
                ) -> tuple[dict[str, Any], dict[str, bytes]]:
    """share.json and the files of a bundle. Raises SealError naming ``where``."""
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=data, mode="r:") as tar:
            for n, info in enumerate(_members(tar)):
                if n > MAX_MEMBERS:
                    raise SealError(f"{where}: more than {MAX_MEMBERS} files")
                if not info.isfile() or "/" in info.name or info.name in files:
                    raise SealError(f"{where}: {info.name!r} is not a plain file name, or twice")
                f = tar.extractfile(info)
                assert f is not None
                files[info.name] = f.read()
        index = json.loads(files.pop(INDEX))
        if index.get("v") != 1 or index.get("kind") != "clip" or \
                not isinstance(index.get("files"), list):
            raise ValueError("share.json is not a clip bundle of version 1")
    except (tarfile.TarError, OSError, KeyError, ValueError, AttributeError) as exc:
        raise SealError(f"{where}: not a readable clip share ({exc})") from exc
    return index, files


def _members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    while (info := tar.next()) is not None:
        yield info


def verify_bundle(path: Path, identities: Sequence[X25519Identity],
                  device_public: Any) -> tuple[SharedClip, list[bytes]]:
    """Check every file of a clip bundle against its proof, that the segments are the ones the
    device signed as one clip, and (if the clip event came with it) that none it lists is
    missing. Returns what was shared and the segments' plaintexts in order; raises SealError."""
    where = str(path)
    with path.open("rb") as f:
        index, files = read_bundle(f, where)
    segments: list[tuple[Manifest, bytes]] = []
    event: dict[str, Any] | None = None
    device, first = str(index.get("device", "")), index.get("first")
    if not isinstance(first, int) or isinstance(first, bool):
        raise SealError(f"{where}: share.json names no first segment")
    for entry in index["files"]:
        name = str(entry.get("file", "")) if isinstance(entry, dict) else ""
        if name not in files:
            raise SealError(f"{where}: share.json names {name!r}, which is not in it")
        copy = files.pop(name)
        m = check_copy(entry, io.BytesIO(copy), identities, device_public, f"{where}: {name}")
        if m.device != device:
            raise SealError(f"{where}: {name} was made by {m.device}, not {device}")
        if m.kind == "segment":
            if not (m.seq == first and m.parent == "") and m.parent != str(first):
                raise SealError(f"{where}: {name} (seq {m.seq}) is a segment of another clip")
            segments.append((m, copy))
        elif m.kind == "event":
            try:
                body = json.loads(decrypt(copy, identities))
            except (ValueError, RecursionError) as exc:
                raise SealError(f"{where}: {name}: not a readable event ({exc})") from exc
            if not isinstance(body, dict) or body.get("type") != "clip" or \
                    body.get("clip_seq") != first or not isinstance(body.get("segments"), list):
                raise SealError(f"{where}: {name} is not this clip's event")
            event = body
        else:
            raise SealError(f"{where}: {name} is a {m.kind}, not part of a clip")
    if files:
        raise SealError(f"{where}: {sorted(files)[0]} has no proof in share.json")
    segments.sort(key=lambda s: s[0].seq)
    if not segments or segments[0][0].seq != first:
        raise SealError(f"{where}: the clip's first segment (seq {first}) is not in it")
    have = [m.seq for m, _ in segments]
    try:
        listed = [int(s) for s in event["segments"]] if event else have
        lost = [int(i) for i in event.get("segments_lost", [])] if event else []
    except (TypeError, ValueError) as exc:
        raise SealError(f"{where}: the clip event's list of segments is unreadable") from exc
    if event and [s for s in have if s not in listed]:
        raise SealError(f"{where}: segments {[s for s in have if s not in listed]} are not "
                        "in the clip event's list")
    plains = [decrypt(copy, identities) for _, copy in segments]
    shared = SharedClip(device, first, [m for m, _ in segments], event,
                        [s for s in listed if s not in have], lost)
    return shared, plains

