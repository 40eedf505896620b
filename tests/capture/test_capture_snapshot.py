"""Snapshots: a full-size JPEG and a thumbnail that decode to the right sizes and content."""

from __future__ import annotations

from collections.abc import Callable

import av
import cv2
import numpy as np
import pytest

from doorstep.capture.frames import Frame
from doorstep.capture.snapshot import jpeg, thumbnail


def frame_of(i420: np.ndarray) -> Frame:
    return Frame(0, 0.0, 0.0, i420, np.zeros((240, 320), np.uint8))


def decoded_frame_of(i420: np.ndarray) -> Frame:
    """The same picture as a decoder hands it on: an av.VideoFrame, no I420 array."""
    vf = av.VideoFrame.from_ndarray(i420, format="yuv420p")
    return Frame(0, 0.0, 0.0, None, np.zeros((240, 320), np.uint8), av_frame=vf)


def decode(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def test_jpeg_is_full_resolution_and_shows_the_frame(make_i420: Callable[..., np.ndarray],
                                                     ) -> None:
    data = jpeg(frame_of(make_i420(10)), quality=90)
    assert data[:2] == b"\xff\xd8"
    image = decode(data)
    assert image.shape == (240, 320, 3)
    assert abs(int(np.argmax(image[120, :, 1])) - 40) <= 2  # the white bar at x=40..55
    assert jpeg(frame_of(make_i420(10)), quality=30) != data


def test_thumbnail_keeps_the_aspect_and_never_enlarges(make_i420: Callable[..., np.ndarray],
                                                       ) -> None:
    assert decode(thumbnail(frame_of(make_i420(0)), width=160)).shape == (120, 160, 3)
    assert decode(thumbnail(frame_of(make_i420(0)), width=640)).shape == (240, 320, 3)


def test_quality_out_of_range_is_refused(make_i420: Callable[..., np.ndarray]) -> None:
    with pytest.raises(ValueError, match="quality"):
        jpeg(frame_of(make_i420(0)), quality=0)


def test_thumbnail_matches_shrinking_the_full_colour_frame(
        make_i420: Callable[..., np.ndarray]) -> None:
    # The planes are shrunk before the colour conversion; the picture must be the same one.
    i420 = make_i420(10)
    i420[240:300] = 90   # a coloured frame (U), so chroma handling shows
    i420[300:360] = 170  # (V)
    full = cv2.cvtColor(i420, cv2.COLOR_YUV2BGR_I420)
    expected = cv2.resize(full, (160, 120), interpolation=cv2.INTER_AREA).astype(int)
    got = decode(thumbnail(frame_of(i420), width=160, quality=95)).astype(int)
    assert got.shape == expected.shape
    assert np.abs(got - expected).mean() < 3
    assert abs(int(np.argmax(got[60, :, 1])) - 20) <= 1  # the bar at x=40..55, halved


@pytest.mark.parametrize("width", [33, 101, 161])
def test_thumbnail_of_odd_width_has_that_width(make_i420: Callable[..., np.ndarray],
                                               width: int) -> None:
    height = round(240 * width / 320)
    assert decode(thumbnail(frame_of(make_i420(0)), width=width)).shape == (height, width, 3)


def test_a_decoded_picture_gives_the_same_images_without_an_i420_copy(
        make_i420: Callable[..., np.ndarray]) -> None:
    """Frames that carry the decoder's picture are snapshotted from its planes in place: the
    images match those of the same picture as an I420 array, and no I420 copy is made."""
    i420 = make_i420(10)
    i420[240:300] = 90
    i420[300:360] = 170
    decoded = decoded_frame_of(i420)
    for make in (lambda f: jpeg(f, 95), lambda f: thumbnail(f, 160, 95),
                 lambda f: thumbnail(f, 101, 95)):
        got = decode(make(decoded)).astype(int)
        expected = decode(make(frame_of(i420))).astype(int)
        assert got.shape == expected.shape
        assert np.abs(got - expected).mean() < 2.5
    assert decoded._i420 is None  # the frame never made its I420 copy


def test_two_threads_can_snapshot_the_same_decoded_picture() -> None:
    """The ring thread and the commit thread may make the full JPEG of the same picture at the
    same moment. PyAV keeps one swscale context per frame and runs it without the GIL, so
    sharing it could hang or crash: both must finish, with the same image."""
    import threading

    rng = np.random.default_rng(3)
    i420 = rng.integers(16, 235, (1080 * 3 // 2, 1920), dtype=np.uint8)
    frame = decoded_frame_of(i420)
    results: list[bytes] = []

    def snap() -> None:
        for _ in range(8):
            results.append(jpeg(frame, 90))

    threads = [threading.Thread(target=snap) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)     # guards the test run against the hang this is about; not a timing
    assert not any(t.is_alive() for t in threads), "a snapshot conversion hung"
    assert len(results) == 16 and len(set(results)) == 1
