"""The owner's quick replies on the doorbell (docs/talk.md): the store on disk (a bounded
number, each file 0600) and the transfers that fill it (protocol/reply.py), each bounded by
the size its signed ``reply_put`` promised, checked before a byte is buffered."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from doorstep.core.droplog import DropLog
from doorstep.core.errors import DoorstepError, SealError
from doorstep.core.fsutil import write_atomic
from doorstep.protocol.age import X25519Identity
from doorstep.protocol.reply import ReplyOffer, open_part

log = logging.getLogger(__name__)

INDEX = "index.json"
TRANSFER_SECONDS = 60.0     # a transfer not complete this long after its command is refused
MAX_TRANSFERS = 2           # transfers under way at once; the oldest is refused for a new one


class ReplyError(DoorstepError):
    """A reply that cannot be stored or played; the message is the owner's refusal."""


@dataclass(frozen=True)
class StoredReply:
    name: str
    label: str
    size: int
    sha256: str
    seconds: float
    stored: float


class ReplyStore:
    """``root/index.json`` and one ``<name>.audio`` per reply, all 0600. At most
    ``max_replies``; one of them may be marked to play after an unanswered ring."""

    def __init__(self, root: Path, max_replies: int) -> None:
        self.root = root
        self.max_replies = max_replies
        self._lock = threading.Lock()
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._replies: dict[str, StoredReply] = {}
        self.auto = ""
        try:
            doc = json.loads((root / INDEX).read_text())
            self.auto = str(doc.get("auto", ""))
            for r in doc["replies"]:
                reply = StoredReply(**r)
                if (root / f"{reply.name}.audio").is_file():
                    self._replies[reply.name] = reply
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("replies: %s is unreadable (%s); starting with no replies",
                      root / INDEX, exc)

    def list(self) -> list[StoredReply]:
        with self._lock:
            return sorted(self._replies.values(), key=lambda r: r.name)

    def path(self, name: str) -> Path | None:
        with self._lock:
            return self.root / f"{name}.audio" if name in self._replies else None

    def put(self, offer: ReplyOffer, audio: bytes, seconds: float) -> None:
        with self._lock:
            if offer.name not in self._replies and len(self._replies) >= self.max_replies:
                raise ReplyError(f"{len(self._replies)} replies are stored already "
                                 f"(voice.max_replies); delete one first")
            # 0600: what the owner said is nobody else's business on this card
            write_atomic(self.root / f"{offer.name}.audio", audio, mode=0o600)
            self._replies[offer.name] = StoredReply(offer.name, offer.label, offer.size,
                                                    offer.sha256, round(seconds, 3),
                                                    time.time())
            if offer.auto:
                self.auto = offer.name
            self._save()

    def delete(self, name: str) -> bool:
        with self._lock:
            if self._replies.pop(name, None) is None:
                return False
            if self.auto == name:
                self.auto = ""
            self._save()
            (self.root / f"{name}.audio").unlink(missing_ok=True)
            return True

    def _save(self) -> None:
        doc: dict[str, Any] = {"auto": self.auto,
                               "replies": [r.__dict__ for r in self._replies.values()]}
        write_atomic(self.root / INDEX, json.dumps(doc, sort_keys=True).encode(), mode=0o600)


@dataclass
class _Transfer:
    counter: int
    offer: ReplyOffer
    done: Callable[[str | None], None]
    deadline: float
    data: bytearray = field(default_factory=bytearray)


