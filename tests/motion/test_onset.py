"""How soon a small slow walker turns motion on (issue 17: onset maximum of 10 frames).

A small region counts once it has travelled a stretch (motion/objects.py): that already took
travel_least_seconds of steady travel, so it needs no further consecutive frames before the
trigger's start_frames are met."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from doorstep.config.schema import MotionConfig
from doorstep.motion import synth
from doorstep.motion.detector import MotionDetector
from doorstep.motion.evaluate import score
from doorstep.motion.harness import ours, run, synth_clips
from tests.motion.test_scenes import FPS, H, W, finish, person, scene


def test_a_small_walker_turns_motion_on_the_frame_its_stretch_is_travelled() -> None:
    rng = np.random.default_rng(13)
    bg = scene()
    det = MotionDetector(MotionConfig(start_frames=3), (W, H), FPS)
    appear = int(3 * FPS)
    first_stretch = first_on = None
    for i in range(int(8 * FPS)):
        img = bg.copy()
        if i >= appear:  # 6x16 px (0.13% of the frame), a third of a pixel a frame
            person(img, 150 + 0.33 * (i - appear), 150, 6, 16)
        t = i / FPS
        on = det.update(finish(img, rng), t).motion
        if first_stretch is None and any(tr.travelled == t for tr in det._tracker.tracks):
            first_stretch = i
        if on and first_on is None:
            first_on = i
    assert first_stretch is not None and first_stretch >= appear
    assert first_on == first_stretch, "no wait for start_frames after a travelled stretch"


def test_a_frame_that_counts_without_a_stretch_still_waits_for_start_frames() -> None:
    # a large person walking in counts at once, frame by frame: start_frames still apply
    rng = np.random.default_rng(12)
    bg = scene(grain=1.0)
    det = MotionDetector(MotionConfig(start_frames=3), (W, H), FPS)
    enter = int(3 * FPS)
    states = []
    for i in range(int(5 * FPS)):
        img = bg.copy()
        if i >= enter:
            person(img, -24 + 8 * (i - enter), 60, 30, 60)
        states.append(det.update(finish(img, rng), i / FPS).motion)
    first = states.index(True)
    assert enter + 2 <= first <= enter + 5


def test_a_small_walkers_own_steps_do_not_make_its_ground_busy(shared_data: Path) -> None:
    # the third walker of the 30 s small-walkers scene steps out of a doorway at about 0.3
    # work px a frame; its gait starts and stops the pixels at its edges three times in its
    # first 0.6 s, which made its own ground busy before it had travelled a stretch (onset
    # 14 frames, then 13 once a stretch no longer waits for start_frames)
    (clip,) = synth_clips(shared_data / "motion", 30.0, ("small-walkers",))
    on, _ = run(ours(MotionConfig(), synth.SIZE), list(clip.frames()), clip.labels.fps)
    s = score(on, clip.labels)
    assert s.caught == s.events == 3
    assert s.onsets[2] <= 10


def test_a_small_walker_coming_in_from_the_edge_is_measured_by_its_leading_edge(
        shared_data: Path) -> None:
    # the second walker of the 30 s small-walkers scene walks in from the frame's edge at about
    # 0.19 work px a frame: the centre of what shows moves at half that while the edge cuts it
    # off, and each step in its growing size restarted the measurement (onset 13 frames)
    (clip,) = synth_clips(shared_data / "motion", 30.0, ("small-walkers",))
    on, _ = run(ours(MotionConfig(), synth.SIZE), list(clip.frames()), clip.labels.fps)
    s = score(on, clip.labels)
    assert s.caught == s.events == 3
    assert s.onsets[1] <= 10
    assert s.false_starts == 0


def _walk_in_from_the_edge(seed: int, speed: float) -> int | None:
    """A small textured person (10x24 lores px, 0.3% of the frame) walking in from the left
    edge at ``speed`` lores px a frame: frames from when three columns of them show until
    motion turns on (None: never, within 5 s)."""
    rng = np.random.default_rng(seed)
    pattern = np.clip(40 + np.random.default_rng(seed + 10).normal(0, 25, (24, 10)), 0, 255)
    bg = scene(seed=seed)
    det = MotionDetector(MotionConfig(), (W, H), FPS)
    enter = int(4 * FPS)
    showing = enter + math.ceil(3 / speed)
    for i in range(int(9 * FPS)):
        img = bg.copy()
        if i >= enter:
            cols = np.arange(10) + math.floor(-10 + speed * (i - enter))
            inside = (cols >= 0) & (cols < W)
            img[150:174, cols[inside]] = pattern[:, inside]
        if det.update(finish(img, rng), i / FPS).motion and i >= enter:
            return i - showing
    return None


def test_a_small_slow_walker_coming_in_from_the_edge_counts_within_a_second() -> None:
    # what shows of them grows while the edge cuts off the rest, so the centre of what shows
    # moves at half their pace, and each jump in size restarted the measurement: before,
    # motion turned on 21 frames after they showed (1.4 s)
    for seed in (1, 2):
        onset = _walk_in_from_the_edge(seed, 0.4)
        assert onset is not None and onset <= 12, (seed, onset)


def _step_out_from_behind(seed: int, speed: float, post: int, way: int) -> int | None:
    """The same small textured person stepping out from behind an occluder inside the frame
    (a door frame, a pillar: columns left of ``post`` hide them when ``way`` is 1, right of it
    when -1) at ``speed`` lores px a frame: frames from when three columns show until motion
    turns on (None: never, within 5 s)."""
    rng = np.random.default_rng(seed)
    pattern = np.clip(40 + np.random.default_rng(seed + 10).normal(0, 25, (24, 10)), 0, 255)
    bg = scene(seed=seed)
    det = MotionDetector(MotionConfig(), (W, H), FPS)
    enter = int(4 * FPS)
    showing = enter + math.ceil(3 / speed)
    for i in range(int(9 * FPS)):
        img = bg.copy()
        if i >= enter:
            off = speed * (i - enter)
            if way > 0:
                cols = np.arange(10) + math.floor(post - 10 + off)
                shows = cols >= post
            else:
                cols = np.arange(10) + math.ceil(post - off)
                shows = cols < post
            img[150:174, cols[shows]] = pattern[:, shows]
        if det.update(finish(img, rng), i / FPS).motion and i >= enter:
            return i - showing
    return None


def test_a_small_walker_stepping_out_from_behind_an_occluder_is_measured_by_its_leading_edge(
        ) -> None:
    # as at the frame's edge, the centre of what shows moves at half their pace while the
    # occluder cuts off the rest, and the occluder's side of them stays put: before, motion
    # turned on 20 to 21 frames after they showed (seeds 1-3 stepping right; 21, 9, 21
    # stepping left)
    for way, post in ((1, 140), (-1, 180)):
        for seed in (1, 2, 3):
            onset = _step_out_from_behind(seed, 0.4, post, way)
            assert onset is not None and onset <= 13, (way, seed, onset)
