"""Row 13's bad-input lines (issue 15): the pipeline's frame rate and the ring latency while a
flood of forged and replayed `rtc_offer` commands goes through the broker and a viewer stops
answering mid-call, each against the same figures measured just before in the same doorbell
with neither.

The doorbell child (bench/rtcrow.py `serve`) presses its mock button on SIGUSR1 and writes
each ring's seq and the press's monotonic time (CLOCK_MONOTONIC: one clock for both
processes) to a file; the bench's subscriber to the ring heads times the event's arrival."""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from doorstep.bench.ring import Subscriber
from doorstep.core.errors import DoorstepError

log = logging.getLogger(__name__)

FLOOD_RATE = 50.0          # offers per second
REPLAY_EVERY = 5           # one in five is a replay of a genuine offer, the rest are forged
PRESS_GAP = (0.3, 0.6)     # s between a ring's event at MQTT and the next press


def rings_file(config: Path) -> Path:
    return config.with_suffix(".rings")


# -- in the doorbell child ------------------------------------------------------------------
def ring_button(service: Any, factory: Any, rings: Path) -> None:
    """SIGUSR1 presses the mock button (on a thread, never in the handler); each ring's seq
    and the press's monotonic time are appended to ``rings`` once the agent sealed it."""
    pin = factory.pin(int(service.cfg.button.pin.removeprefix("GPIO")))
    lock = threading.Lock()

    def count() -> list[int]:
        return [s for k, s in list(service.agent.events) if k == "ring"]

    def press() -> None:
        with lock:
            before = len(count())
            t0 = time.monotonic()
            pin.drive_low()
            time.sleep(0.05)
            pin.drive_high()
            deadline = t0 + 10
            while len(count()) <= before and time.monotonic() < deadline:
                time.sleep(0.002)
            seqs = count()
            if len(seqs) > before:
                with open(rings, "a") as out:
                    out.write(f"{seqs[before]} {t0:.6f}\n")

    signal.signal(signal.SIGUSR1,
                  lambda *a: threading.Thread(target=press, daemon=True).start())


# -- in the bench ---------------------------------------------------------------------------
@dataclass
class RingPhase:
    """Presses in one window: latencies (ms) and the pipeline's frame rate meanwhile."""

    latencies_ms: list[float] = field(default_factory=list)
    fps: float = 0.0
    missed: int = 0


def ring_phase(pid: int, rings: Path, sub: Subscriber, presses: int,
               frames: Any, rng: random.Random) -> RingPhase:
    """``presses`` presses of the child's button, one after another's event arrived;
    ``frames()`` reads the child's processed-frame count."""
    out = RingPhase()
    f0, m0 = frames(), time.monotonic()
    for _ in range(presses):
        done = len(_lines(rings))
        os.kill(pid, signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while len(_lines(rings)) <= done and time.monotonic() < deadline:
            time.sleep(0.005)
        lines = _lines(rings)
        if len(lines) <= done:
            out.missed += 1
            continue
        seq_text, t0_text = lines[done].split()
        got = sub.wait_for(int(seq_text), 10)
        if got is None:
            out.missed += 1
            continue
        out.latencies_ms.append((got[0] - float(t0_text)) * 1000)
        time.sleep(rng.uniform(*PRESS_GAP))
    out.fps = (frames() - f0) / (time.monotonic() - m0)
    return out


def _lines(path: Path) -> list[str]:
    try:
        return [line for line in path.read_text().splitlines() if line.strip()]
    except OSError:
        return []


class Signalling:
    """One MQTT client on the doorbell's command topic, as the hub publishes: genuine offers
    signed with the owner's command key (their sealed payloads kept, to replay), and a flood
    of forged ones (signed by a key the doorbell does not know) mixed with those replays."""

    def __init__(self, port: int, device: str, device_public: Any, command_key: Any,
                 counter: Path) -> None:
        import paho.mqtt.client as mqtt

        from doorstep.protocol.age import X25519Identity
        from doorstep.protocol.connect import Broker, make_client
        from doorstep.protocol.wire import Topics, device_prefix

        self._device = device
        self._device_public = device_public
        self._key = command_key
        self._counter = counter
        self._reply = X25519Identity.generate()
        self._topics = Topics(device_prefix("doorstep/{device}/", device))
        self._acks: dict[int, Any] = {}
        self._cond = threading.Condition()
        self.genuine: list[bytes] = []
        self.sent = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        subscribed = threading.Event()
        self._client = make_client(Broker(host="127.0.0.1", port=port),
                                   f"bench-signalling-{os.getpid()}-{random.randrange(1 << 30)}")

        def on_message(client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
            from doorstep.protocol.wire import Ack, open_sealed_answer
            try:
                ack = Ack.open(open_sealed_answer(bytes(msg.payload), self._reply),
                               self._device_public)
            except Exception:     # not ours to judge here; never kill paho's loop
                return
            with self._cond:
                self._acks[ack.counter] = ack
                self._cond.notify_all()

        self._client.on_message = on_message
        self._client.on_subscribe = lambda *a: subscribed.set()
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()
        self._client.subscribe(self._topics.ack, qos=1)
        if not subscribed.wait(10):
            raise DoorstepError("bench: the signalling client could not subscribe")

    def _command(self, key: Any, counter: int, sdp: str, fp: str) -> bytes:
        from doorstep.protocol.kinds import Action
        from doorstep.protocol.wire import Command, seal_command

        cmd = Command(device=self._device, counter=counter, action=Action.RTC_OFFER,
                      issued=time.time(), params=tuple(sorted({"sdp": sdp,
                                                               "fingerprint": fp}.items())))
        return seal_command(cmd.sign(key), self._device_public, self._reply.recipient)

    def offer(self, sdp: str, fp: str, timeout: float = 15.0) -> Any:
        """A genuine offer; the doorbell's signed answer (an ``Ack``)."""
        from doorstep.owner.command import next_counter

        counter = next_counter(self._counter)
        payload = self._command(self._key, counter, sdp, fp)
        self._client.publish(self._topics.cmd, payload, qos=1)
        self.genuine.append(payload)
        deadline = time.monotonic() + timeout
        with self._cond:
            while counter not in self._acks:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DoorstepError("bench: the doorbell did not answer the offer")
                self._cond.wait(left)
            return self._acks[counter]

    def start_flood(self, sdp: str, fp: str, rate: float = FLOOD_RATE) -> None:
        """Forged and replayed offers at ``rate`` a second until ``stop_flood``. The forged
        ones are sealed beforehand (50 of them, cycled), so the bench's own sealing is not
        what limits the rate."""
        from doorstep.protocol.keys import SigningKey

        forger = SigningKey.generate()
        base = int(time.time() * 1000) + 10 ** 6
        forged = [self._command(forger, base + i, sdp, fp) for i in range(50)]
        if not self.genuine:
            raise DoorstepError("bench: a flood needs a genuine offer to replay")

        def run() -> None:
            n = 0
            start = time.monotonic()
            while not self._stop.is_set():
                payload = (self.genuine[n // REPLAY_EVERY % len(self.genuine)]
                           if n % REPLAY_EVERY == 0 else forged[n % len(forged)])
                self._client.publish(self._topics.cmd, payload, qos=0)
                n += 1
                self.sent = n
                self._stop.wait(max(0.0, start + n / rate - time.monotonic()))

        self._stop.clear()
        self._thread = threading.Thread(target=run, name="bench-flood", daemon=True)
        self._thread.start()

    def stop_flood(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def close(self) -> None:
        self.stop_flood()
        self._client.loop_stop()
        self._client.disconnect()
