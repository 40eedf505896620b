"""Row 5, ring latency: from the mock button's press to the sealed ring event arriving at an
MQTT subscriber of the ring event's head (``doorstep/<id>/a/<seq>/m``) on a real Mosquitto,
with the agent connected directly (idle, loopback) or through a 2 Mbit/s link while a clip
uploads. The baseline is a bare paho client publishing a payload of the same size
over the same path.

Motion detection is on, as at a real door, where a visitor sets off motion seconds before
pressing the button: each press follows a fresh motion start (its event, full snapshot and
clip) by 0 to 0.5 s, while that snapshot is still on its way (issue 18: a ring used to wait
behind it). Clips end after 1 s of quiet (the shipped post-roll is 5 s), so presses come
every few seconds."""

from __future__ import annotations

import logging
import operator
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from doorstep.bench.link import Link
from doorstep.bench.netns import ShapedLink
from doorstep.bench.rig import Keys, config_text
from doorstep.core.errors import DoorstepError, SealError
from doorstep.protocol.manifest import open_envelope
from doorstep.protocol.seal import identity_of
from doorstep.protocol.wire import unpack_head

log = logging.getLogger(__name__)

LINK_BPS = 2_000_000
POSTROLL = 1.0      # seconds of quiet that end a motion clip, so the next visitor starts one
FEED_CLIP_BYTES = 2 * 1024 * 1024


@dataclass
class RingRun:
    latencies_ms: list[float] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    picture_ms: list[float] = field(default_factory=list)   # press -> its thumbnail's head
    stored_ms: list[float] = field(default_factory=list)    # press -> event stored at the inbox
    missed: int = 0
    link_bytes_up: int = 0
    link: str = "loopback"    # which link carried it: loopback, tc tbf or token bucket
    motion_starts: int = 0    # presses that followed a motion start, as they should all


@dataclass
class Via:
    """Where the device (agent or bare client) connects to reach the broker, and how: ``device``
    is entered while the device's client and threads are made (the shaped link's namespace).
    ``name`` says which link a row used."""

    host: str
    port: int
    name: str
    device: Callable[[], AbstractContextManager[None]] = nullcontext
    bytes_up: Callable[[], int] = lambda: 0


@contextmanager
def via(broker_port: int, link_bps: float | None, shaped: ShapedLink | None = None
        ) -> Iterator[Via]:
    """Loopback (``link_bps`` None), the kernel's shaped link ``shaped`` (its broker listens
    on ``shaped.host`` at ``broker_port``), or else bench/link.py's token bucket."""
    if link_bps is None:
        yield Via("127.0.0.1", broker_port, "loopback")
    elif shaped is not None:
        yield Via(shaped.host, broker_port, "tc tbf", shaped.device, shaped.bytes_sent)
    else:
        with Link(broker_port, link_bps) as link:
            yield Via("127.0.0.1", link.port, "token bucket", bytes_up=lambda: link.bytes_up)


def head_subscriber(broker_port: int, keys: Keys, prefix: str) -> Subscriber:
    """A subscriber to every artifact head of the device under ``prefix``, keyed by seq: it
    opens each with the inbox key, as the inbox does, and checks the device's signature.
    ``pictures`` maps an event's seq (as its children name it) to its thumbnail's seq."""
    opener = identity_of(keys.inbox)
    pictures: dict[str, int] = {}

    def parse(payload: bytes) -> int:
        envelope, _, _ = unpack_head(payload, opener)
        manifest = open_envelope(envelope, keys.device_public)
        if manifest.kind == "thumbnail":
            pictures[manifest.parent] = manifest.seq
        return manifest.seq

    sub = Subscriber(broker_port, prefix + "a/+/m", parse)
    sub.pictures = pictures
    return sub


class Subscriber:
    """A paho client on the broker itself; timestamps every message on arrival."""

    def __init__(self, port: int, topic: str, parse: Callable[[bytes], Any] | None = None
                 ) -> None:
        self.arrivals: dict[Any, tuple[float, int]] = {}
        self.pictures: dict[str, int] = {}
        self.count = 0
        self._parse = parse
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.errors: list[str] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{os.getpid()}"
                                  f"-{random.randrange(1 << 30)}")
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise DoorstepError(f"bench subscriber could not subscribe to {topic}")

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        try:
            payload = bytes(msg.payload)
            key = self._parse(payload) if self._parse else payload[:16]
        except (SealError, ValueError) as exc:
            self.errors.append(str(exc))
            return
        with self._cond:
            self.arrivals[key] = (now, len(payload))
            self.count += 1
            self._cond.notify_all()

    def wait_for(self, key: Any, timeout: float) -> tuple[float, int] | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while key not in self.arrivals:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            return self.arrivals[key]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _count(agent: Any, kind: str) -> int:
    return len([1 for k, _ in list(agent.events) if k == kind])


