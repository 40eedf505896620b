"""The upload scheduler, without I/O: which message to publish next, given the outbox's items,
the broker's PUBACKs and the inbox's receipts (DESIGN.md decisions 4 and 5).

Two lanes. Single-message artifacts (events, snapshots) go out as soon as they are committed.
Chunked artifacts (clips) go out one at a time, with a window of unacknowledged chunks that adapts
to the link: each chunk's time from publish to PUBACK is the delay a ring published now would wait
behind clip data. Above ``queue_delay`` the window halves (at most once per round trip); well below
it, it grows by one chunk, up to ``in_flight``. So a slow home uplink carries about one chunk ahead
of a ring, and a fast one fills the pipe. In any case a
ring event never waits behind more than that many chunks. An artifact is finished when every
message has a PUBACK and, if the device knows the inbox's key, the inbox's signed receipt has
arrived; with no receipt after ``receipt_timeout`` it is sent again, with backoff.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from doorstep.protocol.wire import (
    SINGLE_MESSAGE_KINDS,
    Topics,
    chunk_count,
    pack_chunked_manifest,
    pack_single,
)
from doorstep.uplink.outbox import Item

MANIFEST = -1  # the chunk index used for a chunked artifact's manifest message


class Lane(enum.Enum):
    PRIORITY = "priority"
    BULK = "bulk"


@dataclass(frozen=True)
class Publish:
    """One message to hand to the broker. ``seq`` and ``part`` identify it in ``on_puback``."""

    topic: str
    seq: int
    part: int
    lane: Lane


@dataclass
class _Upload:
    item: Item
    chunks: int
    lane: Lane
    acked: set[int] = field(default_factory=set)
    in_flight: set[int] = field(default_factory=set)
    done_at: float | None = None      # when the last PUBACK arrived
    attempts: int = 0

    def parts(self) -> list[int]:
        if self.lane is Lane.PRIORITY:
            return [0]
        return [MANIFEST, *range(self.chunks)]

    @property
    def fully_acked(self) -> bool:
        return all(p in self.acked for p in self.parts())


class Sender:
    """Feed it events; ask it what to publish. All times are from an injected clock."""

    def __init__(self, topics: Topics, *, chunk_bytes: int, in_flight: int,
                 receipt_timeout: float, require_receipt: bool, queue_delay: float = 0.1,
                 priority_in_flight: int = 16, max_backoff: float = 600.0) -> None:
        self.topics = topics
        self.chunk_bytes = chunk_bytes
        self.in_flight = in_flight
        self.queue_delay = queue_delay
        self.window = min(2, in_flight)
        self._sent_at: dict[tuple[int, int], float] = {}
        self._last_cut = -1e9
        self.priority_in_flight = priority_in_flight
        self.receipt_timeout = receipt_timeout
        self.require_receipt = require_receipt
        self.max_backoff = max_backoff
        self._uploads: dict[int, _Upload] = {}
        self.connected = False

    # -- inputs -------------------------------------------------------------------------------
    def add(self, item: Item, acked_chunks: int = 0) -> None:
        """A committed artifact to upload. ``acked_chunks``: chunks known to be acknowledged."""
        if item.seq in self._uploads:
            return
        single = item.manifest.kind in SINGLE_MESSAGE_KINDS
        lane = Lane.PRIORITY if single else Lane.BULK
        up = _Upload(item, chunks=1 if single else chunk_count(item.size, self.chunk_bytes),
                     lane=lane)
        if not single:
            up.acked.update(range(min(acked_chunks, up.chunks)))
        self._uploads[item.seq] = up

    def on_connect(self) -> None:
        self.connected = True

    def on_disconnect(self) -> None:
        """Unacknowledged messages may be lost with the connection: send them again."""
        self.connected = False
        self._sent_at.clear()
        for up in self._uploads.values():
            up.in_flight.clear()

    def on_puback(self, seq: int, part: int, now: float) -> int | None:
        """Returns the new count of leading acknowledged chunks for persisting, or None."""
        up = self._uploads.get(seq)
        if up is None:
            return None
        up.in_flight.discard(part)
        up.acked.add(part)
        sent = self._sent_at.pop((seq, part), None)
        if sent is not None and up.lane is Lane.BULK:
            self._adapt(now - sent, now)
        if up.fully_acked and up.done_at is None:
            up.done_at = now
        if up.lane is Lane.BULK and part >= 0:
            n = 0
            while n in up.acked:
                n += 1
            return n
        return None

    def _adapt(self, delay: float, now: float) -> None:
        """Delay-based window: halve when chunks wait longer than ``queue_delay`` (once per
        round trip, so one burst of late acks cuts once), grow by one when well under it."""
        if delay > self.queue_delay:
            if now - self._last_cut > delay:
                self.window = max(1, self.window // 2)
                self._last_cut = now
        elif delay < self.queue_delay / 2:
            self.window = min(self.in_flight, self.window + 1)

    def on_receipt(self, seq: int, sha256: str) -> bool:
        """True if the receipt matches an artifact we hold: it may now leave the outbox."""
        up = self._uploads.get(seq)
        if up is None or up.item.manifest.sha256 != sha256:
            return False
        del self._uploads[seq]
        return True

    def drop(self, seq: int) -> None:
        """The artifact is gone from the outbox (evicted): stop sending it."""
        self._uploads.pop(seq, None)

    # -- outputs ------------------------------------------------------------------------------
    def finished(self, now: float) -> list[int]:
        """Artifacts that may leave the outbox without a receipt (when none is required)."""
        if self.require_receipt:
            return []
        done = [s for s, up in self._uploads.items() if up.fully_acked]
        for s in done:
            del self._uploads[s]
        return done

    def next_publishes(self, now: float) -> list[Publish]:
        """Messages to publish now, priority lane first. Call again after each event."""
        if not self.connected:
            return []
        self._expire_receipts(now)
        out: list[Publish] = []
        uploads = sorted(self._uploads.values(),
                         key=lambda u: (u.lane is Lane.BULK, u.item.manifest.priority, u.item.seq))
        prio_busy = sum(len(u.in_flight) for u in uploads if u.lane is Lane.PRIORITY)
        for up in uploads:
            if up.lane is not Lane.PRIORITY:
                continue
            if prio_busy >= self.priority_in_flight:
                break
            if 0 not in up.acked and 0 not in up.in_flight:
                up.in_flight.add(0)
                prio_busy += 1
                out.append(Publish(self.topics.event, up.item.seq, 0, Lane.PRIORITY))
        bulk = [u for u in uploads if u.lane is Lane.BULK and not u.fully_acked]
        if bulk:
            up = bulk[0]   # one clip at a time: the highest-priority, oldest
            for part in up.parts():
                if len(up.in_flight) >= self.window:
                    break
                if part in up.acked or part in up.in_flight:
                    continue
                up.in_flight.add(part)
                self._sent_at[(up.item.seq, part)] = now
                topic = (self.topics.clip_manifest(up.item.seq) if part == MANIFEST
                         else self.topics.clip_chunk(up.item.seq, part))
                out.append(Publish(topic, up.item.seq, part, Lane.BULK))
        return out

    def payload(self, pub: Publish) -> bytes:
        """The bytes of one message, read from the outbox file when it is sent."""
        item = self._uploads[pub.seq].item if pub.seq in self._uploads else None
        if item is None:
            raise KeyError(pub.seq)
        if pub.lane is Lane.PRIORITY:
            return pack_single(item.envelope, item.path.read_bytes())
        if pub.part == MANIFEST:
            return pack_chunked_manifest(item.envelope, self.chunk_bytes,
                                         chunk_count(item.size, self.chunk_bytes))
        with open(item.path, "rb") as f:
            f.seek(pub.part * self.chunk_bytes)
            return f.read(self.chunk_bytes)

    def forget_in_flight(self, pub: Publish) -> None:
        """A publish call failed before reaching the socket: it may be tried again."""
        up = self._uploads.get(pub.seq)
        if up is not None:
            up.in_flight.discard(pub.part)

    def next_deadline(self) -> float | None:
        """When a receipt timeout next falls due, so the caller knows how long to sleep."""
        times = [up.done_at + self._timeout(up) for up in self._uploads.values()
                 if up.done_at is not None and self.require_receipt]
        return min(times) if times else None

    @property
    def pending(self) -> int:
        return len(self._uploads)

    def _timeout(self, up: _Upload) -> float:
        return min(self.receipt_timeout * (2 ** up.attempts), self.max_backoff)

    def _expire_receipts(self, now: float) -> None:
        if not self.require_receipt:
            return
        for up in self._uploads.values():
            if up.done_at is not None and now >= up.done_at + self._timeout(up):
                up.attempts += 1
                up.done_at = None
                up.acked.clear()
                up.in_flight.clear()
