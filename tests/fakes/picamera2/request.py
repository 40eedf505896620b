"""Fake CompletedRequest and MappedArray: the buffers of one captured frame."""

from __future__ import annotations

from typing import Any

import numpy as np


class _Request:
    """Stands in for the libcamera request that CompletedRequest.request wraps."""

    def __init__(self, buffers: dict[str, np.ndarray], metadata: dict[str, Any]) -> None:
        self.buffers = buffers
        self.metadata = metadata


class CompletedRequest:
    """A captured frame held by the caller until release(), as in picamera2."""

    def __init__(self, request: _Request, picam2: Any) -> None:
        self.request: _Request | None = request
        self.picam2 = picam2
        self.ref_count = 1
        self.config = dict(picam2.camera_config)
        self.stream_map = {name: name for name in ("main", "lores") if self.config.get(name)}
        picam2.outstanding += 1

    def acquire(self) -> None:
        if self.ref_count == 0:
            raise RuntimeError("CompletedRequest: acquiring lock with ref_count 0")
        self.ref_count += 1

    def release(self) -> None:
        self.ref_count -= 1
        if self.ref_count < 0:
            raise RuntimeError("CompletedRequest: lock now has negative ref_count")
        if self.ref_count == 0:
            self.picam2.outstanding -= 1
            self.request = None
            self.config = {}
            self.stream_map = {}

    def _buffer(self, name: str) -> np.ndarray:
        if self.request is None:
            raise RuntimeError("CompletedRequest: used after release()")
        if self.config.get(name) is None:
            raise RuntimeError(f"Stream {name!r} is not defined")
        return self.request.buffers[name]

    def make_array(self, name: str) -> np.ndarray:
        """A copy of the stream's buffer; YUV420 comes as shape (h*3/2, stride)."""
        return np.copy(self._buffer(name))

    def make_buffer(self, name: str) -> np.ndarray:
        return np.copy(self._buffer(name)).reshape(-1)

    def get_metadata(self) -> dict[str, Any]:
        if self.request is None:
            raise RuntimeError("CompletedRequest: used after release()")
        return dict(self.request.metadata)


class MappedArray:
    """Context manager giving the stream's buffer itself (no copy), writeable by default."""

    def __init__(self, request: CompletedRequest, stream: str, reshape: bool = True,
                 write: bool = True) -> None:
        self._request = request
        self._stream = stream
        self._write = write
        self._array: np.ndarray | None = None

    def __enter__(self) -> MappedArray:
        buf = self._request._buffer(self._stream)
        view = buf.view()
        view.flags.writeable = self._write
        self._array = view
        return self

    def __exit__(self, *exc: object) -> None:
        self._array = None

    @property
    def array(self) -> np.ndarray | None:
        return self._array
