"""A card's own identity: an image is stripped of the machine-id and SSH host keys, each card
makes its own host keys once (with the real ssh-keygen), first boot prints their fingerprints
beside the device key's, and Raspberry Pi Imager's own files on the boot partition (cloud-init's
user-data and network-config on Trixie, firstrun.sh on Bookworm) are left exactly as they
were."""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

import pytest

from doorstep.provision import firstboot as fb
from doorstep.provision import identity, install
from tests.provision.test_firstboot import GOOD, Places
from tests.provision.test_install import UNITS, FakeSystem, LocalInstaller

needs_ssh_keygen = pytest.mark.skipif(shutil.which("ssh-keygen") is None,
                                      reason="ssh-keygen (Debian package openssh-client) is "
                                             "not installed")


def a_booted_root(root: Path) -> Path:
    """What a card that has booted once holds: its machine-id and its SSH host keys."""
    (root / "etc/ssh").mkdir(parents=True)
    (root / "etc/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    (root / "var/lib/dbus").mkdir(parents=True)
    (root / "var/lib/dbus/machine-id").symlink_to("/etc/machine-id")
    for kind in ("ed25519", "rsa"):
        (root / f"etc/ssh/ssh_host_{kind}_key").write_text("private\n")
        (root / f"etc/ssh/ssh_host_{kind}_key.pub").write_text("public\n")
    return root


def test_an_image_is_stripped_of_one_machines_identity(tmp_path: Path) -> None:
    root = a_booted_root(tmp_path)
    assert len(identity.prepare_image(root, dry_run=True)) == 3
    assert (root / "etc/ssh/ssh_host_rsa_key").exists()          # a dry run changes nothing
    done = identity.prepare_image(root)
    assert len(done) == 3
    assert (root / "etc/machine-id").read_text() == "uninitialized\n"
    assert not (root / "var/lib/dbus/machine-id").is_symlink()
    assert identity.host_keys(root) == []
    assert identity.prepare_image(root) == []                     # and again: nothing to do


def test_install_for_an_image_enables_the_identity_unit(tmp_path: Path) -> None:
    root = a_booted_root(tmp_path)
    fake = FakeSystem(root)
    inst = LocalInstaller(root=root, runner=fake, units_dir=UNITS, config_text=b"",
                          image=True)
    inst.run()
    assert ["systemctl", "enable", *install.ENABLED, *install.IMAGE_ENABLED] in fake.calls
    assert (root / "etc/systemd/system/doorstep-identity.service").exists()
    assert (root / "etc/machine-id").read_text() == "uninitialized\n"
    assert identity.host_keys(root) == []
    plain = LocalInstaller(root=tmp_path / "card", runner=FakeSystem(tmp_path / "card"),
                           units_dir=UNITS, config_text=b"")
    plain.run()                                 # a card installed by hand keeps its identity
    assert not any("machine-id" in line for line in plain.report)


@needs_ssh_keygen
def test_each_card_makes_its_own_host_keys_once(tmp_path: Path) -> None:
    root = a_booted_root(tmp_path / "root")
    state = tmp_path / "state"
    prints = identity.renew(root, state)
    assert prints is not None and any(p.startswith("ED25519 SHA256:") for p in prints)
    assert (root / "etc/ssh/ssh_host_ed25519_key.pub").read_text().startswith("ssh-ed25519 ")
    pub = root / "etc/ssh/ssh_host_ed25519_key.pub"
    listed = subprocess.run(["ssh-keygen", "-l", "-f", str(pub)], capture_output=True,
                            text=True, check=True).stdout
    assert next(p for p in prints if p.startswith("ED25519")).split()[1] in listed
    before = (root / "etc/ssh/ssh_host_ed25519_key").read_bytes()
    assert identity.renew(root, state) is None                    # once per card
    assert (root / "etc/ssh/ssh_host_ed25519_key").read_bytes() == before
    other = a_booted_root(tmp_path / "other")
    identity.renew(other, tmp_path / "other-state")
    assert (other / "etc/ssh/ssh_host_ed25519_key").read_bytes() != before  # never shared


IMAGER_FILES = {
    # Trixie: Imager writes cloud-init's NoCloud files
    "user-data": "#cloud-config\nhostname: doorbell-front\nusers:\n- name: installer\n",
    "network-config": "network:\n  version: 2\n  wifis:\n    wlan0:\n      dhcp4: true\n",
    "meta-data": "instance_id: rpi-imager-1700000000\n",
    # Bookworm: Imager's first-run script, started from cmdline.txt
    "firstrun.sh": "#!/bin/bash\nset +e\necho doorbell-front >/etc/hostname\n",
    "cmdline.txt": "console=serial0,115200 root=PARTUUID=1234-02 rootwait "
                   "systemd.run=/boot/firstrun.sh systemd.run_success_action=reboot\n",
    "config.txt": "dtparam=audio=on\ncamera_auto_detect=1\n",
}


@needs_ssh_keygen
def test_first_boot_works_beside_imagers_files_and_prints_ssh_fingerprints(
        tmp_path: Path) -> None:
    places = Places(tmp_path)
    places.drop(GOOD)
    for name, text in IMAGER_FILES.items():
        (places.boot / name).write_text(text)
    root = tmp_path / "root"
    (root / "etc/ssh").mkdir(parents=True)
    prints = identity.renew(root, tmp_path / "state")
    assert prints
    outcome = fb.firstboot(boot=places.boot, etc=places.etc, data=places.data,
                           credentials=places.credentials, ssh=root / "etc/ssh")
    assert outcome is not None
    assert not (places.boot / fb.BOOT_FILE).exists()              # ours is erased...
    for name, text in IMAGER_FILES.items():                       # ...Imager's are untouched
        assert (places.boot / name).read_text() == text
    note = (places.boot / fb.FINGERPRINT_FILE).read_text()
    assert outcome.provisioned.fingerprint in note
    for line in prints:
        assert line in note


def test_the_identity_command_runs_once(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    identity.register(parser.add_subparsers())
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / identity.MARKER).write_text("{}")
    args = parser.parse_args(["identity", "--root", str(tmp_path), "--state",
                              str(tmp_path / "state")])
    assert identity.main(args) == 0
    assert "already" in capsys.readouterr().out
