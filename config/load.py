"""Reads doorstep.toml into a typed Config. Every problem is found in one pass and reported
together, each naming the dotted key, the value given and what is allowed."""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import typing
from pathlib import Path
from typing import Any

from doorstep.config.schema import Config
from doorstep.core.errors import ConfigError, KeyFileError
from doorstep.protocol.connect import plaintext_refusal
from doorstep.protocol.keys import parse_public_key

_AGE_RECIPIENT = re.compile(r"^age1[02-9ac-hj-np-z]{58}$")
_QUIET = re.compile(r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d$")


def resolve_secret(name: str, data_dir: Path) -> Path:
    """Where a secret file named in the config is: absolute as given, else from systemd's
    $CREDENTIALS_DIRECTORY when it holds it (LoadCredential=), else relative to ``data_dir``.
    The one rule for every secret (device key, MQTT password)."""
    path = Path(name)
    if path.is_absolute():
        return path
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if creds and (Path(creds) / path.name).exists():
        return Path(creds) / path.name
    return data_dir / path


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML file. Raises ConfigError listing every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read the file: {exc.strerror}"], source=str(path)) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([f"not UTF-8 text: {exc}"], source=str(path)) from exc
    return parse_config(text, source=str(path))


def parse_config(text: str, source: str = "config") -> Config:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"not valid TOML: {exc}"], source=source) from exc
    problems: list[str] = []
    config = _build(Config, doc, "", problems)
    if not problems:
        _check_semantics(config, problems)
    if problems:
        raise ConfigError(problems, source=source)
    return typing.cast(Config, config)


def _build(cls: type, table: Any, prefix: str, problems: list[str]) -> Any:
    where = prefix.rstrip(".") or "the top level"
    if not isinstance(table, dict):
        problems.append(f"{where}: expected a table, got {_show(table)}")
        return cls()
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in table:
        if key not in fields:
            allowed = ", ".join(sorted(fields))
            problems.append(f"{prefix}{key}: unknown key (allowed here: {allowed})")
    values: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in table:
            continue
        key = prefix + name
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _build(typing.cast(type, hint), table[name], key + ".", problems)
            continue
        value = _coerce(hint, table[name], key, problems)
        if value is not _BAD:
            _check_field(f.metadata, value, key, problems)
            values[name] = value
    try:
        return cls(**values)
    except TypeError:  # pragma: no cover - only if a schema class is malformed
        return cls()


class _Bad:
    pass


_BAD = _Bad()


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _coerce(hint: Any, value: Any, key: str, problems: list[str]) -> Any:
    if hint is bool:
        if isinstance(value, bool):
            return value
        problems.append(f"{key}: expected true or false, got {_show(value)}")
        return _BAD
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        problems.append(f"{key}: expected a whole number, got {_show(value)}")
        return _BAD
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        problems.append(f"{key}: expected a number, got {_show(value)}")
        return _BAD
    if hint is str:
        if isinstance(value, str):
            return value
        problems.append(f"{key}: expected a string, got {_show(value)}")
        return _BAD
    origin = typing.get_origin(hint)
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, list):
            problems.append(f"{key}: expected a list, got {_show(value)}")
            return _BAD
        inner = args[0]
        if inner is str:
            bad = [v for v in value if not isinstance(v, str)]
            if bad:
                problems.append(f"{key}: expected a list of strings, got {_show(bad[0])}")
                return _BAD
            return tuple(value)
        return tuple(_polygon(v, f"{key}[{i}]", problems) for i, v in enumerate(value))
    raise TypeError(f"unsupported config type {hint!r}")  # pragma: no cover


def _polygon(value: Any, key: str, problems: list[str]) -> tuple[tuple[float, float], ...]:
    rule = "a list of at least 3 [x, y] points, each coordinate from 0 to 1"
    if not isinstance(value, list) or len(value) < 3:
        problems.append(f"{key}: expected {rule}, got {_show(value)}")
        return ()
    points: list[tuple[float, float]] = []
    for j, p in enumerate(value):
        ok = (isinstance(p, list) and len(p) == 2
              and all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in p))
        if not ok or not all(0.0 <= float(c) <= 1.0 for c in p):
            problems.append(f"{key}[{j}]: expected [x, y] with 0 <= x, y <= 1, got {_show(p)}")
            return ()
        points.append((float(p[0]), float(p[1])))
    area = 0.0
    for (x0, y0), (x1, y1) in zip(points, points[1:] + points[:1], strict=True):
        area += x0 * y1 - x1 * y0
    if abs(area) / 2 < 1e-6:
        problems.append(f"{key}: the polygon has no area (its points are in a line or repeated)")
        return ()
    return tuple(points)


