"""`doorstep update`: a bundle signed by the installer's key (provision/bundle.py), verified and
built beside the running version as <prefix>/releases/<version>, then put on trial.

The trial is systemd's: a drop-in gives the agent a start limit and `OnFailure=` the rollback
unit, and an `ExecStartPost=` that runs only once the new version has sent READY=1 and
confirms it (the drop-in then goes). If the new version does not reach READY within its start
limit (StartLimitBurst starts, each given TimeoutStartSec), the agent unit fails,
doorstep-rollback.service runs the *previous* release's `doorstep update --rollback`, which
points <prefix>/current back, records the version as failed, and starts the agent again. The
trial's state is root's (/var/lib/doorstep-update), not the agent's, so a compromised agent
cannot forge a roll-back.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from doorstep.core.errors import DoorstepError, Permanent
from doorstep.core.fsutil import write_atomic
from doorstep.protocol.keys import SigningKey, fingerprint, parse_public_key
from doorstep.provision import bundle, pyenv
from doorstep.provision.release import CURRENT, PREVIOUS, Layout, version_key

log = logging.getLogger(__name__)

STATE = "/var/lib/doorstep-update"
TRIAL = "trial.json"             # the version on trial, and the one to fall back to
FAILED = "failed.json"           # versions that failed their trial here
AGENT = "doorstep-agent.service"
DROPIN = "/etc/systemd/system/doorstep-agent.service.d/50-doorstep-trial.conf"
START_LIMIT_BURST = 3
START_LIMIT_INTERVAL = "1h"      # longer than 3 starts of TimeoutStartSec=120s plus restarts

Runner = Callable[[Sequence[str]], None]


def trial_dropin(prefix: str) -> str:
    return (f"# Written by `doorstep update` while a new version is on trial; removed when it\n"
            f"# reaches READY (ExecStartPost) or when systemd falls back (OnFailure).\n"
            f"[Unit]\n"
            f"StartLimitIntervalSec={START_LIMIT_INTERVAL}\n"
            f"StartLimitBurst={START_LIMIT_BURST}\n"
            f"OnFailure=doorstep-rollback.service\n\n"
            f"[Service]\n"
            f"# runs only after READY=1, with full privileges (+), its failure ignored (-)\n"
            f"ExecStartPost=-+{prefix.rstrip('/')}/{CURRENT}/bin/doorstep update --confirm\n")


@dataclass
class Plan:
    """What an update would change."""

    header: bundle.Header
    current: str
    files: Path                              # where the bundle's files were extracted
    requirements: tuple[list[str], list[str]] = ([], [])   # (added, removed)
    units: list[str] = field(default_factory=list)          # unit files that would change

    @property
    def same(self) -> bool:
        return self.header.version == self.current

    @property
    def wheel(self) -> Path:
        return self.files / self.header.wheel

    def lines(self) -> list[str]:
        h = self.header
        if self.same:
            return [f"doorstep {h.version} is already running: nothing would change"]
        out = [f"doorstep {self.current} -> {h.version} (signed by {h.signer}, made "
               f"{h.created})"]
        if h.notes:
            out += [f"  notes: {line}" for line in h.notes.splitlines()]
        out += [f"  + requires {r}" for r in self.requirements[0]]
        out += [f"  - requires {r}" for r in self.requirements[1]]
        out += [f"  unit {u} changes" for u in self.units]
        extra = [n for n, _, _ in h.files if n != h.wheel]
        if extra:
            out.append(f"  {len(extra)} more wheel(s) in the bundle: installed offline")
        out.append("  the agent restarts into it on trial; systemd falls back to "
                   f"{self.current} if it does not reach READY within {START_LIMIT_BURST} "
                   f"starts")
        return out


@dataclass
class Updater:
    """One `doorstep update` run against ``root`` (tests: a tmp dir); systemctl goes through
    ``runner``, the venv's commands through ``run_venv``."""

    trusted: Sequence[Ed25519PublicKey]
    runner: Runner
    root: Path = Path("/")
    prefix: str = "/opt/doorstep"
    state: str = STATE
    python: str = pyenv.SYSTEM_PYTHON
    run_venv: pyenv.Run = pyenv._run
    restart: bool = True
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
    report: list[str] = field(default_factory=list)

    def at(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    @property
    def layout(self) -> Layout:
        return Layout(self.at(self.prefix))

    # -- checking ---------------------------------------------------------------------------
    def plan(self, path: Path, into: Path, *, force: bool = False) -> Plan:
        """Verify the bundle and say what it would change; raises BundleRefused."""
        header, offset = bundle.read_header(path, self.trusted)
        bundle.verify_payload(path, header, offset)
        current = self.layout.version_of(CURRENT)
        if current is None:
            raise bundle.BundleRefused(f"nothing is installed at {self.prefix}/{CURRENT}: "
                                       f"install with `doorstep install` first")
        if version_key(header.version) < version_key(current):
            raise bundle.BundleRefused(f"version {header.version} is older than the running "
                                       f"{current}: refusing a downgrade")
        failed = self._failed().get(header.version)
        if failed and not force and header.version != current:
            raise bundle.BundleRefused(f"version {header.version} failed its trial here on "
                                       f"{failed.get('at')} ({failed.get('why')}); give "
                                       f"--force to try it again")
        bundle.extract(path, header, offset, into)
        plan = Plan(header, current, into)
        if not plan.same:
            plan.requirements = self._requirement_changes(plan.wheel, current)
            plan.units = self._unit_changes(plan.wheel, header.version)
        return plan

    def _requirement_changes(self, wheel: Path, current: str) -> tuple[list[str], list[str]]:
        with zipfile.ZipFile(wheel) as zf:
            meta = zf.read(f"doorstep-{wheel.name.split('-')[1]}.dist-info/METADATA")
        new = [line.split(":", 1)[1].strip() for line in meta.decode().splitlines()
               if line.startswith("Requires-Dist:") and "extra ==" not in line]
        try:
            done = self.run_venv([str(self.layout.release(current) / "bin/python"), "-I", "-c",
                                  "import importlib.metadata as m\n"
                                  "print('\\n'.join(r for r in m.requires('doorstep') or [] "
                                  "if 'extra ==' not in r))"], timeout=60)
        except (OSError, subprocess.SubprocessError):
            return new, []          # the running release cannot say: list all as new
        old = done.stdout.split("\n") if done.returncode == 0 else []
        old = [r.strip() for r in old if r.strip()]
        return [r for r in new if r not in old], [r for r in old if r not in new]

    def _unit_changes(self, wheel: Path, version: str) -> list[str]:
        prefix = f"doorstep-{version}.data/data/share/doorstep/systemd/"
        changed = []
        with zipfile.ZipFile(wheel) as zf:
            for name in zf.namelist():
                if not name.startswith(prefix) or "inbox" in name:
                    continue
                unit = name[len(prefix):]
                installed = self.at(f"/etc/systemd/system/{unit}")
                if not installed.exists() or installed.read_bytes() != zf.read(name):
                    changed.append(unit)
        return sorted(changed)

    # -- installing -------------------------------------------------------------------------
    def install(self, path: Path, *, force: bool = False) -> Plan:
        state = self.at(self.state)
        incoming = state / "incoming"
        shutil.rmtree(incoming, ignore_errors=True)
        try:
            plan = self.plan(path, incoming, force=force)
            if plan.same:
                self.report += plan.lines()
                return plan
            version = plan.header.version
            wheel = plan.wheel
            offline = len(plan.header.files) > 1
            system = pyenv.system_python(self.python, run=self.run_venv)
            with zipfile.ZipFile(wheel) as zf:
                codename = pyenv.os_codename(self.root)
                try:
                    shipped = zf.read(f"doorstep/provision/constraints/{codename}.txt").decode()
                except KeyError as exc:
                    raise Permanent(f"doorstep {version} ships no constraints for "
                                    f"{codename or 'this system'}") from exc
            self.report.append(f"building {self.prefix}/releases/{version} from {wheel.name}")
            self.layout.build(version, [str(wheel)],
                              constraints=pyenv.constraints_text(shipped, system),
                              python=self.python, find_links=[incoming], no_index=offline,
                              need_picamera2=system.picamera2, system=system,
                              run=self.run_venv)
        finally:
            shutil.rmtree(incoming, ignore_errors=True)
        self._lay_out_units(version)
        self._start_trial(version, plan.current)
        return plan

    def _lay_out_units(self, version: str) -> None:
        """The new release installs its own units (what changed, and only that)."""
        argv = [str(self.layout.release(version) / "bin/doorstep"), "install", "--prefix",
                self.prefix]
        if self.root.resolve() != Path("/"):
            argv += ["--root", str(self.root)]
        done = self.run_venv(argv, timeout=300)
        if done.returncode != 0:
            raise Permanent(f"doorstep {version}'s own `doorstep install` failed: "
                            f"{(done.stderr or done.stdout).strip()[-500:]}")

    def _start_trial(self, version: str, previous: str) -> None:
        state = self.at(self.state)
        state.mkdir(parents=True, exist_ok=True)
        write_atomic(state / TRIAL, json.dumps({
            "version": version, "previous": previous,
            "started": self.now().isoformat(timespec="seconds")}).encode(), mode=0o644)
        dropin = self.at(DROPIN)
        dropin.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(dropin, trial_dropin(self.prefix).encode(), mode=0o644)
        self.layout.point(PREVIOUS, previous)
        self.layout.point(CURRENT, version)
        self.report.append(f"{self.prefix}/{CURRENT} -> releases/{version} (on trial; "
                           f"{PREVIOUS} -> {previous})")
        self._systemctl("daemon-reload")
        if not self.restart:
            self.report.append("the agent is not restarted (--no-restart): the trial starts "
                               "at its next start")
            return
        self._systemctl("reset-failed", AGENT, quiet=True)
        try:
            self.runner(["systemctl", "restart", AGENT])
            self.report.append(f"the agent restarted into {version} and reached READY")
        except DoorstepError as exc:
            self.report.append(f"the agent did not come up on {version} ({exc}); systemd "
                               f"retries, and falls back to {previous} after "
                               f"{START_LIMIT_BURST} failed starts")

    # -- after the trial --------------------------------------------------------------------
    def _trial(self) -> dict[str, Any] | None:
        try:
            trial: dict[str, Any] = json.loads((self.at(self.state) / TRIAL).read_text())
        except (OSError, ValueError):
            return None
        return trial

    def _failed(self) -> dict[str, dict[str, str]]:
        try:
            failed: dict[str, dict[str, str]] = json.loads(
                (self.at(self.state) / FAILED).read_text())
        except (OSError, ValueError):
            return {}
        return failed

    def _end_trial(self) -> None:
        self.at(DROPIN).unlink(missing_ok=True)
        (self.at(self.state) / TRIAL).unlink(missing_ok=True)
        self._systemctl("daemon-reload", quiet=True)

    def confirm(self) -> bool:
        """The version on trial reached READY (ExecStartPost): end the trial, keep it, and
        remove releases older than the previous one."""
        trial = self._trial()
        current = self.layout.version_of(CURRENT)
        if trial is None or trial.get("version") != current:
            return False
        self._end_trial()
        keep = {current, self.layout.version_of(PREVIOUS)}
        for old in self.layout.installed():
            if old not in keep:
                shutil.rmtree(self.layout.release(old), ignore_errors=True)
                self.report.append(f"removed the old release {old}")
        self.report.append(f"doorstep {current} reached READY: kept")
        return True

    def rollback(self, why: str = "it did not reach READY within its start limit") -> bool:
        """systemd gave up on the version on trial (OnFailure): back to the previous one."""
        trial = self._trial()
        if trial is None:
            self.report.append("no version is on trial: nothing to roll back")
            return False
        version, previous = str(trial["version"]), str(trial["previous"])
        if not self.layout.is_complete(previous):
            raise Permanent(f"cannot fall back: {self.prefix}/releases/{previous} is not "
                            f"there whole")
        self.layout.point(CURRENT, previous)
        failed = self._failed()
        failed[version] = {"at": self.now().isoformat(timespec="seconds"), "why": why}
        write_atomic(self.at(self.state) / FAILED, json.dumps(failed, indent=1).encode(),
                     mode=0o644)
        self._end_trial()
        self._systemctl("reset-failed", AGENT, quiet=True)
        self._systemctl("start", "--no-block", AGENT, quiet=True)
        self.report.append(f"rolled back from {version} to {previous}: {why}")
        return True

    def _systemctl(self, *args: str, quiet: bool = False) -> None:
        try:
            self.runner(["systemctl", *args])
        except DoorstepError as exc:
            if not quiet:
                raise
            log.warning("systemctl %s: %s", " ".join(args), exc)


def working_dir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="doorstep-update-")


