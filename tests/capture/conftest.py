"""Shared fixtures for capture/ tests: the fake picamera2 on sys.path, small synthetic videos."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

FAKES = Path(__file__).resolve().parents[1] / "fakes"
if str(FAKES) not in sys.path:
    sys.path.insert(0, str(FAKES))


def synthetic_i420(index: int, width: int = 320, height: int = 240) -> np.ndarray:
    """A mid-grey frame with a white bar sliding right 4 px a frame."""
    frame = np.full((height * 3 // 2, width), 128, dtype=np.uint8)
    frame[:height] = 100
    x = (index * 4) % (width - 16)
    frame[:height, x: x + 16] = 235
    return frame


def write_video(path: Path, *, frames: int = 30, fps: int = 15, width: int = 320,
                height: int = 240, codec: str = "ffv1",
                options: dict[str, str] | None = None) -> Path:
    """Encode ``frames`` synthetic frames to ``path`` (lossless FFV1 by default; ``options``
    go to the encoder)."""
    with av.open(str(path), "w") as out:
        stream: Any = out.add_stream(codec, rate=Fraction(fps), options=options or {})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            vf = av.VideoFrame.from_ndarray(synthetic_i420(i, width, height), format="yuv420p")
            vf.pts = i
            vf.time_base = Fraction(1, fps)
            out.mux(stream.encode(vf))
        out.mux(stream.encode(None))
    return path


@pytest.fixture
def small_video(tmp_path: Path) -> Path:
    """2 s of 320x240 at 15 fps, lossless, in Matroska."""
    return write_video(tmp_path / "small.mkv", frames=30)


@pytest.fixture
def fake_camera() -> Iterator[object]:
    """The fake picamera2's control panel, reset before and after each test."""
    import picamera2

    picamera2.SYSTEM.reset()
    yield picamera2.SYSTEM
    picamera2.SYSTEM.reset()


@pytest.fixture
def make_video() -> object:
    """write_video, for tests that need a particular clip."""
    return write_video


@pytest.fixture
def make_i420() -> object:
    """synthetic_i420, for tests that build frames by hand."""
    return synthetic_i420
