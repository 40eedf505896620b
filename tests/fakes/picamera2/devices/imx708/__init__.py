"""Fake picamera2.devices.imx708."""

from .imx708 import IMX708

__all__ = ["IMX708"]
