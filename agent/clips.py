"""SegmentedClip: a clip recorded as a chain of sealed segments, each committed to the outbox
the moment it closes, so it uploads while the clip still records, and a crash loses at most
the segment being written (issue 15; docs/capture.md, "Clips as segments").

The frame thread muxes packets and cuts segments (capture/segments.py); sealing and committing
each one runs on the commit thread, in order, so the seqs of one clip's segments follow each
other in the order they were recorded.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from doorstep.capture.clipaudio import AudioTap
from doorstep.capture.frames import EncodedPacket, StreamInfo
from doorstep.capture.segments import Mp4Segmenter, Segment
from doorstep.core.errors import DiskFull, OutboxError, SealError
from doorstep.protocol.kinds import Priority
from doorstep.uplink.outbox import Item

log = logging.getLogger(__name__)

Submit = Callable[[Callable[[], None]], None]


class SegmentedClip:
    """Packets in on the frame thread (``write``); each closed segment is handed to ``submit``
    (the commit thread) to be sealed and committed. ``close()`` runs on the commit thread
    after every segment job of the clip, and returns the clip's segment seqs in order.

    The first stored segment's manifest has ``parent`` ""; every later one names that first
    seq, so the owner can group a clip's segments while it still records. A segment that
    cannot be stored (a full disk) is logged and counted in ``lost``; the clip goes on with the
    next one, which may fit again.
    """

    def __init__(self, info: StreamInfo, *, clip: int, priority: Priority, seconds: float,
                 store: Callable[[bytes, Priority, str, frozenset[int]], Item],
                 submit: Submit, audio: AudioTap | None = None) -> None:
        """``audio``: the microphone, when clips have sound (clip.audio): every segment then
        carries its span's sound beside the video."""
        self.clip = clip
        self.priority = priority
        self._info = info
        self._segmenter = Mp4Segmenter(info, seconds=seconds, audio=audio)
        self._store = store
        self._submit = submit
        self.first: EncodedPacket | None = None
        self.last: EncodedPacket | None = None
        self.packets = 0
        # Written on the commit thread only; read there, or after the clip's close() has run
        self._lock = threading.Lock()
        self.seqs: list[int] = []
        self.lost: list[int] = []       # indexes of segments that could not be stored

    def write(self, packets: Sequence[EncodedPacket]) -> None:
        if not packets:
            return
        if self.first is None:
            self.first = packets[0]
        self.last = packets[-1]
        self.packets += len(packets)
        for seg in self._segmenter.write(packets):
            self._hand_over(seg)

    @property
    def duration(self) -> float:
        if self.first is None or self.last is None:
            return 0.0
        return self.last.seconds - self.first.seconds + float(1 / self._info.fps)

    @property
    def segments(self) -> int:
        """Segments closed so far (stored or not)."""
        return self._segmenter.index

    def close(self) -> list[int]:
        """On the commit thread, after the clip's last packet: the last segment is stored now.
        Returns the seqs of every stored segment, in order."""
        for seg in self._segmenter.close():
            self._commit(seg, self.priority)
        with self._lock:
            return list(self.seqs)

    def abort(self) -> None:
        """Nothing was written: there is no segment to store."""

    def _hand_over(self, seg: Segment) -> None:
        priority = self.priority          # as it is now: a ring later raises later segments
        self._submit(lambda: self._commit(seg, priority))

    def _commit(self, seg: Segment, priority: Priority) -> None:
        with self._lock:
            parent = str(self.seqs[0]) if self.seqs else ""
            spare = frozenset(self.seqs)
        try:
            seq = self._store(seg.data, priority, parent, spare).seq
        except (DiskFull, OutboxError, SealError, OSError) as exc:
            with self._lock:
                self.lost.append(seg.index)
            log.error("clip %d: segment %d (%.1f s at %.1f s) not stored: %s", self.clip,
                      seg.index, seg.duration, seg.start, exc)
            return
        with self._lock:
            self.seqs.append(seq)
        log.debug("clip %d: segment %d stored as seq %d (%d bytes of video)", self.clip,
                  seg.index, seq, len(seg.data))
