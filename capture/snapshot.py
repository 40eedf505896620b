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
    """The frame shrunk to ``width`` pixels wide (aspect kept, never enlarged) as a JPEG.

    The Y, U and V planes are shrunk first (area averaging) and only the small picture is
    converted to BGR: a quarter of the work and none of a full-size BGR copy's memory.
    """
    h, w = i420.shape[0] * 2 // 3, i420.shape[1]
    if width >= w:
        return _encode(_bgr(i420), quality)
    height = max(1, round(h * width / w))
    tw, th = width + width % 2, max(2, height + height % 2)  # 4:2:0 needs an even size
    y = i420[:h]
    chroma = i420[h:].reshape(h, w // 2)  # h/2 rows of U, then h/2 rows of V
    small = np.empty((th * 3 // 2, tw), np.uint8)
    cv2.resize(y, (tw, th), dst=small[:th], interpolation=cv2.INTER_AREA)
    small_chroma = small[th:].reshape(th, tw // 2)
    cv2.resize(chroma[: h // 2], (tw // 2, th // 2), dst=small_chroma[: th // 2],
               interpolation=cv2.INTER_AREA)
    cv2.resize(chroma[h // 2:], (tw // 2, th // 2), dst=small_chroma[th // 2:],
               interpolation=cv2.INTER_AREA)
    bgr = _bgr(small)
    if (tw, th) != (width, height):  # an odd size: trim the spare column or row
        bgr = bgr[:height, :width]
    return _encode(bgr, quality)