def _rings_above(agent: Any, n: int) -> bool:
    return _count(agent, "ring") > n


def _wait(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise DoorstepError(f"bench: timed out waiting for {what}")
        time.sleep(0.005)


def _ring_left(outbox: Any, seq: int) -> bool:
    """The ring event ``seq`` and the snapshot naming it are no longer in the outbox."""
    return not any(i.seq == seq or i.manifest.parent == str(seq) for i in outbox.items())


def _motion_start(service: Any) -> bool:
    """A visitor walks up to a quiet door: the scene goes still long enough for the clip to end
    (``postroll``), then motion starts afresh: its event, its full snapshot and a new clip.
    The input has people in view all the time, so the bench makes the quiet by disarming
    motion detection, and the start by arming it again (the owner's commands); the detector
    runs on the live picture throughout. False if no start came."""
    from doorstep.agent.doorbell import LedState

    agent = service.agent
    agent.owner_request("disarm")
    try:
        _wait(lambda: service.doorbell.led_state is not LedState.RECORDING, 15,
              "the motion clip to end")
        starts = _count(agent, "motion")
        agent.owner_request("arm")
        _wait(lambda: _count(agent, "motion") > starts, 10, "a motion start")
    except DoorstepError:
        agent.owner_request("arm")
        return False
    return True


def ring_agent(broker_port: int, keys: Keys, workdir: Path, source: Path, presses: int, *,
               link_bps: float | None, upload: bool, seed: int = 7,
               shaped: ShapedLink | None = None, store: Path | None = None,
               **knobs: Any) -> RingRun:
    """Press the agent's doorbell ``presses`` times, each 0 to 0.5 s after a motion start;
    each latency is press -> ring event at the subscriber, and, given the inbox's ``store``,
    press -> the event's file in it (its ctime against the press's wall time). The next press
    waits until the ring's event and snapshot have both left the outbox, plus a short random
    gap, so every press is a visitor's first ring."""
    from gpiozero.pins.mock import MockFactory

    from doorstep.agent.wiring import build
    from doorstep.config import parse_config
    from doorstep.protocol.kinds import Priority

    workdir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    result = RingRun()
    with via(broker_port, link_bps, shaped) as path:
        sent_before = path.bytes_up()
        cfg = parse_config(config_text(keys, workdir / "device", source, path.port,
                                       host=path.host, realtime=True, loop=True, motion=True,
                                       repeat_window=0.0, **{"postroll": POSTROLL, **knobs}),
                           source="bench ring config")

        sub = head_subscriber(broker_port, keys, cfg.topic_prefix)
        factory = MockFactory()
        with path.device():     # the agent's threads, and so its sockets, live on the device
            service = build(cfg, pin_factory=factory)
            pin = factory.pin(int(cfg.button.pin.removeprefix("GPIO")))
            runner = threading.Thread(target=service.run, name="bench-agent",
                                      kwargs={"connect_timeout": 10.0})
            runner.start()
        outbox = service.outbox
        try:
            _wait(lambda: service.uplink is not None and service.uplink.connected
                  and service.agent.frames > 0, 15, "the agent's first frame and connection")

            def feed() -> None:
                clips = [i for i in outbox.items() if i.manifest.kind == "clip"]
                if len(clips) < 2:
                    pending = outbox.open("clip", priority=Priority.CLIP)
                    for _ in range(FEED_CLIP_BYTES // 65536):
                        pending.write(os.urandom(65536))  # ciphertext looks like this
                    item = pending.commit()
                    if service.uplink is not None:
                        service.uplink.notify(item)

            if upload:
                feed()
                time.sleep(1.0)  # the upload is under way before the first press
            for _ in range(presses):
                if upload:
                    feed()
                result.motion_starts += _motion_start(service)
                time.sleep(rng.uniform(0.0, 0.5))   # the snapshot is on its way meanwhile
                before = _count(service.agent, "ring")
                t0, w0 = time.monotonic(), time.time()
                pin.drive_low()
                time.sleep(0.05)
                pin.drive_high()
                try:
                    _wait(partial(_rings_above, service.agent, before), 10,
                          "the agent to seal the ring event")
                except DoorstepError:
                    result.missed += 1
                    continue
                seq = [s for k, s in list(service.agent.events) if k == "ring"][before]
                got = sub.wait_for(seq, 30)
                if got is None:
                    result.missed += 1
                    continue
                result.latencies_ms.append((got[0] - t0) * 1000)
                result.sizes.append(got[1])
                if store is not None:
                    stored = store / cfg.device.id / f"{seq:010d}.event.age"
                    with suppress(DoorstepError):
                        _wait(stored.exists, 10, "the ring event in the inbox's store")
                        # its ctime: set by the rename that stores it, after the fsync
                        result.stored_ms.append((stored.stat().st_ctime - w0) * 1000)
                with suppress(DoorstepError):
                    _wait(partial(operator.contains, sub.pictures, str(seq)), 10,
                          "the ring's thumbnail")
                    pic = sub.wait_for(sub.pictures[str(seq)], 10)
                    if pic is not None:
                        result.picture_ms.append((pic[0] - t0) * 1000)
                _wait(partial(_ring_left, outbox, seq), 30,
                      "the ring's event and snapshot to leave the outbox")
                time.sleep(rng.uniform(0.05, 0.15))
        finally:
            service.stop_event.set()
            runner.join(30)
            sub.close()
        result.link_bytes_up = path.bytes_up() - sent_before
        result.link = path.name
    return result


class _BareUploader:
    """A bare paho client that keeps ``in_flight`` QoS 1 chunks outstanding, like a clip
    upload, and publishes an event payload on demand on the same connection."""

    def __init__(self, host: str, port: int, chunk_bytes: int, in_flight: int,
                 upload: bool) -> None:
        self.chunk = os.urandom(chunk_bytes)
        self.in_flight = in_flight
        self.upload = upload
        self._outstanding: set[int] = set()
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._stop = False
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"bench-bare-{os.getpid()}-{random.randrange(1 << 30)}")
        self.client.max_inflight_messages_set(1000)
        self.client.on_connect = lambda *a: self._connected.set()
        self.client.on_publish = self._on_publish
        self.client.connect(host, port)
        self.client.loop_start()
        if not self._connected.wait(10):
            raise DoorstepError("bench bare publisher could not connect")
        if upload:
            self._top_up()

    def _top_up(self) -> None:
        with self._lock:
            while not self._stop and len(self._outstanding) < self.in_flight:
                info = self.client.publish("bench/clip", self.chunk, qos=1)
                self._outstanding.add(info.mid)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, *rest: Any) -> None:
        with self._lock:
            was = mid in self._outstanding
            self._outstanding.discard(mid)
        if was:
            self._top_up()

    def close(self) -> None:
        self._stop = True
        self.client.loop_stop()
        self.client.disconnect()


