"""The upload scheduler, without I/O: which message to publish next, given the outbox's items,
the broker's PUBACKs and the inbox's receipts (DESIGN.md decisions 4 and 5).

Two lanes. The ring lane carries ring events (priority 0, one small message each) the moment
they are committed, each followed by its thumbnail (one message of about 20 KB). Everything
else goes on the paced lane: other events, then thumbnails (one message each), before
snapshots before clips, each by priority and then age; snapshots and clips as a
manifest and 16 KiB chunks, so a ring can overtake them between any two chunks (a snapshot
sent whole held a ring for 445 ms on a 2 Mbit/s link). How many paced messages may be
unacknowledged adapts to the link: each one's time from publish to PUBACK is the delay a ring
published at that moment would wait behind it. Above ``queue_delay`` the window halves (at
most once per round trip); well below it, it grows by one, up to ``in_flight``. So a slow
home uplink carries about one chunk ahead of a ring, and a fast one fills the pipe.

Every artifact starts with its head (wire version 2, ``a/<seq>/m``): the signed manifest and
the signed chunking, sealed to the inbox key; an event's padded ciphertext rides inside it, and
anything else follows in chunks of the padded ciphertext. So the broker sees neither the kind
nor the priority, only a sequence number and a Padmé-bucketed size.

An artifact is finished when every message has a PUBACK and, if the device knows the inbox's
key, the inbox's signed receipt has arrived; with no receipt after ``receipt_timeout`` it is
sent again, with backoff. ``resend`` starts over at once, backoff reset: on every reconnect to
the broker, and when the inbox announces that it is back (issue 18: messages the broker
accepted while nobody was subscribed are gone, and waiting out a 600 s backoff is too late).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from doorstep.protocol.keys import SigningKey
from doorstep.protocol.seal import recipient_of
from doorstep.protocol.wire import (
    Topics,
    Transfer,
    pack_head,
    padded_body,
    plan_transfer,
)
from doorstep.uplink.outbox import Item

MANIFEST = -1  # the part number of a chunked artifact's head
RING_PRIORITY = 0


class Sealing:
    """What the wire needs to send anything: the device key signs each artifact's chunking
    and the status, and heads and status are sealed to the inbox's key."""

    def __init__(self, key: SigningKey, inbox_public: Ed25519PublicKey) -> None:
        self.key = key
        self.inbox_public = inbox_public
        self.inbox = recipient_of(inbox_public)


class Lane(enum.Enum):
    RING = "ring"
    PACED = "paced"


SINGLE_KINDS = frozenset({"event", "thumbnail"})


def is_single(item: Item) -> bool:
    """Events and thumbnails travel as one message (the head, with the ciphertext inside);
    snapshots and clips as a head and chunks."""
    return item.manifest.kind in SINGLE_KINDS


def is_ring(item: Item) -> bool:
    """A ring event (and a ring clip's metadata event) and the ring's thumbnail: the ring
    lane's traffic. The event is committed first, so it goes first."""
    return is_single(item) and item.manifest.priority == RING_PRIORITY


def paced_rank(item: Item) -> int:
    """Order on the paced lane before priority: notifications (events), then their pictures
    (thumbnails), then snapshots, then clips, so a ring clip's megabytes never hold up a
    motion event."""
    return {"event": 0, "thumbnail": 1, "snapshot": 2}.get(item.manifest.kind, 3)


@dataclass(frozen=True)
class Publish:
    """One message to hand to the broker; give it back to ``on_puback``. ``round`` is the
    artifact's send round when it was published: a PUBACK from an earlier round is stale."""

    topic: str
    seq: int
    part: int
    lane: Lane
    round: int = 0