def run_systemctl(argv: Sequence[str]) -> None:
    try:
        subprocess.run(list(argv), check=True, capture_output=True, text=True, timeout=600)
    except FileNotFoundError as exc:
        raise Permanent(f"{argv[0]}: not found on this system") from exc
    except subprocess.CalledProcessError as exc:
        raise Permanent(f"`{' '.join(argv)}` failed ({exc.returncode}): "
                        f"{(exc.stderr or '').strip()[:300]}") from exc
    except subprocess.TimeoutExpired as exc:
        raise Permanent(f"`{' '.join(argv)}` did not finish in {exc.timeout:g} s") from exc


# -- the commands -------------------------------------------------------------------------------
def trusted_keys(config: Path) -> list[Ed25519PublicKey]:
    """update.keys from the config, read on their own: an update must still be possible
    when something else in the config is wrong (the update may be its fix)."""
    try:
        doc = tomllib.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise Permanent(f"{config}: cannot read update.keys: {exc}") from exc
    keys = doc.get("update", {}).get("keys", []) if isinstance(doc.get("update"), dict) else []
    if not isinstance(keys, list):
        raise Permanent(f"{config}: update.keys must be a list of ed25519:... keys")
    return [parse_public_key(str(k)) for k in keys]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `update` and `bundle` to the doorstep CLI."""
    p = sub.add_parser("update", help="install a signed update bundle beside the running "
                       "version, on trial", description="Verify BUNDLE against update.keys, "
                       "build it beside the running version and restart the agent into it on "
                       "trial: if it does not reach READY within its start limit, systemd "
                       "falls back to the previous version.")
    p.add_argument("bundle", nargs="?", type=Path, help="the .bundle file")
    p.add_argument("--check", action="store_true", help="verify and say what would change")
    p.add_argument("--force", action="store_true", help="install a version that failed its "
                   "trial here before")
    p.add_argument("--no-restart", action="store_true", help="do not restart the agent now")
    p.add_argument("--confirm", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--rollback", action="store_true",
                   help="fall back to the previous version (doorstep-rollback.service)")
    p.add_argument("--config", type=Path, default=Path("/etc/doorstep/doorstep.toml"),
                   metavar="FILE", help="where update.keys are (default /etc/doorstep/...)")
    p.add_argument("--prefix", default="/opt/doorstep", metavar="DIR")
    p.add_argument("--state", default=STATE, metavar="DIR")
    p.set_defaults(func=run_update)
    b = sub.add_parser("bundle", help="sign a Doorstep wheel into an update bundle",
                       description="Make an update bundle signed with the installer's key, "
                       "or make that key (--new-key).")
    b.add_argument("--key", type=Path, metavar="FILE", help="the installer's signing key")
    b.add_argument("--new-key", type=Path, metavar="FILE",
                   help="create an installer key here and print its public key")
    b.add_argument("--wheel", type=Path, metavar="FILE", help="doorstep-<version>-...whl")
    b.add_argument("--with", dest="extra", type=Path, nargs="*", default=[], metavar="WHL",
                   help="more wheels, to install offline (the doorbell then uses no index)")
    b.add_argument("--notes", default="", help="what changed, shown by update --check")
    b.add_argument("--out", type=Path, metavar="FILE", help="the bundle to write")
    b.set_defaults(func=run_bundle)


def run_update(args: argparse.Namespace, runner: Runner = run_systemctl) -> int:
    prog = "doorstep update"
    try:
        trusted = [] if (args.confirm or args.rollback) else trusted_keys(args.config)
        updater = Updater(trusted=trusted, runner=runner, prefix=args.prefix,
                          state=args.state, restart=not args.no_restart)
        if args.confirm:
            updater.confirm()
        elif args.rollback:
            updater.rollback()
        elif args.bundle is None:
            print(f"{prog}: error: give a bundle (or --confirm, --rollback)", file=sys.stderr)
            return 2
        elif args.check:
            with working_dir() as tmp:
                plan = updater.plan(args.bundle, Path(tmp), force=args.force)
            updater.report += plan.lines()
        else:
            updater.install(args.bundle, force=args.force)
    except bundle.BundleRefused as exc:
        print(f"{prog}: refused: {exc}", file=sys.stderr)
        return 1
    except (DoorstepError, OSError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    for line in updater.report:
        print(line)
    return 0


def run_bundle(args: argparse.Namespace) -> int:
    try:
        if args.new_key:
            if args.new_key.exists():
                raise Permanent(f"{args.new_key} exists; not overwriting a key")
            key = SigningKey.generate()
            key.save(args.new_key)
            print(f"installer key {args.new_key}: fingerprint {fingerprint(key.public_key)}")
            print(f"put this in each doorbell's config:\n[update]\nkeys = "
                  f"[\"{key.public_text()}\"]")
            return 0
        if not (args.key and args.wheel and args.out):
            print("doorstep bundle: error: give --key, --wheel and --out (or --new-key)",
                  file=sys.stderr)
            return 2
        header = bundle.make(args.out, key=SigningKey.load(args.key), wheel=args.wheel,
                             extra=args.extra, notes=args.notes)
    except (DoorstepError, OSError) as exc:
        print(f"doorstep bundle: error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.out}: doorstep {header.version}, {len(header.files)} file(s), signed by "
          f"{header.signer}")
    return 0
