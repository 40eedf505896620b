"""A card's own identity. An image must carry no SSH host keys and no machine-id, or every card
flashed from it would share them: ``prepare_image`` strips both from an image root (systemd
makes a new machine-id at the first boot of "uninitialized"), and `doorstep identity`, run
once per card by doorstep-identity.service before ssh starts, makes the card's own host keys,
whatever the image held. ``ssh_fingerprints`` is what first boot prints beside the device key's
fingerprint, so the installer can check the first SSH login too."""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import json
import logging
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from doorstep.core.errors import Permanent
from doorstep.core.fsutil import write_atomic

log = logging.getLogger(__name__)

MARKER = "done.json"                # in the unit's StateDirectory (/var/lib/doorstep-identity)
UNINITIALIZED = "uninitialized\n"   # systemd: make a machine-id at this boot, a first boot

Run = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=120, check=False)


def host_keys(root: Path) -> list[Path]:
    return sorted((root / "etc/ssh").glob("ssh_host_*"))


def prepare_image(root: Path, *, dry_run: bool = False) -> list[str]:
    """Strip what identifies one machine from an image root; returns what was (or, with
    ``dry_run``, would be) done."""
    done = []
    machine_id = root / "etc/machine-id"
    if not machine_id.exists() or machine_id.read_text() != UNINITIALIZED:
        if not dry_run:
            machine_id.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(machine_id, UNINITIALIZED.encode(), mode=0o444)
        done.append("set /etc/machine-id to \"uninitialized\" (systemd makes one at first boot)")
    dbus = root / "var/lib/dbus/machine-id"
    if dbus.exists() or dbus.is_symlink():
        if not dry_run:
            dbus.unlink()
        done.append("remove /var/lib/dbus/machine-id")
    keys = host_keys(root)
    if keys:
        if not dry_run:
            for key in keys:
                key.unlink()
        done.append(f"remove {len(keys)} SSH host key file(s) from /etc/ssh")
    return done


def renew(root: Path, state: Path, *, run: Run = _run,
          now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> list[str] | None:
    """Once per card: replace the SSH host keys with new ones. None if already done here."""
    marker = state / MARKER
    if marker.exists():
        return None
    for key in host_keys(root):
        key.unlink()
    argv = ["ssh-keygen", "-A"] + ([] if root.resolve() == Path("/") else ["-f", str(root)])
    try:
        done = run(argv)
    except FileNotFoundError as exc:
        raise Permanent("ssh-keygen is not installed (apt install openssh-client)") from exc
    if done.returncode != 0:
        raise Permanent(f"ssh-keygen -A failed ({done.returncode}): {done.stderr.strip()[:300]}")
    prints = ssh_fingerprints(root / "etc/ssh")
    state.mkdir(parents=True, exist_ok=True)
    write_atomic(marker, json.dumps({"renewed_at": now().isoformat(timespec="seconds"),
                                     "ssh": prints}, indent=1).encode(), mode=0o644)
    return prints


def ssh_fingerprints(etc_ssh: Path) -> list[str]:
    """``ED25519 SHA256:...`` for each host public key, as `ssh-keygen -l` and ssh print them."""
    out = []
    for pub in sorted(etc_ssh.glob("ssh_host_*_key.pub")):
        try:
            kind, blob = pub.read_text().split()[:2]
            raw = base64.b64decode(blob, validate=True)
        except (OSError, ValueError):
            continue
        digest = base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")
        name = kind.removeprefix("ssh-").removeprefix("ecdsa-sha2-").upper()
        out.append(f"{'ECDSA' if kind.startswith('ecdsa') else name} SHA256:{digest}")
    return out


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `identity` to the doorstep CLI; it sets `func` to the handler."""
    p = sub.add_parser("identity", help="make this card's own SSH host keys (once, at first "
                       "boot)", description="Replace the SSH host keys with new ones, once per "
                       "card (doorstep-identity.service runs it before ssh starts), so cards "
                       "flashed from one image never share them.")
    p.add_argument("--root", default="/", metavar="DIR", help="the system's root (tests)")
    p.add_argument("--state", default="/var/lib/doorstep-identity", metavar="DIR",
                   help="where the once-per-card marker is kept")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    try:
        prints = renew(Path(args.root), Path(args.state))
    except (Permanent, OSError) as exc:
        print(f"doorstep identity: error: {exc}", file=sys.stderr)
        return 1
    if prints is None:
        print("nothing to do: this card's SSH host keys were made here already")
        return 0
    print("new SSH host keys for this card:")
    for line in prints:
        print(f"  {line}")
    return 0
