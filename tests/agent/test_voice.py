"""Quick replies and voicemail (docs/talk.md) with real parts: a Mosquitto broker, the agent
wired as `doorstep run` wires it on the bundled clip, a tone file standing in for the
microphone and a WAV file for the speaker. Replies travel as the owner's signed, sealed
``reply_put`` and sealed parts; the voicemail is decrypted with the real age CLI and decoded
with PyAV."""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import paho.mqtt.client as mqtt
import pytest

from doorstep.agent.replies import ReplyError, ReplyStore, Transfers
from doorstep.agent.run import RingPress
from doorstep.agent.service import Service
from doorstep.agent.voice import Voice
from doorstep.agent.wiring import build
from doorstep.broker import Mosquitto
from doorstep.capture.frames import Frame
from doorstep.cli import main as cli_main
from doorstep.config import parse_config
from doorstep.core.errors import SealError
from doorstep.owner.command import next_counter
from doorstep.protocol.age import X25519Identity
from doorstep.protocol.connect import Broker, make_client
from doorstep.protocol.keys import SigningKey
from doorstep.protocol.kinds import Action
from doorstep.protocol.reply import ReplyOffer, parts_of, seal_part
from doorstep.protocol.seal import identity_of
from doorstep.protocol.wire import (
    Ack,
    Command,
    Topics,
    device_prefix,
    open_sealed_answer,
    seal_command,
)
from doorstep.uplink.outbox import Outbox, PendingArtifact
from tests.agent.rtcpeer import call, dominant_hz, tone
from tests.faults.harness import DEVICE, Party, agent_toml, make_party, wait_for


