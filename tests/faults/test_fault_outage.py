"""Outages that end (issue 18): the inbox away for a while, the broker killed and restarted.
Whatever the broker accepted while nobody was subscribed is gone; the device must send its
backlog again as soon as the inbox is back, rings first, not when a receipt timeout (here 600 s,
longer than any wait in these tests) runs out."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from doorstep.broker import Mosquitto
from doorstep.core.errors import SealError
from doorstep.owner.inbox import Inbox
from doorstep.owner.store import InboxStore
from doorstep.protocol.age import encrypt
from doorstep.protocol.keys import SigningKey
from doorstep.protocol.seal import pad_size
from doorstep.protocol.wire import InboxStatus, Topics
from doorstep.uplink.outbox import Item, Outbox
from tests.faults.harness import (
    DEVICE,
    Party,
    check_store,
    device_outbox,
    device_uplink,
    make_party,
    put_clip,
    put_event,
    running_inbox,
    stored_seqs,
    wait_for,
)

pytestmark = pytest.mark.slow

NEVER = 600.0   # the receipt timeout: nothing in these tests may wait for it


class Watcher:
    """A subscriber to everything under the broker's ``doorstep/`` tree, counting topics."""

    def __init__(self, port: int) -> None:
        self.topics: list[str] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *a: c.subscribe("doorstep/#", qos=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.topics.append(msg.topic)

    def saw(self, topic: str) -> int:
        with self._lock:
            return self.topics.count(topic)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def backlog(box: Outbox, party: Party) -> tuple[Item, list[Item]]:
    """What a door collects in a while: motion, its snapshot and clip, then a ring."""
    motion = put_event(box, party, "motion", priority=1)
    snapshot = box.put("snapshot", encrypt(b"\xff\xd8" + bytes(60_000), [party.owner.recipient]),
                       priority=2, parent=str(motion.seq))
    clip = put_clip(box, party, 300_000)
    ring = put_event(box, party)
    return ring, [motion, snapshot, clip, ring]


def published(watcher: Watcher, items: list[Item]) -> bool:
    """Every message of every item has been through the broker (and, with no inbox, lost).
    Events come whole in their head; snapshots and clips in chunks after it: the last chunk
    of each is the sign."""
    topics = Topics(f"doorstep/{DEVICE}/")
    for item in items:
        last = topics.head(item.seq) if item.manifest.kind == "event" else \
            topics.chunk(item.seq, 16384, (pad_size(item.size) - 1) // 16384)
        if not watcher.saw(last):
            return False
    return True


def test_the_backlog_moves_when_the_inbox_comes_back(tmp_path: Path, broker: Mosquitto,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    party = make_party(tmp_path / "home")
    box = device_outbox(tmp_path / "outbox", party)
    store = tmp_path / "store"
    uplink = device_uplink(box, party, broker.port, receipt_timeout_seconds=NEVER,
                           chunks_in_flight=16)
    watcher = Watcher(broker.port)
    try:
        with running_inbox(store, party, broker.port):
            uplink.start()
            first = put_event(box, party)
            wait_for(lambda: box.depth == 0, 20, "the first event's receipt")
        # the inbox is away: the broker accepts everything and has nobody to give it to
        ring, items = backlog(box, party)
        wait_for(lambda: published(watcher, items), 20, "the backlog to go through the broker")
        assert box.depth == len(items)
        with running_inbox(store, party, broker.port):
            wait_for(lambda: box.depth == 0, 30, "the backlog once the inbox is back")
    finally:
        uplink.stop()
        watcher.close()
    assert stored_seqs(store)[:2] == [first.seq, ring.seq]     # the ring first
    assert check_store(store, party, last_seq=ring.seq, decode=False) == {
        "event": 3, "snapshot": 1, "clip": 1}
    assert "the inbox went offline" in caplog.text
    assert "the inbox is online; resending 4 unreceipted artifact(s) now" in caplog.text


def test_a_ring_during_a_broker_restart_is_stored_when_the_inbox_is_back(
        tmp_path: Path, broker: Mosquitto) -> None:
    """The broker is killed; a ring comes while it is down. The device reconnects first and
    sends the ring to a broker with no inbox subscribed yet; the inbox reconnects later."""
    party = make_party(tmp_path / "home")
    box = device_outbox(tmp_path / "outbox", party)
    store = tmp_path / "store"
    uplink = device_uplink(box, party, broker.port, receipt_timeout_seconds=NEVER)
    inbox = Inbox(InboxStore(store, {DEVICE: party.device.public_key}), party.inbox,
                  host="127.0.0.1", port=broker.port)
    try:
        inbox.start()
        wait_for(inbox.connected.is_set, 10, "the inbox to connect")
        uplink.start()
        put_event(box, party, "motion", priority=1)
        wait_for(lambda: box.depth == 0, 20, "the first event's receipt")
        inbox.stop()
        broker.kill()
        ring = put_event(box, party)
        broker.start()
        watcher = Watcher(broker.port)
        try:
            wait_for(lambda: watcher.saw(f"doorstep/{DEVICE}/a/{ring.seq}/m") >= 1, 20,
                     "the device to send the ring to the restarted broker")
        finally:
            watcher.close()
        assert box.depth == 1
        inbox = Inbox(InboxStore(store, {DEVICE: party.device.public_key}), party.inbox,
                      host="127.0.0.1", port=broker.port)
        inbox.start()
        wait_for(lambda: box.depth == 0, 30, "the ring once the inbox is back")
    finally:
        uplink.stop()
        inbox.stop()
    assert stored_seqs(store) == [1, ring.seq]
    check_store(store, party, last_seq=ring.seq, decode=False)


def test_the_inbox_announcement_is_signed_retained_and_has_a_last_will(
        tmp_path: Path, broker: Mosquitto) -> None:
    """What a device reads on doorstep/_inbox: "online" while the inbox is subscribed,
    "offline" after a clean stop and after a kill (its will), each signed by the inbox key."""
    party = make_party(tmp_path / "home")
    assert Topics(f"doorstep/{DEVICE}/").inbox == "doorstep/_inbox"

    def retained() -> InboxStatus | None:
        got: list[bytes] = []
        done = threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        client.on_message = lambda c, u, msg: (got.append(bytes(msg.payload)), done.set())
        client.on_connect = lambda c, *a: c.subscribe("doorstep/_inbox", qos=1)
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        done.wait(2)
        client.loop_stop()
        client.disconnect()
        return InboxStatus.open(got[-1], party.inbox.public_key) if got else None

    before = time.time()
    with running_inbox(tmp_path / "store", party, broker.port):
        wait_for(lambda: (s := retained()) is not None and s.state == "online", 10,
                 "the inbox's online announcement")
    status = retained()
    assert status is not None and status.state == "offline" and status.time >= before
    with pytest.raises(SealError):      # signed by the inbox, nobody else
        InboxStatus.open(InboxStatus("online", time.time()).sign(SigningKey.generate()),
                         party.inbox.public_key)
    # killed without a word: the broker publishes its will
    proc_inbox = Inbox(InboxStore(tmp_path / "store", {DEVICE: party.device.public_key}),
                       party.inbox, host="127.0.0.1", port=broker.port)
    proc_inbox.start()
    wait_for(lambda: (s := retained()) is not None and s.state == "online", 10, "online again")
    # as if killed: its network loop stops (so nothing reconnects and announces "online"
    # again before the check, as paho would within a second) and the connection drops
    proc_inbox.client.loop_stop()
    proc_inbox.client.socket().close()
    wait_for(lambda: (s := retained()) is not None and s.state == "offline", 10, "the will")
