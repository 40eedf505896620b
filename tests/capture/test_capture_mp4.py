"""FragmentedMp4Writer: clips from pre-roll packets, decoded back with PyAV, written to a sink
that cannot seek, and still playable when cut off after a fragment."""

from __future__ import annotations

import io
from collections.abc import Callable
from fractions import Fraction

import av
import numpy as np
import pytest

from doorstep.capture.encoder import PyAvEncoder
from doorstep.capture.frames import EncodedPacket, Frame
from doorstep.capture.mp4 import FragmentedMp4Writer
from doorstep.capture.preroll import PrerollRing

FPS = 15


class ForwardOnlySink:
    """Like the sealing writer: takes bytes in order, cannot seek or tell, remembers chunks."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.chunks.append(bytes(data))
        return len(data)

    def seek(self, *args: object) -> int:
        raise OSError("this sink cannot seek")

    def tell(self) -> int:
        raise OSError("this sink cannot tell")

    def seekable(self) -> bool:
        return False

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)


def encoded(make_i420: Callable[..., np.ndarray], n: int, start: int = 0) -> tuple[
        PyAvEncoder, list[EncodedPacket]]:
    enc = PyAvEncoder("libx264", width=320, height=240, fps=Fraction(FPS), gop_seconds=1.0,
                      preset="ultrafast", bitrate_kbps=300)
    packets: list[EncodedPacket] = []
    for i in range(start, start + n):
        i420 = make_i420(i)
        packets += enc.encode(Frame(i, i / FPS, 2000.0 + i / FPS, i420, i420[:240]))
    return enc, packets + enc.flush()


def decode(data: bytes) -> list[av.VideoFrame]:
    with av.open(io.BytesIO(data), "r") as container:
        return list(container.decode(video=0))


def test_clip_from_the_ring_decodes_with_its_frames_and_duration(
        make_i420: Callable[..., np.ndarray]) -> None:
    enc, packets = encoded(make_i420, 90)  # 6 s
    ring = PrerollRing(3.0)
    for p in packets:
        ring.push(p)
    clip = ring.since(packets[-1].seconds - 3.0)  # keyframe at 2.0 s .. 5.93 s: 59 frames
    sink = ForwardOnlySink()
    with FragmentedMp4Writer(sink, enc.info) as writer:
        writer.write(clip)
    assert writer.start_wall == pytest.approx(2000.0 + 2.0)
    frames = decode(sink.data)
    assert len(frames) == len(clip) == 60
    assert frames[0].time == 0.0  # rebased: the clip starts at 0
    assert frames[-1].time == pytest.approx(59 / FPS, abs=1e-3)
    with av.open(io.BytesIO(sink.data), "r") as container:
        assert (container.duration or 0) / 1e6 == pytest.approx(60 / FPS, abs=0.01)
    # and what was encoded is what comes back: the bar is where frame 30 put it
    y = frames[0].to_ndarray(format="gray")
    assert abs(int(np.argmax(y[120])) - (30 * 4) % (320 - 16)) <= 2


def test_fragments_reach_the_sink_as_gops_complete(make_i420: Callable[..., np.ndarray]) -> None:
    enc, packets = encoded(make_i420, 45)
    sink = ForwardOnlySink()
    writer = FragmentedMp4Writer(sink, enc.info)
    writer.write(packets[:16])  # two keyframes in: the first GOP is complete
    first = writer.bytes_written
    assert first > 0 and sink.data[4:8] == b"ftyp" and b"moof" in sink.data
    writer.write(packets[16:])
    writer.close()
    assert writer.bytes_written > first and len(decode(sink.data)) == 45


def test_clip_cut_after_a_fragment_still_plays_up_to_it(
        make_i420: Callable[..., np.ndarray]) -> None:
    enc, packets = encoded(make_i420, 45)
    sink = ForwardOnlySink()
    writer = FragmentedMp4Writer(sink, enc.info)
    ends = []
    for p in packets:
        writer.write_packet(p)
        ends.append(writer.bytes_written)
    writer.close()
    data = sink.data
    after_two_gops = ends[30]  # muxing the keyframe at 30 flushed the fragment of 15..29
    assert len(decode(data[:after_two_gops])) == 30
    # cut in the middle of the third fragment: the first two still decode
    middle = (after_two_gops + len(data)) // 2
    with av.open(io.BytesIO(data[:middle]), "r") as container:
        got = 0
        try:
            for _ in container.decode(video=0):
                got += 1
        except av.FFmpegError:
            pass  # the torn fragment at the end may fail; what came before must not
    assert got >= 30


def test_packets_before_a_keyframe_are_skipped(make_i420: Callable[..., np.ndarray]) -> None:
    enc, packets = encoded(make_i420, 30)
    sink = ForwardOnlySink()
    with FragmentedMp4Writer(sink, enc.info) as writer:
        writer.write(packets[3:])
    assert writer.dropped == 12 and len(decode(sink.data)) == 15