def opus(path: Path, hz: int, seconds: float) -> bytes:
    """A reply as the app might send one: a tone in Ogg Opus, made with PyAV."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="ogg") as out:
        stream = out.add_stream("libopus", rate=48000)
        stream.layout = "mono"
        n = 960
        for i in range(int(seconds * 48000 / n)):
            t = (np.arange(n) + i * n) / 48000
            frame = av.AudioFrame.from_ndarray(
                (np.sin(2 * np.pi * hz * t) * 12000).astype(np.int16).reshape(1, -1),
                format="s16", layout="mono")
            frame.sample_rate = 48000
            frame.pts = i * n
            for p in stream.encode(frame):
                out.mux(p)
        for p in stream.encode(None):
            out.mux(p)
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def decoded(data: bytes | Path) -> tuple[np.ndarray, int]:
    """(mono samples, rate) of an audio file."""
    with av.open(io.BytesIO(data) if isinstance(data, bytes) else str(data)) as f:
        frames = list(f.decode(audio=0))
    rate = frames[0].sample_rate
    chans = len(frames[0].layout.channels)
    samples = np.concatenate([fr.to_ndarray().reshape(-1) for fr in frames])
    if frames[0].format.is_planar:
        samples = np.concatenate([fr.to_ndarray()[0] for fr in frames])
    elif chans > 1:
        samples = samples.reshape(-1, chans)[:, 0]
    return samples, rate


def test_the_reply_store_is_bounded_private_and_survives_a_restart(tmp_path: Path) -> None:
    def offer(name: str, auto: bool = False) -> ReplyOffer:
        return ReplyOffer(name=name, size=3, sha256="0" * 64, label=name, auto=auto)

    store = ReplyStore(tmp_path / "replies", max_replies=2)
    store.put(offer("a", auto=True), b"abc", 1.0)
    store.put(offer("b"), b"abc", 1.0)
    with pytest.raises(ReplyError, match="2 replies are stored already"):
        store.put(offer("c"), b"abc", 1.0)
    store.put(offer("b"), b"xyz", 1.0)                # replacing one is not one more
    again = ReplyStore(tmp_path / "replies", max_replies=2)
    assert [r.name for r in again.list()] == ["a", "b"] and again.auto == "a"
    assert {p.stat().st_mode & 0o777 for p in (tmp_path / "replies").iterdir()} == {0o600}
    assert again.delete("a") and again.auto == "" and not again.delete("a")


def test_a_transfer_takes_parts_in_order_once_and_times_out(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The transfer's rules without a broker: sealed parts as the hub makes them, a clock
    stepped by the test."""
    key = SigningKey.generate()
    clock = {"now": 0.0}
    stored: list[bytes] = []
    outcomes: dict[int, str | None] = {}
    transfers = Transfers(identity_of(key), lambda offer, data: stored.append(data),
                          now=lambda: clock["now"], seconds=60)
    audio = bytes(range(256)) * 200                     # 51,200 bytes: four parts
    parts = [seal_part(7, off, data, key.public_key) for off, data in parts_of(audio)]
    offer = ReplyOffer(name="a", size=len(audio), sha256=hashlib.sha256(audio).hexdigest(),
                       label="", auto=False)
    transfers.begin(7, offer, lambda outcome: outcomes.__setitem__(7, outcome))
    transfers.on_part(parts[0])
    transfers.on_part(parts[0])                         # a QoS 1 duplicate: ignored
    transfers.on_part(parts[2])                         # out of place: dropped
    transfers.on_part(b"DS2P" + bytes(40))              # does not open: dropped
    for part in parts[1:]:
        transfers.on_part(part)
    wait_for(lambda: 7 in outcomes, 10, "the transfer's outcome")
    assert outcomes[7] is None and stored == [audio]
    assert "offset 32768, expected 16384" in caplog.text
    assert "reply part: cannot be opened" in caplog.text
    # parts that stop coming: refused once its time is up, and late parts find nothing
    transfers.begin(8, offer, lambda outcome: outcomes.__setitem__(8, outcome))
    transfers.on_part(seal_part(8, 0, audio[:16384], key.public_key))
    clock["now"] = 61
    transfers.tick()
    assert outcomes[8] == "refused: incomplete after 60 s (16384 of 51200 bytes)"
    transfers.on_part(seal_part(8, 16384, audio[16384:32768], key.public_key))
    assert "no transfer under way" in caplog.text
    # a part past the signed size ends the transfer
    small = ReplyOffer(name="b", size=100, sha256="0" * 64, label="", auto=False)
    transfers.begin(9, small, lambda outcome: outcomes.__setitem__(9, outcome))
    transfers.on_part(seal_part(9, 0, audio[:200], key.public_key))
    assert outcomes[9] == "refused: the audio is longer than the 100 bytes signed"


@dataclass
class Doorbell:
    party: Party
    broker: Mosquitto
    service: Service
    root: Path
    frames: dict[str, int]
    counter_file: Path
    speaker: Path

    @property
    def voice(self) -> Voice:
        assert self.service.voice is not None
        return self.service.voice

    def call(self, action: str, params: dict[str, str]) -> Ack:
        return call(self.party.command, DEVICE, self.party.device.public_key,
                    self.broker.port, self.counter_file, action, params)[1]

    def ring(self) -> None:
        self.service.press(RingPress(time.time(), time.monotonic(), 1, True))

    def frames_pass(self, n: int) -> None:
        target = self.frames["n"] + n
        wait_for(lambda: self.frames["n"] >= target, 30, f"{n} more frames")


