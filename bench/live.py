"""Row 11, live view through the broker (issue 15): glass to glass, from a frame's making to
its picture at a viewer, read back by the counter drawn into each frame (bench/liveview.py),
p50 and p99; at a Python viewer that does what the app does (open, check, decode with PyAV)
and in the app itself (headless Chromium through the hub, MSE, the counter read off a canvas
at each requestVideoFrameCallback); and the agent's CPU with one session against the same
pipeline without one, in the same run, with the frame rate of both."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from doorstep.bench.browser import chromium, have_chromium
from doorstep.bench.liveview import counter_frames
from doorstep.bench.report import Line, Row, Stat
from doorstep.bench.rig import config_text
from doorstep.core.errors import DoorstepError

if TYPE_CHECKING:
    from doorstep.agent.service import Service
    from doorstep.bench.cli import Bench
    from doorstep.capture.frames import Frame

log = logging.getLogger(__name__)

LIVE_ROW = 11
SESSION = "5e55101111e0be9c"
ALONE = "a10e0000c0ffee00"          # the session nobody decodes (the CPU windows)
BROWSER_SESSION_WAIT = 60.0
TICK = os.sysconf("SC_CLK_TCK")


class CounterSource:
    """A camera stand-in: frames made in real time with a counter drawn in; ``stamped`` maps
    each counter to the wall time its frame was made."""

    def __init__(self, width: int, height: int, fps: int) -> None:
        self.width, self.height, self._fps = width, height, fps
        self.stamped: dict[int, float] = {}
        self._stop = False

    @property
    def fps(self) -> Fraction:
        return Fraction(self._fps)

    @property
    def size(self) -> tuple[int, int]:
        return (self.width, self.height)

    def frames(self) -> Iterator[Frame]:
        for frame in counter_frames(self.width, self.height, self._fps, stamped=self.stamped,
                                    lores=(320, 180)):
            if self._stop:
                return
            yield frame

    def close(self) -> None:
        self._stop = True


def thread_cpu() -> float:
    """CPU seconds of this process's threads (the agent's, and the bench's sleeping ones)."""
    total = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])     # utime, stime
    return total / TICK


def _wait(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise DoorstepError(f"bench: timed out waiting for {what}")
        time.sleep(0.01)


def _window(service: Service, seconds: float) -> tuple[float, float]:
    """(CPU % of one core, frames/s) of the agent over ``seconds``."""
    cpu, fps, _ = _measure(service, seconds)
    return cpu, fps


def _measure(service: Service, seconds: float) -> tuple[float, float, float]:
    """(CPU % of one core, frames/s, CPU ms per frame) of the agent over ``seconds``. CPU
    per frame holds up on a machine busy with others' work, where a starved agent's CPU %
    and frame rate both fall."""
    c0, f0, t0 = thread_cpu(), service.agent.frames, time.monotonic()
    time.sleep(seconds)
    c1, f1, t1 = thread_cpu(), service.agent.frames, time.monotonic()
    return (100 * (c1 - c0) / (t1 - t0), (f1 - f0) / (t1 - t0),
            1000 * (c1 - c0) / max(1, f1 - f0))


def _rings(service: Service, sub: Any, n: int) -> list[float]:
    """Press the bell ``n`` times, a second apart; each press to its ring event's head at a
    subscriber on the broker, in ms."""
    from doorstep.agent.run import RingPress

    out = []
    for _ in range(n):
        before = {seq for kind, seq in list(service.agent.events) if kind == "ring"}
        t = time.monotonic()
        service.agent.ring(RingPress(time.time(), t))
        new = [seq for kind, seq in list(service.agent.events) if kind == "ring"
               and seq not in before]
        got = sub.wait_for(new[0], 10) if new else None
        if got is not None:
            out.append(1000 * (got[0] - t))
        time.sleep(1.0)
    time.sleep(3.0)          # the clip each ring started (1 s post-roll) ends and uploads
    return out


def _pcts(xs: list[float]) -> tuple[Stat, Stat]:
    if not xs:
        return Stat.of([]), Stat.of([])
    return (Stat(float(np.percentile(xs, 50)), min(xs), max(xs), len(xs)),
            Stat(float(np.percentile(xs, 99)), min(xs), max(xs), len(xs)))


def _viewer(bench: Bench, prefix: str, seconds: float) -> tuple[subprocess.Popen[bytes], Path]:
    """bench/liveview.py's PythonViewer in its own process (its decoding is not the agent's
    CPU), watching SESSION for ``seconds``; the file it writes its results to."""
    from doorstep.bench.app import APP_DEVICE
    from doorstep.protocol.keys import public_text

    work = bench.work / "live"
    ready, out = work / "viewer.ready", work / "viewer.json"
    ready.unlink(missing_ok=True)
    out.unlink(missing_ok=True)
    with open(bench.log, "ab") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "doorstep.bench.liveview", "--port", str(bench.port),
             "--topic", f"{prefix}live/{SESSION}", "--device", APP_DEVICE, "--session", SESSION,
             "--identity", str(bench.keys.dir / "owner.key"),
             "--device-key", public_text(bench.keys.device_public), "--seconds", str(seconds),
             "--ready", str(ready), "--out", str(out)], stdout=log_file, stderr=log_file)
    _wait(lambda: ready.exists() or proc.poll() is not None, 60, "the viewer process")
    if proc.poll() is not None:
        raise DoorstepError(f"bench: the live viewer exited {proc.returncode}; see {bench.log}")
    return proc, out


