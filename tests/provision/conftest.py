"""Doorstep's own wheel for the installer's tests, built once per session from this working
tree, and the same tree built as a newer version (for updates)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def build_wheel(source: Path, out: Path) -> Path:
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                           str(out), str(source)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    (wheel,) = out.glob("doorstep-*.whl")
    return wheel


@pytest.fixture(scope="session")
def doorstep_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(REPO, tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="session")
def newer_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This tree with its version raised to 99.0.0: a real, installable newer Doorstep."""
    tree = tmp_path_factory.mktemp("newer") / "doorstep"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, tree / name)
    init = tree / "doorstep" / "__init__.py"
    init.write_text(re.sub(r'__version__ = "[^"]+"', '__version__ = "99.0.0"', init.read_text()))
    return build_wheel(tree, tmp_path_factory.mktemp("newer-wheel"))
