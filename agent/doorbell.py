"""The doorbell's hardware: the button (debounce, repeat merging, long press), the chime relay
(pulse, quiet hours) and the status LED patterns, over gpiozero with an injected pin factory.

The timing rules live in small I/O-free classes (ButtonLogic, QuietHours, led_level) fed with
edges and times; Doorbell wires them to gpiozero devices. Nothing here starts a thread or sleeps:
the run loop calls ``Doorbell.tick()`` every frame, which ends chime pulses, closes repeat windows,
detects long presses and steps the LED pattern.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from doorstep.config.schema import ButtonConfig, ChimeConfig, LedConfig
from doorstep.core.errors import ConfigError, NoGpio
from doorstep.core.gpio import default_pin_factory, enabled_parts, no_gpio_message

log = logging.getLogger(__name__)


class MonotonicClock(Protocol):
    """The part of doorstep.core.clock.Clock this module needs."""

    def monotonic(self) -> float: ...


@dataclass(frozen=True)
class Ring:
    """Someone pressed the button. The first press of a burst is emitted at once (count=1,
    first=True); presses within the repeat window are summed into one follow-up (first=False)
    when the window closes, stamped with the last press's time."""

    at_wall: float
    at_mono: float
    count: int
    first: bool


@dataclass(frozen=True)
class LongPress:
    """The button was held for ButtonConfig.long_press_seconds; ``at_mono`` is when it crossed."""

    at_mono: float


ButtonEvent = Ring | LongPress


class ButtonLogic:
    """Debounce, repeat merging and long press as a pure state machine over (edge, time).

    Debounce is leading-edge: a change of level is accepted at once (so a ring is never delayed by
    the debounce time), then further edges are ignored for ``bounce`` seconds. When that lock-out
    ends, ``tick`` reconciles with the last raw level seen, so a release that bounced is not lost.
    """

    def __init__(self, *, bounce: float, repeat_window: float, long_press: float,
                 pressed: bool = False, now: float = 0.0) -> None:
        self.bounce = bounce
        self.repeat_window = repeat_window
        self.long_press = long_press
        self._raw = pressed
        self._pressed = pressed
        self._last_change = now - bounce
        self._pressed_at = now
        self._long_sent = True  # a button already held at start-up never long-presses
        self._window_end: float | None = None
        self._count = 0
        self._last_press = (0.0, 0.0)  # (mono, wall)

    @property
    def pressed(self) -> bool:
        return self._pressed

    def edge(self, pressed: bool, now: float, wall: float) -> list[ButtonEvent]:
        """A raw level change read from the pin."""
        self._raw = pressed
        if pressed == self._pressed or now - self._last_change < self.bounce:
            return []
        return self._accept(pressed, now, wall)

    def tick(self, now: float, wall: float) -> list[ButtonEvent]:
        """Time passes: settle bounced edges, close the repeat window, detect a long press."""
        events: list[ButtonEvent] = []
        if self._raw != self._pressed and now - self._last_change >= self.bounce:
            events += self._accept(self._raw, now, wall)
        events += self._close_window(now)
        if (self._pressed and not self._long_sent and self.long_press > 0
                and now - self._pressed_at >= self.long_press):
            self._long_sent = True
            events.append(LongPress(self._pressed_at + self.long_press))
        return events

    def _accept(self, pressed: bool, now: float, wall: float) -> list[ButtonEvent]:
        self._pressed = pressed
        self._last_change = now
        if not pressed:
            held = now - self._pressed_at
            if self.long_press > 0 and not self._long_sent and held >= self.long_press:
                self._long_sent = True
                return [LongPress(self._pressed_at + self.long_press)]
            return []
        self._pressed_at = now
        self._long_sent = False
        events = self._close_window(now)
        self._last_press = (now, wall)
        if self._window_end is not None:
            self._count += 1
            return events
        if self.repeat_window > 0:
            self._window_end = now + self.repeat_window
            self._count = 1
        events.append(Ring(at_wall=wall, at_mono=now, count=1, first=True))
        return events

    def _close_window(self, now: float) -> list[ButtonEvent]:
        if self._window_end is None or now < self._window_end:
            return []
        self._window_end = None
        count, self._count = self._count, 0
        if count < 2:
            return []
        mono, wall = self._last_press
        return [Ring(at_wall=wall, at_mono=mono, count=count, first=False)]


