"""The upload scheduler: lanes, bounded chunks in flight, resume, receipts and their timeout."""

from __future__ import annotations

import itertools
from pathlib import Path

from doorstep.protocol.keys import SigningKey
from doorstep.protocol.seal import identity_of, pad_size
from doorstep.protocol.wire import Topics, Transfer, unpack_head
from doorstep.uplink.outbox import Item, Outbox
from doorstep.uplink.sender import MANIFEST, Lane, Sealing, Sender

DEVICE_KEY = SigningKey.generate()
INBOX_KEY = SigningKey.generate()
SEALING = Sealing(DEVICE_KEY, INBOX_KEY.public_key)


def opened_head(payload: bytes) -> tuple[bytes, Transfer, bytes]:
    """What the inbox reads in a head: the envelope, the checked chunking, the inline bytes."""
    envelope, transfer, inline = unpack_head(payload, identity_of(INBOX_KEY))
    return envelope, Transfer.open(transfer, DEVICE_KEY.public_key), inline


def setup(tmp_path: Path, require_receipt: bool = True) -> tuple[Outbox, Sender]:
    box = Outbox(tmp_path, device="d", key=DEVICE_KEY, quota_bytes=10**8)
    sender = Sender(Topics("doorstep/d/"), SEALING, chunk_bytes=1000, in_flight=2,
                    receipt_timeout=10, require_receipt=require_receipt)
    sender.on_connect()
    return box, sender


