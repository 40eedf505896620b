"""A bounded hand-off between a network thread and a worker: at most ``max_items`` entries and
``max_bytes`` of payload wait at once. What does not fit is refused at once (counted, never
blocking the network thread), so a flood cannot grow memory without bound. Entries offered as
``urgent`` are taken before the others (first in, first out within each), so a ring is not
handled after a clip's chunks that came before it. A leaf module."""

from __future__ import annotations

import itertools
import queue
import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class Handoff(Generic[T]):
    def __init__(self, max_items: int, max_bytes: int) -> None:
        # (rank, arrival, entry, size): arrivals are unique, so entries are never compared
        self._queue: queue.PriorityQueue[tuple[int, int, T, int]] = queue.PriorityQueue()
        self._order = itertools.count()
        self._lock = threading.Lock()
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.items = 0
        self.bytes = 0
        self.refused = 0

    def offer(self, item: T, size: int, *, urgent: bool = False) -> bool:
        """Queue ``item`` (``size`` bytes) if it fits; False (and counted) if not."""
        with self._lock:
            if self.items + 1 > self.max_items or self.bytes + size > self.max_bytes:
                self.refused += 1
                return False
            self.items += 1
            self.bytes += size
            n = next(self._order)
        self._queue.put((0 if urgent else 1, n, item, size))
        return True

    def put_control(self, item: T) -> None:
        """Queue a control entry (a wake-up, a stop) whatever the bounds: never refused."""
        with self._lock:
            self.items += 1
            n = next(self._order)
        self._queue.put((1, n, item, 0))

    def empty(self) -> bool:
        return self._queue.empty()

    def get(self, timeout: float | None = None) -> T:
        """The next entry; raises queue.Empty after ``timeout`` seconds."""
        _, _, item, size = self._queue.get(timeout=timeout)
        with self._lock:
            self.items -= 1
            self.bytes -= size
        return item

    def get_nowait(self) -> T:
        _, _, item, size = self._queue.get_nowait()
        with self._lock:
            self.items -= 1
            self.bytes -= size
        return item
