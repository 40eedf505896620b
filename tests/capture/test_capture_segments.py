"""Mp4Segmenter (issue 15): a clip cut into standalone fMP4 segments at GOP boundaries; each
plays on its own at its place in the clip, and joined they are the one muxer's stream, which
PyAV decodes end to end, with its duration and seeking intact."""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np
import pytest

from doorstep.capture.encoder import PyAvEncoder
from doorstep.capture.frames import EncodedPacket, Frame
from doorstep.capture.mp4 import FragmentedMp4Writer
from doorstep.capture.segments import Mp4Segmenter, Segment
from doorstep.core.errors import SealError
from doorstep.core.fmp4 import boxes, join, split_init
from tests.capture.conftest import synthetic_i420

FPS = 15


def packets(frames: int, gop_seconds: float = 0.5) -> list[EncodedPacket]:
    enc = PyAvEncoder("libx264", width=320, height=240, fps=Fraction(FPS),
                      gop_seconds=gop_seconds, preset="ultrafast")
    out: list[EncodedPacket] = []
    lores = np.zeros((8, 8), np.uint8)
    for i in range(frames):
        out += enc.encode(Frame(i, i / FPS, 1000 + i / FPS, synthetic_i420(i), lores))
    return out + enc.flush()


def segment(pkts: list[EncodedPacket], seconds: float) -> list[Segment]:
    seg = Mp4Segmenter(PyAvEncoder("libx264", width=320, height=240,
                                   fps=Fraction(FPS)).info, seconds=seconds)
    out = []
    for p in pkts:                       # one at a time, as the frame loop feeds it
        out += seg.write([p])
    return out + seg.close()


def times(mp4: bytes) -> list[float]:
    with av.open(io.BytesIO(mp4)) as c:
        return [float(f.time) for f in c.decode(video=0)]


def test_segments_close_at_gop_boundaries_and_play_alone() -> None:
    pkts = packets(100)                          # 6.67 s, a keyframe every 8 frames
    segs = segment(pkts, 2.0)
    # the first segment is one GOP (8 frames), so a clip's start leaves at once and small;
    # 2 s is 3.75 GOPs: every later one closes at the first keyframe at or past 2 s (4 GOPs)
    assert [s.packets for s in segs] == [8, 32, 32, 28]
    assert [s.index for s in segs] == [0, 1, 2, 3]
    assert sum(s.packets for s in segs) == len(pkts)
    for s in segs:
        assert s.data[4:8] == b"ftyp"
        alone = times(s.data)            # plays alone, at its own place in the clip
        assert len(alone) == s.packets
        assert alone[0] == pytest.approx(s.start, abs=1e-6)
        assert alone[-1] - alone[0] + 1 / FPS == pytest.approx(s.duration, abs=1e-6)
    assert len({s.init for s in segs}) == 1      # one init segment for the whole clip


def test_joined_segments_are_the_muxers_own_stream_and_decode_end_to_end() -> None:
    pkts = packets(100)
    whole = io.BytesIO()
    with FragmentedMp4Writer(whole, PyAvEncoder("libx264", width=320, height=240,
                                                fps=Fraction(FPS)).info) as w:
        w.write(pkts)
    joined = join([s.data for s in segment(pkts, 2.0)])
    # byte for byte the one-file clip, less its trailing mfra index
    expected = whole.getvalue()
    mfra = [b for b in boxes(expected) if b.type == b"mfra"]
    assert joined == expected[:mfra[0].start] if mfra else expected
    t = times(joined)
    assert len(t) == 100 and t[0] == 0.0
    assert t[-1] == pytest.approx(99 / FPS)
    with av.open(io.BytesIO(joined)) as c:
        stream = c.streams.video[0]
        assert float(c.duration or 0) / 1e6 == pytest.approx(100 / FPS, abs=0.1)
        c.seek(int(4.0 / stream.time_base), stream=stream)
        first = next(c.decode(stream))
        # a keyframe at or before 4 s (every 8 frames: 3.73 s)
        assert first.time == pytest.approx(56 / FPS) and first.key_frame


def test_one_gop_per_segment_when_the_gop_is_longer() -> None:
    segs = segment(packets(60, gop_seconds=1.0), 0.5)
    assert [s.packets for s in segs] == [15, 15, 15, 15]


def test_a_join_names_what_is_wrong() -> None:
    segs = segment(packets(40), 1.0)
    with pytest.raises(SealError, match="does not begin with its init segment"):
        join([segs[1].fragments])
    with pytest.raises(SealError, match="cut off"):
        split_init(segs[0].data[:-10])
    mixed = segs[0].init[:-1] + bytes([segs[0].init[-1] ^ 1])    # another stream's init
    with pytest.raises(SealError, match="another init segment"):
        join([segs[0].data, mixed + segs[1].fragments])
