"""LiveLane: when a live view message may go out on the device's connection (issue 15). Live
segments are QoS 0 and never stored; they yield to the ring lane, and only one may wait in
paho's queue at a time, so a ring published meanwhile waits behind at most one live segment.
The socket's unsent bytes (SIOCOUTQNSD) must also be under LIVE_LOWAT: on a slow uplink the
live thread then waits here, its bounded queue drops whole GOPs, and the viewer loses the
oldest video, never a ring.

Threads: ``admit``/``published`` run on the live thread, ``sent`` on whichever thread paho
writes from, ``ring_busy``/``reset`` on the uplink's; one re-entrant lock, because paho may
call ``on_publish`` from inside ``publish`` on the same thread.
"""

from __future__ import annotations

import fcntl
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

LIVE_LOWAT = 16384          # bytes the socket may hold unsent before a live segment goes
SIOCOUTQNSD = 0x894B        # Linux: bytes in the send queue not yet sent
POLL = 0.005


def unsent_bytes(sock: Any) -> int:
    """Bytes the kernel holds unsent for ``sock`` (0 where it cannot tell)."""
    try:
        raw = fcntl.ioctl(sock.fileno(), SIOCOUTQNSD, b"\0\0\0\0")
    except (OSError, AttributeError, ValueError):
        return 0
    return int(struct.unpack("i", raw)[0])


class LiveLane:
    def __init__(self, socket: Callable[[], Any], *, lowat: int = LIVE_LOWAT,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._socket = socket
        self.lowat = lowat
        self._monotonic = monotonic
        self.lock = threading.RLock()
        self._room = threading.Condition(self.lock)
        self._waiting: set[int] = set()      # mids handed to paho, not yet written out
        self._early: set[int] = set()        # written before publish() returned its mid
        self._publishing = False
        self._ring = False
        self.sent_messages = 0

    def ring_busy(self, busy: bool) -> None:
        with self._room:
            self._ring = busy
            if not busy:
                self._room.notify_all()

    def reset(self) -> None:
        """The connection dropped: nothing handed to paho is waiting any more."""
        with self._room:
            self._waiting.clear()
            self._early.clear()
            self._room.notify_all()

    def admit(self, timeout: float) -> bool:
        """Wait until a live message may go: no ring in flight, nothing live in paho's queue,
        the socket nearly drained. False after ``timeout`` s."""
        end = self._monotonic() + timeout
        with self._room:
            while True:
                if not self._ring and not self._waiting and \
                        unsent_bytes(self._socket()) < self.lowat:
                    self._publishing = True
                    return True
                left = end - self._monotonic()
                if left <= 0:
                    return False
                self._room.wait(min(left, POLL))

    def published(self, mid: int | None) -> None:
        """After ``admit`` returned True: the mid paho gave the message (None: not sent)."""
        with self._room:
            self._publishing = False
            if mid is None:
                return
            if mid in self._early:
                self._early.discard(mid)
            else:
                self._waiting.add(mid)
            self.sent_messages += 1

    def sent(self, mid: int) -> bool:
        """paho wrote message ``mid`` to the socket; True if it was a live one."""
        with self._room:
            if mid in self._waiting:
                self._waiting.discard(mid)
                self._room.notify_all()
                return True
            if self._publishing:
                self._early.add(mid)
                return True
            return False
