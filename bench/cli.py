"""`doorstep bench`: the eight-row performance table (bench/README.md explains how to read it).
Each row runs its measured code and its baseline in the same run, on the same inputs."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from doorstep.bench.app import app_row
from doorstep.bench.child import ChildRun, doorstep_command, run_child
from doorstep.bench.inputs import Inputs, build_inputs, build_raw, labelled_set
from doorstep.bench.live import LIVE_ROW, live_row
from doorstep.bench.report import Line, Row, Stat, Table, machine_info, render
from doorstep.bench.rig import Keys, inbox_process, write_config
from doorstep.bench.rtcrow import ROW as RTC_ROW
from doorstep.bench.rtcrow import rtc_row
from doorstep.bench.segrow import SEGMENT_ROW, segment_row
from doorstep.broker import Mosquitto
from doorstep.core.errors import DoorstepError

log = logging.getLogger(__name__)
LAST_ROW = max(LIVE_ROW, SEGMENT_ROW, RTC_ROW)


@dataclass(frozen=True)
class Plan:
    """How long and how often each row measures."""

    quick: bool
    seconds: float        # length of the built inputs
    repeats: int
    cpu_window: tuple[float, float]
    idle_window: tuple[float, float]
    presses: int
    startups: int
    sequences: list[str] | None
    snapshots: int        # 1080p snapshots in a row (row 4)

    @classmethod
    def make(cls, quick: bool, presses: int | None = None) -> Plan:
        if quick:
            return cls(True, 3.0, 1, (0.5, 1.5), (0.5, 1.5), presses or 4, 1,
                       ["wallflower-wavingtrees"], 5)
        return cls(False, 10.0, 3, (1.0, 7.0), (1.0, 31.0), presses or 100, 5, None, 20)


class Bench:
    def __init__(self, out: Path, plan: Plan) -> None:
        self.out = out.resolve()
        self.plan = plan
        self.work = self.out / "run"
        shutil.rmtree(self.work, ignore_errors=True)  # the last run's keys, outboxes and logs
        self.work.mkdir(parents=True, exist_ok=True)
        self.keys = Keys.make(self.work / "keys")
        self.cpu = max(os.sched_getaffinity(0))
        self.log = self.work / "children.log"
        self._n = 0
        self.port = 0

    @cached_property
    def inputs(self) -> Inputs:
        """Built on first use, so rows that need none (`--rows 6`) do not wait for ffmpeg."""
        return build_inputs(self.out / "inputs", self.plan.seconds)

    # -- helpers ------------------------------------------------------------------------------
    def config(self, source: Path, **knobs: Any) -> Path:
        self._n += 1
        data = self.work / f"device-{self._n}"
        return write_config(self.work / f"config-{self._n}.toml", self.keys, data, source,
                            self.port, **knobs)

    def worker(self, mode: str, config: Path, *extra: str) -> dict[str, Any]:
        report = self.work / f"report-{self._n}-{mode}.json"
        cmd = [sys.executable, "-m", "doorstep.bench.worker", mode, "--config", str(config),
               "--report", str(report), "--cpu", str(self.cpu), *extra]
        with open(self.log, "ab") as logf:
            done = subprocess.run(cmd, stdout=logf, stderr=logf, check=False, timeout=600)
        if done.returncode != 0:
            raise DoorstepError(f"bench worker {mode} failed (exit {done.returncode}); see "
                                f"{self.log}")
        result: dict[str, Any] = json.loads(report.read_text())
        return result

    def agent_cli(self, config: Path) -> list[str]:
        return [*doorstep_command(), "run", "--config", str(config)]

    def bare_cli(self, config: Path, seconds: float = 0.0) -> list[str]:
        return [sys.executable, "-m", "doorstep.bench.worker", "bare", "--config", str(config),
                "--seconds", str(seconds)]

    # -- rows 1, 2 and 7 (per clip) -----------------------------------------------------------
    def throughput(self) -> tuple[Row, Row, dict[str, Any]]:
        lines: list[Line] = []
        runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for name in ("720p", "1080p"):
            cfg = self.config(self.inputs.video[name], postroll=120.0, clip_max=3.0)
            agent, bare = [], []
            for _ in range(self.plan.repeats):
                agent.append(self.worker("agent", cfg, "--ring-at-start"))
                bare.append(self.worker("bare", cfg))
            runs[name] = {"agent": agent, "bare": bare}
            fps = Stat.of([r["fps"] for r in agent])
            lines.append(Line(f"{name}30", "frames/s", fps, Stat.of([r["fps"] for r in bare]),
                              target=">= 0.8x",
                              note=f"{fps.median / 30:.1f}x real time (design target at 720p: "
                              ">= 3x on one core)"))
        row1 = Row(1, "Pipeline throughput", "bare PyAV decode->libx264 encode loop, same file "
                   "and encoder settings, same core",
                   f"{self.inputs.describe('720p')}; the same at 1920x1080; libx264 preset "
                   "superfast, zerolatency, subme=0 (the default: encoder.subpel = false), "
                   "2500 kbit/s, GOP 1 s; one CPU (affinity), so x264, "
                   "FFmpeg and OpenCV run one thread; as fast as possible; a ring on the first "
                   "frame and post-roll 120 s keep a clip recording (split every 3 s) and "
                   "uploading to a local Mosquitto", tuple(lines))
        a, b = runs["720p"]["agent"], runs["720p"]["bare"]

        def ms(stage: str, rs: list[dict[str, Any]]) -> Stat:
            return Stat.of([r["ms"].get(stage, float("nan")) for r in rs])

        row2 = Row(2, "Per-stage cost at 720p30", "the bare loop's decode and encode",
                   "the 720p runs of row 1 (same core); capture = decode + I420 + masks, "
                   "lores = make_lores to 320x240 (timed again on kept frames), seal = "
                   "fMP4 mux + age encryption + outbox writes, per frame while recording", (
                       Line("all stages", "ms/frame", Stat.of([1000 / r["fps"] for r in a]),
                            Stat.of([1000 / r["fps"] for r in b]),
                            note="whole loop per frame, including the ring thread and uplink"),
                       Line("capture", "ms/frame", ms("capture", a), ms("decode", b)),
                       Line("lores", "ms/frame", ms("lores", a)),
                       Line("motion", "ms/frame", ms("motion", a), target="<= 0.5"),
                       Line("encode", "ms/frame", ms("encode", a), ms("encode", b)),
                       Line("seal", "ms/frame", ms("seal", a))))
        return row1, row2, runs

    # -- row 3 --------------------------------------------------------------------------------
    def cpu_share(self) -> Row:
        cfg = self.config(self.inputs.video["720p"], realtime=True, loop=True)
        a, b = self.plan.cpu_window
        agent: list[ChildRun] = []
        bare: list[ChildRun] = []
        for _ in range(self.plan.repeats):
            agent.append(run_child(self.agent_cli(cfg), cpu=self.cpu, window=(a, b),
                                   log=self.log))
            bare.append(run_child(self.bare_cli(cfg, b + 5), cpu=self.cpu, window=(a, b),
                                  log=self.log))
        return Row(3, "CPU at real time", "the bare decode->encode loop paced the same way",
                   f"`doorstep run` on {self.inputs.describe('720p')}, paced to real time and "
                   f"looped; CPU time of all its threads from {a:g} s to {b:g} s after its "
                   "first frame; pinned to one CPU", (
                       Line("720p30", "% of a core",
                            Stat.of([100 * (r.cpu_share or float("nan")) for r in agent]),
                            Stat.of([100 * (r.cpu_share or float("nan")) for r in bare])),))

    # -- row 4 --------------------------------------------------------------------------------
    def memory(self) -> Row:
        cfg = self.config(self.inputs.video["1080p"], preroll=5.0)
        camera = self.config(self.inputs.camera, preroll=5.0)
        raw_file = build_raw(self.inputs, self.work / "raw")
        raw = self.config(raw_file, preroll=5.0)
        agent, bare, lean, imports, agent_imports = [], [], [], [], []
        cam_agent, cam_lean, raw_agent, raw_lean = [], [], [], []
        steady: list[float] = []
        default: list[float] = []
        for _ in range(self.plan.repeats):
            agent.append(run_child(self.agent_cli(cfg), log=self.log).maxrss_kb / 1024)
            bare.append(run_child(self.bare_cli(cfg), log=self.log).maxrss_kb / 1024)
            lean.append(run_child([*self.bare_cli(cfg), "--agent-setup"],
                                  log=self.log).maxrss_kb / 1024)
            cam_agent.append(run_child(self.agent_cli(camera), log=self.log).maxrss_kb / 1024)
            cam_lean.append(run_child([*self.bare_cli(camera), "--agent-setup"],
                                      log=self.log).maxrss_kb / 1024)
            raw_agent.append(run_child(self.agent_cli(raw), log=self.log).maxrss_kb / 1024)
            raw_lean.append(run_child([*self.bare_cli(raw), "--agent-setup"],
                                      log=self.log).maxrss_kb / 1024)
            imports.append(self._imports_rss("imports") / 1024)
            steady.append(self.worker("snapshots", cfg, "--count", str(self.plan.snapshots),
                                      "--steady-malloc")["growth_kb"] / 1024)
            default.append(self.worker("snapshots", cfg, "--count",
                                       str(self.plan.snapshots))["growth_kb"] / 1024)
            agent_imports.append(self._imports_rss("agent-imports") / 1024)
        raw_file.unlink()  # 0.9 GB
        note = ("the pre-roll ring only fills after 7 s (5 s + 2 GOPs); the quick input is "
                "shorter" if self.plan.quick else "")
        floor = Stat.of([a + b - c for a, b, c in zip(lean, agent_imports, imports, strict=True)])
        return Row(4, "Peak resident memory", "the bare decode->encode loop at 1080p, as is and "
                   "set up as the agent is (slice-threaded decoder, no transparent huge "
                   "pages, a fixed mmap threshold); a Python that only imports av, numpy and "
                   "cv2, and one that imports what `doorstep run` loads",
                   f"`doorstep run` on {self.inputs.describe('1080p')}, 5 s pre-roll, as fast as "
                   f"possible, all {os.cpu_count()} CPUs; the process's own peak RSS (VmHWM)", (
                       Line("1080p30", "MB", Stat.of(agent), Stat.of(bare), target="< 150 MB",
                            note=note),
                       Line("vs the loop set up as the agent", "MB", Stat.of(agent),
                            Stat.of(lean)),
                       Line("vs imports only", "MB", Stat.of(agent), Stat.of(imports)),
                       Line("vs the agent's imports", "MB", Stat.of(agent),
                            Stat.of(agent_imports)),
                       Line("vs that loop + the agent's libraries", "MB", Stat.of(agent),
                            floor, note="the floor: that loop, plus what `doorstep run`'s "
                            "imports add over av, numpy and cv2; what is above it is the "
                            "agent's own state (pre-roll, muxer, sealing, MQTT, motion)"),
                       Line("1080p30 camera-like stream", "MB", Stat.of(cam_agent),
                            Stat.of(cam_lean), target="< 150 MB",
                            note="the same pictures re-encoded without B-frames, as IP and USB "
                            "cameras send them; baseline: the loop set up as the agent"),
                       Line("1080p30 raw camera frames", "MB", Stat.of(raw_agent),
                            Stat.of(raw_lean), target="< 150 MB",
                            note="the same pictures as raw I420 frames (YUV4MPEG2), as a Pi "
                            "camera module hands them over: no decoder; libx264 encodes, as on "
                            "a Pi 5. picamera2's and libcamera's own memory is not in it"),
                       Line(f"{self.plan.snapshots} snapshots in a row: growth", "MB",
                            Stat.of(steady), Stat.of(default),
                            note="resident after the last 1080p thumbnail + JPEG minus after "
                            "the first, with `doorstep run`'s fixed mmap threshold; baseline: "
                            "glibc's default (a threshold that rises to the largest block "
                            "freed)")))

    def _imports_rss(self, mode: str) -> int:
        """The imports-only Python's own VmHWM, which it reports itself as it exits (it lives
        too briefly to sample, and its ru_maxrss would carry this process's image)."""
        report = self.work / f"report-{mode}.json"
        with open(self.log, "ab") as logf:
            subprocess.run([sys.executable, "-m", "doorstep.bench.worker", mode, "--report",
                            str(report)], stdout=logf, stderr=logf, check=True, timeout=120)
        return int(json.loads(report.read_text())["vm_hwm_kb"])

    # -- row 5 --------------------------------------------------------------------------------
    def ring(self) -> Row:
        from doorstep.bench.ringrow import ring_row
        return ring_row(self.port, self.keys, self.work, self.inputs.video["720p"],
                        self.plan.presses)

    # -- row 6 --------------------------------------------------------------------------------
    def onset(self) -> Row:
        from doorstep.bench.onset import run_onsets

        labelled = labelled_set()
        if labelled.path is None:  # a clone without the shared data: not measured, not failed
            log.warning("bench: row 6 not measured, no labelled set: %s", labelled.why)
            return Row.not_measured(6, "Motion onset", "no labelled set", labelled.why)
        motion_dir = labelled.path
        run = run_onsets(motion_dir, self.port, self.keys, self.work / "onset",
                         self.plan.sequences)
        found = [o for o in run.onsets if o.ms is not None]
        floor_ms = [o.floor_frames / o.fps * 1000 for o in run.onsets
                    if o.floor_frames is not None]
        names = sorted({o.sequence for o in run.onsets})
        note = f"{len(found)} of {len(run.onsets)} labelled events got a motion event"
        pipe = [o.pipeline_ms for o in found if o.pipeline_ms is not None]
        return Row(6, "Motion onset", "the motion detector's own first 'on' frame for the same "
                   "event (no recorder, sealing or MQTT)",
                   f"{', '.join(names)} from {motion_dir.name}/ (their own sizes and frame "
                   "rates), played as fast as possible; ms = frames at the sequence's fps + "
                   "measured time from that frame to the event at the subscriber; events "
                   "already in view at start count from the warm-up's end", (
                       Line("labelled start -> event", "ms",
                            Stat.of([o.ms for o in found if o.ms is not None]),
                            Stat.of(floor_ms), note=note),
                       Line("in frames", "frames",
                            Stat.of([o.frames for o in found if o.frames is not None]),
                            Stat.of([o.floor_frames for o in run.onsets
                                     if o.floor_frames is not None]), target="<= 2 median"),
                       Line("of which frame -> subscriber", "ms", Stat.of(pipe))))

    # -- rows 7 and 8 -------------------------------------------------------------------------
    def wear(self, throughput: dict[str, Any]) -> Row:
        cfg = self.config(self.inputs.still, realtime=True, loop=True)
        a, b = self.plan.idle_window
        agent = run_child(self.agent_cli(cfg), window=(a, b), log=self.log)
        bare = run_child(self.bare_cli(cfg, b + 5), window=(a, b), log=self.log)

        def per_hour(r: ChildRun) -> float:
            return (r.write_bytes or 0) / (r.window or 1) * 3600

        runs = throughput["720p"]["agent"]
        per_clip = [r["write_bytes"] / r["clips"] for r in runs if r["clips"]]
        sealed = [r["clip_bytes"] / r["clips"] for r in runs if r["clips"]]
        return Row(7, "SD wear", "the bare loop (idle); the sealed clip's own size (per clip)",
                   f"write_bytes from /proc/PID/io. Idle: `doorstep run` on a still 720p30 "
                   f"scene (no motion) in real time, {b - a:g} s, scaled to an hour. Per clip: "
                   "row 1's 720p runs (3 s clips, ring event and snapshot included)", (
                       Line("idle", "bytes/hour", Stat.of([per_hour(agent)]),
                            Stat.of([per_hour(bare)])),
                       Line("per clip", "bytes", Stat.of(per_clip), Stat.of(sealed),
                            note="ratio = write amplification")))

    def startup(self) -> Row:
        cfg = self.config(self.inputs.video["720p"])
        agent, bare = [], []
        for _ in range(self.plan.startups):
            agent.append(run_child(self.agent_cli(cfg), stop_after_ready=0.0,
                                   log=self.log).startup * 1000)
            bare.append(run_child(self.bare_cli(cfg), stop_after_ready=0.0,
                                  log=self.log).startup * 1000)
        return Row(8, "Start-up", "the bare loop: start to its first encoded frame",
                   "process start -> READY=1 on $NOTIFY_SOCKET (sent after the first processed "
                   f"frame, as systemd sees it); `doorstep run` on the 720p input; "
                   f"{self.plan.startups} starts", (
                       Line("to first frame", "ms", Stat.of(agent), Stat.of(bare)),))

    def inbox(self) -> Row:
        from doorstep.bench.inbox import inbox_lookup
        sizes = (1_000, 10_000) if self.plan.quick else (100_000, 1_000_000)
        return inbox_lookup(self.work, sizes, 200 if self.plan.quick else 2000)

    # -- all ----------------------------------------------------------------------------------
    def run(self, rows: set[int]) -> Table:
        started = time.monotonic()
        table = Table(machine_info(), self.plan.quick)
        with Mosquitto() as broker, inbox_process(self.keys, self.work / "inbox",
                                                  broker.port):
            self.port = broker.port
            steps: list[tuple[int, Callable[[], list[Row]]]] = []
            cache: dict[str, Any] = {}

            def through() -> list[Row]:
                r1, r2, runs = self.throughput()
                cache["runs"] = runs
                return [r for r in (r1, r2) if r.number in rows]

            if rows & {1, 2, 7}:
                steps.append((1, through))
            steps += [(3, lambda: [self.cpu_share()]), (4, lambda: [self.memory()]),
                      (5, lambda: [self.ring()]), (6, lambda: [self.onset()]),
                      (7, lambda: [self.wear(cache["runs"])]), (8, lambda: [self.startup()]),
                      (9, lambda: [self.inbox()]), (10, lambda: [app_row(self)]),
                      (LIVE_ROW, lambda: [live_row(self)]),
                      (SEGMENT_ROW, lambda: [segment_row(self.port, self.keys, self.work,
                                                         self.inputs.video["720p"],
                                                         self.plan.presses)]),
                      (RTC_ROW, lambda: [rtc_row(self)])]
            for number, step in steps:
                if number not in rows and number != 1:
                    continue
                t = time.monotonic()
                for row in step():
                    table.rows.append(row)
                log.info("bench: row %d done in %.1f s", number, time.monotonic() - t)
        table.rows.sort(key=lambda r: r.number)
        table.seconds = time.monotonic() - started
        return table


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bench", help="measure Doorstep against its floor and its peers",
                       description="The performance table: each row's figure, its baseline "
                       "measured in the same run, and the ratio, as a table on stdout and JSON "
                       "in a file. See bench/README.md.")
    p.add_argument("--quick", action="store_true",
                   help="a few seconds per row (CI: proves every row still measures)")
    p.add_argument("--out", default="bench-out", metavar="DIR",
                   help="inputs, work files and results (default: bench-out)")
    p.add_argument("--json", metavar="FILE",
                   help="write the JSON here (default: DIR/bench-<time>.json and DIR/latest.json)")
    p.add_argument("--rows", default=f"1-{LAST_ROW}", metavar="LIST",
                   help="rows to run, e.g. 1,5 or 3-4 (default: all)")
    p.add_argument("--presses", type=int, metavar="N", help="ring presses per case (row 5)")
    p.set_defaults(func=run)


