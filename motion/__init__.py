"""motion/: the motion detector that runs on the small grey (lores) image, its baselines, and the
scoring of detectors against labelled footage."""

from motion.detector import MotionDetector, MotionResult
from motion.lores import make_lores

__all__ = ["MotionDetector", "MotionResult", "make_lores"]
