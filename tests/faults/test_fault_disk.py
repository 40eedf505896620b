"""Faults on the device's disk: the outbox quota is reached while recording (eviction by
priority, counted in the retained status), the disk itself fills up (ENOSPC), and a crash lands
inside a commit. Nothing crashes, and what is kept is whole."""

from __future__ import annotations

import errno
import os
import re
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from gpiozero.pins.mock import MockFactory
from paho.mqtt.enums import CallbackAPIVersion

from doorstep.agent.wiring import build
from doorstep.broker import Mosquitto
from doorstep.capture.frames import Frame
from doorstep.config import parse_config
from doorstep.protocol.age import decrypt
from doorstep.protocol.seal import identity_of
from doorstep.protocol.wire import open_sealed_status
from doorstep.uplink.outbox import Outbox, PendingArtifact
from tests.conftest import press_bell
from tests.faults.harness import (
    DEVICE,
    agent_toml,
    device_outbox,
    make_party,
    put_clip,
    put_event,
)

EVICTED = re.compile(r"evicting (\w+) seq (\d+) \((\d+) bytes, priority (\d)\)")


def press_at(factory: MockFactory, index: int) -> Any:
    """An on_frame hook that presses the (mock) doorbell at frame ``index``, releases at +3."""
    pin = factory.pin(17)

    def on_frame(frame: Frame) -> None:
        if frame.index == index:
            pin.drive_low()
        elif frame.index == index + 3:
            pin.drive_high()

    return on_frame


@pytest.mark.slow
def test_quota_reached_while_recording(tmp_path: Path, broker: Mosquitto,
                                       caplog: pytest.LogCaptureFixture) -> None:
    """No inbox answers, so nothing leaves the 1 MB outbox: motion clips are evicted oldest
    first, ring artifacts never, each eviction is logged and counted in the retained status."""
    caplog.set_level("INFO")
    party = make_party(tmp_path / "home")
    text = agent_toml(party, broker.port, realtime=False, loop=False, button=True,
                      clip=(1.0, 1.0, 3.0), quota_mb=1.0)
    cfg = parse_config(text.replace("bitrate_kbps = 800", "bitrate_kbps = 1500"))
    statuses: list[dict[str, Any]] = []
    got_status = threading.Event()

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        statuses.append(open_sealed_status(bytes(msg.payload), identity_of(party.inbox),
                                           party.device.public_key))
        got_status.set()

    watcher = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    watcher.on_message = on_message
    watcher.connect("127.0.0.1", broker.port)
    watcher.subscribe(f"doorstep/{DEVICE}/status", qos=1)
    watcher.loop_start()
    try:
        factory = MockFactory()
        service = build(cfg, pin_factory=factory)
        ring_hook = press_at(factory, 150)
        evicted_by_then: list[int] = []

        def on_frame(frame: Frame) -> None:
            ring_hook(frame)
            if frame.index == 190 and service.uplink is not None:
                # segments are committed on the commit thread: count what it has done so far
                # (the clip still recording commits its last segment, and may evict, later)
                service.agent._committer.drain()
                evicted_by_then.append(len(EVICTED.findall(caplog.text)))
                service.uplink.publish_status()

        service.run(on_frame=on_frame, connect_timeout=10)
        assert got_status.wait(10)
    finally:
        watcher.loop_stop()
        watcher.disconnect()
    assert service.agent.frames == 200          # the agent went on to the end of the video
    evicted = [(kind, int(seq), int(prio)) for kind, seq, _, prio in EVICTED.findall(caplog.text)]
    assert evicted, "the quota was never reached"
    kept = {item.seq: item.manifest for item in service.outbox.items()}
    assert all(prio > 0 for _, _, prio in evicted), "a ring artifact was evicted"
    ring_seqs = [seq for kind, seq in service.agent.events if kind == "ring"]
    assert ring_seqs and all(seq in kept for seq in ring_seqs)
    # clips are stored as segments (issue 15): a clip's video is its segments
    assert any(m.kind == "segment" and m.priority == 0 for m in kept.values()), \
        "no ring clip kept"
    # motion clips go oldest first: every motion clip still kept is newer than every evicted one
    evicted_clips = [seq for kind, seq, prio in evicted if kind == "segment" and prio == 3]
    kept_clips = [seq for seq, m in kept.items() if m.kind == "segment" and m.priority == 3]
    assert evicted_clips
    assert not kept_clips or min(kept_clips) > max(evicted_clips)
    # the retained status counts them
    online = [s for s in statuses if s["state"] == "online"]
    assert online[-1]["outbox"]["evictions"] == evicted_by_then[0]
    assert online[-1]["outbox"]["evicted_bytes"] > 0
    # and the outbox on disk is whole: a restart finds every kept item, and it decrypts
    again = Outbox(tmp_path / "home" / "device" / "outbox", device=DEVICE, key=party.device,
                   quota_bytes=1 << 20)
    assert again.recovery.torn_removed == 0
    assert sorted(item.seq for item in again.items()) == sorted(kept)
    for item in again.items():
        assert decrypt(item.path.read_bytes(), [party.owner])


