"""The bench rig: throwaway owner and device keys, and agent configs written the way an
installer would write doorstep.toml, with the few knobs each row turns."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from doorstep.config.schema import MqttConfig
from doorstep.owner.keys import make_owner, make_signing

DEVICE = "bench"


@dataclass(frozen=True)
class Keys:
    dir: Path
    recipient: str
    command: str
    device_key: Path
    device_public: Any  # Ed25519PublicKey

    @classmethod
    def make(cls, folder: Path) -> Keys:
        folder.mkdir(parents=True, exist_ok=True)
        device_key = folder / "device.key"
        for name in ("owner.key", "owner-command.key", "device.key"):
            (folder / name).unlink(missing_ok=True)  # throwaway keys: a fresh set per run
        recipient, command = make_owner(folder)
        key = make_signing(device_key)
        return cls(folder, recipient, command, device_key, key.public_key)


def config_text(keys: Keys, data_dir: Path, source: Path, port: int, **knobs: Any) -> str:
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

    return f"""
[device]
id = "{DEVICE}"
data_dir = "{data_dir}"
key_file = "{keys.device_key}"

[owner]
recipients = ["{keys.recipient}"]
command_key = "{keys.command}"

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
