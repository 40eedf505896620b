"""A visitor's voicemail (docs/talk.md): the microphone for a set time, encoded to Opus in Ogg
with PyAV, sealed to the owner's recipients as it is encoded, straight into the outbox, and
committed as a ``voicemail`` artifact (signed, chained, uploaded like a clip). No plaintext
byte of it is written to disk."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from doorstep.capture.audio import FRAME_SAMPLES, RATE, AudioSource, AudioUnavailable
from doorstep.core.errors import DiskFull, OutboxError
from doorstep.protocol.age import AgeWriter, X25519Recipient
from doorstep.protocol.kinds import Kind, Priority
from doorstep.uplink.outbox import Item, Outbox

log = logging.getLogger(__name__)

MIME = "audio/ogg"       # what the owner's app and `doorstep open` call it


class _Sink:
    """What PyAV's muxer writes to: write-only, into the age stream."""

    def __init__(self, age: AgeWriter) -> None:
        self._age = age

    def write(self, data: bytes) -> int:
        return self._age.write(data)


def record_voicemail(spec: str, seconds: float, *, outbox: Outbox,
                     recipients: Sequence[X25519Recipient], bitrate: int,
                     open_source: Callable[[str], AudioSource],
                     stop: threading.Event | None = None,
                     priority: Priority = Priority.RING, parent: str = "") -> Item | None:
    """Record ``seconds`` from the microphone ``spec`` and commit it; the committed item, or
    None (logged) when the microphone or the disk failed. It never evicts anything to make
    room: on a full disk the voicemail is dropped and nothing else is lost."""
    import av  # deferred: heavy on a small Pi

    try:
        source = open_source(spec)
    except AudioUnavailable as exc:
        log.error("voicemail: no microphone: %s", exc)
        return None
    pending = None
    try:
        pending = outbox.open(Kind.VOICEMAIL, priority=int(priority), parent=parent)
        pending.may_evict = False
        age = AgeWriter(pending, recipients)
        container = av.open(_Sink(age), "w", format="ogg")
        stream = container.add_stream("libopus", rate=RATE)
        stream.layout = "mono"
        stream.bit_rate = bitrate
        want = int(seconds * RATE)
        got = 0
        while got < want and not (stop is not None and stop.is_set()):
            frame = source.read()
            if frame is None:
                break
            frame.pts = got
            got += frame.samples
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
        container.close()
        age.close()
        item = pending.commit()
    except (DiskFull, OSError, OutboxError) as exc:
        log.error("voicemail: not kept, the disk is full or failing (%s); nothing else was "
                  "removed for it", exc)
        if pending is not None:
            pending.abort()
        return None
    except (AudioUnavailable, av.FFmpegError) as exc:
        log.error("voicemail: recording failed: %s", exc)
        if pending is not None:
            pending.abort()
        return None
    finally:
        source.close()
    log.info("voicemail: %.1f s recorded and sealed as seq %d", got / RATE, item.seq)
    return item


__all__ = ["FRAME_SAMPLES", "MIME", "record_voicemail"]
