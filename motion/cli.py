"""The motion command-line tools: `doorstep detect VIDEO` (per-frame verdicts as JSON Lines),
`doorstep eval DIR` (score the detector and two baselines on labelled footage, on the
synthetic classes, and the leave-one-out check of the fitted numbers) and `doorstep synth OUT`
(write the synthetic classes as labelled videos)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import av
import cv2

from doorstep.capture.masks import rasterize
from doorstep.config.load import load_config
from doorstep.config.schema import Config, MotionConfig
from doorstep.core.errors import DoorstepError
from doorstep.motion import evaluate, harness, synth
from doorstep.motion.detector import MotionDetector
from doorstep.motion.harness import DEFAULT_LORES
from doorstep.motion.video import probe, read_lores

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `detect`, `eval` and `synth` subcommands to a `doorstep` argument parser."""
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
                    "latency, drops (times the detector let go during an event it had caught) "
                    "and ms/frame, per sequence and overall. The picamera2 example's "
                    "frame-difference rule and OpenCV MOG2 are scored in the same run. Timing "
                    "uses one OpenCV thread.")
    p.add_argument("dir", help="folder of NAME.json label files and their videos")
    p.add_argument("--config", metavar="FILE", help="doorstep.toml whose [motion] to use")
    p.add_argument("--json", metavar="FILE", help="also write all figures to FILE as JSON")
    p.add_argument("--no-baselines", action="store_true", help="score only our detector")
    p.add_argument("--synth", action="store_true",
                   help="also score the synthetic classes (screens, flicker, a sitter, "
                        "daylight, small walkers, a still visitor, IR noise, headlights, "
                        "insects, rain, snow; motion/synth.py), made from DIR's clips and "
                        "DIR/../video/vtest.avi, one row per class and detector")
    p.add_argument("--seconds", type=float, default=30.0, metavar="S",
                   help="length of each synthetic sequence (default 30)")
    p.add_argument("--loso", action="store_true",
                   help="leave-one-sequence-out check of the numbers fitted to data: each "
                        "sequence scored with the variant the others choose (over DIR's "
                        "sequences, and the synthetic ones with --synth)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "synth", help="write the synthetic motion classes as labelled videos",
        description="Render every synthetic class (motion/synth.py), alone and with "
                    "visitors, into OUT as NAME.mkv (lossless FFV1, 320x240 grey) and "
                    "NAME.json labels, so `doorstep eval OUT` and `doorstep detect` can read "
                    "them. Made from the clips in --from (the labelled motion set) and "
                    "../video/vtest.avi beside it.")
    p.add_argument("out", help="folder to write into (made if missing)")
    p.add_argument("--from", dest="source", required=True, metavar="DIR",
                   help="the labelled motion set, e.g. ../shared/data/motion")
    p.add_argument("--seconds", type=float, default=30.0, metavar="S")
    p.set_defaults(func=cmd_synth)


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


def evaluate_dir(folder: Path, motion_cfg: MotionConfig, size: tuple[int, int] = DEFAULT_LORES,
                 baselines: bool = True) -> dict[str, list[evaluate.Score]]:
    """Score our detector (and the baselines) on every labelled sequence in ``folder``.

    Returns detector name -> per-sequence scores followed by the overall score. Each video is
    decoded once; its lores frames are shared by all detectors.
    """
    results = harness.score_clips(harness.folder_clips(folder, size),
                                  harness.makers(motion_cfg, size, baselines))
    for scores in results.values():
        scores.append(evaluate.overall(scores))
    return results


def cmd_eval(args: argparse.Namespace) -> int:
    """`doorstep eval DIR`: print the tables; 0 when it ran, 2 on bad input."""
    try:
        cfg = _load(args.config)
        size = _lores_size(cfg, args.config is not None)
        folder = Path(args.dir)
        detectors = harness.makers(cfg.motion, size, not args.no_baselines)
        clips = harness.folder_clips(folder, size)
        results = harness.score_clips(clips, detectors)
        doc: dict[str, Any] = {"lores": list(size), "sensitivity": cfg.motion.sensitivity}
        rows = [(name, s) for name, scores in results.items()
                for s in [*scores, evaluate.overall(scores)]]
        print(evaluate.format_table(rows))
        doc["detectors"] = {name: [s.as_dict() for s in scores]
                            for name, scores in results.items()}
        every = list(clips)
        if args.synth:
            fake = harness.synth_clips(folder, args.seconds)
            fake_results = harness.score_clips(fake, harness.makers(
                cfg.motion, synth.SIZE, not args.no_baselines))
            print(f"\nSynthetic classes ({args.seconds:g} s each at {synth.FPS:g} fps, "
                  f"{synth.SIZE[0]}x{synth.SIZE[1]}; each class alone and with visitors, "
                  "pooled):")
            pooled = {name: harness.by_kind(fake, scores)
                      for name, scores in fake_results.items()}
            print(evaluate.format_table([(name, s) for name, scores in pooled.items()
                                         for s in scores], what="class"))
            doc["synthetic"] = {name: [s.as_dict() for s in scores]
                                for name, scores in fake_results.items()}
            doc["synthetic_classes"] = {name: [s.as_dict() for s in scores]
                                        for name, scores in pooled.items()}
            every += fake
        if args.loso:
            loso = harness.loso_check(every, cfg.motion, size)
            print(f"\nLeave-one-sequence-out ({len(every)} sequences):")
            print(harness.format_loso(loso, len(every)))
            doc["loso"] = {"shipped": loso.shipped.as_dict(),
                           "held_out": loso.held_out.as_dict(), "chosen": loso.chosen}
    except DoorstepError as exc:
        print(f"doorstep eval: {exc}", file=sys.stderr)
        return 2
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    """`doorstep synth OUT --from DIR`: write every synthetic sequence as NAME.mkv + NAME.json."""
    source = Path(args.source)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        for seq in synth.sequences(source, source.parent / "video" / "vtest.avi",
                                   seconds=args.seconds):
            name = seq.name.replace("+", "-")
            write_gray_video(out / f"{name}.mkv", seq.frames(), synth.FPS)
            truth = seq.labels
            doc = {"name": name, "video": f"{name}.mkv", "fps": truth.fps,
                   "frames": truth.frames, "size": list(synth.SIZE),
                   "events": [list(e) for e in truth.events], "margin": truth.margin,
                   "labels": None, "source": "doorstep synth (motion/synth.py)",
                   "notes": f"synthetic class {seq.kind}"}
            (out / f"{name}.json").write_text(json.dumps(doc, indent=1) + "\n",
                                              encoding="utf-8")
            print(f"{name}: {truth.frames} frames, events {list(truth.events)}")
    except (DoorstepError, OSError) as exc:
        print(f"doorstep synth: {exc}", file=sys.stderr)
        return 2
    return 0


def write_gray_video(path: Path, frames: Any, fps: float) -> None:
    """Write uint8 grey frames losslessly (FFV1 in Matroska)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=round(fps))
        stream.pix_fmt = "gray"
        first = True
        for img in frames:
            if first:
                stream.height, stream.width = img.shape
                first = False
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="gray")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry: `python -m motion.cli detect|eval|synth ...`."""
    parser = argparse.ArgumentParser(prog="doorstep", description="Doorstep motion tools")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main())
