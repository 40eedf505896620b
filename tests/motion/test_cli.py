"""`doorstep detect` on a real encoded video: one JSON line per decoded frame, boxes in
source-frame pixels."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

from doorstep.motion.cli import main


def write_video(path: Path, frames: int = 60, size: tuple[int, int] = (640, 480)) -> None:
    w, h = size
    rng = np.random.default_rng(0)
    base = rng.integers(60, 190, (h // 16, w // 16), dtype=np.uint8).repeat(16, 0).repeat(16, 1)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("ffv1", rate=25)
        stream.width, stream.height, stream.pix_fmt = w, h, "gray"
        for i in range(frames):
            img = base.copy()
            if i >= 30:
                x = 100 + 12 * (i - 30)
                img[200:360, x:x + 80] = 10  # something walks in from frame 30
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="gray")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def test_detect_prints_one_line_per_frame(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    video = tmp_path / "walk.mkv"
    write_video(video)
    assert main(["detect", str(video)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["frame"] for r in rows] == list(range(60))
    assert set(rows[0]) == {"frame", "t", "motion", "score", "boxes", "ms"}
    assert not any(r["motion"] for r in rows[:30])
    assert any(r["motion"] for r in rows[30:36])
    x, y, w, h = max((b for r in rows[32:] for b in r["boxes"]), key=lambda b: b[2] * b[3])
    assert y + h > 200 and y < 360 and x + w >= 100  # source pixels, not lores


def test_detect_reports_a_file_that_is_not_video(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "not.mp4"
    bad.write_text("hello")
    assert main(["detect", str(bad)]) == 2
    assert "not.mp4" in capsys.readouterr().err


def test_synth_writes_labelled_videos_that_eval_reads(tmp_path: Path, shared_data: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "synth"
    assert main(["synth", str(out), "--from", str(shared_data / "motion"),
                 "--seconds", "2"]) == 0
    labels = sorted(p.name for p in out.glob("*.json"))
    assert "rain-visitors.json" in labels and "rain.json" in labels
    doc = json.loads((out / "screen.json").read_text())
    assert doc["frames"] == 30 and doc["events"] == []
    with av.open(str(out / doc["video"])) as container:
        assert sum(1 for _ in container.decode(video=0)) == 30
    capsys.readouterr()
    assert main(["eval", str(out), "--no-baselines"]) == 0
    table = capsys.readouterr().out
    assert "rain-visitors" in table and "overall" in table
