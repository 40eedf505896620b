"""Keyframes on demand: a live viewer that lost packets asks for an IDR (RTCP PLI/FIR), and the
running encoder, which is shared with the recording, makes its next frame one. ``KeyframeGate``
rate-limits those requests across every viewer, so a lossy or hostile viewer cannot fill the
recording with keyframes (docs/rtc.md, "Keyframe requests").

How each encoder makes the IDR: PyAV's libx264 and h264_v4l2m2m take a frame whose picture type
is I (``PyAvEncoder.request_keyframe``); picamera2's V4L2 H264Encoder gets the V4L2 control
FORCE_KEY_FRAME on its device (``force_v4l2_keyframe``, the Pi path, verified only against a
fake device)."""

from __future__ import annotations

import fcntl
import logging
import struct
import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

log = logging.getLogger(__name__)

MIN_INTERVAL = 0.5      # s between two forced IDRs, whoever asks
LOG_INTERVAL = 10.0     # s between two "limited" log lines

# <linux/videodev2.h>, <linux/v4l2-controls.h>: VIDIOC_S_CTRL = _IOWR('V', 28, struct
# v4l2_control {__u32 id; __s32 value;}); V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME =
# V4L2_CID_CODEC_BASE (0x00990900) + 229, a button control (its value is ignored).
VIDIOC_S_CTRL = 0xC008561C
V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME = 0x00990900 + 229

Ioctl = Callable[[Any, int, bytes], Any]


@runtime_checkable
class KeyframeOnDemand(Protocol):
    """An encoder that can make its next frame an IDR. ``request_keyframe`` is called from
    another thread than ``encode`` and never blocks; False if this encoder cannot do it now."""

    def request_keyframe(self) -> bool: ...


_ioctl: Ioctl = fcntl.ioctl     # the kernel's; tests put a fake V4L2 device's in its place


def force_v4l2_keyframe(device: Any) -> None:
    """Ask a V4L2 mem2mem encoder (an open device file or fd) for a keyframe on the next frame
    it encodes. Raises OSError as the ioctl does."""
    _ioctl(device, VIDIOC_S_CTRL, struct.pack("=Ii", V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME, 1))


class KeyframeGate:
    """Viewers' keyframe requests, passed on to the encoder at most once per ``interval``
    seconds in all. Requests that come sooner are dropped (the IDR just forced serves them
    too), and counted; a log line says so at most every LOG_INTERVAL seconds. Thread-safe
    enough for one caller thread (the rtc loop); ``monotonic`` is injected for tests."""

    def __init__(self, encoder: object, *, interval: float = MIN_INTERVAL,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._request: Callable[[], bool] | None = (
            encoder.request_keyframe if isinstance(encoder, KeyframeOnDemand) else None)
        self._name = getattr(encoder, "name", type(encoder).__name__)
        self.interval = interval
        self._monotonic = monotonic
        self._last: float | None = None
        self._logged: float | None = None
        self.forced = 0          # IDRs asked of the encoder
        self.limited = 0         # requests dropped by the rate limit
        self._unsupported_said = False

    def ask(self, who: str) -> bool:
        """A keyframe request from ``who`` (a session, for the log). True if the encoder was
        asked for an IDR."""
        if self._request is None:
            if not self._unsupported_said:
                self._unsupported_said = True
                log.info("keyframe request from %s: encoder %s cannot make one on demand; "
                         "the picture returns at the next scheduled keyframe", who, self._name)
            return False
        now = self._monotonic()
        if self._last is not None and now - self._last < self.interval:
            self.limited += 1
            if self._logged is None or now - self._logged >= LOG_INTERVAL:
                self._logged = now
                log.info("keyframe request from %s limited: the last IDR was forced %.0f ms "
                         "ago, at most one per %.0f ms (%d limited so far)", who,
                         1000 * (now - self._last), 1000 * self.interval, self.limited)
            return False
        if not self._request():
            return False
        self._last = now
        self.forced += 1
        log.debug("keyframe request from %s: the encoder's next frame is an IDR", who)
        return True
