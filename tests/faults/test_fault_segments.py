"""Clips as sealed segments (issue 15) with the real agent process, a real Mosquitto and the
real `age` CLI: segments reach the inbox while their clip still records, and a `kill -9` in
the middle of a clip loses at most the segment being written; every stored segment opens with
`age -d`, and the owner's join of them decodes end to end."""

from __future__ import annotations

import io
import itertools
import json
import subprocess
import threading
from pathlib import Path

import av
import pytest

from doorstep.broker import Mosquitto
from doorstep.owner.open import join_clips, open_artifact
from doorstep.owner.store import Stored
from doorstep.protocol.manifest import Manifest
from tests.faults.harness import (
    DEVICE,
    agent_toml,
    check_store,
    make_party,
    running_inbox,
    wait_for,
)
from tests.faults.test_fault_agent_kill import start_agent

pytestmark = pytest.mark.slow

READY = "first frame processed"


def opened_store(store: Path, party_owner: object) -> dict[int, tuple[Manifest, bytes]]:
    out = {}
    for path in sorted((store / DEVICE).glob("*.age")):
        manifest, plain = open_artifact(path, [party_owner])  # type: ignore[list-item]
        out[manifest.seq] = (manifest, plain)
    return out


def decoded(mp4: bytes) -> list[float]:
    with av.open(io.BytesIO(mp4)) as container:
        return [f.time for f in container.decode(video=0) if f.time is not None]


def test_segments_reach_the_inbox_while_their_clip_records(tmp_path: Path,
                                                           broker: Mosquitto) -> None:
    """Ordering, not timing: the inbox stores a clip's first segment before the doorbell has
    committed that clip's last one (read from its chain position at that moment)."""
    party = make_party(tmp_path / "home")
    config = tmp_path / "agent.toml"
    # a clip of up to 6 s (motion in the looping test video keeps it going), split every 6 s
    config.write_text(agent_toml(party, broker.port, clip=(1.0, 2.0, 6.0), in_flight=4))
    chain = party.root / "device" / "outbox" / "chain.json"
    stored: list[tuple[int, str, int]] = []     # (seq, kind, device's last seq at that moment)
    lock = threading.Lock()

    def on_stored(s: Stored) -> None:
        last = json.loads(chain.read_text())["last_seq"]
        with lock:
            stored.append((s.manifest.seq, s.manifest.kind, last))

    store = tmp_path / "store"
    log = tmp_path / "agent.log"
    with running_inbox(store, party, broker.port, on_stored=on_stored):
        agent = start_agent(config, log)
        try:
            def a_whole_clip() -> bool:
                for path in sorted((store / DEVICE).glob("*.event.age")):
                    body = json.loads(open_artifact(path, [party.owner])[1])
                    if body.get("type") == "clip" and all(
                            (store / DEVICE / f"{s:010d}.segment.age").exists()
                            for s in body["segments"]):
                        return True
                return False
            wait_for(a_whole_clip, 90, "a whole clip at the inbox")
        finally:
            agent.kill()
            agent.wait()
    opened = opened_store(store, party.owner)
    clip = next(c for c in join_clips(opened) if c.complete)
    assert len(clip.listed) >= 2, clip.listed
    first, last = clip.listed[0], clip.listed[-1]
    at_first = next(last_seq for seq, _, last_seq in stored if seq == first)
    assert at_first < last, (f"segment {first} reached the inbox only once the device had "
                             f"committed seq {at_first} (the clip's last segment is {last})")
    assert clip.event is not None
    # the pre-roll: 1 s, or all the video there was before the trigger
    assert float(clip.event["preroll"]) >= min(1.0, float(clip.event["trigger_pts"])) - 1e-6
    times = decoded(clip.mp4)
    assert abs(max(times) - min(times) - float(clip.event["duration"])) < 0.2


def test_kill_9_mid_clip_loses_at_most_the_open_segment(tmp_path: Path,
                                                         broker: Mosquitto) -> None:
    party = make_party(tmp_path / "home")
    config = tmp_path / "agent.toml"
    # one long clip: pre-roll 1 s, post-roll 30 s, so it is recording when it is killed
    config.write_text(agent_toml(party, broker.port, clip=(1.0, 30.0, 120.0), in_flight=4))
    outbox = party.root / "device" / "outbox"
    store = tmp_path / "store"
    log = tmp_path / "agent.log"
    with running_inbox(store, party, broker.port):
        agent = start_agent(config, log)
        try:
            wait_for(lambda: len(list((store / DEVICE).glob("*.segment.age"))) >= 3, 90,
                     "three segments of the clip at the inbox")
        finally:
            agent.kill()                 # SIGKILL, mid-clip: nothing runs on the way out
            agent.wait()
        assert "segment(s)" not in log.read_text(), "the clip ended before the kill"
        # the next start resumes the outbox (motion off: nothing new) and drains it
        config.write_text(agent_toml(party, broker.port, motion=False, in_flight=4))
        starts = log.read_text().count(READY)
        agent = start_agent(config, log)
        try:
            wait_for(lambda: log.read_text().count(READY) > starts, 30,
                     "the agent to start again")
            wait_for(lambda: not any((outbox / "ready").glob("*.age"))
                     and not any((outbox / "tmp").iterdir()), 60,
                     "the restarted agent to deliver everything")
        finally:
            agent.terminate()
            agent.wait(10)
    last_seq = json.loads((outbox / "chain.json").read_text())["last_seq"]
    kinds = check_store(store, party, last_seq=last_seq)
    assert "clip_partial" not in kinds and "clip" not in kinds, kinds
    segments = sorted((store / DEVICE).glob("*.segment.age"))
    assert len(segments) >= 3
    for path in segments:            # the real age CLI opens every one of them
        out = subprocess.run(["age", "-d", "-i", str(party.root / "owner.key"), str(path)],
                             capture_output=True, check=False)
        assert out.returncode == 0, (path.name, out.stderr)
        assert out.stdout[4:8] == b"ftyp"
        assert decoded(out.stdout), f"{path.name} does not play on its own"
    (clip,) = join_clips(opened_store(store, party.owner))
    assert clip.event is None                  # cut by the crash: no clip event was sealed
    assert clip.joined == [int(p.name[:10]) for p in segments]
    times = decoded(clip.mp4)
    # the joined clip plays from its first frame through every stored segment, no gap
    assert min(times) == 0.0
    gaps = [b - a for a, b in itertools.pairwise(sorted(times))]
    assert max(gaps) < 0.2, max(gaps)
    # seeking into the middle lands on a frame at or before the target
    with av.open(io.BytesIO(clip.mp4)) as container:
        stream = container.streams.video[0]
        target = max(times) / 2
        container.seek(int(target / stream.time_base), stream=stream)
        frame = next(container.decode(stream))
        assert frame.time is not None and frame.time <= target + 1e-6
