"""Live view at the hub (issue 15): the doorbells' live segments, from the broker to the
browsers watching that session, passed on exactly as they came. The hub holds no key that
opens them (they are sealed to the household's recipients), so it relays ciphertext only;
each browser checks the device's signature, the session, the index and the expiry itself
(owner/hub/static/js/live.js).

``GET /api/devices/<device>/live/<session>`` streams ``u32 length || message`` frames. A slow
browser loses the oldest messages, never the newest (its queue holds VIEWER_QUEUE), and the
app resumes at the next keyframe. The stream ends when nothing came for IDLE_SECONDS (the
session ended) or the browser goes away."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct

from aiohttp import web

from doorstep.protocol.live import MAX_LIVE, check_session

log = logging.getLogger(__name__)

VIEWER_QUEUE = 64          # messages waiting for one browser, at most (about 4 s at 15 fps)
IDLE_SECONDS = 40.0        # no segment for this long: the session is over (it lives 30 s)
MAX_VIEWERS = 16           # streams open at once, over all devices


class LiveFeeds:
    """Who watches which (device, session). Called on the hub's asyncio loop only.
    ``idle_seconds``: a stream with no segment for this long is closed (a test sets it
    shorter; the hub's is IDLE_SECONDS)."""

    def __init__(self, idle_seconds: float = IDLE_SECONDS) -> None:
        self.idle_seconds = idle_seconds
        self._viewers: dict[tuple[str, str], set[asyncio.Queue[bytes]]] = {}
        self.relayed = 0
        self.dropped = 0

    def publish(self, device: str, session: str, payload: bytes) -> None:
        if len(payload) > MAX_LIVE:
            self.dropped += 1
            return
        for q in self._viewers.get((device, session), ()):
            if q.full():                      # the oldest goes: the newest is what matters
                q.get_nowait()
                self.dropped += 1
            q.put_nowait(payload)
            self.relayed += 1

    def subscribe(self, device: str, session: str) -> asyncio.Queue[bytes]:
        q: asyncio.Queue[bytes] = asyncio.Queue(maxsize=VIEWER_QUEUE)
        self._viewers.setdefault((device, session), set()).add(q)
        return q

    def unsubscribe(self, device: str, session: str, q: asyncio.Queue[bytes]) -> None:
        viewers = self._viewers.get((device, session))
        if viewers is not None:
            viewers.discard(q)
            if not viewers:
                del self._viewers[(device, session)]

    def __len__(self) -> int:
        return sum(len(v) for v in self._viewers.values())


FEEDS: web.AppKey[LiveFeeds] = web.AppKey("live_feeds", LiveFeeds)


async def live_stream(request: web.Request) -> web.StreamResponse:
    feeds = request.app[FEEDS]
    device, session = request.match_info["device"], request.match_info["session"]
    refusal = check_session(session)
    if refusal is not None:
        return web.json_response({"error": refusal}, status=400)
    if len(feeds) >= MAX_VIEWERS:
        log.warning("hub: live view of %s refused: %d streams open already", device,
                    MAX_VIEWERS)
        return web.json_response({"error": f"at most {MAX_VIEWERS} live streams at once"},
                                  status=429)
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream",
                                           "Cache-Control": "no-store"})
    await response.prepare(request)
    q = feeds.subscribe(device, session)
    log.info("hub: a browser watches %s live (session %s)", device, session)
    try:
        await response.write(b"")
        while True:
            try:
                payload = await asyncio.wait_for(q.get(), feeds.idle_seconds)
            except TimeoutError:
                log.info("hub: live session %s of %s: nothing for %g s; stream closed",
                         session, device, feeds.idle_seconds)
                break
            await response.write(struct.pack(">I", len(payload)) + payload)
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        feeds.unsubscribe(device, session, q)
    with contextlib.suppress(ConnectionResetError, RuntimeError):
        await response.write_eof()
    return response


def add_routes(app: web.Application, feeds: LiveFeeds, device_pattern: str) -> None:
    app[FEEDS] = feeds
    app.router.add_get(f"/api/devices/{{device:{device_pattern}}}/live/"
                       "{session:[0-9a-f]{16,32}}", live_stream)
