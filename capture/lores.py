"""The lores grey image: a luma (Y) plane shrunk to the motion detector's size. Every frame
source and the motion tools call this one function, so every path feeds the detector the same
image."""

from __future__ import annotations

import cv2
import numpy as np


def make_lores(y: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The (h, w) uint8 lores image for ``size`` = (w, h), from a uint8 luma plane.

    Shrinking uses area averaging (cv2.INTER_AREA), which also averages away sensor noise.
    A plane that already has the size is returned as a contiguous array, unscaled.
    """
    w, h = size
    if y.shape[0] == h and y.shape[1] == w:
        return np.ascontiguousarray(y)
    return cv2.resize(y, (w, h), interpolation=cv2.INTER_AREA)
