"""LiveLane: when a live view message may go out on the device's connection (issue 15). Live
segments are QoS 0 and never stored; they yield to the ring lane, and only one may wait in
paho's queue at a time (its MQTTMessageInfo says when paho has written it), so a ring published
meanwhile waits behind at most one live segment. The socket's unsent bytes (SIOCOUTQNSD) must
also be under LIVE_LOWAT: on a slow uplink the live thread then waits here, its bounded queue
drops whole GOPs, and the viewer loses the oldest video, never a ring.

Only the live thread calls ``admit`` and ``published``; the uplink's thread sets ``ring_busy``
and calls ``reset``. Nothing here is called from paho's callbacks and no lock is held while
paho runs: paho calls ``on_publish`` holding its own callback lock, and a lock of ours taken
in both orders would deadlock the two threads.
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
                 monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._socket = socket
        self.lowat = lowat
        self._monotonic = monotonic
        self._sleep = sleep
        self._last: Any = None            # the last live message's MQTTMessageInfo
        self._ring = threading.Event()
        self.sent_messages = 0

    def ring_busy(self, busy: bool) -> None:
        if busy:
            self._ring.set()
        else:
            self._ring.clear()

    def reset(self) -> None:
        """The connection dropped: nothing handed to paho is waiting any more."""
        self._last = None

    def room(self) -> bool:
        last = self._last
        return not self._ring.is_set() and (last is None or last.is_published()) and \
            unsent_bytes(self._socket()) < self.lowat

    def admit(self, timeout: float) -> bool:
        """Wait until a live message may go: no ring in flight, the last live message written
        out by paho, the socket nearly drained. False after ``timeout`` s."""
        end = self._monotonic() + timeout
        while not self.room():
            if self._monotonic() >= end:
                return False
            self._sleep(POLL)
        return True

    def published(self, info: Any) -> None:
        """The MQTTMessageInfo of the message just handed to paho (None: it was not)."""
        self._last = info
        if info is not None:
            self.sent_messages += 1