def parse_rows(text: str) -> set[int]:
    rows: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        try:
            rows.update(range(int(lo), int(hi or lo) + 1))
        except ValueError as exc:
            raise DoorstepError(f"--rows: {part!r} is not a row number or range") from exc
    if not rows <= set(range(1, LAST_ROW + 1)):
        raise DoorstepError(f"--rows: rows are 1 to {LAST_ROW}, not "
                            f"{sorted(rows - set(range(1, LAST_ROW + 1)))}")
    return rows


def run(args: argparse.Namespace) -> int:
    if not getattr(args, "verbose", False):
        # The agents run in this process for rows 5 and 6: keep their INFO lines out of the
        # table's way, and keep the bench's own progress lines.
        logging.getLogger().setLevel(logging.WARNING)
        log.setLevel(logging.INFO)
    try:
        rows = parse_rows(args.rows)
        bench = Bench(Path(args.out), Plan.make(args.quick, args.presses))
        table = bench.run(rows)
    except DoorstepError as exc:
        print(f"doorstep bench: {exc}", file=sys.stderr)
        return 1
    print(render(table))
    out = Path(args.out)
    targets = [Path(args.json)] if args.json else [
        out / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json", out / "latest.json"]
    for target in targets:
        table.write_json(target)
    print(f"\nJSON: {', '.join(str(t) for t in targets)}")
    # A row with no figure fails the run, unless its input is absent here (row 6 without the
    # labelled set), which the table states.
    return 0 if all(r.passed for r in table.rows) else 1
