"""The doorbell's microphone and speaker, through PyAV: 20 ms frames of 48 kHz audio in from an
ALSA device (or a file standing in for the microphone in tests and development), and out to an
ALSA device (or a WAV file standing in for the speaker). Opus itself is aiortc's business.

Nothing here records: a source is read only while a live session runs (docs/rtc.md says why
the microphone is off unless the owner asks for it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from fractions import Fraction
from typing import Any, Protocol

from doorstep.core.errors import CaptureError

log = logging.getLogger(__name__)

RATE = 48000
FRAME_SAMPLES = 960              # 20 ms at 48 kHz: one Opus frame
TIME_BASE = Fraction(1, RATE)


class AudioUnavailable(CaptureError):
    """The microphone or speaker named in the config cannot be opened or used."""


class AudioSource(Protocol):
    """20 ms mono s16 frames at 48 kHz, ``pts`` counting samples from 0."""

    def read(self) -> Any | None:
        """The next ``av.AudioFrame``, blocking; None once the source has ended."""

    def close(self) -> None: ...


class AudioSink(Protocol):
    def write(self, frame: Any) -> None:
        """Play (or store) one ``av.AudioFrame`` of any rate and layout."""

    def close(self) -> None: ...


def _split(spec: str) -> tuple[str, str]:
    scheme, sep, where = spec.partition(":")
    if not sep or scheme not in ("alsa", "file") or not where:
        raise AudioUnavailable(f"audio device {spec!r}: not \"alsa:DEVICE\" or \"file:PATH\"")
    return scheme, where


class PyAvSource:
    """A microphone through FFmpeg's ALSA input (``alsa:hw:1,0``), or an audio file read in
    real time (``file:PATH``, looped), both resampled to 20 ms mono s16 frames at 48 kHz."""

    def __init__(self, spec: str, *, loop: bool = True,
                 sleep: Callable[[float], None] = time.sleep,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        import av  # deferred: heavy on a small Pi, and only needed while a session runs

        self._av = av
        self.spec = spec
        self._scheme, self._where = _split(spec)
        self._loop = loop and self._scheme == "file"
        self._sleep = sleep
        self._monotonic = monotonic
        self._samples = 0
        self._start = 0.0
        self._pending: list[Any] = []
        self._container: Any = None
        self._decoded: Any = None
        self._open()

    def _open(self) -> None:
        av = self._av
        try:
            if self._scheme == "alsa":
                self._container = av.open(self._where, format="alsa")
            else:
                self._container = av.open(self._where)
            stream = self._container.streams.audio[0]
        except (OSError, av.FFmpegError, IndexError) as exc:
            raise AudioUnavailable(f"audio source {self.spec!r}: cannot open it ({exc})") \
                from None
        self._decoded = self._container.decode(stream)
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE,
                                            frame_size=FRAME_SAMPLES)

    def read(self) -> Any | None:
        while not self._pending:
            try:
                frame = next(self._decoded)
            except StopIteration:
                self._pending.extend(self._resampler.resample(None))
                if self._pending:
                    break
                if not self._loop:
                    return None
                self._container.close()
                self._open()
                continue
            except self._av.FFmpegError as exc:
                raise AudioUnavailable(f"audio source {self.spec!r}: {exc}") from None
            self._pending.extend(self._resampler.resample(frame))
        out = self._pending.pop(0)
        out.pts = self._samples
        out.time_base = TIME_BASE
        out.sample_rate = RATE
        self._samples += out.samples
        if self._scheme == "file":       # an ALSA device paces itself; a file is paced here
            if self._samples == out.samples:
                self._start = self._monotonic()
            ahead = self._start + out.pts / RATE - self._monotonic()
            if ahead > 0:
                self._sleep(ahead)
        return out

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None


class PyAvSink:
    """The speaker through FFmpeg's ALSA output (``alsa:default``), or a WAV file
    (``file:PATH``): 48 kHz s16 stereo, what aiortc's Opus decoder gives."""

    def __init__(self, spec: str) -> None:
        import av

        self._av = av
        self.spec = spec
        scheme, where = _split(spec)
        self._file: Any = None
        try:
            if scheme == "alsa":
                self._container = av.open(where, "w", format="alsa")
            else:       # opened here, so a path that cannot be written fails now, not later
                self._file = open(where, "wb")  # noqa: SIM115 (closed in close())
                self._container = av.open(self._file, "w", format="wav")
            self._stream = self._container.add_stream("pcm_s16le", rate=RATE)
            self._stream.layout = "stereo"
        except (OSError, av.FFmpegError) as exc:
            raise AudioUnavailable(f"audio sink {spec!r}: cannot open it ({exc})") from None
        self._resampler = av.AudioResampler(format="s16", layout="stereo", rate=RATE)
        self._lock = threading.Lock()      # sessions may write from the rtc thread and close
        self.frames = 0
        self._closed = False

    def write(self, frame: Any) -> None:
        with self._lock:
            if self._closed:
                return
            frame.pts = None               # the muxer numbers samples itself
            try:
                for out in self._resampler.resample(frame):
                    for packet in self._stream.encode(out):
                        self._container.mux(packet)
            except self._av.FFmpegError as exc:
                raise AudioUnavailable(f"audio sink {self.spec!r}: {exc}") from None
            self.frames += 1

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                for packet in self._stream.encode(None):
                    self._container.mux(packet)
            except self._av.FFmpegError as exc:
                log.warning("audio sink %s: could not flush: %s", self.spec, exc)
            self._container.close()
            if self._file is not None:
                self._file.close()


def open_source(spec: str) -> AudioSource:
    return PyAvSource(spec)


def open_sink(spec: str) -> AudioSink:
    return PyAvSink(spec)
