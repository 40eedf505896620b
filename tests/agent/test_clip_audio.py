"""Sound in clips (clip.audio, off by default: docs/talk.md): the microphone (a tone file read
in real time) muxed as AAC beside the encoder's video in the sealed clip, pre-roll included;
the clip opened with the real age CLI and decoded with PyAV."""

from __future__ import annotations

import io
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from doorstep.agent.run import RingPress
from doorstep.agent.wiring import build
from doorstep.broker import Mosquitto
from doorstep.config import parse_config
from tests.agent.rtcpeer import dominant_hz, tone
from tests.faults.harness import agent_toml, make_party, wait_for


def record_ring_clip(tmp_path: Path, broker: Mosquitto, audio: bool) -> bytes:
    """Run the agent in real time, ring once, and return the ring clip's plaintext."""
    party = make_party(tmp_path / "home")
    mic = tone(tmp_path / "mic.wav", 700, seconds=20)
    text = agent_toml(party, broker.port, motion=False, clip=(1.0, 1.0, 3.0),
                      segment_seconds=0.0).replace(
        "[clip]\n", f"[clip]\naudio = {str(audio).lower()}\n") + (
        f'\n[voice]\nmicrophone = "file:{mic}"\n')
    service = build(parse_config(text))
    runner = threading.Thread(target=service.run, kwargs={"connect_timeout": 10})
    runner.start()
    try:
        time.sleep(2.5)                     # a pre-roll's worth of frames and sound
        service.press(RingPress(time.time(), time.monotonic(), 1, True))

        def clip() -> Any:
            return next((i for i in service.outbox.items() if i.manifest.kind == "clip"),
                        None)
        item = wait_for(clip, 60, "the ring clip") or clip()
    finally:
        service.stop_event.set()
        runner.join(30)
    return subprocess.run(["age", "-d", "-i", str(party.root / "owner.key"), str(item.path)],
                          check=True, capture_output=True).stdout


@pytest.mark.slow
def test_a_clip_with_audio_on_carries_the_microphone_beside_the_video(
        tmp_path: Path, broker: Mosquitto) -> None:
    plain = record_ring_clip(tmp_path, broker, audio=True)
    with av.open(io.BytesIO(plain)) as f:
        assert [s.type for s in f.streams] == ["video", "audio"]
        assert f.streams.audio[0].codec_context.name == "aac"
        video = [fr.time for fr in f.decode(video=0)]
    with av.open(io.BytesIO(plain)) as f:
        frames = list(f.decode(audio=0))
    samples = np.concatenate([fr.to_ndarray()[0] for fr in frames])
    seconds = video[-1] - video[0]
    assert seconds > 1.5
    # sound from the clip's start (its pre-roll) to its end, and it is the microphone's tone
    assert frames[0].time < 0.3 and abs(frames[-1].time - video[-1]) < 0.5, (
        frames[0].time, frames[-1].time, video[-1])
    assert abs(dominant_hz(samples) - 700) < 10


@pytest.mark.slow
def test_clips_are_silent_by_default_even_with_a_microphone(tmp_path: Path,
                                                             broker: Mosquitto) -> None:
    plain = record_ring_clip(tmp_path, broker, audio=False)
    with av.open(io.BytesIO(plain)) as f:
        assert [s.type for s in f.streams] == ["video"]
