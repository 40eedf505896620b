"""FileSource: frames from a video file, a network stream (RTSP/HTTP) or a V4L2 device, via PyAV.

Every frame leaves here as I420 at the source's native size with privacy masks already applied,
plus the lores grey image the motion detector reads (DESIGN.md decisions 7 and 8). With no
privacy mask, the frame carries the decoded picture itself (Frame.av_frame) and is not copied.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from fractions import Fraction
from typing import Any

import av
import numpy as np

from doorstep.capture.frames import CameraHealth, CameraState, Frame, FrameSource, luma_view
from doorstep.capture.lores import make_lores
from doorstep.capture.masks import Polygon, PrivacyMask
from doorstep.config.schema import CameraConfig
from doorstep.core.clock import Clock, SystemClock
from doorstep.core.errors import CameraUnavailable, CaptureError

log = logging.getLogger(__name__)

NETWORK_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://",
                   "srt://")
NETWORK_TIMEOUT_S = 10.0
# A stream this far behind its real-time schedule is re-anchored rather than raced to catch up.
MAX_LAG_S = 1.0
# A file with this many undecodable packets in a row is treated as broken, not merely damaged.
MAX_BAD_PACKETS = 25


def source_kind(url_or_path: str) -> str:
    """'network', 'device' or 'file'."""
    lowered = url_or_path.lower()
    if lowered.startswith(NETWORK_SCHEMES):
        return "network"
    if url_or_path.startswith("/dev/video"):
        return "device"
    return "file"


# A USB 2 camera's raw YUYV at 1280x720 and 30 fps needs 55 MB/s, more than the bus carries:
# from this size up, "auto" asks for MJPEG, which such cameras offer at full rate.
MJPEG_FROM = 1280 * 720


def default_options(url_or_path: str, *, size: tuple[int, int] | None = None,
                    fps: float | None = None,
                    v4l2_format: str = "auto") -> tuple[str | None, dict[str, str]]:
    """The (format, options) FileSource uses unless told otherwise.

    RTSP goes over TCP (no smeared frames from lost UDP packets) with a 5 s socket timeout; HTTP
    gets a read/write timeout; a /dev/videoN device opens with format "v4l2" and, when given, the
    wanted size and frame rate, and the pixel format ``v4l2_format`` names ("auto": MJPEG from
    1280x720 up, where raw YUYV cannot keep 30 fps over USB 2).
    """
    kind = source_kind(url_or_path)
    lowered = url_or_path.lower()
    if kind == "device":
        opts: dict[str, str] = {}
        if size is not None:
            opts["video_size"] = f"{size[0]}x{size[1]}"
        if fps is not None:
            opts["framerate"] = f"{fps:g}"
        if v4l2_format != "auto":
            opts["input_format"] = v4l2_format
        elif size is not None and size[0] * size[1] >= MJPEG_FROM:
            opts["input_format"] = "mjpeg"
        return "v4l2", opts
    if lowered.startswith(("rtsp://", "rtsps://")):
        return None, {"rtsp_transport": "tcp", "timeout": "5000000", "fflags": "nobuffer"}
    if lowered.startswith(("http://", "https://")):
        return None, {"rw_timeout": "5000000", "reconnect": "1"}
    if kind == "network":
        return None, {"rw_timeout": "5000000"}
    return None, {}


def _yuv420p(frame: av.VideoFrame) -> av.VideoFrame:
    """The decoded frame as yuv420p at an even size, converting only when needed."""
    width, height = frame.width & ~1, frame.height & ~1
    if frame.format.name != "yuv420p" or (width, height) != (frame.width, frame.height):
        frame = frame.reformat(width=width, height=height, format="yuv420p")
    return frame


def _to_i420(frame: av.VideoFrame) -> np.ndarray:
    """The decoded frame as an (h*3/2, w) I420 array (even size), converting when needed."""
    return np.ascontiguousarray(_yuv420p(frame).to_ndarray())


class FileSource:
    """A FrameSource over anything PyAV can open: a file, an RTSP/HTTP URL or a V4L2 device.

    ``realtime`` paces a file to its timestamps using ``clock`` (live sources pace themselves).
    ``loop`` starts a file again at its end, with pts carrying on upwards. ``privacy`` polygons
    are blacked out before the lores image is made. Opening problems raise CaptureError; a live
    stream that drops part-way raises CameraUnavailable (retryable).
    """

    def __init__(self, url_or_path: str, *, lores_size: tuple[int, int] = (320, 240),
                 realtime: bool, loop: bool = False, clock: Clock | None = None,
                 privacy: Sequence[Polygon] = (), options: Mapping[str, str] | None = None,
                 format: str | None = None, backoff_initial: float = 0.5,
                 backoff_max: float = 30.0, max_retries: int | None = None,
                 optional: Sequence[str] = ()) -> None:
        self.url = url_or_path
        self.kind = source_kind(url_or_path)
        self.lores_size = lores_size
        self.realtime = realtime
        self.loop = loop and self.kind == "file"
        self.clock: Clock = clock or SystemClock()
        self.privacy = PrivacyMask(privacy)
        default_format, default_opts = default_options(url_or_path)
        self.format = format if format is not None else default_format
        self.options: dict[str, str] = {**default_opts, **(options or {})}
        # options worth asking for, but dropped if the source will not open with them (a
        # camera with no MJPEG mode refuses input_format=mjpeg)
        self.optional = tuple(optional)
        self._container: Any = None
        self._closed = False
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.max_retries = max_retries
        self._health_state = CameraState.STARTING
        self._retries = self._restarts = self._frames = 0
        self._last_error: str | None = None
        self._open()
        self._health_state = CameraState.RUNNING  # fail fast on a missing or unreadable source

    # -- FrameSource -------------------------------------------------------------------------
    @property
    def fps(self) -> Fraction:
        return self._fps

    @property
    def size(self) -> tuple[int, int]:
        return self._size

    def frames(self) -> Iterator[Frame]:
        index = 0
        offset = 0.0          # added to every pts; grows on each loop
        last_pts = -math.inf  # the last pts handed out, after offset
        start_wall = self.clock.wall()
        anchor: tuple[float, float] | None = None  # (monotonic, pts) the pacing counts from
        step = 1.0 / float(self._fps)
        while not self._closed:
            first_pts: float | None = None
            dropped: CameraUnavailable | None = None
            try:
                for decoded in self._decode():
                    raw = decoded.time if decoded.time is not None else index * step
                    if first_pts is None:
                        first_pts = raw
                    pts = offset + (raw - first_pts)
                    if pts <= last_pts:  # broken or missing timestamps: keep time moving forward
                        pts = last_pts + step
                    last_pts = pts
                    if self.realtime and self.kind == "file":
                        anchor = self._pace(anchor, pts)
                    if self.realtime or self.kind != "file":
                        wall = self.clock.wall()
                    else:
                        wall = start_wall + pts
                    if self.privacy:
                        i420 = _to_i420(decoded)
                        self.privacy.apply(i420, self._size[0], self._size[1])
                        lores = make_lores(i420[: self._size[1]], self.lores_size)
                        frame = Frame(index, pts, wall, i420, lores)
                    else:
                        # nothing to black out: the decoded picture itself goes on, uncopied
                        picture = _yuv420p(decoded)
                        lores = make_lores(luma_view(picture), self.lores_size)
                        frame = Frame(index, pts, wall, None, lores, av_frame=picture)
                    self._frames += 1
                    yield frame
                    index += 1
            except CameraUnavailable as exc:
                dropped = exc
            if self.kind != "file" and not self._closed:
                # a live stream does not end: it dropped. Reconnect, and carry time on.
                self._reconnect(dropped or CameraUnavailable(
                    f"video source {self.url!r}: stream ended after {index} frames"))
                offset = last_pts + step
                anchor = None
                continue
            if not self.loop or self._closed or first_pts is None:
                break
            log.debug("source %s: looping at pts %.3f", self.url, last_pts)
            offset = last_pts + step
            self._reopen()
        self.close()

    def close(self) -> None:
        self._closed = True
        if self._container is not None:
            container, self._container = self._container, None
            container.close()

    def __enter__(self) -> FileSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------------
    def _open(self) -> None:
        if self.kind == "file" and not os.path.exists(self.url):
            raise CaptureError(f"video source {self.url!r}: no such file")
        timeout = NETWORK_TIMEOUT_S if self.kind == "network" else None
        try:
            container = av.open(self.url, mode="r", format=self.format,
                                options=dict(self.options), timeout=timeout)
        except (av.FFmpegError, OSError) as e:
            dropped = {k: self.options.pop(k) for k in self.optional if k in self.options}
            if not dropped:
                raise CaptureError(f"video source {self.url!r}: cannot open: {e}") from e
            log.warning("video source %s: will not open with %s (%s); trying its default",
                        self.url, dropped, e)
            self._open()
            return
        if not container.streams.video:
            container.close()
            raise CaptureError(f"video source {self.url!r}: has no video stream")
        stream = container.streams.video[0]
        # Slice threads only, never frame threads: a frame-threaded decoder holds each picture
        # back one frame per thread and keeps a picture buffer per thread (about 14 MB at
        # 1080p on two cores). A doorbell's source is live, so decoding faster than real
        # time buys nothing (docs/design.md, decision 18).
        stream.thread_type = "SLICE"
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        self._fps = Fraction(rate).limit_denominator(1001) if rate else Fraction(30)
        width, height = stream.codec_context.width, stream.codec_context.height
        if not width or not height:
            container.close()
            raise CaptureError(f"video source {self.url!r}: unknown frame size")
        self._size = (width & ~1, height & ~1)
        self._container = container
        log.info("video source %s: %s %dx%d at %.3g fps (%s)", self.url, self.kind,
                 self._size[0], self._size[1], float(self._fps), stream.codec_context.name)

    def _reconnect(self, error: CameraUnavailable) -> None:
        """Reopen a live source after it dropped, backing off exponentially on ``clock``.
        Gives up (raising) after ``max_retries`` failed attempts in a row; None: never."""
        self._last_error = str(error)
        if self.max_retries == 0:
            self._health_state = CameraState.FAILED
            raise error
        self._health_state = CameraState.RETRYING
        attempt = 0
        while not self._closed:
            delay = min(self.backoff_max, self.backoff_initial * (2 ** attempt))
            log.warning("video source %s: %s; reconnecting in %.1f s", self.url, error, delay)
            self.clock.sleep(delay)
            try:
                self._reopen()
            except CaptureError as exc:
                attempt += 1
                self._retries += 1
                error = CameraUnavailable(str(exc))
                self._last_error = str(exc)
                if self.max_retries is not None and attempt >= self.max_retries:
                    self._health_state = CameraState.FAILED
                    raise error from exc
                continue
            self._restarts += 1
            self._health_state = CameraState.RUNNING
            log.info("video source %s: reconnected", self.url)
            return

    @property
    def health(self) -> CameraHealth:
        """How the source is doing, for the status topic."""
        return CameraHealth(state=self._health_state, retries=self._retries,
                            restarts=self._restarts, frames=self._frames,
                            last_error=self._last_error)

    def _reopen(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
        self._open()

    def _decode(self) -> Iterator[av.VideoFrame]:
        """Decoded frames of the open container, mapping FFmpeg errors to ours."""
        container = self._container
        stream = container.streams.video[0]
        bad = 0
        try:
            for packet in container.demux(stream):
                try:
                    decoded = packet.decode()
                except av.InvalidDataError as e:
                    if self.kind != "file":
                        raise
                    bad += 1
                    log.warning("video source %s: skipping undecodable packet: %s", self.url, e)
                    if bad >= MAX_BAD_PACKETS:
                        raise CaptureError(f"video source {self.url!r}: {bad} undecodable "
                                           f"packets in a row; the file is corrupt") from e
                    continue
                bad = 0
                yield from decoded
        except av.FFmpegError as e:
            if self._closed:
                return
            if self.kind == "file":
                raise CaptureError(f"video source {self.url!r}: read failed: {e}") from e
            raise CameraUnavailable(f"video source {self.url!r}: stream dropped: {e}") from e
        except OSError as e:  # PyAV's read timeout surfaces as an OSError
            if self._closed:
                return
            raise CameraUnavailable(f"video source {self.url!r}: stream dropped: {e}") from e

    def _pace(self, anchor: tuple[float, float] | None, pts: float) -> tuple[float, float]:
        """Sleep until the frame at ``pts`` is due; returns the (possibly new) pacing anchor."""
        now = self.clock.monotonic()
        if anchor is None:
            return (now, pts)
        due = anchor[0] + (pts - anchor[1])
        if due - now > 0:
            self.clock.sleep(due - now)
            return anchor
        if now - due > MAX_LAG_S:
            log.debug("video source %s: %.2f s behind real time; re-anchoring", self.url,
                      now - due)
            return (now, pts)
        return anchor


def open_source(camera: CameraConfig, *, privacy: Sequence[Polygon] = (),
                clock: Clock | None = None, max_retries: int | None = None) -> FrameSource:
    """The FrameSource the [camera] config section names: "picamera2", a file, a URL or a
    /dev/videoN device (opened at the configured size and frame rate). ``max_retries``: how
    many times a camera or live stream that fails is reopened before the error escapes (None:
    for ever, as the agent wants; 0: at once, as the doctor wants)."""
    lores = (camera.lores_width, camera.lores_height)
    if camera.source == "picamera2":
        from doorstep.capture.picam import Picamera2Source, PicameraControls
        return Picamera2Source((camera.width, camera.height), camera.fps, lores_size=lores,
                               privacy=privacy, clock=clock, max_retries=max_retries,
                               controls=PicameraControls.from_config(camera))
    fmt, opts = default_options(camera.source, size=(camera.width, camera.height),
                                fps=camera.fps, v4l2_format=camera.v4l2_format)
    return FileSource(camera.source, lores_size=lores, realtime=camera.realtime,
                      loop=camera.loop, clock=clock, privacy=privacy, options=opts, format=fmt,
                      max_retries=max_retries,
                      optional=("input_format",) if camera.v4l2_format == "auto" else ())
