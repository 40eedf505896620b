"""sd_notify(3) without libsystemd: READY, WATCHDOG and STATUS datagrams to $NOTIFY_SOCKET, and
the FrameWatchdog that pings systemd only while frames flow, so a stuck camera gets restarted."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping
from typing import Protocol

log = logging.getLogger(__name__)


class MonotonicClock(Protocol):
    def monotonic(self) -> float: ...


class _SystemMonotonic:
    def monotonic(self) -> float:
        return time.monotonic()


def _address(value: str) -> str | None:
    """$NOTIFY_SOCKET as a socket address: a path, or '@name' for the abstract namespace."""
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None  # vsock: and other forms are not ours to speak


class Notifier:
    """Talks to systemd when started by it (``Type=notify``); every method is a no-op otherwise.

    ``watchdog()`` sends at most one WATCHDOG=1 per half of $WATCHDOG_USEC, as
    sd_watchdog_enabled(3) advises. A failed send is logged, never raised: losing a ping must not
    stop the doorbell (systemd restarts us if pings stay away, which is the point).
    """

    def __init__(self, environ: Mapping[str, str] | None = None, *,
                 clock: MonotonicClock | None = None, pid: int | None = None) -> None:
        env = os.environ if environ is None else environ
        self._clock = clock or _SystemMonotonic()
        raw = env.get("NOTIFY_SOCKET", "")
        self._addr = _address(raw) if raw else None
        if raw and self._addr is None:
            log.warning("NOTIFY_SOCKET=%r is not a path or abstract socket; not notifying", raw)
        self.watchdog_interval: float | None = None
        usec = env.get("WATCHDOG_USEC", "")
        wd_pid = env.get("WATCHDOG_PID", "")
        mine = str(os.getpid() if pid is None else pid)
        if usec and (not wd_pid or wd_pid == mine):
            try:
                value = int(usec)
            except ValueError:
                log.warning("WATCHDOG_USEC=%r is not a whole number; watchdog off", usec)
            else:
                if value > 0:
                    self.watchdog_interval = value / 1_000_000
        self._last_ping: float | None = None
        self._sock: socket.socket | None = None
        self._failed = False

    @property
    def enabled(self) -> bool:
        """True when running under systemd with a notify socket."""
        return self._addr is not None

    def send(self, message: str) -> bool:
        """Send one raw notify message ("KEY=value" lines). True if it went out."""
        if self._addr is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(message.encode("utf-8"), self._addr)
        except OSError as exc:
            if not self._failed:
                log.warning("cannot notify systemd at %r: %s", self._addr.replace("\0", "@"), exc)
            self._failed = True
            return False
        if self._failed:
            log.info("notifying systemd works again")
            self._failed = False
        return True

    def ready(self) -> bool:
        return self.send("READY=1")

    def status(self, text: str) -> bool:
        """A one-line status for ``systemctl status`` (newlines are flattened)."""
        return self.send("STATUS=" + " ".join(text.splitlines()))

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def watchdog(self) -> bool:
        """WATCHDOG=1, at most once per half watchdog interval. True if a ping was sent."""
        if self._addr is None or self.watchdog_interval is None:
            return False
        now = self._clock.monotonic()
        if self._last_ping is not None and now - self._last_ping < self.watchdog_interval / 2:
            return False
        if self.send("WATCHDOG=1"):
            self._last_ping = now
            return True
        return False

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FrameWatchdog:
    """Ties systemd's view of our health to frames actually being processed.

    The run loop calls ``frame_processed(now)`` after each frame: the first sends READY=1, and every
    call may send WATCHDOG=1 (rate-limited by the Notifier). A stuck camera means no calls, so no
    pings, so systemd kills and restarts the agent after WatchdogSec. ``alive(now)`` is for loops
    that also wake up without frames: it pings only if the last frame is younger than the
    watchdog interval, so idling can never hide a stuck camera.
    """

    def __init__(self, notifier: Notifier) -> None:
        self._notifier = notifier
        self._ready = False
        self._last_frame: float | None = None

    @property
    def is_ready(self) -> bool:
        return self._ready

    def frame_processed(self, now: float) -> None:
        self._last_frame = now
        if not self._ready:
            self._ready = True
            self._notifier.ready()
            log.info("first frame processed; told systemd we are ready")
        self._notifier.watchdog()

    def alive(self, now: float) -> None:
        interval = self._notifier.watchdog_interval
        if self._last_frame is None or interval is None:
            return
        if now - self._last_frame < interval:
            self._notifier.watchdog()
