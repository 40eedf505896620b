"""A live network stream for real: ffmpeg serves MPEG-TS over HTTP on loopback, FileSource
reads it, the server goes away, and the source reconnects with backoff when it is back."""

from __future__ import annotations

import itertools
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from doorstep.broker import free_port
from doorstep.capture.frames import CameraState
from doorstep.capture.source import FileSource
from doorstep.core.errors import CameraUnavailable

REPO = Path(__file__).resolve().parents[2]
CLIP = REPO / "doorstep" / "data" / "vtest.mp4"

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")


def serve(port: int, seconds: float) -> subprocess.Popen[bytes]:
    """ffmpeg as a one-client HTTP server: ``seconds`` of the bundled clip, in real time."""
    return subprocess.Popen(
        ["ffmpeg", "-loglevel", "error", "-re", "-i", str(CLIP), "-t", str(seconds), "-c", "copy",
         "-f", "mpegts", "-listen", "1", f"http://127.0.0.1:{port}/live.ts"],
        stdin=subprocess.DEVNULL)


def wait_listening(port: int, proc: subprocess.Popen[bytes] | None = None,
                   connect: bool = True) -> None:
    """Until ffmpeg listens on ``port``. ``connect=False`` looks in /proc/net/tcp instead of
    connecting, for a server that takes only one client (a probe would use it up); a fixed
    sleep was not enough on a loaded machine."""
    import socket
    deadline = time.monotonic() + 10
    listening = f"0100007F:{port:04X} 00000000:0000 0A"
    while time.monotonic() < deadline:
        assert proc is None or proc.poll() is None, "ffmpeg exited before it listened"
        if not connect:
            if any(listening in line for line in Path("/proc/net/tcp").read_text().splitlines()):
                return
            time.sleep(0.05)
            continue
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("ffmpeg never listened")


def test_http_stream_reconnects_and_time_carries_on() -> None:
    port = free_port()
    first = serve(port, 1.5)
    wait_listening(port, first, connect=False)   # a probe would use up its single listen
    source = FileSource(f"http://127.0.0.1:{port}/live.ts", realtime=False,
                        backoff_initial=0.2, backoff_max=0.5, max_retries=40)
    servers = [first]

    def second_server() -> None:
        first.wait(20)
        servers.append(serve(port, 1.5))

    threading.Thread(target=second_server, daemon=True).start()
    pts: list[float] = []
    try:
        for frame in source.frames():
            pts.append(frame.pts)
            if len(pts) >= 25 and source.health.restarts >= 1:
                break
    finally:
        source.close()
        for s in servers:
            s.kill()
            s.wait()
    assert source.health.restarts >= 1
    assert all(b > a for a, b in itertools.pairwise(pts))   # time never goes back
    assert source.health.as_dict()["restarts"] >= 1


def test_http_stream_that_never_returns_gives_up_as_retryable() -> None:
    port = free_port()
    server = serve(port, 0.5)
    wait_listening(port, server, connect=False)
    source = FileSource(f"http://127.0.0.1:{port}/live.ts", realtime=False,
                        backoff_initial=0.05, backoff_max=0.1, max_retries=3)
    with pytest.raises(CameraUnavailable):
        for _ in source.frames():
            pass
    server.wait(10)
    assert source.health.state is CameraState.FAILED
    assert source.health.retries >= 3
