"""Enrolment codes: `doorstep enroll` (on the owner's machine, with the owner's command key)
makes a one-time code, the hub redeems it for a browser that presents its new public keys,
and `doorstep enroll` then asks every doorbell, by a command signed with the owner's key, to
seal for that browser from then on (docs/design.md decision 24).

The two processes meet in the hub's folder, ``<home>/hub/enrol/``:
    <sha256(code)>.code      written by `doorstep enroll`: when it expires
    <sha256(code)>.claim     renamed from .code by the hub when a browser redeems it (one
                             rename wins: a code works once), then filled with the browser
    <sha256(code)>.result    written by `doorstep enroll`: each doorbell's signed answer
Only hashes of codes are on disk. Codes expire (10 minutes), and failed attempts are limited
per client and overall."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from doorstep.core.errors import DoorstepError
from doorstep.core.fsutil import write_atomic

CODE_SECONDS = 600.0
ALPHABET = "ABCDEFGHJKMNPQRSTVWXYZ23456789"     # no 0/O, 1/I/L, U
CODE_LENGTH = 12                                # about 59 bits
FAILS_PER_CLIENT = 5                            # failed attempts per client per window
FAILS_OVERALL = 30
FAIL_WINDOW = 60.0


class EnrolRefused(DoorstepError):
    """A code that cannot be redeemed; ``status`` is the HTTP status the hub answers with."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def normalise(code: str) -> str:
    return "".join(ch for ch in code.upper() if ch.isalnum())


def code_hash(code: str) -> str:
    return hashlib.sha256(b"doorstep/enrol/v1\n" + normalise(code).encode()).hexdigest()


def new_code(folder: Path, *, now: Callable[[], float] = time.time,
             seconds: float = CODE_SECONDS) -> tuple[str, str]:
    """A fresh code, registered in ``folder``; returns (code as people read it, its hash)."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    raw = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))
    digest = code_hash(raw)
    write_atomic(folder / f"{digest}.code",
                 json.dumps({"expires": now() + seconds}).encode(), mode=0o600)
    return "-".join(raw[i:i + 4] for i in range(0, CODE_LENGTH, 4)), digest


@dataclass(frozen=True)
class Claim:
    digest: str
    browser: str
    recipient: str
    key: str
    label: str


class Codes:
    """The hub's side: redeem a code once, with failures rate-limited."""

    def __init__(self, folder: Path, *, now: Callable[[], float] = time.time) -> None:
        self.folder = folder
        self.now = now
        self._fails: dict[str, deque[float]] = {}
        self._all_fails: deque[float] = deque()
        self._lock = threading.Lock()
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _limited(self, client: str) -> bool:
        cutoff = self.now() - FAIL_WINDOW
        with self._lock:
            for q in (self._fails.get(client, deque()), self._all_fails):
                while q and q[0] < cutoff:
                    q.popleft()
            return (len(self._fails.get(client, ())) >= FAILS_PER_CLIENT
                    or len(self._all_fails) >= FAILS_OVERALL)

    def _fail(self, client: str, message: str, status: int) -> EnrolRefused:
        with self._lock:
            self._fails.setdefault(client, deque()).append(self.now())
            self._all_fails.append(self.now())
        return EnrolRefused(message, status)

    def redeem(self, code: str, client: str) -> str:
        """Take the code (it works once); returns its hash. Raises EnrolRefused."""
        if self._limited(client):
            raise EnrolRefused("too many wrong codes; wait a minute", 429)
        if len(normalise(code)) != CODE_LENGTH:
            raise self._fail(client, "that is not an enrolment code", 403)
        digest = code_hash(code)
        src, dst = self.folder / f"{digest}.code", self.folder / f"{digest}.claim"
        try:
            expires = float(json.loads(src.read_bytes())["expires"])
            os.rename(src, dst)           # atomic: of two redeemers, one wins
        except FileNotFoundError:
            raise self._fail(client, "unknown or already used enrolment code", 403) from None
        except (OSError, ValueError, KeyError, TypeError):
            raise self._fail(client, "unreadable enrolment code", 403) from None
        if expires < self.now():
            dst.unlink(missing_ok=True)
            raise self._fail(client, "this enrolment code has expired; run `doorstep "
                             "enroll` again", 410)
        return digest

    def fill(self, digest: str, claim: dict[str, Any]) -> None:
        write_atomic(self.folder / f"{digest}.claim", json.dumps(claim).encode(), mode=0o600)

    def results(self) -> dict[str, dict[str, Any]]:
        """Finished enrolments and removals: browser id -> {"devices": {device: answer},
        "removed": bool}; their files are removed."""
        out: dict[str, dict[str, Any]] = {}
        for path in self.folder.glob("*.result"):
            try:
                doc = json.loads(path.read_bytes())
                out[str(doc["browser"])] = {"devices": dict(doc["devices"]),
                                            "removed": bool(doc.get("removed", False))}
            except (OSError, ValueError, KeyError, TypeError):
                continue
            path.unlink(missing_ok=True)
            path.with_suffix(".claim").unlink(missing_ok=True)
        return out

    def sweep(self) -> None:
        """Remove expired, never-used codes."""
        for path in self.folder.glob("*.code"):
            try:
                if float(json.loads(path.read_bytes())["expires"]) < self.now():
                    path.unlink(missing_ok=True)
            except (OSError, ValueError, KeyError, TypeError):
                path.unlink(missing_ok=True)


def wait_claim(folder: Path, digest: str, timeout: float,
               poll: float = 0.2) -> Claim | None:
    """`doorstep enroll`'s side: the browser that redeemed the code, once the hub filled in
    its keys, or None when the code expired unused."""
    deadline = time.monotonic() + timeout
    path = folder / f"{digest}.claim"
    while time.monotonic() < deadline:
        try:
            doc = json.loads(path.read_bytes())
            return Claim(digest, str(doc["browser"]), str(doc["recipient"]),
                         str(doc["key"]), str(doc.get("label", "")))
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            time.sleep(poll)       # not redeemed yet, or the claim is being written
    return None


def write_result(folder: Path, digest: str, browser: str, devices: dict[str, str], *,
                 removed: bool = False) -> None:
    write_atomic(folder / f"{digest}.result",
                 json.dumps({"browser": browser, "devices": devices,
                             "removed": removed}).encode(), mode=0o600)
