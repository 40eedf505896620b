"""`doorstep doctor`: on this machine (no camera, no GPIO, no systemd) it runs and fails
cleanly; against the fake picamera2, a video file, a real Mosquitto and MockFactory pins its
checks pass, and each fault they can meet fails with its fix."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from gpiozero import DigitalOutputDevice
from gpiozero.pins.mock import MockFactory, MockPin

from doorstep.config.load import parse_config
from doorstep.config.schema import Config
from doorstep.doctor import camera, gpio, system
from doorstep.doctor.cli import Doctor
from doorstep.doctor.report import Status, ok, to_json
from doorstep.protocol.keys import SigningKey, fingerprint
from tests.capture.conftest import write_video

RECIPIENT = "age1dgwc9pqa0ddhff2h5yfhw5xe0fjl7hrd8xuwhrfwusupcenfzdfq0fdu2d"
INBOX_KEY = "ed25519:YyvnjXu9mwNtPkWlgQHNWam5QSBQPzVG07z6wwpHZ0E="


def config(tmp_path: Path, extra: str = "", *, source: str = "picamera2", size: str = "320x240",
           fps: int = 30) -> Path:
    w, h = size.split("x")
    path = tmp_path / "doorstep.toml"
    path.write_text(f"""
[device]
id = "porch"
data_dir = "{tmp_path / 'data'}"
[owner]
recipients = ["{RECIPIENT}"]
inbox_key = "{INBOX_KEY}"
[camera]
source = "{source}"
width = {w}
height = {h}
fps = {fps}
lores_width = 160
lores_height = 120
[mqtt]
host = "localhost"
port = 1883
tls = false
{extra}
""")
    return path


def cfg_of(path: Path) -> Config:
    return parse_config(path.read_text())


def by_name(results: list[Any]) -> dict[str, Any]:
    return {r.name: r for r in results}


# -- on this machine, as an installer would run it -----------------------------------------------
def test_on_this_machine_it_runs_and_fails_cleanly_with_no_camera(tmp_path: Path) -> None:
    path = config(tmp_path)
    argv = [sys.executable, "-m", "doorstep", "doctor", "--config", str(path),
            "--credentials", str(tmp_path / "credstore"), "--no-button"]
    text = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path)
    as_json = subprocess.run([*argv, "--json"], capture_output=True, text=True, cwd=tmp_path)
    for done in (text, as_json):
        assert done.returncode == 1
        assert "Traceback" not in done.stderr + done.stdout
    report = json.loads(as_json.stdout)
    assert report["ok"] is False and report["device"] == "porch"
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["camera"]["status"] == "FAIL"
    assert "python3-picamera2" in checks["camera"]["fix"]
    assert checks["encoder"]["status"] == "SKIP"        # it needs the camera picamera2 lacks
    assert checks["button"]["status"] == "SKIP"
    assert checks["keys"]["status"] == "FAIL" and "first boot" in checks["keys"]["fix"]
    assert checks["module numpy"]["status"] == "PASS" and checks["module numpy"]["data"]["path"]
    # the text report says the same, one line a check, each FAIL with its fix
    for check in report["checks"]:
        line = next(ln for ln in text.stdout.splitlines()
                    if ln.startswith(f"{check['status']:<5} {check['name']} "))
        assert line
    assert text.stdout.count("fix: ") == sum(c["status"] == "FAIL" for c in report["checks"])
    assert text.stdout.rstrip().endswith("checks failed (2 skipped)")


def test_a_bad_config_is_reported_and_the_rest_waits_for_it(tmp_path: Path) -> None:
    path = tmp_path / "doorstep.toml"
    path.write_text("[camera]\nfps = 500\n")
    results = list(Doctor(path, root=tmp_path).checks())
    first = results[0]
    assert first.name == "config" and first.status is Status.FAIL
    assert "camera.fps: 500.0 is out of range" in first.detail
    assert by_name(results)["camera"].status is Status.SKIP


# -- camera and encoder --------------------------------------------------------------------------
def test_the_fake_pi_camera_and_its_encoder_pass(tmp_path: Path, fake_camera: Any) -> None:
    cam, enc = camera.check_camera_and_encoder(cfg_of(config(tmp_path)))
    assert cam.status is Status.PASS, cam.detail
    assert cam.data["width"] == 320 and cam.data["fps"] == pytest.approx(30, rel=0.01)
    assert "(imx708, autofocus on)" in cam.detail
    assert enc.status is Status.PASS and enc.data["encoder"] == "picamera2"
    assert enc.data["keyframes"] >= 1
    assert not fake_camera.instances[0].is_open        # closed again for the agent


def test_no_camera_attached_fails_with_the_cable_fix(tmp_path: Path, fake_camera: Any) -> None:
    fake_camera.cameras = 0
    cam, enc = camera.check_camera_and_encoder(cfg_of(config(tmp_path)))
    assert cam.status is Status.FAIL and "no camera 0" in cam.detail
    assert "ribbon cable" in cam.fix and enc.status is Status.SKIP


def test_a_video_file_passes_at_its_size_and_rate(tmp_path: Path) -> None:
    video = write_video(tmp_path / "porch.mkv", frames=40, fps=15)
    cam, enc = camera.check_camera_and_encoder(
        cfg_of(config(tmp_path, source=str(video), fps=15)))
    assert cam.status is Status.PASS, cam.detail
    assert cam.data["fps"] == pytest.approx(15, rel=0.01)
    assert enc.status is Status.PASS and enc.data["encoder"] in ("libx264", "h264_v4l2m2m")


def test_a_source_slower_than_configured_fails_naming_the_rate(tmp_path: Path) -> None:
    video = write_video(tmp_path / "porch.mkv", frames=40, fps=15)
    cam, _ = camera.check_camera_and_encoder(cfg_of(config(tmp_path, source=str(video))))
    assert cam.status is Status.FAIL and "camera.fps asks for 30" in cam.detail
    assert "set camera.fps to match" in cam.fix


def test_a_wrong_size_fails_naming_the_keys(tmp_path: Path) -> None:
    video = write_video(tmp_path / "porch.mkv", frames=40, fps=15)
    cam, _ = camera.check_camera_and_encoder(
        cfg_of(config(tmp_path, source=str(video), size="640x480", fps=15)))
    assert cam.status is Status.FAIL and "camera.width/height ask for 640x480" in cam.detail


def test_without_frames_the_encoder_is_tried_on_a_synthetic_picture(tmp_path: Path) -> None:
    cam, enc = camera.check_camera_and_encoder(
        cfg_of(config(tmp_path, source=str(tmp_path / "gone.mkv"))))
    assert cam.status is Status.FAIL and "no such file" in cam.detail
    assert enc.status is Status.PASS and "synthetic" in enc.detail


# -- GPIO ----------------------------------------------------------------------------------------
PINS = """
[button]
pin = "GPIO17"
[chime]
enabled = true
pin = "GPIO27"
[led]
enabled = true
pin = "GPIO22"
"""


def test_free_pins_pass_and_a_press_is_awaited(tmp_path: Path) -> None:
    cfg = cfg_of(config(tmp_path, PINS))
    factory = MockFactory()
    assert gpio.check_pins(cfg, factory).status is Status.PASS
    asked: list[str] = []

    def press(text: str) -> None:        # the installer, reading the prompt, presses
        asked.append(text)
        factory.pin(17).drive_low()
        factory.pin(17).drive_high()

    result = gpio.check_button(cfg, factory, timeout=30, prompt=press)
    assert result.status is Status.PASS and asked and "press the doorbell button" in asked[0]


def test_a_button_nobody_presses_fails_with_the_wiring(tmp_path: Path) -> None:
    cfg = cfg_of(config(tmp_path, PINS))
    result = gpio.check_button(cfg, MockFactory(), timeout=0.01, prompt=lambda text: None)
    assert result.status is Status.FAIL and "GND" in result.fix
    skipped = gpio.check_button(cfg, MockFactory(), skip=True)
    assert skipped.status is Status.SKIP and "--no-button" in skipped.detail


class Shorted(MockPin):
    """A button pin that reads low whatever the pull-up does (wired wrong, or stuck)."""

    def _set_pull(self, value: str) -> None:
        super()._set_pull(value)
        self.drive_low()


def test_a_button_that_reads_pressed_at_rest_is_miswired(tmp_path: Path) -> None:
    cfg = cfg_of(config(tmp_path, PINS))
    factory = MockFactory(pin_class=Shorted)
    result = gpio.check_button(cfg, factory, prompt=lambda text: None)
    assert result.status is Status.FAIL and "before anyone pressed it" in result.detail


def test_a_pin_in_use_or_named_twice_fails(tmp_path: Path) -> None:
    factory = MockFactory()
    held = DigitalOutputDevice("GPIO27", pin_factory=factory)    # someone else has the chime pin
    try:
        result = gpio.check_pins(cfg_of(config(tmp_path, PINS)), factory)
    finally:
        held.close()
    assert result.status is Status.FAIL and "chime.pin = GPIO27" in result.detail
    assert "stop the agent" in result.fix
    twice = gpio.check_pins(cfg_of(config(tmp_path, PINS.replace("GPIO22", "GPIO17"))),
                            MockFactory())
    assert twice.status is Status.FAIL
    assert "led.pin and button.pin both name GPIO17" in twice.detail


# -- the broker ----------------------------------------------------------------------------------
def tls_config(tmp_path: Path, pki: Path, port: int, *, password: str = "open sesame",
               ca: str = "ca.pem") -> tuple[Config, Path]:
    creds = tmp_path / "credstore"
    creds.mkdir(exist_ok=True)
    (creds / "mqtt-password").write_text(password + "\n")
    path = config(tmp_path)
    text = path.read_text().replace("""[mqtt]
