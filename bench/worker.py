"""The measured processes: ``python -m bench.worker agent|bare|imports``. Each runs in its own
process (optionally pinned to one CPU before any codec library loads) and writes a JSON report.

- ``agent``: the real agent from ``agent.wiring.build`` on a config, with timers wrapped around
  its stages (source, lores, motion, encode, seal), a ring pressed on the first frame so a clip
  is always being recorded, and its own /proc/self/io.
- ``bare``: the floor, a bare PyAV decode->encode loop on the same file with the same encoder
  settings (read from the same config). Tells $NOTIFY_SOCKET READY=1 after its first frame, as
  the agent does, so start-up and CPU are measured the same way for both.
- ``imports``: a Python that imports av, numpy and cv2 and exits (the memory floor);
  ``agent-imports`` also imports everything `doorstep run` loads.
- ``snapshots``: the snapshot path (thumbnail and full JPEG) many times in a row, and how much
  more stays resident after the first, with or without `doorstep run`'s malloc setting.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def proc_io(pid: int | str = "self") -> dict[str, int]:
    """A process's /proc/PID/io counters (empty where the kernel does not offer them)."""
    try:
        text = Path(f"/proc/{pid}/io").read_text()
    except OSError:
        return {}
    return {k.strip(): int(v) for k, v in (ln.split(":") for ln in text.splitlines())}


def status_kb(field: str, pid: int | str = "self") -> int:
    """A memory figure (VmHWM, VmRSS...) of a process from /proc, in KiB; 0 once it has
    gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def vm_hwm_kb(pid: int | str = "self") -> int:
    """A process's peak resident set (VmHWM), in KiB."""
    return status_kb("VmHWM", pid)


def disk_writes(io: dict[str, int]) -> int:
    """Bytes that reach the disk: dirtied pages minus those dropped before writeback (a file
    deleted or replaced while its pages were still dirty never wears the card)."""
    return io.get("write_bytes", 0) - io.get("cancelled_write_bytes", 0)


