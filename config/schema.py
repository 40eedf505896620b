"""The shape of doorstep.toml: one frozen dataclass per section, with the allowed range of each
value in the field's metadata. config.load validates a TOML document against these classes.

Polygons (motion zones, privacy masks) use coordinates normalised to 0..1 of the frame's width and
height, so one config works at any resolution.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from doorstep.protocol.wire import device_prefix

Point = tuple[float, float]
Polygon = tuple[Point, ...]


def _f(default: Any, *, lo: float | None = None, hi: float | None = None,
       choices: tuple[Any, ...] | None = None, pattern: str | None = None,
       doc: str = "") -> Any:
    meta: dict[str, Any] = {"lo": lo, "hi": hi, "choices": choices, "pattern": pattern, "doc": doc}
    if isinstance(default, (list, tuple, dict)):
        value = default
        return field(default_factory=lambda: value, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class DeviceConfig:
    id: str = _f("doorstep", pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$",
                 doc="lower-case letters, digits, '-' and '_', 1 to 32 characters")
    data_dir: str = _f("/var/lib/doorstep", doc="where the outbox and state live")
    key_file: str = _f("device.key", doc="the device's Ed25519 signing key; relative to data_dir "
                                         "or $CREDENTIALS_DIRECTORY")


@dataclass(frozen=True)
class OwnerConfig:
    recipients: tuple[str, ...] = _f((), doc="age X25519 recipients (age1...), at least one")
    command_key: str = _f("", doc="owner's Ed25519 public key for signed commands (base64)")
    inbox_key: str = _f("", doc="the inbox's Ed25519 public key (ed25519:base64): heads and "
                             "status are sealed to it, its receipts are checked with it "
                             "(required)")


@dataclass(frozen=True)
class CameraConfig:
    source: str = _f("picamera2", doc="'picamera2', a video file path, a URL, or /dev/videoN")
    width: int = _f(1280, lo=64, hi=4096)
    height: int = _f(720, lo=64, hi=4096)
    fps: float = _f(30.0, lo=1, hi=120)
    realtime: bool = _f(True, doc="pace file sources to real time")
    loop: bool = _f(False, doc="start a file source again when it ends")
    lores_width: int = _f(320, lo=32, hi=1280)
    lores_height: int = _f(240, lo=24, hi=960)
    # picamera2 only (libcamera controls; what a camera lacks is skipped and logged)
    focus: str = _f("continuous", choices=("continuous", "fixed"),
                    doc="continuous autofocus where the camera has it (Camera Module 3); "
                        "fixed: the lens held at camera.lens_position")
    lens_position: float = _f(1.0, lo=0, hi=32, doc="for focus = \"fixed\": dioptres, 1 / "
                              "distance in metres (0 is infinity, 1 is 1 m, 2 is 50 cm)")
    exposure_mode: str = _f("normal", choices=("normal", "short", "long"),
                            doc="short favours short exposures (less blur on someone walking) "
                                "at the cost of gain")
    max_exposure_ms: float = _f(0.0, lo=0, hi=1000, doc="the longest exposure; 0 is one frame "
                                "(1000 / fps); longer lets the frame rate fall in the dark")
    exposure_value: float = _f(0.0, lo=-8, hi=8, doc="exposure compensation in stops")
    hdr: str = _f("off", choices=("off", "sensor", "single-exposure"),
                  doc="sensor: Camera Module 3's own HDR (at most 2304x1296 at 30 fps); "
                      "single-exposure: the Pi 5's HDR (HdrMode)")
    noir: bool = _f(False, doc="a NoIR camera (no IR filter): use its _noir tuning file")
    # /dev/videoN only
    v4l2_format: str = _f("auto", choices=("auto", "mjpeg", "yuyv422"),
                          doc="auto asks for MJPEG at 1280x720 and above (many USB cameras "
                              "reach 720p30 only in MJPEG) and falls back to the device's "
                              "default")


@dataclass(frozen=True)
class EncoderConfig:
    name: str = _f("auto", choices=("auto", "libx264", "h264_v4l2m2m", "picamera2"))
    bitrate_kbps: int = _f(2500, lo=100, hi=50000)
    gop_seconds: float = _f(1.0, lo=0.25, hi=10)
    preset: str = _f("superfast", choices=("ultrafast", "superfast", "veryfast", "faster",
                                          "fast", "medium"))
    subpel: bool = _f(False, doc="libx264 only: sub-pixel motion refinement at the preset's "
                      "level; off (subme=0) saves 14 MB at 1080p and 15% of encoding time for "
                      "0.0-0.2 dB at the same bitrate on doorbell scenes")


@dataclass(frozen=True)
class ClipConfig:
    preroll_seconds: float = _f(5.0, lo=0, hi=30)
    postroll_seconds: float = _f(5.0, lo=0, hi=120)
    max_seconds: float = _f(120.0, lo=1, hi=3600)
    segment_seconds: float = _f(2.0, lo=0, hi=60, doc="a clip is sealed and uploaded in "
                                "segments of about this long (whole GOPs) while it records, "
                                "so the owner's app plays it as it records; 0 = one artifact "
                                "per clip, after it ends")
    snapshot_quality: int = _f(90, lo=10, hi=100)
    audio: bool = _f(False, doc="record sound in clips (AAC beside the video) from "
                     "voice.microphone or rtc.microphone; off by default: in many places "
                     "recording sound needs consent (docs/talk.md)")
    thumbnail_width: int = _f(320, lo=32, hi=1280)


@dataclass(frozen=True)
class MotionConfig:
    enabled: bool = _f(True)
    sensitivity: str = _f("normal", choices=("low", "normal", "high"))
    start_frames: int = _f(2, lo=1, hi=30, doc="frames of motion needed to start an event")
    hold_seconds: float = _f(2.0, lo=0, hi=60, doc="how long motion stays on after the last "
                                                   "moving frame")
    max_seconds: float = _f(120.0, lo=1, hi=3600, doc="longest motion event")
    zones: tuple[Polygon, ...] = _f((), doc="polygons where motion counts; empty = whole frame")


@dataclass(frozen=True)
class PrivacyConfig:
    masks: tuple[Polygon, ...] = _f((), doc="polygons blacked out before motion and encoding")


@dataclass(frozen=True)
class MqttConfig:
    host: str = _f("localhost")
    port: int = _f(8883, lo=1, hi=65535, doc="8883 is MQTT over TLS; 1883 plain")
    protocol: str = _f("5", choices=("5", "3.1.1"))
    prefix: str = _f("doorstep/{device}/", doc="topic prefix; {device} is the device id")
    client_id: str = _f("", doc="defaults to doorstep-<device id>")
    keepalive: int = _f(30, lo=5, hi=3600)
    tls: bool = _f(True)
    insecure_no_tls: bool = _f(False, doc="allow tls = false to a broker on another machine: "
                                           "the password and all metadata travel in clear")
    ca_file: str = _f("")
    cert_file: str = _f("")
    key_file: str = _f("")
    username: str = _f("")
    password_file: str = _f("", doc="file holding the password; never put it in this file")
    chunk_bytes: int = _f(16384, lo=1024, hi=4 * 1024 * 1024,
                          doc="clip chunk size; a ring can wait behind about one chunk")
    chunks_in_flight: int = _f(16, lo=1, hi=256, doc="most clip chunks unacknowledged at once")
    queue_delay_ms: int = _f(100, lo=10, hi=10000, doc="the clip window shrinks when chunks "
                                                        "wait longer than this")
    receipt_timeout_seconds: float = _f(30.0, lo=1, hi=86400)


@dataclass(frozen=True)
class OutboxConfig:
    quota_mb: float = _f(1024.0, lo=1, hi=1_000_000)


@dataclass(frozen=True)
class ButtonConfig:
    enabled: bool = _f(True)
    pin: str = _f("GPIO17", doc="gpiozero pin name, e.g. GPIO17 or BOARD11")
    pull_up: bool = _f(True)
    bounce_ms: int = _f(30, lo=0, hi=1000)
    repeat_window_seconds: float = _f(3.0, lo=0, hi=60, doc="presses within this merge into one "
                                                            "ring with a count")
    long_press_seconds: float = _f(0.0, lo=0, hi=30, doc="0 disables the long press")
    long_press_action: str = _f("privacy", choices=("privacy", "none"))


@dataclass(frozen=True)
class ChimeConfig:
    enabled: bool = _f(False)
    pin: str = _f("GPIO27")
    active_high: bool = _f(True, doc="false for relay boards that switch on when the input "
                                     "is low (most cheap opto-isolated modules)")
    pulse_ms: int = _f(300, lo=10, hi=5000)
    quiet_hours: tuple[str, ...] = _f((), doc='periods like "22:00-07:00" with no chime, in '
                                             "local time")


@dataclass(frozen=True)
class LedConfig:
    enabled: bool = _f(False)
    pin: str = _f("GPIO22")
    active_high: bool = _f(True, doc="false if the LED is wired from 3.3 V to the pin")


@dataclass(frozen=True)
class NightConfig:
    enabled: bool = _f(False)
    ircut_pin: str = _f("", doc="GPIO that drives the IR-cut filter, or empty")
    ircut_day_high: bool = _f(True, doc="the pin is high while the filter is in (day)")
    ir_led_pin: str = _f("", doc="GPIO that switches the IR LEDs, or empty")
    ir_led_active_high: bool = _f(True)
    level: str = _f("lux", choices=("lux", "luma"),
                    doc="lux: the camera's light estimate (picamera2 only); luma: the mean "
                        "grey level of the lores image, 0 to 255")
    dark_below: float = _f(5.0, lo=0, hi=100000, doc="night starts when the level stays "
                           "below this for hold_seconds")
    light_above: float = _f(20.0, lo=0, hi=100000, doc="day returns when the level stays "
                            "above this (higher than dark_below: hysteresis)")
    hold_seconds: float = _f(10.0, lo=0, hi=600)


@dataclass(frozen=True)
class LiveConfig:
    max_sessions: int = _f(2, lo=0, hi=8, doc="live view sessions through the broker at once "
                           "(the app's Live button); 0 turns live view off")


@dataclass(frozen=True)
class UpdateConfig:
    keys: tuple[str, ...] = _f((), doc="the installer's public keys (ed25519:...); `doorstep "
                               "update` installs only bundles one of them signed")


@dataclass(frozen=True)
class RtcConfig:
    """WebRTC live view and talk (docs/rtc.md): sessions the owner asks for with a signed
    ``rtc_offer``; the encoder's own packets, the microphone and the speaker."""

    enabled: bool = _f(True, doc="answer signed rtc_offer commands (live view and talk)")
    max_sessions: int = _f(2, lo=1, hi=8, doc="sessions at once; more are refused")
    ice_servers: tuple[str, ...] = _f((), doc='STUN/TURN URLs, e.g. "stun:stun.example.net:3478" '
                                              'or "turn:turn.example.net:3478"; none: the '
                                              'LAN only')
    turn_username: str = _f("", doc="the TURN servers' user name")
    turn_password_file: str = _f("", doc="file holding the TURN password; never put it here")
    idle_seconds: float = _f(10.0, lo=2, hi=120, doc="a viewer silent (no RTCP report) this "
                                                      "long is hung up on")
    connect_seconds: float = _f(15.0, lo=2, hi=120, doc="a session not connected this long "
                                                         "after its answer is ended")
    max_seconds: float = _f(900.0, lo=10, hi=86400, doc="the longest a session lasts")
    microphone: str = _f("", doc='the mic sent during a session: "" (none), an ALSA device '
                                 '("alsa:hw:1,0", "alsa:default") or "file:PATH" (tests)')
    speaker: str = _f("", doc='where the owner\'s voice plays: "" (nowhere), an ALSA device '
                              '("alsa:default") or "file:PATH.wav" (tests)')


