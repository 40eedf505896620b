"""First boot against a tmp dir standing in for the boot partition, /etc, the data dir and the
credential store."""

from __future__ import annotations

import argparse
import logging
import os
import stat
import tomllib
from pathlib import Path

import pytest

from doorstep.config import provisioned
from doorstep.config.load import load_config
from doorstep.core.errors import ConfigError, DoorstepError
from doorstep.protocol.keys import SigningKey, fingerprint
from doorstep.provision import firstboot as fb

RECIPIENT = "age1dgwc9pqa0ddhff2h5yfhw5xe0fjl7hrd8xuwhrfwusupcenfzdfq0fdu2d"
INBOX_KEY = "ed25519:YyvnjXu9mwNtPkWlgQHNWam5QSBQPzVG07z6wwpHZ0E="
PASSWORD = "correct horse battery staple"

GOOD = f"""
[device]
id = "front-door"

[owner]
recipients = ["{RECIPIENT}"]
inbox_key = "{INBOX_KEY}"

[mqtt]
host = "broker.example.net"
port = 8883
tls = true
username = "front-door"

[chime]
enabled = true
quiet_hours = ["22:00-07:00"]

[secrets]
mqtt_password = "{PASSWORD}"
"""


class Places:
    def __init__(self, tmp: Path) -> None:
        self.boot = tmp / "boot"
        self.etc = tmp / "etc" / "doorstep"
        self.data = tmp / "var" / "lib" / "doorstep"
        self.credentials = tmp / "etc" / "credstore"
        self.boot.mkdir()
        self.tmp = tmp

    @property
    def cred_dir(self) -> Path:
        return self.credentials / "doorstep"

    def drop(self, text: str) -> None:
        (self.boot / fb.BOOT_FILE).write_text(text)

    def run(self) -> fb.Outcome | None:
        return fb.firstboot(boot=self.boot, etc=self.etc, data=self.data,
                            credentials=self.credentials, wall=lambda: 1_700_000_000.0)

    def snapshot(self) -> dict[str, tuple[int, bytes]]:
        """Every path outside the boot partition, with its mode and content."""
        out = {}
        for p in sorted(self.tmp.rglob("*")):
            if self.boot in (p, *p.parents):
                continue
            st = p.lstat()
            out[str(p.relative_to(self.tmp))] = (st.st_mode,
                                                 p.read_bytes() if p.is_file() else b"")
        return out


@pytest.fixture
def places(tmp_path: Path) -> Places:
    return Places(tmp_path)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_good_file_provisions_the_device(places: Places) -> None:
    places.drop(GOOD)
    outcome = places.run()
    assert outcome is not None and outcome.new_key

    config = load_config(places.etc / "doorstep.toml")  # the installed config is valid
    assert config.device.id == "front-door"
    assert config.mqtt.password_file == "mqtt-password"
    assert config.device.data_dir == str(places.data)
    assert config.chime.quiet_hours == ("22:00-07:00",)
    assert PASSWORD not in (places.etc / "doorstep.toml").read_text()

    assert (places.cred_dir / "mqtt-password").read_text() == PASSWORD
    assert mode(places.cred_dir / "mqtt-password") == 0o600
    assert mode(places.cred_dir) == 0o700
    key = SigningKey.load(places.cred_dir / "device.key")
    assert mode(places.cred_dir / "device.key") == 0o600

    fp = fingerprint(key.public_key)
    note = (places.boot / fb.FINGERPRINT_FILE).read_text()
    assert fp in note and key.public_text() in note
    assert provisioned.read_provisioned(places.data) == provisioned.Provisioned(
        device_id="front-door", fingerprint=fp, public_key=key.public_text(),
        provisioned_at=1_700_000_000.0)

    assert not (places.boot / fb.BOOT_FILE).exists()
    assert sorted(p.name for p in places.boot.iterdir()) == [fb.FINGERPRINT_FILE]
    leftovers = [p for p in places.tmp.rglob("*") if ".tmp" in p.name]
    assert leftovers == []


