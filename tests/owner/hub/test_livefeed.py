"""The hub's live view relay (owner/hub/livefeed.py): a browser with a session streams one
live session's messages exactly as they came from the broker (the hub cannot open them), a
browser without one is refused, and a slow browser loses the oldest messages, not the newest."""

from __future__ import annotations

import asyncio
import logging
import struct
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from doorstep.owner.hub.enrol import new_code
from doorstep.owner.hub.livefeed import VIEWER_QUEUE, LiveFeeds
from doorstep.owner.hub.server import HubServer
from tests.owner.hub.test_api import call, enrol
from tests.owner.hub.test_api import hub as hub

SESSION = "00112233445566778899aabbccddeeff"


def test_a_browser_streams_its_sessions_messages_as_they_came(hub: HubServer,
                                                              tmp_path: Path) -> None:
    path = f"/api/devices/porch/live/{SESSION}"
    status, _, _ = call(hub, "GET", path)
    assert status == 401                              # no session, no stream
    code, _ = new_code(hub.cfg.home / "hub" / "enrol")
    _, _, cookie = enrol(hub, code)
    assert call(hub, "GET", "/api/devices/porch/live/NOT-HEX", cookie=cookie)[0] == 404
    req = urllib.request.Request(hub.url.rstrip("/") + path, headers={"Cookie": cookie})
    got: list[bytes] = []
    opened = threading.Event()

    def read() -> None:
        with urllib.request.urlopen(req, timeout=20) as r:
            opened.set()
            while len(got) < 3:
                (n,) = struct.unpack(">I", r.read(4))
                got.append(r.read(n))

    reader = threading.Thread(target=read)
    reader.start()
    assert opened.wait(10)
    feeds = hub.hub.feeds
    sent = [b"DS2V" + bytes([i]) * (100 + i) for i in range(3)]

    def wait_viewer() -> None:
        while not len(feeds):
            threading.Event().wait(0.01)
    wait_viewer()
    for m in sent:
        hub.loop.call_soon_threadsafe(feeds.publish, "porch", "f" * 16, b"other session")
        hub.loop.call_soon_threadsafe(feeds.publish, "porch", SESSION, m)
    reader.join(20)
    assert got == sent


def test_a_slow_browser_loses_the_oldest_messages() -> None:
    async def run() -> tuple[list[bytes], int]:
        feeds = LiveFeeds()
        q = feeds.subscribe("porch", SESSION)
        for i in range(VIEWER_QUEUE + 10):
            feeds.publish("porch", SESSION, str(i).encode())
        out = [q.get_nowait() for _ in range(q.qsize())]
        feeds.unsubscribe("porch", SESSION, q)
        return out, len(feeds)

    out, left = asyncio.run(run())
    assert out == [str(i).encode() for i in range(10, VIEWER_QUEUE + 10)]
    assert left == 0


def test_a_stream_with_nothing_for_its_idle_time_is_closed_and_released(
        hub: HubServer, caplog: pytest.LogCaptureFixture) -> None:
    """The session ended (the doorbell stops 30 s after the last renewal): the hub closes the
    browser's stream once nothing came for ``idle_seconds`` (40 s; 1 s here, set on the same
    object the route reads), says so in its log, and frees the viewer's slot and queue."""
    caplog.set_level(logging.INFO, logger="doorstep.owner.hub.livefeed")
    feeds = hub.hub.feeds
    feeds.idle_seconds = 1.0
    code, _ = new_code(hub.cfg.home / "hub" / "enrol")
    _, _, cookie = enrol(hub, code)
    req = urllib.request.Request(hub.url.rstrip("/") + f"/api/devices/porch/live/{SESSION}",
                                 headers={"Cookie": cookie})
    with urllib.request.urlopen(req, timeout=10) as r:
        while not len(feeds):
            time.sleep(0.01)
        hub.loop.call_soon_threadsafe(feeds.publish, "porch", SESSION, b"DS2V one")
        (n,) = struct.unpack(">I", r.read(4))
        assert r.read(n) == b"DS2V one"          # a segment restarts the idle time
        started = time.monotonic()
        assert r.read() == b""                    # then the end of the stream, not a timeout
        waited = time.monotonic() - started
    assert 0.5 < waited < 8, waited
    deadline = time.monotonic() + 5
    while len(feeds) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(feeds) == 0 and not feeds._viewers      # the viewer's queue is gone
    hub.loop.call_soon_threadsafe(feeds.publish, "porch", SESSION, b"DS2V late")
    lines = [r.getMessage() for r in caplog.records if "stream closed" in r.getMessage()]
    assert lines == [f"hub: live session {SESSION} of porch: nothing for 1 s; stream closed"]