def live_row(bench: Bench) -> Row:
    from doorstep.agent.wiring import build
    from doorstep.bench.app import APP_DEVICE, HubProcess, _enrol
    from doorstep.config import parse_config
    from doorstep.owner.command import next_counter, send_command
    from doorstep.protocol.connect import Broker
    from doorstep.protocol.keys import SigningKey

    quick = bench.plan.quick
    width, height, fps = (640, 360, 15) if quick else (1280, 720, 30)
    seconds = 3.0 if quick else 20.0
    work = bench.work / "live"
    keys = bench.keys
    source = CounterSource(width, height, fps)
    cfg = parse_config(config_text(keys, work / "device", Path("/dev/null"), bench.port,
                                   realtime=True, motion=False, button=False, gop=1.0,
                                   preroll=1.0, postroll=1.0, repeat_window=0.0,
                                   device=APP_DEVICE, lores=(320, 180)),
                       source="bench live config")
    service = build(cfg, source=source)
    runner = threading.Thread(target=service.run, name="bench-live-agent",
                              kwargs={"connect_timeout": 10.0})
    runner.start()
    command_key = SigningKey.load(keys.dir / "owner-command.key")
    mqtt_cfg = Broker(host="127.0.0.1", port=bench.port)
    counter_file = work / "counter.json"

    def live(session: str, **params: str) -> None:
        _, ack = send_command(command_key, APP_DEVICE, "live", mqtt_cfg=mqtt_cfg,
                              counter=next_counter(counter_file),
                              device_public=keys.device_public,
                              params={"session": session, **params})
        if ack is None or not ack.ok:
            raise DoorstepError(f"bench: the doorbell refused live view: {ack}")

    lines: list[Line] = []
    browser_note = ""
    from doorstep.bench.ring import head_subscriber

    presses = 3 if quick else 20
    heads = head_subscriber(bench.port, keys, cfg.topic_prefix)
    try:
        _wait(lambda: service.uplink is not None and service.uplink.connected
              and service.agent.frames > 2 * fps, 30, "the agent")
        base_cpu, base_fps = _window(service, seconds)
        base_rings = _rings(service, heads, presses)
        proc, out = _viewer(bench, cfg.topic_prefix, seconds + 4.0)
        asked = time.time()
        live(SESSION)
        time.sleep(2.0)
        renewing = threading.Event()

        def renew() -> None:
            while not renewing.wait(10.0):
                live(SESSION)
        threading.Thread(target=renew, daemon=True).start()
        t0 = time.time()
        watched_cpu, watched_fps = _window(service, seconds)
        t1 = time.time()
        proc.wait(60)
        got = json.loads(out.read_text())
        rings = _rings(service, heads, presses)
        renewing.set()
        live(SESSION, stop="1")
        # the agent's own cost, with nobody decoding on this machine: windows with and
        # without a session, alternating, so a change in others' load falls on both
        on: list[tuple[float, float, float]] = []
        off: list[tuple[float, float, float]] = []
        for _ in range(1 if quick else 4):
            live(ALONE)
            time.sleep(1.0)
            on.append(_measure(service, 5.0))
            live(ALONE, stop="1")
            time.sleep(1.0)
            off.append(_measure(service, 5.0))
        if not got["shown"]:
            raise DoorstepError("bench: the live viewer showed nothing")
        first = got["shown"][0][1] - asked
        latency = [1000 * (at - source.stamped[n]) for n, at in got["shown"]
                   if t0 <= at <= t1 and n in source.stamped]
        wire = [1000 * d for at, d in got["arrived"] if t0 <= at <= t1]
        refused = got["refused"]
        p50, p99 = _pcts(latency)
        w50, w99 = _pcts(wire)
        r50, r99 = _pcts(rings)
        rb50, rb99 = _pcts(base_rings)
        floor = f"{1000 / fps:.0f} ms is one frame interval"
        added = Stat.of([m[2] for m in on]).median - Stat.of([m[2] for m in off]).median
        lines += [
            Line("glass to glass, Python viewer (PyAV): p50", "ms", p50, w50, target="<= 1500",
                 note=f"{len(latency)} frames; {len(refused)} refused; {floor}; "
                 "baseline: frame made -> its segment at the viewer's MQTT client"),
            Line("glass to glass, Python viewer (PyAV): p99", "ms", p99, w99, target="<= 1500"),
            Line("command -> first picture", "ms", Stat.of([1000 * first]),
                 note="the pre-roll ring's last keyframe and what followed"),
            Line("agent CPU per frame, one live session", "ms/frame",
                 Stat.of([m[2] for m in on]), Stat.of([m[2] for m in off]),
                 note=f"added {added:.2f} ms of CPU per frame: {added * fps / 10:.1f}% of a "
                 f"core at {fps} fps per session; {len(on)} alternating 5 s windows with and "
                 "without a session, nobody decoding on this machine"),
            Line("agent CPU, one live session", "% of a core", Stat.of([m[0] for m in on]),
                 Stat.of([m[0] for m in off])),
            Line("frame rate, one live session", "frames/s", Stat.of([m[1] for m in on]),
                 Stat.of([m[1] for m in off]), target="unchanged"),
            Line("agent CPU, the Python viewer decoding too", "% of a core",
                 Stat.of([watched_cpu]), Stat.of([base_cpu])),
            Line("frame rate, the Python viewer decoding too", "frames/s",
                 Stat.of([watched_fps]), Stat.of([base_fps]),
                 note="the viewer's process decodes the video on the same cores"),
            Line("ring press -> its head at MQTT, one live session: p50", "ms", r50, rb50,
                 target="unchanged", note=f"{len(rings)} presses; baseline: no session"),
            Line("ring press -> its head at MQTT, one live session: p99", "ms", r99, rb99,
                 target="unchanged")]
        if have_chromium():
            hub = HubProcess(work / "home", keys, bench.port, bench.log)
            driver = chromium(work / "profile")
            try:
                _enrol(driver, hub, keys, bench.port)
                driver.execute_script("window.__liveMeasure = true; "
                                      f"location.hash = '#live/{APP_DEVICE}/broker';")
                _wait(lambda: len(driver.execute_script(
                    "return (window.__liveStats || {shown: []}).shown") or []) > fps, 60,
                      "the app's first live frames")
                time.sleep(1.0)
                mark = len(driver.execute_script("return window.__liveStats.shown"))
                b_cpu, b_fps = _window(service, seconds)
                got = driver.execute_script("return window.__liveStats")
                driver.execute_script("location.hash = '#timeline'")
                seen = got["shown"][mark:]
                page = [1000 * (s["at"] - source.stamped[s["counter"]]) for s in seen
                        if s["counter"] in source.stamped]
                b50, b99 = _pcts(page)
                lines += [
                    Line("glass to glass, the app (Chromium, MSE): p50", "ms", b50, p50,
                         target="<= 1500", note=f"{len(page)} frames shown; "
                         f"{len(got['refused'])} refused; {got['jumps']} jumps to the live "
                         "edge; baseline: the Python viewer"),
                    Line("glass to glass, the app (Chromium, MSE): p99", "ms", b99, p99,
                         target="<= 1500"),
                    Line("agent CPU, one session watched in the app", "% of a core",
                         Stat.of([b_cpu]), Stat.of([base_cpu])),
                    Line("frame rate, one session watched in the app", "frames/s",
                         Stat.of([b_fps]), Stat.of([base_fps]),
                         note="Chromium decodes the video on the same cores")]
            finally:
                driver.quit()
                hub.stop()
        else:
            browser_note = "; the app's figure not measured: no chromium here"
    finally:
        heads.close()
        service.stop_event.set()
        runner.join(30)
    return Row(LIVE_ROW, "Live view through the broker", "the same agent and source without "
               "a live session (CPU, frame rate); the Python viewer (the app's figures)",
               f"{width}x{height} at {fps} fps made in real time with a 16-bit counter drawn "
               "in; libx264 superfast, zerolatency, GOP 1 s, 2500 kbit/s; a local Mosquitto; "
               f"{seconds:.0f} s windows; viewers on this machine (one clock){browser_note}",
               tuple(lines))
