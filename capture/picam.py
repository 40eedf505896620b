"""The Raspberry Pi camera behind the FrameSource interface, and picamera2's H.264 encoder behind
the Encoder interface. picamera2 exists only on a Pi, so it is imported lazily, here only."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from fractions import Fraction
from typing import Any

import numpy as np

from doorstep.capture.frames import CameraHealth, CameraState, EncodedPacket, Frame, StreamInfo
from doorstep.capture.masks import Polygon, PrivacyMask, i420_planes
from doorstep.core.clock import Clock, SystemClock
from doorstep.core.errors import CameraUnavailable, CaptureError

log = logging.getLogger(__name__)

PICAM_TIME_BASE = Fraction(1, 1_000_000)  # picamera2 encoders stamp frames in microseconds


def _default_camera_factory(camera_num: int) -> Any:
    from picamera2 import Picamera2  # only on a Pi (python3-picamera2)
    return Picamera2(camera_num)


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
                 camera_factory: Callable[[int], Any] | None = None) -> None:
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
            camera = self._factory(self.camera_num)
        except IndexError as e:  # picamera2 indexes its camera list: no camera attached
            raise CameraUnavailable(f"picamera2: no camera {self.camera_num} attached") from e
        except RuntimeError as e:  # camera present but could not be acquired (busy, broken)
            raise CameraUnavailable(f"picamera2: camera {self.camera_num} will not open: "
                                    f"{e}") from e
        self.camera = camera
        try:
            config = camera.create_video_configuration(
                main={"size": (w, h), "format": "YUV420"},
                lores={"size": self.lores_size, "format": "YUV420"},
                controls={"FrameRate": float(self._fps)})
            camera.configure(config)
        except (RuntimeError, ValueError) as e:
            self._close_camera()
            self._closed = True
            self._state = CameraState.FAILED
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
            ts_ns = int(request.get_metadata()["SensorTimestamp"])
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
