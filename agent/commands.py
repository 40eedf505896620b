"""Owner commands on the doorbell: the gate that verifies them (signature, device, a counter
that only goes up, kept across restarts) and the table that says who carries out each action.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from doorstep.core.droplog import DropLog
from doorstep.core.errors import SealError, SignatureError
from doorstep.core.fsutil import write_atomic
from doorstep.protocol.keys import SigningKey
from doorstep.protocol.kinds import OWNER_ONLY, Action
from doorstep.protocol.wire import Ack, Command

log = logging.getLogger(__name__)

Done = Callable[[str | None], None]          # the outcome: None, or why it was refused


class Reply(Protocol):
    """A ``Done`` that may also carry what the command asked for (an SDP answer)."""

    def __call__(self, outcome: str | None, data: str = "") -> None: ...


Handler = Callable[[Command, Reply], None]

ISSUED_WINDOW = 300.0   # s: a command issued further than this from our clock is refused


class CommandGate:
    """Verifies owner commands: signature, device, when it was issued, and a counter that
    must only go up. The highest accepted counter is stored durably, so a replay is refused
    even after a restart. Fails closed: if the stored counter is lost (unreadable, or gone on
    a doorbell that has run before), no command is accepted until the clock is synchronised,
    and then none issued before the loss plus ISSUED_WINDOW."""

    def __init__(self, owner_public: Any, device: str, state: Path, *,
                 clock_synced: Callable[[], bool], fresh: bool = False,
                 now: Callable[[], float] = time.time,
                 members: Callable[[], Sequence[Any]] = tuple) -> None:
        """``members``: the enrolled devices' command keys, which may sign every action
        but the owner-only ones (adding and removing recipients)."""
        self._public = owner_public
        self._members = members
        self._device = device
        self._state = state
        self._synced = clock_synced
        self._now = now
        self.drops = DropLog(log, "dropped an owner command")
        self.counter = 0
        self.lost: str | None = None      # why the stored counter cannot be trusted
        try:
            self.counter = int(json.loads(state.read_text())["counter"])
            if self.counter < 0:
                raise ValueError("negative counter")
        except FileNotFoundError:
            if not fresh:
                self.lost = f"{state} is missing on a doorbell that has run before"
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
            self.lost = f"{state} is unreadable ({exc.__class__.__name__})"
        if self.lost:
            log.error("owner commands: %s; refusing commands until a new floor is set from "
                      "the synchronised clock", self.lost)

    def check(self, payload: bytes) -> tuple[Command | None, str | None]:
        """``(command, None)``: accepted. ``(command, reason)``: genuinely the owner's and
        for us, but refused (answered with a signed refusal). ``(None, None)``: forged,
        malformed or not for us: dropped unanswered, logged once per kind."""
        try:
            cmd = self._open(payload)
            if cmd.device != self._device:
                raise SealError(f"command: for device {cmd.device[:40]!r}, not us")
        except SealError as exc:
            self.drops(str(exc))
            return None, None
        refusal = self._refusal(cmd)
        if refusal is None:
            try:
                write_atomic(self._state, json.dumps({"counter": cmd.counter}).encode())
            except OSError as exc:
                refusal = (f"could not store the command counter ({exc.strerror or exc}); "
                           "refused, so it cannot be replayed later")
        if refusal is not None:
            self.drops(f"command: {refusal}")
            return cmd, refusal
        self.counter = cmd.counter
        return cmd, None

    def _open(self, payload: bytes) -> Command:
        """The command, signed by the owner's key or, for an action that is not owner-only,
        by a member's."""
        try:
            return Command.open(payload, self._public)
        except SignatureError:
            for key in self._members():
                try:
                    cmd = Command.open(payload, key)
                except SignatureError:
                    continue
                if cmd.action in OWNER_ONLY:
                    raise SealError(f"command: {cmd.action} signed by a member's key, not "
                                    "the owner's") from None
                return cmd
            raise

    def _refusal(self, cmd: Command) -> str | None:
        now = self._now()
        synced = self._synced()
        if self.lost is not None:
            if not synced:
                return (f"the doorbell lost its replay state ({self.lost}) and its clock is "
                        "not synchronised, so a replay cannot be ruled out")
            floor = int((now + ISSUED_WINDOW) * 1000)
            try:
                write_atomic(self._state, json.dumps({"counter": floor}).encode())
            except OSError as exc:
                return f"could not store a new command counter ({exc.strerror or exc})"
            log.warning("owner commands: replay state rebuilt from the clock; commands "
                        "issued before %.0f are refused", floor / 1000)
            self.counter, self.lost = floor, None
        if synced:
            off = cmd.issued - now
            if not math.isfinite(off) or abs(off) > ISSUED_WINDOW:
                return (f"issued {off:+.0f} s from the doorbell's synchronised clock (more "
                        f"than {ISSUED_WINDOW:.0f} s): replayed, or the owner's clock is off")
            if cmd.counter > (now + ISSUED_WINDOW) * 1000:
                return ("counter is ahead of the doorbell's clock (the owner's counter file "
                        "was written by a clock running ahead; reset it)")
        if cmd.counter <= self.counter:
            return f"counter {cmd.counter} is not above {self.counter} (replayed)"
        return None


class Commands:
    """What the doorbell does with each verified command: a dispatch table by action. The
    agent's frame-loop actions are registered at wiring; a new feature (live view, talk)
    registers its own with ``commands[action] = handler``. Runs on the uplink's thread, so a
    handler only hands work on and returns; it calls ``done`` with the outcome, and the
    owner gets a signed acknowledgement or refusal (``Ack``) through ``reply``."""

    def __init__(self, gate: CommandGate | None, *, device: str, key: SigningKey,
                 reply: Callable[[bytes], None]) -> None:
        self._gate = gate
        self._device = device
        self._key = key
        self._reply = reply
        self._table: dict[Action, Handler] = {}
        # told of every verified command before it is carried out (the automatic reply
        # after a ring waits for one: docs/talk.md)
        self.observers: list[Callable[[Command], None]] = []

    def __setitem__(self, action: Action, handler: Handler) -> None:
        self._table[action] = handler

    def __contains__(self, action: object) -> bool:
        return action in self._table

    def on_payload(self, payload: bytes) -> None:
        """A message on the command topic: verified, then dispatched. Without an owner
        command key in the config, every command is refused unanswered."""
        if self._gate is None:
            return
        cmd, refusal = self._gate.check(payload)
        if cmd is None:
            return
        if refusal is not None:
            self._answer(cmd, refusal)
            return
        for observe in self.observers:
            observe(cmd)
        handler = self._table.get(cmd.action)
        if handler is None:
            self._answer(cmd, f"{cmd.action}: nothing handles it on this doorbell")
            return
        def reply(outcome: str | None, data: str = "") -> None:
            self._answer(cmd, outcome, data)

        handler(cmd, reply)

    def _answer(self, cmd: Command, refusal: str | None, data: str = "") -> None:
        ack = Ack(device=self._device, counter=cmd.counter, ok=refusal is None,
                  reason=refusal or "", time=time.time(), data=data if refusal is None else "")
        try:
            self._reply(ack.sign(self._key))
        except Exception:  # an answer that cannot be sent must not undo the command
            log.exception("owner command %d: could not send the answer", cmd.counter)
