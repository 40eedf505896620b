"""Live view end to end through a real Mosquitto: the owner's signed, sealed ``live`` command
reaches the running agent through its real command path; the live segments that come back
are ciphertext on the broker, open with the owner's identity, pass the viewer's checks and
decode with PyAV. Forged, unsigned and replayed commands and a flood of session requests are
refused with a clear log line, while the frame loop keeps going."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from doorstep.agent.wiring import build
from doorstep.bench.liveview import PythonViewer
from doorstep.broker import Mosquitto
from doorstep.capture.frames import Frame
from doorstep.config import parse_config
from doorstep.owner.command import next_counter, send_command
from doorstep.protocol.age import X25519Identity
from doorstep.protocol.connect import Broker
from doorstep.protocol.keys import SigningKey
from doorstep.protocol.kinds import Action
from doorstep.protocol.wire import Ack, Command, seal_command
from tests.faults.harness import DEVICE, agent_toml, make_party, wait_for

SESSION = "0123456789abcdef"


@pytest.mark.slow
def test_live_view_through_the_broker(tmp_path: Path, broker: Mosquitto,
                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    party = make_party(tmp_path / "home")
    cfg = parse_config(agent_toml(party, broker.port, motion=False) +
                       "\n[live]\nmax_sessions = 2\n")
    service = build(cfg)
    frames = {"n": 0}

    def on_frame(frame: Frame) -> None:
        frames["n"] += 1

    def frames_pass(n: int) -> None:
        target = frames["n"] + n
        wait_for(lambda: frames["n"] >= target, 30, f"{n} more frames")

    mqtt_cfg = Broker(host="127.0.0.1", port=broker.port)
    counter_file = tmp_path / "owner-counter.json"

    def live(session: str = SESSION, key: SigningKey = party.command,
             **params: str) -> tuple[Command, Ack | None]:
        return send_command(key, DEVICE, "live", mqtt_cfg=mqtt_cfg,
                            counter=next_counter(counter_file),
                            device_public=party.device.public_key,
                            params={"session": session, **params})

    seen: list[bytes] = []
    viewer = PythonViewer(DEVICE, SESSION, [party.owner], party.device.public_key)
    lock = threading.Lock()

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with lock:
            seen.append(bytes(msg.payload))
            if msg.topic.endswith(SESSION):
                viewer.receive(bytes(msg.payload))

    watcher = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    watcher.on_message = on_message
    subscribed = threading.Event()
    watcher.on_subscribe = lambda *a: subscribed.set()
    watcher.connect("127.0.0.1", broker.port)
    watcher.subscribe(f"doorstep/{DEVICE}/live/+", qos=0)
    watcher.loop_start()
    assert subscribed.wait(10)
    runner = threading.Thread(target=service.run, kwargs={"on_frame": on_frame,
                                                          "connect_timeout": 10})
    runner.start()
    try:
        wait_for(lambda: service.uplink is not None and service.uplink.connected, 10,
                 "the agent to connect")
        frames_pass(15)
        cmd, ack = live()
        assert ack is not None and ack.ok, ack
        wait_for(lambda: len(viewer.shown) >= 30, 30, "30 live frames at the viewer")
        with lock:
            assert not viewer.refused, viewer.refused
            assert viewer.first_index == 0
            # the broker carries ciphertext only: no MP4 box, no header in the clear
            assert all(m.startswith(b"DS2V") and b"moof" not in m and b"ftyp" not in m
                       and b"session" not in m for m in seen)
        assert service.live is not None and service.live.active == [SESSION]
        # renewing keeps the same session
        _, ack = live()
        assert ack is not None and ack.ok
        # replayed: the same sealed command again is refused by the gate's counter
        raw = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        raw.connect("127.0.0.1", broker.port)
        raw.loop_start()
        topic = f"doorstep/{DEVICE}/cmd"
        reply = X25519Identity.generate()
        caplog.clear()
        impostor = SigningKey.generate()
        other = "f" * 16
        forged = Command(DEVICE, cmd.counter + 10**6, Action.LIVE, cmd.issued,
                         params=(("session", other),))
        for payload in (seal_command(cmd.sign(party.command), party.device.public_key,
                                     reply.recipient),                        # replayed
                        seal_command(forged.sign(impostor), party.device.public_key,
                                     reply.recipient),                        # forged
                        forged.sign(party.command)):                          # unsealed
            raw.publish(topic, payload, qos=1).wait_for_publish(5)
        # a flood of session requests: one more fits (max_sessions = 2), the rest refused
        answers = []
        for i in range(12):
            _, ack = live(f"{i:016x}")
            answers.append(ack)
        assert answers[0] is not None and answers[0].ok
        refused = [a for a in answers[1:] if a is not None and not a.ok]
        assert len(refused) == 11 and all("live.max_sessions" in a.reason for a in refused)
        raw.loop_stop()
        raw.disconnect()
        messages = [r.getMessage() for r in caplog.records]
        assert any("replayed" in m for m in messages), messages
        assert any("bad signature" in m for m in messages), messages
        assert any("not a Doorstep v2 command" in m for m in messages), messages
        assert sum("refused a session" in m for m in messages) == 1, messages
        assert other not in service.live.active
        frames_pass(15)                        # the frame loop never stopped
        # the viewer stops its session; the flood's one goes at privacy-on
        _, ack = live(stop="1")
        assert ack is not None and ack.ok
        assert service.live.active == [f"{0:016x}"]
        send_command(party.command, DEVICE, "privacy_on", mqtt_cfg=mqtt_cfg,
                     counter=next_counter(counter_file), device_public=party.device.public_key)
        wait_for(lambda: service.live is not None and not service.live.active, 10,
                 "privacy-on to end live view")
        assert any("ended: privacy mode is on" in r.getMessage() for r in caplog.records)
        _, ack = live("e" * 16)
        assert ack is not None and not ack.ok and "privacy" in ack.reason
    finally:
        service.stop_event.set()
        runner.join(20)
        watcher.loop_stop()
        watcher.disconnect()
    assert not runner.is_alive()
