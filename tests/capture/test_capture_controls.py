"""The Pi camera's controls from [camera], against the fake picamera2, which refuses any control
the camera does not advertise (as picamera2 does): continuous autofocus where there is a lens to
move, a fixed lens position, exposure limits, both kinds of HDR, the NoIR tuning file, and the
grey picture of night mode."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from doorstep.capture.picam import Picamera2Source, PicameraControls
from doorstep.core.clock import FakeClock
from doorstep.core.errors import CaptureError


def start(fake: Any, **controls: Any) -> tuple[Picamera2Source, Any]:
    src = Picamera2Source((320, 240), 30.0, lores_size=(160, 120), clock=FakeClock(),
                          max_retries=0, controls=PicameraControls(**controls))
    next(src.frames())
    return src, fake.instances[-1]


def test_the_fake_refuses_controls_the_camera_does_not_advertise(fake_camera: Any) -> None:
    import picamera2

    fake_camera.model = "imx219"                           # a v2: fixed-focus lens
    cam = picamera2.Picamera2(0)
    config = cam.create_video_configuration(controls={"AfMode": 2})
    with pytest.raises(RuntimeError, match="Control AfMode is not advertised by libcamera"):
        cam.configure(config)


def test_camera_module_3_focuses_continuously(fake_camera: Any) -> None:
    src, cam = start(fake_camera)
    assert cam.controls_set["AfMode"] == 2 and src.autofocus is True
    frame_meta = cam.capture_request(wait=1)
    assert frame_meta.get_metadata()["AfState"] == 2
    frame_meta.release()
    src.close()


def test_a_fixed_focus_camera_gets_no_autofocus_and_still_runs(fake_camera: Any) -> None:
    fake_camera.model = "imx219"
    src, cam = start(fake_camera)
    assert "AfMode" not in cam.controls_set and src.autofocus is False
    assert len(list(itertools.islice(src.frames(), 3))) == 3
    src.close()


def test_a_fixed_lens_position_from_the_config(fake_camera: Any) -> None:
    src, cam = start(fake_camera, focus="fixed", lens_position=2.5)
    assert cam.controls_set["AfMode"] == 0 and cam.controls_set["LensPosition"] == 2.5
    src.close()


def test_exposure_limits(fake_camera: Any) -> None:
    src, cam = start(fake_camera, exposure_mode="short", max_exposure_ms=200,
                     exposure_value=-1)
    assert cam.controls_set["AeExposureMode"] == 1 and cam.controls_set["ExposureValue"] == -1
    # frames may stretch to 200 ms in the dark: the rate is no longer pinned at 30
    assert cam.controls_set["FrameDurationLimits"] == (33333, 200000)
    assert "FrameRate" not in cam.controls_set
    src.close()
    src, cam = start(fake_camera)
    assert cam.controls_set["FrameRate"] == 30.0 and "AeExposureMode" not in cam.controls_set
    src.close()


def test_sensor_hdr_is_switched_on_the_camera_module_3_only(fake_camera: Any) -> None:
    src, _ = start(fake_camera, hdr="sensor")
    assert fake_camera.sensor_hdr is True
    src.close()
    src, _ = start(fake_camera)                  # turned off again when the config says off
    assert fake_camera.sensor_hdr is False
    src.close()
    fake_camera.model = "imx219"
    with pytest.raises(CaptureError, match=r"camera.hdr: \"sensor\" needs a Camera Module 3"):
        start(fake_camera, hdr="sensor")


def test_pi5_hdr_uses_hdrmode_and_is_refused_elsewhere(fake_camera: Any) -> None:
    fake_camera.pisp = True
    src, cam = start(fake_camera, hdr="single-exposure")
    assert cam.controls_set["HdrMode"] == 3
    src.close()
    fake_camera.pisp = False
    with pytest.raises(CaptureError, match=r"camera\.hdr.*needs a Pi 5"):
        start(fake_camera, hdr="single-exposure")


def test_noir_cameras_get_their_tuning_file(fake_camera: Any) -> None:
    fake_camera.model = "imx219"                       # a v2 NoIR reports plain imx219
    src, cam = start(fake_camera, noir=True)
    assert cam.tuning["fake_file"] == "imx219_noir.json"
    src.close()
    fake_camera.model = "imx708_wide_noir"             # libcamera picks it already
    src, cam = start(fake_camera, noir=True)
    assert cam.tuning is None
    src.close()
    fake_camera.model = "ov5647"
    with pytest.raises(CaptureError, match=r"camera\.noir: no tuning file ov5647_noir\.json"):
        start(fake_camera, noir=True)


def test_night_turns_the_picture_grey_and_lux_is_read(fake_camera: Any) -> None:
    fake_camera.lux = 3.5
    src, cam = start(fake_camera)
    next(src.frames())
    assert src.lux == 3.5
    src.set_night(True)
    assert cam.controls_history[-1] == {"Saturation": 0.0}
    src.set_night(False)
    assert cam.controls_history[-1] == {"Saturation": 1.0}
    src.close()
