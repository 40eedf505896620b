"""motion/: the motion detector that runs on the small grey (lores) image, its baselines, and the
scoring of detectors against labelled footage."""

from doorstep.motion.detector import MotionDetector, MotionResult

__all__ = ["MotionDetector", "MotionResult"]
