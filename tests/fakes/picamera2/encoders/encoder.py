"""Fake picamera2.encoders.Encoder: outputs, start/stop and timestamps as the real base class."""

from __future__ import annotations

from enum import Enum
from typing import Any


class Quality(Enum):
    VERY_LOW = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    VERY_HIGH = 4


class Encoder:
    def __init__(self) -> None:
        self._output: list[Any] = []
        self._running = False
        self.name = "main"
        self.width = 0
        self.height = 0
        self.format: str | None = None
        self.stride = 0
        self.firsttimestamp: int | None = None
        self.frames_encoded = 0

    @property
    def running(self) -> bool:
        return self._running

    @property
    def output(self) -> list[Any]:
        return self._output

    @output.setter
    def output(self, value: Any) -> None:
        self._output = list(value) if isinstance(value, list) else [value]

    def start(self, quality: Any = None) -> None:
        if self._running:
            raise RuntimeError("Encoder already running")
        self.frames_encoded = 0
        self._running = True
        self.firsttimestamp = None
        for out in self._output:
            out.start()
        self._start()

    def _start(self) -> None:
        pass

    def stop(self) -> None:
        if not self._running:
            raise RuntimeError("Encoder already stopped")
        self._running = False
        self._stop()
        for out in self._output:
            out.stop()

    def _stop(self) -> None:
        pass

    def encode(self, stream: Any, request: Any) -> None:
        if self._running:
            self._encode(stream, request)
            self.frames_encoded += 1

    def _encode(self, stream: Any, request: Any) -> None:
        raise NotImplementedError

    def outputframe(self, frame: Any, keyframe: bool = True, timestamp: int | None = None,
                    packet: Any = None, audio: bool = False) -> None:
        for out in self._output:
            out.outputframe(frame, keyframe, timestamp, packet, audio)

    def _timestamp(self, request: Any) -> int:
        """Microseconds since this encoder's first frame, from the SensorTimestamp (ns)."""
        ts = int(request.get_metadata()["SensorTimestamp"] / 1000)
        if self.firsttimestamp is None:
            self.firsttimestamp = ts
            return 0
        return ts - self.firsttimestamp
