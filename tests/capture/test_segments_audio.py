"""Sound in a clip recorded as segments (clip.audio; issue 15): one muxer carries the AAC track
beside the video, so every segment is a standalone MP4 with both tracks and the sound of its
own GOPs, and the joined segments play the microphone (a tone file, read by the real
PyAvSource and AudioTap) continuously, in step with the video. Decoded with PyAV."""

from __future__ import annotations

import io
import itertools
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from doorstep.capture.audio import PyAvSource
from doorstep.capture.clipaudio import AudioTap
from doorstep.capture.encoder import PyAvEncoder
from doorstep.capture.frames import EncodedPacket, Frame
from doorstep.capture.mp4 import AUDIO_SLACK
from doorstep.capture.segments import Mp4Segmenter, Segment
from doorstep.core.fmp4 import join
from tests.agent.rtcpeer import dominant_hz, tone
from tests.capture.conftest import synthetic_i420

FPS = 15
WALL = 1000.0            # the wall time of the clip's first frame
HZ = 700


def tone_mic(tmp_path: Path, seconds: float, hz: int = HZ, lead: float = 0.5) -> AudioTap:
    """The clip microphone as the agent runs it (AudioTap over PyAvSource on a tone file),
    read to the end at once: its 20 ms frames are stamped on a stepped wall clock that starts
    ``lead`` seconds before the clip's first frame (the pre-roll's sound)."""
    path = tone(tmp_path / f"mic{hz}.wav", hz, seconds=seconds)
    step = itertools.count()
    tap = AudioTap(lambda: PyAvSource(f"file:{path}", loop=False, sleep=lambda s: None),
                   keep=120, wall=lambda: WALL - lead + 0.02 * next(step)).start()
    tap._thread.join(30)
    assert not tap._thread.is_alive() and tap.failed is None
    return tap


def packets(frames: int, gop_seconds: float = 0.5, stall: tuple[int, float] = (0, 0.0)
            ) -> list[EncodedPacket]:
    """``stall``: from frame n on, the wall clock is this many seconds later (the source
    stalled while the clip's own times ran on)."""
    enc = PyAvEncoder("libx264", width=320, height=240, fps=Fraction(FPS),
                      gop_seconds=gop_seconds, preset="ultrafast")
    out: list[EncodedPacket] = []
    lores = np.zeros((8, 8), np.uint8)
    for i in range(frames):
        late = stall[1] if stall[1] and i >= stall[0] else 0.0
        out += enc.encode(Frame(i, i / FPS, WALL + i / FPS + late, synthetic_i420(i), lores))
    return out + enc.flush()


def segment(pkts: list[EncodedPacket], seconds: float, audio: AudioTap | None,
            during: list[int] | None = None, at: list[int] | None = None) -> list[Segment]:
    """``during``: gets how many segments had come out before close(); ``at``: the index of
    the packet whose write handed each one out."""
    seg = Mp4Segmenter(PyAvEncoder("libx264", width=320, height=240, fps=Fraction(FPS)).info,
                       seconds=seconds, audio=audio)
    out = []
    for i, p in enumerate(pkts):         # one at a time, as the frame loop feeds it
        got = seg.write([p])
        out += got
        if at is not None:
            at += [i] * len(got)
    if during is not None:
        during.append(len(out))
    return out + seg.close()


def audio_packets(mp4: bytes) -> list[tuple[int, int]]:
    """(pts, duration) of every audio packet, in samples (48 kHz)."""
    with av.open(io.BytesIO(mp4)) as c:
        assert [s.type for s in c.streams] == ["video", "audio"]
        assert c.streams.audio[0].time_base == Fraction(1, 48000)
        return [(int(p.pts), int(p.duration)) for p in c.demux(audio=0) if p.size]


def decoded(mp4: bytes) -> tuple[list[float], float, float, np.ndarray]:
    """Video frame times; the sound's start and end (seconds); its samples. The sound has no
    gap and no sample twice: each decoded frame starts where the one before it ended."""
    with av.open(io.BytesIO(mp4)) as c:
        video = [float(f.time) for f in c.decode(video=0)]
    with av.open(io.BytesIO(mp4)) as c:
        frames = list(c.decode(audio=0))
    pts = [(int(f.pts), f.samples) for f in frames]
    assert all(a + n == b for (a, n), (b, _) in itertools.pairwise(pts)), pts
    end = float(frames[-1].time) + frames[-1].samples / 48000
    return video, float(frames[0].time), end, np.concatenate([f.to_ndarray()[0] for f in frames])


