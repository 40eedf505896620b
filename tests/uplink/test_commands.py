"""Owner commands: signed with the owner's Ed25519 key, with a counter that only goes up. The
gate drops anything unsigned, forged, replayed, oversized or malformed with one log line, and
never raises; a running agent carries out the genuine ones (snapshot, disarm, privacy)."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from doorstep.agent.commands import CommandGate
from doorstep.agent.wiring import build
from doorstep.broker import Mosquitto
from doorstep.capture.frames import Frame
from doorstep.config import parse_config
from doorstep.owner.command import next_counter, send_command
from doorstep.owner.open import open_artifact
from doorstep.protocol.age import X25519Identity
from doorstep.protocol.connect import Broker
from doorstep.protocol.keys import SigningKey
from doorstep.protocol.seal import identity_of
from doorstep.protocol.wire import (
    MAX_SIGNAL,
    WIRE_VERSION,
    Ack,
    Command,
    canonical_json,
    open_sealed_answer,
    open_sealed_command,
    seal_command,
    sign_json,
)
from tests.faults.harness import (
    DEVICE,
    Party,
    agent_toml,
    make_party,
    running_inbox,
    wait_for,
)

DROPPED = "dropped an owner command"


def signed(key: SigningKey, counter: int, action: str = "snapshot",
           device: str = DEVICE) -> bytes:
    return Command(device, counter, action, 1.7e9).sign(key)


def gate_at(owner: SigningKey, state: Path, *, synced: bool = False, now: float = 1.7e9,
            fresh: bool = True) -> CommandGate:
    return CommandGate(owner.public_key, DEVICE, state, clock_synced=lambda: synced,
                       fresh=fresh, now=lambda: now)


def sealed(payload: bytes, party: Party, reply: X25519Identity) -> bytes:
    """A signed command as the owner's tools send it: sealed to the doorbell's key."""
    return seal_command(payload, party.device.public_key, reply.recipient)


def accepted(gate: CommandGate, payload: bytes) -> Command | None:
    """The command if the gate accepted it, else None (refused or dropped)."""
    cmd, refusal = gate.check(payload)
    return cmd if refusal is None else None


def drop_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if DROPPED in r.getMessage()]


def test_gate_accepts_in_order_and_remembers_across_restarts(tmp_path: Path) -> None:
    owner = SigningKey.generate()
    state = tmp_path / "command_counter.json"
    gate = gate_at(owner, state)
    first = accepted(gate, signed(owner, 5, "disarm"))
    assert first is not None and (first.action, first.counter) == ("disarm", 5)
    assert accepted(gate, signed(owner, 6, "privacy_on")) is not None
    restarted = gate_at(owner, state)
    assert accepted(restarted, signed(owner, 6, "privacy_on")) is None      # replay after reboot
    assert accepted(restarted, signed(owner, 7, "arm")) is not None


@pytest.mark.parametrize("name, payload, reason", [
    ("unsigned", json.dumps({"body": {"v": 1, "device": DEVICE, "counter": 9,
                                      "action": "disarm", "issued": 1.0}}).encode(),
     "malformed"),
    ("malformed", b"\xff\x00 not json", "malformed"),
    ("not an object", b"[1, 2, 3]", "malformed"),
    ("nested too deep", b"[" * (MAX_SIGNAL - 1), "malformed"),
    ("oversized", b" " * (MAX_SIGNAL + 1), "over the"),
])
def test_gate_drops_bad_commands_with_one_log_line(tmp_path: Path, name: str, payload: bytes,
                                                   reason: str,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    owner = SigningKey.generate()
    gate = gate_at(owner, tmp_path / "c.json")
    assert accepted(gate, payload) is None
    lines = drop_lines(caplog)
    assert len(lines) == 1 and reason in lines[0], lines
    assert gate.counter == 0


def test_gate_drops_forged_replayed_foreign_and_unknown_commands(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    owner, impostor = SigningKey.generate(), SigningKey.generate()
    gate = gate_at(owner, tmp_path / "c.json")
    assert accepted(gate, signed(owner, 10)) is not None
    cases = [
        (signed(impostor, 11), "bad signature"),                       # forged
        (signed(owner, 10), "replayed"),                               # replayed
        (signed(owner, 3), ""),            # an old one: the same kind of reason, no new line
        (signed(owner, 12, device="garage"), "not us"),                # for another device
        (sign_json(owner, {"v": WIRE_VERSION, "device": DEVICE, "counter": 13,
                           "action": "unlock_door", "issued": 1.0}), "unknown action"),
        (sign_json(owner, {"v": 2, "device": DEVICE, "counter": 14, "action": "arm",
                           "issued": 1.0}), "unsupported version"),
        (sign_json(owner, {"v": WIRE_VERSION, "device": DEVICE, "counter": 1e308 * 10,
                           "action": "arm", "issued": 1.0}), "bad field"),
    ]
    for payload, reason in cases:
        caplog.clear()
        assert accepted(gate, payload) is None
        lines = drop_lines(caplog)
        if reason:
            assert len(lines) == 1 and reason in lines[0], (reason, lines)
        else:
            assert lines == [], lines
    caplog.clear()                     # the same bad command again: dropped without a line
    assert accepted(gate, signed(impostor, 11)) is None and drop_lines(caplog) == []
    # a signature over different bytes than the body: tampering after signing
    doc = json.loads(signed(owner, 20, "snapshot"))
    doc["body"]["action"] = "privacy_off"
    assert accepted(gate, json.dumps(doc).encode()) is None
    assert gate.counter == 10
    assert canonical_json(doc["body"])  # the tampered body itself is well-formed


def test_counter_file_only_goes_up(tmp_path: Path) -> None:
    f = tmp_path / "counter.json"
    a = next_counter(f, now=1000.0)
    b = next_counter(f, now=999.0)          # the owner's clock went back
    assert (a, b) == (1_000_000, 1_000_001)
    assert json.loads(f.read_text())["counter"] == b


@pytest.mark.slow
def test_commands_through_the_broker_to_a_running_agent(tmp_path: Path, broker: Mosquitto,
                                                        capsys: pytest.CaptureFixture[str],
                                                        caplog: pytest.LogCaptureFixture
                                                        ) -> None:
    caplog.set_level(logging.INFO)
    party = make_party(tmp_path / "home")
    cfg = parse_config(agent_toml(party, broker.port, clip=(1.0, 1.0, 3.0)))
    service = build(cfg)
    assert service.agent.detector is not None
    detector_updates = {"n": 0}
    update = service.agent.detector.update

    def counting_update(*args: Any) -> Any:
        detector_updates["n"] += 1
        return update(*args)

    service.agent.detector.update = counting_update  # type: ignore[method-assign,assignment]
    frames_seen = {"n": 0}

    def on_frame(frame: Frame) -> None:
        frames_seen["n"] += 1

    def frames_pass(n: int) -> None:
        target = frames_seen["n"] + n
        wait_for(lambda: frames_seen["n"] >= target, 30, f"{n} more frames")

    mqtt_cfg = Broker(host="127.0.0.1", port=broker.port)
    counter_file = tmp_path / "owner-counter.json"

    def command(action: str, key: SigningKey = party.command) -> Command:
        cmd, ack = send_command(key, DEVICE, action, mqtt_cfg=mqtt_cfg,
                                counter=next_counter(counter_file),
                                device_public=party.device.public_key)
        assert ack is not None and ack.ok and ack.counter == cmd.counter, ack
        return cmd

    store = tmp_path / "store"
    runner = threading.Thread(target=service.run, kwargs={"on_frame": on_frame,
                                                          "connect_timeout": 10})
    with running_inbox(store, party, broker.port):
        runner.start()
        try:
            wait_for(lambda: service.uplink is not None and service.uplink.connected, 10,
                     "the agent to connect")
            frames_pass(5)
            # snapshot now: a sealed snapshot reaches the inbox, with its "snapshot" event
            snap = command("snapshot")
            wait_for(lambda: owner_snapshot(store, party) is not None, 20,
                     "the owner's snapshot at the inbox")
            # a replay of that command, a forgery, and junk: nothing happens, one line each
            raw = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
            raw.connect("127.0.0.1", broker.port)
            raw.loop_start()
            topic = f"doorstep/{DEVICE}/cmd"
            caplog.clear()
            reply = X25519Identity.generate()
            for payload in (sealed(snap.sign(party.command), party, reply),     # replayed
                            sealed(signed(SigningKey.generate(), snap.counter + 50,
                                          "privacy_on"), party, reply),        # forged
                            snap.sign(party.command),                     # genuine, unsealed
                            b"[" * 4000, b"\x00garbage"):
                raw.publish(topic, payload, qos=1).wait_for_publish(5)
            raw.loop_stop()
            raw.disconnect()
            # disarm: the detector stops (and the junk above did not stop the uplink)
            command("disarm")
            wait_for(lambda: not service.agent.armed, 20, "disarm to take effect")
            lines = drop_lines(caplog)
            assert len([x for x in lines if "replayed" in x]) == 1, lines
            assert len([x for x in lines if "bad signature" in x]) == 1, lines
            assert len(lines) == 2, lines
            # the three unsealed ones never reach the gate: the uplink drops them, one line
            unsealed = [r.getMessage() for r in caplog.records
                        if "not a Doorstep v2 command" in r.getMessage()]
            assert len(unsealed) == 1, unsealed
            assert not service.agent.privacy                 # the forged privacy_on did nothing
            assert owner_snapshot_count(store, party) == 1   # the replayed snapshot did nothing
            frames_pass(2)
            updates = detector_updates["n"]
            frames_pass(10)
            assert detector_updates["n"] == updates
            # privacy on: frames are dropped and no clip is recorded, even with motion armed
            command("arm")
            wait_for(lambda: service.agent.armed, 20, "arm to take effect")
            frames_pass(20)
            command("privacy_on")
            wait_for(lambda: service.agent.privacy, 20, "privacy to take effect")
            frames_pass(2)
            recorded, clips = service.agent.frames, service.outbox.stats()["last_seq"]
            frames_pass(20)
            assert service.agent.frames == recorded
            assert service.outbox.stats()["last_seq"] == clips
            assert service.agent._clip is None
            # `doorstep cmd` waits for the doorbell's signed answer: a snapshot in privacy
            # mode is refused, and the command line says why and exits non-zero
            args = cmd_parser().parse_args([
                "cmd", "snapshot", "--key", str(party.command_key_file), "--device", DEVICE,
                "--device-key", party.device.public_text(), "--host", "127.0.0.1", "--no-tls",
                "--port", str(broker.port), "--counter-file", str(counter_file)])
            assert args.func(args) == 1
            assert "refused snapshot: privacy mode is on" in capsys.readouterr().err
            # a genuine command replayed: answered with a signed refusal naming the replay
            replay = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
            answers: list[Ack] = []
            replay.on_message = lambda c, u, m: answers.append(Ack.open(
                open_sealed_answer(bytes(m.payload), reply), party.device.public_key))
            listening = threading.Event()
            replay.on_subscribe = lambda *a: listening.set()
            replay.connect("127.0.0.1", broker.port)
            replay.subscribe(f"doorstep/{DEVICE}/ack", qos=1)
            replay.loop_start()
            assert listening.wait(10)
            replay.publish(f"doorstep/{DEVICE}/cmd", sealed(snap.sign(party.command), party,
                                                            reply), qos=1).wait_for_publish(5)
            wait_for(lambda: any(a.counter == snap.counter for a in answers), 10,
                     "the refusal of the replay")
            replay.loop_stop()
            replay.disconnect()
            (refusal,) = [a for a in answers if a.counter == snap.counter]
            assert not refusal.ok and "replayed" in refusal.reason
        finally:
            service.stop_event.set()
            runner.join(20)
    assert not runner.is_alive()


def owner_events(store: Path, party: Any) -> list[tuple[int, dict[str, Any]]]:
    events = []
    for path in sorted((store / DEVICE).glob("*.event.age")):
        manifest, plain = open_artifact(path, [party.owner])
        events.append((manifest.seq, json.loads(plain)))
    return events


def owner_snapshot_count(store: Path, party: Any) -> int:
    return sum(1 for _, body in owner_events(store, party)
               if body["type"] == "snapshot" and body["trigger"] == "owner")


def owner_snapshot(store: Path, party: Any) -> bytes | None:
    """The JPEG of the snapshot the owner asked for, once both it and its event arrived."""
    for seq, body in owner_events(store, party):
        if body["type"] == "snapshot" and body["trigger"] == "owner":
            for path in (store / DEVICE).glob("*.snapshot.age"):
                manifest, jpeg = open_artifact(path, [party.owner])
                if manifest.parent == str(seq):
                    assert jpeg.startswith(b"\xff\xd8")
                    return jpeg
    return None


def cmd_parser() -> Any:
    import argparse

    from doorstep.owner import command as cmd_module
    parser = argparse.ArgumentParser(prog="doorstep")
    cmd_module.register(parser.add_subparsers())
    return parser


@pytest.mark.slow
def test_doorstep_cmd_signs_and_publishes(tmp_path: Path, broker: Mosquitto) -> None:
    import argparse

    from doorstep.owner import command as cmd_module

    party = make_party(tmp_path / "home")
    got: list[bytes] = []
    watcher = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    watcher.on_message = lambda c, u, msg: got.append(bytes(msg.payload))
    watcher.connect("127.0.0.1", broker.port)
    watcher.subscribe(f"doorstep/{DEVICE}/cmd", qos=1)
    watcher.loop_start()
    parser = argparse.ArgumentParser(prog="doorstep")
    cmd_module.register(parser.add_subparsers())
    counter_file = tmp_path / "counter.json"
    try:
        for action in ("disarm", "privacy_on"):
            args = parser.parse_args(["cmd", action, "--key", str(party.command_key_file),
                                      "--device", DEVICE, "--host", "127.0.0.1", "--no-tls",
                                      "--device-key", party.device.public_text(),
                                      "--port", str(broker.port),
                                      "--counter-file", str(counter_file),
                                      "--no-wait"])
            assert args.func(args) == 0
        wait_for(lambda: len(got) == 2, 10, "both commands")
    finally:
        watcher.loop_stop()
        watcher.disconnect()
    gate = gate_at(party.command, tmp_path / "device-counter.json")
    # sealed: the broker saw neither action; the doorbell opens them with its own key
    assert not any(b"disarm" in p or b"privacy" in p for p in got)
    taken = [accepted(gate, open_sealed_command(p, identity_of(party.device))[0]) for p in got]
    assert [c.action for c in taken if c is not None] == ["disarm", "privacy_on"]
    assert json.loads(counter_file.read_text())["counter"] == gate.counter


# -- replay protection fails closed (issue 13, item 7) -----------------------------------------

def test_a_lost_counter_refuses_every_command_until_the_clock_sets_a_new_floor(
        tmp_path: Path) -> None:
    owner = SigningKey.generate()
    state = tmp_path / "command_counter.json"
    now = 1.8e9
    gate = gate_at(owner, state, synced=True, now=now)
    old = Command(DEVICE, int(now * 1000) - 5000, "privacy_off", now - 5).sign(owner)
    assert accepted(gate, old) is not None
    for damage in ("delete", "corrupt"):
        if damage == "delete":
            state.unlink()
        else:
            state.write_text("{not json")
        # the clock is not synchronised: nothing can rule a replay out, so nothing passes
        blind = gate_at(owner, state, synced=False, now=now, fresh=False)
        cmd, refusal = blind.check(old)
        assert cmd is not None and refusal is not None and "replay state" in refusal
        fresh_one = Command(DEVICE, int(now * 1000) + 1, "arm", now).sign(owner)
        assert blind.check(fresh_one)[1] is not None
        # synchronised: a new floor from the clock; the old command is still refused, and
        # so is anything issued before the floor
        gate = gate_at(owner, state, synced=True, now=now, fresh=False)
        assert gate.lost is not None
        assert accepted(gate, old) is None
        assert accepted(gate, fresh_one) is None
        later = now + 400
        gate = gate_at(owner, state, synced=True, now=later, fresh=False)
        assert gate.lost is None                        # the floor was stored
        new = Command(DEVICE, int(later * 1000), "arm", later).sign(owner)
        assert accepted(gate, new) is not None


def test_a_fresh_doorbell_has_nothing_to_lose(tmp_path: Path) -> None:
    owner = SigningKey.generate()
    gate = gate_at(owner, tmp_path / "c.json", fresh=True)
    assert gate.lost is None and accepted(gate, signed(owner, 1)) is not None


def test_issued_far_from_the_synchronised_clock_is_refused(tmp_path: Path) -> None:
    owner = SigningKey.generate()
    now = 1.8e9
    gate = gate_at(owner, tmp_path / "c.json", synced=True, now=now)
    stale = Command(DEVICE, int(now * 1000), "privacy_off", now - 3600).sign(owner)
    cmd, refusal = gate.check(stale)
    assert cmd is not None and refusal is not None and "-3600 s" in refusal
    # a counter written by an owner's clock a year ahead would lock the owner out for a
    # year if it were accepted: it is refused, and the counter does not move
    ahead = Command(DEVICE, int((now + 3.2e7) * 1000), "arm", now).sign(owner)
    cmd, refusal = gate.check(ahead)
    assert refusal is not None and "ahead" in refusal and gate.counter == 0
    assert accepted(gate, Command(DEVICE, int(now * 1000), "arm", now).sign(owner))
    # unsynchronised, the issued time cannot be judged; the counter still must go up
    blind = gate_at(owner, tmp_path / "c.json", synced=False, now=now)
    assert accepted(blind, Command(DEVICE, int(now * 1000) + 1, "arm", now - 3600).sign(owner))


def test_a_counter_that_cannot_be_stored_refuses_the_command(tmp_path: Path) -> None:
    owner = SigningKey.generate()
    state = tmp_path / "gone" / "c.json"       # its directory does not exist: the write fails
    gate = gate_at(owner, state)
    cmd, refusal = gate.check(signed(owner, 5))
    assert cmd is not None and refusal is not None and "could not store" in refusal
    assert gate.counter == 0


def test_doorstep_cmd_will_not_send_a_password_in_clear_over_the_network(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "owner-command.key"
    SigningKey.generate().save(key)
    base = ["cmd", "arm", "--key", str(key), "--device", DEVICE, "--no-wait", "--port", "1",
            "--host", "broker.example.net", "--no-tls",
            "--device-key", SigningKey.generate().public_text()]
    assert cmd_parser().parse_args(base).func(cmd_parser().parse_args(base)) == 1
    err = capsys.readouterr().err
    assert "TLS is off for broker.example.net" in err and "--insecure-no-tls" in err
