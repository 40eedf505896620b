"""The MQTT wire contract, version 1: topic names and the byte layout of every payload.
docs/wire.md is the prose version of this module; keep the two in step.

Pure functions only: no sockets. Every parser rejects oversized or malformed input with a
SealError that says what was wrong.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from dataclasses import asdict, dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from doorstep.core.errors import SealError
from doorstep.protocol.keys import SigningKey, verify
from doorstep.protocol.kinds import Action, Kind

WIRE_VERSION = 1
ARTIFACT_MAGIC = b"DS1A"          # single-message artifact on the event topic
CHUNKED_MAGIC = b"DS1M"           # manifest of a chunked artifact on clip/<seq>/m
MAX_ENVELOPE = 16 * 1024
MAX_SINGLE = 4 * 1024 * 1024      # largest artifact sent as one message (snapshots)
MAX_CONTROL = 4096                # receipts and commands
# what the inbox accepts as one message
SINGLE_MESSAGE_KINDS = frozenset({Kind.EVENT, Kind.SNAPSHOT, Kind.THUMBNAIL})
COMMAND_ACTIONS = frozenset(Action)


@dataclass(frozen=True)
class Topics:
    """Topic names under one device's prefix, e.g. ``doorstep/frontdoor/``."""

    prefix: str

    @property
    def status(self) -> str:
        return self.prefix + "status"

    @property
    def event(self) -> str:
        return self.prefix + "event"

    @property
    def receipt(self) -> str:
        return self.prefix + "receipt"

    @property
    def cmd(self) -> str:
        return self.prefix + "cmd"

    @property
    def ack(self) -> str:
        return self.prefix + "ack"

    @property
    def inbox(self) -> str:
        """The inbox's signed, retained announcement: one topic for every device under the
        base (the prefix without its device level), ``doorstep/_inbox`` by default."""
        return inbox_topic(self.prefix.rstrip("/").rpartition("/")[0])

    def clip_manifest(self, seq: int) -> str:
        return f"{self.prefix}clip/{seq}/m"

    def clip_chunk(self, seq: int, index: int) -> str:
        return f"{self.prefix}clip/{seq}/{index}"


# -- artifacts ---------------------------------------------------------------------------------
def pack_single(envelope: bytes, ciphertext: bytes) -> bytes:
    """An artifact in one message: magic, envelope length (u32 BE), envelope, ciphertext."""
    return ARTIFACT_MAGIC + struct.pack(">I", len(envelope)) + envelope + ciphertext


def unpack_single(payload: bytes) -> tuple[bytes, bytes]:
    if len(payload) < 8 or payload[:4] != ARTIFACT_MAGIC:
        raise SealError("event payload: not a Doorstep v1 artifact (bad magic)")
    (n,) = struct.unpack(">I", payload[4:8])
    if n > MAX_ENVELOPE or 8 + n > len(payload):
        raise SealError(f"event payload: envelope length {n} is impossible for a "
                        f"{len(payload)}-byte message")
    if len(payload) > MAX_SINGLE + MAX_ENVELOPE + 8:
        raise SealError(f"event payload: {len(payload)} bytes is over the limit")
    return payload[8:8 + n], payload[8 + n:]


def pack_chunked_manifest(envelope: bytes, chunk_bytes: int, chunks: int) -> bytes:
    """Manifest of a chunked artifact: magic, chunk size (u32 BE), chunk count (u32 BE),
    envelope."""
    return CHUNKED_MAGIC + struct.pack(">II", chunk_bytes, chunks) + envelope


def unpack_chunked_manifest(payload: bytes) -> tuple[bytes, int, int]:
    if len(payload) < 12 or payload[:4] != CHUNKED_MAGIC:
        raise SealError("clip manifest: not a Doorstep v1 chunked manifest (bad magic)")
    chunk_bytes, chunks = struct.unpack(">II", payload[4:12])
    envelope = payload[12:]
    if not 0 < chunk_bytes <= 16 * 1024 * 1024 or chunks > 1 << 20:
        raise SealError(f"clip manifest: impossible chunking ({chunks} x {chunk_bytes} bytes)")
    if len(envelope) > MAX_ENVELOPE:
        raise SealError(f"clip manifest: envelope of {len(envelope)} bytes is over the limit")
    return envelope, chunk_bytes, chunks


