"""The `doorstep` command line: every command is offered, and running one loads only its own
module (the agent does not carry the owner's or the bench's code)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from doorstep.cli import COMMANDS, build_parser


def test_help_lists_every_command() -> None:
    text = build_parser([]).format_help()
    for name in COMMANDS:
        assert name in text


def test_an_unknown_command_is_reported_with_the_choices() -> None:
    done = subprocess.run([sys.executable, "-m", "doorstep.cli", "ring-the-bell"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert "invalid choice: 'ring-the-bell'" in done.stderr and "firstboot" in done.stderr


def test_run_loads_only_the_agent() -> None:
    code = ("import sys; from doorstep.cli import build_parser; "
            "args = build_parser(['-v', 'run', '--config', 'x.toml'])"
            ".parse_args(['-v', 'run', '--config', 'x.toml']); "
            "print(args.func.__module__); "
            "print(sorted(m for m in sys.modules if m.split('.')[:2] in "
            "(['doorstep', 'owner'], ['doorstep', 'bench'], ['doorstep', 'provision']) "
            "or m in ('doorstep.motion.cli', 'doorstep.demo', 'doorstep.config.check')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    module, loaded = done.stdout.splitlines()
    assert module == "doorstep.agent.cli"
    assert loaded == "[]"



def test_run_with_the_button_on_a_machine_without_gpio_says_how_to_fix_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default config ([button] enabled = true) on a laptop: a clear error naming the key
    and the fix, not a gpiozero traceback."""
    from gpiozero import Device

    from doorstep.core.gpio import gpio_problem
    from tests.faults.harness import agent_toml, make_party

    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)
    monkeypatch.setattr(Device, "pin_factory", None)
    if gpio_problem() is None:
        pytest.skip("this machine has GPIO")
    config = tmp_path / "doorstep.toml"
    config.write_text(agent_toml(make_party(tmp_path / "home"), 1, button=True))
    done = subprocess.run([sys.executable, "-m", "doorstep.cli", "run", "--config", str(config)],
                          capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "button.enabled = true, but this machine has no GPIO" in done.stderr
    assert "button.enabled = false" in done.stderr
    assert "GPIOZERO_PIN_FACTORY=mock" in done.stderr
