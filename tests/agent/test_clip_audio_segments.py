"""Sound in clips recorded as segments (clip.audio with the default clip.segment_seconds; issue
15): the agent runs in real time with the microphone a tone file, a ring records a clip of
several segments, each a standalone MP4 with both tracks that the real `age -d` opens, and
`doorstep open` joins them into one MP4 whose sound (decoded with PyAV) is the microphone's
tone and lasts as long as the video, to within a frame or two."""

from __future__ import annotations

import io
import itertools
import json
import shutil
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
from doorstep.cli import main
from doorstep.config import parse_config
from doorstep.protocol.age import decrypt, load_identities
from tests.agent.rtcpeer import dominant_hz, tone
from tests.faults.harness import agent_toml, make_party, wait_for

FPS = 10          # the rate of the bundled test video (tests/faults/harness.VTEST)


def record_segmented_clip(tmp_path: Path, broker: Mosquitto) -> tuple[Path, dict[str, Any]]:
    """Ring once with sound on and 1 s segments; the store the inbox would write (every item
    of the outbox) and the doorbell's clip event."""
    party = make_party(tmp_path / "home")
    mic = tone(tmp_path / "mic.wav", 700, seconds=30)
    text = agent_toml(party, broker.port, motion=False, clip=(1.0, 2.0, 6.0),
                      segment_seconds=1.0).replace("[clip]\n", "[clip]\naudio = true\n") + (
        f'\n[voice]\nmicrophone = "file:{mic}"\n')
    service = build(parse_config(text))
    owner = load_identities(party.root / "owner.key")
    runner = threading.Thread(target=service.run, kwargs={"connect_timeout": 10})
    runner.start()

    def clip_event() -> dict[str, Any] | None:
        for item in service.outbox.items():
            if item.manifest.kind == "event":
                body = json.loads(decrypt(item.path.read_bytes(), owner))
                if body.get("type") == "clip" and body.get("segments"):
                    return dict(body)
        return None
    try:
        time.sleep(2.5)                     # a pre-roll's worth of frames and sound
        service.press(RingPress(time.time(), time.monotonic(), 1, True))
        wait_for(clip_event, 60, "the ring clip's event")
    finally:
        service.stop_event.set()
        runner.join(30)
    body = clip_event()
    assert body is not None
    store = tmp_path / "store"
    store.mkdir()
    (store / "device.pub").write_text(party.device.public_text() + "\n")
    for item in service.outbox.items():
        stem = f"{item.seq:010d}.{item.manifest.kind}"
        shutil.copy(item.path, store / f"{stem}.age")
        (store / f"{stem}.env").write_bytes(item.envelope)
    shutil.copy(party.root / "owner.key", store / "owner.key")
    return store, body


@pytest.mark.slow
def test_a_segmented_clip_with_audio_on_joins_into_one_mp4_with_the_microphone(
        tmp_path: Path, broker: Mosquitto) -> None:
    store, body = record_segmented_clip(tmp_path, broker)
    seqs = body["segments"]
    assert len(seqs) >= 3 and not body["segments_lost"], body
    # each stored segment opens with the real age CLI and is an MP4 with both tracks; each
    # carries its span's sound (the last may end before the microphone reached it: a clip
    # that ends just after a keyframe leaves its last segment one frame, without sound)
    for seq in seqs:
        plain = subprocess.run(["age", "-d", "-i", str(store / "owner.key"),
                                str(store / f"{seq:010d}.segment.age")],
                               check=True, capture_output=True).stdout
        with av.open(io.BytesIO(plain)) as f:
            assert [s.type for s in f.streams] == ["video", "audio"]
            assert f.streams.audio[0].codec_context.name == "aac"
            assert seq == seqs[-1] or any(p.size for p in f.demux(audio=0)), seq
    out = tmp_path / "plain"
    assert main(["-q", "open", str(store), "-i", str(store / "owner.key"),
                 "--out-dir", str(out)]) == 0
    mp4 = (out / f"{seqs[0]:010d}.clip.mp4").read_bytes()
    with av.open(io.BytesIO(mp4)) as f:
        assert [s.type for s in f.streams] == ["video", "audio"]
        video = [float(fr.time) for fr in f.decode(video=0)]
    with av.open(io.BytesIO(mp4)) as f:
        frames = list(f.decode(audio=0))
    samples = np.concatenate([fr.to_ndarray()[0] for fr in frames])
    # no gap and no sample twice: each decoded frame starts where the one before it ended
    pts = [(int(fr.pts), fr.samples) for fr in frames]
    assert all(a + n == b for (a, n), (b, _) in itertools.pairwise(pts)), pts
    start = float(frames[0].time)
    end = float(frames[-1].time) + frames[-1].samples / 48000
    video_end = video[-1] + 1 / FPS
    assert video_end == pytest.approx(body["duration"], abs=0.05)
    # the sound spans the video, to within a frame or two at either end, without a gap
    assert abs(start - video[0]) <= 2 / FPS, (start, video[0])
    assert abs(end - video_end) <= 2 / FPS, (end, video_end)
    assert abs(dominant_hz(samples) - 700) < 10