host = "localhost"
port = 1883
tls = false""", f"""[mqtt]
host = "localhost"
port = {port}
tls = true
ca_file = "{pki / ca}"
cert_file = "{pki / 'client.pem'}"
key_file = "{pki / 'client.key'}"
username = "porch"
password_file = "mqtt-password"
""")
    path.write_text(text)
    return parse_config(text), creds


@pytest.mark.slow
def test_the_broker_with_tls_and_credentials(tmp_path: Path, tls_broker: Any) -> None:
    broker, pki = tls_broker
    cfg, creds = tls_config(tmp_path, pki, broker.port)
    good = system.check_broker(cfg, credentials=creds)
    assert good.status is Status.PASS and "connected as porch" in good.detail
    cfg, creds = tls_config(tmp_path, pki, broker.port, password="not it")
    wrong = system.check_broker(cfg, credentials=creds)
    assert wrong.status is Status.FAIL and "refused" in wrong.detail
    assert "not it" not in wrong.detail + wrong.fix             # never show a secret
    cfg, creds = tls_config(tmp_path, pki, broker.port, ca="client.pem")  # not the CA
    untrusted = system.check_broker(cfg, credentials=creds)
    assert untrusted.status is Status.FAIL and "mqtt.ca_file" in untrusted.fix
    broker.stop()
    cfg, creds = tls_config(tmp_path, pki, broker.port)
    gone = system.check_broker(cfg, credentials=creds)
    assert gone.status is Status.FAIL and "cannot connect" in gone.detail


def test_the_broker_without_tls_or_credentials_fails(tmp_path: Path) -> None:
    cfg = cfg_of(config(tmp_path))
    anonymous = system.check_broker(cfg, credentials=tmp_path)
    assert anonymous.status is Status.FAIL and "no credentials" in anonymous.detail
    remote = parse_config(
        config(tmp_path).read_text().replace('host = "localhost"', 'host = "10.1.2.3"')
        .replace("tls = false", "tls = false\ninsecure_no_tls = true"))
    clear = system.check_broker(remote, credentials=tmp_path)
    assert clear.status is Status.FAIL and "mqtt.tls = true" in clear.fix


# -- clock, disk, keys, recipients, modules ------------------------------------------------------
def test_the_clock_is_read_as_the_agent_reads_it(tmp_path: Path) -> None:
    marker = tmp_path / "run/systemd/timesync/synchronized"
    marker.parent.mkdir(parents=True)
    no = system.check_clock(tmp_path, run=lambda argv: subprocess.CompletedProcess(
        argv, 0, "no\n", ""))
    assert no.status is Status.FAIL and "not synchronised" in no.detail
    marker.touch()
    assert system.check_clock(tmp_path).status is Status.PASS


def test_disk_space_and_card_wear(tmp_path: Path) -> None:
    cfg = cfg_of(config(tmp_path))
    fine = system.check_disk(cfg)
    assert fine.status is Status.PASS and "MB written a day" in fine.detail
    low = system.estimate_wear(cfg, 32 * 10**9, events_per_day=50, event_seconds=10)
    double = parse_config(config(tmp_path, "[encoder]\nbitrate_kbps = 5000\n").read_text())
    high = system.estimate_wear(double, 32 * 10**9, events_per_day=50, event_seconds=10)
    assert high.bytes_per_day > 1.8 * low.bytes_per_day and high.card_years < low.card_years
    huge = parse_config(config(tmp_path, "[outbox]\nquota_mb = 999999\n").read_text())
    full = system.check_disk(huge)
    assert full.status is Status.FAIL and "outbox.quota_mb" in full.fix
    busy = system.check_disk(cfg, events_per_day=10**7)
    assert busy.status is Status.FAIL and "high-endurance" in busy.fix


def test_keys_show_their_fingerprints(tmp_path: Path) -> None:
    inbox = SigningKey.generate()
    cfg = parse_config(config(tmp_path).read_text().replace(INBOX_KEY, inbox.public_text()))
    missing = system.check_keys(cfg, credentials=tmp_path / "credstore")
    assert missing.status is Status.FAIL and "first boot" in missing.fix
    device = SigningKey.generate()
    (tmp_path / "credstore").mkdir()
    device.save(tmp_path / "credstore/device.key")
    found = system.check_keys(cfg, credentials=tmp_path / "credstore")
    assert found.status is Status.PASS
    assert fingerprint(device.public_key) in found.detail
    assert f"owner.inbox_key: fingerprint {fingerprint(inbox.public_key)}" in found.detail
    assert system.check_recipients(cfg).status is Status.PASS


def test_modules_are_imported_by_the_venv_with_their_paths(tmp_path: Path) -> None:
    video = cfg_of(config(tmp_path, source="/dev/video0"))
    results = by_name(system.check_modules(video))
    for name in ("numpy", "cv2", "av"):
        r = results[f"module {name}"]
        assert r.status is Status.PASS and r.data["path"] and r.data["version"]
    assert results["module picamera2"].status is Status.SKIP     # not needed for a USB camera
    pi = by_name(system.check_modules(cfg_of(config(tmp_path))))
    assert pi["module picamera2"].status is Status.FAIL          # needed, and not here


# -- everything at once --------------------------------------------------------------------------
@pytest.mark.slow
def test_a_whole_run_passes_where_everything_is_in_place(tmp_path: Path, tls_broker: Any,
                                                         fake_camera: Any) -> None:
    broker, pki = tls_broker
    _, creds = tls_config(tmp_path, pki, broker.port)
    path = tmp_path / "doorstep.toml"
    path.write_text(path.read_text() + PINS)
    SigningKey.generate().save(creds / "device.key")
    (tmp_path / "root/run/systemd/timesync").mkdir(parents=True)
    (tmp_path / "root/run/systemd/timesync/synchronized").touch()
    factory = MockFactory()

    def press(text: str) -> None:
        factory.pin(17).drive_low()
        factory.pin(17).drive_high()

    results = list(Doctor(path, credentials=creds, pin_factory=factory, prompt=press,
                          root=tmp_path / "root").checks())
    bad = [(r.name, r.detail) for r in results if r.status is Status.FAIL
           and not r.name.startswith("module picamera2") and r.name != "module simplejpeg"]
    assert bad == []
    report = json.loads(to_json(results))
    assert [c["name"] for c in report["checks"]][:10] == [
        "config", "camera", "encoder", "gpio", "button", "broker", "clock", "disk", "keys",
        "recipients"]
    assert ok(r for r in results if not r.name.startswith("module "))