def test_the_secret_never_reaches_the_logs(places: Places,
                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    places.drop(GOOD)
    places.run()
    places.drop(GOOD.replace('port = 8883', 'port = 0'))
    with pytest.raises(ConfigError):
        places.run()
    assert PASSWORD not in caplog.text
    assert PASSWORD not in (places.boot / fb.ERROR_FILE).read_text()


def test_without_a_password_the_credential_file_is_empty(places: Places) -> None:
    places.drop(f'[owner]\nrecipients = ["{RECIPIENT}"]\ninbox_key = "{INBOX_KEY}"\n')
    places.run()
    assert (places.cred_dir / "mqtt-password").read_bytes() == b""
    assert load_config(places.etc / "doorstep.toml").mqtt.password_file == ""


def test_a_bad_file_lists_every_problem_and_changes_nothing(places: Places) -> None:
    # a device provisioned earlier: config, key and password in place
    places.drop(GOOD)
    places.run()
    before = places.snapshot()
    bad = GOOD.replace('port = 8883', 'port = 99999').replace(
        'id = "front-door"', 'id = "Front Door"\ncolour = "red"') + 'api_token = "x"\n'
    places.drop(bad)
    with pytest.raises(ConfigError) as err:
        places.run()
    problems = err.value.problems
    assert any(p.startswith("mqtt.port:") for p in problems)
    assert any(p.startswith("device.id:") for p in problems)
    assert any(p.startswith("device.colour:") for p in problems)
    assert any(p.startswith("secrets.api_token:") for p in problems)
    report = (places.boot / fb.ERROR_FILE).read_text()
    for p in problems:
        assert p in report
    assert places.snapshot() == before  # etc, data and credentials untouched
    assert (places.boot / fb.BOOT_FILE).exists()  # kept for the installer to fix


def test_a_bad_file_on_a_fresh_device_creates_nothing(places: Places) -> None:
    places.drop("[owner]\nrecipients = []\n[secrets]\nmqtt_password = \"pw\"\n")
    with pytest.raises(ConfigError) as err:
        places.run()
    assert any(p.startswith("owner.recipients") for p in err.value.problems)
    assert any("mqtt.username is empty" in p for p in err.value.problems)
    assert places.snapshot() == {}


def test_not_toml_is_reported(places: Places) -> None:
    places.drop("[device\nid = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        places.run()
    assert "not valid TOML" in (places.boot / fb.ERROR_FILE).read_text()


def test_a_failure_while_staging_rolls_everything_back(places: Places) -> None:
    places.drop(GOOD)
    places.run()
    places.drop(GOOD.replace("8883", "8884"))
    # the marker is staged last but one: the password, key and config temp files exist by then
    (places.data / f".{provisioned.PROVISIONED_FILE}.firstboot.tmp").mkdir()
    before = places.snapshot()
    with pytest.raises(OSError):
        places.run()
    assert places.snapshot() == before
    assert load_config(places.etc / "doorstep.toml").mqtt.port == 8883
    assert "nothing was changed" in (places.boot / fb.ERROR_FILE).read_text()


def test_a_directory_in_the_way_is_found_before_anything_moves(places: Places) -> None:
    places.drop(GOOD)
    (places.boot / fb.FINGERPRINT_FILE).mkdir()
    with pytest.raises(DoorstepError, match="is a directory"):
        places.run()
    assert places.snapshot() == {}


def test_a_staging_failure_on_a_fresh_device_removes_what_it_made(places: Places) -> None:
    places.drop(GOOD)
    places.data.parent.mkdir(parents=True)
    places.data.write_text("not a directory")
    with pytest.raises(OSError):
        places.run()
    assert sorted(places.snapshot()) == ["var", "var/lib", "var/lib/doorstep"]
    assert (places.boot / fb.BOOT_FILE).exists()


def test_running_again_keeps_the_device_key(places: Places) -> None:
    places.drop(GOOD)
    first = places.run()
    places.drop(GOOD.replace("8883", "8884"))
    second = places.run()
    assert first is not None and second is not None
    assert not second.new_key
    assert second.provisioned.fingerprint == first.provisioned.fingerprint
    assert load_config(places.etc / "doorstep.toml").mqtt.port == 8884


def test_a_fixed_file_clears_the_error_report(places: Places) -> None:
    places.drop(GOOD.replace("8883", "0"))
    with pytest.raises(ConfigError):
        places.run()
    places.drop(GOOD)
    places.run()
    assert not (places.boot / fb.ERROR_FILE).exists()


def test_no_boot_file_is_nothing_to_do(places: Places) -> None:
    assert places.run() is None
    assert places.snapshot() == {}


def test_erase_overwrites_the_bytes_before_unlinking(tmp_path: Path) -> None:
    secret = tmp_path / "doorstep.toml"
    secret.write_text(GOOD)
    witness = tmp_path / "witness"
    os.link(secret, witness)  # a second name for the same inode shows what happened to its data
    fb.erase(secret)
    assert not secret.exists()
    assert witness.read_bytes() == b""  # overwritten, then truncated


def test_installed_config_round_trips_all_value_kinds() -> None:
    doc = {"top": 1, "camera": {"fps": 12.5, "source": 'a "quoted" path\\ é', "loop": True},
           "motion": {"zones": [[[0.0, 0.0], [1.0, 0.0], [0.5, 1e-05]]]},
           "weird key": {"x.y": -3, "inline": {"a": [1, "b"]}}}
    assert tomllib.loads(fb.dumps_toml(doc)) == doc


def test_the_cli_reports_and_exits_nonzero(places: Places,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    fb.register(parser.add_subparsers())
    argv = ["firstboot", "--boot", str(places.boot), "--etc", str(places.etc), "--data",
            str(places.data), "--credentials", str(places.credentials)]
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    assert "nothing to do" in capsys.readouterr().out
    places.drop(GOOD.replace("8883", "0"))
    assert args.func(args) == 1
    assert "mqtt.port" in capsys.readouterr().err
    places.drop(GOOD)
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "fingerprint" in out and "front-door" in out


def test_the_example_in_the_installer_guide_provisions(places: Places) -> None:
    guide = (Path(__file__).resolve().parents[2] / "docs/installer.md").read_text()
    example = guide.split("<!-- firstboot-example -->\n```toml\n", 1)[1].split("```", 1)[0]
    places.drop(example)
    outcome = places.run()
    assert outcome is not None and outcome.provisioned.device_id == "front-door"
    config = load_config(places.etc / "doorstep.toml")
    assert config.chime.active_high is False and config.button.long_press_seconds == 5.0
    assert len(config.privacy.masks) == 1


def test_modes_hold_under_the_units_umask(places: Places) -> None:
    old = os.umask(0o077)  # doorstep-firstboot.service runs with UMask=0077
    try:
        places.drop(GOOD)
        places.run()
    finally:
        os.umask(old)
    assert mode(places.etc) == 0o755 and mode(places.etc / "doorstep.toml") == 0o644
    assert mode(places.data) == 0o750 and mode(places.data / provisioned.PROVISIONED_FILE) == 0o644
    assert mode(places.cred_dir) == 0o700
