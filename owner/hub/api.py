"""The hub's API over the store and the doorbells: the timeline, ciphertext and signed
manifests as stored, each doorbell's status and chain, commands the browsers signed, the live
channel, notification settings and shares. The hub reads nothing it serves: a browser checks
every signature and decrypts (docs/app.md)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import re
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from doorstep.core.errors import KeyFileError, SealError
from doorstep.core.fsutil import write_atomic
from doorstep.owner.hub.app import HUB, MAX_BODY, browser_of, read_json, refuse
from doorstep.owner.hub.replies import put_reply
from doorstep.owner.share import ShareRecord, append_audit, proof_file, proof_path
from doorstep.protocol.age import X25519Recipient, read_header
from doorstep.protocol.wire import MAX_SIGNAL

DEVICE = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"
PAGE = 60
ONLINE_SECONDS = 150.0     # the doorbell publishes its status every 60 s
QUIET = re.compile(r"^$|^\d\d:\d\d-\d\d:\d\d$")


def add_routes(app: web.Application) -> None:
    from doorstep.owner.hub.shareclip import share_clip  # it uses entry_sha from here
    r = app.router
    r.add_get("/api/timeline", timeline)
    r.add_get(f"/api/a/{{device:{DEVICE}}}/{{seq:\\d{{1,12}}}}.{{ext:age|env}}", artifact)
    r.add_get("/api/devices", devices)
    r.add_get(f"/api/devices/{{device:{DEVICE}}}/manifests", manifests)
    r.add_post(f"/api/devices/{{device:{DEVICE}}}/command", command)
    r.add_post(f"/api/devices/{{device:{DEVICE}}}/reply", put_reply)
    r.add_get("/api/live", live)
    r.add_post("/api/notifications", notifications)
    r.add_post("/api/shares", share)
    r.add_post("/api/shares/clip", share_clip)
    r.add_get("/api/shares", shares)
    r.add_get("/api/shares/{name:[0-9a-z_.-]{1,120}\\.age}", shared_file)
    r.add_get("/api/shares/{name:[0-9a-z_.-]{1,120}\\.share\\.tar}", shared_file)
    r.add_get("/api/shares/{name:[0-9a-z_.-]{1,120}\\.proof\\.json}", shared_file)


async def timeline(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    hub.timeline.refresh()
    before = None
    cursor = request.query.get("before", "")
    if cursor:
        try:
            created, device, seq = cursor.split(",")
            before = (float(created), device, int(seq))
        except ValueError:
            return refuse(400, "before must be CREATED,DEVICE,SEQ")
    try:
        limit = max(1, min(500, int(request.query.get("limit", PAGE))))
    except ValueError:
        return refuse(400, "limit must be a number")
    page = hub.timeline.page(before, limit)
    nxt = f"{page[-1].created!r},{page[-1].device},{page[-1].seq}" if len(page) == limit \
        else None
    return web.json_response({"items": [e.json() for e in page], "next": nxt})


async def artifact(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    device, seq = request.match_info["device"], int(request.match_info["seq"])
    entry = hub.timeline.get(device, seq) or next(
        (e for e in hub.timeline.refresh(device) if e.seq == seq), None)
    if entry is None:
        return refuse(404, f"{device} has no artifact {seq} here")
    path = hub.store / device / f"{entry.name}.{request.match_info['ext']}"
    return web.FileResponse(path, headers={
        "Content-Type": "application/octet-stream",
        "Cache-Control": "private, max-age=31536000, immutable"})


async def devices(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    hub.settle()
    now = time.time()
    out = []
    for d in hub.timeline.devices():
        status = hub.relay.status.get(d, {}) if hub.relay else {}
        received = float(status.get("received", 0.0))
        online = status.get("state") == "online" and now - received < ONLINE_SECONDS
        out.append({"id": d, "key": hub.device_key(d), "status": status, "online": online,
                    "last_seen": received or None, "chain": hub.timeline.chain(d)})
    return web.json_response({"devices": out, "now": now})


async def manifests(request: web.Request) -> web.Response:
    """Signed manifests ``from``..``to`` (at most 500), for the app to check the chain."""
    hub = request.app[HUB]
    device = request.match_info["device"]
    try:
        lo = max(1, int(request.query.get("from", "1")))
        hi = min(int(request.query.get("to", str(lo + 499))), lo + 499)
    except ValueError:
        return refuse(400, "from and to must be numbers")
    found = []
    for e in hub.timeline.around(device, range(lo, hi + 1)):
        try:
            env = (hub.store / device / f"{e.name}.env").read_text()
        except (OSError, UnicodeDecodeError):
            continue
        found.append({"seq": e.seq, "env": env})
    return web.json_response({"device": device, "manifests": found})


async def command(request: web.Request) -> web.Response:
    """Relay a command the browser signed; answer with the doorbell's signed answer."""
    hub = request.app[HUB]
    device = request.match_info["device"]
    if request.content_length is None or request.content_length > MAX_SIGNAL:
        return refuse(413, f"upload too large: a command is at most {MAX_SIGNAL} bytes")
    if hub.relay is None:
        return refuse(503, "the hub has no broker connection")
    payload = await request.read()
    try:
        body = json.loads(payload)["body"]
        counter = int(body["counter"])
        if body["device"] != device:
            raise ValueError("for another device")
    except (ValueError, KeyError, TypeError) as exc:
        return refuse(400, f"not a signed command for {device}: {exc}")
    answer = await hub.relay.command(device, payload, counter)
    if answer is None:
        return refuse(504, f"{device} did not answer: it may be offline")
    return web.json_response({"ack": answer.decode()})


