"""`doorstep install`: lays Doorstep out on a Pi (or into an image root): the Debian packages it
takes from apt, its venv (a release under <prefix>/releases/<version>, with <prefix>/current
pointing at it), the system user, its directories, the config, the credential store and the
systemd units. Idempotent; --dry-run only prints what it would do. Commands (apt-get, useradd,
systemctl) go through an injected runner, the venv's through pyenv's."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import shlex
import subprocess
import sys
import typing
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.resources.abc import Traversable
from pathlib import Path

from doorstep.core.errors import DoorstepError, Permanent
from doorstep.core.fsutil import write_atomic
from doorstep.provision import identity, pyenv
from doorstep.provision.release import CURRENT, PREVIOUS, Layout, running_wheel, wheel_version

log = logging.getLogger(__name__)

Runner = Callable[[Sequence[str]], None]

USER = "doorstep"
ETC_DIR = "/etc/doorstep"
DATA_DIR = "/var/lib/doorstep"
CREDSTORE = "/etc/credstore"
CREDENTIALS_DIR = "/etc/credstore/doorstep"
UNIT_DIR = "/etc/systemd/system"
DEFAULT_PREFIX = "/opt/doorstep"
# Installed on the doorbell; doorstep-inbox.service is for the owner's machine.
PI_UNITS = ("doorstep-agent.service", "doorstep-firstboot.service",
            "doorstep-identity.service", "doorstep-rollback.service")
ENABLED = ("doorstep-agent.service", "doorstep-firstboot.service")
IMAGE_ENABLED = ("doorstep-identity.service",)   # only in an image: a card's own host keys
# doorstep-rollback.service is never enabled: only an update's trial (OnFailure=) starts it
SUPPLEMENTARY_GROUPS = ("video", "gpio")
WANTS = "multi-user.target.wants"


def run_command(argv: Sequence[str]) -> None:
    """The real runner: raise Permanent naming the command if it fails."""
    try:
        subprocess.run(list(argv), check=True, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise Permanent(f"{argv[0]}: not found on this system") from exc
    except subprocess.CalledProcessError as exc:
        raise Permanent(f"`{' '.join(argv)}` failed ({exc.returncode}): "
                        f"{(exc.stderr or '').strip()[:300]}") from exc


def find_units_dir() -> Traversable:
    """Where the unit files ship: beside the packages in a checkout or editable install, in
    <venv>/share/doorstep/systemd when installed from a wheel, or inside the wheel this runs
    from (``python3 -m doorstep install`` with the wheel on PYTHONPATH)."""
    candidates: list[Traversable] = [Path(__file__).resolve().parents[1] / "systemd",
                                     Path(sys.prefix) / "share" / "doorstep" / "systemd"]
    wheel = running_wheel()
    if wheel is not None:
        data = f"doorstep-{wheel_version(wheel)}.data/data/share/doorstep/systemd/"
        candidates.append(zipfile.Path(wheel, data))
    for c in candidates:
        if (c / PI_UNITS[0]).is_file():
            return c
    raise Permanent("cannot find the systemd unit files; looked in "
                    + ", ".join(str(c) for c in candidates) + " (use --units DIR)")


def example_config() -> bytes:
    """config/example.toml, read without importing doorstep.config (which needs paho): the
    installer also runs from the bare wheel, on an interpreter with nothing else installed."""
    spec = importlib.util.find_spec("doorstep.config")
    places = spec.submodule_search_locations if spec is not None else None
    if spec is None or spec.loader is None or not places:
        raise Permanent("the package doorstep.config is missing from this installation")
    path = os.path.join(next(iter(places)), "example.toml")
    try:
        return typing.cast(bytes, spec.loader.get_data(path))  # type: ignore[attr-defined]
    except OSError as exc:
        raise Permanent(f"the example config {path} is missing from this installation") from exc


def _ids_from(file: Path, name: str) -> int | None:
    """The numeric id of ``name`` in an /etc/passwd- or /etc/group-style file."""
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return None
    for line in lines:
        parts = line.split(":")
        if len(parts) > 2 and parts[0] == name:
            return int(parts[2])
    return None


@dataclass
class Installer:
    """One run of the installer. ``report`` collects the lines printed to the user."""

    root: Path = Path("/")
    prefix: str = DEFAULT_PREFIX
    dry_run: bool = False
    runner: Runner = run_command
    units_dir: Traversable | None = None
    config_text: bytes | None = None
    wheel: Path | None = None          # build a release from this wheel (None: leave the venv)
    target: str = "generic"            # "pi": also picamera2 and lgpio from Raspberry Pi's apt
    apt: bool = True                   # apt-get install what is missing (else only say so)
    python: str = pyenv.SYSTEM_PYTHON
    constraints: Path | None = None    # None: the shipped file for this OS release
    find_links: tuple[Path, ...] = ()
    no_index: bool = False
    run_venv: pyenv.Run = pyenv._run   # the venv's commands (they need their output)
    image: bool = False                # preparing an image: strip machine-id and host keys
    report: list[str] = field(default_factory=list)
    changes: int = 0

    def at(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    @property
    def on_this_system(self) -> bool:
        return self.root.resolve() == Path("/")

    def _do(self, what: str, action: Callable[[], None]) -> None:
        self.changes += 1
        if self.dry_run:
            self.report.append(f"would {what}")
            return
        action()
        self.report.append(f"done: {what}")

    def _ok(self, what: str) -> None:
        self.report.append(f"ok: {what}")

    def _root_args(self) -> list[str]:
        return [] if self.on_this_system else ["--root", str(self.root.resolve())]

    # -- steps ------------------------------------------------------------------------------------

    def run(self) -> int:
        """Every step in order; returns the number of changes made (or that would be made)."""
        units_dir = self.units_dir or find_units_dir()
        config_text = self.config_text if self.config_text is not None else example_config()
        self.groups()
        self.user()
        uid = _ids_from(self.at("/etc/passwd"), USER)
        gid = _ids_from(self.at("/etc/group"), USER)
        self.directory(ETC_DIR, 0o755, 0, 0)
        self.directory(DATA_DIR, 0o750, uid, gid)
        self.directory(CREDSTORE, 0o700, 0, 0, repair=False)  # systemd's, shared: create only
        self.directory(CREDENTIALS_DIR, 0o700, 0, 0)
        self.file(CREDENTIALS_DIR + "/mqtt-password", b"", 0o600, replace=False,
                  why="(empty: no MQTT password yet; LoadCredential= needs the file)")
        self.file(ETC_DIR + "/doorstep.toml", config_text, 0o644, replace=False,
                  why="from the example config")
        changed_units = [self.unit(units_dir / name) for name in PI_UNITS]
        if self.wheel is not None:
            if self.on_this_system:
                self.apt_packages()
            self.release(self.wheel)
        self.check_entry_point()
        if self.image:
            self.prepare_image()
        self.systemd(any(changed_units))
        return self.changes

    @property
    def enabled_units(self) -> tuple[str, ...]:
        return ENABLED + (IMAGE_ENABLED if self.image else ())

    def prepare_image(self) -> None:
        """An image must not carry one machine's identity: every card would share it."""
        todo = identity.prepare_image(self.root, dry_run=True)
        if not todo:
            self._ok("no machine-id and no SSH host keys in the image")
        for what in todo:
            self._do(what, lambda: None)
        if todo and not self.dry_run:
            identity.prepare_image(self.root)

    def apt_packages(self) -> None:
        """What Raspberry Pi OS builds against its own numpy comes from apt, never from pip."""
        wanted = pyenv.APT_BASE + (pyenv.APT_PI if self.target == "pi" else ())
        missing = [p for p in wanted if not self._dpkg_has(p)]
        if not missing:
            self._ok(f"Debian packages {', '.join(wanted)} are installed")
            return
        argv = ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q",
                "--no-install-recommends", *missing]
        if not self.apt:
            raise Permanent(f"missing Debian packages: {' '.join(missing)}; install them "
                            f"first (apt-get install --no-install-recommends "
                            f"{' '.join(missing)})")
        self._do("run apt-get update", self._command(["apt-get", "update", "-q"]))
        self._do(f"install from apt: {' '.join(missing)}", self._command(argv))

    def release(self, wheel: Path) -> None:
        """<prefix>/releases/<version>: a venv that sees apt's packages, with this wheel
        pip-installed under the constraints; then <prefix>/current points at it."""
        version = wheel_version(wheel)
        layout = Layout(self.at(self.prefix))
        rel = f"{self.prefix.rstrip('/')}/releases/{version}"
        if not self.on_this_system:
            self.report.append(f"note: --root given, so no venv is built (it must be made by "
                               f"the image's own {self.python}): run `doorstep install "
                               f"--wheel {wheel.name}` inside the image, as the pi-gen stage "
                               f"does (image/pi-gen)")
            return
        if layout.is_complete(version):
            self._ok(f"{rel} holds doorstep {version}")
        else:
            self._do(f"build {rel}: python3 -m venv --system-site-packages, then pip install "
                     f"{wheel.name} with {self._constraints_name()}",
                     lambda: self._build(layout, version, wheel))
        current = layout.version_of(CURRENT)
        if current == version:
            self._ok(f"{self.prefix}/{CURRENT} -> releases/{version}")
            return

        def switch() -> None:
            if current is not None and layout.is_complete(current):
                layout.point(PREVIOUS, current)
            layout.point(CURRENT, version)

        self._do(f"point {self.prefix}/{CURRENT} at releases/{version}"
                 + (f" (was {current}; that becomes {PREVIOUS})" if current else ""), switch)

    def _constraints_name(self) -> str:
        if self.constraints is not None:
            return str(self.constraints)
        return f"the {pyenv.os_codename(self.root) or 'unknown'} constraints"

    def _build(self, layout: Layout, version: str, wheel: Path) -> None:
        system = pyenv.system_python(self.python, run=self.run_venv)
        if self.constraints is not None:
            shipped = self.constraints.read_text(encoding="utf-8")
        else:
            shipped = pyenv.shipped_constraints(pyenv.os_codename(self.root))
        layout.build(version, [str(wheel.resolve())],
                     constraints=pyenv.constraints_text(shipped, system), python=self.python,
                     find_links=self.find_links, no_index=self.no_index,
                     need_picamera2=self.target == "pi", system=system, run=self.run_venv)

    def _dpkg_has(self, package: str) -> bool:
        argv = ["dpkg-query", "-W", "-f=${Status}", package]
        try:
            done = self.run_venv(argv, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return False
        return done.returncode == 0 and done.stdout.strip() == "install ok installed"

    def groups(self) -> None:
        for group in SUPPLEMENTARY_GROUPS:
            if _ids_from(self.at("/etc/group"), group) is not None:
                self._ok(f"group {group} exists")
                continue
            argv = ["groupadd", "--system", *self._root_args(), group]
            self._do(f"create group {group}: {shlex.join(argv)}", self._command(argv))

    def user(self) -> None:
        if _ids_from(self.at("/etc/passwd"), USER) is not None:
            self._ok(f"user {USER} exists")
            return
        argv = ["useradd", "--system", "--user-group", "--home-dir", DATA_DIR, "--no-create-home",
                "--shell", "/usr/sbin/nologin", "--comment", "Doorstep doorbell",
                *self._root_args(), USER]
        self._do(f"create system user {USER}: {shlex.join(argv)}", self._command(argv))

    def directory(self, path: str, mode: int, uid: int | None, gid: int | None, *,
                  repair: bool = True) -> None:
        target = self.at(path)
        owner = "root:root" if uid == 0 else f"{USER}:{USER}"
        if not target.is_dir():
            self._do(f"create {path} (mode {mode:04o}, owner {owner})",
                     lambda: self._make_dir(target, mode, uid, gid))
            return
        if not repair:
            self._ok(f"{path} exists")
            return
        st = target.stat()
        wrong = []
        if st.st_mode & 0o7777 != mode:
            wrong.append(f"mode {st.st_mode & 0o7777:04o} -> {mode:04o}")
        if self._can_chown() and uid is not None and (st.st_uid, st.st_gid) != (uid, gid):
            wrong.append(f"owner {st.st_uid}:{st.st_gid} -> {owner}")
        if wrong:
            self._do(f"fix {path}: {', '.join(wrong)}",
                     lambda: self._make_dir(target, mode, uid, gid))
        else:
            self._ok(f"{path} exists with mode {mode:04o}")

    def file(self, path: str, content: bytes, mode: int, *, replace: bool, why: str) -> bool:
        target = self.at(path)
        if target.exists() and (not replace or target.read_bytes() == content):
            self._ok(f"{path} is in place" + ("" if replace else " (left as it is)"))
            return False
        verb = "update" if target.exists() else "write"
        self._do(f"{verb} {path} {why}".rstrip(), lambda: _write(target, content, mode))
        return True

    def unit(self, source: Traversable) -> bool:
        try:
            text = source.read_text(encoding="utf-8")
        except OSError as exc:
            raise Permanent(f"{source}: cannot read the unit file: {exc.strerror}") from exc
        if self.prefix.rstrip("/") != DEFAULT_PREFIX:
            text = text.replace(DEFAULT_PREFIX + "/", self.prefix.rstrip("/") + "/")
        return self.file(f"{UNIT_DIR}/{source.name}", text.encode("utf-8"), 0o644, replace=True,
                         why="")

    def check_entry_point(self) -> None:
        exe = f"{self.prefix.rstrip('/')}/{CURRENT}/bin/doorstep"
        if self.dry_run and self.wheel is not None:
            return
        if os.access(self.at(exe), os.X_OK):
            self._ok(f"{exe} is there")
        else:
            self.report.append(f"note: {exe} does not exist yet; the units start it. Give "
                               f"--wheel doorstep-<version>-py3-none-any.whl to build it")

    def systemd(self, units_changed: bool) -> None:
        if not self.on_this_system:
            self.report.append(f"note: --root given, so systemctl is not run; to enable: "
                               f"systemctl --root {self.root} enable "
                               f"{' '.join(self.enabled_units)}")
            return
        if units_changed and self.at("/run/systemd/system").is_dir():
            self._do("run systemctl daemon-reload",
                     self._command(["systemctl", "daemon-reload"]))
        elif units_changed:  # a chroot (an image being built): enable works offline, reload not
            self._ok("systemd is not running here (a chroot?): no daemon-reload needed")
        units = self.enabled_units
        enabled = all(self.at(f"{UNIT_DIR}/{WANTS}/{u}").is_symlink() for u in units)
        if enabled:
            self._ok(f"{', '.join(units)} enabled")
        else:
            argv = ["systemctl", "enable", *units]
            self._do(f"run {shlex.join(argv)}", self._command(argv))

    # -- helpers ----------------------------------------------------------------------------------

    def _command(self, argv: list[str]) -> Callable[[], None]:
        return lambda: self.runner(argv)

    def _can_chown(self) -> bool:
        return os.geteuid() == 0

    def _make_dir(self, target: Path, mode: int, uid: int | None, gid: int | None) -> None:
        target.mkdir(parents=True, exist_ok=True)
        os.chmod(target, mode)
        if uid is not None and gid is not None and self._can_chown():
            os.chown(target, uid, gid)


def _write(target: Path, content: bytes, mode: int) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, content, mode=mode)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `install` to the doorstep CLI; it sets `func` to the handler."""
    p = sub.add_parser("install", help="set up the doorstep user, directories, config and units",
                       description="Lay Doorstep out on this machine (or under --root): system "
                       "user, /etc/doorstep, /var/lib/doorstep, /etc/credstore/doorstep, the "
                       "systemd units. Safe to run again: it changes only what is missing.")
    p.add_argument("--dry-run", action="store_true", help="print each action, change nothing")
    p.add_argument("--root", default="/", metavar="DIR",
                   help="install into an image's root instead of this system (no systemctl)")
    p.add_argument("--prefix", default=DEFAULT_PREFIX, metavar="DIR",
                   help=f"where the venv lives, as seen on the device (default {DEFAULT_PREFIX})")
    p.add_argument("--units", metavar="DIR", help="where the .service files are (default: found)")
    p.add_argument("--wheel", metavar="FILE",
                   help="build <prefix>/releases/<version> from this Doorstep wheel and point "
                   "<prefix>/current at it (default: the wheel this runs from, if any)")
    p.add_argument("--target", choices=["auto", "pi", "generic"], default="auto",
                   help="pi: also python3-picamera2 and python3-lgpio from Raspberry Pi's apt "
                   "archive (auto: pi on a Raspberry Pi or Raspberry Pi OS)")
    p.add_argument("--no-apt", dest="apt", action="store_false",
                   help="never run apt-get; fail naming what is missing")
    p.add_argument("--python", default=pyenv.SYSTEM_PYTHON, metavar="EXE",
                   help=f"the interpreter apt's packages are for (default {pyenv.SYSTEM_PYTHON})")
    p.add_argument("--constraints", metavar="FILE",
                   help="pip constraints instead of the shipped ones for this OS release")
    p.add_argument("--find-links", action="append", default=[], metavar="DIR",
                   help="also look for wheels here (pip --find-links; repeatable)")
    p.add_argument("--no-index", action="store_true",
                   help="install only from --find-links, never from PyPI")
    p.add_argument("--image", action="store_true",
                   help="this root becomes an image for many cards: reset the machine-id, "
                   "remove the SSH host keys, enable doorstep-identity.service")
    p.set_defaults(func=run)


def detect_target(root: Path) -> str:
    """"pi" on a Raspberry Pi, or in a Raspberry Pi OS root (its apt source); else "generic"."""
    try:
        if root.resolve() == Path("/") and "Raspberry Pi" in Path(
                "/proc/device-tree/model").read_text(errors="replace"):
            return "pi"
    except OSError:
        pass
    sources = root / "etc/apt/sources.list.d"
    return "pi" if any((sources / n).exists() for n in ("raspi.list", "raspi.sources")) \
        else "generic"


def run(args: argparse.Namespace, runner: Runner = run_command) -> int:
    """The `install` subcommand: 0 on success, 1 on failure (explained on stderr)."""
    if not args.dry_run and Path(args.root).resolve() == Path("/") and os.geteuid() != 0:
        print("doorstep install: error: run as root (sudo), or use --dry-run", file=sys.stderr)
        return 1
    wheel = Path(args.wheel) if args.wheel else running_wheel()
    root = Path(args.root)
    inst = Installer(root=root, prefix=args.prefix, dry_run=args.dry_run,
                     runner=runner, units_dir=Path(args.units) if args.units else None,
                     wheel=wheel, apt=args.apt, python=args.python,
                     target=detect_target(root) if args.target == "auto" else args.target,
                     constraints=Path(args.constraints) if args.constraints else None,
                     find_links=tuple(Path(d) for d in args.find_links),
                     no_index=args.no_index, image=args.image)
    try:
        inst.run()
    except (DoorstepError, OSError) as exc:
        for line in inst.report:
            print(line)
        print(f"doorstep install: error: {exc}", file=sys.stderr)
        return 1
    for line in inst.report:
        print(line)
    if inst.changes == 0:
        print("nothing to change: already installed")
    elif args.dry_run:
        print(f"dry run: {inst.changes} change(s) would be made; nothing was changed")
    else:
        print(f"{inst.changes} change(s) made")
    return 0
