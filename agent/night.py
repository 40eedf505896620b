"""Night mode: the IR-cut filter out and the IR LEDs on when the porch is dark, back when it is
light, switched through GPIO by the light level with hysteresis and a hold time, so a passing
headlight or the IR LEDs' own glow does not make it flap.

``NightLogic`` is the rule alone (level and time in, day or night out, no I/O);
``NightSwitch`` drives the pins through gpiozero with an injected factory and is fed each
processed frame by the agent (``agent.observers``), on the frame thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from doorstep.agent.run import Observed
from doorstep.config.schema import NightConfig
from doorstep.core.errors import ConfigError

log = logging.getLogger(__name__)


class NightLogic:
    """Day or night from a light level. Night begins once the level has stayed below
    ``dark_below`` for ``hold`` seconds; day returns once it has stayed above ``light_above``
    (higher) for ``hold`` seconds. A level between the two, or an unknown one, restarts the
    wait. The state starts as day."""

    def __init__(self, *, dark_below: float, light_above: float, hold: float) -> None:
        if light_above <= dark_below:
            raise ValueError("light_above must be above dark_below")
        self.dark_below = dark_below
        self.light_above = light_above
        self.hold = hold
        self.night = False
        self._since: float | None = None   # when the level first crossed towards a change

    def update(self, level: float | None, now: float) -> bool | None:
        """Feed one reading; returns the new state when it changes, else None."""
        crossing = level is not None and (level > self.light_above if self.night
                                          else level < self.dark_below)
        if not crossing:
            self._since = None
            return None
        if self._since is None:
            self._since = now
        if now - self._since < self.hold:
            return None
        self.night = not self.night
        self._since = None
        return self.night


class LightSource(Protocol):
    """What night mode asks of the frame source: its light estimate, if it has one."""

    lux: float | None


class NightSwitch:
    """The IR-cut filter and IR LEDs on gpiozero output pins, switched by ``NightLogic``.
    ``on_change`` also hears each switch (the Pi camera turns its picture grey at night)."""

    def __init__(self, cfg: NightConfig, *, pin_factory: Any, monotonic: Callable[[], float],
                 source: Any = None, on_change: Callable[[bool], None] | None = None) -> None:
        from gpiozero import DigitalOutputDevice
        from gpiozero.exc import GPIOPinInUse

        self.cfg = cfg
        self.logic = NightLogic(dark_below=cfg.dark_below, light_above=cfg.light_above,
                                hold=cfg.hold_seconds)
        self._monotonic = monotonic
        self._source = source
        self._on_change = on_change
        self._ircut: Any = None
        self._leds: Any = None
        key = ""
        try:
            if cfg.ircut_pin:
                key = f"night.ircut_pin: {cfg.ircut_pin!r}"
                # value True = the filter in (day), at whichever level the hardware wants
                self._ircut = DigitalOutputDevice(cfg.ircut_pin, active_high=cfg.ircut_day_high,
                                                  initial_value=True, pin_factory=pin_factory)
            if cfg.ir_led_pin:
                key = f"night.ir_led_pin: {cfg.ir_led_pin!r}"
                self._leds = DigitalOutputDevice(cfg.ir_led_pin,
                                                 active_high=cfg.ir_led_active_high,
                                                 initial_value=False, pin_factory=pin_factory)
        except (ValueError, GPIOPinInUse) as exc:
            self.close()
            raise ConfigError([f"{key} cannot be used: {exc}"]) from exc
        except BaseException:
            self.close()
            raise

    @property
    def night(self) -> bool:
        return self.logic.night

    def level(self, seen: Observed) -> float | None:
        """The light level by the configured measure: the camera's lux, or mean lores grey."""
        if self.cfg.level == "lux":
            lux = getattr(self._source, "lux", None)
            return float(lux) if lux is not None else None
        return float(seen.frame.lores.mean())

    def observe(self, seen: Observed) -> None:
        """An agent observer: one processed frame."""
        changed = self.logic.update(self.level(seen), self._monotonic())
        if changed is not None:
            self.apply(changed)

    def apply(self, night: bool) -> None:
        if self._ircut is not None:
            self._ircut.value = not night
        if self._leds is not None:
            self._leds.value = night
        edge = (f"below {self.cfg.dark_below:g}" if night
                else f"above {self.cfg.light_above:g}")
        log.info("night mode %s (%s %s)", "on" if night else "off", self.cfg.level, edge)
        if self._on_change is not None:
            self._on_change(night)

    def close(self) -> None:
        for device in (self._ircut, self._leds):
            if device is not None:
                device.close()
        self._ircut = self._leds = None
