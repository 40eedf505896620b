"""FragmentedMp4Writer: encoded H.264 packets into a fragmented MP4 written straight to a sink
that cannot seek (the sealing writer), so plaintext video never needs a file of its own."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from fractions import Fraction
from typing import Any, Protocol

import av
import numpy as np

from doorstep.capture.clipaudio import AudioTap
from doorstep.capture.frames import EncodedPacket, StreamInfo
from doorstep.core.errors import CaptureError

log = logging.getLogger(__name__)

# One fragment per GOP, the moov written up front (with no samples), and fragments that address
# their own data: each fragment is self-contained and nothing is ever rewritten.
MOVFLAGS = "frag_keyframe+empty_moov+default_base_moof"
AUDIO_RATE = 48000
AUDIO_TIME_BASE = Fraction(1, AUDIO_RATE)
AUDIO_BITRATE = 64000             # AAC, mono: clip.audio (docs/talk.md)
# With sound, the muxer holds each video packet until the sound has reached its time (so a
# fragment holds its GOP's sound); a microphone that falls silent would hold the video, and so
# every fragment and segment, until the clip ends. FFmpeg's limit on that wait (10 s by
# default), in microseconds: past it, the video goes on without the sound.
INTERLEAVE_US = "300000"
AUDIO_SLACK = 0.1                 # seconds the sound may drift from the video's clock


class ByteSink(Protocol):
    def write(self, data: bytes, /) -> Any: ...


class _ForwardOnly:
    """Shows PyAV only ``write``: with no seek/tell it treats the output as non-seekable and
    never goes back to patch earlier bytes. Also counts what passed through."""

    def __init__(self, sink: ByteSink) -> None:
        self._sink = sink
        self.written = 0

    def write(self, data: bytes) -> int:
        chunk = bytes(data)
        self._sink.write(chunk)
        self.written += len(chunk)
        return len(chunk)


class FragmentedMp4Writer:
    """Muxes EncodedPackets into fragmented MP4 on ``sink`` (anything with ``write(bytes)``).

    The sink receives ftyp+moov once the first keyframe arrives, then one moof+mdat fragment per
    GOP, each as soon as the next keyframe closes it; ``close()`` writes the last fragment and
    the mfra index. A copy cut off after any fragment still plays up to that fragment.

    Timestamps are rebased so the clip starts at 0 (the first packet written); the wall-clock
    start is the first packet's ``wall``, kept in ``start_wall`` for the clip's manifest.
    The SPS/PPS come in-band on the keyframe; the MP4 muxer builds its avcC from the first one,
    so the first packet must be a keyframe (packets before one are dropped, with a log line).
    """

    def __init__(self, sink: ByteSink, info: StreamInfo, audio: AudioTap | None = None, *,
                 movflags: str = MOVFLAGS) -> None:
        """``audio``: the microphone (clip.audio): its frames from the first packet's wall
        time on are encoded to AAC beside the video, each before the video packet it precedes.
        ``movflags``: how the MP4 is fragmented (live view cuts a fragment per frame)."""
        if info.codec != "h264":
            raise CaptureError(f"mp4 writer: codec {info.codec!r} is not supported, only h264")
        self.info = info
        self._out = _ForwardOnly(sink)
        try:
            self._container: Any = av.open(self._out, "w", format="mp4",
                                           options={"movflags": movflags,
                                                    "max_interleave_delta": INTERLEAVE_US})
            self._stream = self._container.add_mux_stream(
                "h264", rate=info.fps, width=info.width, height=info.height)
            self._stream.time_base = info.time_base
            self._audio = audio
            if audio is not None:
                self._astream = self._container.add_stream("aac", rate=AUDIO_RATE)
                self._astream.layout = "mono"
                self._astream.bit_rate = AUDIO_BITRATE
        except (av.FFmpegError, ValueError) as e:
            raise CaptureError(f"mp4 writer: cannot set up the muxer: {e}") from e
        self._origin: int | None = None  # first packet's dts, in info.time_base
        self._last_dts: int | None = None
        self.start_wall: float | None = None
        self.packets = 0
        self.dropped = 0
        self._closed = False
        self._audio_after = 0.0        # wall time of the last audio frame taken
        self._audio_pts = 0            # samples of sound written so far
        self._last_wall = 0.0          # wall time of the last packet written
        self.audio_frames = 0
        self.audio_dropped = 0         # frames left out to keep the sound to the video

    @property
    def bytes_written(self) -> int:
        """Bytes handed to the sink so far."""
        return self._out.written

    @property
    def duration(self) -> float:
        """Seconds of video written so far (start of first packet to start of last)."""
        if self._origin is None or self._last_dts is None:
            return 0.0
        return float((self._last_dts - self._origin) * self.info.time_base)

    def write(self, packets: Iterable[EncodedPacket]) -> None:
        for packet in packets:
            self.write_packet(packet)

    def write_packet(self, packet: EncodedPacket) -> None:
        if self._closed:
            raise CaptureError("mp4 writer: write after close")
        if self._origin is None and not packet.keyframe:
            self.dropped += 1
            log.debug("mp4 writer: dropping a packet before the first keyframe")
            return
        tb = self.info.time_base
        pts = self._rescale(packet.pts, packet.time_base)
        dts = self._rescale(packet.dts, packet.time_base)
        if self._origin is None:
            self._origin = dts
            self.start_wall = packet.wall
        pts -= self._origin
        dts -= self._origin
        if self._last_dts is not None and dts <= self._last_dts - self._origin:
            raise CaptureError(f"mp4 writer: packet dts {dts} does not follow "
                               f"{self._last_dts - self._origin} (time base {tb})")
        if self._audio is not None:
            self._write_audio(packet.wall, float(pts * tb))
        av_packet = av.Packet(packet.data)
        av_packet.pts = pts
        av_packet.dts = dts
        av_packet.time_base = tb
        av_packet.stream = self._stream
        av_packet.is_keyframe = packet.keyframe
        try:
            self._container.mux(av_packet)
        except av.FFmpegError as e:
            raise CaptureError(f"mp4 writer: muxing failed at packet {self.packets}: {e}") from e
        self._last_dts = dts + self._origin
        self._last_wall = packet.wall
        self.packets += 1

    def _write_audio(self, until: float, at: float) -> None:
        """The microphone's frames up to ``until``: the wall time of the video at clip time
        ``at``. A frame's wall time puts it against that video. Samples follow one another
        (the microphone's own clock) while they stay within AUDIO_SLACK of where the video
        puts them; past that the sound is set back in step: a frame that would come too late
        is left out (the video fell behind the wall clock: a source that stalled), and a gap
        before one that comes too early is filled with silence (frames the microphone lost).
        The sound starts with the video, in silence until the microphone's first frame."""
        assert self._audio is not None and self.start_wall is not None
        after = self._audio_after or self.start_wall
        for wall, frame in self._audio.since(after, until):
            self._audio_after = wall
            place = round((at - (until - wall)) * AUDIO_RATE)   # by the video's clock
            if place - self._audio_pts > AUDIO_SLACK * AUDIO_RATE or not self.audio_frames:
                self._audio_silence(place)
            elif self._audio_pts - place > AUDIO_SLACK * AUDIO_RATE:
                self.audio_dropped += 1
                continue
            frame.pts = self._audio_pts
            frame.time_base = AUDIO_TIME_BASE
            self._encode_audio(frame)
            self._audio_pts += frame.samples
            self.audio_frames += 1

    def _audio_silence(self, until: int) -> None:
        """Silence from where the sound has got to up to sample ``until``. (At the start,
        without it the muxer would start the sound at 0 anyway, the first AAC frame stretched
        over the gap, and a player would hear a jump there.)"""
        samples = until - self._audio_pts
        if samples <= 0:
            return
        quiet = av.AudioFrame.from_ndarray(np.zeros((1, samples), np.int16), format="s16",
                                           layout="mono")
        quiet.sample_rate = AUDIO_RATE
        quiet.pts = self._audio_pts
        quiet.time_base = AUDIO_TIME_BASE
        self._encode_audio(quiet)
        self._audio_pts = until

    def _encode_audio(self, frame: Any) -> None:
        try:
            for p in self._astream.encode(frame):
                self._container.mux(p)
        except av.FFmpegError as e:
            raise CaptureError(f"mp4 writer: audio failed: {e}") from e

    def close(self) -> None:
        """Write the last fragment and the trailer. Does not close the sink."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._audio is not None and self.start_wall is not None:
                # the sound of the last frame too: what the microphone has of it by now,
                # and silence for the little it has not read yet, so the sound ends with
                # the video
                end = self.duration + float(1 / self.info.fps)
                self._write_audio(self._last_wall + end - self.duration, end)
                if self.audio_frames:
                    self._audio_silence(min(round(end * AUDIO_RATE),
                                            self._audio_pts + round(AUDIO_SLACK * AUDIO_RATE)))
                self._encode_audio(None)
            self._container.close()
        except av.FFmpegError as e:
            raise CaptureError(f"mp4 writer: finishing the file failed: {e}") from e

    def __enter__(self) -> FragmentedMp4Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _rescale(self, value: int, time_base: Any) -> int:
        if time_base == self.info.time_base:
            return int(value)
        return round(value * time_base / self.info.time_base)