class SmallDisk:
    """A disk with room for ``capacity`` bytes of outbox files. As write(2) does on a full
    filesystem, a write that only partly fits is short, and one that cannot write a byte fails
    with ENOSPC."""

    def __init__(self, root: Path, capacity: int) -> None:
        self.root = root
        self.capacity = capacity
        self.refusals = 0

    def used(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Put every artifact the outbox opens from now on, on this disk."""
        real_open = Outbox.open
        disk = self

        def open_on_this_disk(outbox: Outbox, kind: str, *, priority: int,
                              parent: str = "") -> PendingArtifact:
            pending = real_open(outbox, kind, priority=priority, parent=parent)
            disk.wrap(pending)
            return pending

        monkeypatch.setattr(Outbox, "open", open_on_this_disk)

    def wrap(self, pending: PendingArtifact) -> None:
        real = pending._file
        disk = self

        class File:
            def write(self, data: bytes) -> int:
                room = disk.capacity - disk.used()
                if room <= 0:
                    disk.refusals += 1
                    raise OSError(errno.ENOSPC, "No space left on device")
                assert real is not None
                return int(real.write(bytes(data)[:room]))

            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

        pending._file = File()  # type: ignore[assignment]


@pytest.mark.slow
def test_full_disk_while_recording(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The filesystem fills up long before the quota: writes fail with ENOSPC, the outbox
    evicts motion clips to make room, and when nothing may go the clip is dropped with a log
    line. The agent records to the end and the outbox stays consistent."""
    party = make_party(tmp_path / "home")
    cfg = parse_config(agent_toml(party, 1, realtime=False, loop=False, button=True,
                                  clip=(1.0, 1.0, 3.0), quota_mb=100.0))
    disk = SmallDisk(tmp_path / "home" / "device" / "outbox", 700_000)
    disk.install(monkeypatch)
    factory = MockFactory()
    service = build(cfg, pin_factory=factory, connect=False)
    service.run(on_frame=press_at(factory, 150))
    assert service.agent.frames == 200
    assert disk.refusals > 0 and service.outbox.evictions > 0
    assert disk.used() <= disk.capacity
    ring_seqs = [seq for kind, seq in service.agent.events if kind == "ring"]
    assert ring_seqs and all(service.outbox.get(seq) is not None for seq in ring_seqs)
    again = Outbox(disk.root, device=DEVICE, key=party.device, quota_bytes=1 << 30)
    assert again.recovery.torn_removed == 0
    assert len(again.items()) == service.outbox.depth
    for item in again.items():
        assert decrypt(item.path.read_bytes(), [party.owner])


def test_crash_inside_a_commit_is_finished_at_start(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """kill -9 after the manifest is written but before the ciphertext is renamed into place:
    the next start finds the ciphertext it signed in tmp/ and completes the commit."""
    party = make_party(tmp_path / "home")
    box = device_outbox(tmp_path / "outbox", party)
    put_event(box, party)

    class Killed(BaseException):
        pass

    real_replace = os.replace

    def crash(src: str, dst: str) -> None:
        if str(dst).endswith(".age"):
            raise Killed
        real_replace(src, dst)

    monkeypatch.setattr("doorstep.uplink.outbox.os.replace", crash)
    with pytest.raises(Killed):
        box.put("event", b"x" * 10, priority=0)
    monkeypatch.undo()
    # (a real kill -9 would also leave the tmp file; put's cleanup removed none of it)
    assert len(list((tmp_path / "outbox" / "tmp").iterdir())) == 1
    again = device_outbox(tmp_path / "outbox", party)
    assert [item.seq for item in again.items()] == [1, 2]
    item = again.get(2)
    assert item is not None and item.path.read_bytes() == b"x" * 10
    assert again.recovery.torn_removed == 0
    assert put_clip(again, party, 1000).seq == 3


def test_a_clip_that_cannot_start_on_a_full_disk_leaves_nothing(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                ) -> None:
    """The disk is full when a clip starts: its age header cannot be written. The start fails
    with DiskFull, and neither an empty file in tmp/ nor an open one in the outbox is left."""
    from doorstep.agent.sealing import Sealer
    from doorstep.capture.frames import StreamInfo
    from doorstep.core.errors import DiskFull

    party = make_party(tmp_path / "home")
    root = tmp_path / "home" / "device" / "outbox"
    outbox = Outbox(root, device=DEVICE, key=party.device, quota_bytes=1 << 30)
    disk = SmallDisk(root, 0)
    disk.install(monkeypatch)
    sealer = Sealer(outbox, [party.owner.recipient])
    with pytest.raises(DiskFull):
        sealer.clip(StreamInfo(320, 240, Fraction(30), Fraction(1, 90000)), priority=3)
    assert disk.refusals == 1
    assert list((root / "tmp").iterdir()) == []
    assert outbox.bytes_used == 0
    assert Outbox(root, device=DEVICE, key=party.device,
                  quota_bytes=1 << 30).recovery.torn_removed == 0


def test_evictions_on_a_full_disk_say_disk_full_not_quota(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture
                                                          ) -> None:
    """The quota is far away but the disk is full: the log says which of the two it was."""
    caplog.set_level("WARNING")
    party = make_party(tmp_path / "home")
    root = tmp_path / "home" / "device" / "outbox"
    outbox = Outbox(root, device=DEVICE, key=party.device, quota_bytes=1 << 30)
    disk = SmallDisk(root, 30_000)
    disk.install(monkeypatch)
    motion = outbox.put("clip", os.urandom(20_000), priority=3)
    ring = outbox.put("clip", os.urandom(20_000), priority=0)
    assert outbox.get(motion.seq) is None and outbox.get(ring.seq) is not None
    assert f"disk full; evicting clip seq {motion.seq}" in caplog.text
    assert "quota" not in caplog.text


def _full_for(monkeypatch: pytest.MonkeyPatch, suffix: str) -> None:
    """The disk is full for the outbox's next small file whose name ends in ``suffix``: the
    manifest (.env) or the chain position (chain.json), as on the nearly full tmpfs of issue 18,
    where the ciphertext fitted and chain.json did not."""
    import doorstep.uplink.outbox as outbox_module

    real = outbox_module.write_atomic

    def write_atomic(path: str | os.PathLike[str], data: bytes, **kwargs: Any) -> None:
        if str(path).endswith(suffix):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data, **kwargs)

    monkeypatch.setattr(outbox_module, "write_atomic", write_atomic)


@pytest.mark.parametrize("full_at", [".env", "chain.json"])
def test_a_commit_that_fails_on_a_full_disk_is_all_or_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, full_at: str) -> None:
    """ENOSPC on the commit's last small writes: the caller hears that nothing was stored, and
    the running outbox, the files and the next start all agree; the seq is used by the next
    artifact, once, chained to the one before."""
    from doorstep.core.errors import DiskFull
    from doorstep.protocol.manifest import manifest_hash

    party = make_party(tmp_path / "home")
    root = tmp_path / "outbox"
    box = device_outbox(root, party)
    first = put_event(box, party)
    _full_for(monkeypatch, full_at)
    with pytest.raises(DiskFull, match="nothing was stored: No space left on device"):
        put_event(box, party, "snapshot", priority=1)
    monkeypatch.undo()
    assert [item.seq for item in box.items()] == [first.seq]
    assert box.bytes_used == first.size and box.stats()["last_seq"] == first.seq
    assert sorted(p.name for p in (root / "ready").iterdir()) == ["0000000001.age",
                                                                  "0000000001.env"]
    assert list((root / "tmp").iterdir()) == []
    again = device_outbox(root, party)
    assert [item.seq for item in again.items()] == [first.seq]
    assert again.recovery.torn_removed == 0
    second = put_event(box, party)              # space is back
    assert second.seq == 2 and second.manifest.prev == manifest_hash(first.envelope)


