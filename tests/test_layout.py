"""The package map of docs/design.md, enforced: every import inside the `doorstep` package goes
down the map, never up or sideways, and the wheel installs one top-level name."""

from __future__ import annotations

import ast
import configparser
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Each package and the packages it may import (besides itself, and the version in
# doorstep/__init__.py). This is the map drawn in docs/design.md, bottom to top.
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "protocol": {"core"},
    "config": {"core", "protocol"},
    "capture": {"core", "config"},
    "motion": {"core", "config", "capture"},
    "uplink": {"core", "protocol", "config"},
    "owner": {"core", "protocol"},
    "provision": {"core", "protocol", "config"},
    "agent": {"core", "protocol", "config", "capture", "motion", "uplink"},
    # the installer's self-check: it opens what the agent opens, and reads the venv as
    # provision/ built it
    "doctor": {"core", "protocol", "config", "capture", "uplink", "agent", "provision"},
}
TOP = "top"   # doorstep/*.py (the command line, the demo) and bench/: may import anything


def package_dirs() -> dict[str, Path]:
    """Each installed package (doorstep.X) and its folder, from setup.cfg's package_dir."""
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    dirs: dict[str, Path] = {}
    for line in cfg["options"]["package_dir"].strip().splitlines():
        name, _, folder = (part.strip() for part in line.partition("="))
        dirs[name] = REPO / folder
    return dirs


def layer(package: str) -> str:
    """``doorstep.agent.run`` -> ``agent``; the root package and bench are the top."""
    parts = package.split(".")
    if len(parts) < 2 or parts[1] not in ALLOWED:
        return TOP
    return parts[1]


def imports_of(path: Path, module: str) -> list[tuple[int, str]]:
    """Every doorstep module ``path`` imports, at any depth (lazy imports count too)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(module.split(".")[:-node.level] + ([base] if base else []))
            found += [(node.lineno, f"{base}.{a.name}" if base == "doorstep" else base)
                      for a in node.names]
    return [(line, name) for line, name in found if name.split(".")[0] == "doorstep"]


def all_modules() -> list[tuple[str, Path]]:
    modules = []
    for package, folder in package_dirs().items():
        for path in sorted(folder.glob("*.py")):
            stem = "" if path.stem == "__init__" else f".{path.stem}"
            modules.append((package + stem, path))
    return modules


def test_every_import_goes_down_the_package_map() -> None:
    wrong = []
    for module, path in all_modules():
        own = layer(module)
        if own == TOP:
            continue
        for line, name in imports_of(path, module):
            target = layer(name)
            if name in ("doorstep", "doorstep.__version__") or target == own:
                continue
            if target == TOP or target not in ALLOWED[own]:
                wrong.append(f"{path.relative_to(REPO)}:{line}: {own} imports {name}")
    assert not wrong, "imports against docs/design.md's package map:\n" + "\n".join(wrong)


def test_the_map_itself_has_no_cycle() -> None:
    seen: dict[str, int] = {}

    def depth(p: str, trail: tuple[str, ...] = ()) -> int:
        assert p not in trail, f"cycle: {' -> '.join((*trail, p))}"
        if p not in seen:
            seen[p] = 1 + max((depth(q, (*trail, p)) for q in ALLOWED[p]), default=0)
        return seen[p]

    for p in ALLOWED:
        depth(p)


def test_the_check_catches_an_upward_import(tmp_path: Path) -> None:
    # the checker itself must be able to fail: an upward and a sideways import are both found
    bad = tmp_path / "bad.py"
    bad.write_text("from doorstep.agent.run import Agent\nimport doorstep.owner.open\n")
    found = [layer(name) for _, name in imports_of(bad, "doorstep.capture.bad")]
    assert found == ["agent", "owner"]
    assert not {"agent", "owner"} & ALLOWED["capture"]


def test_every_package_folder_is_installed_and_mapped() -> None:
    dirs = package_dirs()
    assert set(dirs) == {"doorstep"} | {f"doorstep.{p}" for p in ALLOWED} | {
        "doorstep.bench", "doorstep.owner.hub"}
    for folder in dirs.values():
        assert (folder / "__init__.py").is_file(), folder


@pytest.mark.parametrize("line", ["import agent", "from capture.frames import Frame",
                                  "import uplink.outbox", "from config import load_config",
                                  "from owner import keys", "import core.errors"])
def test_ruff_bans_the_bare_names(tmp_path: Path, line: str) -> None:
    # ruff run with the project's own settings on a file inside the repository's tree
    probe = REPO / "tests" / f"_probe_{tmp_path.name}.py"
    probe.write_text(f"{line}\n\nprint({line.split()[1].split('.')[0]!r})\n")
    try:
        done = subprocess.run([str(Path(sys.executable).with_name("ruff")), "check",
                               "--no-cache", "--select", "TID251", str(probe)],
                              cwd=REPO, capture_output=True, text=True)
    finally:
        probe.unlink()
    assert done.returncode == 1, done.stdout + done.stderr
    assert "TID251" in done.stdout and "installs under the one name doorstep" in done.stdout


def test_one_top_level_package_in_the_wheel(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                           "-q", "-w", str(tmp_path), str(REPO)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("doorstep-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        tops = {name.split("/")[0] for name in zf.namelist()
                if not name.split("/")[0].endswith((".dist-info", ".data"))}
        assert "doorstep/agent/service.py" in zf.namelist()
        assert "doorstep/config/example.toml" in zf.namelist()
    assert tops == {"doorstep"}


def test_cli_runs_beside_a_config_py(tmp_path: Path) -> None:
    # a config.py (or agent.py, uplink/...) in the working directory must not shadow ours
    (tmp_path / "config.py").write_text("raise SystemExit('the wrong config module')\n")
    (tmp_path / "uplink").mkdir()
    (tmp_path / "uplink" / "__init__.py").write_text("raise SystemExit('the wrong uplink')\n")
    example = REPO / "config" / "example.toml"
    done = subprocess.run([sys.executable, "-m", "doorstep.cli", "check-config", str(example)],
                          cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "wrong" not in done.stdout + done.stderr
