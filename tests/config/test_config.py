"""Config: typed sections, unknown keys refused, every problem named by its dotted key, at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from doorstep.cli import main
from doorstep.config import load_config, parse_config
from doorstep.core.errors import ConfigError
from doorstep.protocol.keys import SigningKey

REPO = Path(__file__).resolve().parents[2]
RECIPIENT = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
INBOX = SigningKey.generate().public_text()
OWNER = f'[owner]\nrecipients = ["{RECIPIENT}"]\ninbox_key = "{INBOX}"\n'


def test_example_config_is_valid() -> None:
    cfg = load_config(REPO / "config" / "example.toml")
    assert cfg.device.id == "frontdoor"
    assert cfg.topic_prefix == "doorstep/frontdoor/"


def test_every_problem_is_reported_at_once_with_its_dotted_key() -> None:
    text = f"""
[owner]
recipients = ["{RECIPIENT}"]
inbox_key = "{INBOX}"
[device]
id = "Front Door"
colour = "red"
[camera]
fps = 500
width = "wide"
[mqtt]
protocol = "4"
"""
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    problems = "\n".join(info.value.problems)
    assert len(info.value.problems) == 5
    assert "device.id: 'Front Door'" in problems
    assert "device.colour: unknown key" in problems
    assert "camera.fps: 500.0 is out of range (allowed: 1 to 120)" in problems
    assert "camera.width: expected a whole number, got 'wide'" in problems
    assert "mqtt.protocol: '4' is not allowed (allowed: '5', '3.1.1')" in problems


def test_unknown_section_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"camra: unknown key"):
        parse_config(f'{OWNER}[camra]\nfps = 3\n')


@pytest.mark.parametrize(("polygon", "message"), [
    ("[[0, 0], [1, 1]]", "at least 3"),
    ("[[0, 0], [1.5, 0], [1, 1]]", "motion.zones[0][1]: expected [x, y] with 0 <= x, y <= 1"),
    ("[[0, 0], [0.5, 0.5], [1, 1]]", "no area"),
    ('"everywhere"', "motion.zones[0]: expected a list"),
])
def test_invalid_polygons_are_named(polygon: str, message: str) -> None:
    text = f'{OWNER}[motion]\nzones = [{polygon}]\n'
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert message in str(info.value)


def test_valid_polygons_are_kept_as_tuples() -> None:
    cfg = parse_config(f'{OWNER}[privacy]\n'
                       'masks = [[[0, 0], [0.5, 0], [0.5, 0.5]]]\n')
    assert cfg.privacy.masks == (((0.0, 0.0), (0.5, 0.0), (0.5, 0.5)),)


def test_recipients_are_required_and_checked() -> None:
    with pytest.raises(ConfigError, match=r"owner\.recipients: at least one"):
        parse_config("")
    with pytest.raises(ConfigError, match=r"owner\.recipients\[0\]: 'age1nope'"):
        parse_config('[owner]\nrecipients = ["age1nope"]\n')


def test_broken_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_config("[device\nid=")
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_config(tmp_path / "absent.toml")


def test_check_config_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = REPO / "config" / "example.toml"
    assert main(["-q", "check-config", str(good)]) == 0
    assert "OK" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text(f'{OWNER}[clip]\npreroll_seconds = -1\n')
    assert main(["-q", "check-config", str(bad)]) == 1
    assert "clip.preroll_seconds: -1.0 is out of range" in capsys.readouterr().err


def test_tls_is_on_by_default_and_plaintext_off_this_machine_needs_a_named_risk() -> None:
    base = f'[device]\nid = "d"\n{OWNER}'
    cfg = parse_config(base)
    assert cfg.mqtt.tls is True and cfg.mqtt.port == 8883
    assert parse_config(base + '[mqtt]\nhost = "127.0.0.1"\nport = 1883\ntls = false\n')
    with pytest.raises(ConfigError) as err:
        parse_config(base + '[mqtt]\nhost = "broker.example.net"\ntls = false\n'
                     'username = "door"\npassword_file = "pw"\n')
    assert any(p.startswith("mqtt.tls: TLS is off for broker.example.net") and
               "mqtt.insecure_no_tls = true" in p for p in err.value.problems)
    accepted = parse_config(base + '[mqtt]\nhost = "broker.example.net"\ntls = false\n'
                            'insecure_no_tls = true\n')
    assert accepted.mqtt.tls is False


def test_check_config_warns_when_this_machine_has_no_gpio_for_the_button(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from gpiozero import Device

    from doorstep.core.gpio import gpio_problem

    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)
    monkeypatch.setattr(Device, "pin_factory", None)
    if gpio_problem() is None:
        pytest.skip("this machine has GPIO")
    good = REPO / "config" / "example.toml"       # the default: [button] enabled = true
    assert main(["-q", "check-config", str(good)]) == 0   # a warning: the file may be for a Pi
    out = capsys.readouterr()
    assert "OK" in out.out
    assert "warning: button.enabled = true, but this machine has no GPIO" in out.err
    assert "button.enabled = false" in out.err and "GPIOZERO_PIN_FACTORY=mock" in out.err
    assert Device.pin_factory is None
    # with the mock pin factory (development) there is nothing to warn about
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    assert main(["-q", "check-config", str(good)]) == 0
    assert "warning" not in capsys.readouterr().err
    assert Device.pin_factory is None


# -- capture defaults and night mode (issue 16) --------------------------------------------------
def problems_of(extra: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(f'{OWNER}{extra}')
    return info.value.problems


def test_capture_defaults_are_continuous_focus_and_mjpeg_when_needed() -> None:
    cfg = parse_config(f'{OWNER}')
    assert cfg.camera.focus == "continuous" and cfg.camera.v4l2_format == "auto"
    assert cfg.camera.hdr == "off" and cfg.night.enabled is False


@pytest.mark.parametrize(("extra", "message"), [
    ("[camera]\nlens_position = 2.0\n",
     'camera.lens_position: set to 2, but camera.focus is \'continuous\''),
    ("[camera]\nmax_exposure_ms = 10\n",
     "camera.max_exposure_ms: 10 is shorter than one frame at 30 fps (33.3 ms)"),
    ("[camera]\nhdr = \"sensor\"\nwidth = 3840\nheight = 2160\n",
     'camera.hdr: "sensor" HDR works up to 2304x1296 at 30 fps, not 3840x2160'),
    ("[camera]\nsource = \"porch.mp4\"\nnoir = true\n",
     'camera.noir: only for camera.source = "picamera2"'),
    ("[camera]\nv4l2_format = \"mjpeg\"\n", "camera.v4l2_format: only for a /dev/videoN camera"),
    ("[camera]\nfocus = \"macro\"\n", "camera.focus: 'macro' is not allowed"),
    ("[night]\nenabled = true\n", "night.enabled: true, but neither night.ircut_pin"),
    ("[night]\nenabled = true\nir_led_pin = \"GPIO5\"\ndark_below = 30.0\n",
     "night.light_above: 20 must be above night.dark_below (30)"),
    ("[camera]\nsource = \"/dev/video0\"\n[night]\nenabled = true\nir_led_pin = \"GPIO5\"\n",
     'night.level: "lux" comes from a Pi camera'),
    ("[night]\nenabled = true\nircut_pin = \"GPIO17\"\n",
     "night.ircut_pin: GPIO17 is already button.pin"),
])
def test_capture_and_night_problems_name_their_keys(extra: str, message: str) -> None:
    found = problems_of(extra)
    assert any(message in p for p in found), found


def test_a_full_night_and_camera_section_is_accepted() -> None:
    cfg = parse_config(f"""
[owner]
recipients = ["{RECIPIENT}"]
inbox_key = "{INBOX}"
[camera]
focus = "fixed"
lens_position = 1.5
exposure_mode = "short"
max_exposure_ms = 100
hdr = "sensor"
width = 2304
height = 1296
noir = true
[night]
enabled = true
ircut_pin = "GPIO23"
ir_led_pin = "GPIO24"
dark_below = 3
light_above = 15
""")
    assert cfg.camera.lens_position == 1.5 and cfg.night.ir_led_pin == "GPIO24"


def test_a_config_without_the_inbox_key_names_it() -> None:
    """Wire version 2 seals every head and the status to the inbox key: a device without it
    could only send them in clear, so the config is refused, naming the key."""
    with pytest.raises(ConfigError, match=r"owner\.inbox_key: required"):
        parse_config(f'[owner]\nrecipients = ["{RECIPIENT}"]\n')
    with pytest.raises(ConfigError, match=r"owner\.inbox_key: public key 'nope'"):
        parse_config(f'[owner]\nrecipients = ["{RECIPIENT}"]\ninbox_key = "nope"\n')