def ring_bare(broker_port: int, presses: int, size: int, *, link_bps: float | None,
              upload: bool, chunk_bytes: int = 65536, in_flight: int = 4,
              seed: int = 7, shaped: ShapedLink | None = None) -> RingRun:
    """The floor: publish() of a ``size``-byte QoS 1 payload -> arrival at the subscriber."""
    rng = random.Random(seed)
    result = RingRun()
    with via(broker_port, link_bps, shaped) as path:
        sent_before = path.bytes_up()
        sub = Subscriber(broker_port, "bench/event")
        with path.device():
            bare = _BareUploader(path.host, path.port, chunk_bytes, in_flight, upload)
        try:
            if upload:
                time.sleep(1.0)
            for i in range(presses):
                payload = i.to_bytes(16, "big") + os.urandom(max(0, size - 16))
                t0 = time.monotonic()
                bare.client.publish("bench/event", payload, qos=1)
                got = sub.wait_for(payload[:16], 30)
                if got is None:
                    result.missed += 1
                    continue
                result.latencies_ms.append((got[0] - t0) * 1000)
                result.sizes.append(got[1])
                time.sleep(rng.uniform(0.05, 0.15))
        finally:
            bare.close()
            sub.close()
        result.link_bytes_up = path.bytes_up() - sent_before
        result.link = path.name
    return result
