"""Row 6, motion onset: from the labelled first frame of each event in the shared motion set to
the sealed motion event arriving at an MQTT subscriber. The agent plays each sequence as fast
as it can; the delay is the frames between the labelled start and the frame that triggered the
event (at the sequence's own frame rate, as a live camera would see them) plus the measured
time from that frame leaving the source to the event's arrival. The baseline is the motion
detector's own first "on" frame for the same event: the floor the agent can reach."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from doorstep.agent.recorder import Trigger
from doorstep.agent.run import Observed
from doorstep.bench.rig import Keys, config_text
from doorstep.bench.ring import Subscriber
from doorstep.protocol.manifest import open_envelope
from doorstep.protocol.seal import identity_of
from doorstep.protocol.wire import unpack_head


@dataclass
class Onset:
    sequence: str
    start: int            # labelled start (or the warm-up's end)
    fps: float
    frames: int | None    # agent: triggering frame - start (None: no fresh motion event)
    ms: float | None
    floor_frames: int | None
    pipeline_ms: float | None = None


@dataclass
class OnsetRun:
    onsets: list[Onset] = field(default_factory=list)


class _StampedSource:
    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.stamps: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def frames(self) -> Iterator[Any]:
        for frame in self.inner.frames():
            self.stamps.append(time.monotonic())
            yield frame


def run_sequence(label_file: Path, broker_port: int, keys: Keys, workdir: Path) -> list[Onset]:
    from gpiozero.pins.mock import MockFactory

    from doorstep.agent.wiring import build
    from doorstep.capture.source import open_source
    from doorstep.config import parse_config
    from doorstep.motion.evaluate import warmup_frames

    labels = json.loads(label_file.read_text())
    video = label_file.parent / labels["video"]
    fps, margin = float(labels["fps"]), int(labels["margin"])
    cfg = parse_config(config_text(keys, workdir / label_file.stem, video, broker_port,
                                   button=False), source="bench onset config")

    opener = identity_of(keys.inbox)

    def parse(payload: bytes) -> int:
        envelope, _, _ = unpack_head(payload, opener)
        return open_envelope(envelope, keys.device_public).seq

    sub = Subscriber(broker_port, cfg.topic_prefix + "a/+/m", parse)
    source = _StampedSource(open_source(cfg.camera, privacy=cfg.privacy.masks))
    service = build(cfg, pin_factory=MockFactory(), source=source)
    # What the detector said on each frame, and the frame each motion event was decided on:
    # the agent hands the sealing to its commit thread and goes on, so the frame on which the
    # event shows up later says nothing.
    states: list[bool] = []
    triggers: list[int] = []

    def observe(seen: Observed) -> None:
        if seen.motion is not None:
            states.append(bool(seen.motion.motion))
        if seen.snapshot is Trigger.MOTION:
            triggers.append(seen.frame.index)
    service.agent.observers.append(observe)

    runner = threading.Thread(target=service.run, name="bench-onset",
                              kwargs={"connect_timeout": 10.0, "drain_timeout": 15.0})
    runner.start()
    runner.join()
    # one motion event per motion snapshot, sealed in order by the one commit thread
    seqs = [seq for kind, seq in service.agent.events if kind == "motion"]
    motion_at = list(zip(triggers, seqs, strict=True))   # (frame index, seq)
    arrivals = {seq: sub.wait_for(seq, 10) for _, seq in motion_at}
    sub.close()
    n = len(states)
    warm = warmup_frames(fps)
    onsets: list[Onset] = []
    for s, e in labels["events"]:
        if e < warm:
            continue
        start = max(s, warm)
        lo = warm if s < warm else max(warm, s - margin)
        hi = min(n - 1, e + margin)
        floor = next((i for i in range(lo, hi + 1) if states[i]), None)
        # An event already in view when the warm-up ends counts from the warm-up's end, and
        # a recording the agent started during the warm-up is its answer (onset 0).
        first = 0 if s < warm else lo
        hit = next(((k, seq) for k, seq in motion_at if first <= k <= hi), None)
        onset = Onset(label_file.stem, start, fps, None, None,
                      None if floor is None else max(0, floor - start))
        if hit is not None and arrivals.get(hit[1]) is not None:
            k, seq = hit
            arrived = arrivals[seq]
            assert arrived is not None
            pipeline = (arrived[0] - source.stamps[k]) * 1000
            onset.frames = max(0, k - start)
            onset.pipeline_ms = pipeline
            onset.ms = onset.frames / fps * 1000 + pipeline
        onsets.append(onset)
    return onsets


def run_onsets(motion_dir: Path, broker_port: int, keys: Keys, workdir: Path,
               names: list[str] | None = None) -> OnsetRun:
    run = OnsetRun()
    for label in sorted(motion_dir.glob("*.json")):
        if names is not None and label.stem not in names:
            continue
        run.onsets.extend(run_sequence(label, broker_port, keys, workdir))
    return run
