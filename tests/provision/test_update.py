"""`doorstep update`: a bundle signed with the installer's key is verified and built beside the
running version, put on trial, and kept once it reaches READY or rolled back when systemd gives
up on it. Every refusal says why and changes nothing: a bad signature, a truncated bundle
(cut anywhere), an altered payload, an older version, a version that failed here before.

systemctl is played by a recorder (no systemd runs here); the releases in the refusal and
roll-back tests are directories with a release marker, the one in the slow test real venvs."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from doorstep.protocol.keys import SigningKey
from doorstep.provision import bundle, update
from doorstep.provision.release import COMPLETE, CURRENT, PREVIOUS, Layout
from doorstep.provision.update import Updater
from tests.provision.test_install import UNITS, FakeSystem
from tests.provision.test_venv import ThisMachine, needs_apt_numpy

PREFIX = "/opt/doorstep"


class Systemctl:
    """Records systemctl's calls; ``fail`` makes the named verb fail as a failed start does."""

    def __init__(self, fail: str = "") -> None:
        self.calls: list[list[str]] = []
        self.fail = fail

    def __call__(self, argv: Sequence[str]) -> None:
        self.calls.append(list(argv))
        if self.fail and self.fail in argv:
            raise update.Permanent(f"Job for doorstep-agent.service failed ({self.fail})")


def fake_wheel(where: Path, version: str) -> Path:
    """A zip with a wheel's name and METADATA: enough for every check before a venv is built."""
    path = where / f"doorstep-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"doorstep-{version}.dist-info/METADATA",
                    f"Metadata-Version: 2.1\nName: doorstep\nVersion: {version}\n"
                    "Requires-Dist: numpy>=1.24\nRequires-Dist: zstandard>=0.22\n")
    return path


def release_stub(root: Path, version: str) -> None:
    """A release directory as Layout.build leaves one (no venv inside: not needed here)."""
    rel = Layout(root / PREFIX.lstrip("/")).release(version)
    (rel / "bin").mkdir(parents=True)
    (rel / COMPLETE).write_text(json.dumps({"version": version}))


@pytest.fixture
def installed(tmp_path: Path) -> tuple[Path, Layout]:
    """A doorbell running 0.1.0."""
    root = tmp_path / "root"
    release_stub(root, "0.1.0")
    layout = Layout(root / PREFIX.lstrip("/"))
    layout.point(CURRENT, "0.1.0")
    return root, layout


def updater(root: Path, *keys: SigningKey, runner: Systemctl | None = None) -> Updater:
    return Updater(trusted=[k.public_key for k in keys], runner=runner or Systemctl(),
                   root=root, prefix=PREFIX)


# -- refusals -------------------------------------------------------------------------------------
def refused(up: Updater, path: Path, match: str, layout: Layout) -> None:
    with pytest.raises(bundle.BundleRefused, match=match):
        up.install(path)
    assert layout.version_of(CURRENT) == "0.1.0"
    assert layout.installed() == ["0.1.0"]
    assert not (up.at(update.STATE) / "incoming").exists()
    assert not up.at(update.DROPIN).exists()


def test_a_bundle_signed_by_another_key_is_refused(tmp_path: Path,
                                                   installed: tuple[Path, Layout]) -> None:
    root, layout = installed
    installer, stranger = SigningKey.generate(), SigningKey.generate()
    path = tmp_path / "u.bundle"
    bundle.make(path, key=stranger, wheel=fake_wheel(tmp_path, "0.2.0"))
    refused(updater(root, installer), path, "bad signature: no installer key", layout)
    refused(updater(root), path, "no installer keys to check it against", layout)
    (tmp_path / "notes.txt").write_text("hello")
    refused(updater(root, installer), tmp_path / "notes.txt", "not a Doorstep bundle", layout)


def test_an_altered_header_or_payload_is_refused(tmp_path: Path,
                                                 installed: tuple[Path, Layout]) -> None:
    root, layout = installed
    key = SigningKey.generate()
    path = tmp_path / "u.bundle"
    header = bundle.make(path, key=key, wheel=fake_wheel(tmp_path, "0.2.0"), notes="fixes")
    good = path.read_bytes()
    start = good.index(b'"notes":"fixes"')
    path.write_bytes(good[:start + 10] + b"X" + good[start + 11:])       # the header
    refused(updater(root, key), path, "bad signature", layout)
    path.write_bytes(good[:-100] + bytes([good[-100] ^ 1]) + good[-99:])  # the payload
    refused(updater(root, key), path, "does not match its signed SHA-256", layout)
    assert header.version == "0.2.0"


