"""Picamera2Source and PicameraEncoder against the fake picamera2 (tests/fakes/picamera2)."""

from __future__ import annotations

import io
import itertools
from typing import Any

import av
import numpy as np
import pytest

from doorstep.capture.encoder import open_encoder
from doorstep.capture.frames import CameraState
from doorstep.capture.mp4 import FragmentedMp4Writer
from doorstep.capture.picam import Picamera2Source, PicameraEncoder
from doorstep.capture.preroll import PrerollRing
from doorstep.core.clock import FakeClock
from doorstep.core.errors import CameraUnavailable


def source(clock: FakeClock | None = None, **kwargs: Any) -> Picamera2Source:
    kwargs.setdefault("lores_size", (160, 120))  # stride 192 in the fake: padding exercised
    return Picamera2Source((320, 240), 30.0, clock=clock or FakeClock(), **kwargs)


def test_frames_have_main_lores_and_sensor_pts(fake_camera: Any) -> None:
    src = source()
    frames = list(itertools.islice(src.frames(), 5))
    assert src.size == (320, 240) and src.fps == 30
    f = frames[-1]
    assert f.i420.shape == (360, 320) and f.lores.shape == (120, 160)
    assert f.i420.flags.c_contiguous and f.lores.flags.c_contiguous
    assert [round(x.pts, 4) for x in frames] == [0.0, 0.0333, 0.0667, 0.1, 0.1333]
    # the moving square is in both streams, at the same place relative to the width
    col_main = int(np.argmax(f.y[100]))
    col_lores = int(np.argmax(f.lores[50]))
    assert col_main > 0 and abs(col_main / 320 - col_lores / 160) < 0.05
    cam = fake_camera.instances[0]
    config = cam.camera_configuration()
    assert config["main"] == {"size": (320, 240), "format": "YUV420", "stride": 320}
    assert config["lores"]["format"] == "YUV420" and config["controls"]["FrameRate"] == 30.0
    assert cam.outstanding == 0  # every request went back to the camera
    assert src.health.state is CameraState.RUNNING and src.health.frames == 5
    src.close()
    assert not cam.is_open and src.health.state is CameraState.STOPPED


def test_privacy_mask_is_burnt_into_both_streams(fake_camera: Any) -> None:
    right_half = ((0.5, 0.0), (1.0, 0.0), (1.0, 1.0), (0.5, 1.0))
    src = source(privacy=(right_half,))
    for f in itertools.islice(src.frames(), 40):  # the square crosses into the mask
        assert (f.y[:, 161:] == 16).all()
        assert (f.lores[:, 81:] == 16).all()
        u = f.i420[240:300].reshape(120, 160)
        assert (u[:, 81:] == 128).all()
    src.close()


def test_no_camera_retries_with_exponential_backoff(fake_camera: Any) -> None:
    fake_camera.missing_opens = 3  # plugged in while we wait
    fake_camera.busy_opens = 1
    clock = FakeClock()
    src = source(clock, backoff_initial=0.5, backoff_max=3.0)
    frame = next(src.frames())
    assert clock.sleeps == [0.5, 1.0, 2.0, 3.0]  # doubling, capped
    assert frame.index == 0
    assert src.health.state is CameraState.RUNNING and src.health.retries == 0
    src.close()


def test_gives_up_after_max_retries(fake_camera: Any) -> None:
    fake_camera.cameras = 0
    clock = FakeClock()
    src = source(clock, max_retries=2)
    with pytest.raises(CameraUnavailable, match="no camera 0"):
        next(src.frames())
    assert len(clock.sleeps) == 2
    health = src.health
    assert health.state is CameraState.FAILED and health.retries == 3
    assert "no camera" in (health.last_error or "")
    assert health.as_dict()["state"] == "failed"


def test_camera_that_stops_sending_is_reopened_and_time_goes_on(fake_camera: Any) -> None:
    fake_camera.hang_after = 10
    clock = FakeClock()
    src = source(clock, capture_timeout=1.5)
    frames = list(itertools.islice(src.frames(), 25))
    assert fake_camera.opened == 3  # two silent cameras replaced
    assert fake_camera.instances[0].is_open is False
    pts = [f.pts for f in frames]
    assert all(b > a for a, b in itertools.pairwise(pts))
    health = src.health
    assert health.restarts == 2 and health.retries == 0 and "no frame for 1.5 s" in str(
        health.last_error)
    src.close()


def test_picamera_encoder_packets_make_a_playable_clip(fake_camera: Any) -> None:
    src = source(privacy=(((0.0, 0.0), (0.25, 0.0), (0.25, 1.0), (0.0, 1.0)),))
    enc = open_encoder("auto", width=320, height=240, fps=src.fps, gop_seconds=0.5,
                       source=src)
    assert isinstance(enc, PicameraEncoder) and enc.name == "picamera2"
    ring = PrerollRing(10.0)
    for frame in itertools.islice(src.frames(), 45):
        for p in enc.encode(frame):
            ring.push(p)
    for p in enc.flush():
        ring.push(p)
    packets = ring.packets()
    assert len(packets) == 45
    assert [i for i, p in enumerate(packets) if p.keyframe] == [0, 15, 30]  # iperiod
    assert packets[1].pts - packets[0].pts == 33333  # microseconds
    sink = io.BytesIO()
    with FragmentedMp4Writer(sink, enc.info) as writer:
        writer.write(packets)
    with av.open(io.BytesIO(sink.getvalue()), "r") as container:
        decoded = list(container.decode(video=0))
    assert len(decoded) == 45
    # the encoder saw the masked buffer: the left quarter is black in the clip too
    assert decoded[-1].to_ndarray(format="gray")[:, :70].max() <= 24
    enc.close()
    src.close()


def test_encoder_survives_a_camera_restart(fake_camera: Any) -> None:
    fake_camera.hang_after = 20
    src = source()
    enc = PicameraEncoder(src, gop_seconds=0.5)
    packets = []
    for frame in itertools.islice(src.frames(), 30):
        packets += enc.encode(frame)
    assert len(packets) == 30
    pts = [p.pts for p in packets]
    assert all(b > a for a, b in itertools.pairwise(pts))  # the restart did not reset time
    assert packets[20].keyframe  # the new encoder session starts on a keyframe
    enc.close()
    src.close()
