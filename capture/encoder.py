"""Continuous H.264 encoding of frames into Annex B packets (DESIGN.md decision 6), and the choice
between libx264, the V4L2 mem2mem hardware encoder and picamera2's own encoder."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
from av.video.frame import PictureType

from doorstep.capture.frames import EncodedPacket, Encoder, Frame, FrameSource, StreamInfo
from doorstep.core.errors import EncoderUnavailable

log = logging.getLogger(__name__)

ENCODER_NAMES = ("auto", "libx264", "h264_v4l2m2m", "picamera2")
PYAV_CODECS = ("libx264", "h264_v4l2m2m")
TIME_BASE = Fraction(1, 90000)  # the usual video clock; frame times keep their real spacing


@dataclass(frozen=True)
class EncoderSettings:
    """What every encoder is asked for: size, rate, bitrate and keyframe spacing."""

    width: int
    height: int
    fps: Fraction
    bitrate_kbps: int = 2500
    gop_seconds: float = 1.0
    preset: str = "veryfast"
    subpel: bool = True  # x264's sub-pixel motion refinement (False: subme=0, see below)

    @property
    def gop_frames(self) -> int:
        return max(1, round(float(self.fps) * self.gop_seconds))


def _codec_context(codec: str, s: EncoderSettings) -> Any:
    ctx: Any = av.CodecContext.create(codec, "w")
    ctx.width = s.width
    ctx.height = s.height
    ctx.pix_fmt = "yuv420p"
    ctx.time_base = TIME_BASE
    ctx.framerate = s.fps
    ctx.gop_size = s.gop_frames
    ctx.max_b_frames = 0
    ctx.bit_rate = s.bitrate_kbps * 1000
    g = s.gop_frames
    if codec == "libx264":
        # Fixed GOP, no scene-cut keyframes, no B-frames (pts order == dts order), SPS/PPS on
        # every IDR so any GOP can start a clip, and zerolatency so each frame comes straight
        # back as its packet. Without sub-pixel refinement (subme=0) x264 keeps no half-pel
        # planes: 14 MB less at 1080p and 15% less time, for 0.0-0.2 dB at the same bitrate
        # on doorbell scenes (docs/design.md, decision 20).
        params = (f"keyint={g}:min-keyint={g}:scenecut=0:bframes=0:open-gop=0:"
                  f"repeat-headers=1:vbv-maxrate={s.bitrate_kbps}:"
                  f"vbv-bufsize={2 * s.bitrate_kbps}")
        # forced-idr: a frame sent with picture type I (a viewer's keyframe request,
        # capture/keyframes.py) becomes an IDR, which a decoder can start at, not an open I.
        ctx.options = {"preset": s.preset, "tune": "zerolatency", "forced-idr": "1",
                       "x264-params": params if s.subpel else params + ":subme=0"}
    else:
        # h264_v4l2m2m: the Pi's (and other SoCs') stateful encoder. It has no repeat-headers
        # switch; FFmpeg emits SPS/PPS in-band when no global header is requested. A frame
        # of picture type I makes FFmpeg set the device's FORCE_KEY_FRAME control.
        ctx.options = {"num_output_buffers": "8", "num_capture_buffers": "8"}
    return ctx


class PyAvEncoder:
    """An Encoder over a PyAV/FFmpeg codec ("libx264" or "h264_v4l2m2m").

    Packets carry pts/dts in 1/90000 s taken from each frame's own pts, so a source that drops
    frames keeps real timing. A keyframe comes every ``round(fps * gop_seconds)`` frames, and
    each keyframe packet begins with SPS and PPS.
    """

    def __init__(self, codec: str = "libx264", *, width: int, height: int, fps: Fraction,
                 bitrate_kbps: int = 2500, gop_seconds: float = 1.0,
                 preset: str = "veryfast", subpel: bool = True) -> None:
        if codec not in PYAV_CODECS:
            raise EncoderUnavailable(f"encoder {codec!r}: not a PyAV H.264 encoder; "
                                     f"choose one of {', '.join(PYAV_CODECS)}")
        self.name = codec
        self.settings = EncoderSettings(width, height, Fraction(fps), bitrate_kbps, gop_seconds,
                                        preset, subpel)
        try:
            self._ctx = _codec_context(codec, self.settings)
            self._ctx.open()
        except (av.FFmpegError, OSError, ValueError) as e:
            raise EncoderUnavailable(f"encoder {codec!r} will not open at {width}x{height}: "
                                     f"{e}; available: {', '.join(available_encoders())}") from e
        self._walls: dict[int, float] = {}
        self._last_pts = -1
        self._closed = False
        self._key_wanted = False

    def request_keyframe(self) -> bool:
        """Make the next frame encoded an IDR (capture/keyframes.py). Any thread; the frame
        thread picks it up in ``encode``."""
        self._key_wanted = True
        return True

    @property
    def info(self) -> StreamInfo:
        return StreamInfo(width=self.settings.width, height=self.settings.height,
                          fps=self.settings.fps, time_base=TIME_BASE)

    def encode(self, frame: Frame) -> list[EncodedPacket]:
        if (frame.width, frame.height) != (self.settings.width, self.settings.height):
            raise ValueError(f"encoder {self.name}: frame is {frame.width}x{frame.height}, "
                             f"encoder is {self.settings.width}x{self.settings.height}")
        pts = max(round(frame.pts / TIME_BASE), self._last_pts + 1)
        self._last_pts = pts
        vf = _video_frame(frame)
        if self._key_wanted:
            self._key_wanted = False
            vf.pict_type = PictureType.I
        vf.pts = pts
        vf.time_base = TIME_BASE
        self._walls[pts] = frame.wall
        return self._packets(self._ctx.encode(vf))

    def flush(self) -> list[EncodedPacket]:
        if self._closed:
            return []
        packets = self._packets(self._ctx.encode(None))
        self._closed = True
        return packets

    def close(self) -> None:
        self._closed = True
        self._walls.clear()

    def _packets(self, raw: list[Any]) -> list[EncodedPacket]:
        out = []
        for p in raw:
            pts = int(p.pts)
            dts = int(p.dts) if p.dts is not None else pts
            wall = self._walls.pop(pts, 0.0)
            out.append(EncodedPacket(data=bytes(p), pts=pts, dts=dts, keyframe=bool(p.is_keyframe),
                                     time_base=TIME_BASE, wall=wall))
        return out


def _video_frame(frame: Frame) -> Any:
    """The frame as an av.VideoFrame for the codec, without copying the picture in Python.

    A frame that carries its decoded picture (``av_frame``) is encoded from it directly; its
    pts, time base and picture type are overwritten (the decoder's I/P type must not force
    keyframes: our GOP is our own). Otherwise the I420 array is wrapped in place
    (``from_numpy_buffer``): FFmpeg copies a frame it does not own when it is sent to the
    codec, so the array may change afterwards without harm. Arrays that cannot be wrapped
    (picamera2's padded rows, a height that is not a multiple of 4) are copied.
    """
    if frame.av_frame is not None:
        vf = frame.av_frame
        vf.pict_type = PictureType.NONE
        return vf
    i420 = frame.i420
    if i420.flags.c_contiguous and frame.height % 4 == 0:
        return av.VideoFrame.from_numpy_buffer(i420, format="yuv420p")
    return av.VideoFrame.from_ndarray(i420, format="yuv420p")


_probe_cache: dict[str, bool] = {}


def _opens(codec: str) -> bool:
    """True if the codec exists in this FFmpeg build and actually opens (h264_v4l2m2m is listed
    on any Linux build but opens only where a mem2mem encoder device exists)."""
    if codec not in _probe_cache:
        ok = codec in av.codecs_available
        if ok:
            try:
                ctx = _codec_context(codec, EncoderSettings(320, 240, Fraction(30)))
                ctx.open()
            except (av.FFmpegError, OSError, ValueError) as e:
                log.debug("encoder %s does not open here: %s", codec, e)
                ok = False
        _probe_cache[codec] = ok
    return _probe_cache[codec]


def available_encoders(source: FrameSource | None = None) -> list[str]:
    """The encoder names that work on this machine (picamera2 only with a Pi camera source)."""
    names = [c for c in PYAV_CODECS if _opens(c)]
    if source is not None and _is_picam(source):
        names.insert(0, "picamera2")
    return names


def _is_picam(source: FrameSource | None) -> bool:
    from doorstep.capture.picam import (
        Picamera2Source,  # picam.py itself imports picamera2 only lazily
    )
    return isinstance(source, Picamera2Source)


def open_encoder(name: str, *, width: int, height: int, fps: Fraction,
                 bitrate_kbps: int = 2500, gop_seconds: float = 1.0, preset: str = "veryfast",
                 subpel: bool = True, source: FrameSource | None = None) -> Encoder:
    """The encoder called ``name``: "auto", "libx264", "h264_v4l2m2m" or "picamera2".

    "auto" picks picamera2's encoder for a Picamera2Source, else h264_v4l2m2m if it opens, else
    libx264, and logs the choice at INFO. An unusable choice raises EncoderUnavailable naming it
    and listing what is available.
    """
    if name not in ENCODER_NAMES:
        raise EncoderUnavailable(f"encoder {name!r}: unknown; choose one of "
                                 f"{', '.join(ENCODER_NAMES)}")
    chosen = name
    if name == "auto":
        if _is_picam(source):
            chosen = "picamera2"
        elif _opens("h264_v4l2m2m"):
            chosen = "h264_v4l2m2m"
        else:
            chosen = "libx264"
        log.info("encoder auto: chose %s (available: %s)", chosen,
                 ", ".join(available_encoders(source)))
    if chosen == "picamera2":
        if not _is_picam(source):
            raise EncoderUnavailable(
                "encoder 'picamera2': needs the picamera2 camera source; available: "
                + ", ".join(available_encoders(source)))
        from doorstep.capture.picam import Picamera2Source, PicameraEncoder
        assert isinstance(source, Picamera2Source)
        return PicameraEncoder(source, bitrate_kbps=bitrate_kbps, gop_seconds=gop_seconds)
    if not _opens(chosen):
        raise EncoderUnavailable(f"encoder {chosen!r}: not usable on this machine; available: "
                                 f"{', '.join(available_encoders(source)) or 'none'}")
    encoder = PyAvEncoder(chosen, width=width, height=height, fps=fps,
                          bitrate_kbps=bitrate_kbps, gop_seconds=gop_seconds, preset=preset,
                          subpel=subpel)
    if name != "auto":
        log.info("encoder: %s %dx%d at %.3g fps, %d kbit/s, keyframe every %d frames", chosen,
                 width, height, float(fps), bitrate_kbps, encoder.settings.gop_frames)
    return encoder
