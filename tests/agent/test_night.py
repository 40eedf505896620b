"""Night mode: the rule (hysteresis and a hold time, stepped by hand), and the IR-cut filter
and IR LEDs on MockFactory pins, switched by the camera's lux or the picture's grey level."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from doorstep.agent.night import NightLogic, NightSwitch
from doorstep.agent.run import Observed
from doorstep.agent.wiring import build
from doorstep.capture.frames import Frame
from doorstep.config import parse_config
from doorstep.config.schema import NightConfig
from doorstep.core.clock import FakeClock
from doorstep.core.errors import ConfigError
from tests.agent.test_clips import config, synthetic_video
from tests.conftest import Keys


def test_night_needs_the_dark_to_last_and_day_needs_more_light() -> None:
    logic = NightLogic(dark_below=5, light_above=20, hold=10)
    assert logic.update(3, 0) is None and logic.update(3, 9.9) is None   # not long enough
    assert logic.update(3, 10) is True and logic.night
    # the IR LEDs' own glow lands between the thresholds: night stays
    assert logic.update(12, 11) is None and logic.update(12, 100) is None and logic.night
    assert logic.update(25, 101) is None
    assert logic.update(12, 105) is None      # dipped back: the wait restarts
    assert logic.update(25, 106) is None and logic.update(25, 115.9) is None
    assert logic.update(25, 116) is False and not logic.night
    assert logic.update(None, 200) is None    # an unknown level changes nothing


def test_the_thresholds_must_leave_a_gap() -> None:
    with pytest.raises(ValueError):
        NightLogic(dark_below=10, light_above=10, hold=0)


@dataclass
class Camera:
    lux: float | None = 400.0
    grey: list[bool] = field(default_factory=list)

    def set_night(self, night: bool) -> None:
        self.grey.append(night)


def seen(brightness: int = 128) -> Observed:
    lores = np.full((12, 16), brightness, dtype=np.uint8)
    return Observed(Frame(0, 0.0, 0.0, np.zeros((18, 16), np.uint8), lores), None, None)


def test_the_filter_and_leds_follow_the_cameras_lux() -> None:
    factory, clock, camera = MockFactory(), FakeClock(), Camera()
    cfg = NightConfig(enabled=True, ircut_pin="GPIO23", ir_led_pin="GPIO24",
                      ir_led_active_high=False, dark_below=5, light_above=20, hold_seconds=2)
    switch = NightSwitch(cfg, pin_factory=factory, monotonic=clock.monotonic, source=camera,
                         on_change=camera.set_night)
    ircut, leds = factory.pin(23), factory.pin(24)
    assert ircut.state is True and leds.state is True    # day: filter in, active-low LEDs off
    camera.lux = 1.0
    for _ in range(3):
        switch.observe(seen())
        clock.advance(1)
    assert switch.night and ircut.state is False and leds.state is False   # LEDs on (low)
    assert camera.grey == [True]
    camera.lux = 50.0
    for _ in range(3):
        switch.observe(seen())
        clock.advance(1)
    assert not switch.night and ircut.state is True and leds.state is True
    assert camera.grey == [True, False]
    switch.close()


def test_a_usb_camera_is_judged_by_its_grey_level() -> None:
    factory, clock = MockFactory(), FakeClock()
    cfg = NightConfig(enabled=True, ir_led_pin="GPIO24", level="luma", dark_below=30,
                      light_above=60, hold_seconds=0)
    switch = NightSwitch(cfg, pin_factory=factory, monotonic=clock.monotonic)
    switch.observe(seen(200))
    assert not switch.night
    switch.observe(seen(10))
    assert switch.night and factory.pin(24).state is True
    switch.close()


def test_a_pin_in_use_names_its_key() -> None:
    factory = MockFactory()
    cfg = NightConfig(enabled=True, ircut_pin="GPIO23", ir_led_pin="GPIO23")
    with pytest.raises(ConfigError, match=r"night\.ir_led_pin: 'GPIO23' cannot be used"):
        NightSwitch(cfg, pin_factory=factory, monotonic=FakeClock().monotonic)


def test_doorstep_run_wires_night_mode_to_the_frames(tmp_path: Path, keys: Keys) -> None:
    # the scene (grey 60-120) is "dark" below 150: night mode comes on as the frames flow
    video = tmp_path / "porch.mp4"
    synthetic_video(video, 1, None)
    text = config(tmp_path, keys, video, motion=False) + """
[night]
enabled = true
ir_led_pin = "GPIO24"
level = "luma"
dark_below = 150
light_above = 200
hold_seconds = 0
"""
    factory = MockFactory()
    service = build(parse_config(text), pin_factory=factory, connect=False)
    assert service.night is not None and service.night.observe in service.agent.observers
    service.run()
    assert service.night.night and factory.pin(24).state is True
