"""Fake picamera2.devices: only the IMX708 (Camera Module 3) helper Doorstep uses."""
