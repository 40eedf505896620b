"""`doorstep install` builds its venv for real on this Debian 12 machine: over /usr/bin/python3
with apt's numpy (python3-numpy 1.24) and an apt extension compiled against it
(python3-bottleneck), pip-installing Doorstep's wheel with the shipped Bookworm constraints.
The extension must still import in that venv, and numpy must still be apt's.

pip fetches Doorstep's dependencies by name, as it does on a Pi (from its cache after the
first run). Without the constraints, the same venv gets numpy 2 and the extension breaks: the
second test shows that failure, so the first one cannot pass by accident."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from doorstep.provision import pyenv
from doorstep.provision.install import Installer
from doorstep.provision.release import CURRENT, Layout
from tests.provision.test_install import UNITS, FakeSystem

SYSTEM = Path(pyenv.SYSTEM_PYTHON)
APT_EXTENSION = "bottleneck"        # python3-bottleneck: C code built against apt's numpy


def _system_has(module: str) -> bool:
    done = subprocess.run([str(SYSTEM), "-c", f"import {module}; print({module}.__file__)"],
                          capture_output=True, text=True, check=False)
    return done.returncode == 0 and done.stdout.startswith(pyenv.APT_DIST_PACKAGES)


needs_apt_numpy = pytest.mark.skipif(
    not SYSTEM.exists() or not _system_has("numpy") or not _system_has(APT_EXTENSION),
    reason="needs Debian's /usr/bin/python3 with apt's numpy and an extension built against "
           "it: apt-get install python3-numpy python3-bottleneck (make setup does)")

# Run in the venv: the apt extension and everything Doorstep imports, each doing real work.
USE_THEM = """
import json, numpy, bottleneck, cv2, av
a = numpy.arange(12, dtype=numpy.float64).reshape(3, 4)
assert bottleneck.nanmean(a) == 5.5
assert cv2.resize(numpy.zeros((8, 8), numpy.uint8), (4, 4)).shape == (4, 4)
frame = av.VideoFrame.from_ndarray(numpy.zeros((48, 64), numpy.uint8), format="gray")
assert frame.reformat(format="yuv420p").to_ndarray().shape == (72, 64)
print(json.dumps({"numpy": [numpy.__version__, numpy.__file__]}))
"""


class ThisMachine(Installer):
    """`doorstep install` on this machine (the real apt check, venv and pip), with the system
    user and systemctl played by FakeSystem and every path under a tmp root."""

    @property
    def on_this_system(self) -> bool:
        return True


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.slow
@needs_apt_numpy
def test_install_builds_a_venv_that_keeps_apts_numpy_and_its_extensions(
        tmp_path: Path, doorstep_wheel: Path) -> None:
    (tmp_path / "etc").mkdir()
    shutil.copy("/etc/os-release", tmp_path / "etc/os-release")      # bookworm
    fake = FakeSystem(tmp_path)
    inst = ThisMachine(root=tmp_path, runner=fake, units_dir=UNITS, config_text=b"",
                       wheel=doorstep_wheel, target="generic", apt=False)
    inst.run()
    assert not [c for c in fake.calls if c[0] in ("apt-get", "env")]  # apt had it all

    layout = Layout(tmp_path / "opt/doorstep")
    version = layout.version_of(CURRENT)
    assert version == doorstep_wheel.name.split("-")[1]
    venv = layout.release(version)
    python = venv / "bin" / "python"
    assert (venv / "pyvenv.cfg").read_text().count("include-system-site-packages = true") == 1

    used = _run([str(python), "-c", USE_THEM])
    assert used.returncode == 0, used.stderr
    apt_numpy = _run([str(SYSTEM), "-c", "import numpy; print(numpy.__version__)"]).stdout
    assert f'"{apt_numpy.strip()}", "{pyenv.APT_DIST_PACKAGES}/numpy/' in used.stdout
    assert f"numpy=={apt_numpy.strip()}" in (venv / "doorstep-constraints.txt").read_text()

    found = {m.name: m for m in pyenv.probe(python)}
    assert found["numpy"].from_apt and not found["cv2"].from_apt and found["av"].ok
    done = _run([str(tmp_path / "opt/doorstep/current/bin/doorstep"), "--version"])
    assert done.stdout.strip() == f"doorstep {version}"

    again = ThisMachine(root=tmp_path, runner=FakeSystem(tmp_path), units_dir=UNITS,
                        config_text=b"", wheel=doorstep_wheel, target="generic", apt=False)
    assert again.run() == 0                # the release is there whole: nothing to do


@pytest.mark.slow
@needs_apt_numpy
def test_without_the_constraints_pip_breaks_apts_extension(tmp_path: Path) -> None:
    # The failure, reproduced: a venv over the same interpreter where pip was free to
    # install numpy 2. The probe and its report must see it.
    venv = tmp_path / "unconstrained"
    pyenv.create_venv(venv)
    no_pins = tmp_path / "none.txt"
    no_pins.write_text("")
    pyenv.pip_install(venv, ["numpy>=2"], constraints=no_pins)
    broken = _run([str(venv / "bin/python"), "-c", f"import {APT_EXTENSION}"])
    assert broken.returncode != 0
    assert "numpy" in broken.stderr
    found = pyenv.probe(venv / "bin/python", ["numpy"])
    wrong = pyenv.problems(found, pyenv.system_python(), need_picamera2=False)
    assert any("shadows apt's numpy" in str(w) for w in wrong)


@pytest.mark.slow
def test_the_installer_runs_from_the_bare_wheel_on_the_system_interpreter(
        tmp_path: Path, doorstep_wheel: Path) -> None:
    # Before any venv exists there is only apt's python3 (no paho, no cryptography): the
    # installer must run from the wheel itself, and find the unit files inside it.
    root = tmp_path / "root"
    root.mkdir()
    done = subprocess.run([str(SYSTEM), "-s", "-m", "doorstep", "install", "--dry-run",
                           "--root", str(root)], capture_output=True, text=True, check=False,
                          env={"PYTHONPATH": str(doorstep_wheel), "PATH": "/usr/bin:/bin"},
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "would write /etc/systemd/system/doorstep-agent.service" in done.stdout
    assert f"--wheel {doorstep_wheel.name}` inside the image" in done.stdout
    assert list(root.iterdir()) == []
