"""What the doorbell reports about itself: whether its clock is synchronised, the last health
probe, its frame rate, and the body of the retained status message built from them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from doorstep import __version__
from doorstep.agent.health import collect_health
from doorstep.agent.run import Agent
from doorstep.capture.frames import FrameSource
from doorstep.config.provisioned import read_provisioned
from doorstep.config.schema import Config
from doorstep.core.droplog import DropLog
from doorstep.protocol.keys import SigningKey, fingerprint
from doorstep.uplink.outbox import Outbox


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


class Status:
    """The doorbell's health and modes, for the retained status message."""

    def __init__(self, cfg: Config, *, key: SigningKey, agent: Agent, outbox: Outbox,
                 source: FrameSource, clock_sync: ClockSync,
                 problems: Callable[[], list[str]] = list,
                 drops: Callable[[], dict[str, DropLog]] = dict) -> None:
        self.cfg = cfg
        self.key = key
        self.agent = agent
        self.outbox = outbox
        self.source = source
        self.clock_sync = clock_sync
        self.problems = problems     # what the owner must be told (lost state, say)
        self.drops = drops           # the drop logs whose counts the status carries
        self.fps = 0.0
        self._health: dict[str, Any] | None = None

    def refresh_health(self) -> dict[str, Any]:
        """Probe the machine (sysfs, vcgencmd, timedatectl): only ever on the status thread or
        at start-up, never on the frame, ring or uplink threads."""
        health = collect_health(data_dir=self.cfg.device.data_dir, frame_rate=self.fps,
                                outbox_depth=self.outbox.depth).to_dict()
        self._health = health
        self.clock_sync.set(health.get("clock_synchronised"))
        return health

    def report_drops(self) -> None:
        """Log what each drop log counted since the last report (the status thread, hourly
        at most as often as the status)."""
        for drop_log in self.drops().values():
            drop_log.report()

    def body(self) -> dict[str, Any]:
        """The body of the retained status message, from the last health probe."""
        health = self._health if self._health is not None else self.refresh_health()
        body: dict[str, Any] = {"version": __version__, "device": self.cfg.device.id,
                                "fingerprint": fingerprint(self.key.public_key),
                                "armed": self.agent.armed, "privacy": self.agent.privacy,
                                "outbox": self.outbox.stats(),
                                "health": {**health, "frame_rate": round(self.fps, 2),
                                           "outbox_depth": self.outbox.depth}}
        dropped = {name: drop_log.count for name, drop_log in self.drops().items()}
        if any(dropped.values()):
            body["dropped"] = dropped
        problems = self.problems()
        if problems:
            body["problems"] = problems
        provisioned = read_provisioned(self.cfg.device.data_dir)
        if provisioned is not None:
            body["provisioned_at"] = provisioned.provisioned_at
        if self.cfg.rtc.enabled:      # the app offers with the same STUN servers (docs/rtc.md)
            body["rtc"] = {"stun": [u for u in self.cfg.rtc.ice_servers
                                    if u.startswith(("stun:", "stuns:"))]}
        camera_health = getattr(self.source, "health", None)
        if camera_health is not None and hasattr(camera_health, "as_dict"):
            body["camera"] = camera_health.as_dict()
        return body
