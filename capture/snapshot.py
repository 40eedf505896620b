"""Still images from a frame: a full-resolution JPEG for ring events and a small thumbnail."""

from __future__ import annotations

import cv2
import numpy as np

from doorstep.errors import CaptureError


def _bgr(i420: np.ndarray) -> np.ndarray:
    """I420 (h*3/2, w) to BGR, BT.601 limited range as OpenCV converts it."""
    return cv2.cvtColor(i420, cv2.COLOR_YUV2BGR_I420)


def _encode(bgr: np.ndarray, quality: int) -> bytes:
    if not 1 <= quality <= 100:
        raise ValueError(f"jpeg quality must be 1..100, got {quality}")
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise CaptureError(f"snapshot: JPEG encoding of a {bgr.shape[1]}x{bgr.shape[0]} "
                           "image failed")
    return bytes(buf.tobytes())


def jpeg(i420: np.ndarray, quality: int = 90) -> bytes:
    """The frame as a full-resolution JPEG."""
    return _encode(_bgr(i420), quality)


def thumbnail(i420: np.ndarray, width: int = 320, quality: int = 80) -> bytes:
    """The frame shrunk to ``width`` pixels wide (aspect kept, never enlarged) as a JPEG."""
    bgr = _bgr(i420)
    h, w = bgr.shape[:2]
    if width < w:
        height = max(1, round(h * width / w))
        bgr = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA)
    return _encode(bgr, quality)
