"""WebRTC live view and talk (docs/rtc.md) with real parts: a Mosquitto broker, the agent wired
as `doorstep run` wires it on the bundled clip, and an aiortc viewer standing in for the
owner's browser. The signalling is the signed, sealed command channel."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from doorstep.agent.rtc import RtcRefused, check_fingerprint, fingerprints
from doorstep.agent.service import Service
from doorstep.agent.wiring import build
from doorstep.broker import Mosquitto
from doorstep.capture.frames import Frame
from doorstep.config import parse_config
from doorstep.protocol.keys import SigningKey
from tests.agent.rtcpeer import Viewer, call, dominant_hz, flood, publish, tone
from tests.faults.harness import DEVICE, Party, agent_toml, make_party, wait_for

SDP = ("v=0\r\na=fingerprint:sha-256 AB:CD:EF\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
       "a=fingerprint:sha-256 ab:cd:ef\r\n")


def test_fingerprints_are_compared_whatever_their_case() -> None:
    assert fingerprints(SDP) == {"sha-256 AB:CD:EF"}
    assert check_fingerprint(SDP, "SHA-256 ab:cd:ef") == SDP
    with pytest.raises(RtcRefused, match="not the signed one"):
        check_fingerprint(SDP, "sha-256 AB:CD:00")
    with pytest.raises(RtcRefused, match="missing"):
        check_fingerprint(SDP, "")
    # an unsigned second fingerprint is taken out, so DTLS cannot complete with its certificate
    assert check_fingerprint(SDP + "a=fingerprint:sha-512 00:11\r\n", "sha-256 AB:CD:EF") == SDP


@dataclass
class Doorbell:
    party: Party
    broker: Mosquitto
    service: Service
    root: Path
    frames: dict[str, int]
    counter_file: Path
    runner: threading.Thread

    def stop(self) -> None:
        self.service.stop_event.set()
        self.runner.join(30)

    def call(self, action: str, params: dict[str, str],
             key: SigningKey | None = None) -> Any:
        return call(key or self.party.command, DEVICE, self.party.device.public_key,
                    self.broker.port, self.counter_file, action, params)

    def frames_pass(self, n: int) -> None:
        target = self.frames["n"] + n
        wait_for(lambda: self.frames["n"] >= target, 30, f"{n} more frames")


def doorbell(tmp_path: Path, broker: Mosquitto, rtc: str) -> Iterator[Doorbell]:
    party = make_party(tmp_path / "home")
    text = agent_toml(party, broker.port, motion=False) + f"\n[rtc]\n{rtc}\n"
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
                       runner)
    finally:
        service.stop_event.set()
        runner.join(30)


@pytest.fixture
def talk(tmp_path: Path, broker: Mosquitto) -> Iterator[Doorbell]:
    mic = tone(tmp_path / "mic.wav", 1000)
    yield from doorbell(tmp_path, broker, f'max_sessions = 2\nidle_seconds = 6\n'
                        f'microphone = "file:{mic}"\nspeaker = "file:{tmp_path / "spk.wav"}"')


@pytest.mark.slow
def test_a_viewer_sees_the_encoders_packets_hears_the_mic_and_talks_back(
        talk: Doorbell, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    from aiortc.codecs.h264 import H264Encoder

    def no_second_encode(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the doorbell encoded a frame again")
    monkeypatch.setattr(H264Encoder, "encode", no_second_encode)
    viewer = Viewer(voice=tone(tmp_path / "voice.wav", 440))
    try:
        sdp, fp = viewer.offer()
        cmd, ack = talk.call("rtc_offer", {"sdp": sdp, "fingerprint": fp})
        assert ack.ok, ack.reason
        # the doorbell's own certificate's fingerprints are inside its signed answer
        session = talk.service.rtc.sessions[cmd.counter]      # type: ignore[union-attr]
        own = session.pc.getTransceivers()[0].sender.transport.getLocalParameters()
        assert fingerprints(ack.data) == {f"{f.algorithm} {f.value.upper()}"
                                          for f in own.fingerprints}
        viewer.accept(ack.data)
        wait_for(lambda: viewer.video_frames >= 30, 60, "30 video frames at the viewer")
        wait_for(lambda: len(viewer.audio) >= 100, 30, "2 s of the doorbell's microphone")
        frame = viewer.frames[-1]
        assert (frame.width, frame.height) == (768, 576)      # the clip's own size, as encoded
        heard = np.concatenate(viewer.audio[-50:])
        assert abs(dominant_hz(heard) - 1000) < 20
        assert session.video is not None and session.video.sent >= 30
        talk.frames_pass(20)                                  # the voice plays meanwhile
        _, bye = talk.call("rtc_hangup", {"session": str(cmd.counter)})
        assert bye.ok, bye.reason
        wait_for(lambda: not talk.service.rtc.sessions, 10,   # type: ignore[union-attr]
                 "the session to end")
    finally:
        viewer.close()
    assert any("ended" in r.message and "the owner hung up" in r.message
               for r in caplog.records)
    talk.stop()                         # the speaker's file is complete once the agent stops
    with av.open(str(tmp_path / "spk.wav")) as played:
        samples = np.concatenate([f.to_ndarray().reshape(-1, 2)[:, 0]
                                  for f in played.decode(audio=0)])
    assert len(samples) > 48000                               # over a second of the voice
    assert abs(dominant_hz(samples[-48000:]) - 440) < 20


@pytest.mark.slow
def test_bad_offers_are_refused_and_a_silent_viewer_is_hung_up_on(
        talk: Doorbell, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    rtc = talk.service.rtc
    assert rtc is not None
    viewers = [Viewer() for _ in range(4)]
    try:
        # an offer naming another fingerprint than the signed one
        sdp, fp = viewers[0].offer()
        other = "sha-256 " + ":".join(["00"] * 32)
        _, ack = talk.call("rtc_offer", {"sdp": sdp, "fingerprint": other})
        assert not ack.ok and "not the signed one" in ack.reason
        assert not rtc.sessions
        # a forged offer (signed by a key the doorbell does not know) is never answered
        from doorstep.owner.command import NoAnswer
        with pytest.raises(NoAnswer):
            from doorstep.owner.command import next_counter, send_command
            from doorstep.protocol.connect import Broker
            send_command(SigningKey.generate(), DEVICE, "rtc_offer",
                         counter=next_counter(talk.counter_file),
                         mqtt_cfg=Broker(host="127.0.0.1", port=talk.broker.port),
                         device_public=talk.party.device.public_key, answer_timeout=3,
                         params={"sdp": sdp, "fingerprint": fp})
        assert not rtc.sessions
        # a flood: four offers at once, two sessions at most
        offers = [v.offer() for v in viewers]
        before = talk.frames["n"]
        sent: list[bytes] = []
        answers = flood(talk.party.command, DEVICE, talk.party.device.public_key,
                        talk.broker.port, talk.counter_file, offers, sent=sent)
        ok = [i for i, a in enumerate(answers) if a.ok]
        assert len(ok) == 2, [a.reason for a in answers]
        assert all("busy" in a.reason for a in answers if not a.ok)
        for i in ok:       # at once: a session not connected within connect_seconds is ended
            viewers[i].accept(answers[i].data)
        # a replayed offer, and an unsealed one, change nothing
        topic = f"doorstep/{DEVICE}/cmd"
        publish(talk.broker.port, topic, sent[ok[0]])
        publish(talk.broker.port, topic, json.dumps({"body": {
            "v": 1, "device": DEVICE, "counter": 2 ** 50, "action": "rtc_offer",
            "issued": 1.0, "params": {"sdp": offers[0][0]}}}).encode())
        wait_for(lambda: any("(replayed)" in r.message for r in caplog.records), 10,
                 "the replay to be refused")
        wait_for(lambda: any("dropped a message: command" in r.message and "magic" in r.message
                             for r in caplog.records), 10, "the unsealed offer to be dropped")
        assert len(rtc.sessions) == 2
        wait_for(lambda: all(viewers[i].video_frames >= 10 for i in ok), 60,
                 "video at both viewers")
        assert talk.frames["n"] > before             # the pipeline kept going meanwhile
        # one viewer stops answering mid-call: hung up on, the other goes on
        frozen, alive = ok
        viewers[frozen].freeze(15)
        sid = answers[frozen].counter
        wait_for(lambda: sid not in rtc.sessions, 30, "the silent viewer to be hung up on")
        assert any(f"session {sid} ended" in r.message and "stopped answering" in r.message
                   for r in caplog.records)
        seen = viewers[alive].video_frames
        wait_for(lambda: viewers[alive].video_frames > seen + 10, 30, "the other viewer's video")
        assert answers[alive].counter in rtc.sessions
    finally:
        for v in viewers:
            v.close()


@pytest.mark.slow
def test_privacy_mode_ends_a_session_and_refuses_new_ones(talk: Doorbell) -> None:
    rtc = talk.service.rtc
    assert rtc is not None
    viewer = Viewer()
    try:
        sdp, fp = viewer.offer()
        cmd, ack = talk.call("rtc_offer", {"sdp": sdp, "fingerprint": fp})
        assert ack.ok, ack.reason
        viewer.accept(ack.data)
        wait_for(lambda: viewer.video_frames >= 5, 60, "video at the viewer")
        _, ack = talk.call("privacy_on", {})
        assert ack.ok, ack.reason
        wait_for(lambda: cmd.counter not in rtc.sessions, 20, "the session to end")
        assert rtc.ended[-1] == (cmd.counter, "privacy mode is on")
        _, ack = talk.call("rtc_offer", {"sdp": sdp, "fingerprint": fp})
        assert not ack.ok and ack.reason == "privacy mode is on"
    finally:
        viewer.close()
