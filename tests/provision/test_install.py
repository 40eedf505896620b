"""`doorstep install` into a tmp root, with a fake command runner standing in for useradd,
groupadd and systemctl."""

from __future__ import annotations

import argparse
import os
import stat
from collections.abc import Sequence
from pathlib import Path

import pytest

from doorstep.provision import install
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
    assert "ExecStart=/srv/doorstep/venv/bin/doorstep run" in agent
    assert "/opt/doorstep" not in agent


def test_on_this_system_it_reloads_and_enables_once(tmp_path: Path) -> None:
    inst, fake = make(tmp_path, LocalInstaller)
    inst.run()
    assert ["systemctl", "daemon-reload"] in fake.calls
    assert ["systemctl", "enable", *install.PI_UNITS] in fake.calls
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
