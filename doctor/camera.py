"""The doctor's camera and encoder checks: the configured source opened as the agent opens it,
a few seconds of its frames measured against the configured size and rate (by the source's own
timestamps), and those frames through the configured encoder. If the camera gave no frames,
the encoder is tried on a synthetic picture instead, so the two faults are told apart."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from doorstep.capture.encoder import open_encoder
from doorstep.capture.frames import EncodedPacket, Encoder, Frame, FrameSource
from doorstep.capture.source import open_source, source_kind
from doorstep.config.schema import Config
from doorstep.core.clock import Clock, SystemClock
from doorstep.core.errors import CaptureError
from doorstep.doctor.report import Result, failed, passed, skipped

log = logging.getLogger(__name__)

RATE_TOLERANCE = 0.9        # at least 90% of camera.fps, measured by the frames' timestamps
CAPTURE_SECONDS = 2.0       # of frames to measure (media time)
WALL_LIMIT_SECONDS = 15.0   # give up waiting for them after this long

FIX_PICAMERA2 = ("install Raspberry Pi OS's picamera2 (sudo apt install "
                 "--no-install-recommends python3-picamera2) and rebuild the venv with "
                 "`doorstep install`, which keeps --system-site-packages; the module lines "
                 "below show what the venv imports")
FIX_NO_CAMERA = ("check the ribbon cable (contacts facing the right way, both ends latched) "
                 "and that `rpicam-hello --list-cameras` lists the camera; stop the agent "
                 "while the doctor runs (systemctl stop doorstep-agent): one process at a "
                 "time may hold the camera")

OpenSource = Callable[..., FrameSource]


@dataclass
class Captured:
    frames: list[Frame] = field(default_factory=list)
    packets: list[EncodedPacket] = field(default_factory=list)
    error: str | None = None


def check_camera_and_encoder(cfg: Config, *, clock: Clock | None = None,
                             opener: OpenSource = open_source) -> list[Result]:
    """[camera result, encoder result]."""
    cam = cfg.camera
    clock = clock or SystemClock()
    want = f"{cam.width}x{cam.height} at {cam.fps:g} fps"
    try:
        source = opener(cam, privacy=cfg.privacy.masks, clock=clock, max_retries=0)
    except ImportError as exc:
        return [failed("camera", f"{cam.source}: does not import here: {exc}", FIX_PICAMERA2),
                _encoder_alone(cfg)]
    except CaptureError as exc:
        return [failed("camera", str(exc), _fix_for(cam.source)), _encoder_alone(cfg)]
    try:
        encoder, encoder_error = _open_encoder(cfg, source)
        got = _capture(source, encoder, clock, max_frames=max(10, round(cam.fps *
                                                                         CAPTURE_SECONDS)))
        camera = _judge_camera(cfg, source, got, want)
        if encoder is None:
            if not got.frames:       # the camera's own fault first (picamera2 missing, say)
                return [camera, _encoder_alone(cfg)]
            return [camera, failed("encoder", f"{cfg.encoder.name}: {encoder_error}",
                                   _encoder_fix(cfg))]
        try:
            got.packets += encoder.flush()
        finally:
            encoder.close()
        if not got.frames:
            return [camera, _encoder_alone(cfg)]
        return [camera, _judge_encoder(cfg, encoder, got)]
    finally:
        source.close()


def _open_encoder(cfg: Config, source: FrameSource) -> tuple[Encoder | None, str]:
    try:
        return open_encoder(cfg.encoder.name, width=source.size[0], height=source.size[1],
                            fps=Fraction(source.fps), bitrate_kbps=cfg.encoder.bitrate_kbps,
                            gop_seconds=cfg.encoder.gop_seconds, preset=cfg.encoder.preset,
                            subpel=cfg.encoder.subpel, source=source), ""
    except (CaptureError, ImportError, OSError, ValueError) as exc:
        return None, str(exc)


def _capture(source: FrameSource, encoder: Encoder | None, clock: Clock, *,
             max_frames: int) -> Captured:
    got = Captured()
    deadline = clock.monotonic() + WALL_LIMIT_SECONDS
    try:
        for frame in source.frames():
            got.frames.append(frame)
            if encoder is not None:
                got.packets += encoder.encode(frame)
            if len(got.frames) >= max_frames or clock.monotonic() > deadline:
                break
    except ImportError as exc:
        got.error = f"does not import here: {exc}"
    except CaptureError as exc:
        got.error = str(exc)
    return got


def _judge_camera(cfg: Config, source: FrameSource, got: Captured, want: str) -> Result:
    cam = cfg.camera
    name = _describe(source, cam.source)
    if got.error is not None:
        fix = FIX_PICAMERA2 if "does not import" in got.error else _fix_for(cam.source)
        return failed("camera", f"{name}: {got.error}", fix,
                      frames=len(got.frames))
    if len(got.frames) < 2:
        return failed("camera", f"{name}: gave {len(got.frames)} frame(s), too few to measure",
                      _fix_for(cam.source), frames=len(got.frames))
    first, last = got.frames[0], got.frames[-1]
    span = last.pts - first.pts
    rate = (len(got.frames) - 1) / span if span > 0 else 0.0
    size = (last.width, last.height)
    data = {"width": size[0], "height": size[1], "fps": round(rate, 2),
            "frames": len(got.frames), "source": cam.source}
    detail = f"{name}: {size[0]}x{size[1]} at {rate:.1f} fps over {len(got.frames)} frames"
    if size != (cam.width, cam.height):
        return failed("camera", f"{detail}; camera.width/height ask for "
                      f"{cam.width}x{cam.height}", _size_fix(cam.source, size), **data)
    if rate < cam.fps * RATE_TOLERANCE:
        return failed("camera", f"{detail}; camera.fps asks for {cam.fps:g}",
                      _rate_fix(cam.source, rate), **data)
    return passed("camera", f"{detail} (wanted {want})", **data)


def _judge_encoder(cfg: Config, encoder: Encoder, got: Captured) -> Result:
    name = encoder.name
    size = sum(len(p.data) for p in got.packets)
    keys = sum(p.keyframe for p in got.packets)
    data = {"encoder": name, "packets": len(got.packets), "bytes": size, "keyframes": keys}
    if not got.packets or not keys:
        return failed("encoder", f"{name}: {len(got.packets)} packets and {keys} keyframes "
                      f"from {len(got.frames)} frames", _encoder_fix(cfg), **data)
    return passed("encoder", f"{name}: {len(got.packets)} packets ({size} bytes, {keys} "
                  f"keyframe(s)) from {len(got.frames)} frames", **data)


def _encoder_alone(cfg: Config) -> Result:
    """The encoder on a synthetic picture at the configured size (the camera gave none)."""
    cam = cfg.camera
    if cfg.encoder.name == "picamera2" or (cfg.encoder.name == "auto"
                                           and cam.source == "picamera2"):
        return skipped("encoder", "picamera2's encoder runs inside the camera: fix the camera "
                       "first")
    fps = Fraction(cam.fps).limit_denominator(1001)
    try:
        encoder = open_encoder(cfg.encoder.name, width=cam.width, height=cam.height, fps=fps,
                               bitrate_kbps=cfg.encoder.bitrate_kbps,
                               gop_seconds=cfg.encoder.gop_seconds, preset=cfg.encoder.preset,
                               subpel=cfg.encoder.subpel)
    except (CaptureError, OSError, ValueError) as exc:
        return failed("encoder", f"{cfg.encoder.name}: {exc}", _encoder_fix(cfg))
    got = Captured()
    try:
        for i in range(max(2, round(float(fps) * cfg.encoder.gop_seconds) + 1)):
            got.frames.append(_synthetic(i, cam.width, cam.height, float(fps)))
            got.packets += encoder.encode(got.frames[-1])
        got.packets += encoder.flush()
    finally:
        encoder.close()
    result = _judge_encoder(cfg, encoder, got)
    return Result(result.name, result.status, result.detail + " (a synthetic picture: the "
                  "camera gave none)", result.fix, result.data)


def _synthetic(index: int, width: int, height: int, fps: float) -> Frame:
    i420 = np.full((height * 3 // 2, width), 128, dtype=np.uint8)
    i420[:height, (index * 8) % width: (index * 8) % width + 8] = 235
    return Frame(index, index / fps, 0.0, i420, np.zeros((2, 2), np.uint8))


def _describe(source: Any, configured: str) -> str:
    if configured == "picamera2":
        model = getattr(source, "model", None)
        focus = {True: ", autofocus on", False: ", fixed-focus lens", None: ""}[
            getattr(source, "autofocus", None)]
        return f"picamera2 camera {getattr(source, 'camera_num', 0)}" + (
            f" ({model}{focus})" if model else "")
    return f"{source_kind(configured)} {configured}"


def _fix_for(configured: str) -> str:
    kind = "picamera2" if configured == "picamera2" else source_kind(configured)
    if kind == "picamera2":
        return FIX_NO_CAMERA
    if kind == "device":
        return (f"check that {configured} exists (`v4l2-ctl --list-devices`) and that no other "
                f"program holds it; stop the agent while the doctor runs")
    if kind == "network":
        return "check the URL, the camera's address and its credentials"
    return f"check that {configured} exists and is a video file"


def _size_fix(configured: str, size: tuple[int, int]) -> str:
    if configured == "picamera2":
        return ("the camera chose another size: set camera.width/height to a size it offers "
                "(`rpicam-hello --list-cameras`)")
    if source_kind(configured) == "device":
        return (f"the device gives {size[0]}x{size[1]}: set camera.width/height to a size it "
                f"offers (`v4l2-ctl -d {configured} --list-formats-ext`)")
    return f"the source is {size[0]}x{size[1]}: set camera.width/height to match"


def _rate_fix(configured: str, rate: float) -> str:
    if configured == "picamera2":
        return ("the sensor mode may not reach this rate at this size, or the light is so low "
                "that exposures are stretched (camera.max_exposure_ms): lower camera.fps, or "
                "light the porch")
    if source_kind(configured) == "device":
        return ("many USB cameras reach 720p30 only in MJPEG: set camera.v4l2_format = "
                "\"mjpeg\" (see `v4l2-ctl --list-formats-ext`), or lower camera.fps")
    return f"the source runs at {rate:.1f} fps: set camera.fps to match"


def _encoder_fix(cfg: Config) -> str:
    if cfg.encoder.name == "h264_v4l2m2m":
        return ("the hardware encoder exists on a Pi 4 only (a Pi 5 has none): set "
                "encoder.name = \"auto\"")
    return "set encoder.name = \"auto\", which picks an encoder that works here"
