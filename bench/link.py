"""A slow home uplink on loopback: a TCP proxy that passes bytes at a fixed rate, one token
bucket per direction shared by every connection through it (so one link, like a real uplink).

Deterministic and portable: no root, no network namespace, no tc. The proxy reads at most
``read_size`` bytes at a time and only as fast as the bucket allows, so a sender's backlog
queues in its own socket buffer, as it would in front of a real bottleneck.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time

from doorstep.core.errors import DoorstepError

log = logging.getLogger(__name__)


class TokenBucket:
    """``rate`` bytes per second with ``burst`` bytes of slack. Takers are served in order."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._at = time.monotonic()
        self._lock = asyncio.Lock()

    async def take(self, n: int) -> None:
        async with self._lock:
            now = time.monotonic()
            self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
            self._at = now
            self._tokens -= n
            if self._tokens < 0:
                await asyncio.sleep(-self._tokens / self.rate)


class Link:
    """``with Link(upstream_port, bits_per_second) as link:`` connect to ``link.port``.
    ``bits_per_second=None`` passes bytes with no limit (plain loopback through the proxy)."""

    def __init__(self, upstream_port: int, bits_per_second: float | None, *,
                 host: str = "127.0.0.1", read_size: int = 1460, burst: int = 4 * 1460,
                 buffer: int = 16384) -> None:
        self.upstream = (host, upstream_port)
        self.rate = bits_per_second / 8 if bits_per_second else None
        self.read_size = read_size
        self.burst = burst
        self.buffer = buffer  # the proxy's own read buffer per direction, like a router's queue
        self.port = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    def __enter__(self) -> Link:
        self._thread = threading.Thread(target=self._main, name="bench-link", daemon=True)
        self._thread.start()
        if not self._ready.wait(10) or self._error is not None:
            raise DoorstepError(f"bench link to port {self.upstream[1]} did not start: "
                                f"{self._error}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # surfaced to __enter__ / logged; the thread must end
            self._error = exc
            self._ready.set()
            log.exception("bench link failed")

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        up = TokenBucket(self.rate, self.burst) if self.rate else None
        down = TokenBucket(self.rate, self.burst) if self.rate else None
        tasks: set[asyncio.Task[None]] = set()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                ureader, uwriter = await asyncio.open_connection(*self.upstream,
                                                                 limit=self.buffer)
            except OSError:
                writer.close()
                return
            a = asyncio.create_task(self._pump(reader, uwriter, up, "up"))
            b = asyncio.create_task(self._pump(ureader, writer, down, "down"))
            tasks.update((a, b))
            try:
                await asyncio.wait({a, b}, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                pass  # the link is shutting down: end this connection quietly, not as an error
            finally:
                for t in (a, b):
                    t.cancel()
                for w in (writer, uwriter):
                    w.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0, limit=self.buffer)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()
        for t in tasks:
            t.cancel()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    bucket: TokenBucket | None, direction: str) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while True:
                data = await reader.read(self.read_size)
                if not data:
                    break
                if bucket is not None:
                    await bucket.take(len(data))
                writer.write(data)
                await writer.drain()
                if direction == "up":
                    self.bytes_up += len(data)
                else:
                    self.bytes_down += len(data)
        with contextlib.suppress(OSError):
            writer.close()
