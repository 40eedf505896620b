"""Fake picamera2.outputs: the Output base class encoders write to."""

from .output import Output

__all__ = ["Output"]
