"""`doorstep run`: build every stage from the config, start the uplink, the doorbell and the
ring path, and run the frame loop until the source ends or SIGTERM arrives.

Threads: the main thread runs the frame loop. "ring" seals ring events the moment a press is
seen. "commit" closes clips and stores snapshots and events for the frame loop
(agent/committer.py). "status" probes health once a minute. The uplink has its own two
threads (uplink/mqtt.py). Nothing else.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import queue
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from doorstep.agent import memory
from doorstep.agent.doorbell import Doorbell, LedState, LongPress, Ring
from doorstep.agent.health import collect_health
from doorstep.agent.run import Agent, RingPress
from doorstep.agent.sdnotify import FrameWatchdog, Notifier
from doorstep.agent.sealing import Sealer
from doorstep.capture.encoder import open_encoder
from doorstep.capture.frames import Frame, FrameSource
from doorstep.capture.source import open_source
from doorstep.config import load_config, resolve_secret
from doorstep.config.provisioned import read_provisioned
from doorstep.config.schema import Config
from doorstep.core.clock import SystemClock
from doorstep.core.droplog import DropLog
from doorstep.core.errors import DoorstepError, KeyFileError, SealError
from doorstep.core.fsutil import write_atomic
from doorstep.motion.detector import MotionDetector
from doorstep.protocol.age import X25519Recipient
from doorstep.protocol.keys import SigningKey, fingerprint, parse_public_key
from doorstep.protocol.wire import Command, Topics
from doorstep.uplink.mqtt import Uplink
from doorstep.uplink.outbox import Outbox

from doorstep import __version__

log = logging.getLogger(__name__)

STATUS_INTERVAL = 60.0   # seconds between status reports (and health probes)



class ClockSync:
    """Whether the wall clock is NTP-synchronised, as the last health probe found it (the
    status thread probes once a minute, and once at start-up). Unknown (no timesyncd, no
    timedatectl) counts as not synchronised: until then, times are flagged and the owner
    orders by sequence number. Reading it never runs a probe, so commits never wait for one."""

    def __init__(self) -> None:
        self._value = False

    def set(self, synced: object) -> None:
        self._value = synced is True

    def __call__(self) -> bool:
        return self._value


class CommandGate:
    """Verifies owner commands: signature, device, and a counter that must only go up. The
    highest accepted counter is stored, so a replay is refused even after a restart."""

    def __init__(self, owner_public: Any, device: str, state: Path) -> None:
        self._public = owner_public
        self._device = device
        self._state = state
        self._dropped = DropLog(log, "dropped an owner command")
        try:
            self.counter = int(json.loads(state.read_text())["counter"])
        except (OSError, ValueError, KeyError, TypeError):
            self.counter = 0

    def check(self, payload: bytes) -> Command | None:
        try:
            cmd = Command.open(payload, self._public)
            if cmd.device != self._device:
                raise SealError(f"command: for device {cmd.device!r}, not us")
            if cmd.counter <= self.counter:
                raise SealError(f"command: counter {cmd.counter} is not above {self.counter} "
                                "(replayed)")
        except SealError as exc:
            self._dropped(str(exc))
            return None
        self.counter = cmd.counter
        write_atomic(self._state, json.dumps({"counter": cmd.counter}).encode())
        return cmd


@dataclass
class Service:
    """Everything `doorstep run` starts, so tests and the demo can drive the same wiring."""

    cfg: Config
    source: FrameSource
    agent: Agent
    outbox: Outbox
    uplink: Uplink | None
    doorbell: Doorbell | None
    device_key: SigningKey
    started: float = field(default_factory=time.monotonic)
    stop_event: threading.Event = field(default_factory=threading.Event)
    _rings: queue.Queue[RingPress | None] = field(default_factory=queue.Queue)
    _ring_thread: threading.Thread | None = None
    fps: float = 0.0
    _health: dict[str, Any] | None = None
    clock_sync: ClockSync = field(default_factory=ClockSync)
    _finished: threading.Event = field(default_factory=threading.Event)

    def press(self, press: RingPress) -> None:
        """Hand a press to the ring thread (never blocks the caller)."""
        self._rings.put(press)

    def _ring_loop(self) -> None:
        while True:
            press = self._rings.get()
            if press is None:
                return
            try:
                self.agent.ring(press)
            except Exception:  # the ring path must outlive any single failure
                log.exception("ring: handling a press failed")

    def refresh_health(self) -> dict[str, Any]:
        """Probe the machine (sysfs, vcgencmd, timedatectl): only ever on the status thread or
        at start-up, never on the frame, ring or uplink threads."""
        health = collect_health(data_dir=self.cfg.device.data_dir, frame_rate=self.fps,
                                outbox_depth=self.outbox.depth).to_dict()
        self._health = health
        self.clock_sync.set(health.get("clock_synchronised"))
        return health

    def status(self) -> dict[str, Any]:
        """The body of the retained status message, from the last health probe."""
        health = self._health if self._health is not None else self.refresh_health()
        body: dict[str, Any] = {"version": __version__, "device": self.cfg.device.id,
                                "fingerprint": fingerprint(self.device_key.public_key),
                                "armed": self.agent.armed, "privacy": self.agent.privacy,
                                "outbox": self.outbox.stats(),
                                "health": {**health, "frame_rate": round(self.fps, 2),
                                           "outbox_depth": self.outbox.depth}}
        provisioned = read_provisioned(self.cfg.device.data_dir)
        if provisioned is not None:
            body["provisioned_at"] = provisioned.provisioned_at
        camera_health = getattr(self.source, "health", None)
        if camera_health is not None and hasattr(camera_health, "as_dict"):
            body["camera"] = camera_health.as_dict()
        return body

    def _status_loop(self, interval: float) -> None:
        while not self.stop_event.wait(interval) and not self._finished.is_set():
            try:
                self.refresh_health()
                if self.uplink is not None:
                    self.uplink.publish_status()
            except Exception:  # a failed probe must not end the status reports
                log.exception("status: could not report health")

    def run(self, on_frame: Callable[[Frame], None] | None = None, *,
            connect_timeout: float = 0.0, drain_timeout: float = 0.0,
            freeze_gc: bool = False) -> None:
        """The frame loop. ``connect_timeout``: wait that long for the broker before the
        first frame; ``drain_timeout``: at the end, wait that long for every receipt;
        ``freeze_gc``: move what start-up built out of the garbage collector's reach (gc.freeze)
        before the first frame, as `doorstep run` does."""
        notifier = Notifier()
        watchdog = FrameWatchdog(notifier)
        self._ring_thread = threading.Thread(target=self._ring_loop, name="ring", daemon=True)
        self._ring_thread.start()
        self.refresh_health()
        if self.uplink is not None:
            self.uplink.start()
            if connect_timeout:
                self.uplink.wait_connected(connect_timeout)
        threading.Thread(target=self._status_loop, args=(STATUS_INTERVAL,), name="status",
                         daemon=True).start()
        window: deque[float] = deque()

        def each(frame: Frame) -> None:
            now = time.monotonic()
            watchdog.frame_processed(now)
            window.append(now)
            while window and now - window[0] > 5:
                window.popleft()
            if len(window) > 1:
                self.fps = (len(window) - 1) / max(1e-6, window[-1] - window[0])
            if self.doorbell is not None:
                self._led_connectivity()
                self.doorbell.tick()
            if on_frame is not None:
                on_frame(frame)

        if freeze_gc:
            # Everything built so far (modules, config, keys) lives as long as the process: the
            # garbage collector need never walk it again. Its full collections went through
            # some 40,000 objects, 6 ms here and several frames' time on a Pi. Collected first,
            # so no garbage is frozen with it. Only for a process that runs one Service: a
            # finished Service is cyclic garbage, and a second run would freeze it for good.
            gc.collect()
            gc.freeze()
        try:
            self.agent.run(self.source.frames(), self.stop_event, each)
        finally:
            self._finished.set()
            notifier.stopping()
            self._rings.put(None)
            self._ring_thread.join(5)
            if drain_timeout and not self.stop_event.is_set():
                self.drain(drain_timeout)      # the source ended by itself: finish uploading
            self.close()

    def _led_connectivity(self) -> None:
        """Show OFFLINE while the broker is unreachable, unless something more specific
        (recording, privacy) is showing."""
        assert self.doorbell is not None
        if self.uplink is None:
            return
        state = self.doorbell.led_state
        if not self.uplink.connected and state is LedState.IDLE:
            self.doorbell.set_led(LedState.OFFLINE)
        elif self.uplink.connected and state is LedState.OFFLINE:
            self.doorbell.set_led(LedState.IDLE)

    def close(self) -> None:
        self.agent.close()
        if self.uplink is not None:
            self.uplink.stop()
        if self.doorbell is not None:
            self.doorbell.close()
        self.source.close()

    def drain(self, timeout: float) -> bool:
        """Wait until the outbox is empty (every artifact confirmed), up to ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while self.outbox.depth and time.monotonic() < deadline:
            if self.stop_event.wait(0.05):     # SIGTERM ends the wait: the outbox keeps it all
                break
        return self.outbox.depth == 0