@pytest.mark.parametrize("room_at_restart", [True, False])
def test_a_seq_is_never_used_twice_after_a_crash_receipts_and_restarts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, room_at_restart: bool) -> None:
    """kill -9 after a commit's files are in place but before chain.json names its seq. The
    next start resumes it (and may find the disk still too full to write chain.json); the
    inbox's receipt removes it; after another restart the next artifact takes the next seq,
    never the same one again (which the inbox would refuse as a fork)."""

    class Killed(BaseException):
        pass

    import doorstep.uplink.outbox as outbox_module

    party = make_party(tmp_path / "home")
    root = tmp_path / "outbox"
    box = device_outbox(root, party)
    real = outbox_module.write_atomic

    def killed_at_chain(path: str | os.PathLike[str], data: bytes, **kwargs: Any) -> None:
        if str(path).endswith("chain.json"):
            raise Killed
        real(path, data, **kwargs)

    monkeypatch.setattr(outbox_module, "write_atomic", killed_at_chain)
    with pytest.raises(Killed):
        put_event(box, party)
    monkeypatch.undo()
    if not room_at_restart:
        _full_for(monkeypatch, "chain.json")
    again = device_outbox(root, party)
    assert [item.seq for item in again.items()] == [1]
    assert again.remove(1)                      # the receipt
    monkeypatch.undo()
    third = device_outbox(root, party)
    assert third.items() == []
    assert put_event(third, party).seq == 2
    assert put_event(device_outbox(root, party), party).seq == 3


