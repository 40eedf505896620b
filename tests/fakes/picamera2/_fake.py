"""Test-only controls of the fake camera system (not part of picamera2's API)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class FakeCameraSystem:
    """What the fake camera does next.

    ``cameras``: how many cameras are attached (0 makes Picamera2() raise IndexError, as the real
    one does when global_camera_info() is empty). ``missing_opens``: that many further
    Picamera2() calls fail as if no camera were attached, then the camera is back.
    ``busy_opens``: that many further calls raise RuntimeError("Camera __init__ sequence did not
    complete."), as when another process holds the camera. ``hang_after``: each camera delivers
    this many frames, then capture_request(wait=seconds) raises TimeoutError, as a camera whose
    ribbon cable came loose does.

    ``model``: the sensor libcamera reports ("imx708" is Camera Module 3, which has autofocus;
    "imx708_wide_noir" its wide NoIR variant; "imx219" the v2, with a fixed-focus lens).
    ``pisp``: a Pi 5, whose ISP offers the HdrMode control. ``lux``: the light level the
    metadata reports. ``sensor_hdr``: what picamera2.devices.imx708 last set on the sensor.
    """

    cameras: int = 1
    missing_opens: int = 0
    busy_opens: int = 0
    hang_after: int | None = None
    opened: int = 0
    instances: list[Any] = field(default_factory=list)
    model: str = "imx708"
    pisp: bool = False
    lux: float = 400.0
    sensor_hdr: bool = False

    def reset(self) -> None:
        self.cameras = 1
        self.missing_opens = 0
        self.busy_opens = 0
        self.hang_after = None
        self.opened = 0
        self.instances.clear()
        self.model = "imx708"
        self.pisp = False
        self.lux = 400.0
        self.sensor_hdr = False


SYSTEM = FakeCameraSystem()
