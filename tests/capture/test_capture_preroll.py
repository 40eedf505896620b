"""PrerollRing: whole GOPs kept, oldest evicted, clips start on a keyframe."""

from __future__ import annotations

from fractions import Fraction

import pytest

from doorstep.capture.frames import EncodedPacket
from doorstep.capture.preroll import PrerollRing

TB = Fraction(1, 90000)


def packet(i: int, fps: int = 10, gop: int = 10, size: int = 100) -> EncodedPacket:
    pts = round(i / fps / TB)
    return EncodedPacket(data=bytes(size), pts=pts, dts=pts, keyframe=i % gop == 0,
                         time_base=TB, wall=1000.0 + i / fps)


def test_keeps_the_keyframe_at_or_before_the_preroll_point() -> None:
    ring = PrerollRing(2.5)
    for i in range(60):  # 6 s at 10 fps, a keyframe each second
        ring.push(packet(i))
    # newest is 5.9 s; 5.9 - 2.5 = 3.4 s, so the GOP starting at 3.0 s must still be there
    held = ring.packets()
    assert held[0].keyframe and held[0].seconds == pytest.approx(3.0)
    assert ring.gops == 3
    assert ring.duration == pytest.approx(2.9)
    assert ring.bytes == 30 * 100 == sum(len(p.data) for p in held)


def test_evicts_whole_gops_only() -> None:
    ring = PrerollRing(1.0)
    for i in range(35):
        ring.push(packet(i))
        held = ring.packets()
        assert held[0].keyframe
        assert ring.duration >= min(1.0, held[-1].seconds) - 1e-9
    assert ring.duration < 1.0 + 1.0  # never more than seconds + one GOP


def test_since_starts_at_the_keyframe_at_or_before_t() -> None:
    ring = PrerollRing(5.0)
    for i in range(50):
        ring.push(packet(i))
    clip = ring.since(2.5)
    assert clip[0].keyframe and clip[0].seconds == pytest.approx(2.0)
    assert clip[-1].seconds == pytest.approx(4.9) and len(clip) == 30
    assert ring.since(3.0)[0].seconds == pytest.approx(3.0)  # exactly on a keyframe
    assert ring.since(-10.0)[0].seconds == pytest.approx(0.0)  # older than held: all of it
    assert ring.since(100.0)[0].seconds == pytest.approx(4.0)  # future: the newest GOP


def test_packets_before_the_first_keyframe_are_dropped() -> None:
    ring = PrerollRing(3.0)
    for i in range(5, 25):  # joins mid-GOP
        ring.push(packet(i))
    assert ring.packets()[0].seconds == pytest.approx(1.0)
    assert len(ring) == 15


def test_zero_seconds_keeps_just_the_current_gop() -> None:
    ring = PrerollRing(0.0)
    for i in range(25):
        ring.push(packet(i))
    assert ring.gops == 1 and ring.packets()[0].seconds == pytest.approx(2.0)
    ring.clear()
    assert ring.bytes == 0 and ring.duration == 0.0 and ring.since(0.0) == []
