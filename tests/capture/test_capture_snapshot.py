"""Snapshots: a full-size JPEG and a thumbnail that decode to the right sizes and content."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import pytest

from capture.snapshot import jpeg, thumbnail


def decode(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def test_jpeg_is_full_resolution_and_shows_the_frame(make_i420: Callable[..., np.ndarray],
                                                     ) -> None:
    data = jpeg(make_i420(10), quality=90)
    assert data[:2] == b"\xff\xd8"
    image = decode(data)
    assert image.shape == (240, 320, 3)
    assert abs(int(np.argmax(image[120, :, 1])) - 40) <= 2  # the white bar at x=40..55
    assert jpeg(make_i420(10), quality=30) != data


def test_thumbnail_keeps_the_aspect_and_never_enlarges(make_i420: Callable[..., np.ndarray],
                                                       ) -> None:
    assert decode(thumbnail(make_i420(0), width=160)).shape == (120, 160, 3)
    assert decode(thumbnail(make_i420(0), width=640)).shape == (240, 320, 3)


def test_quality_out_of_range_is_refused(make_i420: Callable[..., np.ndarray]) -> None:
    with pytest.raises(ValueError, match="quality"):
        jpeg(make_i420(0), quality=0)
