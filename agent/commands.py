"""Owner commands on the doorbell: the gate that verifies them (signature, device, a counter
that only goes up, kept across restarts) and the table that says who carries out each action.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from doorstep.core.droplog import DropLog
from doorstep.core.errors import SealError
from doorstep.core.fsutil import write_atomic
from doorstep.protocol.kinds import Action
from doorstep.protocol.wire import Command

log = logging.getLogger(__name__)

Handler = Callable[[Command], None]


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


class Commands:
    """What the doorbell does with each verified command: a dispatch table by action. The
    agent's frame-loop actions are registered at wiring; a new feature (live view, talk)
    registers its own with ``commands[action] = handler``. Runs on the uplink's thread, so a
    handler only hands work on and returns."""

    def __init__(self, gate: CommandGate | None) -> None:
        self._gate = gate
        self._table: dict[Action, Handler] = {}

    def __setitem__(self, action: Action, handler: Handler) -> None:
        self._table[action] = handler

    def __contains__(self, action: object) -> bool:
        return action in self._table

    def on_payload(self, payload: bytes) -> None:
        """A message on the command topic: verified, then dispatched. Without an owner
        command key in the config, every command is refused."""
        cmd = self._gate.check(payload) if self._gate is not None else None
        if cmd is None:
            return
        handler = self._table.get(cmd.action)
        if handler is None:
            log.warning("owner command %s: nothing handles it on this doorbell", cmd.action)
            return
        handler(cmd)
