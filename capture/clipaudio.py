"""Sound for clips (``clip.audio``, off by default: docs/talk.md, "Consent"): the microphone
kept running so a clip's pre-roll has sound too, its last seconds held in RAM only, with the
wall time each 20 ms frame began. FragmentedMp4Writer takes frames from here as it writes
video and encodes them to AAC beside it. Nothing here writes to disk."""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from doorstep.capture.audio import RATE, AudioSource, AudioUnavailable

log = logging.getLogger(__name__)


class AudioTap:
    """The last ``keep`` seconds of the microphone, as ``(wall, frame)`` pairs. One reader
    thread; ``since`` may be called from any thread."""

    def __init__(self, open_source: Callable[[], AudioSource], keep: float, *,
                 wall: Callable[[], float] = time.time) -> None:
        self._open = open_source
        self._keep = keep
        self._wall = wall
        self._frames: collections.deque[tuple[float, Any]] = collections.deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.failed: str | None = None       # why the microphone stopped, for the log/status
        self._thread = threading.Thread(target=self._run, name="clip-audio", daemon=True)

    def start(self) -> AudioTap:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            source = self._open()
        except AudioUnavailable as exc:
            self.failed = str(exc)
            log.error("clip audio: no microphone, clips stay silent: %s", exc)
            return
        # Each frame's time is the microphone's own clock: where the stream began plus the
        # samples before it. Frames read in a burst after a stall (a busy CPU; ALSA buffers
        # meanwhile) keep their true times, so no clip gets more sound than its span. The
        # start is set again when that clock runs ahead of the wall clock or falls a second
        # behind it (samples lost).
        base: float | None = None
        samples = 0
        try:
            while not self._stop.is_set():
                frame = source.read()
                if frame is None:
                    break
                now = self._wall()
                end = base + (samples + frame.samples) / RATE if base is not None else now
                if base is None or end > now + 0.05 or now - end > 1.0:
                    base, samples, end = now - frame.samples / RATE, 0, now
                start = base + samples / RATE
                samples += frame.samples
                with self._lock:
                    self._frames.append((start, frame))
                    while self._frames and self._frames[0][0] < end - self._keep:
                        self._frames.popleft()
        except AudioUnavailable as exc:
            self.failed = str(exc)
            log.error("clip audio: the microphone failed, clips stay silent from now: %s", exc)
        finally:
            source.close()

    def since(self, after: float, until: float) -> list[tuple[float, Any]]:
        """Frames that began after ``after`` and by ``until`` (wall times), oldest first."""
        with self._lock:
            return [(w, f) for w, f in self._frames if after < w <= until]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
