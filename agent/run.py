"""The agent: wires capture -> motion -> recorder -> sealing -> outbox -> uplink, in that order,
and runs the frame loop. ``Agent.process`` handles one frame; everything it does is in order
and on one thread, except the ring fast path, which seals and sends a ring event from the
button's thread at once, without waiting for the next frame, and the disk work that ends a
clip or stores a snapshot or event, which the ``commit`` thread does in order (decision 22).
"""

from __future__ import annotations

import enum
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from doorstep.agent.clips import SegmentedClip
from doorstep.agent.committer import Committer
from doorstep.agent.modes import Modes, ModeStore
from doorstep.agent.recorder import (
    EndClip,
    Inputs,
    MarkClip,
    Recorder,
    StartClip,
    TakeSnapshot,
    Trigger,
)
from doorstep.agent.sealing import ClipWriter, Sealer
from doorstep.capture.frames import EncodedPacket, Encoder, Frame
from doorstep.capture.preroll import PrerollRing
from doorstep.capture.snapshot import jpeg, thumbnail
from doorstep.config.schema import Config
from doorstep.core.errors import DiskFull, SealError
from doorstep.motion.detector import MotionDetector, MotionResult
from doorstep.protocol.kinds import Action, EventType, Kind, Priority

log = logging.getLogger(__name__)

RECENT_EVENTS = 1000
CLOSE_TIMEOUT = 10.0  # s the commit thread gets at shutdown; systemd stops us after 20 s


class Mode(enum.Enum):
    """What the agent is doing, for whatever shows it (the doorbell's LED)."""

    IDLE = "idle"
    RECORDING = "recording"
    PRIVACY = "privacy"


@dataclass(frozen=True)
class Observed:
    """One processed frame as the agent decided on it, for observers (the bench, live
    view): the detector's answer (None when disarmed or in privacy mode) and the trigger of a
    snapshot decided on this frame, if any."""

    frame: Frame
    motion: MotionResult | None
    snapshot: Trigger | None


PacketConsumer = Callable[[EncodedPacket], None]
Observer = Callable[[Observed], None]
FrameCommand = Callable[[Frame], str | None]   # None: done; else why it was refused
Done = Callable[[str | None], None]            # told the outcome once the command has run


@dataclass(frozen=True)
class RingPress:
    """A press as the agent sees it: wall time, monotonic time and the burst's count."""

    wall: float
    mono: float
    count: int = 1
    first: bool = True


@dataclass
class ClipRecord:
    """What the agent knows about a clip it recorded, for the sealed clip event and the demo."""

    clip: int
    seq: int                   # the clip's artifact, or its first segment
    trigger: str
    start_wall: float
    trigger_wall: float
    start_pts: float
    trigger_pts: float
    duration: float
    rings: list[float]
    segments: list[int]        # seqs of its segments in order ([] for a whole-clip artifact)
    segments_lost: list[int]   # indexes of segments that could not be stored


