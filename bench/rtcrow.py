"""Row 13, WebRTC live view (issue 15, docs/rtc.md): glass-to-glass latency on loopback, p50 and
p99, and the CPU one session adds to the running 720p30 pipeline.

The doorbell runs as a child process (`python -m doorstep.bench.rtcrow serve CONFIG`), wired as
`doorstep run` wires it, on the 720p30 input paced to real time, with each frame stamped as the
source yields it: a 48-bit code of 40 px blocks drawn into the top-left of the picture (a 16-bit
frame counter and the wall clock in ms, mod 2^32). The bench process is the viewer: an aiortc
peer that signs its offer with the owner's command key, sends it through the broker as the app
does, decodes the doorbell's H.264 and reads each stamp back; latency = the viewer's clock when
the frame is decoded - the stamp. Both run on one machine, so they share one clock.

CPU: all the child's threads, pinned to one core, over the same window with no session (the
baseline), with one session, and after it hung up.

Bad input (bench/rtcbad.py): the pipeline's frame rate and the ring latency (mock button press
-> ring event at a subscriber of its head) with one healthy session, then with that session's
viewer frozen mid-call while forged and replayed offers arrive at 50/s, as a ratio."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from doorstep.bench.child import cpu_seconds
from doorstep.bench.report import Line, Row, Stat
from doorstep.capture.frames import Frame, FrameSource
from doorstep.core.errors import DoorstepError

if TYPE_CHECKING:
    from doorstep.bench.cli import Bench

ROW = 13
BLOCK = 40            # px per bit
BITS = 48             # 16-bit counter, 32-bit wall clock in ms
PER_LINE = 24


def stamp(y: np.ndarray, counter: int, ms: int) -> None:
    """Draw ``counter`` and ``ms`` into a Y plane (two lines of 24 blocks)."""
    code = ((counter & 0xFFFF) << 32) | (ms & 0xFFFFFFFF)
    for i in range(BITS):
        r, c = divmod(i, PER_LINE)
        y[r * BLOCK:(r + 1) * BLOCK, c * BLOCK:(c + 1) * BLOCK] = \
            235 if code >> (BITS - 1 - i) & 1 else 16


def read_stamp(y: np.ndarray) -> tuple[int, int]:
    """(counter, ms) from a decoded Y plane: each block's centre, thresholded."""
    code = 0
    q = BLOCK // 4
    for i in range(BITS):
        r, c = divmod(i, PER_LINE)
        centre = y[r * BLOCK + q:(r + 1) * BLOCK - q, c * BLOCK + q:(c + 1) * BLOCK - q]
        code = (code << 1) | int(centre.mean() > 128)
    return code >> 32, code & 0xFFFFFFFF


class StampedSource:
    """A FrameSource that stamps each frame of another as it yields it."""

    def __init__(self, inner: FrameSource) -> None:
        self.inner = inner

    @property
    def fps(self) -> Any:
        return self.inner.fps

    @property
    def size(self) -> tuple[int, int]:
        return self.inner.size

    def frames(self) -> Iterator[Frame]:
        h = self.size[1]
        for n, f in enumerate(self.inner.frames()):
            i420 = f.i420.copy()
            stamp(i420[:h], n, int(time.time() * 1000))
            yield Frame(f.index, f.pts, f.wall, i420, f.lores)

    def close(self) -> None:
        self.inner.close()


def serve(config: Path) -> int:
    """The child: `doorstep run`'s wiring on the stamped source, until SIGTERM."""
    from gpiozero.pins.mock import MockFactory

    from doorstep.agent.wiring import build
    from doorstep.bench.rtcbad import ring_button, rings_file
    from doorstep.capture.source import open_source
    from doorstep.config import load_config

    cfg = load_config(config)
    factory = MockFactory()
    service = build(cfg, source=StampedSource(open_source(cfg.camera)), pin_factory=factory)
    signal.signal(signal.SIGTERM, lambda *a: service.stop_event.set())
    ring_button(service, factory, rings_file(config))     # SIGUSR1: a press (rtcbad.py)
    counts = frames_file(config)

    def count() -> None:       # frames processed so far, for the bench's CPU per frame
        part = counts.with_suffix(".part")
        while not service.stop_event.wait(0.1):
            part.write_text(str(service.agent.frames))
            os.replace(part, counts)      # whole, so the bench never reads a half-written one
    threading.Thread(target=count, daemon=True).start()
    service.run(connect_timeout=10.0)
    return 0


def frames_file(config: Path) -> Path:
    return config.with_suffix(".frames")


