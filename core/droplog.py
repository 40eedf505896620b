"""Logging dropped messages without letting the sender flood the log (an SD card): each kind of
reason is logged once, with its first example, and every drop is counted. Kinds are the reason
with its numbers and quoted values blanked, and there are at most ``limit`` of them, so a sender
who varies a value cannot grow memory or the log. A leaf module."""

from __future__ import annotations

import logging
import re

_VALUES = re.compile(r"'[^']*'|\"[^\"]*\"|\d+")


class DropLog:
    def __init__(self, logger: logging.Logger, what: str, limit: int = 256) -> None:
        self._log = logger
        self._what = what
        self._limit = limit
        self._kinds: set[str] = set()
        self.count = 0

    def __call__(self, reason: str) -> None:
        self.count += 1
        kind = _VALUES.sub("#", reason)[:200]
        if kind in self._kinds:
            return
        if len(self._kinds) >= self._limit:
            return
        self._kinds.add(kind)
        if len(self._kinds) == self._limit:
            self._log.warning("%s: %d kinds of drop reason seen; logging no new ones",
                              self._what, self._limit)
        self._log.warning("%s: %s", self._what, reason)
