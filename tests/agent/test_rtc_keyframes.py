"""A viewer's keyframe request (RTCP PLI) reaches the running encoder (capture/keyframes.py,
docs/rtc.md "Keyframe requests"): with a 10 s GOP, the IDR arrives at a real aiortc viewer
within a few frames, not at the next scheduled keyframe, and a flood of requests forces at most
one IDR per 500 ms."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from doorstep.broker import Mosquitto
from doorstep.capture.frames import EncodedPacket
from tests.agent.rtcpeer import Viewer
from tests.agent.test_rtc import Doorbell, doorbell
from tests.faults.harness import wait_for

GOP = 10.0


def with_gop(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    from tests.agent import test_rtc
    from tests.faults import harness

    def toml(*args: Any, **kwargs: Any) -> str:
        return harness.agent_toml(*args, **kwargs).replace("gop_seconds = 0.5",
                                                           f"gop_seconds = {seconds:g}")
    monkeypatch.setattr(test_rtc, "agent_toml", toml)


@pytest.fixture
def long_gop(tmp_path: Path, broker: Mosquitto, monkeypatch: pytest.MonkeyPatch
             ) -> Iterator[Doorbell]:
    with_gop(monkeypatch, GOP)
    yield from doorbell(tmp_path, broker, "max_sessions = 2")


@pytest.fixture
def cannot_force(tmp_path: Path, broker: Mosquitto, monkeypatch: pytest.MonkeyPatch
                 ) -> Iterator[Doorbell]:
    """An encoder that cannot make a keyframe on request (picamera2's libav encoder on a Pi 5),
    a GOP longer than rtc.idle_seconds."""
    from doorstep.agent import wiring
    from doorstep.capture.keyframes import KeyframeGate

    with_gop(monkeypatch, 6.0)
    monkeypatch.setattr(wiring, "KeyframeGate", lambda encoder: KeyframeGate(object()))
    yield from doorbell(tmp_path, broker, "idle_seconds = 2")


@pytest.mark.slow
def test_a_pli_brings_an_idr_long_before_the_next_scheduled_one(
        long_gop: Doorbell, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    encoded: list[float] = []          # when the encoder made each keyframe (monotonic)
    lock = threading.Lock()

    def keyframes(packet: EncodedPacket) -> None:
        if packet.keyframe:
            with lock:
                encoded.append(time.monotonic())
    long_gop.service.agent.packet_consumers.append(keyframes)
    viewer = Viewer()
    try:
        sdp, fp = viewer.offer()
        _, ack = long_gop.call("rtc_offer", {"sdp": sdp, "fingerprint": fp})
        assert ack.ok, ack.reason
        viewer.accept(ack.data)
        # the first picture: an IDR asked for when the viewer connected
        wait_for(lambda: viewer.video_frames >= 10, 30, "the first picture at the viewer")
        time.sleep(1.0)                # past the gate's 500 ms since that IDR
        seen, made = len(viewer.keyframes), len(encoded)
        asked = time.monotonic()
        viewer.pli()
        wait_for(lambda: len(viewer.keyframes) > seen, GOP / 3,
                 "the IDR the viewer asked for")
        assert viewer.keyframes[seen] - asked < 2.0
        with lock:
            assert encoded[made] - asked < 1.0     # the next scheduled one is ~8.5 s away
        # a flood of requests: at most one forced IDR per 500 ms
        time.sleep(0.6)
        made = len(encoded)
        start = time.monotonic()
        while time.monotonic() - start < 1.0:
            viewer.pli()
            time.sleep(0.02)
        time.sleep(0.5)
        with lock:
            flood = len(encoded) - made
        assert 1 <= flood <= 3, flood
        assert any("limited" in r.message and "at most one per 500 ms" in r.message
                   for r in caplog.records)
        frames = viewer.video_frames
        wait_for(lambda: viewer.video_frames > frames + 10, 20, "the picture to go on")
    finally:
        viewer.close()


@pytest.mark.slow
def test_a_viewer_waiting_for_the_first_keyframe_is_not_hung_up_on_as_silent(
        cannot_force: Doorbell) -> None:
    """It sends no RTCP report before it has received anything; the doorbell used to take
    that for a viewer gone and hung up before the first picture whenever the GOP was longer
    than rtc.idle_seconds."""
    rtc = cannot_force.service.rtc
    assert rtc is not None
    viewer = Viewer()
    try:
        sdp, fp = viewer.offer()
        cmd, ack = cannot_force.call("rtc_offer", {"sdp": sdp, "fingerprint": fp})
        assert ack.ok, ack.reason
        viewer.accept(ack.data)
        wait_for(lambda: viewer.video_frames >= 10 or cmd.counter not in rtc.sessions, 30,
                 "the first picture at the next scheduled keyframe")
        assert cmd.counter in rtc.sessions, rtc.ended
        assert viewer.video_frames >= 10
    finally:
        viewer.close()
