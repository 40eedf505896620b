"""FileSource: real files decoded with PyAV, paced by a fake clock, masked at the source."""

from __future__ import annotations

import http.server
import itertools
import re
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from doorstep.capture.source import FileSource, default_options, open_source
from doorstep.core.clock import FakeClock
from doorstep.core.errors import CameraUnavailable, CaptureError


def test_tree_avi_every_frame_with_real_timing(shared_data: Path) -> None:
    src = FileSource(str(shared_data / "video" / "tree.avi"), realtime=False, clock=FakeClock())
    frames = list(src.frames())
    assert src.size == (320, 240)
    assert len(frames) == 68
    assert [f.index for f in frames] == list(range(68))
    assert frames[0].pts == 0.0
    pts = [f.pts for f in frames]
    assert all(b > a for a, b in itertools.pairwise(pts))
    # tree.avi skips frame slots; pts follows the stream's timestamps, not the frame count
    assert pts[1] == pytest.approx(11 / 15, abs=1e-3)
    assert frames[-1].i420.shape == (360, 320) and frames[-1].i420.dtype == np.uint8
    assert frames[-1].lores.shape == (240, 320)


def test_vtest_avi_sizes_and_lores(shared_data: Path) -> None:
    src = FileSource(str(shared_data / "video" / "vtest.avi"), lores_size=(160, 120),
                     realtime=False, clock=FakeClock())
    assert src.size == (768, 576) and src.fps == 10
    frames = list(itertools.islice(src.frames(), 40))
    src.close()
    assert frames[-1].i420.shape == (864, 768)
    assert frames[-1].lores.shape == (120, 160)
    assert [round(f.pts, 6) for f in frames[:3]] == [0.0, 0.1, 0.2]


def test_ffv1_mkv_frame_count_and_wall_from_pts(shared_data: Path) -> None:
    clock = FakeClock()
    src = FileSource(str(shared_data / "motion" / "wallflower-wavingtrees.mkv"), realtime=False,
                     clock=clock)
    frames = list(src.frames())
    assert len(frames) == 287 and src.size == (160, 120)
    assert frames[-1].pts == pytest.approx(286 / 15, abs=1e-3)
    # not real time: wall is the start time plus media time, and nothing slept
    assert frames[-1].wall == pytest.approx(clock.wall() + frames[-1].pts)
    assert clock.sleeps == []


def test_lores_is_the_shrunk_luma(small_video: Path) -> None:
    frame = next(FileSource(str(small_video), lores_size=(160, 120), realtime=False).frames())
    y = frame.y.astype(np.float32)
    expected = y.reshape(120, 2, 160, 2).mean(axis=(1, 3))
    assert np.abs(frame.lores.astype(np.float32) - expected).max() <= 1


def test_loop_restarts_and_pts_keeps_rising(small_video: Path) -> None:
    src = FileSource(str(small_video), realtime=False, loop=True, clock=FakeClock())
    frames = list(itertools.islice(src.frames(), 75))
    src.close()
    assert len(frames) == 75
    pts = [f.pts for f in frames]
    assert all(b > a for a, b in itertools.pairwise(pts))
    # the second pass starts one frame after the end of the first (mkv stamps in ms)
    assert pts[30] == pytest.approx(2.0, abs=2e-3)
    assert np.array_equal(frames[0].i420, frames[30].i420)


def test_realtime_pacing_sleeps_to_the_timestamps(small_video: Path) -> None:
    clock = FakeClock()
    src = FileSource(str(small_video), realtime=True, clock=clock)
    start = clock.monotonic()
    frames = list(src.frames())
    assert len(frames) == 30
    assert sum(clock.sleeps) == pytest.approx(29 / 15, abs=2e-3)  # mkv stamps in ms
    assert clock.monotonic() - start == pytest.approx(29 / 15, abs=2e-3)
    # wall time is the clock's time when each frame was taken
    assert frames[10].wall - frames[0].wall == pytest.approx(10 / 15, abs=2e-3)


def test_realtime_does_not_sleep_when_the_consumer_is_slow(small_video: Path) -> None:
    clock = FakeClock()
    src = FileSource(str(small_video), realtime=True, clock=clock)
    for _ in src.frames():
        clock.advance(0.1)  # slower than 1/15 s per frame
    assert all(s <= 0 for s in clock.sleeps) or clock.sleeps == []


def test_privacy_mask_blacks_out_i420_and_lores(small_video: Path) -> None:
    left_quarter = ((0.0, 0.0), (0.25, 0.0), (0.25, 1.0), (0.0, 1.0))
    src = FileSource(str(small_video), realtime=False, privacy=(left_quarter,),
                     lores_size=(160, 120))
    frames = list(src.frames())
    for f in frames:  # the white bar starts inside the mask; it must never show there
        assert (f.y[:, :80] == 16).all()
        u = f.i420[240:300].reshape(120, 160)
        v = f.i420[300:360].reshape(120, 160)
        assert (u[:, :40] == 128).all() and (v[:, :40] == 128).all()
        assert (f.lores[:, :40] == 16).all()
    assert max(int(f.y[:, 90:].max()) for f in frames) == 235  # the rest is untouched