class Viewer:
    """An aiortc peer on its own loop thread that reads every decoded frame's stamp."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.pc: Any = None
        self.latency_ms: list[float] = []
        self.recording = False
        self.frames = 0

    def run(self, coro: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _offer(self) -> str:
        from aiortc import RTCPeerConnection

        self.pc = RTCPeerConnection()
        self.pc.addTransceiver("video", direction="recvonly")

        @self.pc.on("track")
        def on_track(track: Any) -> None:
            self._task = asyncio.ensure_future(self._read(track))
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def _read(self, track: Any) -> None:
        from aiortc.mediastreams import MediaStreamError

        try:
            while True:
                frame = await track.recv()
                now = int(time.time() * 1000)
                y = frame.to_ndarray(format="gray")
                _, ms = read_stamp(y)
                self.frames += 1
                if self.recording:
                    self.latency_ms.append(float((now - ms) & 0xFFFFFFFF))
        except MediaStreamError:
            pass

    def offer(self) -> str:
        return str(self.run(self._offer()))

    def freeze(self) -> None:
        """Stop answering anything (no RTCP, no ICE, no DTLS) until ``close``: a phone that
        dropped off the network mid-call."""
        self._thaw = threading.Event()
        self.loop.call_soon_threadsafe(self._thaw.wait, 300)

    def accept(self, sdp: str) -> None:
        from aiortc import RTCSessionDescription

        self.run(self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer")))

    def close(self) -> None:
        thaw = getattr(self, "_thaw", None)
        if thaw is not None:
            thaw.set()
        if self.pc is not None:
            self.run(self.pc.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def _frames(path: Path) -> int:
    try:
        return int(path.read_text() or 0)
    except (OSError, ValueError):
        return 0


def _cpu_over(pid: int, counts: Path, seconds: float) -> tuple[float, float]:
    """(CPU ms per frame processed, frames per second) over ``seconds``. Per frame, since on a
    busy machine the paced pipeline may fall behind real time and do less work."""
    c0, f0, m0 = cpu_seconds(pid), _frames(counts), time.monotonic()
    time.sleep(seconds)
    c1, f1, m1 = cpu_seconds(pid), _frames(counts), time.monotonic()
    frames = max(1, f1 - f0)
    return 1000 * (c1 - c0) / frames, frames / (m1 - m0)


def rtc_row(bench: Bench) -> Row:
    from doorstep.agent.rtc import fingerprints
    from doorstep.bench.ring import head_subscriber
    from doorstep.bench.rtcbad import RingPhase, Signalling, ring_phase, rings_file
    from doorstep.config import load_config
    from doorstep.owner.command import NoAnswer, next_counter, send_command
    from doorstep.protocol.connect import Broker
    from doorstep.protocol.keys import SigningKey

    cfg = bench.config(bench.inputs.video["720p"], realtime=True, loop=True, motion=True,
                       button=True, repeat_window=0.0)
    device = next(line.split('"')[1] for line in cfg.read_text().splitlines()
                  if line.startswith("id = "))
    window = 3.0 if bench.plan.quick else 10.0
    key = SigningKey.load(bench.keys.dir / "owner-command.key")
    counter = bench.work / f"rtc-counter-{bench._n}.json"
    rounds = 1 if bench.plan.quick else bench.plan.repeats
    base: list[float] = []
    live: list[float] = []
    after: list[float] = []
    fps: list[float] = []
    latency: list[float] = []
    counts = frames_file(cfg)
    presses = min(bench.plan.presses, 20)
    quiet: list[RingPhase] = []        # rings with one healthy session, no flood (baseline)
    bad: list[RingPhase] = []          # rings during a flood of offers and a frozen viewer
    flooded = 0
    rng = random.Random(13)
    sub = head_subscriber(bench.port, bench.keys, load_config(cfg).topic_prefix)
    with open(bench.log, "ab") as out, contextlib.closing(sub):
        for _ in range(rounds):
            proc = subprocess.Popen(
                [sys.executable, "-m", "doorstep.bench.rtcrow", "serve", str(cfg)],
                stdout=out, stderr=out, env={**os.environ, "GPIOZERO_PIN_FACTORY": "mock"},
                preexec_fn=lambda: os.sched_setaffinity(0, {bench.cpu}))
            viewer = Viewer()
            try:
                counts.unlink(missing_ok=True)
                deadline = time.monotonic() + 60      # start-up, then the pipeline settles
                while _frames(counts) < 60 and time.monotonic() < deadline:
                    time.sleep(0.1)
                ms, rate = _cpu_over(proc.pid, counts, window)
                base.append(ms)
                fps.append(rate)
                sdp = viewer.offer()
                fp = next(f for f in sorted(fingerprints(sdp)) if f.startswith("sha-256 "))
                ack = None
                for _attempt in range(5):
                    try:
                        cmd, ack = send_command(
                            key, device, "rtc_offer", counter=next_counter(counter),
                            mqtt_cfg=Broker(host="127.0.0.1", port=bench.port),
                            device_public=bench.keys.device_public, answer_timeout=10,
                            params={"sdp": sdp, "fingerprint": fp})
                        break
                    except NoAnswer:
                        continue
                if ack is None or not ack.ok:
                    raise DoorstepError(f"row {ROW}: the doorbell did not take the offer: "
                                        f"{ack.reason if ack else 'no answer'}")
                viewer.accept(ack.data)
                deadline = time.monotonic() + 30
                while viewer.frames < 30 and time.monotonic() < deadline:
                    time.sleep(0.1)
                viewer.recording = True
                ms, rate = _cpu_over(proc.pid, counts, window)
                live.append(ms)
                fps.append(rate)
                viewer.recording = False
                latency += viewer.latency_ms
                send_command(key, device, "rtc_hangup", counter=next_counter(counter),
                             mqtt_cfg=Broker(host="127.0.0.1", port=bench.port),
                             device_public=bench.keys.device_public,
                             params={"session": str(cmd.counter)})
                time.sleep(2.0)
                ms, rate = _cpu_over(proc.pid, counts, window)
                after.append(ms)
                fps.append(rate)
                # bad input (rtcbad.py): rings and frame rate with one healthy session, then
                # with the same session's viewer frozen mid-call and a flood of forged and
                # replayed offers
                rings = rings_file(cfg)
                frozen = Viewer()
                signalling = Signalling(bench.port, device, bench.keys.device_public, key,
                                        counter)
                try:
                    sdp = frozen.offer()
                    fp = next(f for f in sorted(fingerprints(sdp)) if f.startswith("sha-256 "))
                    ack = signalling.offer(sdp, fp)
                    if not ack.ok:
                        raise DoorstepError(f"row {ROW}: the doorbell did not take the "
                                            f"offer of the viewer to freeze: {ack.reason}")
                    frozen.accept(ack.data)
                    deadline = time.monotonic() + 30
                    while frozen.frames < 10 and time.monotonic() < deadline:
                        time.sleep(0.05)
                    quiet.append(ring_phase(proc.pid, rings, sub, presses,
                                            lambda: _frames(counts), rng))
                    frozen.freeze()
                    signalling.start_flood(sdp, fp)
                    bad.append(ring_phase(proc.pid, rings, sub, presses,
                                          lambda: _frames(counts), rng))
                    signalling.stop_flood()
                    flooded += signalling.sent
                finally:
                    signalling.close()
                    frozen.close()
            finally:
                viewer.close()
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    lat = np.array(latency) if latency else np.array([float("nan")])
    # ms of CPU per frame -> % of a core at the input's 30 fps: ms/frame * 30 / 1000 * 100
    added = [3 * (b - a) for a, b in zip(base, live, strict=True)]
    return Row(ROW, "WebRTC live view", "the same pipeline with no session",
               f"the doorbell wired as `doorstep run` on {bench.inputs.describe('720p')}, "
               "paced to real time and looped, each frame stamped as the source yields it; "
               "an aiortc viewer in the bench process on loopback, signalling through the "
               f"broker; CPU of all the doorbell's threads per frame it processed, over "
               f"{window:g} s, pinned to one core, before, during and after one session", (
                   Line("CPU with one session", "ms/frame", Stat.of(live), Stat.of(base),
                        note=f"the pipeline ran at {min(fps):.1f} to {max(fps):.1f} frames/s "
                        "in the windows (30 is real time)"),
                   Line("added by the session at 30 fps", "% of a core", Stat.of(added),
                        target="<= 10"),
                   Line("glass to glass p50", "ms", Stat.of([float(np.percentile(lat, 50))]),
                        target="<= 500"),
                   Line("glass to glass p99", "ms", Stat.of([float(np.percentile(lat, 99))]),
                        note=f"{len(latency)} frames read back"),
                   Line("CPU after hanging up", "ms/frame", Stat.of(after), Stat.of(base),
                        note="returns to the baseline"),
                   *_bad_input_lines(quiet, bad, flooded),
               ))


def _bad_input_lines(quiet: list[Any], bad: list[Any], flooded: int) -> tuple[Line, ...]:
    """Frame rate and ring latency during bad input, each against the same with none."""
    def pct(phases: list[Any], q: float) -> Stat:
        pooled = [x for p in phases for x in p.latencies_ms]
        return Stat.of([float(np.percentile(pooled, q))] if pooled else [])

    presses = sum(len(p.latencies_ms) + p.missed for p in bad)
    missed = sum(p.missed for p in quiet + bad)
    during = (f"{flooded} forged (unknown key) and replayed offers at 50/s through the broker, "
              "and a viewer frozen mid-call (it is hung up on after rtc.idle_seconds)")
    return (
        Line("frame rate during a flood and a frozen viewer", "frames/s",
             Stat.of([p.fps for p in bad]), Stat.of([p.fps for p in quiet]),
             note=during + "; baseline: the same doorbell and session just before, the viewer "
             "still answering and no flood"),
        Line("ring latency p50 during them", "ms", pct(bad, 50), pct(quiet, 50),
             note=f"mock button press -> ring event at a subscriber of its head, {presses} "
             "presses during, as many before"),
        Line("ring latency p99 during them", "ms", pct(bad, 99), pct(quiet, 99),
             note=f"{missed} presses missed in all"),
    )

if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        sys.exit(serve(Path(sys.argv[2])))
    sys.exit(f"usage: {sys.argv[0]} serve CONFIG")
