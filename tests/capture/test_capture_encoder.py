"""PyAvEncoder and open_encoder: real libx264 output, checked with PyAV's decoder."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from fractions import Fraction

import av
import numpy as np
import pytest

from doorstep.capture.annexb import NAL_PPS, NAL_SPS, is_idr, nal_type, split_nals
from doorstep.capture.encoder import PyAvEncoder, open_encoder
from doorstep.capture.frames import EncodedPacket, Frame
from doorstep.core.errors import EncoderUnavailable


def encode_frames(encoder: PyAvEncoder, make_i420: Callable[..., np.ndarray], n: int,
                  fps: int = 15) -> list[EncodedPacket]:
    packets: list[EncodedPacket] = []
    for i in range(n):
        i420 = make_i420(i)
        packets += encoder.encode(Frame(i, i / fps, 1000.0 + i / fps, i420, i420[:240]))
    return packets + encoder.flush()


def test_libx264_keyframe_every_gop_with_parameter_sets(make_i420: Callable[..., np.ndarray],
                                                        ) -> None:
    enc = PyAvEncoder("libx264", width=320, height=240, fps=Fraction(15), bitrate_kbps=400,
                      gop_seconds=0.5, preset="ultrafast")
    packets = encode_frames(enc, make_i420, 40)
    assert len(packets) == 40
    keyframes = [i for i, p in enumerate(packets) if p.keyframe]
    assert keyframes == [0, 8, 16, 24, 32]  # round(15 * 0.5) = 8, no scene-cut extras
    for p in packets:
        nals = split_nals(p.data)
        assert p.data.startswith(b"\x00\x00\x00\x01") or p.data.startswith(b"\x00\x00\x01")
        if p.keyframe:
            types = {nal_type(n) for n in nals}
            assert {NAL_SPS, NAL_PPS} <= types and is_idr(p.data)
        assert p.pts == p.dts  # no B-frames: decode order is display order
    assert [p.pts for p in packets[:3]] == [0, 6000, 12000]  # 1/90000 s from the frame pts
    assert packets[5].wall == pytest.approx(1000.0 + 5 / 15)


def test_any_gop_decodes_on_its_own(make_i420: Callable[..., np.ndarray]) -> None:
    enc = PyAvEncoder("libx264", width=320, height=240, fps=Fraction(15), gop_seconds=1.0,
                      preset="ultrafast")
    packets = encode_frames(enc, make_i420, 45)
    second_gop = packets[15:30]
    decoder = av.CodecContext.create("h264", "r")
    frames = []
    for p in second_gop:
        frames += decoder.decode(av.Packet(p.data))
    frames += decoder.decode(None)
    assert len(frames) == 15
    assert frames[0].width == 320 and frames[0].height == 240


def test_unknown_encoder_lists_the_choices() -> None:
    with pytest.raises(EncoderUnavailable, match=r"'nvenc'.*libx264"):
        open_encoder("nvenc", width=320, height=240, fps=Fraction(15))


def test_v4l2m2m_without_hardware_is_unavailable_and_names_what_is() -> None:
    # h264_v4l2m2m is in FFmpeg's codec list on any Linux build, but opens only on a machine
    # with a mem2mem encoder device; this machine has none.
    with pytest.raises(EncoderUnavailable, match=r"'h264_v4l2m2m'.*available: libx264"):
        open_encoder("h264_v4l2m2m", width=320, height=240, fps=Fraction(15))


def test_auto_falls_back_to_libx264_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="doorstep.capture.encoder"):
        enc = open_encoder("auto", width=320, height=240, fps=Fraction(15))
    assert enc.name == "libx264"
    assert any("auto: chose libx264" in r.getMessage() for r in caplog.records)
    enc.close()


def test_picamera2_encoder_needs_the_pi_camera_source() -> None:
    with pytest.raises(EncoderUnavailable, match="picamera2"):
        open_encoder("picamera2", width=320, height=240, fps=Fraction(15))


def test_frame_of_the_wrong_size_is_refused(make_i420: Callable[..., np.ndarray]) -> None:
    enc = PyAvEncoder("libx264", width=640, height=480, fps=Fraction(15))
    i420 = make_i420(0)
    with pytest.raises(ValueError, match="320x240"):
        enc.encode(Frame(0, 0.0, 0.0, i420, i420[:240]))


def test_without_subpixel_refinement_the_picture_is_as_good() -> None:
    """subpel=False (the config default) drops x264's half-pel planes to save memory and time:
    on real doorbell footage the clip must be as good at the same bitrate (within 0.5 dB)."""
    from tests.conftest import BUNDLED_CLIP

    with av.open(str(BUNDLED_CLIP)) as src:
        pictures = [f.to_ndarray() for f in itertools.islice(src.decode(video=0), 60)]
    h, w = pictures[0].shape[0] * 2 // 3, pictures[0].shape[1]
    quality = {}
    for subpel in (True, False):
        enc = PyAvEncoder("libx264", width=w, height=h, fps=Fraction(10), bitrate_kbps=800,
                          preset="superfast", subpel=subpel)
        packets: list[EncodedPacket] = []
        for i, pic in enumerate(pictures):
            packets += enc.encode(Frame(i, i / 10, 1000.0 + i / 10, pic, pic[:240]))
        packets += enc.flush()
        decoder = av.CodecContext.create("h264", "r")
        out = []
        for p in packets:
            out += decoder.decode(av.Packet(p.data))
        out += decoder.decode(None)
        assert len(out) == len(pictures)
        mse = [np.mean((a[:h].astype(float) - f.to_ndarray()[:h].astype(float)) ** 2)
               for a, f in zip(pictures, out, strict=True)]
        quality[subpel] = (10 * np.log10(255.0 ** 2 / np.mean(mse)),
                           sum(len(p.data) for p in packets))
    (psnr_on, size_on), (psnr_off, size_off) = quality[True], quality[False]
    assert psnr_on > 30 and abs(psnr_on - psnr_off) < 0.5, quality
    assert abs(size_off - size_on) / size_on < 0.15, quality
