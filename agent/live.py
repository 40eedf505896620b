"""Live view through the broker (issue 15; docs/capture.md, "Live view over the segment path"):
the owner's signed ``live`` command starts or renews a session, and the running encoder's own
packets go out as sealed, signed live segments on ``<prefix>live/<session>``, never through the
outbox. A session ends by itself LIVE_SECONDS after its last renewal, at privacy-on, or on the
viewer's ``stop``.

Threads: ``handle`` runs on the uplink's thread (a command), ``consume`` on the frame thread
(every packet: it only appends to a bounded queue and never waits), ``pump`` on the ``live``
thread (mux, seal, publish). One lock guards the sessions and their queues; nothing slow runs
under it.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from doorstep.agent.commands import Commands
from doorstep.agent.run import Agent
from doorstep.capture.frames import EncodedPacket, Frame, StreamInfo
from doorstep.capture.livemux import LiveFragment, LiveMuxer
from doorstep.capture.preroll import PrerollRing
from doorstep.config.schema import Config
from doorstep.core.clock import Clock, SystemClock
from doorstep.core.droplog import DropLog
from doorstep.core.errors import CaptureError
from doorstep.protocol.age import X25519Recipient
from doorstep.protocol.keys import SigningKey
from doorstep.protocol.kinds import Action
from doorstep.protocol.live import check_session, live_topic, seal_live
from doorstep.protocol.wire import Command
from doorstep.uplink.mqtt import Uplink

log = logging.getLogger(__name__)

LIVE_SECONDS = 30.0       # a session ends this long after its last renewal
QUEUE_GOPS = 2            # packets waiting for the live thread: at most this many GOPs begun
MAX_MESSAGE = 256 * 1024  # media per live message at most (the first picture's burst)
PENDING_SECONDS = 10.0    # a start waits this long for a frame (the camera may be down)

Done = Callable[[str | None], None]
# (session, index, expires as wall time, keyframe, init, fragments, wall) -> the message
SealLive = Callable[[str, int, float, bool, bytes, bytes, float], bytes]
Publish = Callable[[str, bytes], bool]      # (session, message) -> handed to the broker


class GopQueue:
    """Packets waiting to be sent, holding at most ``gops`` keyframe-started runs. When a new
    keyframe would exceed that, the oldest run goes whole (or, if the live thread has already
    taken its start, the rest of it): a dropped packet is never followed by one that
    references it, so the viewer never sees a broken reference chain, and it loses the oldest
    video, never the newest."""

    def __init__(self, gops: int = QUEUE_GOPS) -> None:
        self.gops = gops
        self._q: deque[EncodedPacket] = deque()
        self._keys = 0
        self.dropped = 0

    def push(self, packet: EncodedPacket) -> int:
        """Append; how many packets were dropped to make room."""
        dropped = 0
        if packet.keyframe:
            while self._keys >= self.gops:
                dropped += self._drop_run()
            self._keys += 1
        self._q.append(packet)
        self.dropped += dropped
        return dropped

    def _drop_run(self) -> int:
        n = 0
        if self._q and self._q[0].keyframe:     # a whole GOP: its keyframe and what follows
            self._q.popleft()
            self._keys -= 1
            n += 1
        while self._q and not self._q[0].keyframe:
            self._q.popleft()
            n += 1
        return n

    def take(self) -> list[EncodedPacket]:
        out = list(self._q)
        self._q.clear()
        self._keys = 0
        return out

    def __len__(self) -> int:
        return len(self._q)


@dataclass
class LiveSession:
    id: str
    expires: float                  # monotonic
    started: float
    queue: GopQueue = field(default_factory=GopQueue)
    muxer: LiveMuxer | None = None
    index: int = 0
    need_key: bool = True           # after a loss, send nothing until the next keyframe
    sent: int = 0
    lost: int = 0


@dataclass
class _Pending:
    id: str
    done: Done
    asked: float


class LiveSessions:
    """The doorbell's live view sessions: at most ``max_sessions`` at once."""

    def __init__(self, info: Callable[[], StreamInfo], preroll: PrerollRing, *,
                 seal: SealLive, publish: Publish, clock: Clock, max_sessions: int = 2,
                 privacy: Callable[[], bool] = lambda: False,
                 seconds: float = LIVE_SECONDS) -> None:
        self._info = info
        self._preroll = preroll
        self._seal = seal
        self._publish = publish
        self._clock = clock
        self.max_sessions = max_sessions
        self._privacy = privacy
        self.seconds = seconds
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._sessions: dict[str, LiveSession] = {}
        self._pending: dict[str, _Pending] = {}
        self._stop = False
        self._thread: threading.Thread | None = None
        self.refusals = DropLog(log, "live: refused a session")
        self.losses = DropLog(log, "live: lost video")

    # -- commands: the uplink's thread --------------------------------------------------------
    def handle(self, cmd: Command, done: Done) -> None:
        """A verified ``live`` command: params ``session`` (the viewer's id) and optionally
        ``stop`` ("1")."""
        session = cmd.param("session")
        refusal = check_session(session)
        if refusal is not None:
            self._refuse(session, refusal, done)
            return
        now = self._clock.monotonic()
        stop = cmd.param("stop") == "1"
        unstarted: _Pending | None = None
        with self._lock:
            live = self._sessions.get(session)
            if stop:
                self._sessions.pop(session, None)
                unstarted = self._pending.pop(session, None)
                if live is not None or unstarted is not None:
                    log.info("live session %s: stopped by the viewer", session)
            elif self.max_sessions == 0:
                refusal = "live view is off on this doorbell (live.max_sessions = 0)"
            elif self._privacy():
                refusal = "privacy mode is on: the camera shows nothing"
            elif live is not None:
                live.expires = now + self.seconds
                log.debug("live session %s: renewed for %.0f s", session, self.seconds)
            elif session in self._pending:
                refusal = "live: this session is already starting"
            elif len(self._sessions) + len(self._pending) >= self.max_sessions:
                refusal = (f"live: at most {self.max_sessions} sessions at once "
                           "(live.max_sessions); try again when one ends")
            else:
                self._pending[session] = _Pending(session, done, now)
                self._wake.notify()     # the live thread times it out if no frame comes
                return                  # answered by the frame thread when it starts
        if unstarted is not None:
            unstarted.done("live: stopped by the viewer before it started")
        if refusal is not None:
            self._refuse(session, refusal, done)
        else:
            done(None)

    def _refuse(self, session: str, refusal: str, done: Done) -> None:
        self.refusals(refusal)      # one line per kind of refusal, every one counted
        done(refusal)

    def stop_all(self, why: str) -> None:
        """End every session now (privacy-on, shutdown); a start still waiting is refused."""
        with self._lock:
            ended, self._sessions = list(self._sessions), {}
            pending, self._pending = list(self._pending.values()), {}
        for session in ended:
            log.info("live session %s: ended: %s", session, why)
        for p in pending:
            p.done(f"live: {why}")

    @property
    def active(self) -> list[str]:
        with self._lock:
            return list(self._sessions)

    # -- packets: the frame thread ------------------------------------------------------------
    def consume(self, packet: EncodedPacket) -> None:
        """Every encoded packet, after the pre-roll ring has it. Never waits for the network:
        it appends to each session's bounded queue and wakes the live thread."""
        if not self._sessions and not self._pending:
            return
        now = self._clock.monotonic()
        started: list[_Pending] = []
        dropped: list[tuple[str, int]] = []
        with self._lock:
            self._expire(now)
            stale = self._stale(now)
            for p in list(self._pending.values()):
                del self._pending[p.id]
                live = LiveSession(p.id, now + self.seconds, now)
                # a fast first picture: the ring's last keyframe and what followed (this
                # packet included), instead of waiting up to a GOP for the next keyframe
                seed = self._preroll.since(packet.seconds)
                for old in seed:
                    live.queue.push(old)
                self._sessions[p.id] = live
                started.append(p)
                log.info("live session %s: started (%d of %d); first picture from a keyframe "
                         "%.2f s old", p.id, len(self._sessions), self.max_sessions,
                         packet.seconds - seed[0].seconds if seed else 0.0)
            for live in self._sessions.values():
                if live.id in {p.id for p in started}:
                    continue
                n = live.queue.push(packet)
                if n:
                    live.lost += n
                    dropped.append((live.id, n))
            self._wake.notify()
        for p in stale:
            p.done("live: no frame came from the camera in time")
        for p in started:
            p.done(None)
        for session, n in dropped:
            self.losses(f"the link is slower than the video: dropped {n} packet(s), whole "
                        "GOPs, oldest first", source=session)

    def _stale(self, now: float) -> list[_Pending]:
        """Starts that waited PENDING_SECONDS for a frame (the camera is down): removed."""
        stale = [p for p in self._pending.values() if now - p.asked > PENDING_SECONDS]
        for p in stale:
            del self._pending[p.id]
        return stale

    def _expire(self, now: float) -> None:
        for live in [s for s in self._sessions.values() if s.expires <= now]:
            del self._sessions[live.id]
            log.info("live session %s: ended: no renewal for %.0f s (the viewer went away); "
                     "%d segments sent, %d packets lost", live.id, self.seconds, live.sent,
                     live.lost)

    # -- sending: the live thread -------------------------------------------------------------
    def pump(self) -> int:
        """Mux, seal and publish what the sessions' queues hold; the messages sent."""
        now = self._clock.monotonic()
        with self._lock:
            self._expire(now)
            stale = self._stale(now)
            work = [(live, live.queue.take()) for live in self._sessions.values()]
        for p in stale:
            p.done("live: no frame came from the camera in time")
        sent = 0
        for live, packets in work:
            if packets:
                sent += self._send(live, packets, now)
        return sent

    def _send(self, live: LiveSession, packets: list[EncodedPacket], now: float) -> int:
        if live.muxer is None:
            live.muxer = LiveMuxer(self._info())
        fragments: list[LiveFragment] = []
        for packet in packets:
            if live.need_key and not packet.keyframe:
                live.lost += 1
                continue
            resumed, live.need_key = live.need_key, False
            try:
                out = live.muxer.write(packet)
                # after a loss, the muxer's fragment of the frame before the loss comes out
                # now (it lags a frame): the viewer cannot use it, so it is not sent
                fragments += [f for f in out if f.key] if resumed else out
            except CaptureError as exc:
                self.losses(f"muxing failed ({exc}); resuming at the next keyframe",
                            source=live.id)
                live.need_key = True
        sent = 0
        expires = self._clock.wall() + (live.expires - now)
        for group in _messages(fragments):
            key = group[0].key
            init = live.muxer.init if key else b""
            message = self._seal(live.id, live.index, expires, key, init,
                                 b"".join(f.data for f in group), group[0].wall)
            live.index += 1
            if self._publish(live.id, message):
                live.sent += 1
                sent += 1
            else:
                # what follows would reference what was lost: skip to the next keyframe
                live.lost += len(group)
                live.need_key = True
                self.losses("a segment could not be sent (the uplink is busy with a ring, "
                            "slow or offline); resuming at the next keyframe", source=live.id)
                break
        return sent

    # -- the thread ---------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="live", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 2.0) -> None:
        with self._lock:
            self._stop = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout)
        self.stop_all("the doorbell is stopping")

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._stop:
                    return
                if not any(len(s.queue) for s in self._sessions.values()):
                    # asleep while idle: no session costs nothing
                    self._wake.wait(1.0 if self._sessions or self._pending else None)
                if self._stop:
                    return
            try:
                self.pump()
            except Exception:  # this thread must outlive one bad segment: log it, go on
                log.exception("live: sending failed")


