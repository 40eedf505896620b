"""The running doorbell: the frame loop with its watchdog and frame rate, the ring thread that
seals a press the moment it is seen, and the status thread. `wiring.build` makes a Service
whole from the config; `agent/cli.py` is `doorstep run`.

Threads: the main thread runs the frame loop. "ring" seals ring events the moment a press is
seen, and handles the button's other events. "commit" closes clips and stores snapshots and
events for the frame loop (agent/committer.py). "status" probes health once a minute. The
uplink has its own two threads (uplink/mqtt.py). Nothing else.
"""

from __future__ import annotations

import gc
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from doorstep.agent.commands import Commands
from doorstep.agent.doorbell import Doorbell, LedState, LongPress, Ring
from doorstep.agent.live import LiveSessions
from doorstep.agent.night import NightSwitch
from doorstep.agent.rtc import RtcService
from doorstep.agent.run import Agent, RingPress
from doorstep.agent.sdnotify import FrameWatchdog, Notifier
from doorstep.agent.status import Status
from doorstep.agent.voice import Voice
from doorstep.capture.clipaudio import AudioTap
from doorstep.capture.frames import Frame, FrameSource
from doorstep.config.schema import Config
from doorstep.protocol.keys import SigningKey
from doorstep.protocol.kinds import Action
from doorstep.uplink.mqtt import Uplink
from doorstep.uplink.outbox import Outbox

log = logging.getLogger(__name__)

STATUS_INTERVAL = 60.0   # seconds between status reports (and health probes)


@dataclass
class Service:
    """Everything `doorstep run` starts, so tests and the demo can drive the same wiring.
    Built whole by ``wiring.build``; ``bell`` is the queue the doorbell's button events
    arrive on (``press`` puts a press there too)."""

    cfg: Config
    source: FrameSource
    agent: Agent
    outbox: Outbox
    uplink: Uplink | None
    doorbell: Doorbell | None
    device_key: SigningKey
    status: Status
    commands: Commands
    bell: queue.Queue[object]
    started: float = field(default_factory=time.monotonic)
    stop_event: threading.Event = field(default_factory=threading.Event)
    _ring_thread: threading.Thread | None = None
    _finished: threading.Event = field(default_factory=threading.Event)
    night: NightSwitch | None = None     # the IR-cut filter and IR LEDs, if configured
    live: LiveSessions | None = None     # live view through the broker (agent/live.py)
    rtc: RtcService | None = None        # WebRTC live view and talk (rtc.enabled)
    voice: Voice | None = None           # quick replies and voicemail (docs/talk.md)
    clip_audio: AudioTap | None = None   # the microphone for clips with sound (clip.audio)

    def press(self, press: RingPress) -> None:
        """Hand a press to the ring thread (never blocks the caller)."""
        self.bell.put(press)

    def _ring_loop(self) -> None:
        while True:
            event = self.bell.get()
            if event is None:
                return
            try:
                self._bell_event(event)
            except Exception:  # the ring path must outlive any single failure
                log.exception("ring: handling a press failed")

    def _bell_event(self, event: object) -> None:
        if isinstance(event, Ring):
            event = RingPress(event.at_wall, event.at_mono, event.count, event.first)
        if isinstance(event, RingPress):
            seq = self.agent.ring(event)
            if self.voice is not None and event.first:
                self.voice.ring(seq)
        elif isinstance(event, LongPress) and self.cfg.button.long_press_action == "privacy":
            self.agent.owner_request(Action.PRIVACY_OFF if self.agent.privacy
                                     else Action.PRIVACY_ON)

    def _status_loop(self, interval: float) -> None:
        while not self.stop_event.wait(interval) and not self._finished.is_set():
            try:
                self.status.refresh_health()
                self.status.report_drops()
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
        self.status.refresh_health()
        if self.live is not None:
            self.live.start()
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
                self.status.fps = (len(window) - 1) / max(1e-6, window[-1] - window[0])
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
            self.bell.put(None)
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
        if self.rtc is not None:
            self.rtc.close()
        if self.voice is not None:
            self.voice.close()
        if self.clip_audio is not None:
            self.clip_audio.close()
        self.agent.close()
        if self.live is not None:
            self.live.close()
        if self.uplink is not None:
            self.uplink.stop()
        if self.doorbell is not None:
            self.doorbell.close()
        if self.night is not None:
            self.night.close()
        self.source.close()

    def drain(self, timeout: float) -> bool:
        """Wait until the outbox is empty (every artifact confirmed), up to ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while self.outbox.depth and time.monotonic() < deadline:
            if self.stop_event.wait(0.05):     # SIGTERM ends the wait: the outbox keeps it all
                break
        return self.outbox.depth == 0