class Transfers:
    """Reply transfers under way: opened by a verified ``reply_put`` (``begin``), filled by
    sealed parts in order (``on_part``), handed to ``finish`` once the audio has the signed
    size and SHA-256. A part for no transfer, out of place, or past the promised size is
    dropped with one log line per reason; a transfer that does not complete in time, or
    whose hash differs, is refused."""

    def __init__(self, identity: X25519Identity, finish: Callable[[ReplyOffer, bytes], None],
                 *, now: Callable[[], float] = time.monotonic,
                 seconds: float = TRANSFER_SECONDS) -> None:
        self._identity = identity
        self._finish = finish
        self._now = now
        self._seconds = seconds
        self._lock = threading.Lock()
        self._open: dict[int, _Transfer] = {}
        self.drops = DropLog(log, "replies: dropped a reply part")

    def begin(self, counter: int, offer: ReplyOffer, done: Callable[[str | None], None]) -> None:
        with self._lock:
            self._expire()
            while len(self._open) >= MAX_TRANSFERS:
                old = self._open.pop(min(self._open))
                old.done("refused: a newer reply transfer replaced it before it completed")
            self._open[counter] = _Transfer(counter, offer, done, self._now() + self._seconds)
        log.info("replies: receiving %r (%d bytes) for command %d", offer.name, offer.size,
                 counter)

    def on_part(self, payload: bytes) -> None:
        """A sealed part from the ``cmd`` topic (paho's thread: never raises)."""
        try:
            counter, offset, data = open_part(payload, self._identity)
        except SealError as exc:
            self.drops(str(exc))
            return
        with self._lock:
            self._expire()
            t = self._open.get(counter)
            if t is None:
                self.drops("reply part for no transfer under way (late, replayed or forged)")
                return
            if offset < len(t.data) and t.data[offset:offset + len(data)] == data:
                return                                     # a QoS 1 duplicate
            if offset != len(t.data):
                self.drops(f"reply part at offset {offset}, expected {len(t.data)}")
                return
            if offset + len(data) > t.offer.size:
                del self._open[counter]
                self.drops(f"reply part past the signed size of {t.offer.size} bytes")
                t.done(f"refused: the audio is longer than the {t.offer.size} bytes signed")
                return
            t.data += data
            if len(t.data) < t.offer.size:
                return
            del self._open[counter]
        if hashlib.sha256(t.data).hexdigest() != t.offer.sha256:
            log.warning("replies: %r refused: its audio does not have the signed SHA-256 "
                        "(a forged or corrupted part)", t.offer.name)
            t.done("refused: the audio received does not have the SHA-256 the command signed")
            return
        # decoding it to check it is audio takes a while on a small Pi: not on paho's thread
        # (one short thread per complete transfer, each of which took a signed command)
        threading.Thread(target=self._complete, args=(t,), name="reply-check",
                         daemon=True).start()

    def _complete(self, t: _Transfer) -> None:
        try:
            self._finish(t.offer, bytes(t.data))
        except ReplyError as exc:
            log.warning("replies: %r refused: %s", t.offer.name, exc)
            t.done(f"refused: {exc}")
            return
        except OSError as exc:
            log.error("replies: %r not stored: %s", t.offer.name, exc)
            t.done(f"refused: could not store it ({exc.strerror or exc})")
            return
        except Exception:  # the owner must still get an answer
            log.exception("replies: %r could not be checked", t.offer.name)
            t.done("refused: the doorbell could not check it (see its log)")
            return
        t.done(None)

    def _expire(self) -> None:
        now = self._now()
        for counter, t in list(self._open.items()):
            if t.deadline <= now:
                del self._open[counter]
                log.warning("replies: %r refused: incomplete after %.0f s (%d of %d bytes)",
                            t.offer.name, self._seconds, len(t.data), t.offer.size)
                t.done(f"refused: incomplete after {self._seconds:.0f} s "
                       f"({len(t.data)} of {t.offer.size} bytes)")

    def tick(self) -> None:
        """Refuse transfers that ran out of time (called now and then)."""
        with self._lock:
            self._expire()


def audio_seconds(data: bytes, limit: float) -> float:
    """The duration of ``data`` decoded with PyAV; ReplyError unless it is audio that decodes
    and lasts at most ``limit`` seconds."""
    import io

    import av  # deferred: heavy on a small Pi

    try:
        with av.open(io.BytesIO(data), "r") as container:
            if not container.streams.audio:
                raise ReplyError("not audio (no audio stream in it)")
            samples, rate = 0, 0
            for frame in container.decode(audio=0):
                samples += frame.samples
                rate = frame.sample_rate
                if rate and samples / rate > limit:
                    raise ReplyError(f"longer than {limit:.0f} s (voice.reply_max_seconds)")
    except av.FFmpegError as exc:
        raise ReplyError(f"not audio the doorbell can play ({exc.__class__.__name__})") \
            from None
    if not samples:
        raise ReplyError("not audio (nothing decodes)")
    return samples / rate
