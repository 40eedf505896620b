"""The doorbell's microphone and speaker (capture/audio.py), with files standing in for the
ALSA devices: 20 ms mono frames at 48 kHz in, paced to real time; anything out to a WAV."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from doorstep.capture.audio import FRAME_SAMPLES, RATE, AudioUnavailable, PyAvSink, PyAvSource
from tests.agent.rtcpeer import dominant_hz, tone


def test_a_file_microphone_gives_paced_20ms_frames_and_loops(tmp_path: Path) -> None:
    clock = {"t": 0.0}
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        clock["t"] += s
    mic = PyAvSource(f"file:{tone(tmp_path / 'mic.wav', 1000, 0.5)}", sleep=sleep,
                     monotonic=lambda: clock["t"])
    frames = [mic.read() for _ in range(50)]          # 1 s from a 0.5 s file: it loops
    mic.close()
    assert all(f is not None and f.samples == FRAME_SAMPLES and f.sample_rate == RATE
               and f.format.name == "s16" and len(f.layout.channels) == 1 for f in frames)
    assert [f.pts for f in frames] == [i * FRAME_SAMPLES for i in range(50)]
    assert sum(slept) == pytest.approx(49 * 0.02)     # paced: one frame every 20 ms
    assert abs(dominant_hz(np.concatenate([f.to_ndarray()[0] for f in frames])) - 1000) < 5


def test_the_speaker_writes_whatever_it_is_given_as_48k_stereo(tmp_path: Path) -> None:
    mic = PyAvSource(f"file:{tone(tmp_path / 'v.wav', 440, 1.0)}", loop=False,
                     sleep=lambda s: None)
    speaker = PyAvSink(f"file:{tmp_path / 'out.wav'}")
    while (frame := mic.read()) is not None:
        speaker.write(frame)
    speaker.close()
    with av.open(str(tmp_path / "out.wav")) as played:
        stream = played.streams.audio[0]
        assert (stream.rate, stream.channels) == (48000, 2)
        samples = np.concatenate([f.to_ndarray().reshape(-1, 2)[:, 0]
                                  for f in played.decode(audio=0)])
    assert len(samples) == 48000 and abs(dominant_hz(samples) - 440) < 5


def test_bad_devices_are_named(tmp_path: Path) -> None:
    with pytest.raises(AudioUnavailable, match="not \"alsa:DEVICE\" or \"file:PATH\""):
        PyAvSource("hw:1,0")
    with pytest.raises(AudioUnavailable, match=r"audio source 'file:.*nothing.wav': cannot "
                                               "open it"):
        PyAvSource(f"file:{tmp_path / 'nothing.wav'}")
    with pytest.raises(AudioUnavailable, match=r"audio sink 'file:/nonexistent/x.wav'"):
        PyAvSink("file:/nonexistent/x.wav")
