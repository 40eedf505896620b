"""The lores grey image: a luma (Y) plane shrunk to the motion detector's size. Every frame
source and the motion tools call this one function, so every path feeds the detector the same
image."""

from __future__ import annotations

import cv2
import numpy as np


def make_lores(y: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The (h, w) uint8 lores image for ``size`` = (w, h), from a uint8 luma plane.

    Every source pixel is averaged in, never skipped, so sensor noise averages away and nothing
    aliases. The plane is halved by 2x2 block averages while it is at least twice the target
    both ways (OpenCV's vectorised fast path: a quarter of the cost of one general area
    resize), then finished by a single resize: an area average for a whole factor, a bilinear
    one for a factor under 2 (which still reads every row and column).
    A plane that already has the size is returned as a contiguous array, unscaled (a copy when
    the plane is a read-only view of a decoder's buffer, so the lores image owns its pixels).
    """
    w, h = size
    if y.shape[0] == h and y.shape[1] == w:
        return np.ascontiguousarray(y) if y.flags.writeable else y.copy()
    while y.shape[1] >= 2 * w and y.shape[0] >= 2 * h:
        even = y[: y.shape[0] & ~1, : y.shape[1] & ~1]  # a view: the odd edge row/column goes
        y = cv2.resize(even, (even.shape[1] // 2, even.shape[0] // 2),
                       interpolation=cv2.INTER_AREA)
    whole = y.shape[1] % w == 0 and y.shape[0] % h == 0
    shrink = y.shape[1] >= w and y.shape[0] >= h
    mode = cv2.INTER_AREA if whole or not shrink else cv2.INTER_LINEAR
    return cv2.resize(y, (w, h), interpolation=mode)
