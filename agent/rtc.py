"""WebRTC live view and talk on the doorbell (docs/rtc.md). A signed ``rtc_offer`` command
becomes a session: its video is the running encoder's own packets (no second encode), its
audio the microphone, and what the owner says plays on the speaker. The doorbell's signed
answer carries its SDP, so each side's DTLS fingerprint travels signed and neither the broker
nor a TURN relay can sit in the middle.

aiortc runs on one event loop thread of its own, started with the first session. The frame
thread only hands each packet to that loop (``feed``) and never waits on it; with no session
it does nothing at all."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from doorstep.agent.commands import Reply
from doorstep.capture.audio import AudioSink, AudioSource, AudioUnavailable
from doorstep.capture.audio import open_sink as open_audio_sink
from doorstep.capture.audio import open_source as open_audio_source
from doorstep.capture.frames import EncodedPacket
from doorstep.config.schema import RtcConfig
from doorstep.core.errors import DoorstepError
from doorstep.protocol.wire import Command

if TYPE_CHECKING:
    from aiortc import RTCPeerConnection

    from doorstep.agent.rtctracks import Microphone, PacketTrack

log = logging.getLogger(__name__)

VIDEO_QUEUE = 90        # packets a viewer may fall behind before it loses up to a keyframe
WATCH_INTERVAL = 0.5    # s between a session's health checks
_FINGERPRINT = re.compile(r"^a=fingerprint:(\S+) ([0-9A-Fa-f:]+)\s*$", re.MULTILINE)


class RtcRefused(DoorstepError):
    """An offer the doorbell will not answer; the message is the signed refusal's reason."""


def fingerprints(sdp: str) -> set[str]:
    """The DTLS fingerprints an SDP names, as ``"sha-256 AB:CD:..."`` (upper-case hex)."""
    return {f"{algo.lower()} {value.upper()}" for algo, value in _FINGERPRINT.findall(sdp)}


def check_fingerprint(sdp: str, signed: str) -> str:
    """The offer with only the signed DTLS fingerprint left in it. An offer may list its one
    certificate's fingerprint under several hashes (aiortc names sha-256, -384 and -512), and
    a DTLS stack accepts a certificate that matches any of them; keeping only the signed one
    means the DTLS handshake can only complete with the certificate the owner's key signed."""
    algo, _, value = signed.strip().partition(" ")
    if not algo or not value:
        raise RtcRefused("the offer's signed DTLS fingerprint is missing")
    want = f"{algo.lower()} {value.strip().upper()}"
    named = fingerprints(sdp)
    if not named:
        raise RtcRefused("the offer names no DTLS fingerprint")
    if want not in named:
        shown = ", ".join(sorted(f[:24] + "..." for f in named))
        raise RtcRefused(f"the offer's DTLS fingerprint ({shown}) is not the signed one "
                         f"({want[:24]}...): refused, someone may be in the middle")

    def keep(m: re.Match[str]) -> str:
        return m.group(0) if f"{m.group(1).lower()} {m.group(2).upper()}" == want else ""
    return re.sub(r"a=fingerprint:(\S+) ([0-9A-Fa-f:]+)[ \t]*\r?\n", keep, sdp)


@dataclass
class Session:
    """One viewer: its peer connection, its video track and its deadlines (monotonic s)."""

    id: int
    pc: RTCPeerConnection
    video: PacketTrack | None
    started: float
    heard: float                  # when the viewer last sent an RTCP report
    connected: bool = False
    last_report: Any = None       # the timestamp of the viewer's last report seen
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)


