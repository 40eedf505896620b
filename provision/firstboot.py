"""`doorstep firstboot`: provisions a doorbell from the doorstep.toml an installer put on the boot
partition: validate it, install config and secrets, erase it, create the device key, and leave the
key's fingerprint where the installer and the agent can find it.

All or nothing: every file is staged beside its destination first and renamed into place only
when all are staged; the boot file is erased last, so a power cut anywhere leaves it there and the
next boot simply runs this again (an existing device key is kept, never replaced).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
import os
import re
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from doorstep.config.load import parse_config
from doorstep.config.provisioned import PROVISIONED_FILE, Provisioned
from doorstep.config.schema import Config
from doorstep.core.errors import ConfigError, DoorstepError, KeyFileError, Permanent
from doorstep.core.fsutil import fsync_dir
from doorstep.protocol.keys import DeviceKey, SigningKey, fingerprint
from doorstep.provision.identity import ssh_fingerprints

log = logging.getLogger(__name__)

BOOT_FILE = "doorstep.toml"
ERROR_FILE = "doorstep-error.txt"
FINGERPRINT_FILE = "doorstep-fingerprint.txt"
CONFIG_FILE = "doorstep.toml"
CREDENTIALS_SUBDIR = "doorstep"
KEY_CREDENTIAL = "device.key"
# [secrets] keys in the boot file -> the credential (file) they become, and where the config says so
SECRETS = {"mqtt_password": "mqtt-password"}


@dataclass(frozen=True)
class Prepared:
    """A validated boot file, split into the config to install and the secrets to store."""

    config: Config
    config_text: str
    secrets: dict[str, str]  # credential name -> value


def prepare(text: str, *, data_dir: str, source: str = BOOT_FILE) -> Prepared:
    """Validate the boot file's text. Raises ConfigError listing every problem; the messages
    never contain a secret's value."""
    problems: list[str] = []
    try:
        doc = tomllib.loads(text.removeprefix("\ufeff"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"not valid TOML: {exc}"], source=source) from exc
    raw_secrets = doc.pop("secrets", {})
    secrets: dict[str, str] = {}
    if not isinstance(raw_secrets, dict):
        problems.append("secrets: expected a table like [secrets] with mqtt_password = \"...\"")
        raw_secrets = {}
    for key, value in raw_secrets.items():
        if key not in SECRETS:
            problems.append(f"secrets.{key}: unknown secret (allowed: {', '.join(SECRETS)})")
        elif not isinstance(value, str) or not value or "\n" in value:
            problems.append(f"secrets.{key}: expected a non-empty one-line string")
        else:
            secrets[SECRETS[key]] = value
    mqtt = doc.get("mqtt", {})
    if "mqtt-password" in secrets and isinstance(mqtt, dict):
        if mqtt.get("password_file", "mqtt-password") != "mqtt-password":
            problems.append("mqtt.password_file: leave it out; with secrets.mqtt_password, first "
                            "boot stores the password and sets it")
        elif not mqtt.get("username"):
            problems.append("secrets.mqtt_password: given, but mqtt.username is empty")
        else:
            mqtt["password_file"] = "mqtt-password"
    device = doc.setdefault("device", {})
    if isinstance(device, dict):
        if device.get("key_file", KEY_CREDENTIAL) != KEY_CREDENTIAL:
            problems.append(f"device.key_file: leave it out; first boot creates the device key as "
                            f"the credential {KEY_CREDENTIAL!r}")
        if device.get("data_dir", data_dir) != data_dir:
            problems.append(f"device.data_dir: {device['data_dir']!r} is not this device's data "
                            f"dir ({data_dir}); leave it out")
        else:
            device["data_dir"] = data_dir
    header = ("# Installed by `doorstep firstboot` from the boot partition's doorstep.toml.\n"
              "# Secrets are not here: they are root-only files in the credential store,\n"
              "# handed to the agent by systemd (LoadCredential=).\n"
              "# Edit this file, then restart the agent.\n\n")
    config_text = header + dumps_toml(doc)
    try:
        config = parse_config(config_text, source=source)
    except ConfigError as exc:
        problems.extend(exc.problems)
        config = Config()
    if problems:
        raise ConfigError(problems, source=source)
    return Prepared(config=config, config_text=config_text, secrets=secrets)


@dataclass(frozen=True)
class Outcome:
    provisioned: Provisioned
    new_key: bool
    config_path: Path


