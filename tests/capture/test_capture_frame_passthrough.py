"""Frames that carry their decoded picture (Frame.av_frame): what the source hands on without
copying encodes exactly like an I420 array, and privacy masks still reach the encoder."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from doorstep.capture.encoder import PyAvEncoder
from doorstep.capture.frames import EncodedPacket, Frame
from doorstep.capture.source import FileSource


def encoder(gop_seconds: float = 1.0) -> PyAvEncoder:
    return PyAvEncoder("libx264", width=320, height=240, fps=Fraction(15), bitrate_kbps=400,
                       gop_seconds=gop_seconds, preset="superfast")


def encode_all(frames: list[Frame], gop_seconds: float = 1.0) -> list[EncodedPacket]:
    enc = encoder(gop_seconds)
    packets = [p for f in frames for p in enc.encode(f)]
    return packets + enc.flush()


def assert_same_video(a: list[EncodedPacket], b: list[EncodedPacket]) -> None:
    """Two encodes of the same pictures show the same video. (Not byte-for-byte: x264 with
    threads and rate control is not bit-exact from run to run.)"""
    pa, pb = decoded_pictures(a), decoded_pictures(b)
    assert len(pa) == len(pb) > 0
    assert [p.keyframe for p in a] == [p.keyframe for p in b]
    for x, y in zip(pa, pb, strict=True):
        assert np.abs(x.astype(int) - y.astype(int)).mean() < 3.0


def decoded_pictures(packets: list[EncodedPacket]) -> list[np.ndarray]:
    ctx = av.CodecContext.create("h264", "r")
    pictures = []
    for p in packets:
        for frame in ctx.decode(av.Packet(p.data)):
            pictures.append(frame.to_ndarray())
    return pictures


def test_unmasked_source_frames_carry_the_decoded_picture(small_video: Path) -> None:
    frames = list(FileSource(str(small_video), realtime=False).frames())
    assert all(f.av_frame is not None for f in frames)
    f = frames[7]
    assert (f.width, f.height) == (320, 240)
    assert f.y.shape == (240, 320) and not f.y.flags.writeable  # the decoder's own buffer
    i420 = f.i420  # made on first use, then kept
    assert i420.shape == (360, 320) and i420.flags.writeable and f.i420 is i420
    assert np.array_equal(i420, f.av_frame.to_ndarray())
    assert np.array_equal(f.y, i420[:240])


def test_a_carried_picture_encodes_exactly_like_its_i420_array(small_video: Path) -> None:
    # The same frames three ways: the decoded pictures themselves, their I420 copies wrapped
    # in place, and copies with padded rows (copied by PyAV). All three show the same video.
    source = list(FileSource(str(small_video), realtime=False).frames())
    carried = encode_all(source)
    as_arrays = encode_all([Frame(f.index, f.pts, f.wall, f.i420.copy(), f.lores)
                            for f in source])
    assert_same_video(carried, as_arrays)
    assert [(p.pts, p.dts, p.keyframe, p.wall) for p in carried] == \
        [(p.pts, p.dts, p.keyframe, p.wall) for p in as_arrays]
    strided = [Frame(f.index, f.pts, f.wall,
                     np.pad(f.i420, ((0, 0), (0, 64)))[:, :320], f.lores) for f in source]
    assert not strided[0].i420.flags.c_contiguous
    assert_same_video(encode_all(strided), as_arrays)


def test_the_inputs_keyframes_do_not_become_ours(tmp_path: Path,
                                                 make_video: Callable[..., Path]) -> None:
    # An input with a keyframe every 4 frames, re-encoded with a 1 s (15 frame) GOP: the
    # decoder marks its pictures I and P, and that must not force extra IDRs.
    video = make_video(tmp_path / "gop4.mp4", frames=30, fps=15, codec="libx264",
                       options={"g": "4", "keyint_min": "4", "sc_threshold": "0"})
    frames = list(FileSource(str(video), realtime=False).frames())
    assert sum(1 for f in frames if f.av_frame.key_frame) >= 7  # the input's own GOPs
    packets = encode_all(frames)
    assert [i for i, p in enumerate(packets) if p.keyframe] == [0, 15]


def test_an_array_changed_after_encode_does_not_change_the_video(
        make_i420: Callable[..., np.ndarray]) -> None:
    # The array is wrapped without a copy; FFmpeg copies it on the way in.
    reference = encode_all([Frame(i, i / 15, float(i), make_i420(i), make_i420(i)[:240])
                            for i in range(20)])
    enc = encoder()
    packets: list[EncodedPacket] = []
    buffer = np.empty((360, 320), np.uint8)
    for i in range(20):
        buffer[:] = make_i420(i)
        packets += enc.encode(Frame(i, i / 15, float(i), buffer, buffer[:240]))
        buffer[:] = 0  # scribbled on as soon as encode() returns
    packets += enc.flush()
    assert_same_video(packets, reference)      # not the zeros written after each encode()


def test_privacy_masked_frames_carry_no_picture_and_the_video_shows_the_mask(
        small_video: Path) -> None:
    left_quarter = ((0.0, 0.0), (0.25, 0.0), (0.25, 1.0), (0.0, 1.0))
    frames = list(FileSource(str(small_video), realtime=False, privacy=(left_quarter,)).frames())
    assert all(f.av_frame is None for f in frames)
    pictures = decoded_pictures(encode_all(frames))
    assert len(pictures) == len(frames)
    for picture in pictures:  # lossy, so nearly black: the bar (235) must never show there
        assert picture[:240, :72].max() <= 24
        assert np.abs(picture[240:, :32].astype(int) - 128).max() <= 6  # no colour either
    assert max(int(p[:240, 96:].max()) for p in pictures) > 200  # the rest still shows


def test_a_frame_takes_an_array_or_a_picture_never_both(small_video: Path) -> None:
    f = next(FileSource(str(small_video), realtime=False).frames())
    with pytest.raises(ValueError, match="exactly one"):
        Frame(0, 0.0, 0.0, f.i420, f.lores, av_frame=f.av_frame)
    with pytest.raises(ValueError, match="exactly one"):
        Frame(0, 0.0, 0.0, None, f.lores)
    with pytest.raises(ValueError, match="yuv420p"):
        Frame(0, 0.0, 0.0, None, f.lores, av_frame=f.av_frame.reformat(format="rgb24"))


def test_lores_of_a_carried_picture_owns_its_pixels(small_video: Path) -> None:
    # lores at the source's own size is not a view of the decoder's buffer
    frames = list(itertools.islice(FileSource(str(small_video), realtime=False,
                                              lores_size=(320, 240)).frames(), 3))
    assert all(f.lores.flags.writeable and f.lores.flags.owndata for f in frames)
    assert np.array_equal(frames[2].lores, frames[2].i420[:240])


def test_lores_of_a_1080p_frame_is_the_area_average() -> None:
    """1080 -> 240 is a factor of 4.5: the two-step shrink must still be an area average, so a
    flat region stays flat and a bright block keeps its mean brightness."""
    from doorstep.capture.lores import make_lores

    y = np.full((1080, 1920), 50, np.uint8)
    y[360:720, 640:1280] = 200                      # the middle ninth, bright
    lores = make_lores(y, (320, 240))
    assert lores.shape == (240, 320)
    assert lores[10, 10] == 50 and lores[120, 160] == 200
    assert abs(float(lores.mean()) - float(y.mean())) < 1.0
