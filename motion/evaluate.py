"""Scoring a motion detector's per-frame on/off output against labelled footage, exactly as
../shared/data/motion/README.md defines it: warm-up, event margins, '?' labels, detector events
merged across short gaps, false starts, idle on-share and onset latency. Pure functions, no I/O
beyond reading the label file."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from doorstep.core.errors import ConfigError

MERGE_SECONDS = 2.0  # detector runs closer than this are one detector event


@dataclass(frozen=True)
class Labels:
    """The ground truth of one sequence (one NAME.json)."""

    name: str
    video: str
    fps: float
    frames: int
    events: tuple[tuple[int, int], ...]
    margin: int
    labels: str | None = None


@dataclass(frozen=True)
class Score:
    """How one detector did on one sequence (or, with ``name`` 'overall', on several)."""

    name: str
    events: int
    caught: int
    false_starts: int
    idle_frames: int
    idle_on: int
    onsets: tuple[int, ...]  # latency in frames of each caught event
    frames: int = 0
    ms_per_frame: float = 0.0
    drops: int = 0  # times the detector let go during an event it had caught (a split clip)

    @property
    def idle_on_share(self) -> float:
        return self.idle_on / self.idle_frames if self.idle_frames else 0.0

    @property
    def onset_median(self) -> float | None:
        return float(statistics.median(self.onsets)) if self.onsets else None

    @property
    def onset_max(self) -> int | None:
        return max(self.onsets) if self.onsets else None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "events": self.events, "caught": self.caught,
                "false_starts": self.false_starts, "idle_frames": self.idle_frames,
                "idle_on": self.idle_on, "idle_on_share": self.idle_on_share,
                "onset_median": self.onset_median, "onset_max": self.onset_max,
                "onsets": list(self.onsets), "drops": self.drops, "frames": self.frames,
                "ms_per_frame": self.ms_per_frame}


def load_labels(path: str | Path) -> Labels:
    """Read one NAME.json label file. Raises ConfigError naming the file and key at fault."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        events = tuple((int(s), int(e)) for s, e in doc["events"])
        labels = doc.get("labels")
        result = Labels(name=str(doc.get("name", path.stem)), video=str(doc["video"]),
                        fps=float(doc["fps"]), frames=int(doc["frames"]), events=events,
                        margin=int(doc.get("margin", 0)),
                        labels=str(labels) if labels is not None else None)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError([f"cannot read labels: {exc!r}"], source=str(path)) from exc
    if result.labels is not None and len(result.labels) != result.frames:
        raise ConfigError([f"labels: {len(result.labels)} characters for {result.frames} frames"],
                          source=str(path))
    return result


def warmup_frames(fps: float) -> int:
    """The don't-care frames at the start: the first second."""
    return round(fps)


def runs(on: Sequence[bool]) -> list[tuple[int, int]]:
    """Inclusive [first, last] ranges of consecutive on-frames."""
    out: list[tuple[int, int]] = []
    start: int | None = None
    for i, v in enumerate(on):
        if v and start is None:
            start = i
        elif not v and start is not None:
            out.append((start, i - 1))
            start = None
    if start is not None:
        out.append((start, len(on) - 1))
    return out


def detector_events(on: Sequence[bool], fps: float) -> list[tuple[int, int]]:
    """Runs of on-frames, with runs less than MERGE_SECONDS apart merged into one."""
    merged: list[tuple[int, int]] = []
    for s, e in runs(on):
        if merged and (s - merged[-1][1]) / fps < MERGE_SECONDS:
            merged[-1] = (merged[-1][0], e)
        else:
            merged.append((s, e))
    return merged


def idle_mask(truth: Labels, n: int) -> list[bool]:
    """True for each frame that is idle: after the warm-up, outside every event window and not
    labelled '?'."""
    warm = warmup_frames(truth.fps)
    idle = [i >= warm for i in range(n)]
    for s, e in truth.events:
        for i in range(max(0, s - truth.margin), min(n, e + truth.margin + 1)):
            idle[i] = False
    if truth.labels is not None:
        for i, c in enumerate(truth.labels[:n]):
            if c == "?":
                idle[i] = False
    return idle


def score(on: Sequence[bool], truth: Labels, ms_per_frame: float = 0.0) -> Score:
    """Score one detector's per-frame on/off output on one sequence."""
    n = len(on)
    warm = warmup_frames(truth.fps)
    counted = 0
    drops = 0
    onsets: list[int] = []
    for s, e in truth.events:
        if e < warm:
            continue  # ends inside the warm-up: not counted
        counted += 1
        start = max(s, warm)
        lo = warm if s < warm else max(warm, s - truth.margin)
        hi = min(n - 1, e + truth.margin)
        first = next((i for i in range(lo, hi + 1) if on[i]), None)
        if first is not None:
            onsets.append(max(0, first - start))
            drops += sum(1 for i in range(first + 1, min(n, e + 1)) if on[i - 1] and not on[i])
    idle = idle_mask(truth, n)
    false_starts = sum(1 for s, _ in detector_events(on, truth.fps) if idle[s])
    idle_frames = sum(idle)
    idle_on = sum(1 for i in range(n) if idle[i] and on[i])
    return Score(truth.name, counted, len(onsets), false_starts, idle_frames, idle_on,
                 tuple(onsets), n, ms_per_frame, drops)


def overall(scores: Sequence[Score]) -> Score:
    """Pooled figures over several sequences: idle on-share is total idle-on over total idle,
    onsets are all caught events together, ms/frame is weighted by frame count."""
    frames = sum(s.frames for s in scores)
    ms = sum(s.ms_per_frame * s.frames for s in scores) / frames if frames else 0.0
    return Score("overall", sum(s.events for s in scores), sum(s.caught for s in scores),
                 sum(s.false_starts for s in scores), sum(s.idle_frames for s in scores),
                 sum(s.idle_on for s in scores), tuple(o for s in scores for o in s.onsets),
                 frames, ms, sum(s.drops for s in scores))


def format_table(rows: Sequence[tuple[str, Score]], what: str = "sequence") -> str:
    """A plain-text table, one row per (detector, score)."""
    head = ("detector", what, "caught", "false starts", "idle on", "onset med",
            "onset max", "drops", "ms/frame")
    body = []
    for det, s in rows:
        med = "-" if s.onset_median is None else f"{s.onset_median:g}"
        mx = "-" if s.onset_max is None else str(s.onset_max)
        body.append((det, s.name, f"{s.caught}/{s.events}", str(s.false_starts),
                     f"{100 * s.idle_on_share:.2f}%", med, mx, str(s.drops),
                     f"{s.ms_per_frame:.3f}"))
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]

    def line(r: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(r, widths, strict=True)))

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(head), sep, *(line(r) for r in body)])