class QuietHours:
    """Periods of the local day when the chime stays silent, e.g. "22:00-07:00" (crosses
    midnight: 22:00 up to but not including 07:00). A period whose start equals its end is the
    whole day."""

    def __init__(self, periods: Iterable[str]) -> None:
        self.periods: tuple[tuple[int, int], ...] = tuple(
            self._parse(p, i) for i, p in enumerate(periods))

    @staticmethod
    def _parse(text: str, i: int) -> tuple[int, int]:
        try:
            start, end = text.split("-")
            minutes = []
            for part in (start, end):
                hh, mm = part.strip().split(":")
                h, m = int(hh), int(mm)
                if not (0 <= h <= 23 and 0 <= m <= 59):
                    raise ValueError(part)
                minutes.append(h * 60 + m)
        except ValueError:
            raise ConfigError([f"chime.quiet_hours[{i}]: {text!r} is not a period like "
                               "\"22:00-07:00\""]) from None
        return minutes[0], minutes[1]

    def contains(self, minute_of_day: int) -> bool:
        for start, end in self.periods:
            if start == end:
                return True
            if start < end and start <= minute_of_day < end:
                return True
            if start > end and (minute_of_day >= start or minute_of_day < end):
                return True
        return False

    def is_quiet(self, wall: float) -> bool:
        """Whether the wall-clock time ``wall`` (seconds since the epoch) falls in a period,
        judged in the machine's local time zone."""
        local = time.localtime(wall)
        return self.contains(local.tm_hour * 60 + local.tm_min)


class LedState(enum.Enum):
    IDLE = "idle"
    RECORDING = "recording"
    OFFLINE = "offline"
    PRIVACY = "privacy"
    ERROR = "error"


# Each pattern is a cycle of (lit, seconds) steps, started afresh when the state changes.
LED_PATTERNS: dict[LedState, tuple[tuple[bool, float], ...]] = {
    LedState.IDLE: ((True, 1.0),),                                     # steady on
    LedState.RECORDING: ((True, 0.5), (False, 0.5)),                   # 1 Hz blink
    LedState.OFFLINE: ((True, 0.1), (False, 1.9)),                     # short blip every 2 s
    LedState.PRIVACY: ((True, 0.1), (False, 0.2), (True, 0.1), (False, 1.6)),  # double blip
    LedState.ERROR: ((True, 0.1), (False, 0.1)),                       # fast flash, 5 Hz
}


def led_level(state: LedState, elapsed: float) -> bool:
    """Whether the LED is lit ``elapsed`` seconds after entering ``state``."""
    steps = LED_PATTERNS[state]
    period = sum(seconds for _, seconds in steps)
    phase = elapsed % period
    for lit, seconds in steps:
        if phase < seconds:
            return lit
        phase -= seconds
    return steps[-1][0]


