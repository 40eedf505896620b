"""The hub's side of sharing a clip stored as segments (issue 15): the browser re-wraps every
segment (and the clip event) for one recipient and sends one bundle (owner/shareclip.py). The
hub checks, without any key, that each file is a stored artifact of this clip whose payload is
the source's byte for byte under a header for one recipient, and that its proof is the stored
signed manifest and the source's own header; then it keeps the bundle in shares/ and appends
the audit line before it answers (docs/app.md, "Acting")."""

from __future__ import annotations

import hashlib
import io
import re
import time
from typing import Any

from aiohttp import web

from doorstep.core.errors import SealError
from doorstep.core.fsutil import write_atomic
from doorstep.owner.hub.api import entry_sha, share_query
from doorstep.owner.hub.app import HUB, MAX_BODY, Hub, browser_of, refuse
from doorstep.owner.share import ShareRecord, append_audit
from doorstep.owner.shareclip import BUNDLE_SUFFIX, read_bundle
from doorstep.protocol.age import b64decode, read_header

FILE = re.compile(r"(\d{10})\.(segment|event)\.age")
PER_FILE = 64 * 1024       # a file's new header and its proof, generously


async def share_clip(request: web.Request) -> web.Response:
    """POST /api/shares/clip?device=D&seq=FIRST&to=age1...&note=...: the bundle."""
    hub = request.app[HUB]
    asked = share_query(request)
    if isinstance(asked, web.Response):
        return asked
    device, first, recipient, note = asked
    hub.timeline.refresh()
    head = hub.timeline.get(device, first)
    if head is None or head.kind != "segment" or head.parent:
        return refuse(404, f"{device} has no clip of segments from seq {first} here")
    last = int(hub.timeline.chain(device)["last_seq"])
    clip = [e for e in hub.timeline.around(device, range(first, last + 1))
            if e.kind == "segment" and (e.seq == first or e.parent == str(first))]
    limit = min(MAX_BODY, sum(e.size for e in clip) + 4 * 1024 * 1024
                + PER_FILE * (len(clip) + 1))
    if request.content_length is None or request.content_length > limit:
        return refuse(413, f"upload too large: a share of {device}'s clip from seq {first} is "
                      f"at most {limit} bytes")
    data = await request.read()
    try:
        index, files = read_bundle(io.BytesIO(data), "share")
        if index.get("device") != device or index.get("first") != first:
            raise SealError("share: share.json names another clip")
        names = _check(hub, device, first, index, files)
    except SealError as exc:
        return refuse(400, str(exc))
    left_out = [e.seq for e in clip if f"{e.seq:010d}.segment.age" not in names]
    if left_out:
        return refuse(400, f"share: the bundle leaves out segment(s) seq "
                      f"{', '.join(map(str, left_out))} of the clip")
    shared_sha = hashlib.sha256(data).hexdigest()
    name = f"{device}-{first}.clip.{str(recipient)[4:12]}.{shared_sha[:8]}{BUNDLE_SUFFIX}".lower()
    folder = hub.dir / "shares"
    folder.mkdir(exist_ok=True, mode=0o700)
    browser = browser_of(request)
    record = ShareRecord(time=time.time(),
                         source=f"{device}/{first:010d}.segment.age and {len(clip) - 1} more "
                         f"segment(s){', with its clip event' if len(names) > len(clip) else ''}",
                         source_sha256=head_sha(hub, device, first),
                         recipient=str(recipient), shared=name, shared_sha256=shared_sha,
                         note=(f"{note} (by {browser.label}, {browser.id})").strip())
    write_atomic(folder / name, data, mode=0o600)
    append_audit(hub.dir / "share-audit.jsonl", record)
    return web.json_response({"share": record.__dict__, "url": f"/api/shares/{name}"},
                             status=201)


def _check(hub: Hub, device: str, first: int, index: dict[str, Any],
           files: dict[str, bytes]) -> set[str]:
    """Each file of the bundle against the store: a stored segment of this clip or an event
    after its start, the payload the source's byte for byte under one recipient's header, and
    its proof the stored signed manifest and the source's header. The files' names."""
    names: set[str] = set()
    for entry in index["files"]:
        name = str(entry.get("file", "")) if isinstance(entry, dict) else ""
        match = FILE.fullmatch(name)
        if match is None or name not in files or name in names:
            raise SealError(f"share: {name!r} is not a clip file of the bundle, or twice")
        seq, kind = int(match[1]), match[2]
        stored = hub.timeline.get(device, seq)
        if stored is None or stored.kind != kind or seq < first or (
                kind == "segment" and seq != first and stored.parent != str(first)):
            raise SealError(f"share: {name} is not a stored {kind} of {device}'s clip from "
                            f"seq {first}")
        stem = hub.store / device / stored.name
        source = stem.with_name(stem.name + ".age").read_bytes()
        copy = files.pop(name)
        try:
            header = read_header(io.BytesIO(copy))
            src_len = read_header(io.BytesIO(source)).length
            original = b64decode(str(entry["original_header"]).encode())
        except (KeyError, ValueError) as exc:
            raise SealError(f"share: {name}: {exc}") from exc
        if len(header.stanzas) != 1 or copy[header.length:] != source[src_len:]:
            raise SealError(f"share: {name}: the payload differs from the source, or the "
                            "header has more than one recipient")
        if original != source[:src_len] or \
                str(entry.get("manifest", "")).encode() != \
                stem.with_name(stem.name + ".env").read_bytes():
            raise SealError(f"share: {name}: its proof is not the stored manifest and header")
        names.add(name)
    if files:
        raise SealError(f"share: {sorted(files)[0]} has no proof in share.json")
    return names


def head_sha(hub: Hub, device: str, seq: int) -> str:
    """The first segment's ciphertext SHA-256, as its signed manifest states it."""
    return entry_sha(hub.store / device / f"{seq:010d}.segment.env")
