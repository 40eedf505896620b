"""Fault: the agent is killed with SIGKILL at random moments while it records and uploads, and
started again, round after round. Nothing the device committed is lost, nothing corrupt reaches
the owner, and nothing arrives twice (DESIGN.md decision 5; issue 5)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from doorstep.broker import Mosquitto
from tests.faults.harness import REPO, agent_toml, check_store, make_party, running_inbox, wait_for

pytestmark = pytest.mark.slow

ROUNDS = 20
DOORSTEP = [sys.executable, "-m", "doorstep.cli"]


def start_agent(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([*DOORSTEP, "run", "--config", str(config)], cwd=REPO,
                                stdout=out, stderr=subprocess.STDOUT)


def test_agent_killed_at_random_moments_loses_nothing(tmp_path: Path,
                                                      broker: Mosquitto) -> None:
    seed = int(os.environ.get("DOORSTEP_FAULT_SEED", "20261128"))
    print(f"agent kill -9 test: seed {seed} (rerun with DOORSTEP_FAULT_SEED={seed})")
    rng = random.Random(seed)
    party = make_party(tmp_path / "home")
    config = tmp_path / "agent.toml"
    # clips of at most 1 s (plus 0.5 s of pre-roll), so whole clips and cut ones both happen
    config.write_text(agent_toml(party, broker.port, clip=(0.5, 0.5, 1.0), in_flight=4))
    log = tmp_path / "agent.log"
    outbox = party.root / "device" / "outbox"
    store = tmp_path / "store"
    with running_inbox(store, party, broker.port):
        ready_marker = "first frame processed"
        for n in range(ROUNDS):
            starts = log.read_text().count(ready_marker) if log.exists() else 0
            agent = start_agent(config, log)
            # start-up (imports, keys, broker) takes longer on a loaded box: crash at a random
            # moment of the recording itself, which begins with the first frame
            wait_for(lambda s=starts: log.read_text().count(ready_marker) > s, 30,
                     "the agent's first frame")
            moment = rng.uniform(0.0, 2.5)
            time.sleep(moment)           # the random moment of the crash, not a wait for logic
            agent.kill()
            agent.wait()
            print(f"round {n}: killed after {moment:.2f} s")
        # the last start: nothing new to record (motion off), so it only resumes and drains
        config.write_text(agent_toml(party, broker.port, motion=False, in_flight=4))
        starts = log.read_text().count(ready_marker)
        agent = start_agent(config, log)
        try:
            wait_for(lambda: log.read_text().count(ready_marker) > starts, 20,
                     "the agent to start for the last time")
            status = Path(f"/proc/{agent.pid}/status").read_text()
            if "THP_enabled:" in status:  # Linux 5.0+: the agent opted out of huge pages
                assert "THP_enabled:\t0" in status
            wait_for(lambda: not any((outbox / "ready").glob("*.env"))
                     and not any((outbox / "ready").glob("*.age"))
                     and not any((outbox / "tmp").iterdir()),
                     60, "the restarted agent to deliver everything")
        finally:
            agent.terminate()
            agent.wait(10)
    assert agent.returncode == 0, log.read_text()[-3000:]
    last_seq = json.loads((outbox / "chain.json").read_text())["last_seq"]
    kinds = check_store(store, party, last_seq=last_seq)
    print(f"delivered: {kinds}")
    # clips are stored as segments (issue 15): no crash leaves a truncated clip_partial now
    assert kinds.get("segment", 0) > 0 and "clip_partial" not in kinds, kinds
    assert kinds.get("event", 0) > 0
