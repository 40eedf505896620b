"""PrerollRing: the last few seconds of encoded video, held as whole GOPs (DESIGN.md decision 6).
Pure logic: no threads, no clock, never a raw frame."""

from __future__ import annotations

import logging
from collections import deque

from doorstep.capture.frames import EncodedPacket

log = logging.getLogger(__name__)


class PrerollRing:
    """Encoded packets grouped into GOPs, each starting at a keyframe.

    After each push, whole oldest GOPs are evicted as long as the next GOP still starts at or
    before ``newest - seconds``, so the keyframe at or before that point is always kept and a
    clip can reach back the full ``seconds``. Packets before the first keyframe are dropped:
    nothing can be decoded from them.
    """

    def __init__(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"PrerollRing: seconds must be >= 0, got {seconds}")
        self.seconds = seconds
        self._gops: deque[list[EncodedPacket]] = deque()
        self._bytes = 0
        self._dropped = 0

    def push(self, packet: EncodedPacket) -> None:
        if packet.keyframe:
            self._gops.append([packet])
        elif self._gops:
            self._gops[-1].append(packet)
        else:
            self._dropped += 1
            if self._dropped == 1:
                log.debug("preroll: dropping packets until the first keyframe")
            return
        self._bytes += len(packet.data)
        self._evict(packet.seconds)

    def since(self, t_seconds: float) -> list[EncodedPacket]:
        """Packets from the keyframe at or before ``t_seconds`` (pts seconds) to the newest.

        If ``t_seconds`` is older than everything held, starts at the oldest keyframe.
        """
        start = 0
        for i, gop in enumerate(self._gops):
            if gop[0].seconds <= t_seconds:
                start = i
            else:
                break
        return [p for i, gop in enumerate(self._gops) if i >= start for p in gop]

    def packets(self) -> list[EncodedPacket]:
        """Everything held, oldest first."""
        return [p for gop in self._gops for p in gop]

    def clear(self) -> None:
        self._gops.clear()
        self._bytes = 0

    @property
    def bytes(self) -> int:
        """Bytes of encoded video held."""
        return self._bytes

    @property
    def duration(self) -> float:
        """Seconds from the oldest keyframe held to the newest packet (0 when empty)."""
        if not self._gops:
            return 0.0
        return self._gops[-1][-1].seconds - self._gops[0][0].seconds

    @property
    def gops(self) -> int:
        return len(self._gops)

    def __len__(self) -> int:
        return sum(len(g) for g in self._gops)

    def _evict(self, newest: float) -> None:
        horizon = newest - self.seconds
        while len(self._gops) > 1 and self._gops[1][0].seconds <= horizon:
            gop = self._gops.popleft()
            self._bytes -= sum(len(p.data) for p in gop)