async def live(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: "stored" for each new artifact, "status" for each doorbell's."""
    hub = request.app[HUB]
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-store"})
    await response.prepare(request)
    queue = hub.bus.subscribe()
    try:
        await response.write(b"event: hello\ndata: {}\n\n")
        while True:
            try:
                news = await asyncio.wait_for(queue.get(), 25)
            except TimeoutError:
                await response.write(b": keep-alive\n\n")
                continue
            data = json.dumps(news, separators=(",", ":"))
            await response.write(f"event: {news['type']}\ndata: {data}\n\n".encode())
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        hub.bus.unsubscribe(queue)
    return response


async def notifications(request: web.Request) -> web.Response:
    """This browser's push subscription (or null), motion devices and quiet hours."""
    hub = request.app[HUB]
    doc = await read_json(request)
    browser = browser_of(request)
    changes: dict[str, Any] = {}
    if "subscription" in doc:
        sub = doc["subscription"]
        if sub is not None and not (isinstance(sub, dict) and str(
                sub.get("endpoint", "")).startswith(("https://", "http://127.0.0.1"))
                and isinstance(sub.get("keys"), dict)):
            return refuse(400, "subscription must be a PushSubscription's JSON")
        changes["push"] = sub
    if "motion" in doc:
        motion = doc["motion"]
        if not isinstance(motion, list) or not all(isinstance(m, str) for m in motion):
            return refuse(400, "motion must be a list of device ids")
        changes["motion"] = tuple(m for m in motion if m in hub.timeline.devices())
    if "quiet" in doc:
        if not isinstance(doc["quiet"], str) or not QUIET.match(doc["quiet"]):
            return refuse(400, "quiet must be HH:MM-HH:MM or empty")
        changes["quiet"] = doc["quiet"]
        changes["tz_offset"] = int(doc.get("tz_offset", 0)) % 1440
    updated = hub.household.update(browser.id, **changes)
    return web.json_response({"browser": updated.public()})


def share_query(request: web.Request
                ) -> tuple[str, int, X25519Recipient, str] | web.Response:
    """What both share endpoints are asked: ``device``, ``seq``, ``to`` (the one age recipient)
    and ``note`` (cut to 200 characters); or the 400 answer naming what is wrong."""
    q = request.query
    try:
        seq = int(q.get("seq", ""))
        recipient = X25519Recipient.parse(q.get("to", ""))
    except (ValueError, KeyFileError) as exc:
        return refuse(400, f"share: {exc}")
    return q.get("device", ""), seq, recipient, q.get("note", "")[:200]


async def share(request: web.Request) -> web.Response:
    """A copy of one artifact that the browser re-wrapped for one recipient. The hub checks
    that only the header changed (the payload is the source's, byte for byte, so nothing else
    is exposed), keeps it in shares/ and appends the audit line before it answers."""
    hub = request.app[HUB]
    asked = share_query(request)
    if isinstance(asked, web.Response):
        return asked
    device, seq, recipient, note = asked
    entry = hub.timeline.get(device, seq)
    if entry is None:
        return refuse(404, f"{device} has no artifact {seq} here")
    limit = entry.size + 64 * 1024
    if request.content_length is None or request.content_length > min(limit, MAX_BODY):
        return refuse(413, f"upload too large: a share of {device} {seq} is at most {limit} "
                      "bytes")
    data = await request.read()
    source = (hub.store / device / f"{entry.name}.age").read_bytes()
    try:
        header = read_header(io.BytesIO(data))
        src_len = read_header(io.BytesIO(source)).length
    except SealError as exc:
        return refuse(400, f"share: not an age file: {exc}")
    if len(header.stanzas) != 1 or data[header.length:] != source[src_len:]:
        return refuse(400, "share: the payload differs from the source, or the header has "
                      "more than one recipient")
    shared_sha = hashlib.sha256(data).hexdigest()
    name = f"{device}-{seq}.{str(recipient)[4:12]}.{shared_sha[:8]}.age".lower()
    folder = hub.dir / "shares"
    folder.mkdir(exist_ok=True, mode=0o700)
    browser = browser_of(request)
    env = hub.store / device / f"{entry.name}.env"
    record = ShareRecord(time=time.time(), source=f"{device}/{entry.name}.age",
                         source_sha256=entry_sha(env),
                         recipient=str(recipient), shared=name, shared_sha256=shared_sha,
                         note=(f"{note} (by {browser.label}, {browser.id})").strip())
    write_atomic(folder / name, data, mode=0o600)
    # the proof `doorstep share` writes beside its copy, made from the store (the hub holds
    # no key)
    proof = proof_path(folder / name)
    write_atomic(proof, proof_file(env.read_bytes(), source[:src_len]), mode=0o600)
    append_audit(hub.dir / "share-audit.jsonl", record)
    return web.json_response({"share": record.__dict__, "url": f"/api/shares/{name}",
                              "proof": f"/api/shares/{proof.name}"}, status=201)


def entry_sha(env: Path) -> str:
    """The source ciphertext's SHA-256, as its signed manifest states it."""
    try:
        return str(json.loads(env.read_bytes())["manifest"]["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""


async def shares(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    path = hub.dir / "share-audit.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return web.json_response({"audit": [json.loads(x) for x in lines[-200:]][::-1]})


async def shared_file(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    path = hub.dir / "shares" / request.match_info["name"]
    if not path.is_file():
        return refuse(404, "no such share")
    return web.FileResponse(path, headers={
        "Content-Type": "application/octet-stream",
        "Content-Disposition": f'attachment; filename="{path.name}"'})


