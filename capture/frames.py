"""The data that flows out of capture/: frames, encoded packets, and the small interfaces
(FrameSource, Encoder) that every camera and encoder adapter honours."""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True, slots=True, init=False, eq=False)
class Frame:
    """One captured frame.

    ``i420`` is the main image as planar YUV 4:2:0 (I420), shape ``(height * 3 // 2, width)``,
    uint8: the Y plane is ``i420[:height]``. ``lores`` is a small grey image for motion
    detection, shape ``(lores_h, lores_w)``, uint8. ``pts`` is seconds since the source started
    (media time), ``wall`` is the wall-clock time the frame was taken (time.time() scale).

    ``av_frame`` (optional) is the decoded ``av.VideoFrame`` (yuv420p, even size) the picture
    came from, when it holds exactly the pixels of ``i420``: a source that has nothing to mask
    passes it *instead of* an ``i420`` array, so the picture is never copied on the way to the
    encoder; ``i420`` is then made from it on first use (a copy, kept). A masked frame never
    carries one, which is why giving both is refused.
    """

    index: int
    pts: float
    wall: float
    lores: np.ndarray
    av_frame: Any
    _i420: np.ndarray | None

    def __init__(self, index: int, pts: float, wall: float, i420: np.ndarray | None,
                 lores: np.ndarray, av_frame: Any = None) -> None:
        if (i420 is None) == (av_frame is None):
            raise ValueError("Frame: give exactly one of i420 and av_frame")
        if av_frame is not None and (av_frame.format.name != "yuv420p"
                                     or av_frame.width % 2 or av_frame.height % 2):
            raise ValueError(f"Frame: av_frame must be yuv420p at an even size, not "
                             f"{av_frame.format.name} {av_frame.width}x{av_frame.height}")
        set_ = object.__setattr__
        set_(self, "index", index)
        set_(self, "pts", pts)
        set_(self, "wall", wall)
        set_(self, "lores", lores)
        set_(self, "av_frame", av_frame)
        set_(self, "_i420", i420)

    @property
    def i420(self) -> np.ndarray:
        """The picture as one I420 array (made from ``av_frame`` on first use)."""
        i420 = self._i420
        if i420 is None:
            i420 = np.ascontiguousarray(self.av_frame.to_ndarray())
            object.__setattr__(self, "_i420", i420)  # two threads racing make equal copies
        return i420

    @property
    def width(self) -> int:
        if self._i420 is None:
            return int(self.av_frame.width)
        return int(self._i420.shape[1])

    @property
    def height(self) -> int:
        if self._i420 is None:
            return int(self.av_frame.height)
        return int(self._i420.shape[0] * 2 // 3)

    @property
    def y(self) -> np.ndarray:
        """The full-resolution luma plane (a view, not a copy; read-only when it is a view of
        ``av_frame``, whose buffer the decoder may still be using)."""
        if self._i420 is None:
            return luma_view(self.av_frame)
        return self._i420[: self.height]

    @property
    def planes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Views of the Y, U and V planes (never copies: a snapshot of a decoded picture reads
        the decoder's buffer, read-only)."""
        if self._i420 is None:
            return (luma_view(self.av_frame), plane_view(self.av_frame, 1),
                    plane_view(self.av_frame, 2))
        h, w = self.height, self.width
        chroma = self._i420[h:].reshape(h, w // 2)  # h/2 rows of U, then h/2 rows of V
        return self._i420[:h], chroma[: h // 2], chroma[h // 2:]


def plane_view(av_frame: Any, index: int) -> np.ndarray:
    """A read-only view of plane ``index`` of a decoded yuv420p frame (0: Y, full size; 1, 2:
    U, V, half size each way), without copying."""
    plane = av_frame.planes[index]
    width, height = (av_frame.width, av_frame.height) if index == 0 else (
        av_frame.width // 2, av_frame.height // 2)
    rows = np.frombuffer(plane, np.uint8, count=plane.line_size * height)
    view = rows.reshape(height, plane.line_size)[:, :width]
    view.flags.writeable = False
    return view


def luma_view(av_frame: Any) -> np.ndarray:
    """A read-only (height, width) view of a decoded frame's Y plane, without copying."""
    return plane_view(av_frame, 0)


@dataclass(frozen=True, slots=True)
class EncodedPacket:
    """One H.264 access unit in Annex B byte-stream form.

    ``pts``/``dts`` are in ``time_base`` units. ``keyframe`` marks an IDR frame, the only place a
    clip may start. ``wall`` is the wall-clock time of the frame it encodes.
    """

    data: bytes
    pts: int
    dts: int
    keyframe: bool
    time_base: Fraction
    wall: float

    @property
    def seconds(self) -> float:
        return float(self.pts * self.time_base)


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """What a muxer needs to know about an encoder's output."""

    width: int
    height: int
    fps: Fraction
    time_base: Fraction
    codec: str = "h264"


class CameraState(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    RETRYING = "retrying"
    FAILED = "failed"
    STOPPED = "stopped"


@dataclass(frozen=True)
class CameraHealth:
    """What the status topic reports about the camera."""

    state: CameraState
    retries: int            # consecutive failed attempts since the last good frame
    restarts: int           # times the camera was reopened after a failure
    frames: int             # frames delivered since this source was made
    last_error: str | None

    def as_dict(self) -> dict[str, object]:
        return {"state": self.state.value, "retries": self.retries, "restarts": self.restarts,
                "frames": self.frames, "last_error": self.last_error}


class FrameSource(Protocol):
    """Anything that yields frames: a Pi camera, a file, a stream, a V4L2 device."""

    @property
    def fps(self) -> Fraction: ...

    @property
    def size(self) -> tuple[int, int]: ...

    def frames(self) -> Iterator[Frame]: ...

    def close(self) -> None: ...


class Encoder(Protocol):
    """Turns frames into H.264 packets, with a keyframe at least every ``gop`` frames."""

    name: str

    @property
    def info(self) -> StreamInfo: ...

    def encode(self, frame: Frame) -> list[EncodedPacket]: ...

    def flush(self) -> list[EncodedPacket]: ...

    def close(self) -> None: ...
