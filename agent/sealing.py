"""Artifacts leave the agent only through here: event bodies, snapshots and clips are sealed
to the owner's age recipients as they are written, straight into the outbox. No plaintext
byte of video or image is ever written to disk (DESIGN.md decision 1)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from doorstep.capture.clipaudio import AudioTap
from doorstep.capture.frames import EncodedPacket, StreamInfo
from doorstep.capture.mp4 import FragmentedMp4Writer
from doorstep.protocol.age import AgeWriter, X25519Recipient, encrypt
from doorstep.protocol.kinds import EventType, Kind, Priority
from doorstep.uplink.outbox import Item, Outbox, PendingArtifact

log = logging.getLogger(__name__)

EVENT_VERSION = 1


class Sealer:
    """Seals things for the owner and commits them to the outbox."""

    def __init__(self, outbox: Outbox, recipients: Sequence[X25519Recipient],
                 clock_synced: Callable[[], bool] = lambda: True) -> None:
        if not recipients:
            raise ValueError("at least one recipient is needed to seal anything")
        self.outbox = outbox
        self.recipients = list(recipients)
        self.clock_synced = clock_synced
        self.audio: AudioTap | None = None   # the microphone, when clips have sound (clip.audio)

    def event(self, kind: EventType, body: dict[str, Any], *, priority: Priority) -> Item:
        """A sealed JSON event: ``{"v": 1, "type": kind, "time": ..., ...body}``. It carries no
        picture: a ring's or a motion start's thumbnail follows as its own ``thumbnail``
        artifact (``parent`` = the event's seq), so the event is under a kilobyte and reaches
        the owner first (issue 13, item 13)."""
        doc: dict[str, Any] = {"v": EVENT_VERSION, "type": kind, "time": time.time(),
                               "clock_synced": self.clock_synced(), **body}
        data = json.dumps(doc, sort_keys=True).encode()
        return self.outbox.put(Kind.EVENT, encrypt(data, self.recipients), priority=priority)

    def blob(self, kind: Kind, data: bytes, *, priority: Priority, parent: str = "") -> Item:
        return self.outbox.put(kind, encrypt(data, self.recipients), priority=priority,
                               parent=parent)

    def segment(self, data: bytes, priority: Priority, parent: str,
                spare: frozenset[int] = frozenset()) -> Item:
        """Seal one clip segment (a standalone fMP4) and commit it.
        ``parent``: the seq of its clip's first segment ("" for that one); ``spare``: the
        clip's segments stored so far, which it may not evict to make room."""
        with self.outbox.open(Kind.SEGMENT, priority=priority, parent=parent) as pending:
            pending.spare = spare
            age = AgeWriter(pending, self.recipients)
            age.write(data)
            age.close()
            return pending.commit()

    def clip(self, info: StreamInfo, *, priority: Priority, evict: bool = True) -> ClipWriter:
        """``evict``: may push older items out on a full disk (a clip resumed after the disk
        filled may not: it would evict the part of itself that was kept)."""
        pending = self.outbox.open(Kind.CLIP, priority=priority)
        pending.may_evict = evict
        try:
            return ClipWriter(pending, self.recipients, info, self.audio)
        except BaseException:
            # the age header did not fit (a full disk): no empty file is left in tmp/, and no
            # open file in the outbox's pending list
            pending.abort()
            raise


class ClipWriter:
    """An MP4 being recorded: packets -> fragmented MP4 muxer -> age stream -> outbox file."""

    def __init__(self, pending: PendingArtifact, recipients: Sequence[X25519Recipient],
                 info: StreamInfo, audio: AudioTap | None = None) -> None:
        self._pending = pending
        self._age = AgeWriter(pending, recipients)
        self._mp4 = FragmentedMp4Writer(self._age, info, audio)
        self._info = info
        self.first: EncodedPacket | None = None
        self.last: EncodedPacket | None = None
        self.packets = 0

    @property
    def priority(self) -> Priority:
        return Priority(self._pending.priority)

    @priority.setter
    def priority(self, value: Priority) -> None:
        self._pending.priority = int(value)

    def write(self, packets: Sequence[EncodedPacket]) -> None:
        if not packets:
            return
        if self.first is None:
            self.first = packets[0]
        self.last = packets[-1]
        self.packets += len(packets)
        self._mp4.write(packets)

    @property
    def duration(self) -> float:
        if self.first is None or self.last is None:
            return 0.0
        return self.last.seconds - self.first.seconds + float(1 / self._info.fps)

    def close(self) -> Item:
        """Finish the MP4 and the age stream, then commit (sign, chain, rename)."""
        try:
            self._mp4.close()
            self._age.close()
        except BaseException:
            self._pending.abort()
            raise
        return self._pending.commit()

    def abort(self) -> None:
        self._pending.abort()

    def keep_cut_short(self) -> str:
        """Recording failed (a full disk): keep the whole age chunks written so far as a
        partial clip. The age writer's last chunk and the muxer's open fragment are lost."""
        return self._pending.keep_cut_short()