@pytest.mark.parametrize(("cut", "where"), [
    (5, "inside the magic"), (20, "inside the header length"), (60, "inside the header"),
    (-10, "the payload is"), ("signature", "inside the signature")])
def test_a_truncated_bundle_is_refused(tmp_path: Path, installed: tuple[Path, Layout],
                                       cut: int | str, where: str) -> None:
    root, layout = installed
    key = SigningKey.generate()
    path = tmp_path / "u.bundle"
    bundle.make(path, key=key, wheel=fake_wheel(tmp_path, "0.2.0"))
    whole = path.read_bytes()
    if cut == "signature":
        length = int.from_bytes(whole[len(bundle.MAGIC):len(bundle.MAGIC) + 8], "big")
        cut = len(bundle.MAGIC) + 8 + length + 30
    assert isinstance(cut, int)
    path.write_bytes(whole[:cut])
    refused(updater(root, key), path, f"truncated: .*{where}", layout)
    path.write_bytes(whole + b"\0")
    refused(updater(root, key), path, "1 bytes follow the signed payload", layout)


def test_an_older_version_is_refused_and_the_same_one_changes_nothing(
        tmp_path: Path, installed: tuple[Path, Layout]) -> None:
    root, layout = installed
    key = SigningKey.generate()
    older = tmp_path / "old.bundle"
    bundle.make(older, key=key, wheel=fake_wheel(tmp_path, "0.0.9"))
    refused(updater(root, key), older, "0.0.9 is older than the running 0.1.0: refusing a "
            "downgrade", layout)
    same = tmp_path / "same.bundle"
    bundle.make(same, key=key, wheel=fake_wheel(tmp_path, "0.1.0"))
    up = updater(root, key)
    assert up.install(same).same
    assert up.report == ["doorstep 0.1.0 is already running: nothing would change"]
    assert layout.installed() == ["0.1.0"]


