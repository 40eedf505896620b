"""Reading a video file as lores grey frames for the motion tools (detect, eval), with PyAV."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from doorstep.capture.lores import make_lores
from doorstep.core.errors import CaptureError


@dataclass(frozen=True)
class VideoFrame:
    """One decoded frame: its index, media time in seconds and lores grey image."""

    index: int
    t: float
    lores: np.ndarray


@dataclass(frozen=True)
class VideoInfo:
    """What the motion tools need to know about a video: source size and frame rate."""

    width: int
    height: int
    fps: float


def probe(path: str | Path) -> VideoInfo:
    """The size and frame rate of the first video stream in ``path``."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or 25
            return VideoInfo(int(stream.codec_context.width), int(stream.codec_context.height),
                             float(rate))
    except (av.FFmpegError, IndexError, OSError) as exc:
        raise CaptureError(f"{path}: cannot open as video: {exc}") from exc


def read_lores(path: str | Path, size: tuple[int, int]) -> Iterator[VideoFrame]:
    """Decode every frame of ``path`` and yield its lores grey image of ``size`` = (w, h).

    The time is the frame's presentation time when the file has one, else index / fps.
    """
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as exc:
        raise CaptureError(f"{path}: cannot open as video: {exc}") from exc
    with container:
        if not container.streams.video:
            raise CaptureError(f"{path}: has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = float(stream.average_rate or stream.guessed_rate or 25)
        try:
            for i, frame in enumerate(container.decode(stream)):
                t = float(frame.time) if frame.time is not None else i / rate
                y = frame.to_ndarray(format="gray")
                yield VideoFrame(i, t, make_lores(y, size))
        except av.FFmpegError as exc:
            raise CaptureError(f"{path}: decoding failed: {exc}") from exc
