"""The hub is blind (docs/design.md decisions 12 and 24): `doorstep home` runs as a user who
can read no identity at all (nobody; the owner's keys are in a folder only root opens), stores
a real recording with a ring, and afterwards nothing it wrote holds plaintext or a key that
decrypts: its only private keys are the receipt key (Ed25519) and the push key (P-256)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from doorstep.broker import free_port
from doorstep.protocol.age import decrypt, load_identities
from tests.owner.hub.rig import Household
from tests.owner.hub.rig import household as make_household

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                                 reason="needs root and setpriv to run the hub as nobody")]

NOBODY = 65534
# a key, a JPEG (snapshot or thumbnail), an MP4, an event body (json.dumps' spacing: the
# signed manifests in .env files are compact and name kinds, which the hub may read)
PLAINTEXT_MARKS = [b"AGE-SECRET-KEY-1", b"JFIF\x00\x01", b"Lavf", b'"type": "',
                   b'"pressed"']


def as_nobody(*argv: str, **kw: object) -> list[str]:
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv]


def test_the_hub_runs_with_no_identity_and_writes_no_plaintext(tmp_path: Path) -> None:
    secrets = tmp_path / "owner"            # root's, 0700: the hub cannot read it
    house: Household = make_household(secrets)
    house.hub.stop()                        # the in-process hub of the rig is not used here
    home = Path(tempfile.mkdtemp(prefix="doorstep-blind-"))
    os.chown(home, NOBODY, NOBODY)
    port = free_port()
    doorstep = str(Path(sys.executable).with_name("doorstep"))
    devices = home / "devices"
    devices.write_text(f"demo {house.device_key.public_text()}\n")
    proc = subprocess.Popen(as_nobody(
        doorstep, "home", "--home", str(home), "--devices", str(devices), "--port", str(port),
        "--host", "127.0.0.1", "--mqtt-port", str(house.broker.port)),
        env={"PATH": "/usr/bin:/bin", "HOME": str(home), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT)
    try:
        # nothing the owner holds is readable by the hub's user
        probe = subprocess.run(as_nobody("cat", str(house.owner_key)), capture_output=True)
        assert probe.returncode != 0 and b"Permission denied" in probe.stderr
        key_line = _wait_line(proc, b"inbox_key = ")
        inbox = key_line.split(b'"')[1].decode()
        _wait_for(lambda: (home / "hub" / "url").exists(), "the hub to listen")
        house.config_text = house.config_text.replace(
            house.config_text.split('inbox_key = "')[1].split('"')[0], inbox)
        service, _ = house.agent(press_at=4.0)
        house.run(service).join(180)
        store = home / "store" / "demo"
        _wait_for(lambda: list(store.glob("*.clip.age")), "a stored clip")
        assert service.outbox.depth == 0     # every artifact has the hub's signed receipt
    finally:
        proc.terminate()
        proc.wait(20)
        house.broker.stop()

    # it stored real, openable artifacts: the owner (not the hub) opens them
    owner = load_identities(house.owner_key)
    assert decrypt(sorted(store.glob("*.clip.age"))[0].read_bytes(), owner)[4:8] == b"ftyp"
    written = [p for p in home.rglob("*") if p.is_file()]
    assert len(written) > 10
    private = []
    for path in written:
        data = path.read_bytes()
        for mark in PLAINTEXT_MARKS:
            assert mark not in data, f"{path}: holds {mark!r}"
        if b"PRIVATE KEY" in data:
            private.append(path)
    kinds = {p.name: type(serialization.load_pem_private_key(p.read_bytes(), None))
             for p in private}
    assert set(kinds) == {"inbox.key", "vapid.pem"}
    assert issubclass(kinds["inbox.key"], ed25519.Ed25519PrivateKey)
    assert issubclass(kinds["vapid.pem"], ec.EllipticCurvePrivateKey)
    shutil.rmtree(home)


def _wait_line(proc: subprocess.Popen[bytes], needle: bytes) -> bytes:
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if needle in line:
            return line
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"`doorstep home` never printed {needle!r}")


def _wait_for(what: object, message: str) -> None:
    deadline = time.monotonic() + 120
    while not what():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {message}"
        time.sleep(0.1)


