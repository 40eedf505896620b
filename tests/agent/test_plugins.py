"""The agent's plug-in points (issue 12): packet consumers beside the pre-roll ring, observers
of each frame's decisions, and the owner-command dispatch table. Each is used through the same
wiring `doorstep run` uses, with nothing in the frame loop edited or patched."""

from __future__ import annotations

from pathlib import Path

from gpiozero.pins.mock import MockFactory

from doorstep.agent.commands import CommandGate, Commands, Done
from doorstep.agent.run import Observed
from doorstep.agent.wiring import build
from doorstep.capture.frames import EncodedPacket
from doorstep.config import parse_config
from doorstep.protocol.keys import SigningKey
from doorstep.protocol.kinds import OWNER_ONLY, Action
from doorstep.protocol.wire import Ack, Command
from tests.agent.test_clips import config, synthetic_video
from tests.conftest import Keys


def test_packet_consumers_and_observers_plug_in_without_editing_the_loop(
        tmp_path: Path, keys: Keys) -> None:
    video = tmp_path / "walk.mp4"
    synthetic_video(video, 6, (2.0, 4.0))
    service = build(parse_config(config(tmp_path, keys, video, motion=True)),
                    pin_factory=MockFactory(), connect=False)
    first: list[EncodedPacket] = []
    second: list[EncodedPacket] = []
    seen: list[Observed] = []
    service.agent.packet_consumers += [first.append, second.append]
    service.agent.observers.append(seen.append)
    service.run()

    # every packet the encoder made reached both consumers, in order, as the same objects
    assert len(first) >= 170 and [id(p) for p in first] == [id(p) for p in second]
    pts = [p.pts for p in first]
    assert pts == sorted(pts)
    assert first[0].keyframe
    # each frame was observed once, with the detector's answer; motion set off a snapshot
    assert [s.frame.index for s in seen] == list(range(len(seen))) and len(seen) == 180
    assert all(s.motion is not None for s in seen)
    assert any(s.motion is not None and s.motion.motion for s in seen)
    decided = [s for s in seen if s.snapshot is not None]
    assert decided and decided[0].snapshot.value == "motion"
    assert any(kind == "motion" for kind, _ in service.agent.events)


def test_the_dispatch_table_routes_each_action_and_a_new_one_plugs_in(
        tmp_path: Path, keys: Keys) -> None:
    owner = SigningKey.generate()
    gate = CommandGate(owner.public_key, "door", tmp_path / "counter.json",
                       clock_synced=lambda: False, fresh=True)
    answers: list[Ack] = []
    commands = Commands(gate, device="door", key=keys.device,
                        reply=lambda p: answers.append(Ack.open(p, keys.device.public_key)))
    got: list[Command] = []

    def snapshot(cmd: Command, done: Done) -> None:      # a handler a new feature registers
        got.append(cmd)
        done(None)
    commands[Action.SNAPSHOT] = snapshot
    commands.on_payload(Command("door", 1, Action.SNAPSHOT, 0.0).sign(owner))
    assert [c.action for c in got] == [Action.SNAPSHOT]
    assert [(a.counter, a.ok) for a in answers] == [(1, True)]
    # a genuine command that nothing handles is answered with a refusal, never raised
    commands.on_payload(Command("door", 2, Action.ARM, 0.0).sign(owner))
    assert (answers[-1].counter, answers[-1].ok) == (2, False)
    assert "nothing handles it" in answers[-1].reason and len(got) == 1
    # a forged command reaches no handler and is not answered
    commands.on_payload(Command("door", 3, Action.SNAPSHOT, 0.0).sign(SigningKey.generate()))
    assert len(got) == 1 and len(answers) == 2


def test_the_wired_service_routes_every_frame_loop_action(tmp_path: Path, keys: Keys) -> None:
    video = tmp_path / "still.mp4"
    synthetic_video(video, 1, None)
    service = build(parse_config(config(tmp_path, keys, video, motion=True)),
                    pin_factory=MockFactory(), connect=False)
    assert all(action in service.commands for action in Action)
    # recipients are the Recipients store's (agent/recipients.py), live view is
    # agent/live.py's, WebRTC sessions agent/rtc.py's and quick replies agent/voice.py's:
    # all off the frame loop
    assert set(service.agent.commands) == set(Action) - OWNER_ONLY - {
        Action.LIVE, Action.RTC_OFFER, Action.RTC_HANGUP, Action.REPLY_PUT,
        Action.REPLY_PLAY, Action.REPLY_DELETE}
    service.close()