def _messages(fragments: Sequence[LiveFragment]) -> list[list[LiveFragment]]:
    """Fragments grouped into messages: a new one at each keyframe (it carries the init, so
    a viewer may start there), and none over MAX_MESSAGE."""
    groups: list[list[LiveFragment]] = []
    size = 0
    for f in fragments:
        if not groups or f.key or size + len(f.data) > MAX_MESSAGE:
            groups.append([])
            size = 0
        groups[-1].append(f)
        size += len(f.data)
    return groups


def attach_live(cfg: Config, agent: Agent, *, key: SigningKey,
                recipients: Callable[[], Sequence[X25519Recipient]], uplink: Uplink | None,
                commands: Commands, clock: Clock | None = None) -> LiveSessions:
    """Wire live view into a built agent: its packets, the ``live`` command, privacy-on
    ending every session, and the uplink's live lane. Started by the Service."""
    prefix = cfg.topic_prefix
    device = cfg.device.id

    def seal(session: str, index: int, expires: float, keyframe: bool, init: bytes,
             media: bytes, wall: float) -> bytes:
        return seal_live(key, recipients(), device=device, session=session, index=index,
                         expires=expires, keyframe=keyframe, init=init, media=media, wall=wall)

    def publish(session: str, message: bytes) -> bool:
        # without an uplink (the demo, `connect = False`) there is nowhere to send it
        return uplink is not None and uplink.publish_live(live_topic(prefix, session), message)

    live = LiveSessions(lambda: agent.encoder.info, agent.preroll, seal=seal, publish=publish,
                        clock=clock or SystemClock(), max_sessions=cfg.live.max_sessions,
                        privacy=lambda: agent.privacy)
    agent.packet_consumers.append(live.consume)    # after the clip's: it never waits
    commands[Action.LIVE] = live.handle
    privacy_on = agent.commands[Action.PRIVACY_ON]

    def privacy_on_and_dark(frame: Frame) -> str | None:
        refusal = privacy_on(frame)
        live.stop_all("privacy mode is on")
        return refusal

    agent.commands[Action.PRIVACY_ON] = privacy_on_and_dark
    return live
