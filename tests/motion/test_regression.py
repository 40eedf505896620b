"""The detector on the labelled development footage meets the event targets (docs/motion.md).
Speed is measured by `doorstep eval`, not asserted here."""

from __future__ import annotations

from pathlib import Path

from doorstep.config.schema import MotionConfig
from doorstep.motion.cli import evaluate_dir


def test_dev_set_targets(shared_data: Path) -> None:
    scores = evaluate_dir(shared_data / "motion", MotionConfig(), baselines=False)["doorstep"]
    *per_sequence, total = scores
    assert len(per_sequence) >= 4
    for s in per_sequence:
        assert s.caught == s.events, f"{s.name}: missed an event"
        assert s.false_starts == 0, f"{s.name}: {s.false_starts} false start(s)"
    assert total.idle_on_share <= 0.03
    assert total.onset_median is not None and total.onset_median <= 2
