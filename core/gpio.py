"""Whether this machine has GPIO that gpiozero can drive, and if not, why. The doorbell uses it to
stop at start-up with an error that names the fix, and `check-config` to warn; both import
gpiozero only when they call it.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

from doorstep.core.errors import NoGpio

log = logging.getLogger(__name__)

FIX = ("where no doorbell is wired (a laptop, a test rig) set {keys}; to develop without "
       "GPIO, run with GPIOZERO_PIN_FACTORY=mock; on a Raspberry Pi, install python3-lgpio")


def default_pin_factory() -> Any:
    """gpiozero's pin factory for this machine: the one GPIOZERO_PIN_FACTORY names, or the first
    of gpiozero's defaults that loads. gpiozero keeps it (``Device.pin_factory``) for every
    device made without a factory of its own. Raises NoGpio saying why there is none."""
    from gpiozero import Device

    if Device.pin_factory is not None:
        return Device.pin_factory
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            Device.ensure_pin_factory()
        except Exception as exc:  # gpiozero raises BadPinFactory, ImportError or a driver's own
            tried = [str(w.message).removeprefix("Falling back from ")
                     for w in caught if "Falling back" in str(w.message)]
            why = f"{exc}" + (f" ({'; '.join(tried)})" if tried else "")
            raise NoGpio(f"this machine has no GPIO that gpiozero can use: {why}") from exc
    for w in caught:
        log.debug("gpiozero: %s", w.message)
    return Device.pin_factory


def gpio_problem() -> str | None:
    """Why no pin factory can be had on this machine, or None if one can. Leaves gpiozero as it
    found it, so a check does not hold the GPIO chip open."""
    from gpiozero import Device

    if Device.pin_factory is not None:
        return None
    try:
        factory = default_pin_factory()
    except NoGpio as exc:
        return str(exc)
    Device.pin_factory = None
    factory.close()
    return None


def enabled_parts(button: bool, chime: bool, led: bool) -> list[str]:
    """The config keys that ask for GPIO, e.g. ``["button.enabled", "led.enabled"]``."""
    return [f"{name}.enabled" for name, on in (("button", button), ("chime", chime), ("led", led))
            if on]


def no_gpio_message(keys: list[str], problem: str) -> str:
    """``button.enabled = true, but <problem>. <the fix>``, for an error or a warning."""
    fix = FIX.format(keys=" and ".join(f"{k} = false" for k in keys))
    return f"{', '.join(keys)} = true, but {problem}. To fix: {fix}"
