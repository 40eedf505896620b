"""A Python live view viewer that does what the app does (owner/hub/static/js/live.js): open
each live segment with the owner's identity, check the device's signature and the session's
replay rules, and play the fMP4 fragments, here by decoding them with PyAV. Also a frame
source with a counter drawn into each picture, so a viewer can tell which frame it shows and
glass-to-glass latency can be read back (bench row "live", tests/agent/test_live.py)."""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from doorstep.capture.frames import Frame
from doorstep.core.errors import SealError
from doorstep.core.fmp4 import boxes
from doorstep.protocol.age import X25519Identity
from doorstep.protocol.live import LiveViewer, open_live

BITS = 16                 # the counter: 16 bits, one block each, across the top of the picture
BLOCK = 16                # pixels per block side


def draw_counter(y: np.ndarray, n: int) -> None:
    """Draw ``n`` into a Y plane as BITS black or white blocks along the top row."""
    for b in range(BITS):
        y[0:BLOCK, b * BLOCK:(b + 1) * BLOCK] = 235 if (n >> b) & 1 else 16


def read_counter(y: np.ndarray) -> int:
    """The counter drawn by ``draw_counter``, from a decoded Y plane."""
    n = 0
    for b in range(BITS):
        block = y[BLOCK // 4:3 * BLOCK // 4, b * BLOCK + BLOCK // 4:(b + 1) * BLOCK - BLOCK // 4]
        if float(block.mean()) > 128:
            n |= 1 << b
    return n


def counter_frames(width: int, height: int, fps: float, *, count: int | None = None,
                   realtime: bool = True, lores: tuple[int, int] = (64, 48),
                   stamped: dict[int, float] | None = None) -> Iterator[Frame]:
    """Frames with a counter drawn in, over a moving gradient (so the encoder has work). With
    ``realtime``, paced to ``fps``; ``stamped`` gets each counter's wall time as it is made."""
    rng = np.random.default_rng(1)
    base = rng.integers(40, 200, size=(height, width), dtype=np.uint8)
    chroma = np.full((height // 2, width), 128, np.uint8)
    start = time.monotonic()
    n = 0
    while count is None or n < count:
        if realtime:
            delay = start + n / fps - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        y = np.roll(base, n * 4, axis=1)
        draw_counter(y, n)
        wall = time.time()
        if stamped is not None:
            stamped[n] = wall
        yield Frame(n, n / fps, wall, np.vstack([y, chroma]),
                    np.ascontiguousarray(y[::height // lores[1], ::width // lores[0]]
                                         [:lores[1], :lores[0]]))
        n += 1


def _avcc(init: bytes) -> tuple[int, list[bytes]]:
    """(NAL length size, [SPS..., PPS...]) from an init segment's avcC box."""
    at = init.find(b"avcC")
    if at < 0:
        raise SealError("live: no avcC in the init segment")
    p = at + 4
    size = (init[p + 4] & 3) + 1
    nals: list[bytes] = []
    count = init[p + 5] & 31
    p += 6
    for _ in range(count):
        (n,) = struct.unpack_from(">H", init, p)
        nals.append(init[p + 2:p + 2 + n])
        p += 2 + n
    count = init[p]
    p += 1
    for _ in range(count):
        (n,) = struct.unpack_from(">H", init, p)
        nals.append(init[p + 2:p + 2 + n])
        p += 2 + n
    return size, nals


def samples(fragments: bytes) -> list[bytes]:
    """The mdat payloads of a run of fragments (one frame each, as the live muxer writes)."""
    view = memoryview(fragments)
    out = []
    for box in boxes(fragments):
        if box.type == b"mdat":
            out.append(bytes(view[box.start + 8:box.end]))
    return out


@dataclass
class Shown:
    counter: int
    at: float          # wall time the decoded picture was ready


@dataclass
class PythonViewer:
    """Opens, checks and decodes one session's live segments as they arrive."""

    device: str
    session: str
    identities: Sequence[X25519Identity]
    device_public: Ed25519PublicKey
    now: Callable[[], float] = time.time
    refused: list[str] = field(default_factory=list)
    shown: list[Shown] = field(default_factory=list)
    # (when, seconds from its first frame's making): each segment's arrival here
    arrived: list[tuple[float, float]] = field(default_factory=list)
    segments: int = 0
    first_index: int | None = None

    def __post_init__(self) -> None:
        self._rules = LiveViewer(self.device, self.session)
        self._ctx: Any = None
        self._nal_size = 4
        self._params: list[bytes] = []

    def receive(self, payload: bytes) -> None:
        try:
            seg = open_live(payload, self.identities, self.device_public)
        except SealError as exc:
            self.refused.append(str(exc))
            return
        why = self._rules.check(seg.header, self.now())
        if why is not None:
            self.refused.append(why)
            return
        self.segments += 1
        now = self.now()
        self.arrived.append((now, now - seg.header.wall))
        if self.first_index is None:
            self.first_index = seg.header.index
        if seg.init:
            self._nal_size, self._params = _avcc(seg.init)
            if self._ctx is None:
                self._ctx = av.CodecContext.create("h264", "r")
                self._ctx.flags = int(av.codec.context.Flags.low_delay)
        for i, sample in enumerate(samples(seg.fragments)):
            self._decode(sample, keyframe=seg.header.key and i == 0)

    def _decode(self, sample: bytes, *, keyframe: bool) -> None:
        annexb = bytearray()
        if keyframe:
            for nal in self._params:
                annexb += b"\0\0\0\1" + nal
        p, n = 0, self._nal_size
        while p + n <= len(sample):
            size = int.from_bytes(sample[p:p + n], "big")
            annexb += b"\0\0\0\1" + sample[p + n:p + n + size]
            p += n + size
        for frame in self._ctx.decode(av.Packet(bytes(annexb))):
            y = frame.to_ndarray(format="gray")
            self.shown.append(Shown(read_counter(y), self.now()))


def main(argv: Sequence[str] | None = None) -> int:
    """The Python viewer as its own process (bench row 11), so its decoding is not counted as
    the agent's CPU: it watches one session for ``--seconds`` and writes what it showed."""
    import argparse
    import json
    import threading
    from pathlib import Path

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from doorstep.protocol.age import load_identities
    from doorstep.protocol.keys import parse_public_key

    p = argparse.ArgumentParser(prog="python -m doorstep.bench.liveview")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--device", required=True)
    p.add_argument("--session", required=True)
    p.add_argument("--identity", required=True)
    p.add_argument("--device-key", required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--ready", required=True, help="a file written once subscribed")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    viewer = PythonViewer(args.device, args.session, load_identities(args.identity),
                          parse_public_key(args.device_key))
    lock = threading.Lock()

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        with lock:
            viewer.receive(bytes(msg.payload))

    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.on_message = on_message
    subscribed = threading.Event()
    client.on_subscribe = lambda *a: subscribed.set()
    client.connect("127.0.0.1", args.port)
    client.subscribe(args.topic, qos=0)
    client.loop_start()
    if not subscribed.wait(10):
        return 1
    Path(args.ready).write_text("1")
    time.sleep(args.seconds)
    client.loop_stop()
    client.disconnect()
    with lock:
        Path(args.out).write_text(json.dumps({
            "shown": [[s.counter, s.at] for s in viewer.shown],
            "arrived": viewer.arrived, "refused": viewer.refused}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