def notify_ready() -> None:
    addr = os.environ.get("NOTIFY_SOCKET", "")
    if addr.startswith("/"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(b"READY=1", addr)


class Timers:
    """Seconds spent per stage, and how many calls."""

    def __init__(self) -> None:
        self.total: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def add(self, stage: str, seconds: float) -> None:
        self.total[stage] = self.total.get(stage, 0.0) + seconds
        self.calls[stage] = self.calls.get(stage, 0) + 1

    def wrap(self, stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(stage, time.perf_counter() - start)
        return timed


class TimedSource:
    """Wraps a FrameSource: times each frame's capture (decode, I420, masks, lores) and keeps a
    few luma planes to time the lores conversion on its own afterwards."""

    def __init__(self, inner: Any, timers: Timers, keep_every: int = 10, keep: int = 30) -> None:
        self.inner = inner
        self.timers = timers
        self.kept: list[Any] = []
        self._keep_every = keep_every
        self._keep = keep
        self.started: float | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def frames(self) -> Iterator[Any]:
        it = iter(self.inner.frames())
        self.started = time.perf_counter()
        n = 0
        while True:
            start = time.perf_counter()
            try:
                frame = next(it)
            except StopIteration:
                return
            self.timers.add("capture", time.perf_counter() - start)
            if n % self._keep_every == 0 and len(self.kept) < self._keep:
                self.kept.append(frame.y.copy())
            n += 1
            yield frame


class _Timed:
    """A stage with some of its methods timed; everything else passes through."""

    def __init__(self, inner: Any, timed: dict[str, Callable[..., Any]]) -> None:
        object.__setattr__(self, "_inner", inner)
        self.__dict__.update(timed)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._inner, name, value)       # e.g. a ring raising a clip's priority


class TimedStages:
    """``build(instrument=...)``: times the encoder, the detector and the clip sealing as the
    agent's wiring builds them, and the source through TimedSource."""

    def __init__(self, timers: Timers, clip_sizes: list[int]) -> None:
        self.timers = timers
        self.clip_sizes = clip_sizes
        self.source: TimedSource | None = None

    def __call__(self, name: str, stage: Any) -> Any:
        t = self.timers
        if name == "source":
            self.source = TimedSource(stage, t)
            return self.source
        if name == "encoder":
            return _Timed(stage, {"encode": t.wrap("encode", stage.encode)})
        if name == "detector":
            return _Timed(stage, {"update": t.wrap("motion", stage.update)})
        if name == "sealer":
            return _Timed(stage, {"clip": lambda info, **kw: self._clip(stage, info, **kw),
                                  "segment": lambda *a, **kw: self._segment(stage, *a, **kw)})
        return stage

    def _segment(self, sealer: Any, data: bytes, priority: Any, parent: str,
                 spare: frozenset[int] = frozenset()) -> Any:
        """A clip stored as segments (issue 15): each one's sealing and commit counts as
        "seal", and its ciphertext adds to its clip's size (a clip starts at parent "")."""
        start = time.perf_counter()
        item = sealer.segment(data, priority, parent, spare)
        self.timers.add("seal", time.perf_counter() - start)
        if not parent:
            self.clip_sizes.append(0)
        if self.clip_sizes:
            self.clip_sizes[-1] += int(item.size)
        return item

    def _clip(self, sealer: Any, info: Any, **kw: Any) -> Any:
        writer = sealer.clip(info, **kw)

        def closing() -> Any:
            start = time.perf_counter()
            item = writer.close()
            self.timers.add("seal", time.perf_counter() - start)
            self.clip_sizes.append(int(item.size))
            return item
        return _Timed(writer, {"write": self.timers.wrap("seal", writer.write),
                               "close": closing})


def run_agent(args: argparse.Namespace) -> dict[str, Any]:
    from gpiozero.pins.mock import MockFactory

    from doorstep.agent import memory
    from doorstep.agent.run import RingPress
    from doorstep.agent.wiring import build
    from doorstep.capture.lores import make_lores
    from doorstep.config import load_config

    cfg = load_config(args.config)
    memory.set_up()  # as `doorstep run` does
    timers = Timers()
    clip_sizes: list[int] = []
    timed = TimedStages(timers, clip_sizes)
    service = build(cfg, pin_factory=MockFactory(), instrument=timed)
    source = timed.source
    assert source is not None
    agent = service.agent

    marks: dict[str, float] = {}
    count = [0]

    def on_frame(frame: Any) -> None:
        if count[0] == 0 and args.ring_at_start:
            service.press(RingPress(time.time(), time.monotonic()))
        count[0] += 1
        marks["last"] = time.perf_counter()

    io0 = proc_io()
    service.run(on_frame=on_frame, connect_timeout=10.0, drain_timeout=args.drain,
                freeze_gc=True)  # as `doorstep run` does
    io1 = proc_io()
    frames = count[0]
    elapsed = marks.get("last", 0.0) - (source.started or 0.0)
    lores_size = (cfg.camera.lores_width, cfg.camera.lores_height)
    start = time.perf_counter()
    for y in source.kept:
        make_lores(y, lores_size)
    lores_s = (time.perf_counter() - start) / max(1, len(source.kept))
    ms = {k: 1000 * v / max(1, frames) for k, v in timers.total.items()}
    ms["lores"] = 1000 * lores_s
    ms["capture"] = ms.get("capture", 0.0) - ms["lores"]  # capture's own timer includes lores
    return {"frames": frames, "seconds": elapsed, "fps": frames / elapsed if elapsed else 0.0,
            "ms": ms, "clips": len(clip_sizes), "clip_bytes": sum(clip_sizes),
            "write_bytes": disk_writes(io1) - disk_writes(io0),
            "events": [list(e) for e in agent.events]}


def run_bare(args: argparse.Namespace) -> dict[str, Any]:
    from fractions import Fraction

    import av
    from av.video.frame import PictureType

    from doorstep.capture.encoder import TIME_BASE, EncoderSettings, _codec_context
    from doorstep.config import load_config

    cfg = load_config(args.config)
    if args.agent_setup:
        from doorstep.agent import memory
        memory.set_up()  # as `doorstep run` does: no huge pages, a fixed mmap threshold
    container = av.open(cfg.camera.source)
    stream = container.streams.video[0]
    stream.thread_type = "SLICE" if args.agent_setup else "AUTO"
    fps = Fraction(stream.average_rate or 30)
    w, h = stream.codec_context.width & ~1, stream.codec_context.height & ~1
    settings = EncoderSettings(w, h, fps, cfg.encoder.bitrate_kbps, cfg.encoder.gop_seconds,
                               cfg.encoder.preset, cfg.encoder.subpel)
    ctx = _codec_context("libx264", settings)  # the agent's own encoder settings
    ctx.open()
    timers = Timers()
    realtime = cfg.camera.realtime
    step = 1 / float(fps)
    frames, out_bytes = 0, 0
    io0 = proc_io()
    start = time.perf_counter()
    deadline = start + args.seconds if args.seconds else None
    while True:
        decoded = container.decode(stream)
        while True:
            t0 = time.perf_counter()
            try:
                vf = next(decoded)
            except StopIteration:
                break
            timers.add("decode", time.perf_counter() - t0)
            if realtime:
                due = start + frames * step
                now = time.perf_counter()
                if due > now:
                    time.sleep(due - now)
            if vf.format.name != "yuv420p" or (vf.width, vf.height) != (w, h):
                vf = vf.reformat(width=w, height=h, format="yuv420p")
            vf.pts = round(frames * step / TIME_BASE)
            vf.time_base = TIME_BASE
            vf.pict_type = PictureType.NONE  # no keyframes forced by the input's own GOP
            t0 = time.perf_counter()
            for p in ctx.encode(vf):
                out_bytes += p.size
            timers.add("encode", time.perf_counter() - t0)
            if frames == 0:
                notify_ready()
            frames += 1
            if deadline is not None and time.perf_counter() > deadline:
                break
        if not cfg.camera.loop or (deadline is not None and time.perf_counter() > deadline):
            break
        container.seek(0)
    elapsed = time.perf_counter() - start
    io1 = proc_io()
    container.close()
    ms = {k: 1000 * v / max(1, frames) for k, v in timers.total.items()}
    return {"frames": frames, "seconds": elapsed, "fps": frames / elapsed if elapsed else 0.0,
            "ms": ms, "bytes": out_bytes,
            "write_bytes": disk_writes(io1) - disk_writes(io0)}


WARM_FRAMES = 20


def run_snapshots(args: argparse.Namespace) -> dict[str, Any]:
    """The agent's snapshot path, ``args.count`` times in a row on decoded pictures of the
    configured source: how much more stays resident after the first one. With
    ``--steady-malloc`` as `doorstep run` sets it up; without, glibc's defaults."""
    import av
    import numpy as np

    from doorstep.agent.memory import steady_malloc
    from doorstep.capture.frames import Frame
    from doorstep.capture.snapshot import jpeg, thumbnail
    from doorstep.config import load_config

    if args.steady_malloc:
        steady_malloc()
    cfg = load_config(args.config)
    with av.open(cfg.camera.source) as container:
        stream = container.streams.video[0]
        stream.thread_type = "SLICE"
        decoded = container.decode(stream)
        for _ in range(WARM_FRAMES):  # the decoder's reference pictures are all allocated
            next(decoded)
        lores = np.zeros((cfg.camera.lores_height, cfg.camera.lores_width), np.uint8)
        rss: list[int] = []
        size = 0
        for i in range(args.count):
            frame = Frame(i, i / 30, 0.0, None, lores, av_frame=next(decoded))
            size += len(thumbnail(frame, cfg.clip.thumbnail_width, 80))
            size += len(jpeg(frame, cfg.clip.snapshot_quality))
            rss.append(status_kb("VmRSS"))
    return {"rss_kb": rss, "growth_kb": rss[-1] - rss[0], "bytes": size}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.worker")
    p.add_argument("mode", choices=["agent", "bare", "imports", "agent-imports", "snapshots"])
    p.add_argument("--config", help="doorstep.toml (agent and bare)")
    p.add_argument("--report", help="write the JSON report here")
    p.add_argument("--cpu", type=int, default=-1, help="pin to this CPU (-1: no pinning)")
    p.add_argument("--ring-at-start", action="store_true",
                   help="agent: press the doorbell on the first frame")
    p.add_argument("--drain", type=float, default=0.0, help="agent: drain timeout, s")
    p.add_argument("--seconds", type=float, default=0.0, help="bare: stop after this long")
    p.add_argument("--count", type=int, default=20, help="snapshots: how many in a row")
    p.add_argument("--steady-malloc", action="store_true",
                   help="snapshots: fix glibc's mmap threshold as `doorstep run` does")
    p.add_argument("--agent-setup", action="store_true",
                   help="bare: set up as the agent is (slice-threaded decoder, no transparent "
                   "huge pages, a fixed mmap threshold)")
    args = p.parse_args(argv)
    if args.cpu >= 0:
        # Before any codec library loads: x264 and FFmpeg size their thread pools from the
        # CPUs this process may use, so pinning also makes them single-threaded.
        os.sched_setaffinity(0, {args.cpu})
    import cv2
    if args.cpu >= 0:
        cv2.setNumThreads(1)
    if args.mode in ("imports", "agent-imports"):
        import av  # noqa: F401
        import numpy  # noqa: F401
        if args.mode == "agent-imports":  # everything `doorstep run` loads before its config
            import doorstep.agent.cli  # noqa: F401
        if args.report:
            Path(args.report).write_text(json.dumps({"vm_hwm_kb": vm_hwm_kb()}))
        return 0
    run = {"agent": run_agent, "bare": run_bare, "snapshots": run_snapshots}[args.mode]
    result = run(args)
    result["cpu_affinity"] = sorted(os.sched_getaffinity(0))
    text = json.dumps(result)
    if args.report:
        Path(args.report).write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
