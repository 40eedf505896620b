"""Web Push (RFC 8030, RFC 8291 encryption, RFC 8292 VAPID) through pywebpush. What the push
service carries is encrypted to the browser; what is inside is the sealed artifact itself
(the device's signed manifest and its age ciphertext) when it fits, else only which artifact
to fetch: the service worker verifies and decrypts either way (docs/design.md decision 15).

The VAPID key only lets push services tell our messages from others'; it opens nothing."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from doorstep.core.fsutil import atomic_file

log = logging.getLogger(__name__)

MAX_INLINE = 3000         # bytes of JSON before RFC 8291's 4096-byte record is at risk
TTL = 120                 # a ring older than this is not worth a notification


class Vapid:
    def __init__(self, path: Path) -> None:
        if not path.exists():
            key = ec.generate_private_key(ec.SECP256R1())
            with atomic_file(path, 0o600) as f:
                f.write(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
        self.path = path
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{path}: not an EC private key")
        raw = loaded.public_key().public_bytes(serialization.Encoding.X962,
                                               serialization.PublicFormat.UncompressedPoint)
        self.public = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def payload(device: str, seq: int, kind: str, priority: int, created: float,
            envelope: bytes, ciphertext: bytes) -> bytes:
    """The push message's plaintext for the push service to carry (encrypted to the
    browser by RFC 8291): the sealed artifact inline when it fits."""
    doc: dict[str, Any] = {"d": device, "s": seq, "k": kind, "p": priority, "c": created}
    inline = dict(doc, env=base64.b64encode(envelope).decode(),
                  ct=base64.b64encode(ciphertext).decode())
    data = json.dumps(inline, separators=(",", ":")).encode()
    if len(data) <= MAX_INLINE:
        return data
    return json.dumps(doc, separators=(",", ":")).encode()


def send(subscription: dict[str, Any], data: bytes, vapid: Vapid, *,
         urgency: str = "high") -> int:
    """Blocking (run it in a thread). Returns the push service's HTTP status; 404 and 410
    mean the subscription is gone."""
    from pywebpush import WebPushException, webpush

    try:
        response = webpush(subscription_info=subscription, data=data,
                           vapid_private_key=str(vapid.path),
                           vapid_claims={"sub": "mailto:owner@doorstep.invalid"},
                           ttl=TTL, headers={"Urgency": urgency}, timeout=10)
    except WebPushException as exc:
        status = exc.response.status_code if exc.response is not None else 0
        log.warning("hub: push to %s failed: %s", _host(subscription), status or exc)
        return status
    except OSError as exc:      # requests' errors are OSErrors: unreachable, refused, timeout
        # the push service cannot be reached: the other browsers still get theirs
        log.warning("hub: push service %s unreachable: %s", _host(subscription), exc)
        return 0
    return int(getattr(response, "status_code", 201))


def quiet_now(quiet: str, tz_offset: int, utc_minutes: int) -> bool:
    """Is ``utc_minutes`` (minutes since UTC midnight) inside "HH:MM-HH:MM" local time?"""
    if not quiet:
        return False
    try:
        start_s, end_s = quiet.split("-")
        start = int(start_s[:2]) * 60 + int(start_s[3:5])
        end = int(end_s[:2]) * 60 + int(end_s[3:5])
    except (ValueError, IndexError):
        return False
    local = (utc_minutes + tz_offset) % 1440
    return start <= local < end if start <= end else local >= start or local < end


def _host(subscription: dict[str, Any]) -> str:
    endpoint = str(subscription.get("endpoint", ""))
    return endpoint.split("/")[2] if endpoint.count("/") >= 2 else "?"
