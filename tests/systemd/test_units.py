"""The units under systemd/: `systemd-analyze verify` finds nothing to say about them once
`doorstep install` has laid out a root, and `systemd-analyze security` rates the agent at
exposure 2.0 or better. Also checks the units agree with install.py and firstboot.py."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from doorstep.provision import firstboot, install

UNITS = Path(__file__).resolve().parents[2] / "systemd"
ANALYZE = shutil.which("systemd-analyze")
SYSTEM_UNITS = Path("/usr/lib/systemd/system")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None or not (SYSTEM_UNITS / "sysinit.target").exists(),
    reason="systemd-analyze (Debian package 'systemd') is not installed here")


def settings(unit: str) -> dict[str, list[str]]:
    """Key -> every value it is given in the unit (systemd allows repeats)."""
    out: dict[str, list[str]] = {}
    for line in (UNITS / unit).read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def analyze(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run([ANALYZE, *args], capture_output=True, text=True, timeout=60,
                          env=env, check=False)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root laid out by `doorstep install`, with the distribution's units and a stand-in for
    the venv's entry point (verify checks that ExecStart= is executable)."""
    root = tmp_path_factory.mktemp("root")

    def fake(argv: Sequence[str]) -> None:
        raise AssertionError(f"no command should run with --root: {argv}")

    etc = root / "etc"
    etc.mkdir()
    (etc / "passwd").write_text("doorstep:x:4242:4242::/var/lib/doorstep:/usr/sbin/nologin\n")
    (etc / "group").write_text("doorstep:x:4242:\nvideo:x:44:\ngpio:x:997:\n")
    install.Installer(root=root, runner=fake, units_dir=UNITS, config_text=b"").run()
    shutil.copytree(SYSTEM_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    # the doorbell's units run the current release (the fall-back the previous one); the
    # owner's inbox unit a plain venv
    for venv in ("current", "previous", "venv"):
        exe = root / install.DEFAULT_PREFIX.lstrip("/") / venv / "bin/doorstep"
        exe.parent.mkdir(parents=True)
        exe.write_text("#!/bin/sh\n")
        exe.chmod(0o755)
    return root


@needs_analyze
@pytest.mark.parametrize("unit", install.PI_UNITS)
def test_verify_has_nothing_to_say(root: Path, unit: str) -> None:
    done = analyze("verify", f"--root={root}", f"/etc/systemd/system/{unit}")
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


@needs_analyze
def test_verify_is_not_a_rubber_stamp(root: Path, tmp_path: Path) -> None:
    unit = root / "etc/systemd/system/doorstep-agent.service"
    good = unit.read_text()
    try:
        unit.write_text(good.replace("ProtectHome=yes", "ProtectHom=yes"))
        done = analyze("verify", f"--root={root}", "/etc/systemd/system/doorstep-agent.service")
        assert "Unknown key 'ProtectHom'" in done.stderr  # a typo is reported...
        exe = root / "opt/doorstep/current/bin/doorstep"
        unit.write_text(good.replace(str(exe.relative_to(root).parent), "opt/elsewhere/bin"))
        done = analyze("verify", f"--root={root}", "/etc/systemd/system/doorstep-agent.service")
        assert done.returncode != 0 and "is not executable" in done.stderr  # ...and a bad path
    finally:
        unit.write_text(good)


@needs_analyze
def test_the_owner_inbox_unit_verifies(root: Path) -> None:
    unit = root / "etc/systemd/system/doorstep-inbox.service"
    shutil.copy(UNITS / "doorstep-inbox.service", unit)
    try:
        done = analyze("verify", f"--root={root}", "/etc/systemd/system/doorstep-inbox.service")
        assert (done.returncode, done.stdout + done.stderr) == (0, "")
    finally:
        unit.unlink()


SHIPPED = sorted(p.name for p in UNITS.glob("*.service"))


@needs_analyze
@pytest.mark.parametrize("unit", SHIPPED)
def test_every_shipped_unit_is_rated_exposure_2_or_better(unit: str) -> None:
    done = analyze("security", "--offline=true", "--threshold=20", str(UNITS / unit))
    found = re.search(rf"Overall exposure level for {re.escape(unit)}: (\d+\.\d)", done.stdout)
    assert found, done.stdout[-2000:] + done.stderr
    assert float(found.group(1)) <= 2.0, done.stdout[-3000:]
    assert done.returncode == 0


@pytest.mark.parametrize("unit", SHIPPED)
def test_every_shipped_unit_has_a_memory_ceiling(unit: str) -> None:
    (limit,) = settings(unit)["MemoryMax"]
    assert limit.endswith("M") and 64 <= int(limit[:-1]) <= 512


def test_the_inbox_unit_cannot_read_the_owners_key() -> None:
    # owner.key lives in the owner's home (README): the inbox runs as a throwaway user with
    # every home directory hidden, and is given no path into one
    s = settings("doorstep-inbox.service")
    assert s["DynamicUser"] == ["yes"] and s["ProtectHome"] == ["yes"]
    assert s["PrivateUsers"] == ["yes"] and s["ProtectSystem"] == ["strict"]
    paths = " ".join(v for k, vs in s.items() if k.endswith(("Paths", "Directory")) or
                     k.startswith(("Bind", "LoadCredential", "ExecStart")) for v in vs)
    assert "%h" not in paths and "/home" not in paths and "/root" not in paths
    assert "owner.key" not in paths
    # and it is bounded in memory, so a flood cannot take the machine down (issue 13 item 5)
    assert s["MemoryMax"] and s["MemoryMax"][0].endswith("M")


def test_agent_unit_keeps_the_promises_the_docs_make() -> None:
    s = settings("doorstep-agent.service")
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"]
    assert s["WatchdogSec"] and s["Restart"] == ["on-failure"]
    assert s["CapabilityBoundingSet"] == [""]
    assert s["ProtectSystem"] == ["strict"] and s["ReadWritePaths"] == [install.DATA_DIR]
    assert s["DevicePolicy"] == ["closed"]
    assert s["User"] == [install.USER] and s["SupplementaryGroups"] == ["video gpio"]
    assert s["NoNewPrivileges"] == ["yes"] and s["PrivateTmp"] == ["yes"]
    assert s["ExecStart"] == [f"{install.DEFAULT_PREFIX}/current/bin/doorstep run "
                              f"--config {install.ETC_DIR}/doorstep.toml"]
    # the credentials the agent gets are the files first boot writes
    creds = {v.partition(":")[0]: v.partition(":")[2] for v in s["LoadCredential"]}
    names = {firstboot.KEY_CREDENTIAL, *firstboot.SECRETS.values()}
    assert set(creds) == names
    for name in names:
        assert creds[name] == f"{install.CREDENTIALS_DIR}/{name}"


def test_firstboot_unit_runs_before_the_agent_only_when_there_is_a_file() -> None:
    s = settings("doorstep-firstboot.service")
    assert s["Type"] == ["oneshot"]
    assert s["ConditionPathExists"] == [f"/boot/firmware/{firstboot.BOOT_FILE}"]
    assert "doorstep-agent.service" in s["Before"][0]
    assert "doorstep-firstboot.service" in settings("doorstep-agent.service")["After"][0]
    assert s["ExecStart"][0].startswith(
        f"{install.DEFAULT_PREFIX}/current/bin/doorstep firstboot")


def test_a_cards_identity_comes_before_ssh_and_first_boot() -> None:
    s = settings("doorstep-identity.service")
    assert s["Type"] == ["oneshot"]
    assert {"ssh.service", "doorstep-firstboot.service"} <= set(s["Before"][0].split())
    assert s["ConditionPathExists"] == ["!/var/lib/doorstep-identity/done.json"]
    assert "doorstep-identity.service" in settings("doorstep-firstboot.service")["After"][0]
    assert "cloud-init.service" in settings("doorstep-firstboot.service")["After"][0]
    assert "doorstep-identity.service" not in install.ENABLED     # only in images


@needs_analyze
def test_an_updates_trial_drop_in_verifies(root: Path) -> None:
    from doorstep.provision import update
    dropin = root / update.DROPIN.lstrip("/")
    dropin.parent.mkdir(parents=True, exist_ok=True)
    dropin.write_text(update.trial_dropin(install.DEFAULT_PREFIX))
    try:
        done = analyze("verify", f"--root={root}", "/etc/systemd/system/doorstep-agent.service")
        assert (done.returncode, done.stdout + done.stderr) == (0, "")
        dropin.write_text(update.trial_dropin(install.DEFAULT_PREFIX).replace(
            "OnFailure=", "OnFailur="))                                # and it can fail
        done = analyze("verify", f"--root={root}", "/etc/systemd/system/doorstep-agent.service")
        assert "Unknown key 'OnFailur'" in done.stderr
    finally:
        dropin.unlink()


def test_the_fall_back_runs_the_previous_release_only_during_a_trial() -> None:
    from doorstep.provision import update
    s = settings("doorstep-rollback.service")
    assert s["ExecStart"][0].startswith(f"{install.DEFAULT_PREFIX}/previous/bin/doorstep "
                                        "update --rollback")
    assert f"{update.STATE}/{update.TRIAL}" in s["ConditionPathExists"]
    assert "doorstep-rollback.service" not in install.ENABLED
    text = update.trial_dropin(install.DEFAULT_PREFIX)
    assert "OnFailure=doorstep-rollback.service" in text
    assert f"StartLimitBurst={update.START_LIMIT_BURST}" in text
    assert "ExecStartPost=-+/opt/doorstep/current/bin/doorstep update --confirm" in text



@needs_analyze
def test_the_home_hub_is_rated_exposure_2_or_better_and_verifies(tmp_path: Path) -> None:
    unit = str(UNITS / "doorstep-home.service")
    done = analyze("security", "--offline=true", "--threshold=20", unit)
    found = re.search(r"Overall exposure level for doorstep-home\.service: (\d+\.\d)", done.stdout)
    assert found, done.stdout[-2000:] + done.stderr
    assert float(found.group(1)) <= 2.0 and done.returncode == 0
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "HOME": str(tmp_path)}
    done = analyze("--user", "verify", unit, env=env)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")
    # it binds loopback by default: no --listen in the unit, and no key that decrypts
    s = settings("doorstep-home.service")
    assert "--listen" not in s["ExecStart"][0] and "owner.key" not in s["ExecStart"][0]