def build(cfg: Config, *, pin_factory: Any = None, source: FrameSource | None = None,
          connect: bool = True) -> Service:
    """Wire every stage from the config. ``pin_factory``: gpiozero factory (None: the
    default for this machine; tests pass MockFactory)."""
    data_dir = Path(cfg.device.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    key_path = resolve_secret(cfg.device.key_file, data_dir)
    if not key_path.exists():
        raise KeyFileError(f"{key_path}: no device key; create it with `doorstep keys device "
                           f"--out {key_path.parent}` or run first-boot provisioning")
    key = SigningKey.load(key_path)
    recipients = [X25519Recipient.parse(r) for r in cfg.owner.recipients]
    inbox_public = parse_public_key(cfg.owner.inbox_key) if cfg.owner.inbox_key else None
    quota = int(cfg.outbox.quota_mb * 1024 * 1024)
    synced = ClockSync()
    outbox = Outbox(data_dir / "outbox", device=cfg.device.id, key=key, quota_bytes=quota,
                    clock_synced=synced)
    src = source if source is not None else open_source(cfg.camera, privacy=cfg.privacy.masks)
    try:
        return _wire(cfg, src, key, outbox, recipients, inbox_public, synced, data_dir,
                     pin_factory, connect)
    except BaseException:
        if source is None:
            src.close()        # a camera or stream we opened must not stay open on failure
        raise


def _wire(cfg: Config, src: FrameSource, key: SigningKey, outbox: Outbox,
          recipients: list[X25519Recipient], inbox_public: Any, synced: ClockSync,
          data_dir: Path, pin_factory: Any, connect: bool) -> Service:
    encoder = open_encoder(cfg.encoder.name, width=src.size[0], height=src.size[1],
                           fps=Fraction(src.fps), bitrate_kbps=cfg.encoder.bitrate_kbps,
                           gop_seconds=cfg.encoder.gop_seconds, preset=cfg.encoder.preset,
                           subpel=cfg.encoder.subpel, source=src)
    detector = MotionDetector(cfg.motion, (cfg.camera.lores_width, cfg.camera.lores_height),
                              float(src.fps)) if cfg.motion.enabled else None
    sealer = Sealer(outbox, recipients, clock_synced=synced)
    holder: dict[str, Doorbell] = {}

    def led(state: str) -> None:
        bell = holder.get("bell")
        if bell is not None:
            bell.set_led({"recording": LedState.RECORDING, "privacy": LedState.PRIVACY}
                         .get(state, LedState.IDLE))

    agent = Agent(cfg, encoder=encoder, sealer=sealer, detector=detector, on_state=led)
    uplink: Uplink | None = None
    service = Service(cfg, src, agent, outbox, None, None, key, clock_sync=synced)
    if connect:
        topics = Topics(cfg.topic_prefix)
        gate = (CommandGate(parse_public_key(cfg.owner.command_key), cfg.device.id,
                            data_dir / "command_counter.json") if cfg.owner.command_key else None)

        def on_command(payload: bytes) -> None:
            cmd = gate.check(payload) if gate is not None else None
            if cmd is not None:
                agent.owner_request(cmd.action)

        uplink = Uplink(cfg.mqtt, topics, outbox, client_id=cfg.mqtt.client_id or
                        f"doorstep-{cfg.device.id}", inbox_public=inbox_public,
                        status=service.status, on_command=on_command,
                        secrets_dir=data_dir)
        outbox.on_commit = uplink.notify
        service.uplink = uplink
    if cfg.button.enabled or cfg.chime.enabled or cfg.led.enabled:
        def emit(event: object) -> None:
            if isinstance(event, Ring):
                service.press(RingPress(event.at_wall, event.at_mono, event.count, event.first))
            elif isinstance(event, LongPress) and cfg.button.long_press_action == "privacy":
                agent.owner_request("privacy_off" if agent.privacy else "privacy_on")

        bell = Doorbell(cfg.button, cfg.chime, cfg.led, pin_factory=pin_factory,
                        clock=SystemClock(), emit=emit)
        holder["bell"] = bell
        service.doorbell = bell
    return service


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="run the doorbell agent",
                       description="Capture, detect motion, record sealed clips and upload "
                       "them. Stops on SIGTERM or when a file source ends.")
    p.add_argument("--config", required=True, metavar="FILE", help="doorstep.toml")
    p.add_argument("--drain", type=float, default=60.0, metavar="SECONDS",
                   help="when a file source ends, wait this long for the inbox to confirm "
                   "every upload before exiting (default 60; what is left stays in the outbox "
                   "for the next start)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    memory.set_up()  # before any codec allocates
    try:
        cfg = load_config(args.config)
        service = build(cfg)
    except DoorstepError as exc:
        print(f"doorstep run: {exc}", file=sys.stderr)
        return 2
    log.info("doorstep %s: device %s, key %s", __version__, cfg.device.id,
             fingerprint(service.device_key.public_key))
    signal.signal(signal.SIGTERM, lambda *_: service.stop_event.set())
    try:
        service.run(drain_timeout=args.drain, freeze_gc=True)
    except KeyboardInterrupt:
        service.stop_event.set()
    except DoorstepError as exc:
        log.error("doorstep run: %s", exc)
        return 1
    return 0
