"""`doorstep open` on a clip stored as segments (issue 15): it joins them into one MP4 that
PyAV decodes end to end, and says plainly when a segment the clip event names is missing (and
still writes what there is)."""

from __future__ import annotations

import io
import itertools
import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from doorstep.agent.sealing import Sealer
from doorstep.capture.encoder import PyAvEncoder
from doorstep.capture.frames import Frame
from doorstep.capture.segments import Mp4Segmenter
from doorstep.cli import main
from doorstep.protocol.kinds import EventType, Priority
from doorstep.uplink.outbox import Outbox
from tests.capture.conftest import synthetic_i420
from tests.conftest import Keys

FPS = 15
FRAMES = 90          # 6 s: a first segment of one GOP, then 2 s ones (four in all)


def store_with_a_clip(tmp_path: Path, keys: Keys) -> tuple[Path, list[int]]:
    """A store directory as the inbox writes it: four segments and their clip event."""
    outbox = Outbox(tmp_path / "outbox", device="test", key=keys.device, quota_bytes=1 << 30)
    sealer = Sealer(outbox, [keys.owner.recipient])
    enc = PyAvEncoder("libx264", width=320, height=240, fps=Fraction(FPS), gop_seconds=0.5,
                      preset="ultrafast")
    seg = Mp4Segmenter(enc.info, seconds=2.0)
    done = []
    for i in range(FRAMES):
        frame = Frame(i, i / FPS, 1000 + i / FPS, synthetic_i420(i), np.zeros((8, 8), np.uint8))
        done += seg.write(enc.encode(frame))
    done += seg.write(enc.flush()) + seg.close()
    seqs: list[int] = []
    for s in done:
        parent = str(seqs[0]) if seqs else ""
        seqs.append(sealer.segment(s.data, Priority.CLIP, parent).seq)
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


def frames_of(path: Path) -> list[float]:
    with av.open(io.BytesIO(path.read_bytes())) as c:
        return [float(f.time) for f in c.decode(video=0)]


def test_open_joins_a_clips_segments(tmp_path: Path, keys: Keys,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    store, seqs = store_with_a_clip(tmp_path, keys)
    assert len(seqs) == 4
    out = tmp_path / "plain"
    assert main(["-q", "open", str(store), "-i", str(keys.owner_file),
                 "--out-dir", str(out)]) == 0
    said = capsys.readouterr().out
    assert f"joined 4 segment(s) (whole) -> {out / f'{seqs[0]:010d}.clip.mp4'}" in said
    times = frames_of(out / f"{seqs[0]:010d}.clip.mp4")
    assert len(times) == FRAMES and times[0] == 0.0
    assert times[-1] == pytest.approx((FRAMES - 1) / FPS)
    assert not list(out.glob("*.segment.mp4"))   # only with --segments


def test_open_says_a_clip_is_missing_a_segment_and_writes_the_rest(
        tmp_path: Path, keys: Keys, capsys: pytest.CaptureFixture[str]) -> None:
    store, seqs = store_with_a_clip(tmp_path, keys)
    for suffix in (".age", ".env"):
        (store / f"{seqs[1]:010d}.segment{suffix}").unlink()
    out = tmp_path / "plain"
    assert main(["-q", "open", str(store), "-i", str(keys.owner_file),
                 "--out-dir", str(out), "--segments"]) == 1
    captured = capsys.readouterr()
    assert (f"clip from seq {seqs[0]} is incomplete: segments seq {seqs[1]} are not here"
            in captured.err)
    assert "Traceback" not in captured.err
    times = frames_of(out / f"{seqs[0]:010d}.clip.mp4")
    # the other segments, with a hole in time where the second one (4 GOPs of 8 frames) was
    assert len(times) == FRAMES - 32
    assert max(b - a for a, b in itertools.pairwise(times)) > 2.0
    assert len(list(out.glob("*.segment.mp4"))) == 3
