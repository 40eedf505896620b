"""Shared fixtures: a real Mosquitto on a free port, throwaway owner, device and inbox keys, and
the shared data folder (skipping, with the reason, where it is absent)."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from doorstep.agent.service import Service
from doorstep.bench import shared
from doorstep.broker import Mosquitto
from doorstep.protocol.age import X25519Identity
from doorstep.protocol.keys import SigningKey

REPO = Path(__file__).resolve().parents[1]
BUNDLED_CLIP = REPO / "doorstep" / "data" / "vtest.mp4"


@pytest.fixture(autouse=True)
def _unfreeze_gc() -> Iterator[None]:
    """`doorstep run` freezes what it built before its frame loop (gc.freeze); in the test
    process that would keep every earlier test's objects from the collector."""
    yield
    gc.unfreeze()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder (video/, motion/), found by doorstep.bench.shared as the bench
    finds it: <repo>/../shared/data, or $DOORSTEP_SHARED_DATA. A test that asks for it skips
    when it is absent, saying where it looked."""
    found = shared.shared_data()
    if found.path is None:
        pytest.skip(f"needs the shared data: {found.why}")
    return found.path


@pytest.fixture
def broker() -> Iterator[Mosquitto]:
    with Mosquitto() as b:
        yield b


@dataclass
class Keys:
    owner: X25519Identity
    owner_file: Path
    command: SigningKey
    device: SigningKey
    device_file: Path
    inbox: SigningKey


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    owner = X25519Identity.generate()
    owner_file = tmp_path / "owner.key"
    owner_file.write_text(f"{owner}\n")
    device = SigningKey.generate()
    device_file = tmp_path / "device.key"
    device.save(device_file)
    return Keys(owner, owner_file, SigningKey.generate(), device, device_file,
                SigningKey.generate())


def press_bell(service: Service, pin: Any) -> None:
    """Press the bell and, since the file plays far faster than real time, give the ring
    thread the moment it would have had between two camera frames."""
    pin.drive_low()
    pin.drive_high()
    deadline = time.monotonic() + 10
    while not any(kind == "ring" for kind, _ in service.agent.events):
        assert time.monotonic() < deadline, "the ring was never handled"
        time.sleep(0.001)