def test_the_command_says_refused_and_why(tmp_path: Path, installed: tuple[Path, Layout],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    root, _ = installed
    key = SigningKey.generate()
    config = tmp_path / "doorstep.toml"
    config.write_text(f'[update]\nkeys = ["{key.public_text()}"]\n')
    path = tmp_path / "u.bundle"
    bundle.make(path, key=SigningKey.generate(), wheel=fake_wheel(tmp_path, "0.2.0"))
    parser = argparse.ArgumentParser()
    update.register(parser.add_subparsers())
    args = parser.parse_args(["update", str(path), "--config", str(config), "--prefix",
                              str(root / PREFIX.lstrip("/")), "--state",
                              str(tmp_path / "state")])
    assert update.run_update(args, runner=Systemctl()) == 1
    assert "doorstep update: refused: bad signature" in capsys.readouterr().err


# -- the trial ------------------------------------------------------------------------------------
def on_trial(root: Path, layout: Layout) -> Updater:
    """0.2.0 installed beside 0.1.0 and on trial, as install() leaves it."""
    release_stub(root, "0.2.0")
    up = updater(root, SigningKey.generate())
    up._start_trial("0.2.0", "0.1.0")
    return up


def test_a_version_that_never_gets_ready_is_rolled_back(
        tmp_path: Path, installed: tuple[Path, Layout]) -> None:
    root, layout = installed
    up = on_trial(root, layout)
    assert layout.version_of(CURRENT) == "0.2.0" and layout.version_of(PREVIOUS) == "0.1.0"
    assert "OnFailure=doorstep-rollback.service" in up.at(update.DROPIN).read_text()
    # systemd gave up (start limit): doorstep-rollback.service runs the previous release's
    fallback = updater(root, runner=Systemctl())
    assert fallback.rollback()
    assert layout.version_of(CURRENT) == "0.1.0"
    assert not up.at(update.DROPIN).exists() and fallback._trial() is None
    assert "0.2.0" in fallback._failed()
    calls = fallback.runner.calls  # type: ignore[attr-defined]
    assert ["systemctl", "start", "--no-block", update.AGENT] in calls
    assert ["systemctl", "reset-failed", update.AGENT] in calls
    assert fallback.report[-1].startswith("rolled back from 0.2.0 to 0.1.0")
    assert not fallback.rollback()                      # nothing on trial any more
    # the same version again is refused, with the reason, unless --force
    key = SigningKey.generate()
    again = tmp_path / "again.bundle"
    bundle.make(again, key=key, wheel=fake_wheel(tmp_path, "0.2.0"))
    with pytest.raises(bundle.BundleRefused, match=r"0\.2\.0 failed its trial here on .* "
                       r"did not reach READY within its start limit"):
        updater(root, key).install(again)
    with update.working_dir() as tmp:
        assert not updater(root, key).plan(again, Path(tmp), force=True).same


def test_a_version_that_reaches_ready_is_kept_and_old_releases_go(
        installed: tuple[Path, Layout]) -> None:
    root, layout = installed
    release_stub(root, "0.0.5")                          # an older release, still on disk
    up = on_trial(root, layout)
    confirm = updater(root)                               # ExecStartPost's run
    assert confirm.confirm()
    assert not up.at(update.DROPIN).exists() and confirm._trial() is None
    assert layout.installed() == ["0.1.0", "0.2.0"]      # current and previous kept
    assert not confirm.confirm()                          # every later start: nothing to do


def test_a_failed_start_is_left_to_systemd(installed: tuple[Path, Layout]) -> None:
    root, _ = installed
    release_stub(root, "0.2.0")
    up = updater(root, runner=Systemctl(fail="restart"))
    up._start_trial("0.2.0", "0.1.0")
    assert "falls back to 0.1.0 after 3 failed starts" in up.report[-1]
    assert up._trial() is not None                        # still on trial: OnFailure decides


# -- end to end, with real venvs ------------------------------------------------------------------
@pytest.mark.slow
@needs_apt_numpy
def test_an_update_is_built_beside_the_running_version(
        tmp_path: Path, doorstep_wheel: Path, newer_wheel: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    shutil.copy("/etc/os-release", root / "etc/os-release")
    (root / "etc/passwd").write_text("doorstep:x:4242:4242::/var/lib/doorstep:/bin/false\n")
    (root / "etc/group").write_text("doorstep:x:4242:\nvideo:x:44:\ngpio:x:997:\n")
    ThisMachine(root=root, runner=FakeSystem(root), units_dir=UNITS, config_text=b"",
                wheel=doorstep_wheel, target="generic", apt=False).run()
    layout = Layout(root / PREFIX.lstrip("/"))
    running = layout.version_of(CURRENT)
    key = SigningKey.generate()
    path = tmp_path / "doorstep-99.bundle"
    bundle.make(path, key=key, wheel=newer_wheel, notes="the night-mode release")

    checker = updater(root, key)
    with update.working_dir() as tmp:
        plan = checker.plan(path, Path(tmp))
    assert plan.lines()[0].startswith(f"doorstep {running} -> 99.0.0")
    assert "  notes: the night-mode release" in plan.lines()
    assert layout.installed() == [running]                      # --check changes nothing

    systemctl = Systemctl()
    up = updater(root, key, runner=systemctl)
    up.install(path)
    assert layout.installed() == [running, "99.0.0"]
    assert layout.version_of(CURRENT) == "99.0.0" and layout.version_of(PREVIOUS) == running
    done = subprocess.run([str(root / "opt/doorstep/current/bin/doorstep"), "--version"],
                          capture_output=True, text=True)
    assert done.stdout.strip() == "doorstep 99.0.0"
    assert up.at(update.DROPIN).exists()
    assert systemctl.calls == [["systemctl", "daemon-reload"],
                               ["systemctl", "reset-failed", update.AGENT],
                               ["systemctl", "restart", update.AGENT]]
    # the new release laid out its own units (under the same root)
    assert (root / "etc/systemd/system/doorstep-rollback.service").exists()
    assert os.readlink(root / "opt/doorstep/current") == "releases/99.0.0"
    assert updater(root).confirm() and not up.at(update.DROPIN).exists()
