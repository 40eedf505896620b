"""The household's enrolled devices on the doorbell: who else everything recorded from now on
is sealed to, and whose command keys may operate the doorbell. The list is kept in
``recipients.json`` in the data dir, written durably before the Sealer uses it, and changed
only by ``add_recipient`` / ``remove_recipient`` commands that the owner's own command key
signed (the gate refuses them from a member's key: docs/design.md decision 24).

If the file cannot be read, the doorbell seals to the config's recipients only (the owner's
``owner.key`` still opens everything), refuses changes until the problem is fixed, and the
status says why: a member then sees no new recordings, which is visible, rather than a list
that nobody signed."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from doorstep.agent.commands import Done
from doorstep.core.errors import KeyFileError
from doorstep.core.fsutil import write_atomic
from doorstep.protocol.age import X25519Recipient
from doorstep.protocol.keys import parse_public_key
from doorstep.protocol.kinds import Action
from doorstep.protocol.wire import Command

log = logging.getLogger(__name__)

RECIPIENTS_FILE = "recipients.json"
MAX_MEMBERS = 32
_LABEL_CHARS = 64


@dataclass(frozen=True)
class Member:
    """One enrolled device of the household: its age recipient, the Ed25519 key its
    commands are signed with ("" for none), and a label for people."""

    recipient: str
    key: str
    label: str
    added: float


class Recipients:
    """``all()``: the config's recipients and every member's, in that order. ``on_change``
    receives the new list after it was stored (the wiring points it at the Sealer)."""

    def __init__(self, path: Path, base: Sequence[X25519Recipient], *,
                 now: Callable[[], float] = time.time) -> None:
        self.path = path
        self.base = list(base)
        self.now = now
        self.on_change: Callable[[list[X25519Recipient]], None] = lambda _: None
        self.problem: str | None = None
        self._lock = threading.Lock()
        self.members: list[Member] = self._load()

    def _load(self) -> list[Member]:
        try:
            doc = json.loads(self.path.read_bytes())
            members = [Member(recipient=str(m["recipient"]), key=str(m["key"]),
                              label=str(m["label"]), added=float(m["added"]))
                       for m in doc["members"]]
            for m in members:
                X25519Recipient.parse(m.recipient)
                if m.key:
                    parse_public_key(m.key)
            return members
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
            self.problem = (f"{self.path}: the enrolled recipients are unreadable "
                            f"({exc.__class__.__name__}); sealing to the configured "
                            "recipients only")
            log.error("%s", self.problem)
            return []

    def all(self) -> list[X25519Recipient]:
        seen = {r.public for r in self.base}
        out = list(self.base)
        for m in self.members:
            r = X25519Recipient.parse(m.recipient)
            if r.public not in seen:
                seen.add(r.public)
                out.append(r)
        return out

    def command_keys(self) -> list[Ed25519PublicKey]:
        """The members' command keys (they may send operational commands, never these)."""
        return [parse_public_key(m.key) for m in self.members if m.key]

    # command handlers: run on the uplink thread; quick (one small durable write)
    def add(self, cmd: Command, done: Done) -> None:
        done(self._change(cmd, add=True))

    def remove(self, cmd: Command, done: Done) -> None:
        done(self._change(cmd, add=False))

    def _change(self, cmd: Command, *, add: bool) -> str | None:
        try:
            recipient = str(X25519Recipient.parse(cmd.param("recipient")))
            key = cmd.param("key")
            if key:
                parse_public_key(key)
        except KeyFileError as exc:
            return f"{cmd.action}: {exc}"
        label = cmd.param("label")[:_LABEL_CHARS]
        with self._lock:
            if self.problem is not None:
                return f"{cmd.action}: refused while {self.problem}"
            kept = [m for m in self.members if m.recipient != recipient]
            if add:
                if len(kept) >= MAX_MEMBERS:
                    return f"add_recipient: already {MAX_MEMBERS} members; remove one first"
                kept.append(Member(recipient, key, label, self.now()))
            elif len(kept) == len(self.members):
                return f"remove_recipient: {recipient[:16]}... is not a member"
            doc = {"v": 1, "members": [asdict(m) for m in kept]}
            try:
                write_atomic(self.path, json.dumps(doc, sort_keys=True).encode(), mode=0o600)
            except OSError as exc:
                return f"{cmd.action}: could not store the recipients ({exc.strerror or exc})"
            self.members = kept
            recipients = self.all()
        log.info("owner command: %s %s (%s); sealing to %d recipients", cmd.action,
                 recipient[:16], label or "no label", len(recipients))
        self.on_change(recipients)
        return None

    def register(self, commands: Callable[[Action, Callable[[Command, Done], None]], None]
                 ) -> None:
        commands(Action.ADD_RECIPIENT, self.add)
        commands(Action.REMOVE_RECIPIENT, self.remove)