def chunk_count(size: int, chunk_bytes: int) -> int:
    return max(1, -(-size // chunk_bytes))


# -- signed control messages (receipts, commands) ----------------------------------------------
def sign_json(key: SigningKey, body: dict[str, Any]) -> bytes:
    """``{"body": {...}, "sig": base64(Ed25519(canonical JSON of body))}``."""
    canonical = canonical_json(body)
    return json.dumps({"body": body, "sig": base64.b64encode(key.sign(canonical)).decode()},
                      sort_keys=True, separators=(",", ":")).encode()


MAX_STATUS = 64 * 1024            # a device's status: health, outbox and camera figures


def open_signed_json(payload: bytes, public: Ed25519PublicKey, what: str,
                     limit: int = MAX_CONTROL) -> dict[str, Any]:
    if len(payload) > limit:
        raise SealError(f"{what}: {len(payload)} bytes is over the {limit}-byte limit")
    try:
        doc = json.loads(payload)
        body, sig = doc["body"], base64.b64decode(doc["sig"], validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error, RecursionError) as exc:
        # RecursionError: a few KiB of "[[[[..." nest deeper than the JSON parser can go
        raise SealError(f"{what}: malformed ({exc.__class__.__name__})") from exc
    if not isinstance(body, dict):
        raise SealError(f"{what}: body is not an object")
    verify(public, sig, canonical_json(body))
    if body.get("v") != WIRE_VERSION:
        raise SealError(f"{what}: unsupported version {body.get('v')!r}")
    return body


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Receipt:
    """The inbox's word that it stored artifact ``seq`` of ``device`` with this hash."""

    device: str
    seq: int
    sha256: str

    def sign(self, key: SigningKey) -> bytes:
        return sign_json(key, {"v": WIRE_VERSION, **asdict(self)})

    @classmethod
    def open(cls, payload: bytes, inbox_public: Ed25519PublicKey) -> Receipt:
        body = open_signed_json(payload, inbox_public, "receipt")
        try:
            receipt = cls(device=str(body["device"]), seq=int(body["seq"]),
                          sha256=str(body["sha256"]))
        except (KeyError, ValueError, TypeError, OverflowError) as exc:
            raise SealError(f"receipt: missing or bad field ({exc})") from exc
        return receipt


INBOX_STATES = frozenset({"online", "offline"})


def inbox_topic(base: str) -> str:
    """``<base>/_inbox``: no device id starts with "_", so no device's topics can collide."""
    return f"{base}/_inbox" if base else "_inbox"


@dataclass(frozen=True)
class InboxStatus:
    """The inbox's word that it is ``online`` (subscribed: what is published now reaches it) or
    ``offline`` (its last will). ``time`` is the inbox's clock when it was signed; a device
    acts only on one newer than any it has seen, so a replayed old one does nothing."""

    state: str
    time: float

    def sign(self, key: SigningKey) -> bytes:
        return sign_json(key, {"v": WIRE_VERSION, **asdict(self)})

    @classmethod
    def open(cls, payload: bytes, inbox_public: Ed25519PublicKey) -> InboxStatus:
        body = open_signed_json(payload, inbox_public, "inbox status")
        try:
            status = cls(state=str(body["state"]), time=float(body["time"]))
        except (KeyError, ValueError, TypeError, OverflowError) as exc:
            raise SealError(f"inbox status: missing or bad field ({exc})") from exc
        if status.state not in INBOX_STATES:
            raise SealError(f"inbox status: unknown state {status.state!r} "
                            f"(allowed: {', '.join(sorted(INBOX_STATES))})")
        return status


@dataclass(frozen=True)
class Command:
    """An owner command. ``counter`` must exceed every counter the device has accepted.
    ``params``: the action's arguments (text only), signed with it; written only when there
    are any, so a command without them is byte for byte what it always was."""

    device: str
    counter: int
    action: Action
    issued: float
    params: tuple[tuple[str, str], ...] = ()

    def sign(self, key: SigningKey) -> bytes:
        body: dict[str, Any] = {"v": WIRE_VERSION, "device": self.device,
                                "counter": self.counter, "action": self.action,
                                "issued": self.issued}
        if self.params:
            body["params"] = dict(self.params)
        return sign_json(key, body)

    def param(self, name: str) -> str:
        return dict(self.params).get(name, "")

    @classmethod
    def open(cls, payload: bytes, owner_public: Ed25519PublicKey) -> Command:
        body = open_signed_json(payload, owner_public, "command")
        action = str(body.get("action"))
        if action not in COMMAND_ACTIONS:
            raise SealError(f"command: unknown action {action[:40]!r} "
                            f"(allowed: {', '.join(sorted(COMMAND_ACTIONS))})")
        params = body.get("params", {})
        if not isinstance(params, dict) or len(params) > 8 or not all(
                isinstance(k, str) and isinstance(v, str) and len(v) <= 512
                for k, v in params.items()):
            raise SealError("command: params must be at most 8 short text values")
        try:
            return cls(device=str(body["device"]), counter=int(body["counter"]),
                       action=Action(action), issued=float(body["issued"]),
                       params=tuple(sorted(params.items())))
        except (KeyError, ValueError, TypeError, OverflowError) as exc:
            raise SealError(f"command: missing or bad field ({exc})") from exc


@dataclass(frozen=True)
class Ack:
    """The device's signed answer to an owner command it could verify: carried out
    (``ok``), or refused with the reason. It names the command by its counter, not its action,
    so the broker learns nothing from it that the command itself did not say."""

    device: str
    counter: int
    ok: bool
    reason: str
    time: float

    def sign(self, key: SigningKey) -> bytes:
        return sign_json(key, {"v": WIRE_VERSION, "type": "ack", **asdict(self)})

    @classmethod
    def open(cls, payload: bytes, device_public: Ed25519PublicKey) -> Ack:
        body = open_signed_json(payload, device_public, "ack")
        if body.get("type") != "ack":
            raise SealError("ack: not an acknowledgement")
        try:
            return cls(device=str(body["device"]), counter=int(body["counter"]),
                       ok=bool(body["ok"]), reason=str(body["reason"])[:200],
                       time=float(body["time"]))
        except (KeyError, ValueError, TypeError, OverflowError) as exc:
            raise SealError(f"ack: missing or bad field ({exc})") from exc


def sign_status(key: SigningKey, body: dict[str, Any]) -> bytes:
    """The device's retained status, signed by the device key, so that nobody with publish
    access to the broker can put a status in its name (a forged "privacy on", say)."""
    return sign_json(key, {"v": WIRE_VERSION, "type": "status", **body})


def open_status(payload: bytes, device_public: Ed25519PublicKey) -> dict[str, Any]:
    """A device's status, checked; raises SealError for an unsigned or badly signed one."""
    body = open_signed_json(payload, device_public, "status", MAX_STATUS)
    if body.get("type") != "status":
        raise SealError("status: not a status")
    return body


def device_prefix(template: str, device: str) -> str:
    """A device's topic prefix from an ``mqtt.prefix`` template: ``{device}`` replaced by its
    id, ending in "/". The device and the owner's tools use this one rule."""
    prefix = template.replace("{device}", device)
    return prefix if prefix.endswith("/") else prefix + "/"
