"""What the hub knows of the store without a key: each artifact's device, seq, kind, time,
size, parent and priority (the signed manifest's cleartext, from each device's index.jsonl),
kept sorted newest first for the timeline, plus each chain's gaps and forks. It tails the
index files, so artifacts stored by another inbox worker appear too."""

from __future__ import annotations

import bisect
import json
import logging
import re
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from doorstep.owner.store import CONFLICTS

log = logging.getLogger(__name__)

DEVICE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
MAX_GAPS = 20


@dataclass(frozen=True, slots=True, order=True)
class Entry:
    created: float
    device: str
    seq: int
    kind: str
    size: int
    parent: str
    priority: int

    def json(self) -> dict[str, Any]:
        return {"device": self.device, "seq": self.seq, "kind": self.kind,
                "created": self.created, "size": self.size, "parent": self.parent,
                "priority": self.priority}

    @property
    def name(self) -> str:
        return f"{self.seq:010d}.{self.kind}"


class Timeline:
    def __init__(self, store: Path) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._sorted: list[Entry] = []
        self._by_key: dict[tuple[str, int], Entry] = {}
        self._offsets: dict[str, int] = {}
        self._chains: dict[str, dict[str, Any]] = {}     # per device, until it changes
        self.refresh()

    def devices(self) -> list[str]:
        if not self.store.is_dir():
            return []
        return sorted(p.name for p in self.store.iterdir()
                      if p.is_dir() and DEVICE.fullmatch(p.name) and (p / "device.pub").exists())

    def refresh(self, device: str | None = None) -> list[Entry]:
        """Read what was appended to the index files since last time; returns it."""
        new: list[Entry] = []
        for d in [device] if device else self.devices():
            path = self.store / d / "index.jsonl"
            try:
                f = path.open("rb")
            except FileNotFoundError:
                continue
            # line by line, not the whole index at once: at 100,000 artifacts a whole read
            # (and its list of lines) doubled the hub's peak memory as it started
            with f, self._lock:
                f.seek(self._offsets.get(d, 0))
                for line in f:
                    if not line.endswith(b"\n"):
                        break                    # a line still being written waits
                    self._offsets[d] = self._offsets.get(d, 0) + len(line)
                    entry = _entry(d, line)
                    if entry is not None and (d, entry.seq) not in self._by_key:
                        self._by_key[(d, entry.seq)] = entry
                        if not self._sorted or self._sorted[-1] < entry:
                            self._sorted.append(entry)      # the usual case: newest last
                        else:
                            bisect.insort(self._sorted, entry)
                        new.append(entry)
                        self._chains.pop(d, None)
        return new

    def __len__(self) -> int:
        return len(self._sorted)

    def get(self, device: str, seq: int) -> Entry | None:
        return self._by_key.get((device, seq))

    def page(self, before: tuple[float, str, int] | None, limit: int) -> list[Entry]:
        """Newest first, strictly older than ``before`` (created, device, seq)."""
        with self._lock:
            if before is None:
                end = len(self._sorted)
            else:
                end = bisect.bisect_left(self._sorted, Entry(before[0], before[1], before[2],
                                                             "", 0, "", 0))
            return self._sorted[max(0, end - limit):end][::-1]

    def around(self, device: str, seqs: range) -> list[Entry]:
        return [e for s in seqs if (e := self._by_key.get((device, s))) is not None]

    def chain(self, device: str) -> dict[str, Any]:
        """Gaps (missing seqs) and forks (signed manifests that contradict a stored one), as
        the store shows them; the app checks signatures and links itself."""
        with self._lock:
            cached = self._chains.get(device)
            if cached is None:
                cached = self._chains[device] = _gaps(
                    sorted(s for d, s in self._by_key if d == device))
        conflicts = self.store / device / CONFLICTS
        forks = sorted({int(p.name.split(".")[0]) for p in conflicts.glob("*.json")}
                       ) if conflicts.is_dir() else []
        return {**cached, "forks": forks[:MAX_GAPS]}


def _gaps(seqs: list[int]) -> dict[str, Any]:
    """How many, the last, and the missing spans (the first MAX_GAPS) of sorted seqs."""
    gaps: list[str] = []
    expected = 1
    for s in seqs:
        if s > expected and len(gaps) < MAX_GAPS:
            gaps.append(str(expected) if s - 1 == expected else f"{expected}-{s - 1}")
        expected = s + 1
    return {"artifacts": len(seqs), "last_seq": seqs[-1] if seqs else 0, "gaps": gaps}


def _entry(device: str, line: bytes) -> Entry | None:
    try:
        d = json.loads(line)
        return Entry(float(d["created"]), device, int(d["seq"]), sys.intern(str(d["kind"])),
                     int(d["size"]), str(d.get("parent", "")), int(d.get("priority", 0)))
    except (ValueError, KeyError, TypeError):
        log.warning("hub: %s: skipping an unreadable index line", device)
        return None
