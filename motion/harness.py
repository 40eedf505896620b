"""Running motion detectors over labelled footage for `doorstep eval`: the real sequences of a
folder, the synthetic classes of motion/synth.py, and the leave-one-sequence-out check of the
numbers that were chosen by looking at data. Each clip's frames are made once and shared by
every detector that runs on it."""

from __future__ import annotations

import dataclasses
import functools
import logging
import statistics
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from doorstep.config.schema import MotionConfig
from doorstep.core.errors import DoorstepError
from doorstep.motion import evaluate, synth
from doorstep.motion.baselines import FrameDiffBaseline, Mog2Baseline
from doorstep.motion.detector import PRESETS, MotionDetector, MotionResult, Tuning
from doorstep.motion.evaluate import Labels, Score
from doorstep.motion.video import read_lores

log = logging.getLogger(__name__)

DEFAULT_LORES = (320, 240)
OURS = "doorstep"


class Detector(Protocol):
    def update(self, lores: np.ndarray, t: float) -> MotionResult: ...


Maker = Callable[[float], Detector]  # frames per second -> a fresh detector


@dataclass(frozen=True)
class Clip:
    """A labelled sequence ready to run: its labels, its class, and how to get its frames."""

    labels: Labels
    kind: str  # the synthetic class, or the sequence's own name for real footage
    frames: Callable[[], Iterable[np.ndarray]]


@dataclass(frozen=True)
class Knob:
    """A number of the detector's Tuning that was chosen by looking at data, and the values
    the leave-one-out check chooses among (the shipped one and its neighbours)."""

    name: str
    values: tuple[float, ...]


# The numbers that were settled by comparing results on the development set and the synthetic
# classes (the rest follow from principles: noise multiples, a 1-2 px shift, time constants).
FITTED: tuple[Knob, ...] = (
    Knob("min_area_pct", (0.35, 0.5, 0.75)),
    Knob("busy_activity", (2.0, 3.0, 4.0)),
    Knob("travel_px", (1.5, 2.0, 3.0)),
    Knob("pace", (1.5, 2.0, 3.0)),
    Knob("travel_least_seconds", (0.4, 0.6, 0.8)),
    Knob("thing_share", (0.25, 0.35, 0.5)),
    Knob("exit_hold_seconds", (0.15, 0.3, 0.6)),
    Knob("young_seconds", (0.5, 1.0, 2.0)),
)


def ours(motion_cfg: MotionConfig, size: tuple[int, int],
         tuning: Tuning | None = None) -> Maker:
    return lambda fps: MotionDetector(motion_cfg, size, fps, tuning)


def makers(motion_cfg: MotionConfig, size: tuple[int, int],
           baselines: bool = True) -> dict[str, Maker]:
    """Our detector and, unless told not to, the two baselines."""
    found: dict[str, Maker] = {OURS: ours(motion_cfg, size)}
    if baselines:
        found[FrameDiffBaseline.name] = lambda fps: FrameDiffBaseline()
        found[Mog2Baseline.name] = lambda fps: Mog2Baseline()
    return found


def folder_clips(folder: Path, size: tuple[int, int] = DEFAULT_LORES) -> list[Clip]:
    """Every labelled sequence (NAME.json and its video) in ``folder``."""
    label_files = sorted(folder.glob("*.json"))
    if not label_files:
        raise DoorstepError(f"{folder}: no NAME.json label files")
    clips = []
    for path in label_files:
        truth = evaluate.load_labels(path)
        clips.append(Clip(truth, truth.name, functools.partial(_lores_frames,
                                                               folder / truth.video, size)))
    return clips


def _lores_frames(video: Path, size: tuple[int, int]) -> Iterator[np.ndarray]:
    return (f.lores for f in read_lores(video, size))


def synth_clips(motion_dir: Path, seconds: float = 30.0,
                kinds: tuple[str, ...] | None = None) -> list[Clip]:
    """The synthetic classes, made from the clips in ``motion_dir`` and the plaza clip beside
    it (``../video/vtest.avi``), at synth.SIZE."""
    plaza = motion_dir.parent / "video" / "vtest.avi"
    return [Clip(s.labels, s.kind, s.frames)
            for s in synth.sequences(motion_dir, plaza, kinds, seconds)]


def run(make: Maker, frames: Sequence[np.ndarray], fps: float) -> tuple[list[bool], float]:
    """Feed frames (timed by index / fps) to a fresh detector: per-frame on/off and the mean
    ms per frame."""
    det = make(fps)
    on: list[bool] = []
    ms: list[float] = []
    for i, lores in enumerate(frames):
        r = det.update(lores, i / fps)
        on.append(r.motion)
        ms.append(r.ms)
    return on, (statistics.fmean(ms) if ms else 0.0)


