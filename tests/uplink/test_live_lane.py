"""The live lane (uplink/live.py): a live view segment waits while a ring is in flight, while
the last live segment is still in paho's queue, and while the device's socket holds more than
LIVE_LOWAT unsent bytes (a real TCP connection whose peer stops reading), so live view never
delays a ring by more than one segment."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path
from typing import Any

from doorstep.uplink.live import LIVE_LOWAT, LiveLane, unsent_bytes
from tests.faults.harness import device_outbox, device_uplink, make_party, put_event


class Info:
    def __init__(self) -> None:
        self.done = False

    def is_published(self) -> bool:
        return self.done


def test_live_waits_for_a_ring_and_for_its_last_segment() -> None:
    lane = LiveLane(lambda: None)
    assert lane.admit(0.0)
    lane.ring_busy(True)
    assert not lane.admit(0.02)
    lane.ring_busy(False)
    info = Info()
    lane.published(info)
    assert not lane.admit(0.02)              # the last one is still in paho's queue
    info.done = True
    assert lane.admit(0.0)
    lane.published(Info())
    lane.reset()                             # a reconnect: nothing waits any more
    assert lane.admit(0.0)


def test_live_waits_while_the_socket_holds_unsent_data() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = socket.create_connection(server.getsockname())
    peer, _ = server.accept()                # it never reads: the data stays unsent
    try:
        lane = LiveLane(lambda: client)
        assert lane.admit(0.0)
        client.setblocking(False)
        try:
            while True:
                client.send(bytes(65536))
        except BlockingIOError:
            pass
        assert unsent_bytes(client) > LIVE_LOWAT
        assert not lane.admit(0.02)
        peer.setblocking(False)
        while unsent_bytes(client) >= LIVE_LOWAT:   # the peer reads: the backlog drains
            with contextlib.suppress(BlockingIOError):
                peer.recv(1 << 20)
        assert lane.admit(1.0)
    finally:
        for s in (client, peer, server):
            s.close()


def test_a_committed_ring_holds_live_view_at_once(tmp_path: Path) -> None:
    party = make_party(tmp_path / "home")
    box = device_outbox(tmp_path / "outbox", party)
    uplink: Any = device_uplink(box, party, 1)      # never started: no thread clears it
    assert uplink.live.room()
    put_event(box, party, "ring")                    # committed: the outbox calls notify
    assert not uplink.live.room()
