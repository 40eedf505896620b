"""Wiring: every stage of `doorstep run` built from the config, in order, in one place, each
whole when it is made: keys and outbox, source, encoder and detector, the doorbell, the agent,
the status, the command table, the uplink, and the Service that runs them."""

from __future__ import annotations

import queue
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

from doorstep.agent.commands import CommandGate, Commands, Done
from doorstep.agent.doorbell import Doorbell, LedState
from doorstep.agent.live import attach_live
from doorstep.agent.modes import MODES_FILE, Modes, ModeStore
from doorstep.agent.night import NightSwitch
from doorstep.agent.recipients import RECIPIENTS_FILE, Recipients
from doorstep.agent.rtc import RtcService
from doorstep.agent.run import Agent, Mode
from doorstep.agent.sealing import Sealer
from doorstep.agent.service import Service
from doorstep.agent.status import ClockSync, Status
from doorstep.agent.voice import Voice
from doorstep.capture.audio import open_source as open_audio_source
from doorstep.capture.clipaudio import AudioTap
from doorstep.capture.encoder import open_encoder
from doorstep.capture.frames import FrameSource
from doorstep.capture.source import open_source
from doorstep.config import resolve_secret
from doorstep.config.schema import Config
from doorstep.core.clock import SystemClock
from doorstep.core.errors import ConfigError, KeyFileError
from doorstep.motion.detector import MotionDetector
from doorstep.protocol.age import X25519Recipient
from doorstep.protocol.keys import SigningKey, parse_public_key
from doorstep.protocol.kinds import Action
from doorstep.protocol.seal import identity_of
from doorstep.protocol.wire import Command, Topics
from doorstep.uplink.mqtt import Uplink
from doorstep.uplink.outbox import Outbox
from doorstep.uplink.sender import Sealing

T = TypeVar("T")
# A hook that may wrap a stage as it is built (the bench times them): (stage name, stage) ->
# the stage to wire in its place. Stages: "source", "encoder", "detector", "sealer".
Instrument = Callable[[str, Any], Any]


def _as_is(name: str, stage: T) -> T:
    return stage


# What the status LED shows for each of the agent's modes (OFFLINE is the Service's own).
LED_FOR_MODE = {Mode.IDLE: LedState.IDLE, Mode.RECORDING: LedState.RECORDING,
                Mode.PRIVACY: LedState.PRIVACY}


def build(cfg: Config, *, pin_factory: Any = None, source: FrameSource | None = None,
          connect: bool = True, instrument: Instrument = _as_is) -> Service:
    """Wire every stage from the config. ``pin_factory``: gpiozero factory (None: the
    default for this machine; tests pass MockFactory). ``source``: frames from here instead
    of the configured camera (the demo, tests and the bench). The Service closes its source
    when it stops; if building fails, a source passed in is left to the caller.
    ``instrument``: each stage passes through it as it is built (the bench's timers)."""
    data_dir = Path(cfg.device.data_dir)
    fresh = not (data_dir / "outbox").exists()    # never ran here: no state to have lost
    data_dir.mkdir(parents=True, exist_ok=True)
    key_path = resolve_secret(cfg.device.key_file, data_dir)
    if not key_path.exists():
        raise KeyFileError(f"{key_path}: no device key; create it with `doorstep keys device "
                           f"--out {key_path.parent}` or run first-boot provisioning")
    key = SigningKey.load(key_path)
    recipients = [X25519Recipient.parse(r) for r in cfg.owner.recipients]
    inbox_public = parse_public_key(cfg.owner.inbox_key) if cfg.owner.inbox_key else None
    if connect and inbox_public is None:
        raise ConfigError(["owner.inbox_key: required to upload: heads and status are sealed "
                           "to the inbox's key (wire version 2)"], source="the config")
    clock_sync = ClockSync()
    outbox = Outbox(data_dir / "outbox", device=cfg.device.id, key=key,
                    quota_bytes=int(cfg.outbox.quota_mb * 1024 * 1024), clock_synced=clock_sync)
    src = source if source is not None else open_source(cfg.camera, privacy=cfg.privacy.masks)
    try:
        return _wire(cfg, instrument("source", src), key, outbox, recipients, inbox_public,
                     clock_sync, data_dir, pin_factory, connect, instrument, fresh)
    except BaseException:
        if source is None:
            src.close()        # a camera or stream we opened must not stay open on failure
        raise


