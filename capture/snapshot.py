"""Still images from a frame: a full-resolution JPEG for ring events and a small thumbnail."""

from __future__ import annotations

import threading

import cv2
import numpy as np
from av.video.reformatter import Colorspace, VideoReformatter

from doorstep.capture.frames import Frame
from doorstep.core.errors import CaptureError

# The ring thread and the commit thread may both snapshot the same decoded picture. PyAV keeps
# one swscale context per frame and runs it with the GIL released, so two conversions of one
# frame at once can hang or crash: each conversion gets a reformatter of its own, and they take
# turns (a 1080p conversion takes a few milliseconds).
_CONVERTING = threading.Lock()


def _bgr(i420: np.ndarray) -> np.ndarray:
    """I420 (h*3/2, w) to BGR, BT.601 limited range as OpenCV converts it."""
    return cv2.cvtColor(i420, cv2.COLOR_YUV2BGR_I420)


def _encode(bgr: np.ndarray, quality: int) -> bytes:
    if not 1 <= quality <= 100:
        raise ValueError(f"jpeg quality must be 1..100, got {quality}")
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise CaptureError(f"snapshot: JPEG encoding of a {bgr.shape[1]}x{bgr.shape[0]} "
                           "image failed")
    return bytes(buf.tobytes())


def jpeg(frame: Frame, quality: int = 90) -> bytes:
    """The frame as a full-resolution JPEG.

    A decoded picture (``frame.av_frame``) is converted to BGR by swscale straight from the
    decoder's planes, BT.601 as for an I420 array: no I420 copy is made, which at 1080p is
    3 MB less at the moment of a ring or a motion start. Safe to call from several threads
    on the same frame.
    """
    if frame.av_frame is not None:
        with _CONVERTING:
            bgr = VideoReformatter().reformat(frame.av_frame, format="bgr24",
                                              src_colorspace=Colorspace.ITU601).to_ndarray()
        return _encode(bgr, quality)
    return _encode(_bgr(frame.i420), quality)


def thumbnail(frame: Frame, width: int = 320, quality: int = 80) -> bytes:
    """The frame shrunk to ``width`` pixels wide (aspect kept, never enlarged) as a JPEG.

    The Y, U and V planes are shrunk first (area averaging, reading the frame's planes in
    place) and only the small picture is converted to BGR: a quarter of the work and none of a
    full-size copy's memory.
    """
    w, h = frame.width, frame.height
    if width >= w:
        return jpeg(frame, quality)
    height = max(1, round(h * width / w))
    tw, th = width + width % 2, max(2, height + height % 2)  # 4:2:0 needs an even size
    y, u, v = frame.planes
    small = np.empty((th * 3 // 2, tw), np.uint8)
    cv2.resize(y, (tw, th), dst=small[:th], interpolation=cv2.INTER_AREA)
    small_chroma = small[th:].reshape(th, tw // 2)
    cv2.resize(u, (tw // 2, th // 2), dst=small_chroma[: th // 2],
               interpolation=cv2.INTER_AREA)
    cv2.resize(v, (tw // 2, th // 2), dst=small_chroma[th // 2:],
               interpolation=cv2.INTER_AREA)
    bgr = _bgr(small)
    if (tw, th) != (width, height):  # an odd size: trim the spare column or row
        bgr = bgr[:height, :width]
    return _encode(bgr, quality)
