"""Fake H264Encoder with the real constructor; encodes with libx264 so the bytes are real H.264
(Annex B, SPS/PPS repeated on every I-frame when ``repeat`` is set, as the real one does)."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import av
import numpy as np
from av.video.frame import PictureType

from ..request import MappedArray
from .encoder import Encoder

VIDIOC_S_CTRL = 0xC008561C
V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME = 0x009909E5


class FakeV4l2Device:
    """What the real encoder keeps open as ``vd`` (/dev/video11) while it runs: here only the
    FORCE_KEY_FRAME control, set through ``ioctl`` as the kernel would take it."""

    def __init__(self) -> None:
        self.closed = False
        self.force_key = False
        self.controls: list[tuple[int, int]] = []

    def ioctl(self, request: int, arg: bytes) -> None:
        import struct

        if request != VIDIOC_S_CTRL or len(arg) != 8:
            raise OSError(25, "Inappropriate ioctl for device")
        cid, value = struct.unpack("=Ii", arg)
        self.controls.append((cid, value))
        if cid == V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME:
            self.force_key = True


class H264Encoder(Encoder):
    def __init__(self, bitrate: int | None = None, repeat: bool = True,
                 iperiod: int | None = None, framerate: float | None = None,
                 enable_sps_framerate: bool = False, qp: int | None = None,
                 profile: str | None = None) -> None:
        super().__init__()
        self.bitrate = bitrate
        self.repeat = repeat
        self.iperiod = iperiod
        self.framerate = framerate
        self.qp = qp
        self.profile = profile
        self._ctx: Any = None
        self.vd: FakeV4l2Device | None = None

    def _start(self) -> None:
        if self.format not in ("YUV420", "YVU420"):
            raise RuntimeError(f"fake H264Encoder: format {self.format} not supported")
        ctx = av.CodecContext.create("libx264", "w")
        ctx.width, ctx.height = self.width, self.height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = Fraction(1, 1_000_000)
        # x264's rate control works per frame at this rate (it is 1e6/s from the time base alone)
        ctx.framerate = Fraction(self.framerate or 30).limit_denominator(1001)
        ctx.bit_rate = self.bitrate or 2_000_000
        period = self.iperiod or 60
        params = f"keyint={period}:min-keyint={period}:scenecut=0:bframes=0"
        if self.repeat:
            params += ":repeat-headers=1"
        ctx.options = {"preset": "ultrafast", "tune": "zerolatency", "forced-idr": "1",
                       "x264-params": params}
        ctx.open()
        self._ctx = ctx
        self.vd = FakeV4l2Device()

    def _stop(self) -> None:
        self._ctx = None
        if self.vd is not None:
            self.vd.closed = True

    def _encode(self, stream: Any, request: Any) -> None:
        timestamp_us = self._timestamp(request)
        w, h = self.width, self.height
        with MappedArray(request, stream, write=False) as m:
            buf = m.array
            assert buf is not None
            y = buf[:h, :w]
            chroma = buf[h:].reshape(h, self.stride // 2)
            i420 = np.concatenate([y.reshape(-1), chroma[: h // 2, : w // 2].reshape(-1),
                                   chroma[h // 2:, : w // 2].reshape(-1)]).reshape(h * 3 // 2, w)
        frame = av.VideoFrame.from_ndarray(i420, format="yuv420p")
        frame.pts = timestamp_us
        if self.vd is not None and self.vd.force_key:
            self.vd.force_key = False
            frame.pict_type = PictureType.I
        for packet in self._ctx.encode(frame):
            self.outputframe(bytes(packet), bool(packet.is_keyframe), int(packet.pts))