@dataclass(frozen=True)
class VoiceConfig:
    """Quick replies and voicemail (docs/talk.md): the owner's recorded replies, played on a
    signed command or after an unanswered ring, and the visitor's message after it."""

    answer_seconds: float = _f(0.0, lo=0, hi=600, doc="after a ring that nobody answers (no "
                               "owner command, no live session) for this long, play the reply "
                               "marked automatic; 0 = never by itself")
    voicemail_seconds: float = _f(0.0, lo=0, hi=120, doc="after the automatic reply, record "
                                  "the visitor this long, sealed like a clip; 0 = no voicemail")
    max_replies: int = _f(8, lo=1, hi=32, doc="replies the doorbell keeps at most")
    reply_max_kb: int = _f(256, lo=8, hi=256, doc="the largest reply accepted, in KiB (about "
                           "60 s of the app's Opus)")
    reply_max_seconds: float = _f(30.0, lo=1, hi=120, doc="the longest reply accepted")
    speaker: str = _f("", doc='where replies play: "" = rtc.speaker, or "alsa:DEVICE" or '
                              '"file:PATH.wav" (tests)')
    microphone: str = _f("", doc='what voicemail records: "" = rtc.microphone, or '
                                 '"alsa:DEVICE" or "file:PATH" (tests)')
    bitrate_kbps: int = _f(24, lo=6, hi=128, doc="voicemail's Opus bitrate")


@dataclass(frozen=True)
class Config:
    device: DeviceConfig = field(default_factory=DeviceConfig)
    owner: OwnerConfig = field(default_factory=OwnerConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    button: ButtonConfig = field(default_factory=ButtonConfig)
    chime: ChimeConfig = field(default_factory=ChimeConfig)
    led: LedConfig = field(default_factory=LedConfig)
    night: NightConfig = field(default_factory=NightConfig)
    update: UpdateConfig = field(default_factory=UpdateConfig)
    live: LiveConfig = field(default_factory=LiveConfig)
    rtc: RtcConfig = field(default_factory=RtcConfig)
    voice: VoiceConfig = field(default_factory=VoiceConfig)

    @property
    def topic_prefix(self) -> str:
        return device_prefix(self.mqtt.prefix, self.device.id)
