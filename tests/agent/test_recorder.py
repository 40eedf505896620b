"""The clip rules, driven step by step with no threads, clock or I/O."""

from __future__ import annotations

from doorstep.agent.recorder import (
    EndClip,
    Inputs,
    MarkClip,
    Recorder,
    StartClip,
    State,
    TakeSnapshot,
)
from doorstep.agent.recorder import Trigger as T


def run(rec: Recorder, steps: list[Inputs]) -> list[object]:
    out: list[object] = []
    for s in steps:
        out.extend(rec.step(s))
    return out


def frames(start: float, end: float, fps: float = 10, **kw: object) -> list[Inputs]:
    n = round((end - start) * fps)
    return [Inputs(t=start + i / fps, **kw) for i in range(n)]  # type: ignore[arg-type]


def test_motion_starts_a_clip_with_preroll_and_ends_after_postroll() -> None:
    rec = Recorder(preroll=5, postroll=3, max_seconds=60)
    actions = run(rec, frames(0, 10) + frames(10, 12, motion=True) + frames(12, 20))
    starts = [a for a in actions if isinstance(a, StartClip)]
    ends = [a for a in actions if isinstance(a, EndClip)]
    assert starts == [StartClip(1, start_from=5.0, trigger_t=10.0, trigger=T.MOTION)]
    assert len(ends) == 1
    # last motion frame at 11.9, post-roll 3 s: ends at the first frame >= 14.9
    assert abs(ends[0].end_t - 14.9) < 1e-6
    assert any(isinstance(a, TakeSnapshot) and a.trigger is T.MOTION for a in actions)
    assert rec.state is State.IDLE


def test_ring_during_motion_clip_marks_it_instead_of_starting_another() -> None:
    rec = Recorder(preroll=5, postroll=3, max_seconds=60)
    run(rec, frames(0, 10) + frames(10, 11, motion=True))
    actions = rec.step(Inputs(t=11.0, motion=True, rings=1))
    assert actions == [MarkClip(1, T.RING, 11.0)]
    assert rec.clip_id == 1


def test_ring_when_idle_starts_a_clip_and_leaves_the_snapshot_to_the_ring_path() -> None:
    rec = Recorder(preroll=4, postroll=3, max_seconds=60)
    actions = rec.step(Inputs(t=20.0, rings=1))
    assert actions == [StartClip(1, 16.0, 20.0, T.RING), MarkClip(1, T.RING, 20.0)]
    # the ring keeps the clip alive for the post-roll, then it ends
    later = run(rec, frames(20.1, 23.2))
    assert [a for a in later if isinstance(a, EndClip)] == [EndClip(1, later[-1].end_t)]  # type: ignore[attr-defined]


def test_max_length_splits_without_a_gap() -> None:
    rec = Recorder(preroll=2, postroll=2, max_seconds=10)
    actions = run(rec, frames(0, 1) + frames(1, 25, motion=True))
    starts = [a for a in actions if isinstance(a, StartClip)]
    ends = [a for a in actions if isinstance(a, EndClip)]
    assert [s.clip for s in starts] == [1, 2, 3]
    # each follow-on clip starts exactly where the previous one ended
    for end, nxt in zip(ends, starts[1:], strict=False):
        assert nxt.start_from == end.end_t
    assert rec.state is State.RECORDING


def test_back_to_back_events_extend_the_clip() -> None:
    rec = Recorder(preroll=2, postroll=3, max_seconds=60)
    steps = frames(0, 1) + frames(1, 2, motion=True) + frames(2, 4) + frames(4, 5, motion=True) \
        + frames(5, 10)
    actions = run(rec, steps)
    assert len([a for a in actions if isinstance(a, StartClip)]) == 1
    assert len([a for a in actions if isinstance(a, EndClip)]) == 1


def test_owner_request_starts_a_clip_with_a_snapshot() -> None:
    rec = Recorder(preroll=1, postroll=1, max_seconds=60)
    actions = rec.step(Inputs(t=5.0, owner_clip=True))
    assert actions == [StartClip(1, 4.0, 5.0, T.OWNER), TakeSnapshot(T.OWNER, 5.0, 1)]


def test_finish_closes_an_open_clip() -> None:
    rec = Recorder(preroll=1, postroll=10, max_seconds=60)
    rec.step(Inputs(t=1.0, motion=True))
    assert rec.finish(2.0) == [EndClip(1, 2.0)]
    assert rec.finish(3.0) == []