class RtcService:
    """The doorbell's WebRTC sessions. ``on_offer`` and ``on_hangup`` are command handlers
    (uplink thread); ``feed`` is a packet consumer (frame thread); everything else runs on the
    rtc loop. ``privacy``: true while privacy mode is on (no session then). ``monotonic`` is
    the clock every timeout is measured on. ``keyframe(who)`` asks the shared encoder for an
    IDR (capture/keyframes.py ``KeyframeGate.ask``, which rate-limits it): called on a
    viewer's PLI/FIR, when a viewer connects, and when one fell behind and lost packets."""

    def __init__(self, cfg: RtcConfig, *, data_dir: Path,
                 privacy: Callable[[], bool] = lambda: False,
                 monotonic: Callable[[], float] = time.monotonic,
                 open_source: Callable[[str], AudioSource] = open_audio_source,
                 open_sink: Callable[[str], AudioSink] = open_audio_sink,
                 keyframe: Callable[[str], bool] = lambda who: False) -> None:
        self.cfg = cfg
        self._keyframe = keyframe      # a viewer's keyframe request, to the (rate-limited) encoder
        self._data_dir = data_dir
        self._privacy = privacy
        self._monotonic = monotonic
        self._open_source = open_source
        self._open_sink = open_sink
        self.sessions: dict[int, Session] = {}
        self._pending = 0                       # offers being answered (count toward max)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._mic: Microphone | None = None
        self._sink: AudioSink | None = None
        self._talker: int | None = None         # the session whose voice the speaker plays
        self.ended: list[tuple[int, str]] = []   # (session, why), latest last; for tests/bench

    # -- the rtc thread ----------------------------------------------------------------------
    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=loop.run_forever, name="rtc",
                                                daemon=True)
                self._thread.start()
                self._loop = loop
            return self._loop

    def _submit(self, coro: Any) -> Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self._ensure_loop())

    # -- inputs from other threads -----------------------------------------------------------
    def feed(self, packet: EncodedPacket) -> None:
        """A packet of the running encoder (frame thread): handed to the loop, never waited
        on; nothing at all while no session runs."""
        if self.sessions and self._loop is not None:
            self._loop.call_soon_threadsafe(self._fan, packet)

    def on_offer(self, cmd: Command, reply: Reply) -> None:
        """A verified ``rtc_offer`` (uplink thread): answered from the loop."""
        future = self._submit(self._answer(cmd))

        def answered(f: Future[Any]) -> None:
            try:
                reply(None, f.result())
            except RtcRefused as exc:
                log.warning("rtc: refused offer %d: %s", cmd.counter, exc)
                reply(str(exc))
            except Exception as exc:   # aiortc's own errors on a malformed SDP, say
                log.warning("rtc: refused offer %d: %s: %s", cmd.counter,
                            exc.__class__.__name__, exc)
                reply(f"the offer could not be answered ({exc.__class__.__name__}: "
                      f"{str(exc)[:120]})")
        future.add_done_callback(answered)

    def on_hangup(self, cmd: Command, reply: Reply) -> None:
        try:
            sid = int(cmd.param("session"))
        except ValueError:
            reply("rtc_hangup: params.session must be the offer's counter")
            return
        if sid not in self.sessions:
            reply(f"no session {sid}")
            return
        future = self._submit(self._end(sid, "the owner hung up"))
        future.add_done_callback(lambda f: reply(None))

    def close(self) -> None:
        """End every session and stop the loop (the agent is stopping)."""
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._end_all("the doorbell is stopping"),
                                             loop).result(10)
        except Exception:   # stopping anyway; what failed is logged where it failed
            log.exception("rtc: closing the sessions failed")
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        if self._mic is not None:
            self._mic.close()
        if self._sink is not None:
            self._sink.close()

    # -- on the loop ---------------------------------------------------------------------------
    def _fan(self, packet: EncodedPacket) -> None:
        for s in self.sessions.values():
            if s.video is not None:
                s.video.offer(packet)

    async def _answer(self, cmd: Command) -> str:
        from aiortc import (
            RTCConfiguration,
            RTCIceServer,
            RTCPeerConnection,
            RTCRtpSender,
            RTCSessionDescription,
        )

        from doorstep.agent.rtctracks import Microphone, PacketTrack

        if not self.cfg.enabled:
            raise RtcRefused("live view and talk are off on this doorbell (rtc.enabled)")
        if self._privacy():
            raise RtcRefused("privacy mode is on")
        busy = len(self.sessions) + self._pending
        if busy >= self.cfg.max_sessions:
            raise RtcRefused(f"busy: {busy} session(s) already, at most "
                             f"{self.cfg.max_sessions} (rtc.max_sessions)")
        sdp = cmd.param("sdp")
        if not sdp:
            raise RtcRefused("rtc_offer: params.sdp is missing")
        sdp = check_fingerprint(sdp, cmd.param("fingerprint"))
        self._pending += 1
        pc = RTCPeerConnection(RTCConfiguration(iceServers=self._ice_servers(RTCIceServer)))
        try:
            # transceivers made before the offer is applied take its m-lines: video is H.264
            # only (the encoder's packets), audio is the microphone if there is one
            video: PacketTrack | None = None
            if re.search(r"^m=video ", sdp, re.MULTILINE):
                who = f"session {cmd.counter}"
                video = PacketTrack(VIDEO_QUEUE,
                                    on_loss=lambda: self._keyframe(f"{who} (it fell behind)"))
                h264 = [c for c in RTCRtpSender.getCapabilities("video").codecs
                        if c.mimeType.lower() in ("video/h264", "video/rtx")]
                transceiver = pc.addTransceiver(video, direction="sendonly")
                transceiver.setCodecPreferences(h264)
                self._hear_keyframe_requests(transceiver.sender, who)
            if re.search(r"^m=audio ", sdp, re.MULTILINE) and self.cfg.microphone:
                if self._mic is None:
                    self._mic = Microphone(self._open_mic, asyncio.get_running_loop())
                pc.addTransceiver(self._mic.track(), direction="sendrecv")
            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            except Exception as exc:       # aiortc's OperationError: no codec in common
                if video is not None and "video" in str(exc):
                    raise RtcRefused("the viewer offers no H.264 video (packetization-mode "
                                     "1), the doorbell's only codec") from None
                raise
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)      # gathers every candidate: no trickle
        except BaseException:
            self._pending -= 1
            await pc.close()
            raise
        self._pending -= 1
        local = str(pc.localDescription.sdp)
        turn = [u for u in self.cfg.ice_servers if u.startswith(("turn:", "turns:"))]
        if turn and not re.search(r"^a=candidate:.* typ relay", local, re.MULTILINE):
            log.warning("rtc: session %d: no relay candidate from the TURN server (%s): it is "
                        "unreachable or refused rtc.turn_username / rtc.turn_password_file; "
                        "answering without a relay", cmd.counter, ", ".join(turn))
        now = self._monotonic()
        session = Session(cmd.counter, pc, video, started=now, heard=now)
        self.sessions[cmd.counter] = session

        @pc.on("track")
        def on_track(track: Any) -> None:
            if track.kind == "audio":
                session.tasks.append(asyncio.ensure_future(self._play(session, track)))

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState == "connected" and not session.connected:
                session.connected = True
                session.heard = self._monotonic()
                log.info("rtc: session %d connected", session.id)
                if video is not None:     # its first picture now, not at the next scheduled IDR
                    self._keyframe(f"session {session.id} (connected)")
            elif pc.connectionState in ("failed", "closed"):
                await self._end(session.id, f"the connection {pc.connectionState}")

        # tracks the offer already carried were announced in setRemoteDescription
        for r in pc.getReceivers():
            if r.track is not None and r.track.kind == "audio":
                session.tasks.append(asyncio.ensure_future(self._play(session, r.track)))
        session.tasks.append(asyncio.ensure_future(self._watch(session)))
        log.info("rtc: session %d answered (%d of at most %d; video %s, microphone %s, "
                 "speaker %s)", session.id, len(self.sessions), self.cfg.max_sessions,
                 "yes" if video else "no", "on" if self.cfg.microphone else "none",
                 "on" if self.cfg.speaker else "none")
        return local

    def _hear_keyframe_requests(self, sender: Any, who: str) -> None:
        """A viewer's PLI or FIR reaches the encoder. aiortc answers both by calling the
        sender's ``_send_keyframe`` (``RTCRtpSender._handle_rtcp_packet``; checked in aiortc
        1.16, not in 1.9), which only flags its own encoder, unused on the packet path; so that
        call is extended here to ask ours. Without the method a warning says so."""
        own = getattr(sender, "_send_keyframe", None)
        if not callable(own):
            log.warning("rtc: %s: this aiortc has no RTCRtpSender._send_keyframe, so the "
                        "viewer's keyframe requests go unanswered", who)
            return

        def requested() -> None:
            own()
            self._keyframe(who)
        sender._send_keyframe = requested

    def _open_mic(self) -> AudioSource:
        return self._open_source(self.cfg.microphone)

    def _ice_servers(self, make: Any) -> list[Any]:
        if not self.cfg.ice_servers:
            return []
        stun = [u for u in self.cfg.ice_servers if u.startswith(("stun:", "stuns:"))]
        turn = [u for u in self.cfg.ice_servers if u.startswith(("turn:", "turns:"))]
        servers = [make(urls=stun)] if stun else []
        if turn:
            from doorstep.config import resolve_secret

            password = resolve_secret(self.cfg.turn_password_file, self._data_dir) \
                .read_text().strip()
            servers.append(make(urls=turn, username=self.cfg.turn_username,
                                credential=password))
        return servers

    async def _play(self, session: Session, track: Any) -> None:
        """What the owner says, to the speaker (or nowhere if none is configured)."""
        from aiortc.mediastreams import MediaStreamError

        loop = asyncio.get_running_loop()
        if self.cfg.speaker and self._sink is None:
            try:
                self._sink = self._open_sink(self.cfg.speaker)
            except AudioUnavailable as exc:
                log.error("rtc: session %d: no speaker: %s", session.id, exc)
        try:
            while True:
                frame = await track.recv()
                if self._talker is None:        # one voice at a time: the first to speak
                    self._talker = session.id
                if self._sink is not None and self._talker == session.id:
                    await loop.run_in_executor(None, self._sink.write, frame)
        except MediaStreamError:
            return
        except AudioUnavailable as exc:
            log.error("rtc: session %d: the speaker failed: %s", session.id, exc)

    async def _watch(self, session: Session) -> None:
        """Ends the session when its viewer has gone: not connected in time, no RTCP report
        for ``idle_seconds``, past ``max_seconds``, or privacy mode turned on."""
        cfg = self.cfg
        while session.id in self.sessions:
            await asyncio.sleep(WATCH_INTERVAL)
            now = self._monotonic()
            why = None
            if self._privacy():
                why = "privacy mode is on"
            elif now - session.started > cfg.max_seconds:
                why = f"it reached rtc.max_seconds ({cfg.max_seconds:g} s)"
            elif not session.connected:
                if now - session.started > cfg.connect_seconds:
                    why = (f"the viewer did not connect within {cfg.connect_seconds:g} s "
                           "(rtc.connect_seconds)")
            elif session.video is not None and session.video.sent == 0:
                # nothing sent yet (waiting for a keyframe the encoder could not make on
                # request), so no report is due: the viewer is not silent, the doorbell is
                session.heard = now
            else:
                report = await self._last_report(session)
                if report is not None and report != session.last_report:
                    session.last_report, session.heard = report, now
                elif now - session.heard > cfg.idle_seconds:
                    why = (f"the viewer stopped answering: no RTCP report for "
                           f"{now - session.heard:.0f} s (rtc.idle_seconds)")
            if why is not None:
                await self._end(session.id, why)

    @staticmethod
    async def _last_report(session: Session) -> Any:
        """The time of the viewer's latest RTCP receiver report, as aiortc recorded it."""
        latest = None
        for sender in session.pc.getSenders():
            stats = await sender.getStats()
            for s in stats.values():
                if s.type == "remote-inbound-rtp" and (latest is None or s.timestamp > latest):
                    latest = s.timestamp
        return latest

    async def _end(self, sid: int, why: str) -> None:
        session = self.sessions.pop(sid, None)
        if session is None:
            return
        self.ended.append((sid, why))
        del self.ended[:-32]
        if self._talker == sid:
            self._talker = None
        current = asyncio.current_task()
        for task in session.tasks:
            if task is not current:
                task.cancel()
        for sender in session.pc.getSenders():
            if sender.track is not None:
                sender.track.stop()       # the microphone closes with its last listener
        await session.pc.close()
        sent = session.video.sent if session.video is not None else 0
        log.info("rtc: session %d ended after %.1f s (%d video packets sent): %s", sid,
                 self._monotonic() - session.started, sent, why)

    async def _end_all(self, why: str) -> None:
        for sid in list(self.sessions):
            await self._end(sid, why)
