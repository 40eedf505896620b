"""The doctor's checks of everything around the camera: the broker (reached with TLS and
credentials, as the agent reaches it), the clock, the disk (free space, and an estimate of card
wear per day at the configured load), the keys and their fingerprints, the recipients, and the
Python modules the venv imports (numpy, cv2, av, picamera2, simplejpeg), with their paths."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import ssl
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from doorstep.agent.health import clock_synchronised
from doorstep.agent.health import run_command as health_command
from doorstep.config.load import resolve_secret
from doorstep.config.schema import Config
from doorstep.core.errors import DoorstepError, KeyFileError
from doorstep.doctor.report import Result, failed, passed, skipped
from doorstep.protocol.age import X25519Recipient
from doorstep.protocol.connect import is_loopback
from doorstep.protocol.keys import SigningKey, fingerprint, parse_public_key
from doorstep.provision import pyenv
from doorstep.uplink.mqtt import device_client

CREDENTIALS = "/etc/credstore/doorstep"   # where first boot puts the secrets (systemd's store)


def secret_path(name: str, cfg: Config, credentials: Path) -> Path:
    """A secret the config names, found as the agent finds it under systemd: absolute as
    given, else in $CREDENTIALS_DIRECTORY or the credential store, else in the data dir."""
    if Path(name).is_absolute() or os.environ.get("CREDENTIALS_DIRECTORY"):
        return resolve_secret(name, Path(cfg.device.data_dir))
    stored = credentials / Path(name).name
    return stored if stored.exists() else Path(cfg.device.data_dir) / name


# -- the broker ---------------------------------------------------------------------------------
def check_broker(cfg: Config, *, credentials: Path, timeout: float = 10.0) -> Result:
    m = cfg.mqtt
    where = f"{m.host}:{m.port} ({'TLS' if m.tls else 'no TLS'})"
    if not m.tls and not is_loopback(m.host):
        return failed("broker", f"{where}: TLS is off to another machine",
                      "set mqtt.tls = true (and mqtt.port = 8883): without it the password "
                      "and every message's metadata cross the network in clear")
    if not m.username and not m.cert_file:
        return failed("broker", f"{where}: no credentials (no mqtt.username, no client "
                      "certificate)", "give the device its own broker user: mqtt.username, "
                      "and secrets.mqtt_password in the first-boot file")
    password = secret_path(m.password_file, cfg, credentials) if m.password_file else None
    if m.username and (password is None or not password.exists()
                       or not password.read_text().strip()):
        return failed("broker", f"{where}: user {m.username!r} has no password "
                      f"({password or 'mqtt.password_file is not set'})",
                      "put secrets.mqtt_password in the boot partition's doorstep.toml and "
                      "boot again (first boot stores it in /etc/credstore/doorstep)")
    try:
        client = device_client(m, f"doorstep-doctor-{cfg.device.id}",
                               secrets_dir=password.parent if password else None)
    except DoorstepError as exc:
        return failed("broker", f"{where}: {exc}", "check mqtt.ca_file, cert_file, key_file")
    client.connect_timeout = timeout
    answer: dict[str, Any] = {}
    arrived = threading.Event()

    def on_connect(client: Any, userdata: Any, flags: Any, reason: Any,
                   properties: Any = None) -> None:
        answer["reason"] = reason
        arrived.set()

    client.on_connect = on_connect
    try:
        client.connect(m.host, m.port, keepalive=m.keepalive)
    except ssl.SSLCertVerificationError as exc:
        return failed("broker", f"{where}: the broker's certificate is not trusted: "
                      f"{exc.verify_message}", "set mqtt.ca_file to the CA that signed the "
                      "broker's certificate, and use the host name the certificate names")
    except ssl.SSLError as exc:
        return failed("broker", f"{where}: TLS failed: {exc}",
                      "check that the port speaks TLS (8883) and mqtt.ca_file/cert_file")
    except socket.gaierror as exc:
        return failed("broker", f"{where}: cannot resolve {m.host}: {exc.strerror}",
                      "check mqtt.host and the network (DNS)")
    except OSError as exc:
        return failed("broker", f"{where}: cannot connect: {exc.strerror or exc}",
                      "check mqtt.host and mqtt.port, that the broker runs, and any firewall")
    client.loop_start()
    try:
        got = arrived.wait(timeout)
    finally:
        client.disconnect()
        client.loop_stop()
    reason = answer.get("reason")
    if not got or reason is None:
        return failed("broker", f"{where}: connected, but no answer in {timeout:g} s",
                      "check that the port is an MQTT listener")
    if reason.is_failure:
        return failed("broker", f"{where}: refused: {reason}",
                      "check mqtt.username and the password in "
                      f"{password or CREDENTIALS + '/mqtt-password'}, and the broker's ACL")
    who = f"as {m.username}" if m.username else "with a client certificate"
    return passed("broker", f"{where}: connected {who}", host=m.host, port=m.port,
                  tls=m.tls)


# -- the clock ----------------------------------------------------------------------------------
def check_clock(root: Path = Path("/"), run: Callable[[Sequence[str]], Any] = health_command
                ) -> Result:
    synced = clock_synchronised(root, run)
    if synced:
        return passed("clock", "synchronised by NTP since boot")
    fix = ("connect the network; check `timedatectl timesync-status` and that "
           "systemd-timesyncd runs (clip times and command replay checks need the clock)")
    if synced is None:
        return failed("clock", "cannot tell: no systemd-timesyncd marker and no timedatectl",
                      fix)
    return failed("clock", "not synchronised", fix)


# -- the disk -----------------------------------------------------------------------------------
JPEG_BYTES_PER_PIXEL = 0.25    # a quality-90 snapshot of a porch
EVENT_OVERHEAD = 40_000        # the sealed event with its thumbnail, manifests, metadata
DAILY_OVERHEAD = 5_000_000     # journal, status, state files
AMPLIFICATION = 2.0            # flash writes per byte written: small synced writes cost more
RATED_CYCLES = 1000            # full-card writes a good A1/A2 card is rated for (high
                               # endurance cards are rated for many more)


@dataclass(frozen=True)
class Wear:
    bytes_per_day: float
    card_years: float


def estimate_wear(cfg: Config, card_bytes: int, *, events_per_day: int,
                  event_seconds: float) -> Wear:
    """Bytes written to the card per day at this load, and how long a card of ``card_bytes``
    lasts at that rate. Pre-roll stays in memory: only events reach the card, once each (the
    outbox holds ciphertext until the inbox's receipt, then deletes it)."""
    clip = min(cfg.clip.max_seconds,
               cfg.clip.preroll_seconds + event_seconds + cfg.clip.postroll_seconds)
    per_event = (clip * cfg.encoder.bitrate_kbps * 1000 / 8
                 + cfg.camera.width * cfg.camera.height * JPEG_BYTES_PER_PIXEL
                 + EVENT_OVERHEAD)
    daily = events_per_day * per_event + DAILY_OVERHEAD
    years = card_bytes * RATED_CYCLES / (daily * AMPLIFICATION) / 365
    return Wear(daily, years)


def check_disk(cfg: Config, *, events_per_day: int = 50, event_seconds: float = 10.0,
               min_years: float = 5.0) -> Result:
    path = Path(cfg.device.data_dir)
    while not path.exists() and path != path.parent:
        path = path.parent
    usage = shutil.disk_usage(path)
    quota = int(cfg.outbox.quota_mb * 1024 * 1024)
    wear = estimate_wear(cfg, usage.total, events_per_day=events_per_day,
                         event_seconds=event_seconds)
    mb = 1024 * 1024
    detail = (f"{usage.free / mb:,.0f} MB free of {usage.total / mb:,.0f} MB at {path}; "
              f"outbox quota {quota / mb:,.0f} MB\n"
              f"about {wear.bytes_per_day / mb:,.0f} MB written a day ({events_per_day} events "
              f"of ~{event_seconds:g} s at {cfg.encoder.bitrate_kbps} kbit/s); at "
              f"{RATED_CYCLES} rated writes of the card, about {wear.card_years:,.0f} years")
    data = {"free_bytes": usage.free, "total_bytes": usage.total, "quota_bytes": quota,
            "written_per_day_bytes": round(wear.bytes_per_day),
            "card_life_years": round(wear.card_years, 1)}
    if usage.free < quota:
        return failed("disk", detail, f"the outbox may need {quota / mb:,.0f} MB: lower "
                      f"outbox.quota_mb below {usage.free / mb * 0.8:,.0f}, or use a bigger "
                      "card", **data)
    if wear.card_years < min_years:
        return failed("disk", detail, "lower encoder.bitrate_kbps or clip.postroll_seconds, "
                      "narrow motion.zones, or use a high-endurance card", **data)
    return passed("disk", detail, **data)


# -- keys and recipients ------------------------------------------------------------------------
def check_keys(cfg: Config, *, credentials: Path) -> Result:
    path = secret_path(cfg.device.key_file, cfg, credentials)
    try:
        key = SigningKey.load(path)
    except KeyFileError as exc:
        missing = not path.exists()
        return failed("keys", f"device key: {exc}",
                      "first boot creates it from doorstep.toml on the boot partition "
                      "(docs/installer.md, section 4)" if missing else
                      f"move {path} away and boot with a first-boot file to make a new one")
    lines = [f"device key {path}: fingerprint {fingerprint(key.public_key)}"]
    data = {"device": fingerprint(key.public_key)}
    problems = []
    for name, text in (("owner.command_key", cfg.owner.command_key),
                       ("owner.inbox_key", cfg.owner.inbox_key)):
        if not text:
            lines.append(f"{name}: not set")
            continue
        try:
            fp = fingerprint(parse_public_key(text))
        except KeyFileError as exc:
            problems.append(f"{name}: {exc}")
            continue
        lines.append(f"{name}: fingerprint {fp}")
        data[name] = fp
    if problems:
        return failed("keys", "\n".join(lines + problems),
                      "paste the key the owner's tools print (ed25519:...)", **data)
    return passed("keys", "\n".join(lines), **data)


def check_recipients(cfg: Config) -> Result:
    shown, bad = [], []
    for i, text in enumerate(cfg.owner.recipients):
        try:
            r = str(X25519Recipient.parse(text))
            shown.append(f"{r[:10]}...{r[-6:]}")
        except KeyFileError as exc:
            bad.append(f"owner.recipients[{i}]: {exc}")
    fix = "add the owner's age recipient (age1...) to owner.recipients"
    if bad:
        return failed("recipients", "\n".join(bad), fix)
    if not shown:
        return failed("recipients", "nobody could open the clips: no owner.recipients", fix)
    return passed("recipients", f"{len(shown)} recipient(s): {', '.join(shown)}",
                  recipients=len(shown))


# -- the venv's modules -------------------------------------------------------------------------
def check_modules(cfg: Config, *, python: str = sys.executable,
                  system_python: str = pyenv.SYSTEM_PYTHON,
                  run: pyenv.Run = pyenv._run) -> list[Result]:
    """One line per module, each imported by ``python`` (the venv's) in its own process,
    with its version and path, and whether it is apt's."""
    found = pyenv.probe(python, run=run)
    need_pi = cfg.camera.source == "picamera2"
    system = pyenv.SystemPython({}, picamera2=False)      # nothing apt's to shadow
    if Path(system_python).exists() and pyenv.sees_apt(python, run=run):
        with contextlib.suppress(DoorstepError):    # then there is nothing to compare with
            system = pyenv.system_python(system_python, run=run)
    wrong = {p.module: p for p in pyenv.problems(found, system, need_picamera2=need_pi)}
    out = []
    for m in found:
        name = f"module {m.name}"
        data = {"version": m.version, "path": m.path, "error": m.error}
        problem = wrong.get(m.name)
        if problem is not None:
            out.append(failed(name, problem.what, problem.fix, **data))
        elif m.ok:
            out.append(passed(name, m.describe(), **data))
        elif m.name in ("picamera2", "simplejpeg") and not need_pi:
            out.append(skipped(name, f"not needed (camera.source is {cfg.camera.source!r}): "
                               f"{m.error}", **data))
        else:
            fix = ("sudo apt install --no-install-recommends python3-picamera2, then run "
                   "`doorstep install` again (the venv must see apt's packages)"
                   if m.name in ("picamera2", "simplejpeg")
                   else "rebuild the venv with `doorstep install`")
            out.append(failed(name, m.describe(), fix, **data))
    return out