def clip(box: Outbox, size: int = 4500) -> Item:
    return box.put("clip", bytes(range(256)) * (size // 256) + b"x" * (size % 256), priority=3)


def test_event_jumps_ahead_of_a_clip_in_progress(tmp_path: Path) -> None:
    box, sender = setup(tmp_path)
    c = clip(box)
    sender.add(c)
    first = sender.next_publishes(0)
    assert [(p.part, p.lane) for p in first] == [(MANIFEST, Lane.PACED), (0, Lane.PACED)]
    ev = box.put("event", b"ring!", priority=0)
    sender.add(ev)
    nxt = sender.next_publishes(0)
    # the clip is at its in-flight limit; the event goes out at once all the same
    assert [(p.seq, p.topic) for p in nxt] == [(ev.seq, f"doorstep/d/a/{ev.seq}/m")]
    envelope, transfer, inline = opened_head(sender.payload(nxt[0]))
    assert envelope == ev.envelope and transfer.inline
    assert inline == b"ring!" + bytes(pad_size(5) - 5)     # padded to its bucket


def test_chunks_are_bounded_and_reassemble(tmp_path: Path) -> None:
    box, sender = setup(tmp_path)
    c = clip(box)
    sender.add(c)
    received: dict[int, bytes] = {}
    while True:
        pubs = sender.next_publishes(0)
        assert len(pubs) <= 2
        if not pubs:
            break
        for p in pubs:
            data = sender.payload(p)
            if p.part == MANIFEST:
                env, t, inline = opened_head(data)
                assert (env, t.chunk_bytes, t.count, t.padded, inline) == \
                    (c.envelope, 1000, 5, pad_size(4500), b"")
            else:
                assert p.topic == f"doorstep/d/a/{c.seq}/1000/{p.part}"
                received[p.part] = data
            sender.on_puback(p, 0)
    body = b"".join(received[i] for i in range(5))
    assert body[:4500] == c.path.read_bytes() and not any(body[4500:])


def test_resume_skips_acknowledged_chunks(tmp_path: Path) -> None:
    box, sender = setup(tmp_path)
    c = clip(box)
    sender.add(c, acked_chunks=3)
    parts = []
    while pubs := sender.next_publishes(0):
        for p in pubs:
            parts.append(p.part)
            sender.on_puback(p, 0)
    assert parts == [MANIFEST, 3, 4]


def test_disconnect_resends_unacknowledged(tmp_path: Path) -> None:
    box, sender = setup(tmp_path)
    sender.add(clip(box))
    pubs = sender.next_publishes(0)
    sender.on_puback(pubs[0], 0)
    sender.on_disconnect()
    assert sender.next_publishes(0) == []
    sender.on_connect()
    assert [p.part for p in sender.next_publishes(0)] == [0, 1]


def test_receipt_removes_and_timeout_resends(tmp_path: Path) -> None:
    box, sender = setup(tmp_path)
    ev = box.put("event", b"e", priority=0)
    sender.add(ev)
    (p,) = sender.next_publishes(0)
    sender.on_puback(p, 100.0)
    assert sender.finished(100.0) == []          # a PUBACK alone is not enough
    assert sender.next_publishes(105.0) == []
    assert [q.seq for q in sender.next_publishes(110.0)] == [ev.seq]   # no receipt: again
    assert not sender.on_receipt(ev.seq, "0" * 64)                    # wrong hash
    assert sender.on_receipt(ev.seq, ev.manifest.sha256)
    assert sender.pending == 0


def test_without_an_inbox_key_pubacks_finish_an_artifact(tmp_path: Path) -> None:
    box, sender = setup(tmp_path, require_receipt=False)
    ev = box.put("event", b"e", priority=0)
    sender.add(ev)
    (p,) = sender.next_publishes(0)
    sender.on_puback(p, 0)
    assert sender.finished(0) == [ev.seq]


def drain_with_delay(sender: Sender, delay: float, start: float = 0.0,
                     rounds: int = 40) -> list[int]:
    """Publish and acknowledge round after round, each PUBACK ``delay`` after its publish;
    return the window after each round."""
    now = start
    windows = []
    for _ in range(rounds):
        pubs = [p for p in sender.next_publishes(now) if p.lane is Lane.PACED]
        if not pubs:
            break
        now += delay
        for p in pubs:
            sender.on_puback(p, now)
        windows.append(sender.window)
    return windows


def test_window_grows_on_a_fast_link_and_shrinks_on_a_slow_one(tmp_path: Path) -> None:
    box = Outbox(tmp_path, device="d", key=DEVICE_KEY, quota_bytes=10**8)
    sender = Sender(Topics("doorstep/d/"), SEALING, chunk_bytes=1000, in_flight=8,
                    receipt_timeout=10, require_receipt=True, queue_delay=0.1)
    sender.on_connect()
    sender.add(box.put("clip", b"x" * 200_000, priority=3))
    fast = drain_with_delay(sender, 0.01)
    assert fast[-1] == 8                       # a fast link fills the pipe, up to the maximum
    slow = drain_with_delay(sender, 0.4, start=100.0)
    assert slow[-1] == 1                       # chunks queue behind each other: back to one
    assert all(b <= a for a, b in itertools.pairwise(slow))
    # a ring now waits behind at most one chunk of clip data
    sender.add(box.put("event", b"ring", priority=0))
    pubs = sender.next_publishes(200.0)
    assert pubs[0].lane is Lane.RING


def test_one_burst_of_late_acks_halves_the_window_once(tmp_path: Path) -> None:
    box = Outbox(tmp_path, device="d", key=DEVICE_KEY, quota_bytes=10**8)
    sender = Sender(Topics("doorstep/d/"), SEALING, chunk_bytes=1000, in_flight=8,
                    receipt_timeout=10, require_receipt=True, queue_delay=0.1)
    sender.on_connect()
    sender.add(box.put("clip", b"x" * 200_000, priority=3))
    drain_with_delay(sender, 0.01)
    assert sender.window == 8
    pubs = sender.next_publishes(50.0)
    for p in pubs:                             # the whole window comes back late, together
        sender.on_puback(p, 50.5)
    assert sender.window == 4


# -- issue 18: a ring overtakes snapshots; outages end at once --------------------------------
def test_a_ring_overtakes_a_motion_snapshot_not_yet_on_the_wire(tmp_path: Path) -> None:
    """A visitor sets off motion, then presses the bell: the motion event and its 111 KB
    snapshot were committed first, but only what is already handed to the broker (one window
    of small messages) goes before the ring; the snapshot travels in chunks behind it."""
    box, sender = setup(tmp_path)
    motion = box.put("event", b"m" * 900, priority=1)
    snapshot = box.put("snapshot", b"s" * 111_000, priority=2, parent=str(motion.seq))
    sender.add(motion)
    sender.add(snapshot)
    handed = sender.next_publishes(0)
    ring = box.put("event", b"ring!", priority=0)
    sender.add(ring)
    nxt = sender.next_publishes(0)
    assert [(p.seq, p.lane) for p in nxt] == [(ring.seq, Lane.RING)]
    ahead = sum(len(sender.payload(p)) for p in handed)
    assert ahead <= sender.window * 3500    # a window of heads and chunks, not the snapshot
    # the snapshot still arrives whole, as a chunked artifact
    parts: dict[int, bytes] = {}
    pending = handed + nxt
    while pending:
        for p in pending:
            if p.seq == snapshot.seq:
                parts[p.part] = sender.payload(p)
            sender.on_puback(p, 0)
        pending = sender.next_publishes(0)
    env, t, _ = opened_head(parts.pop(MANIFEST))
    assert env == snapshot.envelope and (t.chunk_bytes, t.count) == (1000, -(-t.padded // 1000))
    body = b"".join(parts[i] for i in range(t.count))
    assert body[:snapshot.size] == snapshot.path.read_bytes()


def publish_all(sender: Sender, now: float) -> list[int]:
    """Publish and acknowledge everything due; the seqs in publishing order (once each)."""
    order: list[int] = []
    while pubs := sender.next_publishes(now):
        for p in pubs:
            if p.seq not in order:
                order.append(p.seq)
            sender.on_puback(p, now)
    return order


def test_a_reconnect_resends_what_awaits_a_receipt_with_the_backoff_reset(tmp_path: Path
                                                                         ) -> None:
    box, sender = setup(tmp_path)
    ev = box.put("event", b"e", priority=1)
    sender.add(ev)
    now = 0.0
    for attempt in range(4):        # no receipt: 10 s, 20 s, 40 s, 80 s between sends
        assert publish_all(sender, now) == [ev.seq]
        now += 10 * 2 ** attempt
    assert publish_all(sender, now - 1) == []
    assert sender.next_deadline() == now - 80 + 160 - 80   # the fifth wait would be 160 s
    sender.on_disconnect()
    sender.on_connect()
    assert publish_all(sender, now) == [ev.seq]             # at once, not in 160 s
    assert sender.next_deadline() == now + 10                # and the backoff starts over


def test_the_inbox_coming_back_resends_everything_whole_rings_first(tmp_path: Path) -> None:
    """While the inbox was away the broker accepted everything and dropped it. When it is
    back, every unreceipted artifact goes again at once, from its first byte, rings first."""
    box, sender = setup(tmp_path)
    c = clip(box)
    motion = box.put("event", b"m", priority=1)
    ring = box.put("event", b"r", priority=0)
    for item in (c, motion, ring):
        sender.add(item)
    half = sender.next_publishes(0)            # the ring, the motion event, the clip manifest
    for p in half:
        sender.on_puback(p, 0)
    in_flight = sender.next_publishes(1)       # part-way through the clip
    assert [p.part for p in in_flight] == [0, 1]
    assert sender.resend() == 3
    for p in in_flight:                        # acknowledged, but from before the resend
        sender.on_puback(p, 1)
    again = sender.next_publishes(2)
    assert (again[0].seq, again[0].lane) == (ring.seq, Lane.RING)
    assert [(p.seq, p.part) for p in again[1:]] == [(motion.seq, 0), (c.seq, MANIFEST)]


def test_a_puback_from_before_a_resend_does_not_count(tmp_path: Path) -> None:
    box, sender = setup(tmp_path)
    ev = box.put("event", b"e", priority=1)
    sender.add(ev)
    (old,) = sender.next_publishes(0)
    sender.resend()                 # the inbox came back while the message was in flight
    sender.on_puback(old, 0.1)      # the broker had it, but perhaps nobody was subscribed
    (new,) = sender.next_publishes(0.2)
    assert new.seq == ev.seq and new.round > old.round


def test_a_motion_event_never_waits_behind_a_ring_clip(tmp_path: Path) -> None:
    """Off the ring lane, notifications go before pictures and pictures before clips, whatever
    their priority: a ring clip's megabytes do not hold up the next visitor's motion event."""
    box, sender = setup(tmp_path)
    ring_clip = box.put("clip", b"c" * 5000, priority=0)
    snapshot = box.put("snapshot", b"s" * 1500, priority=2)
    motion = box.put("event", b"m", priority=1)
    for item in (ring_clip, snapshot, motion):
        sender.add(item)
    order = publish_all(sender, 0)
    assert order == [motion.seq, snapshot.seq, ring_clip.seq]


def test_a_ring_thumbnail_follows_its_event_on_the_ring_lane_whole(tmp_path: Path) -> None:
    """Issue 13, item 13: the ring event goes alone and first; its picture follows on the ring
    lane as one message, ahead of a clip's chunks already queued, and never as chunks."""
    box, sender = setup(tmp_path)
    sender.add(clip(box))
    sender.next_publishes(0)                      # the clip has its window on the wire
    ring = box.put("event", b"r" * 200, priority=0)
    thumb = box.put("thumbnail", b"t" * 20_000, priority=0, parent=str(ring.seq))
    sender.add(ring)
    sender.add(thumb)
    nxt = sender.next_publishes(0)
    assert [(p.seq, p.part, p.lane) for p in nxt] == [(ring.seq, 0, Lane.RING),
                                                      (thumb.seq, 0, Lane.RING)]
    _, t, inline = opened_head(sender.payload(nxt[1]))
    assert t.inline and inline[:20_000] == thumb.path.read_bytes()


def test_a_motion_thumbnail_goes_after_events_and_before_snapshots(tmp_path: Path) -> None:
    box, sender = setup(tmp_path)
    snapshot = box.put("snapshot", b"s" * 1500, priority=1)
    thumb = box.put("thumbnail", b"t" * 1500, priority=1)
    motion = box.put("event", b"m", priority=1)
    for item in (snapshot, thumb, motion):
        sender.add(item)
    assert publish_all(sender, 0) == [motion.seq, thumb.seq, snapshot.seq]


def test_lone_events_on_an_idle_link_do_not_grow_the_window(tmp_path: Path) -> None:
    """Between visitors only small events flow, one at a time, and each is acknowledged
    quickly: that says nothing about how much more the link holds, so the window stays where
    it was, and the next motion start's snapshot goes out a window at a time, not as a burst
    that would queue in the uplink ahead of the ring that follows it."""
    box = Outbox(tmp_path, device="d", key=DEVICE_KEY, quota_bytes=10**8)
    sender = Sender(Topics("doorstep/d/"), SEALING, chunk_bytes=1000, in_flight=16,
                    receipt_timeout=10, require_receipt=True, queue_delay=0.1)
    sender.on_connect()
    start = sender.window
    now = 0.0
    for _ in range(30):                        # a motion event every few seconds, all day
        sender.add(box.put("event", b"m" * 300, priority=1))
        (pub,) = sender.next_publishes(now)
        sender.on_puback(pub, now + 0.005)     # a quick PUBACK: the link is idle
        sender.on_receipt(pub.seq, box.items()[-1].manifest.sha256)
        now += 5.0
    assert sender.window == start
    snapshot = box.put("snapshot", b"s" * 20_000, priority=1)
    sender.add(snapshot)
    assert len(sender.next_publishes(now)) == start   # a window's worth, not 16 chunks


def test_a_full_window_on_a_fast_link_still_grows_every_round(tmp_path: Path) -> None:
    box = Outbox(tmp_path, device="d", key=DEVICE_KEY, quota_bytes=10**8)
    sender = Sender(Topics("doorstep/d/"), SEALING, chunk_bytes=1000, in_flight=16,
                    receipt_timeout=10, require_receipt=True, queue_delay=0.1)
    sender.on_connect()
    sender.add(box.put("clip", b"x" * 200_000, priority=3))
    assert drain_with_delay(sender, 0.01, rounds=4) == [4, 8, 16, 16]   # doubling, as before
