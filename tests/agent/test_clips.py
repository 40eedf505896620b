"""Issue 4's clip checks, through the agent's own wiring (agent.wiring.build) with a synthetic
video: pre-roll against the sealed metadata, duration = pre-roll + event + post-roll within one
GOP, decoding with PyAV, and a damaged clip refused with a clear message. Clips are stored as
segments (issue 15): each check runs on the clip the owner's tools join from them."""

from __future__ import annotations

import gc
import json
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from doorstep.agent.wiring import build
from doorstep.cli import main
from doorstep.config import parse_config
from doorstep.core.errors import SealError
from doorstep.owner.open import join_clips
from doorstep.protocol.age import decrypt
from doorstep.protocol.manifest import Manifest
from tests.conftest import Keys, press_bell

FPS = 30
PREROLL, POSTROLL, GOP = 3.0, 2.0, 1.0


def synthetic_video(path: Path, seconds: float, move: tuple[float, float] | None) -> None:
    """A still, textured scene; a bright square crosses it between ``move`` seconds."""
    rng = np.random.default_rng(7)
    scene = (rng.integers(60, 120, (240, 320), dtype=np.uint8))
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.options = {"crf": "18", "preset": "ultrafast"}
        for i in range(round(seconds * FPS)):
            t = i / FPS
            img = scene.copy()
            if move and move[0] <= t < move[1]:
                x = int(20 + (t - move[0]) / (move[1] - move[0]) * 240)
                img[90:150, x:x + 50] = 235
            yuv = np.concatenate([img, np.full((120, 320), 128, np.uint8)])
            frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
            frame.pts = i
            frame.time_base = Fraction(1, FPS)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def config(tmp_path: Path, keys: Keys, video: Path, motion: bool) -> str:
    return f"""
[device]
id = "test"
data_dir = "{tmp_path / 'data'}"
key_file = "{keys.device_file}"
[owner]
recipients = ["{keys.owner.recipient}"]
inbox_key = "{keys.inbox.public_text()}"
[camera]
source = "{video}"
realtime = false
[encoder]
name = "libx264"
gop_seconds = {GOP}
preset = "ultrafast"
[clip]
preroll_seconds = {PREROLL}
postroll_seconds = {POSTROLL}
segment_seconds = 2
[motion]
enabled = {str(motion).lower()}
hold_seconds = 1.0
"""


def record(tmp_path: Path, keys: Keys, video: Path, *, motion: bool,
           press_frame: int | None = None,
           manifests: list[tuple[Manifest, bytes]] | None = None) -> list[tuple[str, bytes]]:
    """Run the agent over ``video`` with no broker; return the decrypted outbox by kind, with
    each clip's segments joined as the owner's `doorstep open` joins them (kind "clip").
    ``manifests`` is given every artifact but the segments, with its manifest, in seq order."""
    factory = MockFactory()
    service = build(parse_config(config(tmp_path, keys, video, motion)), pin_factory=factory,
                    connect=False)
    pin = factory.pin(17)

    def on_frame(frame: object) -> None:
        if press_frame is not None and getattr(frame, "index", -1) == press_frame:
            press_bell(service, pin)

    service.run(on_frame=on_frame)
    opened: dict[int, tuple[Manifest, bytes]] = {}
    out = []
    for item in service.outbox.items():
        plain = decrypt(item.path.read_bytes(), [keys.owner])
        opened[item.seq] = (item.manifest, plain)
        if item.manifest.kind != "segment":
            out.append((item.manifest.kind, plain))
            if manifests is not None:
                manifests.append((item.manifest, plain))
    for clip in join_clips(opened):
        assert clip.complete, (clip.listed, clip.joined, clip.lost)
        out.append(("clip", clip.mp4))
    return sorted(out, key=lambda kv: kv[0])


def decoded_seconds(tmp_path: Path, mp4: bytes) -> float:
    path = tmp_path / "clip.mp4"
    path.write_bytes(mp4)
    with av.open(str(path)) as container:
        times = [f.time for f in container.decode(video=0)]
    return max(times) - min(times) + 1 / FPS