class Owner:
    """The owner's side of a reply transfer on one MQTT connection, as the hub sends it: the
    sealed signed command, then the sealed parts. Each piece can be altered to test refusals.
    """

    def __init__(self, bell: Doorbell) -> None:
        self.bell = bell
        self.reply = X25519Identity.generate()
        self.topics = Topics(device_prefix("doorstep/{device}/", DEVICE))
        self.answers: dict[int, Ack] = {}
        self.sent: list[bytes] = []
        self._got = threading.Condition()
        subscribed = threading.Event()
        self.client = make_client(Broker(host="127.0.0.1", port=bell.broker.port),
                                  f"owner-{time.time()}")
        self.client.on_message = self._message
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.connect("127.0.0.1", bell.broker.port)
        self.client.loop_start()
        self.client.subscribe(self.topics.ack, qos=1)
        assert subscribed.wait(10)

    def _message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            ack = Ack.open(open_sealed_answer(bytes(msg.payload), self.reply),
                           self.bell.party.device.public_key)
        except SealError:
            return                  # an answer to someone else's command
        with self._got:
            self.answers[ack.counter] = ack
            self._got.notify_all()

    def publish(self, payload: bytes) -> None:
        self.sent.append(payload)
        self.client.publish(self.topics.cmd, payload, qos=1).wait_for_publish(10)

    def put(self, name: str, audio: bytes, *, auto: bool = False, key: SigningKey | None = None,
            size: int | None = None, digest: str | None = None,
            parts: list[tuple[int, bytes]] | None = None) -> int:
        """Send a reply; the command's counter."""
        params = {"name": name, "size": str(len(audio) if size is None else size),
                  "sha256": digest or hashlib.sha256(audio).hexdigest(), "label": name}
        if auto:
            params["auto"] = "1"
        cmd = Command(device=DEVICE, counter=next_counter(self.bell.counter_file),
                      action=Action.REPLY_PUT, issued=time.time(),
                      params=tuple(sorted(params.items())))
        public = self.bell.party.device.public_key
        self.publish(seal_command(cmd.sign(key or self.bell.party.command), public,
                                  self.reply.recipient))
        for off, data in parts_of(audio) if parts is None else parts:
            self.publish(seal_part(cmd.counter, off, data, public))
        return cmd.counter

    def command(self, action: str) -> int:
        cmd = Command(device=DEVICE, counter=next_counter(self.bell.counter_file),
                      action=Action(action), issued=time.time())
        self.publish(seal_command(cmd.sign(self.bell.party.command),
                                  self.bell.party.device.public_key, self.reply.recipient))
        return cmd.counter

    def answer(self, counter: int, timeout: float = 30.0) -> Ack:
        with self._got:
            assert self._got.wait_for(lambda: counter in self.answers, timeout), \
                f"no answer to command {counter}"
            return self.answers[counter]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def doorbell(tmp_path: Path, broker: Mosquitto, voice: str) -> Iterator[Doorbell]:
    party = make_party(tmp_path / "home")
    mic = tone(tmp_path / "mic.wav", 700, seconds=10)
    speaker = tmp_path / "speaker.wav"
    text = agent_toml(party, broker.port, motion=False) + (
        f'\n[voice]\nspeaker = "file:{speaker}"\nmicrophone = "file:{mic}"\n{voice}\n')
    service = build(parse_config(text))
    frames = {"n": 0}

    def on_frame(frame: Frame) -> None:
        frames["n"] += 1

    runner = threading.Thread(target=service.run, kwargs={"on_frame": on_frame,
                                                          "connect_timeout": 10})
    runner.start()
    try:
        wait_for(lambda: service.uplink is not None and service.uplink.connected, 10,
                 "the agent to connect")
        yield Doorbell(party, broker, service, tmp_path, frames, tmp_path / "counter.json",
                       speaker)
    finally:
        service.stop_event.set()
        runner.join(30)


@pytest.fixture
def bell(tmp_path: Path, broker: Mosquitto) -> Iterator[Doorbell]:
    yield from doorbell(tmp_path, broker, "answer_seconds = 1\nvoicemail_seconds = 2")


@pytest.fixture
def owner(bell: Doorbell) -> Iterator[Owner]:
    o = Owner(bell)
    yield o
    o.close()


def voicemails(bell: Doorbell) -> list[Any]:
    return [i for i in bell.service.outbox.items() if i.manifest.kind == "voicemail"]


