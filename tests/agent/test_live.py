"""Live view sessions on the doorbell (agent/live.py), with the real encoder, the real muxer,
real sealing and a PyAV decode of what a viewer receives; the clock is a FakeClock, so the
30 s expiry is stepped, never slept. The broker is not involved here (see
tests/uplink/test_live_broker.py)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from fractions import Fraction

import pytest

from doorstep.agent.live import LIVE_SECONDS, GopQueue, LiveSessions
from doorstep.bench.liveview import PythonViewer, counter_frames
from doorstep.capture.encoder import PyAvEncoder
from doorstep.capture.frames import EncodedPacket, Frame
from doorstep.capture.preroll import PrerollRing
from doorstep.core.clock import FakeClock
from doorstep.protocol.age import X25519Identity
from doorstep.protocol.keys import SigningKey
from doorstep.protocol.kinds import Action
from doorstep.protocol.live import open_live, seal_live
from doorstep.protocol.wire import Command

DEVICE = "porch"
FPS = 15
S1, S2, S3 = "a" * 16, "b" * 16, "c" * 32


class Rig:
    """LiveSessions fed by a real encoder, one frame per ``step`` (the clock moves 1/FPS)."""

    def __init__(self, *, max_sessions: int = 2, publish_ok: bool = True) -> None:
        self.clock = FakeClock()
        self.key = SigningKey.generate()
        self.owner = X25519Identity.generate()
        self.encoder = PyAvEncoder("libx264", width=320, height=240, fps=Fraction(FPS),
                                   gop_seconds=1.0, preset="ultrafast")
        self.preroll = PrerollRing(2.0)
        self.sent: list[tuple[str, bytes]] = []
        self.publish_ok = publish_ok
        self.privacy = False
        self.live = LiveSessions(lambda: self.encoder.info, self.preroll, seal=self.seal,
                                 publish=self.publish, clock=self.clock,
                                 max_sessions=max_sessions, privacy=lambda: self.privacy)
        self.frames: Iterator[Frame] = counter_frames(320, 240, FPS, realtime=False)
        self.answers: dict[int, str | None] = {}
        self.counter = 0

    def seal(self, session: str, index: int, expires: float, keyframe: bool, init: bytes,
             media: bytes, wall: float) -> bytes:
        return seal_live(self.key, [self.owner.recipient], device=DEVICE, session=session,
                         index=index, expires=expires, keyframe=keyframe, init=init,
                         media=media, wall=wall)

    def publish(self, session: str, message: bytes) -> bool:
        if self.publish_ok:
            self.sent.append((session, message))
        return self.publish_ok

    def step(self, n: int = 1, *, pump: bool = True) -> list[EncodedPacket]:
        out = []
        for _ in range(n):
            frame = next(self.frames)
            for packet in self.encoder.encode(frame):
                self.preroll.push(packet)
                self.live.consume(packet)
                out.append(packet)
            self.clock.advance(1 / FPS)
            if pump:
                self.live.pump()
        return out

    def command(self, session: str, **params: str) -> int:
        self.counter += 1
        cmd = Command(DEVICE, self.counter, Action.LIVE, 0.0,
                      params=tuple(sorted({"session": session, **params}.items())))
        n = self.counter
        self.live.handle(cmd, lambda outcome: self.answers.__setitem__(n, outcome))
        return n

    def viewer(self, session: str) -> PythonViewer:
        v = PythonViewer(DEVICE, session, [self.owner], self.key.public_key,
                         now=self.clock.wall)
        for s, message in self.sent:
            if s == session:
                v.receive(message)
        return v


def test_a_session_sends_the_running_encoders_packets_as_decodable_sealed_segments() -> None:
    rig = Rig()
    rig.step(20)                               # the ring holds a keyframe and what followed
    assert not rig.sent                        # no session: nothing is sent
    n = rig.command(S1)
    assert n not in rig.answers                # answered once the frame thread has started it
    rig.step(1)
    assert rig.answers[n] is None and rig.live.active == [S1]
    rig.step(30)
    view = rig.viewer(S1)
    assert not view.refused, view.refused
    counters = [s.counter for s in view.shown]
    # a fast first picture: the first frame shown is the ring's last keyframe (frame 15),
    # older than the command, and from there every frame follows in order
    assert counters[0] == 15, counters[:5]
    assert counters == list(range(15, 15 + len(counters)))
    assert counters[-1] >= 49                  # within a frame of the newest (frame 50)
    # only ciphertext: the owner's identity opens it, nobody else's
    with pytest.raises(Exception, match="cannot be opened"):
        open_live(rig.sent[0][1], [X25519Identity.generate()], rig.key.public_key)


def test_the_session_ends_30_s_after_its_last_renewal(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    rig = Rig()
    rig.step(2)
    rig.command(S1)
    rig.step(1)
    rig.clock.advance(LIVE_SECONDS - 2)
    renewed = rig.command(S1)
    assert rig.answers[renewed] is None
    rig.clock.advance(LIVE_SECONDS - 2)        # 58 s after the start, 28 s after the renewal
    rig.step(1)
    assert rig.live.active == [S1]
    before = len(rig.sent)
    rig.clock.advance(2)
    rig.step(5)
    assert rig.live.active == []
    assert len(rig.sent) == before             # nothing more is sent for it
    assert any("no renewal for 30 s" in r.getMessage() for r in caplog.records)


def test_sessions_beyond_max_sessions_are_refused_naming_the_config_key(
        caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig(max_sessions=2)
    rig.step(2)
    a, b = rig.command(S1), rig.command(S2)
    flood = [rig.command(f"{i:016x}") for i in range(200)]      # a flood of session requests
    rig.step(1)
    assert rig.answers[a] is None and rig.answers[b] is None
    assert all("live.max_sessions" in str(rig.answers[n]) for n in flood)
    assert sorted(rig.live.active) == [S1, S2]
    refusals = [r for r in caplog.records if "refused a session" in r.getMessage()]
    assert 1 <= len(refusals) <= 2, [r.getMessage() for r in refusals]   # not one per request
    # a viewer that stops frees its place
    rig.command(S1, stop="1")
    c = rig.command(S3)
    rig.step(1)
    assert rig.answers[c] is None and sorted(rig.live.active) == [S2, S3]


def test_bad_session_ids_and_privacy_are_refused() -> None:
    rig = Rig()
    rig.step(2)
    bad = rig.command("../../x")
    assert "hex digits" in str(rig.answers[bad])
    rig.privacy = True
    dark = rig.command(S1)
    assert "privacy" in str(rig.answers[dark])
    rig.privacy = False
    rig.command(S1)
    rig.step(1)
    assert rig.live.active == [S1]
    rig.live.stop_all("privacy mode is on")
    assert rig.live.active == []
    assert not Rig(max_sessions=0).live.handle(
        Command(DEVICE, 1, Action.LIVE, 0.0, params=(("session", S1),)),
        lambda outcome: pytest.fail(f"{outcome}") if "max_sessions = 0" not in str(outcome)
        else None)


def test_a_stalled_link_drops_whole_gops_and_never_holds_the_frame_thread() -> None:
    rig = Rig(publish_ok=False)
    rig.step(2)
    rig.command(S1)
    rig.step(1)
    rig.step(80, pump=False)                   # the live thread is stuck: 5 s of frames
    live = rig.live._sessions[S1]
    assert len(live.queue) <= 2 * FPS          # at most two GOPs wait
    assert live.queue._q[0].keyframe           # and they start at a keyframe
    rig.publish_ok = True
    rig.live.pump()
    rig.step(10)
    view = rig.viewer(S1)
    assert not view.refused, view.refused
    counters = [s.counter for s in view.shown]
    assert counters and counters == sorted(counters)
    # the oldest video was dropped, not the newest: the viewer jumped ahead to the last GOPs
    assert counters[0] >= 83 - 2 * FPS, counters[:3]


def test_gop_queue_keeps_whole_gops() -> None:
    q = GopQueue(gops=2)

    def pkt(i: int, key: bool) -> EncodedPacket:
        return EncodedPacket(b"x", i, i, key, Fraction(1, FPS), 0.0)

    for i in range(40):
        q.push(pkt(i, i % 10 == 0))
    held = q.take()
    assert [p.pts for p in held] == list(range(20, 40))     # the last two GOPs, whole
    assert q.dropped == 40 - len(held)


def test_replayed_and_foreign_segments_are_refused_by_the_viewer() -> None:
    rig = Rig()
    rig.step(2)
    rig.command(S1)
    rig.step(20)
    ours = [m for s, m in rig.sent if s == S1]
    view = PythonViewer(DEVICE, S1, [rig.owner], rig.key.public_key, now=rig.clock.wall)
    for m in ours:
        view.receive(m)
    shown = len(view.shown)
    for m in ours:                             # the same segments again: replayed
        view.receive(m)
    assert len(view.shown) == shown
    assert all("replayed" in r for r in view.refused) and len(view.refused) == len(ours)
    other = PythonViewer(DEVICE, S2, [rig.owner], rig.key.public_key, now=rig.clock.wall)
    other.receive(ours[0])                     # another session's segment
    assert "not this session" in other.refused[0]
    late = PythonViewer(DEVICE, S1, [rig.owner], rig.key.public_key,
                        now=lambda: rig.clock.wall() + 3600)
    late.receive(ours[0])                      # recorded and replayed an hour later
    assert "expired" in late.refused[0]
    forged = SigningKey.generate()
    fake = seal_live(forged, [rig.owner.recipient], device=DEVICE, session=S1, index=999,
                     expires=rig.clock.wall() + 30, keyframe=True, init=b"", media=b"",
                     wall=0.0)
    view.receive(fake)
    assert "bad signature" in view.refused[-1] or "signature" in view.refused[-1]


def test_a_start_with_no_frames_is_refused_and_frees_its_place() -> None:
    rig = Rig(max_sessions=1)
    n = rig.command(S1)                        # the camera gives nothing
    rig.clock.advance(11)
    rig.live.pump()                            # the live thread's periodic pass
    assert "no frame came" in str(rig.answers[n])
    m = rig.command(S2)
    rig.step(1)
    assert rig.answers[m] is None and rig.live.active == [S2]


def test_a_live_thread_stuck_in_publish_never_holds_the_frame_thread() -> None:
    import threading

    rig = Rig()
    release = threading.Event()
    entered = threading.Event()

    def stuck(session: str, message: bytes) -> bool:
        entered.set()
        release.wait(30)          # the uplink never takes it (a dead link)
        return False

    rig.live._publish = stuck
    rig.live.start()
    try:
        rig.step(2, pump=False)
        rig.command(S1)
        rig.step(1, pump=False)
        assert entered.wait(10)               # the live thread is now stuck in publish
        done = threading.Event()

        def frame_loop() -> None:
            rig.step(90, pump=False)          # 6 s of frames while it is stuck
            done.set()

        threading.Thread(target=frame_loop, daemon=True).start()
        assert done.wait(60), "the frame thread waited for the live thread"
        assert len(rig.live._sessions[S1].queue) <= 2 * FPS
    finally:
        release.set()
        rig.live.close()