class Doorbell:
    """Button, chime relay and status LED on gpiozero devices made by ``pin_factory`` (None:
    this machine's; a machine without GPIO is a ConfigError naming the keys and the fix).

    ``emit`` receives Ring and LongPress events. A first Ring is emitted from gpiozero's edge
    callback, which on a Pi runs on the pin library's thread, so the ring is not held up by a
    slow frame: ``emit`` must only hand the event over (a queue.put), never block. Follow-up rings
    and long presses come from ``tick()`` on the caller's thread.
    """

    def __init__(self, button: ButtonConfig, chime: ChimeConfig, led: LedConfig, *,
                 pin_factory: Any, clock: MonotonicClock,
                 wall: Callable[[], float] = time.time,
                 emit: Callable[[object], None]) -> None:
        from gpiozero import DigitalInputDevice, DigitalOutputDevice
        from gpiozero.exc import GPIOPinInUse

        self._clock = clock
        self._wall = wall
        self._emit = emit
        self._lock = threading.Lock()
        self._quiet = QuietHours(chime.quiet_hours)
        self._pulse = chime.pulse_ms / 1000
        self._chime_off_at: float | None = None
        self._chime_timer: threading.Timer | None = None
        self._led_state = LedState.IDLE
        self._led_since = clock.monotonic()
        self._long_press_enabled = (button.long_press_seconds > 0
                                    and button.long_press_action != "none")
        self._button: Any = None
        self._chime: Any = None
        self._led: Any = None
        keys = enabled_parts(button.enabled, chime.enabled, led.enabled)
        if pin_factory is None and keys:
            try:
                pin_factory = default_pin_factory()
            except NoGpio as exc:
                raise ConfigError([no_gpio_message(keys, str(exc))]) from exc
        key = ""
        try:
            if chime.enabled:
                key = f"chime.pin: {chime.pin!r}"
                self._chime = DigitalOutputDevice(chime.pin, active_high=chime.active_high,
                                                  initial_value=False, pin_factory=pin_factory)
            if led.enabled:
                key = f"led.pin: {led.pin!r}"
                self._led = DigitalOutputDevice(led.pin, active_high=led.active_high,
                                                initial_value=False, pin_factory=pin_factory)
            if button.enabled:
                key = f"button.pin: {button.pin!r}"
                self._button = DigitalInputDevice(button.pin, pull_up=button.pull_up,
                                                  bounce_time=None, pin_factory=pin_factory)
        except (ValueError, GPIOPinInUse) as exc:  # a bad name, or two parts on one pin
            self.close()
            raise ConfigError([f"{key} cannot be used: {exc}"]) from exc
        except BaseException:
            self.close()
            raise
        now = clock.monotonic()
        held = bool(self._button is not None and self._button.is_active)
        if held:
            log.warning("button on %s reads pressed at start-up; ignoring until released",
                        button.pin)
        self._logic = ButtonLogic(
            bounce=button.bounce_ms / 1000, repeat_window=button.repeat_window_seconds,
            long_press=button.long_press_seconds if self._long_press_enabled else 0.0,
            pressed=held, now=now)
        if self._button is not None:
            self._button.when_activated = self._on_press
            self._button.when_deactivated = self._on_release
        self._apply_led(now)

    # -- edges, from gpiozero's callback -------------------------------------------------------

    def _on_press(self) -> None:
        self._edge(True)

    def _on_release(self) -> None:
        self._edge(False)

    def _edge(self, pressed: bool) -> None:
        with self._lock:
            now = self._clock.monotonic()
            events = self._logic.edge(pressed, now, self._wall())
            self._react(events, now)
        self._send(events)

    # -- the run loop's side ---------------------------------------------------------------------

    def tick(self) -> None:
        """Advance time: settle bounces, end chime pulses, close repeat windows, step the LED."""
        with self._lock:
            now = self._clock.monotonic()
            events = self._logic.tick(now, self._wall())
            self._react(events, now)
            if self._chime_off_at is not None and now >= self._chime_off_at:
                self._chime_off_at = None
                if self._chime is not None:
                    self._chime.off()
            self._apply_led(now)
        self._send(events)

    def set_led(self, state: LedState) -> None:
        """Show ``state``; the pattern restarts from its beginning when the state changes."""
        with self._lock:
            if state is self._led_state:
                return
            log.info("status LED: %s -> %s", self._led_state.value, state.value)
            self._led_state = state
            self._led_since = self._clock.monotonic()
            self._apply_led(self._led_since)

    @property
    def led_state(self) -> LedState:
        return self._led_state

    @property
    def pressed(self) -> bool:
        """The debounced button level."""
        return self._logic.pressed

    def close(self) -> None:
        """Release the pins, chime relay and LED off first."""
        if self._chime_timer is not None:
            self._chime_timer.cancel()
        for name in ("_button", "_chime", "_led"):
            device = getattr(self, name)
            if device is None:
                continue
            setattr(self, name, None)
            if name != "_button":
                device.off()
            device.close()

    def __enter__(self) -> Doorbell:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals (called with the lock held) ---------------------------------------------------

    def _react(self, events: list[ButtonEvent], now: float) -> None:
        for event in events:
            if isinstance(event, Ring) and event.first:
                self._ring_chime(event, now)

    def _ring_chime(self, ring: Ring, now: float) -> None:
        if self._chime is None:
            return
        if self._quiet.is_quiet(ring.at_wall):
            log.info("ring: chime silent (quiet hours)")
            return
        self._chime.on()
        self._chime_off_at = now + self._pulse
        # tick() normally ends the pulse; this backstop ends it even if the frame loop stalls
        # (a camera reconnecting), so the relay never stays closed on a chime coil
        if self._chime_timer is not None:
            self._chime_timer.cancel()
        self._chime_timer = threading.Timer(self._pulse + 0.25, self._chime_backstop)
        self._chime_timer.daemon = True
        self._chime_timer.start()

    def _chime_backstop(self) -> None:
        with self._lock:
            off_at = self._chime_off_at
            if off_at is not None and self._clock.monotonic() >= off_at:
                self._chime_off_at = None
                if self._chime is not None:
                    self._chime.off()
                log.warning("chime: pulse ended by the backstop timer (the frame loop is slow)")

    def _apply_led(self, now: float) -> None:
        if self._led is None:
            return
        lit = led_level(self._led_state, now - self._led_since)
        if bool(self._led.value) != lit:
            self._led.value = lit

    def _send(self, events: list[ButtonEvent]) -> None:
        for event in events:
            log.info("button: %s", event)
            try:
                self._emit(event)
            except Exception:  # an exception here would kill the pin library's callback thread
                log.exception("the doorbell's event handler failed on %s", event)
