"""Logging dropped messages without letting the sender flood the log (an SD card) or blind it.

Each kind of reason is logged once, with its first example, and every drop is counted. Kinds
are the reason with its numbers and quoted values blanked. Kinds are kept per *source* (for
the inbox, the device a message claims to come from): each source has its own budget of
kinds, and the sources named as ``reserved`` (the devices the inbox knows) keep theirs
whatever arrives from elsewhere, so a flood of drops from unknown topics can never use up the
kinds a genuine device's anomalies would be logged under. At most ``sources`` other sources
are told apart; the rest are counted together. ``report()`` logs the counts since the last
report (call it periodically). A leaf module."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable

_VALUES = re.compile(r"'[^']*'|\"[^\"]*\"|\d+")
OTHER = "(other sources)"


class DropLog:
    def __init__(self, logger: logging.Logger, what: str, limit: int = 64, *,
                 reserved: Iterable[str] = (), sources: int = 32) -> None:
        self._log = logger
        self._what = what
        self._limit = limit              # kinds per source
        self._reserved = set(reserved)
        self._sources = sources          # unreserved sources told apart
        self._kinds: dict[str, set[str]] = {}
        self._counts: dict[str, int] = {}
        self._reported: dict[str, int] = {}
        self._lock = threading.Lock()
        self.count = 0

    def __call__(self, reason: str, source: str = "") -> None:
        with self._lock:
            self.count += 1
            if source not in self._reserved and source not in self._kinds:
                unreserved = len(self._kinds.keys() - self._reserved)
                if unreserved >= self._sources:
                    source = OTHER
            self._counts[source] = self._counts.get(source, 0) + 1
            kinds = self._kinds.setdefault(source, set())
            kind = _VALUES.sub("#", reason)[:200]
            if kind in kinds or len(kinds) > self._limit:
                return
            kinds.add(kind)
            full = len(kinds) > self._limit - 1
            if full:
                kinds.add("\0full")     # one more entry: the budget is spent, said once
        where = f" ({source})" if source else ""
        self._log.warning("%s%s: %s", self._what, where, reason[:300])
        if full:
            self._log.warning("%s%s: %d kinds of drop reason seen; only counting new ones "
                              "(see the periodic drop report)", self._what, where, self._limit)

    def counts(self) -> dict[str, int]:
        """Drops so far, by source (for status messages)."""
        with self._lock:
            return dict(self._counts)

    def report(self) -> None:
        """Log how many were dropped since the last report, by source; nothing if none."""
        with self._lock:
            new = {s: n - self._reported.get(s, 0) for s, n in self._counts.items()
                   if n != self._reported.get(s, 0)}
            self._reported = dict(self._counts)
        if new:
            self._log.warning("%s: %d dropped since the last report (%s)", self._what,
                              sum(new.values()),
                              ", ".join(f"{s or 'all'}: {n}" for s, n in sorted(new.items())))
