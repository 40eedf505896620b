"""LiveMuxer: a live view session's fMP4, one fragment per frame (issue 15; docs/capture.md,
"Live view over the segment path"). The running encoder's packets are remuxed, never
re-encoded. Each fragment comes out as soon as the muxer has it: FFmpeg's mp4 muxer closes a
frame's fragment when the next frame arrives (it needs the frame's duration), so a fragment
lags its frame by one frame interval (67 ms at 15 fps). No I/O and no threads.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from doorstep.capture.frames import EncodedPacket, StreamInfo
from doorstep.capture.mp4 import FragmentedMp4Writer
from doorstep.capture.segments import _Stream

# a fragment per frame, the moov up front with no samples, fragments that address themselves
LIVE_MOVFLAGS = "frag_every_frame+empty_moov+default_base_moof"


@dataclass(frozen=True)
class LiveFragment:
    """One frame's ``moof`` + ``mdat``. ``key``: the frame is a keyframe (a viewer may start
    here, with ``init``); ``wall``: when the frame was taken."""

    data: bytes
    key: bool
    wall: float


class LiveMuxer:
    """Packets in (from a keyframe; any packet after a dropped run must be a keyframe too),
    one fragment per frame out. ``init`` is the stream's ftyp + moov once the first keyframe
    is in."""

    def __init__(self, info: StreamInfo) -> None:
        self._out = _Stream()
        self._mp4 = FragmentedMp4Writer(self._out, info, movflags=LIVE_MOVFLAGS)
        self._waiting: deque[EncodedPacket] = deque()   # written, fragment not out yet

    @property
    def init(self) -> bytes:
        return self._out.init

    @property
    def started(self) -> bool:
        return self._mp4.packets > 0

    def write(self, packet: EncodedPacket) -> list[LiveFragment]:
        before = self._mp4.packets
        self._mp4.write_packet(packet)
        if self._mp4.packets > before:
            self._waiting.append(packet)
        return self._take()

    def close(self) -> list[LiveFragment]:
        """The last frame's fragment."""
        self._mp4.close()
        return self._take()

    def _take(self) -> list[LiveFragment]:
        out = []
        for data in self._out.fragments:
            packet = self._waiting.popleft() if self._waiting else None
            out.append(LiveFragment(data, packet.keyframe if packet else False,
                                    packet.wall if packet else 0.0))
        self._out.fragments = []
        return out
