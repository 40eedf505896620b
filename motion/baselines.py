"""Two reference detectors the evaluation scores ours against: picamera2's example frame-difference
rule (with its uint8 wrap-around fixed) and OpenCV's MOG2 background subtractor."""

from __future__ import annotations

import time

import cv2
import numpy as np

from doorstep.motion.detector import MotionResult

HOLD_SECONDS = 2.0  # picamera2's example stops recording 2 s after the last trigger


class FrameDiffBaseline:
    """picamera2 examples/capture_motion.py: motion while the mean squared difference of
    consecutive lores frames exceeds 7, held for 2 s. Computed in int32, not wrapping uint8."""

    name = "picamera2-mse"

    def __init__(self, threshold: float = 7.0, hold_seconds: float = HOLD_SECONDS) -> None:
        self.threshold = threshold
        self.hold_seconds = hold_seconds
        self._prev: np.ndarray | None = None
        self._last = -np.inf

    def update(self, lores: np.ndarray, t: float) -> MotionResult:
        start = time.perf_counter()
        cur = lores.astype(np.int32)
        mse = 0.0
        if self._prev is not None:
            mse = float(np.square(cur - self._prev).mean())
            if mse > self.threshold:
                self._last = t
        self._prev = cur
        on = t - self._last <= self.hold_seconds
        return MotionResult(on, mse, (), (time.perf_counter() - start) * 1000.0)


class Mog2Baseline:
    """OpenCV MOG2 (default history 500, varThreshold 16, no shadows), a 3x3 median to drop
    specks, motion while more than ``fraction`` of the pixels are foreground, held for 2 s."""

    name = "opencv-mog2"

    def __init__(self, fraction: float = 0.005, hold_seconds: float = HOLD_SECONDS) -> None:
        self.fraction = fraction
        self.hold_seconds = hold_seconds
        self._mog = cv2.createBackgroundSubtractorMOG2(detectShadows=False)
        self._last = -np.inf

    def update(self, lores: np.ndarray, t: float) -> MotionResult:
        start = time.perf_counter()
        fg = cv2.medianBlur(self._mog.apply(lores), 3)
        share = float(np.count_nonzero(fg)) / fg.size
        if share > self.fraction:
            self._last = t
        on = t - self._last <= self.hold_seconds
        return MotionResult(on, 100.0 * share, (), (time.perf_counter() - start) * 1000.0)