def _check_field(meta: Any, value: Any, key: str, problems: list[str]) -> None:
    lo, hi, choices, pattern = meta.get("lo"), meta.get("hi"), meta.get("choices"), \
        meta.get("pattern")
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if numeric and ((lo is not None and value < lo) or (hi is not None and value > hi)):
        problems.append(f"{key}: {_show(value)} is out of range (allowed: {lo} to {hi})")
    if choices is not None and value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        problems.append(f"{key}: {_show(value)} is not allowed (allowed: {allowed})")
    if pattern is not None and isinstance(value, str) and not re.match(pattern, value):
        problems.append(f"{key}: {_show(value)} is not allowed ({meta.get('doc') or pattern})")


def _check_semantics(config: Config, problems: list[str]) -> None:
    for i, r in enumerate(config.owner.recipients):
        if not _AGE_RECIPIENT.match(r):
            problems.append(f"owner.recipients[{i}]: {_show(r)} is not an age X25519 recipient "
                            "(expected age1 followed by 58 bech32 characters)")
    if not config.owner.recipients:
        problems.append("owner.recipients: at least one age recipient (age1...) is required, "
                        "or nobody could open the clips")
    for i, q in enumerate(config.chime.quiet_hours):
        if not _QUIET.match(q):
            problems.append(f"chime.quiet_hours[{i}]: {_show(q)} is not a period like "
                            "\"22:00-07:00\"")
    if config.camera.lores_width > config.camera.width:
        problems.append(f"camera.lores_width: {config.camera.lores_width} is larger than "
                        f"camera.width ({config.camera.width})")
    if config.camera.lores_height > config.camera.height:
        problems.append(f"camera.lores_height: {config.camera.lores_height} is larger than "
                        f"camera.height ({config.camera.height})")
    if config.camera.width % 2 or config.camera.height % 2:
        problems.append(f"camera.width/height: {config.camera.width}x{config.camera.height} "
                        "must both be even for 4:2:0 video")
    tls_files = [("mqtt.ca_file", config.mqtt.ca_file), ("mqtt.cert_file", config.mqtt.cert_file),
                 ("mqtt.key_file", config.mqtt.key_file)]
    for key, value in tls_files:
        if value and not config.mqtt.tls:
            problems.append(f"{key}: set to {_show(value)} but mqtt.tls is false")
    if bool(config.mqtt.cert_file) != bool(config.mqtt.key_file):
        problems.append("mqtt.cert_file/mqtt.key_file: a client certificate needs both")
    if any(c in config.mqtt.prefix for c in "+#\0"):
        problems.append(f"mqtt.prefix: {_show(config.mqtt.prefix)} may not contain the MQTT "
                        "wildcards + or # (or a NUL)")
    refusal = plaintext_refusal(config.mqtt.host, config.mqtt.tls, config.mqtt.insecure_no_tls,
                                key="mqtt.insecure_no_tls = true")
    if refusal:
        problems.append(f"mqtt.tls: {refusal}")
    if config.mqtt.password_file and not config.mqtt.username:
        problems.append("mqtt.password_file: set, but mqtt.username is empty")
    if config.owner.inbox_key:
        try:
            parse_public_key(config.owner.inbox_key)
        except KeyFileError as exc:
            problems.append(f"owner.inbox_key: {exc}")
    else:
        problems.append("owner.inbox_key: required: every manifest and the status travel sealed "
                        "to the inbox's key (wire version 2), and its receipts are checked "
                        "with it (`doorstep home` or `doorstep keys inbox` prints it)")
    _check_camera(config, problems)
    _check_night(config, problems)
    _check_rtc(config, problems)
    _check_voice(config, problems)
    for i, text in enumerate(config.update.keys):
        try:
            parse_public_key(text)
        except KeyFileError as exc:
            problems.append(f"update.keys[{i}]: {exc}")


RTC_SCHEMES = ("stun:", "stuns:", "turn:", "turns:")
AUDIO_SCHEMES = ("alsa:", "file:")


def _check_rtc(config: Config, problems: list[str]) -> None:
    rtc = config.rtc
    for i, url in enumerate(rtc.ice_servers):
        if not url.startswith(RTC_SCHEMES) or len(url.partition(":")[2]) < 1:
            problems.append(f"rtc.ice_servers[{i}]: {_show(url)} is not a STUN or TURN URL "
                            f"(it starts with one of {', '.join(RTC_SCHEMES)})")
    turn = any(u.startswith(("turn:", "turns:")) for u in rtc.ice_servers)
    if turn and not (rtc.turn_username and rtc.turn_password_file):
        problems.append("rtc.ice_servers: a TURN server needs rtc.turn_username and "
                        "rtc.turn_password_file")
    if (rtc.turn_username or rtc.turn_password_file) and not turn:
        problems.append("rtc.turn_username/rtc.turn_password_file: set, but rtc.ice_servers "
                        "names no turn: server")
    for key in ("microphone", "speaker"):
        value = getattr(rtc, key)
        if value and (not value.startswith(AUDIO_SCHEMES) or len(value.partition(":")[2]) < 1):
            problems.append(f"rtc.{key}: {_show(value)} is not \"alsa:DEVICE\" or "
                            f"\"file:PATH\"")


