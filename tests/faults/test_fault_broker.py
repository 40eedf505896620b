"""Faults on the broker's side, mid-upload: the broker is killed (losing what it held, since it
runs without persistence) and restarted, or frozen with SIGSTOP like a cut network and resumed.
Every artifact still reaches the inbox exactly once, and its chain has no gap."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from doorstep.broker import Mosquitto
from doorstep.uplink.mqtt import Uplink
from doorstep.uplink.sender import Lane, Publish
from tests.faults.harness import (
    check_store,
    device_outbox,
    device_uplink,
    make_party,
    partial_chunks,
    put_clip,
    put_event,
    running_inbox,
    wait_for,
)

pytestmark = pytest.mark.slow


def slow_link(uplink: Uplink, seconds_per_chunk: float) -> None:
    """Pace clip chunks like a slow home uplink, so a fault can land mid-clip."""
    payload = uplink.sender.payload

    def paced(pub: Publish) -> bytes:
        if pub.lane is Lane.PACED:
            time.sleep(seconds_per_chunk)
        return payload(pub)

    uplink.sender.payload = paced  # type: ignore[method-assign]


def test_broker_killed_mid_clip_then_restarted(tmp_path: Path, broker: Mosquitto) -> None:
    party = make_party(tmp_path / "home")
    box = device_outbox(tmp_path / "outbox", party)
    put_event(box, party)
    clip = put_clip(box, party, 1_500_000)
    put_event(box, party, "motion", priority=1)
    uplink = device_uplink(box, party, broker.port)
    slow_link(uplink, 0.01)
    store = tmp_path / "store"
    with running_inbox(store, party, broker.port):
        uplink.start()
        wait_for(lambda: partial_chunks(store, clip.seq) >= 10, 20, "the clip upload to start")
        broker.kill()
        # while the broker is down the doorbell goes on recording
        put_event(box, party)
        later = put_clip(box, party, 300_000)
        broker.start()
        wait_for(lambda: box.depth == 0, 60, "every receipt after the broker restart")
        uplink.stop()
    kinds = check_store(store, party, last_seq=later.seq, decode=False)
    assert kinds == {"event": 3, "clip": 2}


def test_network_cut_by_a_frozen_broker(tmp_path: Path, broker: Mosquitto) -> None:
    party = make_party(tmp_path / "home")
    box = device_outbox(tmp_path / "outbox", party)
    clip = put_clip(box, party, 1_000_000)
    # a short keepalive, so the frozen broker is noticed and the uplink reconnects
    uplink = device_uplink(box, party, broker.port, keepalive=1)
    slow_link(uplink, 0.01)
    store = tmp_path / "store"
    with running_inbox(store, party, broker.port):
        uplink.start()
        wait_for(lambda: partial_chunks(store, clip.seq) >= 10, 20, "the clip upload to start")
        broker.pause()
        ring = put_event(box, party)
        wait_for(lambda: not uplink.connected, 20, "the uplink to notice the cut")
        broker.resume()
        wait_for(lambda: box.depth == 0, 60, "every receipt after the network came back")
        uplink.stop()
    kinds = check_store(store, party, last_seq=ring.seq, decode=False)
    assert kinds == {"event": 1, "clip": 1}
