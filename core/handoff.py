"""A bounded hand-off between a network thread and a worker: at most ``max_items`` entries and
``max_bytes`` of payload wait at once. What does not fit is refused at once (counted, never
blocking the network thread), so a flood cannot grow memory without bound. A leaf module."""

from __future__ import annotations

import queue
import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class Handoff(Generic[T]):
    def __init__(self, max_items: int, max_bytes: int) -> None:
        self._queue: queue.Queue[tuple[T, int]] = queue.Queue()
        self._lock = threading.Lock()
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.items = 0
        self.bytes = 0
        self.refused = 0

    def offer(self, item: T, size: int) -> bool:
        """Queue ``item`` (``size`` bytes) if it fits; False (and counted) if not."""
        with self._lock:
            if self.items + 1 > self.max_items or self.bytes + size > self.max_bytes:
                self.refused += 1
                return False
            self.items += 1
            self.bytes += size
        self._queue.put((item, size))
        return True

    def put_control(self, item: T) -> None:
        """Queue a control entry (a wake-up, a stop) whatever the bounds: never refused."""
        with self._lock:
            self.items += 1
        self._queue.put((item, 0))

    def empty(self) -> bool:
        return self._queue.empty()

    def get(self, timeout: float | None = None) -> T:
        """The next entry; raises queue.Empty after ``timeout`` seconds."""
        item, size = self._queue.get(timeout=timeout)
        with self._lock:
            self.items -= 1
            self.bytes -= size
        return item

    def get_nowait(self) -> T:
        item, size = self._queue.get_nowait()
        with self._lock:
            self.items -= 1
            self.bytes -= size
        return item
