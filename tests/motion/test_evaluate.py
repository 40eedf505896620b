"""Scoring rules of ../shared/data/motion/README.md on tiny hand-made cases."""

from __future__ import annotations

from doorstep.motion.evaluate import Labels, detector_events, overall, score

FPS = 5.0  # warm-up is the first 5 frames; detector runs < 10 frames apart merge


def labels(events: tuple[tuple[int, int], ...], frames: int = 40, margin: int = 1,
           marks: str | None = None) -> Labels:
    return Labels("t", "t.mkv", FPS, frames, events, margin, marks)


def on_at(frames: int, *ranges: tuple[int, int]) -> list[bool]:
    on = [False] * frames
    for s, e in ranges:
        for i in range(s, e + 1):
            on[i] = True
    return on


def test_caught_within_margin_with_onset_counted_from_the_event_start() -> None:
    s = score(on_at(40, (19, 25)), labels(((20, 24),), margin=1))
    assert (s.events, s.caught, s.onsets) == (1, 1, (0,))
    late = score(on_at(40, (23, 24)), labels(((20, 24),)))
    assert late.onsets == (3,)
    missed = score(on_at(40, (30, 31)), labels(((20, 24),)))
    assert missed.caught == 0 and missed.false_starts == 1


def test_warm_up_is_dont_care_and_events_straddling_it_start_at_its_end() -> None:
    truth = labels(((0, 2), (3, 20)))
    s = score(on_at(40, (0, 4), (6, 20)), truth)
    assert s.events == 1  # (0, 2) ends inside the warm-up
    assert s.onsets == (1,)  # counted from frame 5, window does not reach back
    assert s.false_starts == 0


def test_idle_on_share_and_question_marks() -> None:
    marks = "." * 30 + "?" * 10
    s = score(on_at(40, (30, 39)), labels((), marks=marks))
    assert s.idle_frames == 25 and s.idle_on == 0 and s.false_starts == 0
    s = score(on_at(40, (10, 14)), labels(()))
    assert s.idle_frames == 35 and s.idle_on == 5 and s.false_starts == 1
    assert abs(s.idle_on_share - 5 / 35) < 1e-9


def test_runs_closer_than_two_seconds_merge_and_only_idle_starts_are_false() -> None:
    assert detector_events(on_at(40, (5, 6), (12, 13), (30, 31)), FPS) == [(5, 13), (30, 31)]
    truth = labels(((8, 10),), margin=1)
    s = score(on_at(40, (9, 10), (14, 16)), truth)  # hold tail merges with the event's run
    assert s.false_starts == 0 and s.idle_on == 3


def test_detector_on_through_the_warm_up_has_no_false_start() -> None:
    s = score([True] * 40, labels(()))
    assert s.false_starts == 0 and s.idle_on_share == 1.0


def test_overall_pools_frames_and_onsets() -> None:
    a = score(on_at(40, (20, 24)), labels(((20, 24),)), ms_per_frame=1.0)
    b = score(on_at(40, (10, 12), (22, 24)), labels(((20, 24),)), ms_per_frame=3.0)
    total = overall([a, b])
    assert (total.events, total.caught, total.false_starts) == (2, 2, 1)
    assert total.idle_on == 3 and total.idle_frames == a.idle_frames + b.idle_frames
    assert total.onsets == (0, 2) and total.ms_per_frame == 2.0
