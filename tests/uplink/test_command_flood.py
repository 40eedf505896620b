"""A flood of commands does not hold a ring back (bench row 13 found it did): the send thread
handles one waiting command per turn, after a ring's wake and a send round, instead of every
waiting command first. A slow command handler stands in for a core too busy to check 50
forged commands a second as fast as they come."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from doorstep.broker import Mosquitto
from doorstep.protocol.age import X25519Identity
from doorstep.protocol.keys import SigningKey
from doorstep.protocol.wire import Command, seal_command
from tests.faults.harness import (
    DEVICE,
    device_outbox,
    device_uplink,
    make_party,
    put_event,
    wait_for,
)

FLOOD = 150


def test_a_ring_is_sent_before_a_backlog_of_forged_commands_is_worked_off(
        tmp_path: Path, broker: Mosquitto) -> None:
    party = make_party(tmp_path / "home")
    box = device_outbox(tmp_path / "outbox", party)
    handled: list[float] = []

    def slow(signed: bytes) -> None:
        time.sleep(0.02)                  # the gate's work on a starved core
        handled.append(time.monotonic())

    uplink = device_uplink(box, party, broker.port, receipts=False, on_command=slow)
    arrived: dict[str, int] = {}
    subscribed = threading.Event()
    watcher = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    watcher.on_message = lambda c, u, msg: arrived.setdefault(msg.topic, len(handled))
    watcher.on_subscribe = lambda *a: subscribed.set()
    watcher.connect("127.0.0.1", broker.port)
    watcher.subscribe(f"doorstep/{DEVICE}/a/#", qos=1)
    watcher.loop_start()
    forger = SigningKey.generate()
    reply = X25519Identity.generate()
    flood = [seal_command(Command(DEVICE, 10 ** 12 + i, "snapshot", time.time()).sign(forger),
                          party.device.public_key, reply.recipient) for i in range(FLOOD)]
    sender = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    sender.connect("127.0.0.1", broker.port)
    sender.loop_start()
    try:
        assert subscribed.wait(10)
        uplink.start()
        wait_for(lambda: uplink.connected, 10, "the uplink to connect")
        time.sleep(0.5)                   # its subscriptions are in place
        infos: list[Any] = [sender.publish(f"doorstep/{DEVICE}/cmd", p, qos=1) for p in flood]
        for info in infos:
            info.wait_for_publish(10)
        wait_for(lambda: len(handled) >= 5, 10, "the flood to be under way")
        ring = put_event(box, party)
        topic = f"doorstep/{DEVICE}/a/{ring.seq}/m"
        wait_for(lambda: topic in arrived, 30, "the ring event")
        # it went out within a few commands of its commit, not after the whole backlog
        assert arrived[topic] < 40, (arrived[topic], FLOOD)
        wait_for(lambda: len(handled) == FLOOD, 30, "the rest of the flood")
    finally:
        uplink.stop()
        sender.loop_stop()
        sender.disconnect()
        watcher.loop_stop()
        watcher.disconnect()
