"""The Raspberry Pi camera behind the FrameSource interface, and picamera2's H.264 encoder behind
the Encoder interface. picamera2 exists only on a Pi, so it is imported lazily, here only."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from doorstep.capture.frames import CameraHealth, CameraState, EncodedPacket, Frame, StreamInfo
from doorstep.capture.masks import Polygon, PrivacyMask, i420_planes
from doorstep.core.clock import Clock, SystemClock
from doorstep.core.errors import CameraUnavailable, CaptureError

log = logging.getLogger(__name__)

PICAM_TIME_BASE = Fraction(1, 1_000_000)  # picamera2 encoders stamp frames in microseconds
# libcamera's enumerations, by value (picamera2 passes ints through)
AF_MANUAL, AF_CONTINUOUS = 0, 2
AE_EXPOSURE_MODES = {"normal": 0, "short": 1, "long": 2}
HDR_SINGLE_EXPOSURE = 3


@dataclass(frozen=True)
class PicameraControls:
    """The [camera] settings that become libcamera controls (config.schema.CameraConfig
    documents each): focus, exposure, HDR and the NoIR tuning."""

    focus: str = "continuous"          # or "fixed", at lens_position dioptres
    lens_position: float = 1.0
    exposure_mode: str = "normal"      # AeExposureMode: normal, short, long
    max_exposure_ms: float = 0.0       # 0: one frame
    exposure_value: float = 0.0
    hdr: str = "off"                   # "sensor" (Camera Module 3) or "single-exposure" (Pi 5)
    noir: bool = False

    @classmethod
    def from_config(cls, camera: Any) -> PicameraControls:
        return cls(**{name: getattr(camera, name) for name in cls.__dataclass_fields__})


def _default_camera_factory(camera_num: int, tuning: Any = None) -> Any:
    from picamera2 import Picamera2  # only on a Pi (python3-picamera2)
    return Picamera2(camera_num, tuning=tuning)


def _camera_model(camera_num: int) -> str:
    """The sensor libcamera reports for camera ``camera_num`` ("imx708", "imx219_noir"...)."""
    from picamera2 import Picamera2
    cameras = Picamera2.global_camera_info()
    if camera_num >= len(cameras):
        raise CameraUnavailable(f"picamera2: no camera {camera_num} attached")
    return str(cameras[camera_num].get("Model", ""))


def _set_sensor_hdr(camera_num: int, on: bool) -> None:
    """Camera Module 3's own HDR is a switch on the sensor, set before the camera opens."""
    from picamera2.devices.imx708 import IMX708
    with IMX708(camera_num) as sensor:
        sensor.set_sensor_hdr_mode(on)