def _check_voice(config: Config, problems: list[str]) -> None:
    voice = config.voice
    for key in ("microphone", "speaker"):
        value = getattr(voice, key)
        if value and (not value.startswith(AUDIO_SCHEMES) or len(value.partition(":")[2]) < 1):
            problems.append(f"voice.{key}: {_show(value)} is not \"alsa:DEVICE\" or "
                            f"\"file:PATH\"")
    if voice.answer_seconds and not (voice.speaker or config.rtc.speaker):
        problems.append("voice.answer_seconds: set, but there is no speaker to play a reply "
                        "on (set voice.speaker or rtc.speaker)")
    if voice.voicemail_seconds and not voice.answer_seconds:
        problems.append("voice.voicemail_seconds: voicemail follows the automatic reply; set "
                        "voice.answer_seconds too")
    if config.clip.audio and not (voice.microphone or config.rtc.microphone):
        problems.append("clip.audio: true, but there is no microphone (set voice.microphone "
                        "or rtc.microphone)")
    if voice.voicemail_seconds and not (voice.microphone or config.rtc.microphone):
        problems.append("voice.voicemail_seconds: set, but there is no microphone to record "
                        "with (set voice.microphone or rtc.microphone)")


HDR_SENSOR_LIMIT = (2304, 1296, 30.0)   # Camera Module 3's HDR mode: its largest size and rate


def _check_camera(config: Config, problems: list[str]) -> None:
    cam = config.camera
    picam = cam.source == "picamera2"
    default = type(cam)()
    if cam.focus != "fixed" and cam.lens_position != default.lens_position:
        problems.append(f"camera.lens_position: set to {cam.lens_position:g}, but camera.focus "
                        f"is {cam.focus!r}; set camera.focus = \"fixed\" to hold the lens there")
    frame_ms = 1000 / cam.fps
    if 0 < cam.max_exposure_ms < frame_ms:
        problems.append(f"camera.max_exposure_ms: {cam.max_exposure_ms:g} is shorter than one "
                        f"frame at {cam.fps:g} fps ({frame_ms:.1f} ms); use 0, or "
                        f"camera.exposure_mode = \"short\" to favour short exposures")
    if cam.hdr == "sensor":
        w, h, fps = HDR_SENSOR_LIMIT
        if cam.width > w or cam.height > h or cam.fps > fps:
            problems.append(f"camera.hdr: \"sensor\" HDR works up to {w}x{h} at {fps:g} fps, "
                            f"not {cam.width}x{cam.height} at {cam.fps:g} fps")
    for key in ("focus", "exposure_mode", "hdr", "noir", "max_exposure_ms", "exposure_value"):
        if not picam and getattr(cam, key) != getattr(default, key):
            problems.append(f"camera.{key}: only for camera.source = \"picamera2\" (a Pi "
                            f"camera); remove it for {cam.source!r}")
    if cam.v4l2_format != "auto" and not cam.source.startswith("/dev/video"):
        problems.append(f"camera.v4l2_format: only for a /dev/videoN camera, not "
                        f"{cam.source!r}")


def _check_night(config: Config, problems: list[str]) -> None:
    night = config.night
    if not night.enabled:
        return
    if not night.ircut_pin and not night.ir_led_pin:
        problems.append("night.enabled: true, but neither night.ircut_pin nor night.ir_led_pin "
                        "is set")
    if night.light_above <= night.dark_below:
        problems.append(f"night.light_above: {night.light_above:g} must be above "
                        f"night.dark_below ({night.dark_below:g}), or it would flap between "
                        f"day and night")
    if night.level == "lux" and config.camera.source != "picamera2":
        problems.append("night.level: \"lux\" comes from a Pi camera's metadata; use "
                        "\"luma\" for this camera")
    used: dict[str, str] = {}
    for key, pin, on in (("button.pin", config.button.pin, config.button.enabled),
                         ("chime.pin", config.chime.pin, config.chime.enabled),
                         ("led.pin", config.led.pin, config.led.enabled),
                         ("night.ircut_pin", night.ircut_pin, bool(night.ircut_pin)),
                         ("night.ir_led_pin", night.ir_led_pin, bool(night.ir_led_pin))):
        if not on:
            continue
        if pin.upper() in used:
            problems.append(f"{key}: {pin} is already {used[pin.upper()]}")
        used.setdefault(pin.upper(), key)