def test_missing_file_names_the_source(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    with pytest.raises(CaptureError, match=r"nope\.mp4"):
        FileSource(str(missing), realtime=False)


def test_corrupt_file_is_a_capture_error(tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(bytes(range(256)) * 40)
    with pytest.raises(CaptureError, match=r"corrupt\.mp4"):
        FileSource(str(bad), realtime=False)


def test_unreachable_stream_is_a_capture_error() -> None:
    with pytest.raises(CaptureError, match=re.escape("rtsp://127.0.0.1:9/")):
        FileSource("rtsp://127.0.0.1:9/door", realtime=True)


def test_truncated_file_yields_what_it_has(small_video: Path, tmp_path: Path,
                                           make_video: Callable[..., Path]) -> None:
    whole = make_video(tmp_path / "whole.avi", frames=30, codec="mpeg4")
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    frames = list(FileSource(str(cut), realtime=False).frames())
    assert 5 <= len(frames) < 30


def test_default_options_for_streams_and_devices() -> None:
    fmt, opts = default_options("rtsp://cam.local/stream")
    assert fmt is None and opts["rtsp_transport"] == "tcp" and "timeout" in opts
    assert "rw_timeout" in default_options("http://cam.local/video.mjpg")[1]
    fmt, opts = default_options("/dev/video0", size=(640, 480), fps=30)
    assert fmt == "v4l2" and opts == {"video_size": "640x480", "framerate": "30"}
    # from 720p up a USB 2 camera needs MJPEG for 30 fps: "auto" asks for it
    fmt, opts = default_options("/dev/video0", size=(1280, 720), fps=30)
    assert opts == {"video_size": "1280x720", "framerate": "30", "input_format": "mjpeg"}
    opts = default_options("/dev/video0", size=(1280, 720), fps=30, v4l2_format="yuyv422")[1]
    assert opts["input_format"] == "yuyv422"
    assert default_options("/tmp/x.mp4") == (None, {})


def test_open_source_follows_the_camera_config(small_video: Path, fake_camera: object) -> None:
    from doorstep.capture.picam import Picamera2Source
    from doorstep.config.schema import CameraConfig

    src = open_source(CameraConfig(source=str(small_video), realtime=False, lores_width=160,
                                   lores_height=120))
    assert isinstance(src, FileSource) and src.lores_size == (160, 120) and not src.realtime
    src.close()
    pi = open_source(CameraConfig(source="picamera2", width=640, height=480, fps=25))
    assert isinstance(pi, Picamera2Source) and pi.size == (640, 480) and pi.fps == 25


def test_live_stream_that_ends_is_camera_unavailable(small_video: Path) -> None:
    body = small_video.read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "video/x-matroska")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/door.mkv"
        src = FileSource(url, realtime=True, clock=FakeClock(), max_retries=0)
        got = 0
        with pytest.raises(CameraUnavailable, match="stream ended after 30 frames"):
            for _ in src.frames():
                got += 1
        assert got == 30
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_each_packet_is_decoded_without_being_held_back(
        tmp_path: Path, make_video: Callable[..., Path]) -> None:
    """A live picture goes on the moment its packet arrives: the decoder is not frame-threaded,
    which would hold the first pictures back one frame per thread (on any machine with more
    than one CPU) and keep a picture buffer per thread."""
    path = make_video(tmp_path / "live.mp4", frames=12, fps=30, codec="libx264",
                      options={"tune": "zerolatency", "preset": "ultrafast"})  # no B-frames
    source = FileSource(str(path), realtime=False)
    try:
        container = source._container
        per_packet = [len(p.decode()) for p in container.demux(container.streams.video[0])
                      if p.size]
    finally:
        source.close()
    assert per_packet == [1] * 12


def test_a_camera_without_mjpeg_falls_back_to_its_default_format(
        small_video: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No V4L2 device here: av.open stands in for a webcam that offers no MJPEG mode, refusing
    # the option as FFmpeg's v4l2 demuxer does, and opening without it.
    import av

    real_open = av.open
    asked: list[dict[str, str]] = []

    def webcam(url: str, *args: object, options: dict[str, str], **kw: object) -> object:
        asked.append(dict(options))
        if options.get("input_format") == "mjpeg":
            raise av.ArgumentError(22, "Cannot find a proper format for codec mjpeg")
        return real_open(url, *args, options=options, **kw)

    monkeypatch.setattr(av, "open", webcam)
    src = FileSource(str(small_video), realtime=False, options={"input_format": "mjpeg"},
                     optional=("input_format",))
    assert [o.get("input_format") for o in asked] == ["mjpeg", None]
    assert next(iter(src.frames())).index == 0
    src.close()
    with pytest.raises(CaptureError, match="cannot open"):     # not optional: refused
        FileSource(str(small_video), realtime=False, options={"input_format": "mjpeg"})
