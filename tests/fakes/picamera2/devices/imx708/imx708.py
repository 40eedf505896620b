"""Fake picamera2.devices.imx708.IMX708: the sensor's own HDR switch (a V4L2 control on its
subdevice in the real one), recorded in SYSTEM.sensor_hdr."""

from __future__ import annotations

from typing import Any

from ..._fake import SYSTEM
from ...picamera2 import Picamera2


class IMX708:
    def __init__(self, camera_num: int | None = None) -> None:
        info = Picamera2.global_camera_info()
        if camera_num is None:
            found = next((c for c in info if c["Model"].startswith("imx708")), None)
        else:
            found = next((c for c in info if c["Num"] == camera_num), None)
        if found is None or not found["Model"].startswith("imx708"):
            raise RuntimeError("IMX708: Requested IMX708 camera device not be found")
        self.open = True

    def close(self) -> None:
        self.open = False

    def __enter__(self) -> IMX708:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def set_sensor_hdr_mode(self, enable: bool) -> None:
        SYSTEM.sensor_hdr = bool(enable)
