"""The data that flows out of capture/: frames, encoded packets, and the small interfaces
(FrameSource, Encoder) that every camera and encoder adapter honours."""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol

import numpy as np


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured frame.

    ``i420`` is the main image as planar YUV 4:2:0 (I420), shape ``(height * 3 // 2, width)``,
    uint8: the Y plane is ``i420[:height]``. ``lores`` is a small grey image for motion
    detection, shape ``(lores_h, lores_w)``, uint8. ``pts`` is seconds since the source started
    (media time), ``wall`` is the wall-clock time the frame was taken (time.time() scale).
    """

    index: int
    pts: float
    wall: float
    i420: np.ndarray
    lores: np.ndarray

    @property
    def width(self) -> int:
        return int(self.i420.shape[1])

    @property
    def height(self) -> int:
        return int(self.i420.shape[0] * 2 // 3)

    @property
    def y(self) -> np.ndarray:
        """The full-resolution luma plane (a view, not a copy)."""
        return self.i420[: self.height]


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