def _wire(cfg: Config, src: FrameSource, key: SigningKey, outbox: Outbox,
          recipients: list[X25519Recipient], inbox_public: Any, clock_sync: ClockSync,
          data_dir: Path, pin_factory: Any, connect: bool, instrument: Instrument,
          fresh: bool) -> Service:
    encoder = open_encoder(cfg.encoder.name, width=src.size[0], height=src.size[1],
                           fps=Fraction(src.fps), bitrate_kbps=cfg.encoder.bitrate_kbps,
                           gop_seconds=cfg.encoder.gop_seconds, preset=cfg.encoder.preset,
                           subpel=cfg.encoder.subpel, source=src)
    detector = MotionDetector(cfg.motion, (cfg.camera.lores_width, cfg.camera.lores_height),
                              float(src.fps)) if cfg.motion.enabled else None
    members = Recipients(data_dir / RECIPIENTS_FILE, recipients)
    sealer = own_sealer = Sealer(outbox, members.all(), clock_synced=clock_sync)
    encoder = instrument("encoder", encoder)
    detector = instrument("detector", detector) if detector is not None else None
    sealer = instrument("sealer", sealer)

    def reseal(new: list[X25519Recipient]) -> None:
        own_sealer.recipients = new    # one assignment: a clip in progress keeps its own

    members.on_change = reseal
    bell_events: queue.Queue[object] = queue.Queue()
    doorbell = None
    if cfg.button.enabled or cfg.chime.enabled or cfg.led.enabled:
        doorbell = Doorbell(cfg.button, cfg.chime, cfg.led, pin_factory=pin_factory,
                            clock=SystemClock(), emit=bell_events.put)
    bell = doorbell    # bound once, for the closure below

    def show(mode: Mode) -> None:
        if bell is not None:
            bell.set_led(LED_FOR_MODE[mode])

    modes = ModeStore(data_dir / MODES_FILE, Modes(armed=cfg.motion.enabled, privacy=False))
    agent = Agent(cfg, encoder=encoder, sealer=sealer, detector=detector, on_state=show,
                  modes=modes)
    night = None
    if cfg.night.enabled:
        night = NightSwitch(cfg.night, pin_factory=pin_factory,
                            monotonic=SystemClock().monotonic, source=src,
                            on_change=getattr(src, "set_night", None))
        agent.observers.append(night.observe)
    if agent.privacy:
        show(Mode.PRIVACY)          # restored from before the restart
    gate = (CommandGate(parse_public_key(cfg.owner.command_key), cfg.device.id,
                        data_dir / "command_counter.json", clock_synced=clock_sync,
                        fresh=fresh, members=members.command_keys)
            if cfg.owner.command_key else None)
    status = Status(cfg, key=key, agent=agent, outbox=outbox, source=src,
                    clock_sync=clock_sync, problems=lambda: [
                        p for p in (modes.problem, gate.lost if gate else None,
                                    members.problem) if p],
                    drops=lambda: {name: d for name, d in (
                        ("commands", gate.drops if gate else None),
                        ("uplink", uplink.drops if uplink else None)) if d is not None})
    uplink: Uplink | None = None

    def reply(payload: bytes) -> None:
        if uplink is not None:      # the uplink below; answers go out once it exists
            uplink.publish_reply(payload)

    commands = Commands(gate, device=cfg.device.id, key=key, reply=reply)

    def to_frame_loop(cmd: Command, done: Done) -> None:
        agent.owner_request(cmd.action, done)

    for action in agent.commands:
        commands[action] = to_frame_loop
    members.register(commands.__setitem__)
    rtc = None
    if cfg.rtc.enabled:
        rtc = RtcService(cfg.rtc, data_dir=data_dir, privacy=lambda: agent.privacy)
        agent.packet_consumers.append(rtc.feed)
        commands[Action.RTC_OFFER] = rtc.on_offer
        commands[Action.RTC_HANGUP] = rtc.on_hangup
    else:     # the app then shows the broker's live view, and says why (docs/app.md)
        commands[Action.RTC_OFFER] = lambda cmd, done: done(
            "rtc_offer: live view and talk over WebRTC are off on this doorbell (rtc.enabled)")
    if cfg.clip.audio:
        spec = cfg.voice.microphone or cfg.rtc.microphone
        own_sealer.audio = AudioTap(lambda: open_audio_source(spec),
                                    keep=cfg.clip.preroll_seconds + 5).start()
    voice = _voice(cfg, key, outbox, data_dir, lambda: own_sealer.recipients,
                   lambda: agent.privacy, commands)
    if connect:
        uplink = Uplink(cfg.mqtt, Topics(cfg.topic_prefix), outbox,
                        client_id=cfg.mqtt.client_id or f"doorstep-{cfg.device.id}",
                        sealing=Sealing(key, inbox_public), status=status.body,
                        on_command=commands.on_payload, secrets_dir=data_dir,
                        on_part=voice.transfers.on_part if voice else None)
        outbox.on_commit = uplink.notify
    live = attach_live(cfg, agent, key=key, recipients=lambda: own_sealer.recipients,
                       uplink=uplink, commands=commands)
    return Service(cfg, src, agent, outbox, uplink, doorbell, key, status, commands,
                   bell_events, night=night, live=live, rtc=rtc, voice=voice,
                   clip_audio=own_sealer.audio)


def _voice(cfg: Config, key: SigningKey, outbox: Outbox, data_dir: Path,
           recipients: Callable[[], list[X25519Recipient]], privacy: Callable[[], bool],
           commands: Commands) -> Voice | None:
    """Quick replies and voicemail (docs/talk.md), on a doorbell with a speaker; without one,
    reply commands are refused, saying so."""
    if not (cfg.voice.speaker or cfg.rtc.speaker):
        def no_speaker(cmd: Command, done: Done) -> None:
            done(f"{cmd.action}: this doorbell has no speaker (voice.speaker, rtc.speaker)")

        for action in (Action.REPLY_PUT, Action.REPLY_PLAY, Action.REPLY_DELETE):
            commands[action] = no_speaker
        return None
    voice = Voice(cfg.voice, cfg.rtc, data_dir, identity=identity_of(key), outbox=outbox,
                  recipients=recipients, privacy=privacy)
    commands[Action.REPLY_PUT] = voice.on_put
    commands[Action.REPLY_PLAY] = voice.on_play
    commands[Action.REPLY_DELETE] = voice.on_delete
    commands.observers.append(voice.on_command)
    return voice
