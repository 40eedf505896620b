"""The hub's household: enrolled browsers (their age recipient, their Ed25519 key, what each
doorbell answered when asked to seal for them, their notification settings) in
``browsers.json``, and the sessions they open by signing a challenge. No secret of a browser
ever reaches the hub: it holds public keys, and session tokens only as their hashes."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from doorstep.core.errors import KeyFileError, SealError
from doorstep.core.fsutil import write_atomic
from doorstep.protocol.age import X25519Recipient
from doorstep.protocol.keys import parse_public_key, verify

SESSION_CONTEXT = b"doorstep/hub-session/v1\n"
SESSION_SECONDS = 30 * 24 * 3600
CHALLENGE_SECONDS = 60.0
MAX_BROWSERS = 32


@dataclass(frozen=True)
class Browser:
    id: str
    label: str
    recipient: str                       # age1...
    key: str                             # ed25519:... (signs sessions and commands)
    enrolled: float
    devices: dict[str, str] = field(default_factory=dict)   # device -> "added" or why not
    push: dict[str, Any] | None = None   # the PushSubscription's JSON
    motion: tuple[str, ...] = ()         # devices whose motion notifies this browser
    quiet: str = ""                      # "HH:MM-HH:MM" in the browser's local time
    tz_offset: int = 0                   # minutes to add to UTC for that local time

    def public(self) -> dict[str, Any]:
        """What the app may see of any browser (the push endpoint is left out)."""
        d = asdict(self)
        d["push"] = self.push is not None
        d["motion"] = list(self.motion)
        return d


def check_keys(recipient: str, key: str) -> None:
    """Raise KeyFileError unless both are well-formed public keys."""
    X25519Recipient.parse(recipient)
    parse_public_key(key)


class Household:
    """``browsers.json`` and the live sessions. Thread-safe (the MQTT thread reads it)."""

    def __init__(self, path: Path, *, now: Callable[[], float] = time.time) -> None:
        self.path = path
        self.now = now
        self._lock = threading.Lock()
        self._sessions: dict[str, tuple[str, float]] = {}     # sha256(token) -> (id, expiry)
        self._challenges: dict[str, float] = {}
        self.browsers: dict[str, Browser] = {}
        if path.exists():
            doc = json.loads(path.read_bytes())
            for b in doc["browsers"]:
                b["motion"] = tuple(b.get("motion", ()))
                self.browsers[b["id"]] = Browser(**b)

    def _save(self) -> None:
        doc = {"v": 1, "browsers": [asdict(b) for b in self.browsers.values()]}
        write_atomic(self.path, json.dumps(doc, sort_keys=True, indent=1).encode(), mode=0o600)

    def add(self, label: str, recipient: str, key: str) -> Browser:
        check_keys(recipient, key)
        with self._lock:
            if len(self.browsers) >= MAX_BROWSERS:
                raise KeyFileError(f"already {MAX_BROWSERS} browsers enrolled")
            if any(b.key == key or b.recipient == recipient for b in self.browsers.values()):
                raise KeyFileError("this browser's keys are already enrolled")
            browser = Browser(id=secrets.token_hex(8), label=label[:64], recipient=recipient,
                              key=key, enrolled=self.now())
            self.browsers[browser.id] = browser
            self._save()
        return browser

    def update(self, browser_id: str, **changes: Any) -> Browser:
        with self._lock:
            browser = replace(self.browsers[browser_id], **changes)
            self.browsers[browser_id] = browser
            self._save()
        return browser

    def remove(self, browser_id: str) -> None:
        with self._lock:
            self.browsers.pop(browser_id, None)
            self._sessions = {h: v for h, v in self._sessions.items() if v[0] != browser_id}
            self._save()

    # -- sessions -----------------------------------------------------------------------------
    def open_session(self, browser_id: str) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._sessions[_hash(token)] = (browser_id, self.now() + SESSION_SECONDS)
        return token

    def session(self, token: str | None) -> Browser | None:
        if not token:
            return None
        with self._lock:
            found = self._sessions.get(_hash(token))
            if found is None or found[1] < self.now():
                return None
            return self.browsers.get(found[0])

    def challenge(self) -> str:
        nonce = secrets.token_urlsafe(24)
        with self._lock:
            now = self.now()
            self._challenges = {n: t for n, t in self._challenges.items() if t > now}
            if len(self._challenges) > 1000:
                raise SealError("too many open challenges; try again in a minute")
            self._challenges[nonce] = now + CHALLENGE_SECONDS
        return nonce

    def answer(self, browser_id: str, nonce: str, signature_b64: str) -> str:
        """A session token for a browser that signed our challenge; raises SealError."""
        with self._lock:
            expiry = self._challenges.pop(nonce, 0.0)
            browser = self.browsers.get(browser_id)
        if expiry < self.now():
            raise SealError("unknown or expired challenge")
        if browser is None:
            raise SealError("unknown browser")
        try:
            sig = base64.b64decode(signature_b64, validate=True)
        except ValueError:
            raise SealError("signature is not base64") from None
        verify(parse_public_key(browser.key), sig, SESSION_CONTEXT + nonce.encode())
        return self.open_session(browser_id)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
