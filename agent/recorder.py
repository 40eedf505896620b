"""The clip rules, in one state machine with no I/O and no threads (DESIGN.md, issue 4).

Every rule lives in ``Recorder.step``: it takes what happened at media time ``t`` (motion on or
off, rings, owner requests) and returns the actions to carry out. Times are the source's
seconds; nothing here reads a clock.

Rules:
- A trigger (motion start, ring, owner request) while idle starts a clip at the keyframe at or
  before ``t - preroll``, and asks for a snapshot.
- While recording, motion or a ring keeps the clip alive; it ends ``postroll`` seconds after the
  last activity.
- A ring during a clip marks that clip; it never starts a second one. Ring snapshots are taken
  by the ring's own fast path (agent/run.py), so the recorder never asks for them.
- Each other trigger asks for one snapshot per clip, the first time it occurs.
- A clip that reaches ``max_seconds`` while still active ends, and the next one starts at the
  same instant (from the keyframe at or before it): an overlap of under one GOP, never a gap.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Trigger(enum.Enum):
    MOTION = "motion"
    RING = "ring"
    OWNER = "owner"


class State(enum.Enum):
    IDLE = "idle"
    RECORDING = "recording"


@dataclass(frozen=True)
class StartClip:
    clip: int
    start_from: float          # media time: begin at the keyframe at or before this
    trigger_t: float
    trigger: Trigger


@dataclass(frozen=True)
class EndClip:
    clip: int
    end_t: float


@dataclass(frozen=True)
class MarkClip:
    clip: int
    trigger: Trigger
    t: float


@dataclass(frozen=True)
class TakeSnapshot:
    trigger: Trigger
    t: float
    clip: int | None


Action = StartClip | EndClip | MarkClip | TakeSnapshot


@dataclass(frozen=True)
class Inputs:
    """What happened since the last step. ``motion`` is the detector's trigger state."""

    t: float
    motion: bool = False
    rings: int = 0
    owner_clip: bool = False


@dataclass
class _Clip:
    id: int
    started: float
    last_activity: float
    triggers: list[Trigger] = field(default_factory=list)


class Recorder:
    def __init__(self, *, preroll: float, postroll: float, max_seconds: float) -> None:
        if max_seconds <= 0:
            raise ValueError("max_seconds must be positive")
        self.preroll = preroll
        self.postroll = postroll
        self.max_seconds = max_seconds
        self._clip: _Clip | None = None
        self._next_id = 1
        self._motion_was_on = False

    @property
    def state(self) -> State:
        return State.IDLE if self._clip is None else State.RECORDING

    @property
    def clip_id(self) -> int | None:
        return None if self._clip is None else self._clip.id

    def step(self, inputs: Inputs) -> list[Action]:
        t = inputs.t
        actions: list[Action] = []
        motion_started = inputs.motion and not self._motion_was_on
        self._motion_was_on = inputs.motion
        triggers: list[Trigger] = []
        if inputs.rings:
            triggers.append(Trigger.RING)
        if motion_started:
            triggers.append(Trigger.MOTION)
        if inputs.owner_clip:
            triggers.append(Trigger.OWNER)

        clip = self._clip
        if clip is not None:
            active = inputs.motion or bool(triggers)
            if active:
                clip.last_activity = t
            if t - clip.started >= self.max_seconds:
                actions.append(EndClip(clip.id, t))
                self._clip = None
                if active or t - clip.last_activity < self.postroll:
                    first = triggers[0] if triggers else clip.triggers[0]
                    new = self._start(t, t, first, actions, snapshot=bool(triggers))
                    new.last_activity = clip.last_activity
                    for extra in triggers[1:]:
                        self._mark(new, extra, t, actions)
                    return actions
            elif not active and t - clip.last_activity >= self.postroll:
                actions.append(EndClip(clip.id, t))
                self._clip = None
            else:
                for trig in triggers:
                    self._mark(clip, trig, t, actions)
                return actions

        if self._clip is None and triggers:
            new = self._start(t - self.preroll, t, triggers[0], actions, snapshot=True)
            for extra in triggers[1:]:
                self._mark(new, extra, t, actions)
        return actions

    def finish(self, t: float) -> list[Action]:
        """The source has ended or the camera is off: close any open clip."""
        if self._clip is None:
            return []
        clip, self._clip = self._clip, None
        self._motion_was_on = False
        return [EndClip(clip.id, t)]

    def _start(self, start_from: float, t: float, trigger: Trigger, actions: list[Action],
               *, snapshot: bool) -> _Clip:
        clip = _Clip(self._next_id, started=t, last_activity=t, triggers=[trigger])
        self._next_id += 1
        self._clip = clip
        actions.append(StartClip(clip.id, max(0.0, start_from), t, trigger))
        if snapshot and trigger is not Trigger.RING:
            actions.append(TakeSnapshot(trigger, t, clip.id))
        if trigger is Trigger.RING:
            actions.append(MarkClip(clip.id, trigger, t))
        return clip

    def _mark(self, clip: _Clip, trigger: Trigger, t: float, actions: list[Action]) -> None:
        if trigger is Trigger.RING:
            actions.append(MarkClip(clip.id, trigger, t))
        if trigger not in clip.triggers:
            clip.triggers.append(trigger)
            if trigger is not Trigger.RING:
                actions.append(TakeSnapshot(trigger, t, clip.id))
