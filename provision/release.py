"""Releases: one venv per installed version under <prefix>/releases/<version>, and the links
the units run through: <prefix>/current (what runs) and <prefix>/previous (what ran before,
for the fall-back). `doorstep install` builds the first release, `doorstep update` the next.

A venv is not relocatable (its scripts name their interpreter by absolute path), so a release
is built where it will stay, and a marker written last says it was built whole; a directory
without the marker is a failed attempt, removed before the next.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from doorstep.core.errors import Permanent
from doorstep.core.fsutil import fsync_dir, write_atomic
from doorstep.provision import pyenv

log = logging.getLogger(__name__)

RELEASES = "releases"
CURRENT = "current"
PREVIOUS = "previous"
COMPLETE = ".doorstep-release"        # written last into a release built whole
CONSTRAINTS = "doorstep-constraints.txt"  # the constraints it was built with, for the record

_WHEEL = re.compile(r"^doorstep-([0-9][0-9A-Za-z.+!]*)-py3-none-any\.whl$")
_VERSION = re.compile(r"^(\d+(?:\.\d+)*)(?:(a|b|rc)(\d+))?$")


def wheel_version(wheel: Path) -> str:
    """The version in a Doorstep wheel's file name (doorstep-0.2.0-py3-none-any.whl)."""
    found = _WHEEL.match(wheel.name)
    if not found:
        raise Permanent(f"{wheel}: not a Doorstep wheel (doorstep-<version>-py3-none-any.whl)")
    return found.group(1)


def version_key(version: str) -> tuple[tuple[int, ...], tuple[int, int]]:
    """Order versions as PEP 440 does for the forms we release: 1.2.3, 1.2.3a1, b1, rc1.
    Anything else is refused rather than guessed at."""
    found = _VERSION.match(version)
    if not found:
        raise Permanent(f"version {version!r} is not of the form 1.2.3 (or 1.2.3rc1)")
    release = tuple(int(p) for p in found.group(1).split("."))
    while len(release) > 1 and release[-1] == 0:
        release = release[:-1]
    pre = (("a", "b", "rc").index(found.group(2)), int(found.group(3))) if found.group(2) \
        else (3, 0)
    return release, pre


def running_wheel() -> Path | None:
    """The wheel this code is running from (``PYTHONPATH=doorstep-*.whl python3 -m doorstep
    install``), or None when it runs from an installed package or a checkout."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if parent.suffix == ".whl" and parent.is_file():
            return parent
    return None


@dataclass(frozen=True)
class Layout:
    """The release directories under ``prefix`` (a path on this machine: the image root's
    prefix when building an image)."""

    prefix: Path

    def release(self, version: str) -> Path:
        return self.prefix / RELEASES / version

    def link(self, name: str) -> Path:
        return self.prefix / name

    def version_of(self, name: str) -> str | None:
        """The version ``current`` or ``previous`` points at, or None."""
        try:
            target = os.readlink(self.link(name))
        except OSError:
            return None
        return Path(target).name

    def is_complete(self, version: str) -> bool:
        marker = self.release(version) / COMPLETE
        try:
            return json.loads(marker.read_text()).get("version") == version
        except (OSError, ValueError, AttributeError):
            return False

    def installed(self) -> list[str]:
        """Every release built whole, oldest first."""
        root = self.prefix / RELEASES
        if not root.is_dir():
            return []
        found = [p.name for p in root.iterdir() if p.is_dir() and self.is_complete(p.name)]
        return sorted(found, key=_sort_key)

    def point(self, name: str, version: str) -> None:
        """Atomically make <prefix>/<name> point at releases/<version> (a relative link, so an
        image root's links are right once booted)."""
        link = self.link(name)
        tmp = link.with_name(f".{name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        os.symlink(f"{RELEASES}/{version}", tmp)
        os.replace(tmp, link)
        fsync_dir(link.parent)

    def build(self, version: str, requirements: Sequence[str], *, constraints: str,
              python: str = pyenv.SYSTEM_PYTHON, find_links: Sequence[Path] = (),
              no_index: bool = False, need_picamera2: bool = False,
              system: pyenv.SystemPython | None = None, run: pyenv.Run = pyenv._run) -> None:
        """Build releases/<version>: a venv over ``python`` that sees apt's packages, pip
        install of ``requirements`` under ``constraints``, then every module the doorbell
        needs imported by the venv itself. Raises Permanent naming what went wrong; the
        half-built directory is then removed."""
        target = self.release(version)
        if target.exists():
            log.info("removing %s, left by an attempt that did not finish", target)
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            pyenv.create_venv(target, python=python, run=run)
            write_atomic(target / CONSTRAINTS, constraints.encode("utf-8"), mode=0o644)
            pyenv.pip_install(target, requirements, constraints=target / CONSTRAINTS,
                              find_links=find_links, no_index=no_index, run=run)
            found = pyenv.probe(target / "bin" / "python", run=run)
            wrong = pyenv.problems(found, system or pyenv.system_python(python, run=run),
                                   need_picamera2=need_picamera2)
            if wrong:
                raise Permanent(f"the venv {target} was built, but:\n"
                                + "\n".join(f"  - {w}" for w in wrong))
            have = pyenv.installed_version(target, run=run)
            if have != version:
                raise Permanent(f"the venv {target} holds doorstep {have}, not {version}")
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
        modules = {m.name: m.describe() for m in found}
        write_atomic(target / COMPLETE, json.dumps({"version": version, "modules": modules},
                                                   indent=1).encode("utf-8"), mode=0o644)


def _sort_key(version: str) -> tuple[int, tuple[tuple[int, ...], tuple[int, int]]]:
    try:
        return 1, version_key(version)
    except Permanent:
        return 0, ((), (0, 0))
