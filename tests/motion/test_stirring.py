"""A person sitting nearly still must not start an event when a posture shift joins the
fragments they show now and then into one large region (issue 17: 0 false starts; "a nearly
still person keeps a clip going without re-triggering"). The place remembers where something
stirred in place and went without travelling (motion/objects.py, Tracker.stirred_under)."""

from __future__ import annotations

from pathlib import Path

from doorstep.config.schema import MotionConfig
from doorstep.motion import synth
from doorstep.motion.evaluate import score
from doorstep.motion.harness import ours, run, synth_clips
from doorstep.motion.objects import Region, Tracker

FPS = 15.0


def _tracker() -> Tracker:
    # the detector's own numbers at 160x120 work pixels (see MotionDetector.__init__)
    return Tracker(travel_px=2.0, small_px=8, window=1.5, linger=20.0, lost=0.7, pace=2.0,
                   least=0.6, frame=(160, 120), large_px=96)


def _region(x: int, y: int, w: int, h: int) -> Region:
    a = w * h // 2
    return Region(x, y, w, h, a, a, x + w / 2, y + h / 2)


def _stir_then_leave(tr: Tracker, frames: int, start: int = 0) -> int:
    """A small region stirring in place (a hand, a head) for ``frames``, then nothing for a
    second (the track is lost). Returns the next frame number."""
    for i in range(start, start + frames):
        tr.update([_region(80 + i % 2, 50, 6, 8)], i / FPS)
    end = start + frames + int(FPS)
    for i in range(start + frames, end):
        tr.update([], i / FPS)
    return end


def test_a_large_region_where_something_stirred_in_place_is_settled() -> None:
    tr = _tracker()
    i = _stir_then_leave(tr, 15)  # a second of stirring: longer than a stretch takes
    (big,) = tr.update([_region(70, 40, 24, 30)], i / FPS)
    assert tr.stirred_under(big)


def test_a_flake_seen_for_a_moment_leaves_no_mark() -> None:
    tr = _tracker()
    i = _stir_then_leave(tr, 3)  # a fifth of a second: snow, an insect, noise
    (big,) = tr.update([_region(70, 40, 24, 30)], i / FPS)
    assert not tr.stirred_under(big)


def test_someone_coming_in_at_the_frame_edge_is_never_settled() -> None:
    tr = _tracker()
    i = _stir_then_leave(tr, 15)
    (big,) = tr.update([_region(70, 40, 90, 30)], i / FPS)  # reaches the right edge
    assert not tr.stirred_under(big)


def test_the_mark_fades_after_the_linger_time() -> None:
    tr = _tracker()
    i = _stir_then_leave(tr, 15)
    for k in range(i, i + int(21 * FPS)):
        tr.update([], k / FPS)
    (big,) = tr.update([_region(70, 40, 24, 30)], (i + int(21 * FPS)) / FPS)
    assert not tr.stirred_under(big)


def test_a_sitters_posture_shift_starts_no_event_on_a_fresh_draw(shared_data: Path) -> None:
    # the 45 s draw of the sitter: at frame 297 the torso's fragments join into one large
    # region that hides the background (a thing, new, not at the edge). Before, that started
    # an event (idle on 4.85%); the sitter had stirred there, in place, 7 s earlier.
    clips = {c.labels.name: c for c in synth_clips(shared_data / "motion", 45.0, ("sitter",))}
    make = ours(MotionConfig(), synth.SIZE)
    alone = clips["sitter"]
    on, _ = run(make, list(alone.frames()), alone.labels.fps)
    s = score(on, alone.labels)
    assert s.false_starts == 0
    assert s.idle_on == 0
    # and visitors walking past the same sitter are still caught at once
    both = clips["sitter+visitors"]
    on, _ = run(make, list(both.frames()), both.labels.fps)
    s = score(on, both.labels)
    assert s.caught == s.events == 2
    assert s.false_starts == 0
    assert s.onset_max is not None and s.onset_max <= 10
