"""The doorbell's button, chime and LED, driven through gpiozero MockFactory pins, FakeClock."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from gpiozero.pins.mock import MockFactory

from doorstep.agent.doorbell import (
    LED_PATTERNS,
    ButtonLogic,
    Doorbell,
    LedState,
    LongPress,
    QuietHours,
    Ring,
    led_level,
)
from doorstep.config.schema import ButtonConfig, ChimeConfig, LedConfig
from doorstep.core.clock import FakeClock
from doorstep.core.errors import ConfigError


def local(hour: int, minute: int) -> float:
    """Wall time of today's hour:minute in the machine's local time zone."""
    return time.mktime((2024, 6, 1, hour, minute, 0, 0, 0, -1))


class Rig:
    def __init__(self, button: ButtonConfig, chime: ChimeConfig, led: LedConfig,
                 wall: float = local(12, 0)) -> None:
        self.factory = MockFactory()
        self.clock = FakeClock()
        self.wall = wall
        self.events: list[object] = []
        self.bell = Doorbell(button, chime, led, pin_factory=self.factory, clock=self.clock,
                             wall=lambda: self.wall + self.clock.monotonic() - 1000.0,
                             emit=self.events.append)
        self.button = self.factory.pin(button.pin)
        self.chime = self.factory.pin(chime.pin)
        self.led = self.factory.pin(led.pin)

    def at(self, t: float) -> None:
        """Move the clock to t seconds after the start."""
        self.clock.advance(1000.0 + t - self.clock.monotonic())

    def press(self, t: float, hold: float = 0.1) -> None:
        self.at(t)
        self.button.drive_low()
        self.at(t + hold)
        self.button.drive_high()

    def tick(self, t: float) -> None:
        self.at(t)
        self.bell.tick()


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig(ButtonConfig(repeat_window_seconds=3.0, long_press_seconds=2.0),
            ChimeConfig(enabled=True, pulse_ms=300), LedConfig(enabled=True))
    yield r
    r.bell.close()


def test_a_press_rings_at_once_without_waiting_for_a_tick(rig: Rig) -> None:
    rig.at(5.0)
    rig.button.drive_low()
    assert rig.events == [Ring(at_wall=local(12, 0) + 5.0, at_mono=1005.0, count=1, first=True)]
    assert rig.chime.state is True  # the relay is closed at once too


def test_the_chime_pulse_ends_on_the_tick_after_pulse_ms(rig: Rig) -> None:
    rig.press(1.0)
    rig.tick(1.29)
    assert rig.chime.state is True
    rig.tick(1.30)
    assert rig.chime.state is False


def test_contact_bounce_is_one_press(rig: Rig) -> None:
    rig.at(1.0)
    for dt in (0.0, 0.002, 0.004, 0.006, 0.010):
        rig.at(1.0 + dt)
        rig.button.drive_low()
        rig.at(1.0 + dt + 0.001)
        rig.button.drive_high()
    rig.button.drive_low()  # it settles pressed
    rig.tick(1.5)
    rig.at(1.6)
    rig.button.drive_high()
    rig.tick(10.0)
    assert rig.events == [Ring(rig.events[0].at_wall, 1001.0, 1, True)]  # type: ignore[attr-defined]
    assert not rig.bell.pressed


def test_a_release_lost_in_the_bounce_lockout_is_settled_by_tick(rig: Rig) -> None:
    rig.at(1.0)
    rig.button.drive_low()
    rig.at(1.01)  # released within bounce_ms (30 ms): the edge is ignored...
    rig.button.drive_high()
    assert rig.bell.pressed
    rig.tick(1.04)  # ...and picked up once the lockout is over
    assert not rig.bell.pressed
    rig.press(5.0)  # so the next press rings normally
    assert [e for e in rig.events if isinstance(e, Ring) and e.first][-1].at_mono == 1005.0


def test_repeated_presses_merge_into_one_follow_up_with_the_count(rig: Rig) -> None:
    for t in (1.0, 1.5, 2.0, 3.5):
        rig.press(t)
        rig.tick(t + 0.2)
    assert rig.events == [Ring(local(12, 0) + 1.0, 1001.0, 1, True)]
    rig.tick(3.99)
    assert len(rig.events) == 1
    rig.tick(4.0)  # the window (3 s from the first press) closes
    assert rig.events[1] == Ring(local(12, 0) + 3.5, 1003.5, 4, False)
    rig.tick(20.0)
    assert len(rig.events) == 2


def test_the_chime_sounds_once_per_burst(rig: Rig) -> None:
    rig.press(1.0)
    rig.tick(1.5)
    assert rig.chime.state is False
    rig.press(2.0)
    assert rig.chime.state is False  # the second press of the burst does not chime again
    rig.tick(10.0)
    rig.press(11.0)  # a new burst chimes
    assert rig.chime.state is True


def test_a_single_press_has_no_follow_up(rig: Rig) -> None:
    rig.press(1.0)
    rig.tick(30.0)
    assert [e for e in rig.events if isinstance(e, Ring)] == [
        Ring(local(12, 0) + 1.0, 1001.0, 1, True)]


def test_a_press_after_the_window_rings_afresh(rig: Rig) -> None:
    rig.press(1.0)
    rig.press(2.0)
    rig.press(4.5)  # arrives before any tick closed the first window
    firsts = [e for e in rig.events if isinstance(e, Ring)]
    assert [(e.count, e.first) for e in firsts] == [(1, True), (2, False), (1, True)]


def test_a_long_press_is_reported_once_while_held(rig: Rig) -> None:
    rig.at(1.0)
    rig.button.drive_low()
    rig.tick(2.9)
    assert not any(isinstance(e, LongPress) for e in rig.events)
    rig.tick(3.0)
    rig.tick(3.5)
    rig.at(4.0)
    rig.button.drive_high()
    assert [e for e in rig.events if isinstance(e, LongPress)] == [LongPress(1003.0)]
    assert isinstance(rig.events[0], Ring)  # the press itself rang at once, as any press does


def test_a_long_press_released_before_any_tick_is_still_reported(rig: Rig) -> None:
    rig.press(1.0, hold=2.5)
    assert rig.events[-1] == LongPress(1003.0)


def test_long_press_off_when_configured_so() -> None:
    for button in (ButtonConfig(long_press_seconds=0.0),
                   ButtonConfig(long_press_seconds=1.0, long_press_action="none")):
        r = Rig(button, ChimeConfig(), LedConfig())
        r.press(1.0, hold=5.0)
        r.tick(10.0)
        assert not any(isinstance(e, LongPress) for e in r.events)
        r.bell.close()


def test_no_repeat_window_means_every_press_is_a_first_ring() -> None:
    r = Rig(ButtonConfig(repeat_window_seconds=0.0), ChimeConfig(), LedConfig())
    r.press(1.0)
    r.press(1.5)
    r.tick(10.0)
    assert [(e.count, e.first) for e in r.events if isinstance(e, Ring)] == [(1, True), (1, True)]
    r.bell.close()


def test_a_button_held_at_start_up_does_not_ring_or_long_press() -> None:
    factory = MockFactory()
    factory.pin("GPIO17").drive_low()
    clock = FakeClock()
    events: list[object] = []
    with Doorbell(ButtonConfig(long_press_seconds=1.0), ChimeConfig(), LedConfig(),
                  pin_factory=factory, clock=clock, emit=events.append) as bell:
        clock.advance(5.0)
        bell.tick()
        assert events == []
        factory.pin("GPIO17").drive_high()
        clock.advance(1.0)
        factory.pin("GPIO17").drive_low()
        assert events[0] == Ring(events[0].at_wall, 1006.0, 1, True)  # type: ignore[attr-defined]


def test_pull_down_button_is_pressed_when_high() -> None:
    r = Rig(ButtonConfig(pull_up=False), ChimeConfig(), LedConfig())
    r.at(1.0)
    r.button.drive_high()
    assert isinstance(r.events[0], Ring)
    r.bell.close()


@pytest.mark.parametrize(("hour", "quiet"), [(21, False), (22, True), (23, True), (0, True),
                                             (6, True), (7, False), (12, False)])
def test_quiet_hours_across_midnight_silence_the_chime_but_not_the_ring(
        hour: int, quiet: bool) -> None:
    r = Rig(ButtonConfig(), ChimeConfig(enabled=True, quiet_hours=("22:00-07:00",)), LedConfig(),
            wall=local(hour, 30) - 1.0)
    r.at(1.0)
    r.button.drive_low()
    assert isinstance(r.events[0], Ring)
    assert r.chime.state is (not quiet)
    r.bell.close()


def test_quiet_hours_rules() -> None:
    q = QuietHours(["13:00-14:00", "23:30-00:15"])
    assert [q.contains(m) for m in (779, 780, 839, 840)] == [False, True, True, False]
    assert [q.contains(m) for m in (1409, 1410, 0, 14, 15)] == [False, True, True, True, False]
    assert QuietHours(["00:00-00:00"]).contains(720)
    assert not QuietHours([]).contains(720)
    with pytest.raises(ConfigError, match=r"chime.quiet_hours\[0\]"):
        QuietHours(["25:00-07:00"])


def test_an_active_low_relay_idles_high() -> None:
    r = Rig(ButtonConfig(), ChimeConfig(enabled=True, active_high=False), LedConfig())
    assert r.chime.state is True  # relay off
    r.at(1.0)
    r.button.drive_low()
    assert r.chime.state is False  # relay on
    r.bell.close()


def sample(rig: Rig, state: LedState, seconds: float, step: float = 0.05) -> list[bool]:
    rig.bell.set_led(state)
    start = rig.clock.monotonic() - 1000.0
    levels = []
    for i in range(round(seconds / step)):
        rig.tick(start + i * step)
        levels.append(bool(rig.led.state))
    return levels


def test_each_led_state_has_a_distinct_pattern(rig: Rig) -> None:
    seen = {}
    for state in LedState:
        seen[state] = tuple(sample(rig, state, 4.0))
    assert len(set(seen.values())) == len(LedState)
    assert all(seen[LedState.IDLE])  # idle: steady on, so the button can be found at night
    assert sum(seen[LedState.ERROR]) > sum(seen[LedState.OFFLINE])


def test_the_led_pattern_restarts_on_a_state_change(rig: Rig) -> None:
    rig.tick(0.7)
    rig.bell.set_led(LedState.RECORDING)
    assert rig.led.state is True
    rig.tick(1.25)
    assert rig.led.state is False
    assert rig.bell.led_state is LedState.RECORDING


def test_led_level_follows_the_table() -> None:
    for state, steps in LED_PATTERNS.items():
        t = 0.0
        for lit, seconds in steps:
            assert led_level(state, t + seconds / 2) is lit
            t += seconds


def test_close_turns_outputs_off_and_frees_the_pins(rig: Rig) -> None:
    rig.press(1.0)
    assert rig.chime.state is True
    rig.bell.close()
    assert rig.chime.state is False
    assert rig.led.state is False
    # the same factory can hand the same pins to a new doorbell: nothing still holds them
    again = Doorbell(ButtonConfig(), ChimeConfig(enabled=True), LedConfig(enabled=True),
                     pin_factory=rig.factory, clock=FakeClock(), emit=lambda e: None)
    again.close()


def test_disabled_parts_claim_no_pins() -> None:
    factory = MockFactory()
    with Doorbell(ButtonConfig(enabled=False), ChimeConfig(enabled=False), LedConfig(),
                  pin_factory=factory, clock=FakeClock(), emit=lambda e: None) as bell:
        bell.tick()
        bell.set_led(LedState.ERROR)
    assert not factory.pins  # nothing was opened


def test_a_failing_handler_does_not_break_the_button(rig: Rig) -> None:
    calls: list[object] = []

    def handler(event: object) -> None:
        calls.append(event)
        raise RuntimeError("queue full")

    rig.bell._emit = handler
    rig.press(1.0)
    rig.press(10.0)
    assert len(calls) == 2


def test_pure_logic_without_gpio() -> None:
    logic = ButtonLogic(bounce=0.03, repeat_window=2.0, long_press=0.0)
    assert logic.edge(True, 1.0, 50.0) == [Ring(50.0, 1.0, 1, True)]
    assert logic.edge(False, 1.1, 50.1) == []
    assert logic.edge(True, 1.5, 50.5) == []
    assert logic.tick(3.0, 52.0) == [Ring(50.5, 1.5, 2, False)]


def test_bad_or_shared_pins_are_config_errors_naming_the_key() -> None:
    factory = MockFactory()
    with pytest.raises(ConfigError, match=r"button.pin: 'GPIO99'"):
        Doorbell(ButtonConfig(pin="GPIO99"), ChimeConfig(), LedConfig(), pin_factory=factory,
                 clock=FakeClock(), emit=lambda e: None)
    with pytest.raises(ConfigError, match=r"led.pin: 'GPIO27'"):
        Doorbell(ButtonConfig(), ChimeConfig(enabled=True), LedConfig(enabled=True, pin="GPIO27"),
                 pin_factory=factory, clock=FakeClock(), emit=lambda e: None)
    # the pins taken before the failure were given back
    with Doorbell(ButtonConfig(), ChimeConfig(enabled=True), LedConfig(enabled=True),
                  pin_factory=factory, clock=FakeClock(), emit=lambda e: None):
        pass


def test_a_stalled_frame_loop_cannot_hold_the_chime_relay_closed() -> None:
    """No tick() after the press (the camera is reconnecting): the backstop timer opens the
    relay once the pulse is over."""
    import time as real_time

    from doorstep.core.clock import SystemClock

    factory = MockFactory()
    chime = ChimeConfig(enabled=True, pulse_ms=50)
    bell = Doorbell(ButtonConfig(), chime, LedConfig(), pin_factory=factory,
                    clock=SystemClock(), emit=lambda e: None)
    try:
        factory.pin(ButtonConfig().pin).drive_low()
        relay = factory.pin(chime.pin)
        assert relay.state is True
        deadline = real_time.monotonic() + 5
        while relay.state and real_time.monotonic() < deadline:
            real_time.sleep(0.01)
        assert relay.state is False
    finally:
        bell.close()


@pytest.fixture
def no_gpio(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine as it is, with no pin factory chosen yet; skipped on a machine with GPIO."""
    from gpiozero import Device

    from doorstep.core.gpio import gpio_problem

    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)
    monkeypatch.setattr(Device, "pin_factory", None)
    if gpio_problem() is None:
        pytest.skip("this machine has GPIO")


@pytest.mark.usefixtures("no_gpio")
def test_no_gpio_on_this_machine_is_a_config_error_naming_the_key_and_the_fix() -> None:
    with pytest.raises(ConfigError) as caught:
        Doorbell(ButtonConfig(), ChimeConfig(), LedConfig(), pin_factory=None,
                 clock=FakeClock(), emit=lambda e: None)
    text = str(caught.value)
    assert "button.enabled = true, but this machine has no GPIO" in text
    assert "button.enabled = false" in text and "GPIOZERO_PIN_FACTORY=mock" in text
    with pytest.raises(ConfigError, match=r"button.enabled, led.enabled = true.*"
                                          r"button.enabled = false and led.enabled = false"):
        Doorbell(ButtonConfig(), ChimeConfig(), LedConfig(enabled=True), pin_factory=None,
                 clock=FakeClock(), emit=lambda e: None)
