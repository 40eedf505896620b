"""What the broker sees (issue 13 item 2, docs/wire.md "What the broker sees"): a running
doorbell rings, records motion, answers the owner's commands and reports its status, while a
subscriber to everything, as a curious broker operator would, keeps every topic and payload.
Nothing in them may say what kind of thing happened, when the bell rang by its manifest, or
what the status or the commands say; sizes come only in padded buckets."""

from __future__ import annotations

import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from gpiozero.pins.mock import MockFactory
from paho.mqtt.enums import CallbackAPIVersion

from doorstep.agent.wiring import build
from doorstep.broker import Mosquitto
from doorstep.config import parse_config
from doorstep.owner.command import next_counter, send_command
from doorstep.protocol.connect import Broker
from doorstep.protocol.seal import identity_of, pad_size
from doorstep.protocol.wire import HEAD_MAGIC, unpack_head
from tests.faults.harness import DEVICE, agent_toml, make_party, running_inbox, wait_for

# what version 1 showed in clear: manifest fields, status fields, actions and kinds
TELLING = [b'"kind"', b'"priority"', b'"created"', b'"parent"', b'"privacy"', b'"armed"',
           b'"health"', b'"action"', b"disarm", b"privacy_on", b'"ring"', b'"motion"',
           b'"snapshot"', b'"clip"', b'"reason"', b'"state"']


@pytest.mark.slow
def test_a_broker_operator_learns_no_kind_time_status_or_command(tmp_path: Path,
                                                                 broker: Mosquitto) -> None:
    party = make_party(tmp_path / "home")
    cfg = parse_config(agent_toml(party, broker.port, button=True, clip=(1.0, 1.0, 3.0)))
    seen: list[tuple[str, bytes]] = []
    lock = threading.Lock()

    def keep(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with lock:
            seen.append((msg.topic, bytes(msg.payload)))

    operator = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    operator.on_message = keep
    operator.connect("127.0.0.1", broker.port)
    operator.subscribe("#", qos=1)
    operator.loop_start()
    factory = MockFactory()
    service = build(cfg, pin_factory=factory)
    pin = factory.pin(int(cfg.button.pin.removeprefix("GPIO")))
    runner = threading.Thread(target=service.run, kwargs={"connect_timeout": 10})
    store = tmp_path / "store"
    counter = tmp_path / "counter.json"
    mqtt_cfg = Broker(host="127.0.0.1", port=broker.port)
    with running_inbox(store, party, broker.port):
        runner.start()
        try:
            wait_for(lambda: service.uplink is not None and service.uplink.connected, 10,
                     "the agent to connect")
            pin.drive_low()                                   # the bell rings
            pin.drive_high()
            wait_for(lambda: any(k == "ring" for k, _ in service.agent.events), 10,
                     "the ring")
            for action in ("disarm", "privacy_on", "privacy_off"):
                _, ack = send_command(party.command, DEVICE, action, mqtt_cfg=mqtt_cfg,
                                      counter=next_counter(counter),
                                      device_public=party.device.public_key)
                assert ack is not None and ack.ok, ack
            wait_for(lambda: service.outbox.depth == 0 and len(list(store.rglob("*.age"))) >= 2,
                     30, "everything receipted")
        finally:
            service.stop_event.set()
            runner.join(30)
    operator.loop_stop()
    operator.disconnect()

    topics = {t for t, _ in seen}
    assert any(t.endswith("/status") for t in topics) and any(t.endswith("/ack")
                                                              for t in topics)
    for topic, payload in seen:
        assert not any(word in topic for word in ("event", "clip", "snapshot", "ring")), topic
        if topic == "doorstep/_inbox":
            continue            # the inbox's own signed presence: online or offline, in clear
        for word in TELLING:
            assert word not in payload, (topic, word)
    # every artifact's head is sealed to the inbox key, and an event inside it is padded
    heads = [(t, p) for t, p in seen if t.startswith(f"doorstep/{DEVICE}/a/") and
             t.endswith("/m")]
    assert heads and all(p.startswith(HEAD_MAGIC) for _, p in heads)
    for _, payload in heads:
        _, _, inline = unpack_head(payload, identity_of(party.inbox))
        assert len(inline) in (0, pad_size(len(inline)))
    # and the whole body of each chunked artifact is a padded length
    bodies: dict[str, int] = {}
    for topic, payload in dict(seen).items():          # each chunk once, resent or not
        parts = topic.split("/")
        if len(parts) == 6 and parts[2] == "a":
            bodies[parts[3]] = bodies.get(parts[3], 0) + len(payload)
    assert bodies and all(size == pad_size(size) for size in bodies.values()), bodies