def firstboot(*, boot: Path, etc: Path, data: Path, credentials: Path,
              wall: Callable[[], float] = time.time,
              new_key: Callable[[], SigningKey] = DeviceKey.generate,
              ssh: Path | None = None) -> Outcome | None:
    """Provision from ``boot``/doorstep.toml; None if there is no such file (nothing to do).
    ``ssh``: where the SSH host keys are, whose fingerprints join the device key's in the
    fingerprint file (so the first SSH login can be checked too).

    On a bad file or a failure, writes ``boot``/doorstep-error.txt naming every problem and
    raises (ConfigError for the file's contents); etc, data and credentials are then unchanged.
    """
    boot_file = boot / BOOT_FILE
    try:
        raw = boot_file.read_bytes()
    except FileNotFoundError:
        log.info("no %s: nothing to provision", boot_file)
        return None
    except OSError as exc:
        _fail(boot, [f"cannot read {boot_file}: {exc.strerror}"])
        raise Permanent(f"{boot_file}: cannot read: {exc.strerror}") from exc
    try:
        prepared = prepare(raw.decode("utf-8"), data_dir=str(data), source=str(boot_file))
    except UnicodeDecodeError as exc:
        _fail(boot, [f"not UTF-8 text ({exc.reason} at byte {exc.start})"])
        raise ConfigError([f"not UTF-8 text: {exc}"], source=str(boot_file)) from exc
    except ConfigError as exc:
        _fail(boot, exc.problems)
        raise
    staged = _Staging()
    try:
        outcome = _stage(prepared, staged, boot, etc, data, credentials, wall, new_key, ssh)
    except (DoorstepError, OSError) as exc:
        staged.discard()
        _fail(boot, [f"could not stage the files, nothing was changed: {exc}"])
        raise
    staged.commit()
    os.chmod(credentials / CREDENTIALS_SUBDIR, 0o700)
    (boot / ERROR_FILE).unlink(missing_ok=True)
    erase(boot_file)
    log.info("provisioned %s; device key fingerprint %s", prepared.config.device.id,
             outcome.provisioned.fingerprint)
    return outcome


class _Staging:
    """Temporary files beside their destinations, renamed into place in the order added."""

    def __init__(self) -> None:
        self.pending: list[tuple[Path, Path]] = []
        self.made_dirs: list[Path] = []

    def mkdir(self, directory: Path, mode: int) -> None:
        missing = [d for d in (directory, *directory.parents) if not d.exists()]
        for d in reversed(missing):  # outermost first; chmod because the unit's UMask=0077
            d.mkdir()
            self.made_dirs.append(d)
            os.chmod(d, mode if d == directory else 0o755)

    def write(self, target: Path, content: bytes, mode: int | None) -> None:
        """``mode`` None leaves the file system's default (FAT refuses most chmods)."""
        if target.is_dir():
            raise Permanent(f"{target} is a directory; a file must go there")
        tmp = target.with_name(f".{target.name}.firstboot.tmp")
        try:
            _write_synced(tmp, content, mode)
        except OSError:
            if tmp.is_file():
                tmp.unlink()
            raise
        self.pending.append((tmp, target))

    def add(self, tmp: Path, target: Path) -> None:
        self.pending.append((tmp, target))

    def discard(self) -> None:
        for tmp, _ in self.pending:
            tmp.unlink(missing_ok=True)
        self.pending.clear()
        for d in reversed(self.made_dirs):
            try:
                d.rmdir()
            except OSError as exc:
                log.warning("could not remove %s again: %s", d, exc.strerror)
        self.made_dirs.clear()

    def commit(self) -> None:
        for tmp, target in self.pending:
            os.replace(tmp, target)
            fsync_dir(target.parent)
        self.pending.clear()


def _stage(prepared: Prepared, staged: _Staging, boot: Path, etc: Path, data: Path,
           credentials: Path, wall: Callable[[], float],
           new_key: Callable[[], SigningKey], ssh: Path | None) -> Outcome:
    cred_dir = credentials / CREDENTIALS_SUBDIR
    for directory, mode in ((etc, 0o755), (credentials, 0o700), (cred_dir, 0o700), (data, 0o750)):
        if not directory.is_dir():
            staged.mkdir(directory, mode)
    # The password credential always exists (empty when unused): LoadCredential= needs the file.
    for name in SECRETS.values():
        staged.write(cred_dir / name, prepared.secrets.get(name, "").encode("utf-8"), 0o600)
    key_path = cred_dir / KEY_CREDENTIAL
    created = not key_path.exists()
    if created:
        key = new_key()
        tmp = key_path.with_name(f".{KEY_CREDENTIAL}.firstboot.tmp")
        key.save(tmp)  # atomic by itself: it is there whole, or not at all
        staged.add(tmp, key_path)
    else:
        try:
            key = SigningKey.load(key_path)
        except KeyFileError as exc:
            raise KeyFileError(f"{exc}; move it away to have a new key made") from exc
        log.info("keeping the existing device key %s", key_path)
    config_path = etc / CONFIG_FILE
    staged.write(config_path, prepared.config_text.encode("utf-8"), 0o644)
    provisioned = Provisioned(device_id=prepared.config.device.id,
                              fingerprint=fingerprint(key.public_key),
                              public_key=key.public_text(), provisioned_at=wall())
    staged.write(data / PROVISIONED_FILE, provisioned.to_json().encode("utf-8"), 0o644)
    note = (f"Doorstep device {provisioned.device_id}\n"
            f"fingerprint: {provisioned.fingerprint}\n"
            f"public key:  {provisioned.public_key}\n"
            f"Check that the owner's tools show this fingerprint before trusting the device.\n")
    prints = ssh_fingerprints(ssh) if ssh is not None else []
    if prints:
        note += ("SSH host keys of this card (ssh shows one of these at the first login):\n"
                 + "".join(f"  {line}\n" for line in prints))
    staged.write(boot / FINGERPRINT_FILE, note.encode("utf-8"), None)
    return Outcome(provisioned=provisioned, new_key=created, config_path=config_path)