@dataclass
class _Upload:
    item: Item
    chunks: int
    single: bool
    lane: Lane
    transfer: Transfer
    acked: set[int] = field(default_factory=set)
    in_flight: set[int] = field(default_factory=set)
    head: bytes = b""                 # sealed once, sent again as it is
    done_at: float | None = None      # when the last PUBACK arrived
    attempts: int = 0
    round: int = 0

    def parts(self) -> list[int]:
        if self.single:
            return [0]
        return [MANIFEST, *range(self.chunks)]

    @property
    def fully_acked(self) -> bool:
        return all(p in self.acked for p in self.parts())

    def again(self, *, whole: bool) -> bool:
        """Send again what may not have reached the inbox, with the backoff reset. ``whole``:
        every part; otherwise an artifact waiting only for its receipt goes again whole, and
        one part-way through resumes after its acknowledged chunks. True if any of it had
        been sent before."""
        sent = bool(self.acked or self.in_flight or self.attempts)
        self.attempts = 0
        self.round += 1          # PUBACKs of messages published before now no longer count
        if whole or self.fully_acked:
            self.acked.clear()
            self.done_at = None
        return sent


class Sender:
    """Feed it events; ask it what to publish. All times are from an injected clock."""

    def __init__(self, topics: Topics, sealing: Sealing, *, chunk_bytes: int, in_flight: int,
                 receipt_timeout: float, require_receipt: bool, queue_delay: float = 0.1,
                 priority_in_flight: int = 16, max_backoff: float = 600.0) -> None:
        self.topics = topics
        self.sealing = sealing
        self.chunk_bytes = chunk_bytes
        self.in_flight = in_flight
        self.queue_delay = queue_delay
        self.window = min(2, in_flight)
        # when each paced message was published, and whether the window was full with it
        self._sent_at: dict[tuple[int, int], tuple[float, bool]] = {}
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
        single = is_single(item)
        lane = Lane.RING if is_ring(item) else Lane.PACED
        transfer = plan_transfer(item.manifest.device, item.seq, item.manifest.hash(),
                                 item.size, inline=single, chunk_bytes=self.chunk_bytes)
        up = _Upload(item, chunks=1 if single else transfer.count, single=single, lane=lane,
                     transfer=transfer)
        if not single:
            up.acked.update(range(min(acked_chunks, up.chunks)))
        self._uploads[item.seq] = up

    def on_connect(self) -> int:
        """Connected (again): receipts published while we were away are lost, and a broker
        that restarted lost what it had not delivered, so everything unreceipted goes again
        now, backoff reset (a clip part-way through resumes after its acknowledged chunks).
        Returns how many artifacts had been sent before."""
        self.connected = True
        return self.resend(whole=False)

    def on_disconnect(self) -> None:
        """Unacknowledged messages may be lost with the connection: send them again."""
        self.connected = False
        self._sent_at.clear()
        for up in self._uploads.values():
            up.in_flight.clear()

    def resend(self, *, whole: bool = True) -> int:
        """Send every unreceipted artifact again now, rings first, receipt backoff reset.
        ``whole`` (the inbox is back: whatever was published while it was away is gone):
        from the first byte. Returns how many had been sent before (the rest were waiting
        their turn anyway)."""
        return sum(up.again(whole=whole) for up in self._uploads.values())

    def on_puback(self, pub: Publish, now: float) -> int | None:
        """Returns the new count of leading acknowledged chunks for persisting, or None."""
        up = self._uploads.get(pub.seq)
        if up is None:
            return None
        part = pub.part
        up.in_flight.discard(part)
        sent = self._sent_at.pop((pub.seq, part), None)
        if sent is not None and up.lane is Lane.PACED:
            self._adapt(now - sent[0], now, limited=sent[1])
        if pub.round != up.round:
            return None          # published before a resend: it goes again
        up.acked.add(part)
        if up.fully_acked and up.done_at is None:
            up.done_at = now
        if not up.single and part >= 0:
            n = 0
            while n in up.acked:
                n += 1
            return n
        return None

    def _adapt(self, delay: float, now: float, *, limited: bool = True) -> None:
        """Delay-based window: halve when messages wait longer than ``queue_delay`` (once per
        round trip, so one burst of late acks cuts once), grow by one when well under it, but
        only on a message sent with the window full (``limited``). A quick PUBACK for a lone
        event says nothing about how much more the link holds: growing on those let the
        window climb to ``in_flight`` while the link idled between visitors, and the next
        motion start's snapshot then went out as a burst of 16 chunks that queued in the
        uplink ahead of the ring that followed it (RFC 7661's rule for TCP's window)."""
        if delay > self.queue_delay:
            if now - self._last_cut > delay:
                self.window = max(1, self.window // 2)
                self._last_cut = now
        elif delay < self.queue_delay / 2 and limited:
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
        """Messages to publish now, ring lane first. Call again after each event."""
        if not self.connected:
            return []
        self._expire_receipts(now)
        out: list[Publish] = []
        uploads = sorted(self._uploads.values(),
                         key=lambda u: (u.lane is Lane.PACED, paced_rank(u.item),
                                        u.item.manifest.priority, u.item.seq))
        rings = [u for u in uploads if u.lane is Lane.RING]
        busy = sum(len(u.in_flight) for u in rings)
        for up in rings:
            if busy >= self.priority_in_flight:
                break
            if 0 not in up.acked and 0 not in up.in_flight:
                up.in_flight.add(0)
                busy += 1
                out.append(Publish(self.topics.head(up.item.seq), up.item.seq, 0, Lane.RING,
                                   up.round))
        paced = [u for u in uploads if u.lane is Lane.PACED]
        busy = sum(len(u.in_flight) for u in paced)
        sent: list[tuple[int, int]] = []
        for up in paced:             # events, snapshots, clips; highest priority, oldest first
            for part in up.parts():
                if part in up.acked or part in up.in_flight:
                    continue
                if busy >= self.window:
                    # more to send than the window lets out: what just went is window-limited
                    for key in sent:
                        self._sent_at[key] = (now, True)
                    return out
                up.in_flight.add(part)
                busy += 1
                sent.append((up.item.seq, part))
                self._sent_at[(up.item.seq, part)] = (now, False)
                out.append(Publish(self._topic(up, part), up.item.seq, part, Lane.PACED,
                                   up.round))
        return out

    def _topic(self, up: _Upload, part: int) -> str:
        if up.single or part == MANIFEST:
            return self.topics.head(up.item.seq)
        return self.topics.chunk(up.item.seq, up.transfer.chunk_bytes, part)

    def payload(self, pub: Publish) -> bytes:
        """The bytes of one message, read from the outbox file when it is sent: the head
        (sealed once per upload), or one chunk of the zero-padded ciphertext."""
        up = self._uploads.get(pub.seq)
        if up is None:
            raise KeyError(pub.seq)
        item = up.item
        t = up.transfer
        if up.single or pub.part == MANIFEST:
            if not up.head:
                inline = padded_body(item.path.read_bytes(), t.padded) if up.single else b""
                up.head = pack_head(item.envelope, t.sign(self.sealing.key),
                                    self.sealing.inbox, inline)
            return up.head
        start = pub.part * t.chunk_bytes
        with open(item.path, "rb") as f:
            f.seek(start)
            data = f.read(t.chunk_bytes)
        return padded_body(data, min(t.chunk_bytes, t.padded - start))

    def forget_in_flight(self, pub: Publish) -> None:
        """A publish call failed before reaching the socket: it may be tried again."""
        up = self._uploads.get(pub.seq)
        if up is not None:
            up.in_flight.discard(pub.part)
            self._sent_at.pop((pub.seq, pub.part), None)

    def next_deadline(self) -> float | None:
        """When a receipt timeout next falls due, so the caller knows how long to sleep."""
        times = [up.done_at + self._timeout(up) for up in self._uploads.values()
                 if up.done_at is not None and self.require_receipt]
        return min(times) if times else None

    @property
    def ring_busy(self) -> bool:
        """A ring event is waiting or unacknowledged: live view waits (uplink/live.py)."""
        return any(u.lane is Lane.RING and not u.fully_acked for u in self._uploads.values())

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