def test_each_segment_carries_both_tracks_and_the_sound_of_its_own_span(
        tmp_path: Path) -> None:
    mic = tone_mic(tmp_path, 10)
    at: list[int] = []
    segs = segment(packets(100), 2.0, mic, at=at)
    # the same cuts as without sound: one GOP of 8 frames, then 4 GOPs, then the rest
    assert [s.packets for s in segs] == [8, 32, 32, 28]
    # each handed out within two frames of the keyframe that closed it (packets 8, 40, 72):
    # the muxer held that keyframe only until the sound reached it
    assert len(at) == 3 and all(0 < a - k <= 2 for a, k in zip(at, (8, 40, 72), strict=True)), at
    spans = []
    for s in segs:
        assert s.data[4:8] == b"ftyp"
        alone = audio_packets(s.data)     # plays alone, both tracks, at its place in the clip
        first, last = alone[0][0], alone[-1][0] + alone[-1][1]
        spans.append((first, last))
        # its sound starts and ends with its video, to within an AAC frame (1024 samples)
        assert abs(first - s.start * 48000) <= 1024, (s.index, first, s.start)
        assert abs(last - (s.start + s.duration) * 48000) <= 2048, (s.index, last, s)
    # no gap and no sample twice where one segment meets the next
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end == start, spans


def test_joined_segments_play_the_microphone_in_step_with_the_video(tmp_path: Path) -> None:
    mic = tone_mic(tmp_path, 10)
    segs = segment(packets(100), 2.0, mic)
    joined = join([s.data for s in segs])
    video, start, end, samples = decoded(joined)
    assert len(video) == 100
    video_end = video[-1] + 1 / FPS
    # sound from the first frame to the last, within a frame or two of the video's span
    assert abs(start - video[0]) < 1 / FPS, (start, video[0])
    assert abs(end - video_end) < 2 / FPS, (end, video_end)
    assert abs(dominant_hz(samples) - HZ) < 10
    # continuous: as many samples as its span, so nothing was left out or played twice
    assert len(samples) == pytest.approx((end - start) * 48000, abs=1)


def test_the_cuts_do_not_depend_on_the_sound(tmp_path: Path) -> None:
    mic = tone_mic(tmp_path, 10)
    pkts = packets(100, gop_seconds=1.0)
    for seconds in (0.5, 2.0, 3.0):
        silent, sound = segment(pkts, seconds, None), segment(pkts, seconds, mic)
        assert [(s.index, s.packets, s.start, s.duration) for s in sound] == \
            [(s.index, s.packets, s.start, s.duration) for s in silent]


def test_a_microphone_that_falls_silent_does_not_hold_the_segments_back(
        tmp_path: Path) -> None:
    mic = tone_mic(tmp_path, 1.5)     # sound for the clip's first second only
    during: list[int] = []
    segs = segment(packets(100), 1.0, mic, during)
    # the segments came out while the clip recorded, not all at its end (the last one, and
    # the one before it if the clip ended within the muxer's wait for sound, come at close)
    assert during[0] >= len(segs) - 2 and len(segs) >= 6, (during, len(segs))
    video, _, end, samples = decoded(join([s.data for s in segs]))
    # the sound stops where the microphone did (and AUDIO_SLACK of silence after it, the
    # little a microphone may not have read yet when a clip closes)
    assert len(video) == 100 and 0.9 < end < 1.0 + AUDIO_SLACK + 0.05, end
    assert abs(dominant_hz(samples) - HZ) < 10


def test_the_sound_keeps_to_the_video_when_the_video_falls_behind_the_wall_clock(
        tmp_path: Path) -> None:
    mic = tone_mic(tmp_path, 12)
    # the source stalled for 2 s after frame 40: those 2 s of sound have no video
    segs = segment(packets(100, stall=(40, 2.0)), 2.0, mic)
    video, _, end, samples = decoded(join([s.data for s in segs]))
    assert len(video) == 100
    assert abs(end - (video[-1] + 1 / FPS)) < 2 / FPS, (end, video[-1])
    assert abs(dominant_hz(samples) - HZ) < 10


def test_sound_that_starts_after_the_video_is_silence_until_it_does(tmp_path: Path) -> None:
    mic = tone_mic(tmp_path, 10, lead=-0.1)       # the microphone's first frame at 0.1 s
    video, start, end, samples = decoded(join([s.data for s in segment(packets(40), 1.0, mic)]))
    assert start == 0.0 and abs(end - (video[-1] + 1 / FPS)) < 2 / FPS
    assert not samples[:4000].any()               # (AAC smears the edge by a few samples)
    assert abs(dominant_hz(samples[6000:]) - HZ) < 10