def _fail(boot: Path, problems: list[str]) -> None:
    """Leave the reasons on the boot partition, where the installer will look."""
    for p in problems:
        log.error("first boot: %s", p)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    text = (f"Doorstep first boot failed ({stamp}); nothing was changed on the device.\n"
            f"Fix {BOOT_FILE} on this partition and boot again. Problems:\n"
            + "".join(f"  - {p}\n" for p in problems))
    try:
        tmp = boot / f".{ERROR_FILE}.tmp"
        _write_synced(tmp, text.encode("utf-8"), None)
        os.replace(tmp, boot / ERROR_FILE)
    except OSError as exc:
        log.error("cannot write %s: %s", boot / ERROR_FILE, exc)


def erase(path: Path) -> None:
    """Overwrite with zeros, fsync, truncate, unlink, fsync the directory. On FAT and flash
    (SD cards remap blocks) the old bytes may survive elsewhere: this is best effort."""
    fd = os.open(path, os.O_WRONLY)
    try:
        size = os.fstat(fd).st_size
        block = b"\0" * 65536
        done = 0
        while done < size:
            done += os.write(fd, block[: min(len(block), size - done)])
        os.fsync(fd)
        os.ftruncate(fd, 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    path.unlink()
    fsync_dir(path.parent)


def _write_synced(path: Path, content: bytes, mode: int | None) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if mode is None else mode)
    try:
        if mode is not None:
            os.fchmod(fd, mode)  # the umask must not narrow it (the agent reads the config)
        view = memoryview(content)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


# -- a small TOML writer for the values tomllib returns -----------------------------------------

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(k: str) -> str:
    return k if _BARE_KEY.match(k) else json.dumps(k, ensure_ascii=False)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return repr(v) if math.isfinite(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # JSON's escapes are valid TOML basic strings
    if isinstance(v, (dt.datetime, dt.date, dt.time)):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")  # pragma: no cover


def dumps_toml(doc: dict[str, Any]) -> str:
    """Top-level values, then one [table] per top-level table (deeper tables inline)."""
    lines = [f"{_key(k)} = {_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    for name, table in doc.items():
        if isinstance(table, dict):
            if lines:
                lines.append("")
            lines.append(f"[{_key(name)}]")
            lines.extend(f"{_key(k)} = {_value(v)}" for k, v in table.items())
    return "\n".join(lines) + "\n"


# -- the command ------------------------------------------------------------------------------

def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `firstboot` to the doorstep CLI; it sets `func` to the handler."""
    p = sub.add_parser("firstboot", help="provision this doorbell from the boot partition",
                       description="Install the boot partition's doorstep.toml: validate it, "
                       "move secrets into root-only credential files, erase it, create the "
                       "device key and write its fingerprint to doorstep-fingerprint.txt.")
    p.add_argument("--boot", default="/boot/firmware", metavar="DIR",
                   help="the boot partition (default /boot/firmware)")
    p.add_argument("--etc", default="/etc/doorstep", metavar="DIR")
    p.add_argument("--data", default="/var/lib/doorstep", metavar="DIR")
    p.add_argument("--credentials", default="/etc/credstore", metavar="DIR",
                   help="credential store; ours is its doorstep/ subdirectory")
    p.add_argument("--ssh", default="/etc/ssh", metavar="DIR",
                   help="the SSH host keys, whose fingerprints are written beside the device "
                   "key's (default /etc/ssh)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """The `firstboot` subcommand: 0 when provisioned or nothing to do, 1 on any problem."""
    boot = Path(args.boot)
    try:
        outcome = firstboot(boot=boot, etc=Path(args.etc), data=Path(args.data),
                            credentials=Path(args.credentials), ssh=Path(args.ssh))
    except ConfigError as exc:
        print(f"doorstep firstboot: {exc}", file=sys.stderr)
        print(f"(also written to {boot / ERROR_FILE}; nothing was changed)", file=sys.stderr)
        return 1
    except (DoorstepError, OSError) as exc:
        print(f"doorstep firstboot: error: {exc}", file=sys.stderr)
        return 1
    if outcome is None:
        print(f"nothing to do: no {boot / BOOT_FILE}")
        return 0
    p = outcome.provisioned
    print(f"provisioned device {p.device_id}; config in {outcome.config_path}")
    print(f"device key {'created' if outcome.new_key else 'kept'}: fingerprint {p.fingerprint}")
    print(f"public key {p.public_key}  (also in {boot / FINGERPRINT_FILE})")
    return 0
