"""The bench rig: throwaway owner and device keys, and agent configs written the way an
installer would write doorstep.toml, with the few knobs each row turns."""

from __future__ import annotations

import contextlib
import itertools
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from doorstep.config.schema import MqttConfig
from doorstep.owner.keys import make_owner, make_signing
from doorstep.protocol.keys import SigningKey, public_text

DEVICE = "bench"
# Every agent the bench starts is a new doorbell with a fresh outbox (its seqs start at 1
# again), so each gets its own id, all known to the one inbox the bench runs (one key for all).
MAX_RUNS = 300
_runs = itertools.count(1)


@dataclass(frozen=True)
class Keys:
    dir: Path
    recipient: str
    command: str
    device_key: Path
    device_public: Any  # Ed25519PublicKey
    inbox_key: Path
    inbox: SigningKey   # the inbox's key: heads and status are sealed to its X25519 form

    @classmethod
    def make(cls, folder: Path) -> Keys:
        folder.mkdir(parents=True, exist_ok=True)
        device_key = folder / "device.key"
        for name in ("owner.key", "owner-command.key", "device.key", "inbox.key"):
            (folder / name).unlink(missing_ok=True)  # throwaway keys: a fresh set per run
        recipient, command = make_owner(folder)
        key = make_signing(device_key)
        inbox = make_signing(folder / "inbox.key")
        return cls(folder, recipient, command, device_key, key.public_key,
                   folder / "inbox.key", inbox)


@contextlib.contextmanager
def inbox_process(keys: Keys, store: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """A real `doorstep inbox` for the bench's device, in its own process (its CPU is not the
    agent's): it receipts what arrives, so outboxes drain as they do at a real door."""
    store.mkdir(parents=True, exist_ok=True)
    devices = store.parent / "inbox-devices.txt"
    public = public_text(keys.device_public)
    devices.write_text("".join(f"{DEVICE}-{n} {public}\n" for n in range(1, MAX_RUNS + 1)))
    log = open(store.parent / "inbox.log", "ab")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [sys.executable, "-m", "doorstep.cli", "inbox", "--store", str(store),
         "--key", str(keys.inbox_key), "--devices", str(devices),
         # its own group: a hub the bench runs (row 10) gets its own copy of everything
         "--group", "doorstep-bench", "--host", "127.0.0.1", "--port", str(port), "--no-tls"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def config_text(keys: Keys, data_dir: Path, source: Path, port: int, *, device: str = "",
                **knobs: Any) -> str:
    """doorstep.toml for one bench run. Knobs (defaults are the shipped defaults, except where
    the bench needs a fixed encoder): realtime, loop, motion, preroll, postroll, clip_max,
    repeat_window, button, chunk_bytes, in_flight, lores (w, h), preset, host (the broker's
    address; the shaped link's root end for row 5)."""
    k: dict[str, Any] = {"realtime": False, "loop": False, "motion": True, "preroll": 5.0,
                         "postroll": 5.0, "clip_max": 120.0, "repeat_window": 3.0,
                         "button": True, "chunk_bytes": MqttConfig.chunk_bytes,
                         "in_flight": MqttConfig.chunks_in_flight,
                         "lores": (320, 240), "preset": "superfast", "gop": 1.0,
                         "bitrate": 2500, "host": "127.0.0.1"}
    unknown = set(knobs) - set(k)
    if unknown:
        raise ValueError(f"config_text: unknown knobs {sorted(unknown)}")
    k.update(knobs)

    def b(v: bool) -> str:
        return "true" if v else "false"

    if not device:                  # a new doorbell, known to the bench's inbox
        run = next(_runs)
        if run > MAX_RUNS:
            raise ValueError(f"config_text: more than {MAX_RUNS} agents in one bench run")
        device = f"{DEVICE}-{run}"
    return f"""
[device]
id = "{device}"
data_dir = "{data_dir}"
key_file = "{keys.device_key}"

[owner]
recipients = ["{keys.recipient}"]
command_key = "{keys.command}"
inbox_key = "{keys.inbox.public_text()}"

[camera]
source = "{source}"
realtime = {b(k['realtime'])}
loop = {b(k['loop'])}
lores_width = {k['lores'][0]}
lores_height = {k['lores'][1]}

[encoder]
name = "libx264"
preset = "{k['preset']}"
gop_seconds = {k['gop']}
bitrate_kbps = {k['bitrate']}

[clip]
preroll_seconds = {k['preroll']}
postroll_seconds = {k['postroll']}
max_seconds = {k['clip_max']}

[motion]
enabled = {b(k['motion'])}

[mqtt]
host = "{k['host']}"
port = {port}
tls = false
insecure_no_tls = {b(k['host'] != "127.0.0.1")}
chunk_bytes = {k['chunk_bytes']}
chunks_in_flight = {k['in_flight']}

[button]
enabled = {b(k['button'])}
pin = "GPIO17"
repeat_window_seconds = {k['repeat_window']}
"""


def write_config(path: Path, keys: Keys, data_dir: Path, source: Path, port: int,
                 **knobs: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config_text(keys, data_dir, source, port, **knobs))
    return path
