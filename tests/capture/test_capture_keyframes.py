"""Keyframes on request (capture/keyframes.py): libx264 makes a real IDR on the next frame, the
recording's segments stay whole and playable around extra keyframes, the gate rate-limits
requests, and picamera2's V4L2 path sets FORCE_KEY_FRAME (against the fake picamera2 and a
fake V4L2 device: no Pi here)."""

from __future__ import annotations

import io
import itertools
import logging
from fractions import Fraction
from typing import Any

import av
import numpy as np
import pytest

from doorstep.capture import keyframes
from doorstep.capture.annexb import NAL_PPS, NAL_SPS, is_idr, nal_type, split_nals
from doorstep.capture.encoder import PyAvEncoder
from doorstep.capture.frames import EncodedPacket, Frame
from doorstep.capture.keyframes import KeyframeGate, KeyframeOnDemand
from doorstep.capture.picam import Picamera2Source, PicameraEncoder
from doorstep.capture.segments import Mp4Segmenter
from doorstep.core.clock import FakeClock
from tests.capture.conftest import synthetic_i420

FPS = 15


def encode(n: int, forced: set[int], gop_seconds: float = 10.0) -> list[EncodedPacket]:
    """``n`` frames with a keyframe requested just before each frame in ``forced``."""
    enc = PyAvEncoder("libx264", width=320, height=240, fps=Fraction(FPS),
                      gop_seconds=gop_seconds, preset="ultrafast")
    assert isinstance(enc, KeyframeOnDemand)
    out: list[EncodedPacket] = []
    lores = np.zeros((8, 8), np.uint8)
    for i in range(n):
        if i in forced:
            assert enc.request_keyframe()
        out += enc.encode(Frame(i, i / FPS, 1000 + i / FPS, synthetic_i420(i), lores))
    return out + enc.flush()


def test_a_requested_keyframe_is_an_idr_with_parameter_sets_that_decodes_alone() -> None:
    packets = encode(40, {12})
    assert [i for i, p in enumerate(packets) if p.keyframe] == [0, 12]  # GOP is 150 frames
    forced = packets[12]
    assert is_idr(forced.data)
    assert {NAL_SPS, NAL_PPS} <= {nal_type(n) for n in split_nals(forced.data)}
    decoder = av.CodecContext.create("h264", "r")        # a viewer that joins right there
    frames = []
    for p in packets[12:]:
        frames += decoder.decode(av.Packet(p.data))
    frames += decoder.decode(None)
    assert len(frames) == 28


def test_the_recording_stays_whole_and_playable_around_extra_keyframes() -> None:
    packets = encode(60, {7, 9, 23, 24, 41}, gop_seconds=1.0)
    assert sum(p.keyframe for p in packets) >= 7
    seg = Mp4Segmenter(PyAvEncoder("libx264", width=320, height=240,
                                   fps=Fraction(FPS)).info, seconds=1.0)
    segments = []
    for p in packets:
        segments += seg.write([p])
    segments += seg.close()
    assert len(segments) >= 2
    decoded = 0
    for s in segments:                   # each segment plays on its own, as uploaded
        with av.open(io.BytesIO(s.data)) as c:
            n = len(list(c.decode(video=0)))
        assert n == s.packets
        decoded += n
    assert decoded == 60


class Counting:
    name = "counting"

    def __init__(self) -> None:
        self.asked = 0

    def request_keyframe(self) -> bool:
        self.asked += 1
        return True


def test_the_gate_forces_at_most_one_idr_per_interval_and_says_when_it_limits(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    clock = FakeClock()
    enc = Counting()
    gate = KeyframeGate(enc, interval=0.5, monotonic=clock.monotonic)
    assert gate.ask("session 1")
    for _ in range(120):                 # a hostile viewer: a PLI every 10 ms for 1.2 s
        clock.advance(0.01)
        gate.ask("session 2")
    assert enc.asked == 3                # at 0, at about 0.5 s and at about 1 s
    assert gate.limited == 118
    limited = [r for r in caplog.records if "limited" in r.message]
    assert len(limited) == 1 and "session 2" in limited[0].message
    assert "at most one per 500 ms" in limited[0].message


def test_an_encoder_that_cannot_is_said_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    gate = KeyframeGate(object())
    assert not gate.ask("session 1") and not gate.ask("session 1")
    assert len([r for r in caplog.records if "cannot make one" in r.message]) == 1


def test_picamera2_v4l2_encoder_gets_force_key_frame(fake_camera: Any,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Only against fakes: picamera2's H264Encoder (libx264 underneath) and its /dev/video11,
    which takes the control as the kernel would and makes the next frame a keyframe."""
    monkeypatch.setattr(keyframes, "_ioctl", lambda dev, req, arg: dev.ioctl(req, arg))
    src = Picamera2Source((320, 240), 30.0, clock=FakeClock(), lores_size=(160, 120))
    enc = PicameraEncoder(src, gop_seconds=10.0)
    packets: list[EncodedPacket] = []
    for i, frame in enumerate(itertools.islice(src.frames(), 40)):
        if i == 20:
            assert enc.request_keyframe()
        packets += enc.encode(frame)
    packets += enc.flush()
    device = enc._encoder.vd
    assert device.controls == [(keyframes.V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME, 1)]
    keys = [i for i, p in enumerate(packets) if p.keyframe]
    assert keys[0] == 0 and len(keys) == 2 and 20 <= keys[1] <= 23   # iperiod is 300
    enc.close()
    assert not enc.request_keyframe()     # the device is closed with the encoder
    src.close()
