"""The lores grey image: a luma (Y) plane shrunk to the motion detector's size. Every frame
source and the motion tools call this one function, so every path feeds the detector the same
image."""

from __future__ import annotations

import cv2
import numpy as np


def make_lores(y: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The (h, w) uint8 lores image for ``size`` = (w, h), from a uint8 luma plane.

    Shrinking uses area averaging (cv2.INTER_AREA), which also averages away sensor noise.
    A plane that already has the size is returned as a contiguous array, unscaled (a copy when
    the plane is a read-only view of a decoder's buffer, so the lores image owns its pixels).
    """
    w, h = size
    if y.shape[0] == h and y.shape[1] == w:
        return np.ascontiguousarray(y) if y.flags.writeable else y.copy()
    k = min(y.shape[1] // w, y.shape[0] // h)
    if k >= 2 and (y.shape[1] % w or y.shape[0] % h) and not (y.shape[1] % k or y.shape[0] % k):
        # OpenCV averages whole k x k blocks fast, but a fractional factor (1080 -> 240 is 4.5)
        # takes its slow general path over the full frame: average 1/k first, finish small
        y = cv2.resize(y, (y.shape[1] // k, y.shape[0] // k), interpolation=cv2.INTER_AREA)
    return cv2.resize(y, (w, h), interpolation=cv2.INTER_AREA)