def test_a_commit_short_of_room_for_its_manifest_evicts_a_motion_clip(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As for ciphertext, a full disk at the manifest makes room by eviction, lowest priority
    first, and the ring is stored."""
    import doorstep.uplink.outbox as outbox_module

    party = make_party(tmp_path / "home")
    box = device_outbox(tmp_path / "outbox", party)
    motion = put_clip(box, party, 50_000)
    real = outbox_module.write_atomic

    def full_until_evicted(path: str | os.PathLike[str], data: bytes, **kwargs: Any) -> None:
        if str(path).endswith(".env") and box.get(motion.seq) is not None:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data, **kwargs)

    monkeypatch.setattr(outbox_module, "write_atomic", full_until_evicted)
    ring = put_event(box, party)
    assert [item.seq for item in box.items()] == [ring.seq]
    assert box.evictions == 1


@pytest.mark.slow
def test_a_disk_that_fills_mid_clip_keeps_what_was_recorded_and_resumes_when_space_returns(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 18 item 3: the disk fills during a ring's clip. What was recorded so far is kept
    (a partial clip, every whole age chunk of it), and the clip resumes within a second or so
    of space returning, not when max_seconds runs out. This is the whole-clip path
    (clip.segment_seconds = 0), kept for owner apps that play only whole clips; the segment
    path is checked in test_a_disk_full_mid_clip_costs_only_the_segments_that_did_not_fit."""
    import av

    from doorstep.owner.open import open_artifact

    party = make_party(tmp_path / "home")
    cfg = parse_config(agent_toml(party, 1, realtime=False, loop=False, motion=False,
                                  button=True, clip=(1.0, 8.0, 60.0), quota_mb=100.0,
                                  segment_seconds=0))
    disk = SmallDisk(tmp_path / "home" / "device" / "outbox", 1 << 30)
    disk.install(monkeypatch)
    factory = MockFactory()
    service = build(cfg, pin_factory=factory, connect=False)
    pin = factory.pin(17)

    def on_frame(frame: Frame) -> None:
        if frame.index == 20:                       # t = 2 s: the clip runs to t = 10 s
            press_bell(service, pin)
        if frame.index == 40:
            # the ring's snapshot is sealed on the ring thread: let it land first (the file
            # plays far faster than real time)
            deadline = time.monotonic() + 20
            while not any(i.manifest.kind == "snapshot" for i in service.outbox.items()):
                assert time.monotonic() < deadline, "the ring's snapshot was never stored"
                time.sleep(0.005)
            disk.capacity = disk.used()             # full from t = 4 s...
        if frame.index == 60:
            disk.capacity = 1 << 30                 # ...to t = 6 s
    service.run(on_frame=on_frame)
    assert disk.refusals > 0
    items = {item.manifest.kind: item for item in service.outbox.items()
             if item.manifest.kind.startswith("clip")}
    assert set(items) == {"clip", "clip_partial"}, items
    # the ring's own event, thumbnail and snapshot are never pushed out to make room for its
    # clip (the two events: the ring's and the clip's)
    kinds = sorted(item.manifest.kind for item in service.outbox.items())
    assert kinds == ["clip", "clip_partial", "event", "event", "snapshot", "thumbnail"], kinds

    def frame_times(kind: str) -> list[float]:
        item = items[kind]
        _, mp4 = open_artifact(item.path, [party.owner], party.device.public_key)
        path = tmp_path / f"{kind}.mp4"
        path.write_bytes(mp4)
        times: list[float] = []
        with av.open(str(path)) as container:
            try:
                for packet in container.demux(video=0):
                    times += [float(f.time) for f in packet.decode()]
            except av.error.InvalidDataError:
                assert kind == "clip_partial"     # cut short: it plays to its last whole frame
        return times

    # the clip would run from t = 1 (1 s of pre-roll) to t = 10: the disk was full from t = 4
    # to t = 6. Kept: t = 1 to about 4, less what was still in the age writer and the open
    # MP4 fragment when the disk filled (under a second here)
    kept = frame_times("clip_partial")
    assert kept and 1.5 <= max(kept) - min(kept) <= 3.2
    # resumed within about a second of space (t = 6, at a keyframe: every 0.5 s), to the end;
    # it starts at the last packet kept, from the pre-roll ring, so the longer the partial
    # clip's lost tail was, the longer it is: together the two never hold more than the 9 s
    # clip and one keyframe interval (nothing recorded twice)
    resumed = frame_times("clip")
    assert resumed and max(resumed) - min(resumed) >= 3.0
    assert (max(kept) - min(kept)) + (max(resumed) - min(resumed)) <= 9.0 + 0.6


def test_a_disk_full_mid_clip_costs_only_the_segments_that_did_not_fit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 15: the same full disk (t = 4 to 6 s of a ring's clip) with the clip stored as
    segments. The segments that did not fit are lost and named in the clip event; every
    other one is stored whole, and the owner's join plays before and after the gap."""
    import io
    import itertools

    import av

    from doorstep.owner.open import join_clips
    from doorstep.protocol.age import decrypt as age_decrypt

    party = make_party(tmp_path / "home")
    cfg = parse_config(agent_toml(party, 1, realtime=False, loop=False, motion=False,
                                  button=True, clip=(1.0, 8.0, 60.0), quota_mb=100.0))
    disk = SmallDisk(tmp_path / "home" / "device" / "outbox", 1 << 30)
    disk.install(monkeypatch)
    factory = MockFactory()
    service = build(cfg, pin_factory=factory, connect=False)
    pin = factory.pin(17)

    def on_frame(frame: Frame) -> None:
        if frame.index == 20:
            press_bell(service, pin)
        if frame.index == 40:
            deadline = time.monotonic() + 20
            while not any(i.manifest.kind == "snapshot" for i in service.outbox.items()):
                assert time.monotonic() < deadline, "the ring's snapshot was never stored"
                time.sleep(0.005)
            service.agent._committer.drain()   # segments closed before t = 4 are on disk
            disk.capacity = disk.used()
        if frame.index == 60:
            service.agent._committer.drain()   # those closed while it was full were refused
            disk.capacity = 1 << 30
    service.run(on_frame=on_frame)
    assert disk.refusals > 0
    opened = {item.seq: (item.manifest, age_decrypt(item.path.read_bytes(), [party.owner]))
              for item in service.outbox.items()}
    kinds = sorted(m.kind for m, _ in opened.values())
    assert kinds.count("event") == 2 and kinds.count("snapshot") == 1, kinds  # ring, clip
    (clip,) = join_clips(opened)
    assert clip.event is not None and clip.lost and not clip.complete
    assert clip.event["segments_lost"] == clip.lost
    with av.open(io.BytesIO(clip.mp4)) as container:
        times = [float(f.time) for f in container.decode(video=0) if f.time is not None]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # t = 1 to 10 s, with a hole where the disk was full: before it and after it both play
    assert max(gaps) >= 1.0 and 7.0 <= max(times) - min(times) <= 9.5, (max(gaps), times[-1])
