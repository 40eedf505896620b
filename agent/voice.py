"""Quick replies and voicemail on the doorbell (docs/talk.md): the owner's stored replies
played on the speaker on a signed ``reply_play``, or by themselves when nobody answers a ring
within ``voice.answer_seconds``; then the visitor's message, recorded for
``voice.voicemail_seconds`` and sealed while it records (agent/voicemail.py).

Everything here runs on the ``voice`` thread or hands work to it: paho's thread only checks
and queues, and the frame loop never waits for audio.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from doorstep.agent.commands import Reply
from doorstep.agent.replies import ReplyError, ReplyStore, Transfers, audio_seconds
from doorstep.agent.voicemail import record_voicemail
from doorstep.capture.audio import AudioSink, AudioSource, AudioUnavailable
from doorstep.capture.audio import open_sink as open_audio_sink
from doorstep.capture.audio import open_source as open_audio_source
from doorstep.config.schema import RtcConfig, VoiceConfig
from doorstep.core.errors import SealError
from doorstep.protocol.age import X25519Identity, X25519Recipient
from doorstep.protocol.kinds import Action
from doorstep.protocol.reply import ReplyOffer
from doorstep.protocol.wire import Command
from doorstep.uplink.outbox import Outbox

log = logging.getLogger(__name__)

# Owner commands that do not answer the door: keeping the reply store is not talking to the
# visitor, so they do not stop the automatic reply.
NOT_ANSWERING = frozenset({Action.REPLY_PUT, Action.REPLY_DELETE, Action.ADD_RECIPIENT,
                           Action.REMOVE_RECIPIENT})


class Voice:
    """The reply store, its transfers, the speaker and the voicemail recorder."""

    def __init__(self, cfg: VoiceConfig, rtc: RtcConfig, data_dir: Path, *,
                 identity: X25519Identity, outbox: Outbox,
                 recipients: Callable[[], list[X25519Recipient]],
                 privacy: Callable[[], bool] = lambda: False,
                 open_source: Callable[[str], AudioSource] = open_audio_source,
                 open_sink: Callable[[str], AudioSink] = open_audio_sink) -> None:
        self.cfg = cfg
        self.speaker = cfg.speaker or rtc.speaker
        self.microphone = cfg.microphone or rtc.microphone
        self.store = ReplyStore(data_dir / "replies", cfg.max_replies)
        self.transfers = Transfers(identity, self._store)
        self._outbox = outbox
        self._recipients = recipients
        self._privacy = privacy
        self._open_source = open_source
        self._open_sink = open_sink
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue(maxsize=8)
        self._stop = threading.Event()
        self._answered = threading.Event()
        self._ring_lock = threading.Lock()
        self._ring_at = 0.0          # monotonic time of the ring waiting for an answer, or 0
        self._ring_seq: int | None = None    # that ring's event seq, if it was stored
        self.played = 0              # replies played (tests and status)
        self.played_frames = 0       # of the reply playing or played last
        self.voicemails = 0          # voicemails committed
        self._thread = threading.Thread(target=self._loop, name="voice", daemon=True)
        self._thread.start()
        self._timer = threading.Thread(target=self._watch_rings, name="voice-ring",
                                       daemon=True)
        self._timer.start()

    # -- commands (paho's thread: check, queue, return) -----------------------------------
    def on_put(self, cmd: Command, reply: Reply) -> None:
        try:
            offer = ReplyOffer.of(cmd, self.cfg.reply_max_kb * 1024)
        except SealError as exc:
            log.warning("replies: command %d refused: %s", cmd.counter, exc)
            reply(str(exc))
            return
        self.transfers.begin(cmd.counter, offer, lambda outcome: reply(outcome))

    def on_play(self, cmd: Command, reply: Reply) -> None:
        name = cmd.param("name")
        if self.store.path(name) is None:
            reply(f"reply_play: no reply named {name[:40]!r} on this doorbell")
            return
        if not self.speaker:
            reply("reply_play: this doorbell has no speaker (voice.speaker, rtc.speaker)")
            return
        answered: list[bool] = []

        def started(outcome: str | None) -> None:
            # the owner hears once it plays (a 30 s reply would outlast the hub's wait), or why
            # it could not start
            if not answered:
                answered.append(True)
                reply(outcome)

        self._submit(lambda: started(self._play(name, started)), reply)

    def on_delete(self, cmd: Command, reply: Reply) -> None:
        name = cmd.param("name")
        try:
            found = self.store.delete(name)
        except OSError as exc:
            reply(f"reply_delete: could not update the store ({exc.strerror or exc})")
            return
        reply(None if found else f"reply_delete: no reply named {name[:40]!r}")

    def on_command(self, cmd: Command) -> None:
        """Every verified owner command: one that answers the door ends the wait after a
        ring (no automatic reply, no voicemail)."""
        if cmd.action not in NOT_ANSWERING:
            self._answered.set()

    def ring(self, event_seq: int | None = None) -> None:
        """The first press of a ring: from now, ``answer_seconds`` to answer it.
        ``event_seq``: the ring event's seq, which a voicemail after it names as its
        ``parent`` (signed), so the owner's app puts the message on that ring."""
        if not self.cfg.answer_seconds:
            return
        with self._ring_lock:
            if self._ring_at:
                return                   # a ring already waits: a second press changes nothing
            self._answered.clear()
            self._ring_at = time.monotonic()
            self._ring_seq = event_seq
        log.info("voice: ring; the automatic reply plays in %.0f s unless it is answered",
                 self.cfg.answer_seconds)

    # -- the voice thread ---------------------------------------------------------------
    def _submit(self, job: Callable[[], None], reply: Reply | None = None) -> None:
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            log.warning("voice: busy; a request was refused")
            if reply is not None:
                reply("the doorbell's speaker is busy; try again")

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                job()
            except Exception:  # one failed job must not end the voice thread
                log.exception("voice: a job failed")

    def _watch_rings(self) -> None:
        while not self._stop.wait(0.1):
            self.transfers.tick()
            with self._ring_lock:
                at = self._ring_at
                if not at:
                    continue
                if self._answered.is_set():
                    log.info("voice: the ring was answered; no automatic reply")
                    self._ring_at = 0.0
                    continue
                if time.monotonic() - at < self.cfg.answer_seconds:
                    continue
                self._ring_at = 0.0
                seq = self._ring_seq
            self._submit(functools.partial(self._unanswered, seq))

    def _unanswered(self, ring_seq: int | None = None) -> None:
        name = self.store.auto
        if not name or self.store.path(name) is None:
            log.info("voice: the ring was not answered, but no reply is marked automatic")
            return
        log.info("voice: the ring was not answered in %.0f s; playing reply %r",
                 self.cfg.answer_seconds, name)
        refusal = self._play(name)
        if refusal is not None or not self.cfg.voicemail_seconds:
            return
        if self._privacy():
            log.info("voice: privacy mode is on; no voicemail is recorded")
            return
        if self._answered.is_set():
            log.info("voice: answered while the reply played; no voicemail")
            return
        item = record_voicemail(self.microphone, self.cfg.voicemail_seconds,
                                outbox=self._outbox, recipients=self._recipients(),
                                bitrate=self.cfg.bitrate_kbps * 1000,
                                open_source=self._open_source, stop=self._stop,
                                parent="" if ring_seq is None else str(ring_seq))
        if item is not None:
            self.voicemails += 1

    def _play(self, name: str,
              started: Callable[[str | None], None] = lambda outcome: None) -> str | None:
        """Play one stored reply on the speaker; None, or why it could not. ``started`` is
        told when its first sound has gone to the speaker."""
        path = self.store.path(name)
        if path is None:
            return f"no reply named {name!r}"
        try:
            data = path.read_bytes()
            sink = self._open_sink(self.speaker)
        except (OSError, AudioUnavailable) as exc:
            log.error("voice: cannot play reply %r: %s", name, exc)
            return f"cannot play it: {exc}"
        self.played_frames = 0
        try:
            frames = _decode(data)
            for frame in frames:
                if self._stop.is_set():
                    break
                sink.write(frame)
                if not self.played_frames:
                    started(None)
                self.played_frames += 1
        except (AudioUnavailable, ReplyError) as exc:
            log.error("voice: reply %r stopped playing: %s", name, exc)
            return f"it stopped playing: {exc}"
        finally:
            sink.close()
        self.played += 1
        log.info("voice: played reply %r", name)
        return None

    def _store(self, offer: ReplyOffer, audio: bytes) -> None:
        """A complete transfer (paho's thread): refused unless it is audio the doorbell plays,
        then kept."""
        seconds = audio_seconds(audio, self.cfg.reply_max_seconds)
        self.store.put(offer, audio, seconds)
        log.info("replies: stored %r (%d bytes, %.1f s%s)", offer.name, offer.size, seconds,
                 ", plays after an unanswered ring" if offer.auto else "")

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(queue.Full):
            self._jobs.put(None, timeout=1)
        self._thread.join(5)
        self._timer.join(1)


def _decode(data: bytes) -> Any:
    import av  # deferred: heavy on a small Pi

    try:
        with av.open(io.BytesIO(data), "r") as container:
            yield from container.decode(audio=0)
    except av.FFmpegError as exc:
        raise ReplyError(f"cannot decode it ({exc.__class__.__name__})") from None