class Agent:
    """One doorbell. Feed frames to ``process``; press the bell with ``ring``."""

    def __init__(self, cfg: Config, *, encoder: Encoder, sealer: Sealer,
                 detector: MotionDetector | None,
                 on_state: Callable[[Mode], None] | None = None,
                 modes: ModeStore | None = None) -> None:
        self.cfg = cfg
        self.encoder = encoder
        self.sealer = sealer
        self.detector = detector
        self.preroll = PrerollRing(cfg.clip.preroll_seconds + 2 * cfg.encoder.gop_seconds)
        self.recorder = Recorder(preroll=cfg.clip.preroll_seconds,
                                 postroll=cfg.clip.postroll_seconds,
                                 max_seconds=cfg.clip.max_seconds)
        # armed and privacy as the owner last set them, restored before the first frame
        self.modes = modes
        start = modes.load() if modes is not None else Modes(cfg.motion.enabled, False)
        self.armed = start.armed
        self.privacy = start.privacy
        self._on_state = on_state
        self._latest: Frame | None = None
        self._rings: queue.Queue[RingPress] = queue.Queue()
        self._owner: queue.Queue[tuple[Action, Done | None]] = queue.Queue()
        self._ring_lock = threading.Lock()
        self._clip: ClipWriter | SegmentedClip | None = None
        self._clip_meta: dict[str, Any] = {}
        # The clip the recorder wants while none is open (its start or its writing failed on
        # a full disk): tried again once a second, resuming from ``_resume_at``.
        self._want: StartClip | None = None
        self._resume_at = 0.0
        self._retry_at = 0.0
        self._motion_on = False
        self.frames = 0
        # the most recent (kind, seq) of events sealed, for the demo, tests and benchmarks;
        # bounded, since the agent runs for months. The ring and commit threads append to it:
        # while the agent runs, read a copy (list(agent.events)), never iterate it directly
        self.events: deque[tuple[str, int]] = deque(maxlen=RECENT_EVENTS)
        self.last_motion: MotionResult | None = None
        self._committer = Committer()
        # Every encoded packet goes to the pre-roll ring and then to each of these, in order,
        # on the frame thread: the open clip's writer first, then whatever plugs in (live
        # view). A consumer must not block; one that needs time hands the packet to a queue.
        self.packet_consumers: list[PacketConsumer] = [self._to_clip]
        self.observers: list[Observer] = []
        # Owner commands that act on the frame loop, by action. A new command registers its
        # handler here (``agent.commands[action] = handler``); the loop itself never changes.
        self.commands: dict[Action, FrameCommand] = {
            Action.SNAPSHOT: self._cmd_snapshot, Action.ARM: self._cmd_arm,
            Action.DISARM: self._cmd_disarm, Action.PRIVACY_ON: self._cmd_privacy_on,
            Action.PRIVACY_OFF: self._cmd_privacy_off,
        }
        self._snapshot_decided: Trigger | None = None

    # -- inputs from other threads ------------------------------------------------------------
    def ring(self, press: RingPress) -> int | None:
        """The fast path: seal and commit the ring event now (under a kilobyte, nothing to
        encode first), then its thumbnail and the full snapshot, each with ``parent`` = the
        event's seq; the clip is started or marked on the next frame. Safe from any thread.
        The event's seq (a voicemail after it names it as its parent), or None."""
        if press.first:
            self._rings.put(press)       # first, so the recorder never waits for the sealing
        with self._ring_lock:
            frame = None if self.privacy else self._latest
            body = {"count": press.count, "first": press.first, "pressed": press.wall,
                    "privacy": self.privacy}
            item = None
            try:
                item = self.sealer.event(EventType.RING, body, priority=Priority.RING)
                self.events.append((EventType.RING, item.seq))
                if frame is None:
                    return item.seq
                # on the ring lane right behind the event: the notification is up before the
                # picture's ~20 KB have crossed a slow uplink, and the picture follows it
                self.sealer.blob(Kind.THUMBNAIL,
                                 thumbnail(frame, self.cfg.clip.thumbnail_width, 80),
                                 priority=Priority.RING, parent=str(item.seq))
                if press.first:
                    snap = jpeg(frame, self.cfg.clip.snapshot_quality)
                    self.sealer.blob(Kind.SNAPSHOT, snap, priority=Priority.RING,
                                     parent=str(item.seq))
            except DiskFull as exc:
                log.error("ring: could not store the ring event or its pictures: %s", exc)
                return item.seq if item is not None else None
            return item.seq

    def owner_request(self, action: Action, done: Done | None = None) -> None:
        """A verified owner command, carried out on the next frame by ``commands[action]``;
        ``done`` is then told the outcome (None, or why it was refused)."""
        self._owner.put((action, done))

    # -- the frame loop -----------------------------------------------------------------------
    def run(self, frames: Iterable[Frame], stop: threading.Event | None = None,
            on_frame: Callable[[Frame], None] | None = None) -> None:
        last_t = 0.0
        for frame in frames:
            if stop is not None and stop.is_set():
                break
            self.process(frame)
            last_t = frame.pts
            if on_frame is not None:
                on_frame(frame)
        self.finish(last_t)

    def process(self, frame: Frame) -> None:
        owner_clip = self._apply_owner_requests(frame)
        if self.privacy:
            return
        self._latest = frame
        self.frames += 1
        for packet in self.encoder.encode(frame):
            self.preroll.push(packet)
            for consume in self.packet_consumers:
                consume(packet)
        motion = False
        result: MotionResult | None = None
        if self.detector is not None and self.armed:
            result = self.detector.update(frame.lores, frame.pts)
            self.last_motion = result
            motion = result.motion
            if motion != self._motion_on:
                self._motion_event(frame, motion, result)
        rings = 0
        while True:
            try:
                self._rings.get_nowait()
            except queue.Empty:
                break
            rings += 1
        actions = self.recorder.step(Inputs(t=frame.pts, motion=motion, rings=rings,
                                            owner_clip=owner_clip))
        for action in actions:
            self._do(action, frame)
        if self.observers:
            seen = Observed(frame, result, self._snapshot_decided)
            for observe in self.observers:
                observe(seen)
        self._snapshot_decided = None

    def finish(self, t: float) -> None:
        for action in self.recorder.finish(t):
            self._do(action, self._latest)
        self._committer.drain()

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Finish the disk work still queued and stop its thread, waiting at most ``timeout``
        seconds: a disk that no longer answers must not hold shutdown past systemd's stop
        timeout (20 s), with nothing said about what is lost."""
        lost = self._committer.close(timeout)
        if lost:
            log.error("shutdown: the disk did not finish the last commits in %.0f s; %d "
                      "queued (a clip's end, a snapshot or an event) are not stored", timeout,
                      lost)

    # -- actions ------------------------------------------------------------------------------
    def _do(self, action: object, frame: Frame | None) -> None:
        if isinstance(action, StartClip):
            self._start_clip(action, frame)
        elif isinstance(action, EndClip):
            self._end_clip()
        elif isinstance(action, MarkClip):
            if self._clip is not None:
                self._clip.priority = Priority.RING
                self._clip_meta["rings"].append(frame.wall if frame else time.time())
        elif isinstance(action, TakeSnapshot) and frame is not None:
            self._snapshot(frame, action.trigger)

    def _start_clip(self, action: StartClip, frame: Frame | None) -> None:
        if self.encoder is None or frame is None:
            return
        self._want, self._resume_at = action, action.start_from
        self._clip_meta = {"clip": action.clip, "trigger": action.trigger.value,
                           "trigger_wall": frame.wall, "trigger_pts": action.trigger_t,
                           "rings": [frame.wall] if action.trigger is Trigger.RING else []}
        log.info("clip %d: started by %s at t=%.2f", action.clip, action.trigger.value,
                 action.trigger_t)
        self._notify_state(Mode.RECORDING)
        self._open_clip(frame.pts, first=True)

    def _open_clip(self, now: float, *, first: bool = False) -> None:
        """Open the wanted clip's file and write the pre-roll (or, after a failure, what the
        pre-roll still holds since the last packet kept)."""
        assert self._want is not None
        priority = (Priority.RING if self._want.trigger is Trigger.RING or
                    self._clip_meta.get("rings") else Priority.CLIP)
        seconds = self.cfg.clip.segment_seconds
        if seconds > 0:
            # segments are sealed and committed on the commit thread: nothing here waits for
            # the disk, and a full one costs the segments that do not fit, not the clip
            self._clip = SegmentedClip(self.encoder.info, clip=self._want.clip,
                                       priority=priority, seconds=seconds,
                                       store=self.sealer.segment,
                                       submit=self._committer.submit)
            self._write_clip(self.preroll.since(self._resume_at))
            return
        try:
            self._clip = self.sealer.clip(self.encoder.info, priority=priority, evict=first)
        except DiskFull as exc:
            if first:
                log.error("clip %d: cannot start recording (will try again every second "
                          "while it lasts): %s", self._want.clip, exc)
            self._retry_at = now + 1.0
            return
        if not first:
            log.warning("clip %d: space again: recording resumes at t=%.2f", self._want.clip,
                        self._resume_at)
        self._write_clip(self.preroll.since(self._resume_at))

    def _to_clip(self, packet: EncodedPacket) -> None:
        if self._clip is not None:
            self._write_clip([packet])
        elif self._want is not None and packet.seconds >= self._retry_at and packet.keyframe:
            self._open_clip(packet.seconds)

    def _write_clip(self, packets: list[Any]) -> None:
        assert self._clip is not None
        try:
            self._clip.write(packets)
        except (DiskFull, OSError, SealError) as exc:
            clip, self._clip = self._clip, None
            if isinstance(clip, SegmentedClip):   # its writes never touch the disk
                raise
            outcome = clip.keep_cut_short()
            said = {"salvaged": "kept what it recorded as a partial clip",
                    "kept": "what it recorded waits in the outbox for the next start",
                    "torn": "nothing of it could be kept"}[outcome]
            log.error("clip %s: recording stopped (%s); %s; will resume when there is "
                      "space", self._clip_meta.get("clip"), exc, said)
            last = clip.last.seconds if clip.last is not None else self._resume_at
            self._resume_at = last
            self._retry_at = last + 1.0

    def _end_clip(self) -> None:
        self._want = None
        clip, self._clip = self._clip, None
        self._notify_state(Mode.IDLE)
        if clip is None or clip.first is None:
            if clip is not None:
                clip.abort()
            return
        meta = self._clip_meta  # this clip's, not whatever clip is recording when it runs
        self._committer.submit(lambda: self._store_clip(clip, meta))

    def _store_clip(self, clip: ClipWriter | SegmentedClip, meta: dict[str, Any]) -> None:
        """On the commit thread: close and commit the clip (or its last segment), then its
        sealed metadata event, which names the segments that make it."""
        assert clip.first is not None
        segments: list[int] = []
        try:
            if isinstance(clip, SegmentedClip):
                segments = clip.close()
                if not segments:
                    log.error("clip %s: none of its %d segments could be stored",
                              meta.get("clip"), clip.segments)
                    return
                seq = segments[0]
            else:
                seq = clip.close().seq
        except (DiskFull, OSError, SealError) as exc:
            log.error("clip %s: could not be stored: %s", meta.get("clip"), exc)
            return
        lost = clip.lost if isinstance(clip, SegmentedClip) else []
        record = ClipRecord(clip=meta["clip"], seq=seq, trigger=meta["trigger"],
                            start_wall=clip.first.wall, trigger_wall=meta["trigger_wall"],
                            start_pts=clip.first.seconds, trigger_pts=meta["trigger_pts"],
                            duration=clip.duration, rings=meta["rings"], segments=segments,
                            segments_lost=lost)
        body: dict[str, Any] = {"clip_seq": seq, "trigger": record.trigger,
                "start_wall": record.start_wall, "trigger_wall": record.trigger_wall,
                "preroll": record.trigger_pts - record.start_pts,
                "trigger_pts": record.trigger_pts, "start_pts": record.start_pts,
                "duration": record.duration, "rings": record.rings}
        if isinstance(clip, SegmentedClip):
            # the owner's check that it has the whole clip: every seq here, in this order,
            # and no index lost (a lost segment leaves a gap in time, never a broken file)
            body.update(segments=segments, segments_lost=lost,
                        segment_count=clip.segments)
        try:
            self.sealer.event(EventType.CLIP, body, priority=clip.priority)
        except DiskFull as exc:
            log.error("clip %d: its metadata event could not be stored: %s", record.clip, exc)
        log.info("clip %d: %.1f s with %.1f s of pre-roll, seq %d%s", record.clip,
                 record.duration, record.trigger_pts - record.start_pts, seq,
                 f" and {len(segments) - 1} more segment(s)" if segments else "")

    def _snapshot(self, frame: Frame, trigger: Trigger) -> None:
        # the frame keeps its picture (the decoder's buffer) until the job has run
        self._snapshot_decided = trigger
        self._committer.submit(lambda: self._store_snapshot(frame, trigger))

    def _store_snapshot(self, frame: Frame, trigger: Trigger) -> None:
        """On the commit thread: the event, its thumbnail, then the full JPEG."""
        try:
            kind = EventType.MOTION if trigger is Trigger.MOTION else EventType.SNAPSHOT
            event = self.sealer.event(kind, {"trigger": trigger.value, "wall": frame.wall},
                                      priority=Priority.EVENT)
            self.events.append((kind, event.seq))
            self.sealer.blob(Kind.THUMBNAIL, thumbnail(frame, self.cfg.clip.thumbnail_width, 80),
                             priority=Priority.EVENT, parent=str(event.seq))
            self.sealer.blob(Kind.SNAPSHOT, jpeg(frame, self.cfg.clip.snapshot_quality),
                             priority=Priority.SNAPSHOT, parent=str(event.seq))
        except DiskFull as exc:
            log.error("snapshot: not stored: %s", exc)

    def _motion_event(self, frame: Frame, on: bool, result: MotionResult) -> None:
        self._motion_on = on
        log.info("motion %s at t=%.2f (score %.3f)", "started" if on else "ended", frame.pts,
                 result.score)
        if not on:
            wall = frame.wall  # not the frame: its picture need not wait for the job
            self._committer.submit(lambda: self._store_motion_end(wall))

    def _store_motion_end(self, wall: float) -> None:
        try:
            item = self.sealer.event(EventType.MOTION_END, {"wall": wall},
                                     priority=Priority.EVENT)
            self.events.append((EventType.MOTION_END, item.seq))
        except DiskFull as exc:
            log.error("motion_end: not stored: %s", exc)

    def _apply_owner_requests(self, frame: Frame) -> bool:
        """Carry out the owner's queued commands. Returns whether one asks the recorder for a
        clip (none of today's commands does)."""
        while True:
            try:
                action, done = self._owner.get_nowait()
            except queue.Empty:
                return False
            handler = self.commands.get(action)
            if handler is None:
                refusal: str | None = f"{action}: nothing handles it on this doorbell"
            else:
                log.info("owner command: %s", action)
                refusal = handler(frame)
            if refusal is not None:
                log.warning("owner command refused: %s", refusal)
            if done is not None:
                done(refusal)

    # -- owner commands (the ``commands`` table) ---------------------------------------------
    def _set_modes(self, *, armed: bool, privacy: bool) -> str | None:
        """Store the new modes durably before acting on them; the reason if that failed."""
        if self.modes is None:
            return None
        try:
            self.modes.save(Modes(armed=armed, privacy=privacy))
        except OSError as exc:
            return f"could not store the new mode ({exc.strerror or exc}); nothing changed"
        return None

    def _cmd_snapshot(self, frame: Frame) -> str | None:
        if self.privacy:
            return "privacy mode is on: the camera takes no pictures"
        self._snapshot(frame, Trigger.OWNER)
        return None

    def _cmd_arm(self, frame: Frame) -> str | None:
        refusal = self._set_modes(armed=True, privacy=self.privacy)
        if refusal is None:
            self.armed = True
        return refusal

    def _cmd_disarm(self, frame: Frame) -> str | None:
        refusal = self._set_modes(armed=False, privacy=self.privacy)
        if refusal is None:
            self.armed = False
            self._motion_on = False
        return refusal

    def _cmd_privacy_on(self, frame: Frame) -> str | None:
        refusal = self._set_modes(armed=self.armed, privacy=True)
        # Fail closed: the camera goes dark even if the disk would not take the new mode
        # (the owner is told it may not outlive a restart).
        if not self.privacy:
            self.privacy = True
            self.finish(frame.pts)
            self._notify_state(Mode.PRIVACY)
        return None if refusal is None else f"privacy is on, but {refusal}"

    def _cmd_privacy_off(self, frame: Frame) -> str | None:
        refusal = self._set_modes(armed=self.armed, privacy=False)
        if refusal is not None:
            return refusal
        if self.privacy:
            self.privacy = False
            if self.detector is not None:
                self.detector.reset()
            self._notify_state(Mode.IDLE)
        return None

    def _notify_state(self, state: Mode) -> None:
        if self._on_state is not None:
            self._on_state(state)
