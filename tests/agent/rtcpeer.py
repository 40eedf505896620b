"""An aiortc viewer standing in for the owner's browser: it offers to receive video and to send
audio (a tone file), signs its offer as an ``rtc_offer`` command, and keeps what it receives.
Its event loop runs on a thread of its own; ``freeze`` stops it answering anything, as a
phone that drops off the network mid-call."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer
from aiortc.mediastreams import MediaStreamError

from doorstep.agent.rtc import fingerprints
from doorstep.owner.command import next_counter, send_command
from doorstep.protocol.connect import Broker
from doorstep.protocol.keys import SigningKey
from doorstep.protocol.wire import Ack, Command


def tone(path: Path, hz: int, seconds: float = 30.0) -> Path:
    """A sine tone file, made with PyAV (the stand-in microphone's and viewer's voice)."""
    import av

    with av.open(str(path), "w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=48000)
        stream.layout = "mono"
        n = 960
        for i in range(int(seconds * 48000 / n)):
            t = (np.arange(n) + i * n) / 48000
            samples = (np.sin(2 * np.pi * hz * t) * 12000).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16",
                                               layout="mono")
            frame.sample_rate = 48000
            for p in stream.encode(frame):
                out.mux(p)
        for p in stream.encode(None):
            out.mux(p)
    return path


def dominant_hz(samples: np.ndarray, rate: int = 48000) -> float:
    """The strongest frequency in a mono signal."""
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64)))
    spectrum[0] = 0
    return float(np.argmax(spectrum) * rate / len(samples))


class Viewer:
    def __init__(self, voice: Path | None = None, config: Any = None) -> None:
        self.config = config                 # an RTCConfiguration (ICE servers, policy)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.voice = voice
        self.frames: list[Any] = []          # decoded video frames (the last 50)
        self.video_frames = 0
        self.keyframes: list[float] = []     # when each decoded keyframe arrived (monotonic)
        self.audio: list[np.ndarray] = []    # the doorbell's microphone, mono
        self.pc: RTCPeerConnection | None = None
        self.states: list[str] = []
        self.tasks: list[asyncio.Task[None]] = []

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def offer(self) -> tuple[str, str]:
        """(the SDP offer with every candidate, its DTLS fingerprint)."""
        return self.run(self._offer())  # type: ignore[no-any-return]

    async def _offer(self) -> tuple[str, str]:
        pc = self.pc = RTCPeerConnection(self.config)
        pc.addTransceiver("video", direction="recvonly")
        if self.voice is not None:
            player = MediaPlayer(str(self.voice), loop=True)
            pc.addTrack(player.audio)
        else:
            pc.addTransceiver("audio", direction="recvonly")

        @pc.on("track")
        def on_track(track: Any) -> None:
            self.tasks.append(asyncio.ensure_future(self._keep(track)))

        @pc.on("connectionstatechange")
        def on_state() -> None:
            self.states.append(pc.connectionState)

        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
        return sdp, next(f for f in sorted(fingerprints(sdp)) if f.startswith("sha-256 "))

    async def _keep(self, track: Any) -> None:
        try:
            while True:
                frame = await track.recv()
                if track.kind == "video":
                    self.video_frames += 1
                    if frame.key_frame:
                        self.keyframes.append(time.monotonic())
                    self.frames = [*self.frames[-49:], frame]
                else:
                    mono = frame.to_ndarray().reshape(-1, len(frame.layout.channels))[:, 0]
                    self.audio.append(mono)
        except MediaStreamError:
            pass

    def accept(self, answer: str) -> None:
        assert self.pc is not None
        self.run(self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer,
                                                                    type="answer")))

    def pli(self) -> None:
        """Send the doorbell an RTCP Picture Loss Indication for its video, as aiortc's receiver
        itself does when it finds a frame missing."""
        async def send() -> None:
            assert self.pc is not None
            receiver = next(t.receiver for t in self.pc.getTransceivers() if t.kind == "video")
            ssrc = receiver.getSynchronizationSources()[0].source
            await receiver._send_rtcp_pli(ssrc)
        self.run(send())

    def freeze(self, seconds: float) -> None:
        """Stop answering anything (no RTCP, no ICE) for ``seconds``."""
        self.loop.call_soon_threadsafe(time.sleep, seconds)

    def close(self) -> None:
        if self.pc is not None:
            with contextlib.suppress(TimeoutError):
                self.run(self.pc.close(), 10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def call(key: SigningKey, device: str, device_public: Any, port: int, counter_file: Path,
         action: str, params: dict[str, str]) -> tuple[Command, Ack]:
    """Send one signed command and return the doorbell's signed answer."""
    cmd, ack = send_command(key, device, action, counter=next_counter(counter_file),
                            mqtt_cfg=Broker(host="127.0.0.1", port=port),
                            device_public=device_public, params=params)
    assert ack is not None and ack.counter == cmd.counter
    return cmd, ack


def flood(key: SigningKey, device: str, device_public: Any, port: int, counter_file: Path,
          offers: list[tuple[str, str]], timeout: float = 60.0,
          sent: list[bytes] | None = None) -> list[Ack]:
    """Publish every offer at once, in counter order, on one connection (so none is refused
    as a replay of another), and return the doorbell's answers in the same order. ``sent``
    gets the sealed payloads as they went out (to replay one)."""
    import paho.mqtt.client as mqtt

    from doorstep.protocol.age import X25519Identity
    from doorstep.protocol.connect import make_client
    from doorstep.protocol.kinds import Action
    from doorstep.protocol.wire import Topics, device_prefix, open_sealed_answer, seal_command

    reply = X25519Identity.generate()
    topics = Topics(device_prefix("doorstep/{device}/", device))
    cmds = [Command(device=device, counter=next_counter(counter_file), action=Action.RTC_OFFER,
                    issued=time.time(), params=tuple(sorted({"sdp": sdp,
                                                             "fingerprint": fp}.items())))
            for sdp, fp in offers]
    got: dict[int, Ack] = {}
    subscribed, done = threading.Event(), threading.Event()

    def on_message(client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        ack = Ack.open(open_sealed_answer(bytes(msg.payload), reply), device_public)
        got[ack.counter] = ack
        if len(got) == len(cmds):
            done.set()

    client = make_client(Broker(host="127.0.0.1", port=port), f"flood-{time.time()}")
    client.on_message = on_message
    client.on_subscribe = lambda *a: subscribed.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        client.subscribe(topics.ack, qos=1)
        assert subscribed.wait(10)
        for cmd in cmds:
            payload = seal_command(cmd.sign(key), device_public, reply.recipient)
            if sent is not None:
                sent.append(payload)
            client.publish(topics.cmd, payload, qos=1)
        assert done.wait(timeout), f"{len(got)} of {len(cmds)} answers"
    finally:
        client.disconnect()
        client.loop_stop()
    return [got[c.counter] for c in cmds]


def publish(port: int, topic: str, payload: bytes) -> None:
    """One raw message on the broker, as anyone with publish access could send it."""
    from doorstep.protocol.connect import make_client

    client = make_client(Broker(host="127.0.0.1", port=port), f"raw-{time.time()}")
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()