def events(items: list[tuple[str, bytes]]) -> list[dict[str, object]]:
    return [json.loads(data) for kind, data in items if kind == "event"]


def test_ring_clip_holds_preroll_and_postroll(tmp_path: Path, keys: Keys) -> None:
    video = tmp_path / "still.mp4"
    synthetic_video(video, 10, None)
    items = record(tmp_path, keys, video, motion=False, press_frame=150)   # t = 5 s
    clips = [data for kind, data in items if kind == "clip"]
    assert len(clips) == 1
    (meta,) = [e for e in events(items) if e["type"] == "clip"]
    assert meta["trigger"] == "ring" and meta["rings"]
    preroll = float(meta["preroll"])                                    # type: ignore[arg-type]
    assert PREROLL <= preroll <= PREROLL + GOP
    seconds = decoded_seconds(tmp_path, clips[0])
    # pre-roll + event (a press: no length) + post-roll, within one GOP
    assert abs(seconds - (preroll + POSTROLL)) <= GOP
    assert abs(seconds - float(meta["duration"])) < 2 / FPS           # type: ignore[arg-type]
    assert sum(1 for kind, _ in items if kind == "snapshot") == 1


def test_a_ring_event_goes_alone_and_its_picture_follows_as_its_own_artifact(
        tmp_path: Path, keys: Keys) -> None:
    """Issue 13, item 13: the ring event is under a kilobyte, so it crosses a slow uplink
    first; the visitor's picture is the next artifact, a thumbnail naming the event as its
    parent, on the ring's priority, then the full snapshot."""
    video = tmp_path / "still.mp4"
    synthetic_video(video, 8, None)
    got: list[tuple[Manifest, bytes]] = []
    record(tmp_path, keys, video, motion=False, press_frame=120, manifests=got)
    at = next(i for i, (m, plain) in enumerate(got)
              if m.kind == "event" and json.loads(plain)["type"] == "ring")
    ring, plain = got[at]
    assert "thumbnail" not in json.loads(plain) and len(plain) < 1024
    children = [(m, data) for m, data in got if m.parent == str(ring.seq)]
    # committed after the event, in this order (a clip's segments may fall between them)
    assert [m.kind for m, _ in children] == ["thumbnail", "snapshot"]
    (thumb, picture), (snap, _) = children
    assert ring.seq < thumb.seq < snap.seq and thumb.priority == 0
    shape = cv2.imdecode(np.frombuffer(picture, np.uint8), cv2.IMREAD_COLOR).shape
    assert shape[1] == 320                        # clip.thumbnail_width


def test_motion_clip_is_preroll_plus_event_plus_postroll(tmp_path: Path, keys: Keys) -> None:
    video = tmp_path / "visitor.mp4"
    synthetic_video(video, 14, (5.0, 7.0))
    items = record(tmp_path, keys, video, motion=True)
    clips = [data for kind, data in items if kind == "clip"]
    assert len(clips) == 1
    evs = events(items)
    (meta,) = [e for e in evs if e["type"] == "clip"]
    start = next(e for e in evs if e["type"] == "motion")
    end = next(e for e in evs if e["type"] == "motion_end")
    assert meta["trigger"] == "motion"
    preroll = float(meta["preroll"])                                    # type: ignore[arg-type]
    assert PREROLL <= preroll <= PREROLL + GOP
    event = float(end["wall"]) - float(start["wall"])                  # type: ignore[arg-type]
    assert 1.5 < event < 4.5            # the square crosses for 2 s, plus the detector's hold
    seconds = decoded_seconds(tmp_path, clips[0])
    assert abs(seconds - (preroll + event + POSTROLL)) <= GOP


