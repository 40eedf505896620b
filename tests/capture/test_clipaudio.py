"""The clip microphone's clock (capture/clipaudio.py): frames read in a burst after a stall
keep the times the microphone took them, so a clip never holds more sound than its span."""

from __future__ import annotations

from typing import Any

import av
import numpy as np

from doorstep.capture.audio import FRAME_SAMPLES, RATE
from doorstep.capture.clipaudio import AudioTap


class BurstyMic:
    """20 ms frames that arrive on a stepped clock: each as it ends, but frames 20 to 44 all
    at once when frame 45 would (the reader stalled for half a second), then in time again."""

    def __init__(self, clock: dict[str, float], n: int) -> None:
        self.clock = clock
        self.n = n
        self.i = 0

    def read(self) -> Any:
        if self.i >= self.n:
            return None
        self.i += 1
        frame = av.AudioFrame.from_ndarray(np.zeros((1, FRAME_SAMPLES), np.int16),
                                           format="s16", layout="mono")
        frame.sample_rate = RATE
        self.clock["now"] = 100.0 + (45 if 20 <= self.i < 45 else self.i) * 0.02
        return frame

    def close(self) -> None:
        pass


def test_frames_read_in_a_burst_keep_the_microphones_times() -> None:
    clock = {"now": 100.0}
    tap = AudioTap(lambda: BurstyMic(clock, 100), keep=60, wall=lambda: clock["now"]).start()
    tap._thread.join(5)
    times = [w for w, _ in tap.since(0, 1e9)]
    assert len(times) == 100
    steps = np.diff(times)
    assert np.allclose(steps, 0.02), steps       # evenly spaced, through the burst too
    # the sound between two wall times is as long as they are apart
    assert len(tap.since(100.5, 101.5)) == 50