@pytest.mark.slow
def test_a_reply_is_stored_private_and_plays_on_a_signed_command(
        bell: Doorbell, owner: Owner, tmp_path: Path) -> None:
    audio = opus(tmp_path / "hello.ogg", 440, 1.5)
    assert len(audio) > 4096                 # bigger than any command: it travels in parts
    ack = owner.answer(owner.put("hello", audio))
    assert ack.ok, ack.reason
    stored = bell.voice.store.path("hello")
    assert stored is not None and stored.read_bytes() == audio
    assert stored.stat().st_mode & 0o777 == 0o600
    assert (stored.parent / "index.json").stat().st_mode & 0o777 == 0o600
    ack = bell.call("reply_play", {"name": "hello"})
    assert ack.ok, ack.reason                     # answered once it has started playing
    wait_for(lambda: bell.voice.played == 1, 10, "the reply to finish playing")
    samples, rate = decoded(bell.speaker)
    assert abs(len(samples) / rate - 1.5) < 0.1
    assert abs(dominant_hz(samples) - 440) < 10
    # no such reply: a signed refusal that names it
    ack = bell.call("reply_play", {"name": "nope"})
    assert not ack.ok and "no reply named 'nope'" in ack.reason
    ack = bell.call("reply_delete", {"name": "hello"})
    assert ack.ok and bell.voice.store.path("hello") is None and not stored.exists()


@pytest.mark.slow
def test_an_unanswered_ring_plays_the_reply_then_seals_the_visitors_voicemail(
        bell: Doorbell, owner: Owner, tmp_path: Path) -> None:
    assert owner.answer(owner.put("away", opus(tmp_path / "away.ogg", 440, 1.0),
                                  auto=True)).ok
    before = {i.seq for i in bell.service.outbox.items()}
    bell.ring()
    wait_for(lambda: bell.voice.voicemails == 1, 30, "the voicemail to be committed")
    samples, rate = decoded(bell.speaker)
    assert abs(dominant_hz(samples) - 440) < 10          # the reply played at the door
    (vm,) = voicemails(bell)
    assert vm.seq not in before and vm.manifest.priority == 0
    # it names the ring it answers, in its signed manifest: the app shows it on that ring
    # (the ring event is the first event after the press; the clip's event comes later)
    ring = min(i.seq for i in bell.service.outbox.items() if i.seq not in before
               and i.manifest.kind == "event" and i.manifest.priority == 0)
    assert vm.manifest.parent == str(ring) and ring < vm.seq
    # sealed to the owner: the real age CLI opens it, and it is the microphone's 2 s of 700 Hz
    plain = subprocess.run(["age", "-d", "-i", str(bell.party.root / "owner.key"),
                            str(vm.path)], check=True, capture_output=True).stdout
    assert plain[:4] == b"OggS"
    samples, rate = decoded(plain)
    assert abs(len(samples) / rate - 2.0) < 0.1
    assert abs(dominant_hz(samples) - 700) < 10
    # `doorstep open` verifies it and writes it out as an Ogg file a player opens
    out = tmp_path / "opened"
    assert cli_main(["open", str(vm.path), "-i", str(bell.party.root / "owner.key"),
                     "--device-key", bell.party.device.public_text(),
                     "--out-dir", str(out)]) == 0
    (written,) = out.glob("*.voicemail.ogg")
    assert written.read_bytes() == plain


@pytest.mark.slow
def test_a_ring_the_owner_answers_plays_nothing(tmp_path: Path, broker: Mosquitto,
                                                caplog: pytest.LogCaptureFixture) -> None:
    """Answered: any owner command after the ring but keeping the replies (here: arm)."""
    caplog.set_level(logging.INFO)
    for bell in doorbell(tmp_path, broker, "answer_seconds = 4\nvoicemail_seconds = 2"):
        owner = Owner(bell)
        try:
            assert owner.answer(owner.put("away", opus(tmp_path / "away.ogg", 440, 1.0),
                                          auto=True)).ok
            bell.ring()
            wait_for(lambda: "the automatic reply plays in" in caplog.text, 10, "the ring")
            assert owner.answer(owner.command("arm")).ok
            wait_for(lambda: "the ring was answered; no automatic reply" in caplog.text, 10,
                     "the wait to end")
            time.sleep(4)
            assert bell.voice.played == 0 and not voicemails(bell)
            assert not bell.speaker.exists()
        finally:
            owner.close()


