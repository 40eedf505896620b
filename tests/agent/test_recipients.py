"""Enrolled household devices (issue 14): a signed add_recipient from the owner's command key
makes everything sealed from then on open with the new identity too, outlives a restart, and
gives the member's key the operational commands, never the owner-only ones."""

from __future__ import annotations

import json
from pathlib import Path

from gpiozero.pins.mock import MockFactory

from doorstep.agent.commands import CommandGate
from doorstep.agent.recipients import RECIPIENTS_FILE
from doorstep.agent.service import Service
from doorstep.agent.wiring import build
from doorstep.config import parse_config
from doorstep.protocol.age import X25519Identity, decrypt
from doorstep.protocol.keys import SigningKey
from doorstep.protocol.kinds import Action, EventType, Priority
from doorstep.protocol.wire import Ack, Command
from tests.agent.test_clips import config, synthetic_video
from tests.conftest import Keys


def wired(tmp_path: Path, keys: Keys) -> Service:
    video = tmp_path / "still.mp4"
    if not video.exists():
        synthetic_video(video, 1, None)
    text = config(tmp_path, keys, video, motion=False).replace(
        "[camera]", f'command_key = "{keys.command.public_text()}"\n[camera]')
    return build(parse_config(text), pin_factory=MockFactory(), connect=False)


def member_command(keys: Keys, action: Action, counter: int, identity: X25519Identity,
                   member: SigningKey, signer: SigningKey | None = None) -> bytes:
    params = (("key", member.public_text()), ("label", "phone"),
              ("recipient", str(identity.recipient)))
    return Command("test", counter, action, 0.0, params).sign(signer or keys.command)


def test_add_recipient_seals_new_artifacts_for_the_member(tmp_path: Path, keys: Keys) -> None:
    phone, phone_key = X25519Identity.generate(), SigningKey.generate()
    service = wired(tmp_path, keys)
    answers: list[Ack] = []
    service.commands._reply = lambda p: answers.append(Ack.open(p, keys.device.public_key))
    before = service.agent.sealer.event(EventType.RING, {}, priority=Priority.RING)
    service.commands.on_payload(member_command(keys, Action.ADD_RECIPIENT, 1, phone,
                                               phone_key))
    assert [(a.counter, a.ok) for a in answers] == [(1, True)], answers
    after = service.agent.sealer.event(EventType.RING, {}, priority=Priority.RING)
    # from then on, both the owner and the phone open what is sealed; before, only the owner
    assert json.loads(decrypt(after.path.read_bytes(), [phone]))["type"] == "ring"
    assert json.loads(decrypt(after.path.read_bytes(), [keys.owner]))["type"] == "ring"
    try:
        decrypt(before.path.read_bytes(), [phone])
        raise AssertionError("the phone opened a recording made before it was added")
    except ValueError:
        pass
    stored = json.loads((tmp_path / "data" / RECIPIENTS_FILE).read_text())
    assert [m["recipient"] for m in stored["members"]] == [str(phone.recipient)]
    service.close()

    # a restart keeps the member; removing it applies to new recordings
    service = wired(tmp_path, keys)
    answers.clear()
    service.commands._reply = lambda p: answers.append(Ack.open(p, keys.device.public_key))
    assert phone.recipient in service.agent.sealer.recipients
    service.commands.on_payload(member_command(keys, Action.REMOVE_RECIPIENT, 2, phone,
                                               phone_key))
    assert [(a.counter, a.ok) for a in answers] == [(2, True)]
    assert service.agent.sealer.recipients == [keys.owner.recipient]
    service.close()


def test_a_member_key_operates_but_cannot_change_recipients(tmp_path: Path,
                                                            keys: Keys) -> None:
    phone_key = SigningKey.generate()
    intruder = X25519Identity.generate()
    members = [phone_key.public_key]
    gate = CommandGate(keys.command.public_key, "test", tmp_path / "counter.json",
                       clock_synced=lambda: False, fresh=True, members=lambda: members)
    cmd, refusal = gate.check(Command("test", 1, Action.ARM, 0.0).sign(phone_key))
    assert cmd is not None and cmd.action == Action.ARM and refusal is None
    # a member may not add a recipient (dropped as not the owner's), nor may a stranger arm
    forged = member_command(keys, Action.ADD_RECIPIENT, 2, intruder, phone_key,
                            signer=phone_key)
    assert gate.check(forged) == (None, None)
    stranger = SigningKey.generate()
    assert gate.check(Command("test", 3, Action.ARM, 0.0).sign(stranger)) == (None, None)
    assert gate.counter == 1


def test_a_bad_recipient_is_refused_and_nothing_is_stored(tmp_path: Path, keys: Keys) -> None:
    service = wired(tmp_path, keys)
    answers: list[Ack] = []
    service.commands._reply = lambda p: answers.append(Ack.open(p, keys.device.public_key))
    bad = Command("test", 1, Action.ADD_RECIPIENT, 0.0, (("recipient", "age1nope"),))
    service.commands.on_payload(bad.sign(keys.command))
    assert len(answers) == 1 and not answers[0].ok and "recipient" in answers[0].reason
    assert not (tmp_path / "data" / RECIPIENTS_FILE).exists()
    assert service.agent.sealer.recipients == [keys.owner.recipient]
    service.close()
