"""The media of a WebRTC session (docs/rtc.md), as aiortc tracks: the running encoder's own
H.264 packets passed through without a second encode, and the microphone shared by every
session that asks for it. All of it runs on the rtc thread's event loop, except the
microphone's reader thread, which only hands frames to the loop."""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import Callable
from typing import Any

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from doorstep.capture.audio import AudioSource, AudioUnavailable
from doorstep.capture.frames import EncodedPacket

log = logging.getLogger(__name__)


class PacketTrack(MediaStreamTrack):
    """Video from the running encoder: its Annex B access units as ``av.Packet``s, which
    aiortc's H.264 encoder packetises as they are (its ``pack`` path) instead of encoding.

    It starts at the next keyframe, since a viewer cannot decode anything before one. A viewer
    that falls ``limit`` packets behind loses them up to the next keyframe, never single
    packets, so it never sees a broken reference chain, and ``on_loss`` is called to ask for
    that keyframe sooner."""

    kind = "video"

    def __init__(self, limit: int, on_loss: Callable[[], object] = lambda: None) -> None:
        super().__init__()
        self._on_loss = on_loss
        self._queue: collections.deque[EncodedPacket] = collections.deque()
        self._limit = limit
        self._ready = asyncio.Event()
        self._waiting_key = True
        self.dropped = 0
        self.sent = 0

    def offer(self, packet: EncodedPacket) -> None:
        """A new packet from the encoder (on the loop, never blocks)."""
        if self._waiting_key:
            if not packet.keyframe:
                return
            self._waiting_key = False
        if len(self._queue) >= self._limit:
            self.dropped += len(self._queue)
            self._queue.clear()
            if not packet.keyframe:
                self._waiting_key = True
                self._on_loss()
                return
        self._queue.append(packet)
        self._ready.set()

    async def recv(self) -> av.Packet:
        while not self._queue:
            if self.readyState != "live":
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        p = self._queue.popleft()
        packet = av.Packet(p.data)
        packet.pts = p.pts
        packet.dts = p.dts
        packet.time_base = p.time_base
        self.sent += 1
        return packet

    def stop(self) -> None:
        super().stop()
        self._ready.set()           # a recv() waiting wakes and ends


class AudioTrack(MediaStreamTrack):
    """One session's copy of the microphone: the latest half second at most."""

    kind = "audio"

    def __init__(self, on_stop: Callable[[AudioTrack], None]) -> None:
        super().__init__()
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=25)
        self._on_stop = on_stop

    def offer(self, frame: Any) -> None:
        if self._queue.full():
            self._queue.get_nowait()       # a slow viewer loses the oldest, not the newest
        self._queue.put_nowait(frame)

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        frame = await self._queue.get()
        if frame is None:
            raise MediaStreamError
        return frame

    def stop(self) -> None:
        if self.readyState == "live":
            super().stop()
            self._on_stop(self)
            if self._queue.full():
                self._queue.get_nowait()
            self._queue.put_nowait(None)


class Microphone:
    """The one microphone, read on its own thread only while a session listens. Each frame
    goes to every listening session's track on the loop; the device is closed again when the
    last session ends, so nothing is read while nobody listens."""

    def __init__(self, open_source: Callable[[], AudioSource],
                 loop: asyncio.AbstractEventLoop) -> None:
        self._open = open_source
        self._loop = loop
        self._tracks: set[AudioTrack] = set()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def track(self) -> AudioTrack:
        """A new listener (on the loop); starts reading the device if nobody was."""
        t = AudioTrack(self._forget)
        self._tracks.add(t)
        if self._thread is None or not self._thread.is_alive() or self._stop.is_set():
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._read, args=(self._stop,),
                                            name="rtc-mic", daemon=True)
            self._thread.start()
        return t

    def _forget(self, track: AudioTrack) -> None:
        self._tracks.discard(track)
        if not self._tracks:
            self._stop.set()

    def _deliver(self, frame: Any) -> None:
        for t in list(self._tracks):
            t.offer(frame)

    def _read(self, stop: threading.Event) -> None:
        try:
            source = self._open()
        except AudioUnavailable as exc:
            log.error("rtc: no microphone for the session: %s", exc)
            return
        log.info("rtc: microphone on")
        try:
            while not stop.is_set():
                frame = source.read()
                if frame is None:
                    break
                self._loop.call_soon_threadsafe(self._deliver, frame)
        except AudioUnavailable as exc:
            log.error("rtc: the microphone failed: %s", exc)
        except RuntimeError:        # the loop closed under us: the agent is stopping
            pass
        finally:
            source.close()
            log.info("rtc: microphone off")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
