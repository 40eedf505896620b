"""The doctor's GPIO checks: every pin the config names can be opened (not named twice, not held
by another process, a pin library present), and the button is wired: the doctor asks for a
press and waits for it, up to a timeout. gpiozero makes the pins through the factory passed in
(None: this machine's default; tests pass MockFactory)."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from doorstep.config.schema import Config
from doorstep.doctor.report import Result, failed, passed, skipped

FIX_NO_LIBRARY = ("gpiozero found no pin library: on a Pi, sudo apt install python3-lgpio "
                  "(the venv sees it through --system-site-packages); off a Pi there is no "
                  "GPIO to test")
FIX_BUSY = ("another process holds the pin: stop the agent while the doctor runs "
            "(systemctl stop doorstep-agent), or look for it with `gpioinfo`")


def configured_pins(cfg: Config) -> list[tuple[str, str, bool]]:
    """(dotted key, pin name, is an input) for every pin an enabled part uses."""
    pins = []
    if cfg.button.enabled:
        pins.append(("button.pin", cfg.button.pin, True))
    if cfg.chime.enabled:
        pins.append(("chime.pin", cfg.chime.pin, False))
    if cfg.led.enabled:
        pins.append(("led.pin", cfg.led.pin, False))
    if cfg.night.enabled:
        pins += [(key, pin, False) for key, pin in (("night.ircut_pin", cfg.night.ircut_pin),
                                                    ("night.ir_led_pin", cfg.night.ir_led_pin))
                 if pin]
    return pins


@contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():  # gpiozero warns as it falls back from factory to factory
        warnings.simplefilter("ignore")
        yield


def _open(pin: str, is_input: bool, pull_up: bool, factory: Any) -> Any:
    from gpiozero import DigitalInputDevice, DigitalOutputDevice
    with _quiet():
        if is_input:
            return DigitalInputDevice(pin, pull_up=pull_up, bounce_time=None,
                                      pin_factory=factory)
        return DigitalOutputDevice(pin, initial_value=False, pin_factory=factory)


def _why(exc: BaseException) -> tuple[str, str]:
    """(what happened, the fix) for anything gpiozero or the pin library raised."""
    from gpiozero.exc import BadPinFactory, GPIOPinInUse, PinInvalidPin
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, BadPinFactory):
        return text, FIX_NO_LIBRARY
    if isinstance(exc, PinInvalidPin | ValueError):
        return text, "use a BCM name such as GPIO17 (docs/installer.md, section 2)"
    if isinstance(exc, GPIOPinInUse) or "busy" in str(exc).lower():
        return text, FIX_BUSY
    return text, "check the pin name and that nothing else uses the pin"


def check_pins(cfg: Config, factory: Any = None) -> Result:
    pins = configured_pins(cfg)
    if not pins:
        return skipped("gpio", "no button, chime, LED or night-mode pins are enabled")
    seen: dict[str, str] = {}
    twice = []
    for key, pin, _ in pins:
        if pin.upper() in seen:
            twice.append(f"{key} and {seen[pin.upper()]} both name {pin}")
        seen.setdefault(pin.upper(), key)
    if twice:
        return failed("gpio", "; ".join(twice), "give each part a pin of its own")
    opened, problems = [], []
    fix = ""
    try:
        for key, pin, is_input in pins:
            try:
                opened.append(_open(pin, is_input, cfg.button.pull_up, factory))
            except Exception as exc:  # any pin library's error is this check's finding
                what, fix = _why(exc)
                problems.append(f"{key} = {pin}: {what}")
    finally:
        for device in opened:
            device.close()
    names = ", ".join(f"{key} {pin}" for key, pin, _ in pins)
    if problems:
        return failed("gpio", "\n".join(problems), fix, pins=dict((k, p) for k, p, _ in pins))
    return passed("gpio", f"free: {names}", pins={k: p for k, p, _ in pins})


def check_button(cfg: Config, factory: Any = None, *, timeout: float = 30.0,
                 prompt: Callable[[str], None] = print, skip: bool = False) -> Result:
    """Ask for a press and wait up to ``timeout`` seconds for the button's pin to go active."""
    if not cfg.button.enabled:
        return skipped("button", "button.enabled is false")
    if skip:
        return skipped("button", "skipped (--no-button): nobody pressed it")
    pin = cfg.button.pin
    try:
        device = _open(pin, True, cfg.button.pull_up, factory)
    except Exception as exc:  # reported, as in check_pins
        what, fix = _why(exc)
        return failed("button", f"button.pin = {pin}: {what}", fix)
    pressed = threading.Event()
    try:
        if device.is_active:
            return failed("button", f"{pin} reads pressed before anyone pressed it",
                          "wire the button between the pin and GND (not 3.3 V), keep "
                          "button.pull_up = true, and use a normally-open button")
        device.when_activated = pressed.set
        prompt(f"press the doorbell button now (waiting up to {timeout:g} s)")
        if pressed.wait(timeout):
            return passed("button", f"{pin}: a press arrived", pin=pin)
        return failed("button", f"{pin}: no press within {timeout:g} s",
                      f"check the wiring: one side of the button to {pin}, the other to GND "
                      f"(docs/installer.md, section 2); a loose Dupont wire is the usual "
                      f"cause", pin=pin)
    finally:
        device.close()
