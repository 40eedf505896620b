"""The doorbell's health for the retained status topic: CPU temperature, power/thermal throttling,
disk use of the data dir, frame rate, outbox depth and whether the clock is synchronised.

Every probe reads files under ``sysfs_root`` or runs a command through an injected runner, so
tests build a fake tree; a probe that cannot answer reports None (unknown), never raises.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]

THERMAL_ZONE = "sys/class/thermal/thermal_zone0/temp"
# The Raspberry Pi firmware driver exposes the same word as `vcgencmd get_throttled` here.
THROTTLED_SYSFS = "sys/devices/platform/soc/soc:firmware/get_throttled"
TIMESYNCD_MARKER = "run/systemd/timesync/synchronized"

# Bits of the firmware's get_throttled word (Raspberry Pi documentation, "vcgencmd").
_THROTTLE_BITS = {
    0: "under_voltage",
    1: "arm_frequency_capped",
    2: "throttled",
    3: "soft_temperature_limit",
    16: "under_voltage_occurred",
    17: "arm_frequency_capped_occurred",
    18: "throttled_occurred",
    19: "soft_temperature_limit_occurred",
}


@dataclass(frozen=True)
class Throttling:
    """The firmware's throttling word, decoded. "*_occurred" flags stick until reboot."""

    raw: int
    under_voltage: bool
    arm_frequency_capped: bool
    throttled: bool
    soft_temperature_limit: bool
    under_voltage_occurred: bool
    arm_frequency_capped_occurred: bool
    throttled_occurred: bool
    soft_temperature_limit_occurred: bool

    @classmethod
    def decode(cls, raw: int) -> Throttling:
        flags = {name: bool(raw >> bit & 1) for bit, name in _THROTTLE_BITS.items()}
        return cls(raw=raw, **flags)

    @property
    def problems(self) -> tuple[str, ...]:
        """Names of the flags that are set, for a log line or an alert."""
        return tuple(name for name in _THROTTLE_BITS.values() if getattr(self, name))


@dataclass(frozen=True)
class Health:
    cpu_temp_c: float | None
    throttling: Throttling | None
    disk_total_bytes: int | None
    disk_free_bytes: int | None
    disk_used_percent: float | None
    frame_rate: float
    outbox_depth: int
    clock_synchronised: bool | None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))


def run_command(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=5, check=False)


def collect_health(*, sysfs_root: str | os.PathLike[str] = "/", data_dir: str | os.PathLike[str],
                   frame_rate: float, outbox_depth: int, runner: Runner = run_command) -> Health:
    """Probe everything once. Cheap enough to call every status interval (tens of seconds)."""
    root = Path(sysfs_root)
    total, free, used_pct = disk_use(data_dir)
    return Health(
        cpu_temp_c=cpu_temperature(root),
        throttling=throttling(root, runner),
        disk_total_bytes=total,
        disk_free_bytes=free,
        disk_used_percent=used_pct,
        frame_rate=round(float(frame_rate), 2),
        outbox_depth=int(outbox_depth),
        clock_synchronised=clock_synchronised(root, runner),
    )


def cpu_temperature(root: Path) -> float | None:
    """Degrees Celsius from thermal_zone0 (millidegrees in the file)."""
    text = _read(root / THERMAL_ZONE)
    if text is None:
        return None
    try:
        return round(int(text) / 1000, 1)
    except ValueError:
        log.warning("%s: not a temperature: %r", root / THERMAL_ZONE, text[:40])
        return None


def throttling(root: Path, runner: Runner) -> Throttling | None:
    """The firmware's throttling word: the sysfs attribute if the kernel has it, else
    `vcgencmd get_throttled` (which prints "throttled=0x50005"). None off a Pi."""
    text = _read(root / THROTTLED_SYSFS)
    if text is not None:
        try:
            return Throttling.decode(int(text, 16))
        except ValueError:
            log.warning("%s: not a hex word: %r", root / THROTTLED_SYSFS, text[:40])
    out = _command(runner, ["vcgencmd", "get_throttled"])
    if out is None:
        return None
    key, _, value = out.partition("=")
    if key.strip() != "throttled":
        log.warning("vcgencmd get_throttled said %r", out[:60])
        return None
    try:
        return Throttling.decode(int(value.strip(), 16))
    except ValueError:
        log.warning("vcgencmd get_throttled said %r", out[:60])
        return None


def disk_use(path: str | os.PathLike[str]) -> tuple[int | None, int | None, float | None]:
    """(total bytes, bytes free to us, percent used) of the file system holding ``path``."""
    try:
        usage = shutil.disk_usage(path)
    except OSError as exc:
        log.warning("cannot measure disk use of %s: %s", path, exc.strerror or exc)
        return None, None, None
    pct = round(100 * (usage.total - usage.free) / usage.total, 1) if usage.total else None
    return usage.total, usage.free, pct


def clock_synchronised(root: Path, runner: Runner) -> bool | None:
    """Whether the system clock has been set by NTP since boot.

    1. systemd-timesyncd (Raspberry Pi OS's default) touches /run/systemd/timesync/synchronized on
       its first sync: present means yes, with no process spawned.
    2. Otherwise ask `timedatectl show -p NTPSynchronized --value`, which reports the kernel's own
       flag (adjtimex STA_UNSYNC), so chrony or ntpd are covered too.
    We do not call adjtimex(2) ourselves: the agent's unit forbids the @clock system calls
    (ProtectClock=yes), and a seccomp-filtered call must not be the way we learn the time.
    None when neither answers (no systemd, e.g. a container or a laptop test).
    """
    if (root / TIMESYNCD_MARKER).exists():
        return True
    out = _command(runner, ["timedatectl", "show", "-p", "NTPSynchronized", "--value"])
    if out == "yes":
        return True
    if out == "no":
        return False
    return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("cannot read %s: %s", path, exc)
        return None


def _command(runner: Runner, argv: list[str]) -> str | None:
    try:
        done = runner(argv)
    except FileNotFoundError:
        return None  # the tool is not installed here
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("%s failed: %s", " ".join(argv), exc)
        return None
    if done.returncode != 0:
        log.debug("%s exited %s: %s", " ".join(argv), done.returncode, done.stderr.strip()[:200])
        return None
    return done.stdout.strip()