def score_clips(clips: Sequence[Clip], detectors: dict[str, Maker]) -> dict[str, list[Score]]:
    """Each detector's score on each clip, in the clips' order. Timing uses one OpenCV thread."""
    cv2.setNumThreads(1)
    results: dict[str, list[Score]] = {name: [] for name in detectors}
    for clip in clips:
        frames = list(clip.frames())
        log.info("%s: %d frames", clip.labels.name, len(frames))
        for name, make in detectors.items():
            on, ms = run(make, frames, clip.labels.fps)
            results[name].append(evaluate.score(on, clip.labels, ms))
    return results


def by_kind(clips: Sequence[Clip], scores: Sequence[Score]) -> list[Score]:
    """Scores pooled per class, in the order the classes first appear, then 'overall'."""
    kinds: dict[str, list[Score]] = {}
    for clip, s in zip(clips, scores, strict=True):
        kinds.setdefault(clip.kind, []).append(s)
    pooled = [dataclasses.replace(evaluate.overall(group), name=kind)
              for kind, group in kinds.items()]
    return [*pooled, evaluate.overall(list(scores))]


# -- leave one sequence out --------------------------------------------------------------------

def cost(s: Score) -> float:
    """What a choice of numbers is judged by: a missed event weighs most, then a false start,
    then each 3% of idle on-share, then onsets beyond the targets (median 2, max 10 frames),
    then a split event."""
    med = s.onset_median or 0.0
    worst = s.onset_max or 0
    return (10.0 * (s.events - s.caught) + 3.0 * s.false_starts + 100.0 * s.idle_on_share / 3.0
            + max(0.0, med - 2.0) + max(0.0, worst - 10.0) / 10.0 + 0.5 * s.drops)


def variants(base: Tuning, knobs: Sequence[Knob] = FITTED) -> dict[str, Tuning]:
    """The shipped tuning and, for each fitted knob, the tuning with that knob at each of its
    other values."""
    found = {"shipped": base}
    for knob in knobs:
        for v in knob.values:
            if v != getattr(base, knob.name):
                changes: dict[str, Any] = {knob.name: v}
                found[f"{knob.name}={v:g}"] = dataclasses.replace(base, **changes)
    return found


@dataclass(frozen=True)
class Loso:
    """The leave-one-sequence-out check: for each sequence, the variant the other sequences
    choose (least total cost), and how that choice scores on the sequence left out."""

    shipped: Score  # the shipped numbers on every sequence
    held_out: Score  # each sequence scored with the variant chosen without it
    chosen: dict[str, int]  # variant -> folds that chose it


def leave_one_out(per_variant: dict[str, list[Score]]) -> Loso:
    """Choose a variant per fold on the other folds; pool the held-out scores."""
    names = list(per_variant)
    folds = len(per_variant[names[0]])
    held: list[Score] = []
    chosen: dict[str, int] = {}
    for k in range(folds):
        def fit_cost(name: str, k: int = k) -> float:
            rest = [s for i, s in enumerate(per_variant[name]) if i != k]
            return cost(evaluate.overall(rest))
        best = min(names, key=lambda n: (fit_cost(n), n != "shipped"))
        chosen[best] = chosen.get(best, 0) + 1
        held.append(per_variant[best][k])
    return Loso(evaluate.overall(per_variant["shipped"]), evaluate.overall(held), chosen)


def loso_check(clips: Sequence[Clip], motion_cfg: MotionConfig,
               size: tuple[int, int]) -> Loso:
    """Run every variant of the tuning on every clip and leave each clip out in turn."""
    base = PRESETS[motion_cfg.sensitivity]
    detectors = {name: ours(motion_cfg, size, tu) for name, tu in variants(base).items()}
    return leave_one_out(score_clips(clips, detectors))


def format_loso(loso: Loso, folds: int) -> str:
    rows = [(name, dataclasses.replace(s, name=f"{folds} sequences"))
            for name, s in (("shipped numbers", loso.shipped), ("leave-one-out", loso.held_out))]
    table = evaluate.format_table(rows, what="scored on").splitlines()
    picks = ", ".join(f"{name} {n}" for name, n in sorted(loso.chosen.items(),
                                                             key=lambda kv: -kv[1]))
    knobs = "; ".join(f"{k.name} {'|'.join(f'{v:g}' for v in k.values)}" for k in FITTED)
    return "\n".join([f"fitted numbers and the values tried: {knobs}", *table,
                      f"chosen per fold: {picks}"])
