"""Health probes against a fake sysfs tree and a fake command runner."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path

from doorstep.agent.health import (
    THERMAL_ZONE,
    THROTTLED_SYSFS,
    TIMESYNCD_MARKER,
    Throttling,
    collect_health,
)


class Commands:
    """A runner that answers from a table; a command not in it is "not installed"."""

    def __init__(self, answers: dict[str, tuple[int, str]] | None = None) -> None:
        self.answers = answers or {}
        self.calls: list[str] = []

    def __call__(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        line = " ".join(argv)
        self.calls.append(line)
        if line not in self.answers:
            raise FileNotFoundError(argv[0])
        rc, out = self.answers[line]
        return subprocess.CompletedProcess(list(argv), rc, out, "")


def put(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_a_healthy_pi(tmp_path: Path) -> None:
    put(tmp_path, THERMAL_ZONE, "48312\n")
    put(tmp_path, THROTTLED_SYSFS, "0\n")
    put(tmp_path, TIMESYNCD_MARKER, "")
    runner = Commands()
    h = collect_health(sysfs_root=tmp_path, data_dir=tmp_path, frame_rate=29.971,
                       outbox_depth=3, runner=runner)
    assert h.cpu_temp_c == 48.3
    assert h.throttling == Throttling.decode(0)
    assert h.throttling is not None and h.throttling.problems == ()
    assert h.clock_synchronised is True
    assert h.frame_rate == 29.97
    assert h.outbox_depth == 3
    assert h.disk_total_bytes and h.disk_free_bytes is not None
    assert h.disk_used_percent is not None and 0 <= h.disk_used_percent <= 100
    assert runner.calls == []  # everything came from files: no process spawned


def test_under_voltage_is_decoded_from_vcgencmd(tmp_path: Path) -> None:
    runner = Commands({"vcgencmd get_throttled": (0, "throttled=0x50005\n")})
    h = collect_health(sysfs_root=tmp_path, data_dir=tmp_path, frame_rate=30,
                       outbox_depth=0, runner=runner)
    assert h.throttling is not None
    assert h.throttling.raw == 0x50005
    assert h.throttling.problems == ("under_voltage", "throttled", "under_voltage_occurred",
                                     "throttled_occurred")


def test_clock_sync_falls_back_to_timedatectl(tmp_path: Path) -> None:
    for answer, expected in (("yes", True), ("no", False)):
        runner = Commands({"timedatectl show -p NTPSynchronized --value": (0, answer + "\n")})
        h = collect_health(sysfs_root=tmp_path, data_dir=tmp_path, frame_rate=0,
                           outbox_depth=0, runner=runner)
        assert h.clock_synchronised is expected


def test_off_a_pi_unknowns_are_none_and_json_says_null(tmp_path: Path) -> None:
    runner = Commands({"timedatectl show -p NTPSynchronized --value": (1, "")})
    h = collect_health(sysfs_root=tmp_path, data_dir=tmp_path / "missing", frame_rate=12.5,
                       outbox_depth=7, runner=runner)
    assert (h.cpu_temp_c, h.throttling, h.clock_synchronised) == (None, None, None)
    assert h.disk_total_bytes is None
    doc = json.loads(h.to_json())
    assert doc["cpu_temp_c"] is None and doc["frame_rate"] == 12.5 and doc["outbox_depth"] == 7


def test_garbage_in_sysfs_is_unknown_not_a_crash(tmp_path: Path) -> None:
    put(tmp_path, THERMAL_ZONE, "hot\n")
    put(tmp_path, THROTTLED_SYSFS, "zz\n")
    runner = Commands({"vcgencmd get_throttled": (0, "error=1 error_msg=\"no\"\n")})
    h = collect_health(sysfs_root=tmp_path, data_dir=tmp_path, frame_rate=1, outbox_depth=0,
                       runner=runner)
    assert h.cpu_temp_c is None and h.throttling is None


def test_json_carries_the_decoded_flags(tmp_path: Path) -> None:
    put(tmp_path, THROTTLED_SYSFS, "80008\n")
    h = collect_health(sysfs_root=tmp_path, data_dir=tmp_path, frame_rate=1, outbox_depth=0,
                       runner=Commands())
    doc = json.loads(h.to_json())
    assert doc["throttling"]["soft_temperature_limit"] is True
    assert doc["throttling"]["soft_temperature_limit_occurred"] is True
    assert doc["throttling"]["under_voltage"] is False
