"""Message sizes are bounded before anything is buffered (issue 13 item 5): the broker refuses
a packet over the shipped max_packet_size, the device tells the broker in CONNECT that it
takes nothing over 64 KiB (MQTT 5 Maximum Packet Size), and the device's hand-off of incoming
messages is bounded in count, with what is dropped counted."""

from __future__ import annotations

import threading
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from doorstep.broker import MAX_PACKET_SIZE, Mosquitto
from doorstep.protocol.age import X25519Identity
from doorstep.protocol.connect import DEVICE_MAX_PACKET
from doorstep.protocol.wire import seal_command
from tests.faults.harness import DEVICE, device_outbox, device_uplink, make_party, wait_for

REPO = Path(__file__).resolve().parents[2]


def test_the_shipped_broker_config_and_the_test_broker_share_the_limit() -> None:
    shipped = (REPO / "config" / "mosquitto.conf").read_text().split("\n")
    assert f"max_packet_size {MAX_PACKET_SIZE}" in shipped
    assert "allow_anonymous false" in shipped and "listener 8883" in shipped


def test_oversized_messages_never_reach_the_device(tmp_path: Path, broker: Mosquitto) -> None:
    party = make_party(tmp_path / "home")
    box = device_outbox(tmp_path / "outbox", party)
    got: list[int] = []
    uplink = device_uplink(box, party, broker.port,
                           on_command=lambda payload: got.append(len(payload)))
    uplink.start()
    try:
        wait_for(lambda: uplink.connected, 10, "the device to connect")
        sender = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        gone = threading.Event()
        sender.on_disconnect = lambda *a: gone.set()
        sender.connect("127.0.0.1", broker.port)
        sender.loop_start()
        topic = f"doorstep/{DEVICE}/cmd"
        # over the device's own limit, under the broker's: the broker does not deliver it
        sender.publish(topic, b"x" * (DEVICE_MAX_PACKET + 1), qos=1).wait_for_publish(10)
        # over the broker's limit: refused, and the sender is disconnected
        sender.publish(topic, b"y" * (MAX_PACKET_SIZE + 1), qos=1)
        assert gone.wait(10)
        sender.loop_stop()
        # a small one still arrives: the device was never disconnected or flooded
        small = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        small.connect("127.0.0.1", broker.port)
        small.loop_start()
        sealed = seal_command(b"z" * 100, party.device.public_key,
                              X25519Identity.generate().recipient)
        small.publish(topic, sealed, qos=1).wait_for_publish(10)
        wait_for(lambda: 100 in got, 10, "the small command")
        small.loop_stop()
        small.disconnect()
        assert got == [100] and uplink.connected
    finally:
        uplink.stop()
