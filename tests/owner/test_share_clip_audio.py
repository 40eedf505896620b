"""A clip of segments with sound (clip.audio; issue 15) on the owner's side: `doorstep open`
joins its segments into one MP4 with both tracks, and a shared bundle of it (`doorstep share`,
`doorstep verify-share --mp4`) gives the recipient the same: the video, and the microphone's
tone (a tone file read by the real PyAvSource and AudioTap) as long as the video. PyAV decodes
both; the real `age -d` opens a shared segment."""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
from pathlib import Path

import av
import numpy as np
import pytest

from doorstep.agent.sealing import Sealer
from doorstep.cli import main
from doorstep.protocol import age
from doorstep.protocol.kinds import EventType, Priority
from doorstep.uplink.outbox import Outbox
from tests.agent.rtcpeer import dominant_hz
from tests.capture.test_segments_audio import FPS, HZ, packets, segment, tone_mic
from tests.conftest import Keys

FRAMES = 90          # 6 s: a first segment of one GOP, then 2 s ones (four in all)


def store_with_a_clip_with_sound(tmp_path: Path, keys: Keys) -> tuple[Path, list[int]]:
    """A store directory as the inbox writes it: four segments with sound, and the clip
    event."""
    outbox = Outbox(tmp_path / "outbox", device="test", key=keys.device, quota_bytes=1 << 30)
    sealer = Sealer(outbox, [keys.owner.recipient])
    seqs: list[int] = []
    for s in segment(packets(FRAMES), 2.0, tone_mic(tmp_path, 10)):
        seqs.append(sealer.segment(s.data, Priority.CLIP, str(seqs[0]) if seqs else "").seq)
    sealer.event(EventType.CLIP, {"clip_seq": seqs[0], "segments": seqs, "segments_lost": [],
                                  "segment_count": len(seqs)}, priority=Priority.CLIP)
    store = tmp_path / "store"
    store.mkdir()
    (store / "device.pub").write_text(keys.device.public_text() + "\n")
    for item in outbox.items():
        stem = f"{item.seq:010d}.{item.manifest.kind}"
        shutil.copy(item.path, store / f"{stem}.age")
        (store / f"{stem}.env").write_bytes(item.envelope)
    return store, seqs


def sound_and_video(mp4: Path) -> tuple[int, float, float, np.ndarray]:
    """Video frames, the video's end and the sound's (seconds), and the sound's samples."""
    with av.open(io.BytesIO(mp4.read_bytes())) as c:
        assert [s.type for s in c.streams] == ["video", "audio"]
        video = [float(f.time) for f in c.decode(video=0)]
    with av.open(io.BytesIO(mp4.read_bytes())) as c:
        frames = list(c.decode(audio=0))
    end = float(frames[-1].time) + frames[-1].samples / 48000
    return (len(video), video[-1] + 1 / FPS, end,
            np.concatenate([f.to_ndarray()[0] for f in frames]))


def test_open_joins_a_clip_with_sound_into_one_mp4_with_both_tracks(
        tmp_path: Path, keys: Keys, capsys: pytest.CaptureFixture[str]) -> None:
    store, seqs = store_with_a_clip_with_sound(tmp_path, keys)
    assert len(seqs) == 4
    out = tmp_path / "plain"
    assert main(["-q", "open", str(store), "-i", str(keys.owner_file),
                 "--out-dir", str(out)]) == 0
    assert "joined 4 segment(s) (whole)" in capsys.readouterr().out
    frames, video_end, sound_end, samples = sound_and_video(out / f"{seqs[0]:010d}.clip.mp4")
    assert frames == FRAMES
    assert abs(sound_end - video_end) < 2 / FPS, (sound_end, video_end)
    assert abs(dominant_hz(samples) - HZ) < 10


def test_a_shared_clip_with_sound_verifies_and_joins_with_both_tracks(
        tmp_path: Path, keys: Keys, capsys: pytest.CaptureFixture[str]) -> None:
    store, seqs = store_with_a_clip_with_sound(tmp_path, keys)
    neighbour = age.X25519Identity.generate()
    key = tmp_path / "neighbour.key"
    key.write_text(f"{neighbour}\n")
    bundle = tmp_path / "clip.share.tar"
    assert main(["-q", "share", str(store / f"{seqs[2]:010d}.segment.age"),
                 "--to", str(neighbour.recipient), "--identity", str(keys.owner_file),
                 "--out", str(bundle)]) == 0
    capsys.readouterr()
    mp4 = tmp_path / "shared.mp4"
    assert main(["-q", "verify-share", str(bundle), "--identity", str(key),
                 "--device-key", keys.device.public_text(), "--mp4", str(mp4)]) == 0
    assert f"4 segment(s) from seq {seqs[0]}, each signed by it: verified" in \
        capsys.readouterr().out
    frames, video_end, sound_end, samples = sound_and_video(mp4)
    assert frames == FRAMES
    assert abs(sound_end - video_end) < 2 / FPS, (sound_end, video_end)
    assert abs(dominant_hz(samples) - HZ) < 10
    # a shared segment, on its own, opens with the real age CLI: both tracks
    with tarfile.open(bundle) as tar:
        one = tar.extractfile(f"{seqs[1]:010d}.segment.age")
        assert one is not None
        (tmp_path / "one.age").write_bytes(one.read())
    plain = subprocess.run(["age", "-d", "-i", str(key), str(tmp_path / "one.age")],
                           check=True, capture_output=True).stdout
    with av.open(io.BytesIO(plain)) as c:
        assert [s.type for s in c.streams] == ["video", "audio"]
