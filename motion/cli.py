"""The motion command-line tools: `doorstep detect VIDEO` (per-frame verdicts as JSON Lines) and
`doorstep eval DIR` (score the detector and two baselines on labelled footage)."""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from doorstep.capture.masks import rasterize
from doorstep.config.load import load_config
from doorstep.config.schema import Config, MotionConfig
from doorstep.core.errors import DoorstepError
from doorstep.motion import evaluate
from doorstep.motion.baselines import FrameDiffBaseline, Mog2Baseline
from doorstep.motion.detector import MotionDetector, MotionResult
from doorstep.motion.video import probe, read_lores

log = logging.getLogger(__name__)

DEFAULT_LORES = (320, 240)


class _Detector(Protocol):
    def update(self, lores: np.ndarray, t: float) -> MotionResult: ...


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `detect` and `eval` subcommands to a `doorstep` argument parser."""
    p = sub.add_parser(
        "detect", help="run the motion detector on a video file, one JSON line per frame",
        description="Decode VIDEO (anything PyAV opens: mp4, avi, mkv...) and print one JSON "
                    'object per frame: {"frame", "t" (seconds), "motion" (trigger state after '
                    'hysteresis), "score" (percent of the watched area moving), "boxes" '
                    '([[x, y, w, h], ...] in source-frame pixels), "ms" (detector cost)}.')
    p.add_argument("video", help="video file to read")
    p.add_argument("--config", metavar="FILE",
                   help="doorstep.toml: its [motion] section, [privacy] masks and the camera's "
                        "lores size are used (default: built-in defaults)")
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser(
        "eval", help="score the detector and two baselines on labelled sequences",
        description="Score every labelled sequence (NAME.json + its video) in DIR as "
                    "DIR/README.md defines: events caught, false starts, idle on-share, onset "
                    "latency and ms/frame, per sequence and overall. The picamera2 example's "
                    "frame-difference rule and OpenCV MOG2 are scored in the same run. Timing "
                    "uses one OpenCV thread.")
    p.add_argument("dir", help="folder of NAME.json label files and their videos")
    p.add_argument("--config", metavar="FILE", help="doorstep.toml whose [motion] to use")
    p.add_argument("--json", metavar="FILE", help="also write all figures to FILE as JSON")
    p.add_argument("--no-baselines", action="store_true", help="score only our detector")
    p.set_defaults(func=cmd_eval)


def _load(path: str | None) -> Config:
    return load_config(path) if path else Config()


def _lores_size(cfg: Config, given: bool) -> tuple[int, int]:
    return (cfg.camera.lores_width, cfg.camera.lores_height) if given else DEFAULT_LORES


def cmd_detect(args: argparse.Namespace) -> int:
    """`doorstep detect VIDEO`: print one JSON line per decoded frame."""
    cv2.setNumThreads(1)
    try:
        cfg = _load(args.config)
        info = probe(args.video)
        size = _lores_size(cfg, args.config is not None)
        detector = MotionDetector(cfg.motion, size, info.fps)
        blackout = rasterize(cfg.privacy.masks, *size) if cfg.privacy.masks else None
        sx, sy = info.width / size[0], info.height / size[1]
        out = sys.stdout
        for frame in read_lores(args.video, size):
            lores = frame.lores
            if blackout is not None:
                lores = lores.copy()
                lores[blackout] = 0
            r = detector.update(lores, frame.t)
            boxes = [[round(x * sx), round(y * sy), round(w * sx), round(h * sy)]
                     for x, y, w, h in r.boxes]
            out.write(json.dumps({"frame": frame.index, "t": round(frame.t, 4),
                                  "motion": r.motion, "score": round(r.score, 3),
                                  "boxes": boxes, "ms": round(r.ms, 3)}) + "\n")
    except DoorstepError as exc:
        print(f"doorstep detect: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    return 0


def run_detector(make: Callable[[float], _Detector], frames: Sequence[np.ndarray],
                 fps: float) -> tuple[list[bool], float]:
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


def evaluate_dir(folder: Path, motion_cfg: MotionConfig, size: tuple[int, int] = DEFAULT_LORES,
                 baselines: bool = True) -> dict[str, list[evaluate.Score]]:
    """Score our detector (and the baselines) on every labelled sequence in ``folder``.

    Returns detector name -> per-sequence scores followed by the overall score. Each video is
    decoded once; its lores frames are shared by all detectors.
    """
    cv2.setNumThreads(1)
    makers: dict[str, Callable[[float], _Detector]] = {
        "doorstep": lambda fps: MotionDetector(motion_cfg, size, fps)}
    if baselines:
        makers[FrameDiffBaseline.name] = lambda fps: FrameDiffBaseline()
        makers[Mog2Baseline.name] = lambda fps: Mog2Baseline()
    results: dict[str, list[evaluate.Score]] = {name: [] for name in makers}
    label_files = sorted(folder.glob("*.json"))
    if not label_files:
        raise DoorstepError(f"{folder}: no NAME.json label files")
    for path in label_files:
        truth = evaluate.load_labels(path)
        frames = [f.lores for f in read_lores(folder / truth.video, size)]
        log.info("%s: %d frames decoded", truth.name, len(frames))
        for name, make in makers.items():
            on, ms = run_detector(make, frames, truth.fps)
            results[name].append(evaluate.score(on, truth, ms))
    for scores in results.values():
        scores.append(evaluate.overall(scores))
    return results


def cmd_eval(args: argparse.Namespace) -> int:
    """`doorstep eval DIR`: print the table; 0 when it ran, 2 on bad input."""
    try:
        cfg = _load(args.config)
        size = _lores_size(cfg, args.config is not None)
        results = evaluate_dir(Path(args.dir), cfg.motion, size, not args.no_baselines)
    except DoorstepError as exc:
        print(f"doorstep eval: {exc}", file=sys.stderr)
        return 2
    rows = [(name, s) for name, scores in results.items() for s in scores]
    print(evaluate.format_table(rows))
    if args.json:
        doc: dict[str, Any] = {"lores": list(size), "sensitivity": cfg.motion.sensitivity,
                               "detectors": {name: [s.as_dict() for s in scores]
                                             for name, scores in results.items()}}
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry: `python -m motion.cli detect|eval ...`."""
    parser = argparse.ArgumentParser(prog="doorstep", description="Doorstep motion tools")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main())
