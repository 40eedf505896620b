"""The clock that capture/ paces and stamps frames with: a small Protocol, the real system clock,
and a FakeClock that tests step by hand, so nothing in a test ever sleeps."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Monotonic time for pacing and timeouts, wall time for stamping, and a sleep."""

    def monotonic(self) -> float: ...

    def wall(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock: time.monotonic, time.time and time.sleep."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class FakeClock:
    """A clock that moves only when told to. ``sleep`` advances it at once and records the call."""

    def __init__(self, start: float = 1000.0, wall_start: float = 1_700_000_000.0) -> None:
        self._mono = start
        self._wall_offset = wall_start - start
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self._mono

    def wall(self) -> float:
        return self._mono + self._wall_offset

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if seconds > 0:
            self._mono += seconds

    def advance(self, seconds: float) -> None:
        """Step time forward, as if ``seconds`` of work had happened."""
        if seconds < 0:
            raise ValueError(f"FakeClock.advance: cannot go back in time ({seconds})")
        self._mono += seconds