def _packed_i420(array: np.ndarray, width: int, height: int) -> np.ndarray:
    """picamera2's strided YUV420 array (h*3/2, stride) as packed I420 (h*3/2, w)."""
    if array.shape[1] == width:
        return np.ascontiguousarray(array)
    y, u, v = i420_planes(array, width, height)
    return np.concatenate([y.reshape(-1), u.reshape(-1), v.reshape(-1)]).reshape(
        height * 3 // 2, width)


class Picamera2Source:
    """A FrameSource over picamera2: a YUV420 main stream for clips, a YUV420 lores stream whose
    luma the motion detector reads, privacy masks burnt into both buffers before anyone (the
    hardware encoder included) sees them.

    A missing camera, a camera that is busy, gone or silent for ``capture_timeout`` seconds
    raises CameraUnavailable inside; ``frames()`` then closes the camera and reopens it after
    an exponential backoff on ``clock`` (``backoff_initial`` doubling up to ``backoff_max``).
    After ``max_retries`` consecutive failures (None: never give up) the CameraUnavailable
    escapes. ``health`` says how it is going.
    """

    def __init__(self, size: tuple[int, int] = (1280, 720), fps: float = 30.0, *,
                 lores_size: tuple[int, int] = (320, 240), privacy: Sequence[Polygon] = (),
                 clock: Clock | None = None, camera_num: int = 0,
                 capture_timeout: float = 2.0, backoff_initial: float = 0.5,
                 backoff_max: float = 30.0, max_retries: int | None = None,
                 camera_factory: Callable[..., Any] | None = None,
                 controls: PicameraControls | None = None) -> None:
        if size[0] % 2 or size[1] % 2 or lores_size[0] % 2 or lores_size[1] % 2:
            raise CaptureError(f"picamera2: sizes must be even, got {size} and {lores_size}")
        self._size = (int(size[0]), int(size[1]))
        self._fps = Fraction(fps).limit_denominator(1001)
        self.lores_size = (int(lores_size[0]), int(lores_size[1]))
        self.privacy = PrivacyMask(privacy)
        self.clock: Clock = clock or SystemClock()
        self.camera_num = camera_num
        self.capture_timeout = capture_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.max_retries = max_retries
        self._factory = camera_factory or _default_camera_factory
        self.controls = controls or PicameraControls()
        self.model: str | None = None      # the sensor, once a camera has opened
        self.autofocus: bool | None = None  # whether it has a lens the AF moves
        self.lux: float | None = None       # the light level of the latest frame
        self._night = False
        self.camera: Any = None
        self._encoders: list[tuple[Any, Any]] = []
        self._lock = threading.Lock()
        self._closed = False
        self._state = CameraState.STARTING
        self._retries = 0
        self._restarts = 0
        self._frames = 0
        self._last_error: str | None = None

    # -- FrameSource -------------------------------------------------------------------------
    @property
    def fps(self) -> Fraction:
        return self._fps

    @property
    def size(self) -> tuple[int, int]:
        return self._size

    @property
    def health(self) -> CameraHealth:
        return CameraHealth(self._state, self._retries, self._restarts, self._frames,
                            self._last_error)

    def frames(self) -> Iterator[Frame]:
        index = 0
        ts0: int | None = None
        last_pts = -1.0
        step = 1.0 / float(self._fps)
        while not self._closed:
            try:
                if self.camera is None:
                    self._open()
                i420, lores, ts_ns = self._capture()
            except CameraUnavailable as e:
                self._failed(e)
                continue
            if ts0 is None:
                ts0 = ts_ns
            pts = (ts_ns - ts0) / 1e9
            if pts <= last_pts:  # sensor clock restarted with the camera: keep time moving
                ts0 = ts_ns - round((last_pts + step) * 1e9)
                pts = last_pts + step
            last_pts = pts
            if self._state is not CameraState.RUNNING:
                log.info("picamera2: camera %d running", self.camera_num)
            self._state = CameraState.RUNNING
            self._retries = 0
            self._frames += 1
            yield Frame(index=index, pts=pts, wall=self.clock.wall(), i420=i420, lores=lores)
            index += 1

    def close(self) -> None:
        self._closed = True
        self._state = CameraState.STOPPED
        self._close_camera()

    def __enter__(self) -> Picamera2Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- encoders that run inside picamera2 (see PicameraEncoder) ----------------------------
    def attach_encoder(self, encoder: Any, output: Any) -> None:
        """Run a picamera2 encoder on the main stream, now and after every reopen."""
        with self._lock:
            self._encoders.append((encoder, output))
            camera = self.camera
        if camera is not None:
            camera.start_encoder(encoder, output, name="main")

    def detach_encoder(self, encoder: Any) -> None:
        with self._lock:
            self._encoders = [(e, o) for e, o in self._encoders if e is not encoder]
            camera = self.camera
        if camera is not None and encoder in getattr(camera, "encoders", ()):
            camera.stop_encoder(encoder)

    # -- internals ---------------------------------------------------------------------------
    def _open(self) -> None:
        w, h = self._size
        try:
            model = _camera_model(self.camera_num)
            tuning = self._prepare(model)
            camera = self._factory(self.camera_num, tuning)
        except IndexError as e:  # picamera2 indexes its camera list: no camera attached
            raise CameraUnavailable(f"picamera2: no camera {self.camera_num} attached") from e
        except RuntimeError as e:  # camera present but could not be acquired (busy, broken)
            raise CameraUnavailable(f"picamera2: camera {self.camera_num} will not open: "
                                    f"{e}") from e
        self.camera = camera
        self.model = model
        try:
            controls = self._controls(camera.camera_controls)
            config = camera.create_video_configuration(
                main={"size": (w, h), "format": "YUV420"},
                lores={"size": self.lores_size, "format": "YUV420"},
                controls=controls)
            camera.configure(config)
        except (RuntimeError, ValueError, CaptureError) as e:
            self._close_camera()
            self._closed = True
            self._state = CameraState.FAILED
            if isinstance(e, CaptureError):
                raise
            raise CaptureError(f"picamera2: camera {self.camera_num} rejected {w}x{h} "
                               f"(lores {self.lores_size}) at {float(self._fps):g} fps: "
                               f"{e}") from e
        if self.privacy:
            camera.pre_callback = self._mask_buffers
        try:
            with self._lock:
                encoders = list(self._encoders)
            for encoder, output in encoders:
                camera.start_encoder(encoder, output, name="main")
            camera.start()
        except RuntimeError as e:
            self._close_camera()
            raise CameraUnavailable(f"picamera2: camera {self.camera_num} will not start: "
                                    f"{e}") from e
        log.info("picamera2: camera %d open, %dx%d + lores %dx%d at %g fps", self.camera_num,
                 w, h, self.lores_size[0], self.lores_size[1], float(self._fps))

    def _prepare(self, model: str) -> Any:
        """Before the camera opens: the sensor's HDR switch, and the tuning to load (None:
        libcamera's own choice for this sensor)."""
        c = self.controls
        if c.hdr == "sensor" and not model.startswith("imx708"):
            self._closed = True
            self._state = CameraState.FAILED
            raise CaptureError(f"camera.hdr: \"sensor\" needs a Camera Module 3 (imx708); "
                               f"camera {self.camera_num} is {model or 'unknown'}")
        if model.startswith("imx708"):
            try:
                _set_sensor_hdr(self.camera_num, c.hdr == "sensor")
            except (RuntimeError, OSError) as e:
                if c.hdr == "sensor":
                    raise CameraUnavailable(f"picamera2: cannot switch the sensor's HDR on: "
                                            f"{e}") from e
                log.debug("picamera2: sensor HDR left as it was: %s", e)
        if not c.noir or model.endswith("_noir"):
            return None      # libcamera already picks the NoIR tuning for a _noir sensor
        from picamera2 import Picamera2
        try:
            return Picamera2.load_tuning_file(f"{model}_noir.json")
        except RuntimeError as e:
            self._closed = True
            self._state = CameraState.FAILED
            raise CaptureError(f"camera.noir: no tuning file {model}_noir.json for camera "
                               f"{self.camera_num} ({model}): {e}") from e

    def _controls(self, advertised: dict[str, Any]) -> dict[str, Any]:
        """The libcamera controls for this camera: only those it advertises, with a log line
        for each setting it cannot honour (a fixed-focus lens has no AfMode)."""
        c = self.controls
        frame_us = round(1e6 / float(self._fps))
        max_us = round(c.max_exposure_ms * 1000)
        controls: dict[str, Any] = (
            {"FrameDurationLimits": (frame_us, max_us)} if max_us > frame_us
            else {"FrameRate": float(self._fps)})

        def want(name: str, value: Any, setting: str) -> None:
            if name in advertised:
                controls[name] = value
            else:
                log.warning("picamera2: %s does not offer %s: %s is not applied", self.model,
                            name, setting)

        if c.exposure_mode != "normal":
            want("AeExposureMode", AE_EXPOSURE_MODES[c.exposure_mode],
                 f"camera.exposure_mode = {c.exposure_mode}")
        if c.exposure_value:
            want("ExposureValue", float(c.exposure_value), "camera.exposure_value")
        self.autofocus = "AfMode" in advertised
        if c.focus == "continuous":
            if self.autofocus:
                controls["AfMode"] = AF_CONTINUOUS
            else:
                log.info("picamera2: %s has a fixed-focus lens: no autofocus to turn on",
                         self.model)
        else:
            want("AfMode", AF_MANUAL, "camera.focus = fixed")
            if "LensPosition" in advertised:
                top = advertised["LensPosition"][1]
                controls["LensPosition"] = min(float(c.lens_position), float(top or 32))
        if c.hdr == "single-exposure":
            if "HdrMode" not in advertised:
                raise CaptureError(f"camera.hdr: \"single-exposure\" needs a Pi 5's HdrMode, "
                                   f"which camera {self.camera_num} ({self.model}) lacks")
            controls["HdrMode"] = HDR_SINGLE_EXPOSURE
        if self._night and "Saturation" in advertised:
            controls["Saturation"] = 0.0
        return controls

    def set_night(self, night: bool) -> None:
        """Night mode: the picture in grey, where IR light makes colours meaningless."""
        self._night = night
        camera = self.camera
        if camera is not None and "Saturation" in camera.camera_controls:
            camera.set_controls({"Saturation": 0.0 if night else 1.0})

    def _capture(self) -> tuple[np.ndarray, np.ndarray, int]:
        w, h = self._size
        lw, lh = self.lores_size
        try:
            request = self.camera.capture_request(wait=self.capture_timeout)
        except TimeoutError as e:
            raise CameraUnavailable(f"picamera2: camera {self.camera_num} sent no frame for "
                                    f"{self.capture_timeout:g} s") from e
        except RuntimeError as e:
            raise CameraUnavailable(f"picamera2: camera {self.camera_num} failed: {e}") from e
        try:
            main = _packed_i420(request.make_array("main"), w, h)
            lores_y, _, _ = i420_planes(request.make_array("lores"), lw, lh)
            metadata = request.get_metadata()
            ts_ns = int(metadata["SensorTimestamp"])
            lux = metadata.get("Lux")
            self.lux = float(lux) if lux is not None else None
        finally:
            request.release()
        return main, np.ascontiguousarray(lores_y), ts_ns

    def _mask_buffers(self, request: Any) -> None:
        """pre_callback: runs on picamera2's thread before the encoder or we see the buffers."""
        from picamera2 import MappedArray
        for name, (w, h) in (("main", self._size), ("lores", self.lores_size)):
            with MappedArray(request, name) as m:
                self.privacy.apply(m.array, w, h)

    def _failed(self, error: CameraUnavailable) -> None:
        self._close_camera()
        self._retries += 1
        self._last_error = str(error)
        if self.max_retries is not None and self._retries > self.max_retries:
            self._state = CameraState.FAILED
            log.error("picamera2: giving up after %d attempts: %s", self._retries - 1, error)
            raise error
        if self._state is CameraState.RUNNING:
            self._restarts += 1
        self._state = CameraState.RETRYING
        delay = min(self.backoff_max, self.backoff_initial * 2 ** (self._retries - 1))
        log.warning("picamera2: %s; retry %d in %.1f s", error, self._retries, delay)
        self.clock.sleep(delay)

    def _close_camera(self) -> None:
        camera, self.camera = self.camera, None
        if camera is None:
            return
        for step in ("stop_encoder", "stop", "close"):
            try:
                getattr(camera, step)()
            except RuntimeError as e:  # a dead camera often fails to stop; it is closed anyway
                log.debug("picamera2: %s while closing: %s", step, e)


def _annexb_output_class(base: type) -> type:
    """An Output subclass (of picamera2's real base class) that hands packets to a callback."""

    class AnnexBOutput(base):
        def __init__(self, sink: Callable[[bytes, bool, int | None], None]) -> None:
            super().__init__()
            self._sink = sink

        def outputframe(self, frame: Any, keyframe: bool = True, timestamp: int | None = None,
                        packet: Any = None, audio: bool = False) -> None:
            if audio or frame is None:
                return
            self._sink(bytes(frame), bool(keyframe), timestamp)

    return AnnexBOutput


class PicameraEncoder:
    """The Encoder interface over picamera2's H264Encoder (the Pi's hardware encoder on a Pi 4,
    libav on a Pi 5). The camera thread encodes every main-stream frame; ``encode(frame)`` only
    collects the packets that have arrived since the last call.

    Packets carry microsecond pts (picamera2's timestamps, kept increasing across camera
    restarts) and the wall time at which they arrived.
    """

    name = "picamera2"

    def __init__(self, source: Picamera2Source, *, bitrate_kbps: int = 2500,
                 gop_seconds: float = 1.0) -> None:
        from picamera2.encoders import H264Encoder
        from picamera2.outputs import Output
        self.source = source
        self.gop_frames = max(1, round(float(source.fps) * gop_seconds))
        self._queue: deque[EncodedPacket] = deque()
        self._offset = 0
        self._last_pts = -1
        self._step_us = round(1e6 / float(source.fps))
        self._no_forced_key_said = False
        self._encoder = H264Encoder(bitrate=bitrate_kbps * 1000, repeat=True,
                                    iperiod=self.gop_frames, framerate=float(source.fps))
        self._output = _annexb_output_class(Output)(self._arrived)
        source.attach_encoder(self._encoder, self._output)
        log.info("encoder: picamera2 H264Encoder %dx%d, %d kbit/s, keyframe every %d frames",
                 source.size[0], source.size[1], bitrate_kbps, self.gop_frames)

    @property
    def info(self) -> StreamInfo:
        w, h = self.source.size
        return StreamInfo(width=w, height=h, fps=self.source.fps, time_base=PICAM_TIME_BASE)

    def encode(self, frame: Frame) -> list[EncodedPacket]:
        return self._drain()

    def flush(self) -> list[EncodedPacket]:
        return self._drain()

    def close(self) -> None:
        self.source.detach_encoder(self._encoder)

    def request_keyframe(self) -> bool:
        """An IDR on the next frame (capture/keyframes.py). picamera2's H264Encoder has no
        public call for it; its V4L2 encoder (Pi 4 and earlier) keeps the device open as
        ``vd`` while it runs, and the V4L2 control FORCE_KEY_FRAME on that device does it.
        Without that device (libav's encoder on a Pi 5, or not running) it cannot: False, said
        once. Verified only against a fake picamera2 and a fake ioctl."""
        from doorstep.capture.keyframes import force_v4l2_keyframe

        device = getattr(self._encoder, "vd", None)
        if device is None or getattr(device, "closed", False):
            if not self._no_forced_key_said:
                self._no_forced_key_said = True
                log.info("encoder picamera2: %s has no V4L2 device open, so it cannot make a "
                         "keyframe on request", type(self._encoder).__name__)
            return False
        try:
            force_v4l2_keyframe(device)
        except OSError as exc:
            log.warning("encoder picamera2: the keyframe request failed: %s", exc)
            return False
        return True

    def _arrived(self, data: bytes, keyframe: bool, timestamp: int | None) -> None:
        """Runs on picamera2's camera thread: only stamps the packet and queues it."""
        ts = self._last_pts + self._step_us if timestamp is None else int(timestamp)
        pts = ts + self._offset
        if pts <= self._last_pts:  # the encoder restarted with the camera: carry on upwards
            self._offset = self._last_pts + self._step_us - ts
            pts = ts + self._offset
        self._last_pts = pts
        self._queue.append(EncodedPacket(data=data, pts=pts, dts=pts, keyframe=keyframe,
                                         time_base=PICAM_TIME_BASE,
                                         wall=self.source.clock.wall()))

    def _drain(self) -> list[EncodedPacket]:
        out = []
        while self._queue:
            out.append(self._queue.popleft())
        return out