@pytest.mark.slow
def test_bad_reply_transfers_are_refused_and_the_camera_keeps_running(
        bell: Doorbell, owner: Owner, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    audio = opus(tmp_path / "a.ogg", 440, 4.0)
    assert len(parts_of(audio)) >= 2
    # a forged part (sealed to the doorbell, as anyone can): the signed hash differs
    parts = parts_of(audio)
    parts[1] = (parts[1][0], bytes(len(parts[1][1])))
    ack = owner.answer(owner.put("forged", audio, parts=parts))
    assert not ack.ok and "SHA-256" in ack.reason
    # bigger than the doorbell's limit: refused from the signed size, before any part
    ack = owner.answer(owner.put("huge", audio, size=300 * 1024))
    assert not ack.ok and "over this doorbell's limit" in ack.reason
    # not audio, with the right size and hash
    junk = bytes(range(256)) * 40
    ack = owner.answer(owner.put("junk", junk))
    assert not ack.ok and "not audio" in ack.reason
    # signed by a stranger: dropped unanswered, and its parts find no transfer
    stranger = owner.put("stranger", audio, key=SigningKey.generate())
    # a good one, then the very same messages again: the replay is refused
    good = owner.put("good", audio)
    assert owner.answer(good).ok
    sent = owner.sent[-len(parts) - 1:]
    for payload in sent:
        owner.publish(payload)
    wait_for(lambda: "replayed" in caplog.text, 10, "the replay to be refused")
    time.sleep(1)
    assert stranger not in owner.answers
    assert [r.name for r in bell.voice.store.list()] == ["good"]
    assert "no transfer under way" in caplog.text
    assert "does not have the signed SHA-256" in caplog.text
    assert "Traceback" not in caplog.text
    bell.frames_pass(20)                    # the frame loop never waited for any of it


@pytest.mark.slow
def test_a_full_disk_drops_the_voicemail_and_nothing_else(
        bell: Doorbell, owner: Owner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    real_open = Outbox.open
    refused: list[str] = []

    def full_for_voicemail(outbox: Outbox, kind: str, *, priority: int,
                           parent: str = "") -> PendingArtifact:
        pending = real_open(outbox, kind, priority=priority, parent=parent)
        if kind != "voicemail":
            return pending
        real = pending._file
        assert real is not None

        class Full:
            written = 0

            def write(self, data: bytes) -> int:
                if self.written + len(data) > 2000:     # the age header fits, no more
                    refused.append(kind)
                    raise OSError(errno.ENOSPC, "No space left on device")
                self.written += len(data)
                return int(real.write(data))

            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

        pending._file = Full()  # type: ignore[assignment]
        return pending

    caplog.set_level(logging.INFO)
    monkeypatch.setattr(Outbox, "open", full_for_voicemail)
    assert owner.answer(owner.put("away", opus(tmp_path / "away.ogg", 440, 0.5),
                                  auto=True)).ok
    # a motion clip waiting to go: less important than a voicemail, so a voicemail allowed to
    # evict would push it out to make room
    clip = bell.service.outbox.put("clip", b"\x01" * 50_000, priority=3)
    bell.ring()
    wait_for(lambda: "voicemail: not kept" in caplog.text, 30, "the voicemail to fail")
    kept = {i.seq for i in bell.service.outbox.items()}
    assert clip.seq in kept
    assert refused and not voicemails(bell)
    assert any(i.manifest.kind == "event" for i in bell.service.outbox.items())  # the ring
    assert not list((bell.service.outbox.root / "tmp").glob("voicemail-*"))
    assert "nothing else was removed" in caplog.text and "Traceback" not in caplog.text
    bell.frames_pass(20)
    assert kept <= {i.seq for i in bell.service.outbox.items()}
