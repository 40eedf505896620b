"""Mp4Segmenter: one clip's fragmented MP4, cut into segments at fragment (GOP) boundaries as
it is recorded, each a standalone MP4 (the clip's init segment, then its own fragments), so
each can be sealed and uploaded the moment it closes (issue 15; docs/capture.md).

One muxer runs for the whole clip, so timestamps and fragment numbers run on across segments,
and the joined segments are that muxer's stream byte for byte (core/fmp4.py joins them).
With sound (clip.audio) that muxer also carries the AAC track, so each fragment holds the
sound of its GOP's span and every segment has both tracks (docs/capture.md, "Sound in
segments"). No I/O and no threads: packets in, closed segments out.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from doorstep.capture.clipaudio import AudioTap
from doorstep.capture.frames import EncodedPacket, StreamInfo
from doorstep.capture.mp4 import FragmentedMp4Writer
from doorstep.core.errors import CaptureError
from doorstep.core.fmp4 import FRAGMENT_BOXES, INIT_BOXES, boxes

log = logging.getLogger(__name__)

SEGMENT_SECONDS = 2.0


@dataclass(frozen=True)
class Segment:
    """One closed segment of a clip. ``start`` and ``duration`` are seconds of clip time (0 is
    the clip's first frame); ``index`` counts from 0."""

    index: int
    init: bytes
    fragments: bytes
    start: float
    duration: float
    packets: int

    @property
    def data(self) -> bytes:
        """The segment as a standalone MP4: init, then its fragments."""
        return self.init + self.fragments


class _Stream:
    """The muxer's output, split into whole top-level boxes as they complete."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.init = b""
        self.fragments: list[bytes] = []   # whole moof+mdat pairs not yet in a segment
        self.emitted = 0                   # fragments completed so far, in the whole clip
        self._moof: bytes | None = None

    def write(self, data: bytes) -> int:
        self._buf += data
        used = 0
        for box in boxes(self._buf, complete=False):
            raw = bytes(self._buf[box.start:box.end])
            used = box.end
            if box.type in INIT_BOXES:
                self.init += raw
            elif box.type == FRAGMENT_BOXES[0]:
                self._moof = raw
            elif box.type == FRAGMENT_BOXES[1] and self._moof is not None:
                self.fragments.append(self._moof + raw)
                self.emitted += 1
                self._moof = None
            else:   # the trailer's mfra indexes one file's offsets: no segment carries it
                log.debug("segmenter: leaving out a %r box", box.type)
        del self._buf[:used]
        return len(data)


@dataclass(frozen=True)
class _Cut:
    """A segment decided at a keyframe, waiting for the muxer's fragments up to it."""

    index: int
    fragments: int                 # the clip's fragments (GOPs) up to and including its last
    start: float
    duration: float
    packets: int


class Mp4Segmenter:
    """Feed it a clip's packets (from a keyframe); it returns each segment as it closes.

    The first segment closes after one GOP, so the start of a clip (its pre-roll, all at hand
    at the trigger) leaves as soon and as small as it can, and the owner's app can start
    playing it sooner on a slow uplink. Every later segment closes at the first keyframe at
    which it holds at least ``seconds`` of video, so it is one or more whole GOPs (one GOP
    when the GOP is ``seconds`` or longer). ``close()`` returns the last one. The first
    packet must be a keyframe, as for FragmentedMp4Writer (packets before one are dropped).

    ``audio``: the microphone (clip.audio), muxed beside the video. The muxer then holds a
    keyframe back until the sound has caught up with it (a few frames; at most the writer's
    interleave limit), so a segment is decided at its closing keyframe and handed out once
    the fragment of its last GOP is complete: segment n is always the GOPs it was cut at,
    with their sound, whichever keyframe closes it.
    """

    def __init__(self, info: StreamInfo, *, seconds: float = SEGMENT_SECONDS,
                 audio: AudioTap | None = None) -> None:
        if seconds <= 0:
            raise ValueError(f"segmenter: seconds must be positive, got {seconds}")
        self.seconds = seconds
        self._out = _Stream()
        self._mp4 = FragmentedMp4Writer(self._out, info, audio)
        self._frame = float(1 / info.fps)
        self._origin: float | None = None     # the first packet's pts, seconds
        self._seg_start = 0.0                 # clip time of the open segment's first frame
        self._seg_packets = 0
        self._gops = 0                        # GOPs begun in the open segment
        self._keyframes = 0                   # GOPs begun in the clip (one fragment each)
        self._cuts: list[_Cut] = []           # segments decided, their last fragment to come
        self._last = 0.0
        self.index = 0                        # the open segment's index (those before it may
                                              # still wait for their last fragment: _cuts)
        self._closed = False

    @property
    def writer(self) -> FragmentedMp4Writer:
        return self._mp4

    def write(self, packets: Iterable[EncodedPacket]) -> list[Segment]:
        done: list[Segment] = []
        for packet in packets:
            done += self.write_packet(packet)
        return done

    def write_packet(self, packet: EncodedPacket) -> list[Segment]:
        """The segments this packet completes (none, mostly)."""
        if self._closed:
            raise CaptureError("segmenter: write after close")
        if self._origin is None:
            if not packet.keyframe:
                self._mp4.write_packet(packet)   # dropped there, with its count and log line
                return []
            self._origin = packet.seconds
        t = packet.seconds - self._origin
        due = (packet.keyframe and self._gops > 0
               and (self.index == 0 or t - self._seg_start >= self.seconds - self._frame / 2))
        self._mp4.write_packet(packet)           # a keyframe flushes the GOP before it
        if due:
            # (the keyframe that closed a segment is counted in the next one)
            self._cuts.append(_Cut(self.index, self._keyframes, self._seg_start,
                                   t - self._seg_start, self._seg_packets))
            self.index += 1
            self._seg_start = t
            self._seg_packets = 0
            self._gops = 0
        if packet.keyframe:
            self._gops += 1
            self._keyframes += 1
        self._seg_packets += 1
        self._last = t
        return self._ready()

    def close(self) -> list[Segment]:
        """Finish the muxer; the segments still to come, the last one last (none if no frame
        was written)."""
        if self._closed:
            return []
        self._closed = True
        self._mp4.close()
        if self._origin is None:
            return []
        done = self._ready()
        if self._cuts:
            raise CaptureError(f"segmenter: segment {self._cuts[0].index} closed with "
                               f"{self._out.emitted} fragments from the muxer, "
                               f"{self._cuts[0].fragments} expected")
        if not self._out.fragments:
            return done
        last = _Cut(self.index, self._out.emitted, self._seg_start,
                    self._last + self._frame - self._seg_start, self._seg_packets)
        self.index += 1
        return [*done, self._cut(last)]

    def _ready(self) -> list[Segment]:
        """The decided segments whose fragments have all come from the muxer."""
        done = []
        while self._cuts and self._out.emitted >= self._cuts[0].fragments:
            done.append(self._cut(self._cuts.pop(0)))
        return done

    def _cut(self, cut: _Cut) -> Segment:
        # the fragments not yet handed out that belong to this segment: the rest are later GOPs
        have = self._out.fragments
        mine = len(have) - (self._out.emitted - cut.fragments)
        if mine <= 0 or not self._out.init:
            raise CaptureError(f"segmenter: segment {cut.index} closed with no fragment from "
                               "the muxer")
        self._out.fragments = have[mine:]
        return Segment(cut.index, self._out.init, b"".join(have[:mine]), cut.start,
                       cut.duration, cut.packets)