def test_damaged_clip_is_refused_with_a_clear_error(tmp_path: Path, keys: Keys,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    video = tmp_path / "still.mp4"
    synthetic_video(video, 6, None)
    factory = MockFactory()
    service = build(parse_config(config(tmp_path, keys, video, False)), pin_factory=factory,
                    connect=False)
    pin = factory.pin(17)
    service.run(on_frame=lambda f: press_bell(service, pin) if f.index == 100 else None)
    clip = next(i for i in service.outbox.items() if i.manifest.kind == "segment")
    data = clip.path.read_bytes()
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x01
    with pytest.raises(SealError, match="failed authentication"):
        decrypt(bytes(flipped), [keys.owner])
    with pytest.raises(SealError, match="truncated"):
        decrypt(data[: len(data) - 70_000], [keys.owner])
    # and the owner's tool says so, naming the file, for a tampered store entry
    store = tmp_path / "store"
    store.mkdir()
    (store / "device.pub").write_text(keys.device.public_text() + "\n")
    (store / "0000000001.segment.age").write_bytes(bytes(flipped))
    (store / "0000000001.segment.env").write_bytes(clip.envelope)
    assert main(["-q", "open", str(store / "0000000001.segment.age"), "-i",
                 str(keys.owner_file),
                 "--out-dir", str(tmp_path / "plain")]) == 1
    assert "does not match the device's signed manifest" in capsys.readouterr().err


def test_frames_keep_flowing_while_a_clip_commit_waits_for_the_disk(
        tmp_path: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch) -> None:
    """Committing a clip ends in fsyncs, which take tens of milliseconds on an SD card. They
    run on the commit thread: the frame loop goes on meanwhile, and the clip and its event are
    committed once the disk answers."""
    import threading

    import doorstep.uplink.outbox as outbox_module

    video = tmp_path / "still.mp4"
    # long enough that frames still come after the commit thread has sealed the first segment
    synthetic_video(video, 10, None)
    stalled, release = threading.Event(), threading.Event()
    real_fsync_dir = outbox_module.fsync_dir

    def slow_disk(path: object) -> None:
        if threading.current_thread().name == "commit" and not release.is_set():
            stalled.set()
            release.wait(30)          # the test releases it; 30 s only guards against a hang
        real_fsync_dir(path)          # type: ignore[arg-type]

    monkeypatch.setattr(outbox_module, "fsync_dir", slow_disk)
    factory = MockFactory()
    cfg = config(tmp_path, keys, video, False).replace(
        "[clip]\n", "[clip]\nmax_seconds = 1.0\n")
    service = build(parse_config(cfg), pin_factory=factory, connect=False)
    pin = factory.pin(17)
    during = []

    def on_frame(frame: object) -> None:
        index = getattr(frame, "index", -1)
        if index == 30:
            press_bell(service, pin)      # a ring: the ring event, then a clip of at most 1 s
        if index == 75:
            # the clip's first segment (closed at 2 s) is on the commit thread by now: let it
            # reach its fsync before the file runs out (sealing it takes a while on a busy box)
            stalled.wait(30)
        if stalled.is_set() and not release.is_set():
            during.append(index)
            if len(during) == 20:         # 20 frames went by while the commit waited
                release.set()

    service.run(on_frame=on_frame)
    assert len(during) == 20, "the frame loop waited for the commit's fsync"
    kinds = [item.manifest.kind for item in service.outbox.items()]
    assert kinds.count("segment") >= 1 and "event" in kinds


def test_the_frame_loop_runs_with_start_up_objects_frozen(tmp_path: Path, keys: Keys) -> None:
    """What `doorstep run` built before its first frame is moved out of the garbage
    collector's reach (gc.freeze), so no full collection walks it during the frame loop; a
    Service run without the flag (tests, the bench's in-process services) freezes nothing."""
    video = tmp_path / "still.mp4"
    synthetic_video(video, 1, None)
    service = build(parse_config(config(tmp_path, keys, video, False)),
                    pin_factory=MockFactory(), connect=False)
    gc.unfreeze()
    frozen: list[int] = []
    service.run(on_frame=lambda f: frozen.append(gc.get_freeze_count()), freeze_gc=True)
    assert frozen and min(frozen) > 1000
    gc.unfreeze()
    again = build(parse_config(config(tmp_path, keys, video, False)),
                  pin_factory=MockFactory(), connect=False)
    unfrozen: list[int] = []
    again.run(on_frame=lambda f: unfrozen.append(gc.get_freeze_count()))
    assert unfrozen and max(unfrozen) == 0
