"""`doorstep install` into a tmp root, with a fake command runner standing in for useradd,
groupadd and systemctl."""

from __future__ import annotations

import argparse
import os
import stat
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from doorstep.core.errors import DoorstepError
from doorstep.provision import install, pyenv
from doorstep.provision.install import Installer

UNITS = Path(__file__).resolve().parents[2] / "systemd"
EXAMPLE = b'[device]\nid = "doorstep"\n'


class FakeSystem:
    """Plays useradd/groupadd (editing <root>/etc/passwd and group) and systemctl enable."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str]) -> None:
        argv = list(argv)
        self.calls.append(argv)
        etc = self.root / "etc"
        etc.mkdir(parents=True, exist_ok=True)
        if argv[0] == "groupadd":
            with open(etc / "group", "a") as f:
                f.write(f"{argv[-1]}:x:{990 + len(self.calls)}:\n")
        elif argv[0] == "useradd":
            with open(etc / "passwd", "a") as f:
                f.write("doorstep:x:4242:4242:Doorstep:/var/lib/doorstep:/usr/sbin/nologin\n")
            with open(etc / "group", "a") as f:
                f.write("doorstep:x:4242:\n")
        elif argv[:2] == ["systemctl", "enable"]:
            wants = etc / "systemd/system/multi-user.target.wants"
            wants.mkdir(parents=True, exist_ok=True)
            for unit in argv[2:]:
                (wants / unit).symlink_to(f"/etc/systemd/system/{unit}")


class LocalInstaller(Installer):
    """Behaves as if --root were "/" (so systemctl runs), while writing under a tmp dir."""

    @property
    def on_this_system(self) -> bool:
        return True


def make(root: Path, cls: type[Installer] = Installer, **kw: object) -> tuple[Installer,
                                                                            FakeSystem]:
    fake = FakeSystem(root)
    inst = cls(root=root, runner=fake, units_dir=UNITS, config_text=EXAMPLE,
               **kw)  # type: ignore[arg-type]
    return inst, fake


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_a_fresh_install_lays_everything_out(tmp_path: Path) -> None:
    inst, fake = make(tmp_path)
    assert inst.run() > 0
    assert [c[0] for c in fake.calls] == ["groupadd", "groupadd", "useradd"]
    useradd = fake.calls[2]
    assert "--system" in useradd and useradd[-1] == "doorstep"
    assert useradd[useradd.index("--root") + 1] == str(tmp_path.resolve())
    assert mode(tmp_path / "var/lib/doorstep") == 0o750
    assert mode(tmp_path / "etc/credstore/doorstep") == 0o700
    assert mode(tmp_path / "etc/doorstep") == 0o755
    if os.geteuid() == 0:
        st = (tmp_path / "var/lib/doorstep").stat()
        assert (st.st_uid, st.st_gid) == (4242, 4242)
    assert (tmp_path / "etc/doorstep/doorstep.toml").read_bytes() == EXAMPLE
    cred = tmp_path / "etc/credstore/doorstep/mqtt-password"
    assert cred.read_bytes() == b"" and mode(cred) == 0o600
    for unit in install.PI_UNITS:
        assert (tmp_path / "etc/systemd/system" / unit).read_bytes() == (UNITS / unit).read_bytes()
    assert not (tmp_path / "etc/systemd/system/doorstep-inbox.service").exists()
    assert any("systemctl --root" in line for line in inst.report)  # says how to enable


def test_a_second_run_changes_nothing_and_says_so(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    make(tmp_path)[0].run()
    again, fake = make(tmp_path)
    assert again.run() == 0
    assert fake.calls == []
    assert not any(line.startswith(("done", "would")) for line in again.report)


def test_an_existing_config_is_never_overwritten(tmp_path: Path) -> None:
    make(tmp_path)[0].run()
    (tmp_path / "etc/doorstep/doorstep.toml").write_text("# mine\n")
    (tmp_path / "etc/credstore/doorstep/mqtt-password").write_text("s3cret")
    make(tmp_path)[0].run()
    assert (tmp_path / "etc/doorstep/doorstep.toml").read_text() == "# mine\n"
    assert (tmp_path / "etc/credstore/doorstep/mqtt-password").read_text() == "s3cret"


def test_dry_run_prints_each_action_and_changes_nothing(tmp_path: Path) -> None:
    inst, fake = make(tmp_path, dry_run=True)
    n = inst.run()
    assert n > 0
    assert fake.calls == []
    assert list(tmp_path.iterdir()) == []
    would = [line for line in inst.report if line.startswith("would")]
    assert len(would) == n
    assert any("useradd" in line for line in would)
    assert any("/var/lib/doorstep (mode 0750" in line for line in would)
    assert any("doorstep-agent.service" in line for line in would)


def test_a_wrong_mode_is_repaired(tmp_path: Path) -> None:
    make(tmp_path)[0].run()
    os.chmod(tmp_path / "etc/credstore/doorstep", 0o755)
    inst, _ = make(tmp_path)
    assert inst.run() == 1
    assert mode(tmp_path / "etc/credstore/doorstep") == 0o700
    assert any("mode 0755 -> 0700" in line for line in inst.report)


def test_prefix_is_written_into_the_units(tmp_path: Path) -> None:
    make(tmp_path, prefix="/srv/doorstep")[0].run()
    agent = (tmp_path / "etc/systemd/system/doorstep-agent.service").read_text()
    assert "ExecStart=/srv/doorstep/current/bin/doorstep run" in agent
    assert "/opt/doorstep" not in agent


def test_on_this_system_it_reloads_and_enables_once(tmp_path: Path) -> None:
    (tmp_path / "run/systemd/system").mkdir(parents=True)   # booted with systemd
    inst, fake = make(tmp_path, LocalInstaller)
    inst.run()
    assert ["systemctl", "daemon-reload"] in fake.calls
    assert ["systemctl", "enable", *install.ENABLED] in fake.calls
    again, fake2 = make(tmp_path, LocalInstaller)
    assert again.run() == 0
    assert fake2.calls == []
    (tmp_path / "etc/systemd/system/doorstep-agent.service").write_text("[Unit]\n")
    third, fake3 = make(tmp_path, LocalInstaller)
    assert third.run() == 2  # the unit put back, then a reload
    assert fake3.calls == [["systemctl", "daemon-reload"]]


def test_the_cli_dry_run(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(install, "example_config", lambda: EXAMPLE)
    parser = argparse.ArgumentParser()
    install.register(parser.add_subparsers())
    args = parser.parse_args(["install", "--dry-run", "--root", str(tmp_path),
                              "--units", str(UNITS)])
    fake = FakeSystem(tmp_path)
    assert install.run(args, runner=fake) == 0
    out = capsys.readouterr().out
    assert "would create system user doorstep" in out
    assert "nothing was changed" in out
    assert fake.calls == [] and list(tmp_path.iterdir()) == []
    args = parser.parse_args(["install", "--root", str(tmp_path), "--units", str(UNITS)])
    assert install.run(args, runner=fake) == 0
    assert install.run(args, runner=fake) == 0
    assert "nothing to change: already installed" in capsys.readouterr().out


def test_a_failing_command_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(install, "example_config", lambda: EXAMPLE)
    parser = argparse.ArgumentParser()
    install.register(parser.add_subparsers())
    args = parser.parse_args(["install", "--root", str(tmp_path), "--units", str(UNITS)])

    def missing_tool(argv: Sequence[str]) -> None:  # the real runner, on a tool that is not there
        install.run_command(["doorstep-no-such-tool", *argv[1:]])

    assert install.run(args, runner=missing_tool) == 1
    assert "doorstep-no-such-tool: not found on this system" in capsys.readouterr().err


def test_in_a_chroot_units_are_enabled_without_a_reload(tmp_path: Path) -> None:
    # pi-gen's chroot: systemctl enable works on the files, daemon-reload has no systemd
    inst, fake = make(tmp_path, LocalInstaller)
    inst.run()
    assert ["systemctl", "daemon-reload"] not in fake.calls
    assert ["systemctl", "enable", *install.ENABLED] in fake.calls


# -- the venv and apt steps, with the venv's commands played by a recorder ----------------------
class FakeVenv:
    """Answers dpkg-query from a set of installed packages; records every other command."""

    def __init__(self, installed: set[str]) -> None:
        self.installed = installed
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str], timeout: float = 0) -> Any:
        argv = list(argv)
        self.calls.append(argv)
        if argv[0] == "dpkg-query":
            ok = argv[-1] in self.installed
            return subprocess.CompletedProcess(argv, 0 if ok else 1,
                                               "install ok installed" if ok else "", "")
        return subprocess.CompletedProcess(argv, 0, "", "")


WHEEL = Path("doorstep-9.8.7-py3-none-any.whl")


def test_dry_run_with_a_wheel_says_which_release_it_would_build(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/os-release").write_text('VERSION_CODENAME=bookworm\n')
    venv = FakeVenv({"python3-venv", "python3-numpy"})
    inst, _ = make(tmp_path, LocalInstaller, dry_run=True, wheel=WHEEL, run_venv=venv)
    inst.run()
    would = [line for line in inst.report if line.startswith("would")]
    assert any("build /opt/doorstep/releases/9.8.7" in w and "--system-site-packages" in w
               and "bookworm constraints" in w for w in would)
    assert any("point /opt/doorstep/current at releases/9.8.7" in w for w in would)
    assert [c[0] for c in venv.calls] == ["dpkg-query", "dpkg-query"]  # asked, built nothing
    assert not (tmp_path / "opt").exists()


def test_missing_debian_packages_come_from_apt_or_are_named(tmp_path: Path) -> None:
    venv = FakeVenv({"python3-venv"})
    inst, _ = make(tmp_path, LocalInstaller, wheel=WHEEL, run_venv=venv, apt=False,
                   target="pi")
    with pytest.raises(DoorstepError, match="python3-numpy python3-picamera2 python3-lgpio"):
        inst.run()
    inst, _ = make(tmp_path, LocalInstaller, dry_run=True, wheel=WHEEL, run_venv=venv,
                      target="pi")
    inst.run()
    assert any("install from apt: python3-numpy python3-picamera2 python3-lgpio" in line
               for line in inst.report)


def test_into_an_image_root_the_venv_is_left_to_the_image(tmp_path: Path) -> None:
    inst, _ = make(tmp_path, wheel=WHEEL, run_venv=FakeVenv(set(pyenv.APT_BASE)), apt=False)
    inst.run()
    assert any("inside the image" in line and "pi-gen" in line for line in inst.report)
    assert not (tmp_path / "opt/doorstep/releases").exists()


def test_raspberry_pi_os_is_recognised_by_its_apt_source(tmp_path: Path) -> None:
    assert install.detect_target(tmp_path) == "generic"
    (tmp_path / "etc/apt/sources.list.d").mkdir(parents=True)
    (tmp_path / "etc/apt/sources.list.d/raspi.sources").write_text("")
    assert install.detect_target(tmp_path) == "pi"


def test_constraints_hold_apts_numpy_and_picamera2s_av() -> None:
    shipped = pyenv.shipped_constraints("bookworm")
    assert "numpy<2" in shipped and "opencv-python-headless<4.12" in shipped
    assert "numpy>=2,<3" in pyenv.shipped_constraints("trixie")
    with pytest.raises(DoorstepError, match="bookworm, trixie"):
        pyenv.shipped_constraints("bullseye")
    plain = pyenv.SystemPython({"numpy": "1.24.2", "av": "10.0.0"}, picamera2=False)
    assert plain.pins() == ["numpy==1.24.2"]          # no picamera2: PyPI's av may be used
    pi = pyenv.SystemPython({"numpy": "1.24.2", "av": "12.3.0"}, picamera2=True)
    text = pyenv.constraints_text(shipped, pi)
    assert text.endswith("numpy==1.24.2\nav==12.3.0\n")
