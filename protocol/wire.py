"""The MQTT wire contract, version 2: topic names and the byte layout of every payload.
docs/wire.md is the prose version of this module; keep the two in step.

Version 2 (issue 13) hides from the broker what version 1 showed it: an artifact's manifest and
its chunking travel sealed to the inbox key (``pack_head``), the topics no longer name the kind,
the ciphertext is padded to a Padmé bucket, and the device's status travels sealed
(``seal_status``). The signed bodies inside are version 1 as before (manifests, receipts,
commands, answers, status bodies); the chunking is a new signed body (``Transfer``, v 2).

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

from doorstep.core.errors import DoorstepError, SealError, SignatureError
from doorstep.protocol.age import X25519Identity, X25519Recipient
from doorstep.protocol.keys import SigningKey, verify
from doorstep.protocol.kinds import Action, Kind
from doorstep.protocol.seal import open_box, pad_size, recipient_of, seal, seal_box, unseal

WIRE_VERSION = 1                  # of the signed bodies: receipts, commands, answers, status
TRANSFER_VERSION = 2              # of the signed chunking (new in wire version 2)
HEAD_MAGIC = b"DS2H"              # an artifact's sealed head on a/<seq>/m
STATUS_MAGIC = b"DS2S"            # the device's sealed status
COMMAND_MAGIC = b"DS2C"           # an owner command, sealed to the device key
ANSWER_MAGIC = b"DS2K"            # the device's answer, sealed to the command's reply recipient
CONTROL_BUCKET = 1024
MAX_ENVELOPE = 16 * 1024
MAX_SINGLE = 4 * 1024 * 1024      # largest artifact sent inside its head (events)
MAX_SEALED_HEAD = 64 * 1024       # the sealed part of a head: envelope and chunking, padded
HEAD_BUCKET = 2048                # a head's sealed content is padded to a multiple of this
MAX_CHUNK = 16 * 1024 * 1024
MAX_CHUNKS = 1 << 20
MAX_CONTROL = 4096                # receipts and commands
# a command or answer carrying a WebRTC session description (docs/rtc.md): the one param
# ``sdp`` (and an answer's ``data``) may be this long; every other param stays at 512 bytes
MAX_SDP = 12 * 1024
MAX_SIGNAL = MAX_SDP + MAX_CONTROL
# what the inbox accepts inside a head (the rest comes in chunks)
INLINE_KINDS = frozenset({Kind.EVENT, Kind.SNAPSHOT, Kind.THUMBNAIL})
COMMAND_ACTIONS = frozenset(Action)


@dataclass(frozen=True)
class Topics:
    """Topic names under one device's prefix, e.g. ``doorstep/frontdoor/``."""

    prefix: str

    @property
    def status(self) -> str:
        return self.prefix + "status"

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

    def head(self, seq: int) -> str:
        """Every artifact's first message, whatever its kind: ``a/<seq>/m``."""
        return f"{self.prefix}a/{seq}/m"

    def chunk(self, seq: int, chunk_bytes: int, index: int) -> str:
        """Chunk ``index`` of an artifact sent in chunks of ``chunk_bytes``:
        ``a/<seq>/<chunk_bytes>/<index>``. The chunk size in the name keeps each signed
        chunking apart at the inbox, so no head can make it discard another's chunks."""
        return f"{self.prefix}a/{seq}/{chunk_bytes}/{index}"


# -- artifacts ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Transfer:
    """How one artifact travels, signed by the device: its manifest (by chain hash), the padded
    length of what is sent, and the chunking (``chunk_bytes`` and ``count``; both 0 when the
    padded ciphertext travels inside the head). A replay can only repeat a chunking the device
    signed for this very manifest."""

    device: str
    seq: int
    manifest: str
    padded: int
    chunk_bytes: int
    count: int

    @property
    def inline(self) -> bool:
        return self.count == 0

    def sign(self, key: SigningKey) -> bytes:
        return sign_json(key, {"v": TRANSFER_VERSION, "type": "transfer", **asdict(self)})

    @classmethod
    def open(cls, payload: bytes, device_public: Ed25519PublicKey) -> Transfer:
        body = open_signed_json(payload, device_public, "chunking", version=TRANSFER_VERSION)
        if body.get("type") != "transfer":
            raise SealError("chunking: not a transfer record")
        try:
            t = cls(device=str(body["device"]), seq=int(body["seq"]),
                    manifest=str(body["manifest"]), padded=int(body["padded"]),
                    chunk_bytes=int(body["chunk_bytes"]), count=int(body["count"]))
        except (KeyError, ValueError, TypeError, OverflowError) as exc:
            raise SealError(f"chunking: missing or bad field ({exc})") from exc
        if t.inline:
            if t.chunk_bytes != 0:
                raise SealError("chunking: inline, yet a chunk size is given")
        elif not 0 < t.chunk_bytes <= MAX_CHUNK or not 0 < t.count <= MAX_CHUNKS or \
                t.count != chunk_count(t.padded, t.chunk_bytes):
            raise SealError(f"chunking: impossible ({t.count} x {t.chunk_bytes} bytes for "
                            f"{t.padded})")
        return t


def plan_transfer(device: str, seq: int, manifest_hash: str, size: int, *, inline: bool,
                  chunk_bytes: int) -> Transfer:
    padded = pad_size(size)
    if inline:
        return Transfer(device, seq, manifest_hash, padded, 0, 0)
    return Transfer(device, seq, manifest_hash, padded, chunk_bytes,
                    chunk_count(padded, chunk_bytes))


def pack_head(envelope: bytes, transfer: bytes, inbox: X25519Recipient,
              inline: bytes = b"") -> bytes:
    """An artifact's first message: magic, u32 length of the sealed part, the sealed part (the
    signed manifest envelope and the signed chunking, to the inbox key), then, for an artifact
    sent whole, its padded ciphertext."""
    content = struct.pack(">I", len(envelope)) + envelope + transfer
    sealed = seal(content, inbox, HEAD_BUCKET)
    return HEAD_MAGIC + struct.pack(">I", len(sealed)) + sealed + inline


def unpack_head(payload: bytes, inbox: X25519Identity) -> tuple[bytes, bytes, bytes]:
    """(manifest envelope, signed chunking, inline bytes) of a head; signatures not checked."""
    if len(payload) < 8 or payload[:4] != HEAD_MAGIC:
        raise SealError("head: not a Doorstep v2 artifact head (bad magic)")
    (n,) = struct.unpack(">I", payload[4:8])
    if n > MAX_SEALED_HEAD or 8 + n > len(payload):
        raise SealError(f"head: sealed length {n} is impossible for a {len(payload)}-byte "
                        "message")
    if len(payload) - 8 - n > pad_size(MAX_SINGLE):
        raise SealError(f"head: {len(payload)} bytes is over the limit")
    content = unseal(payload[8:8 + n], inbox, "head")
    if len(content) < 4:
        raise SealError("head: sealed content too short")
    (m,) = struct.unpack(">I", content[:4])
    if m > MAX_ENVELOPE or 4 + m > len(content) or len(content) - 4 - m > MAX_CONTROL:
        raise SealError(f"head: envelope length {m} is impossible")
    return content[4:4 + m], content[4 + m:], payload[8 + n:]


def chunk_count(size: int, chunk_bytes: int) -> int:
    return max(1, -(-size // chunk_bytes))


def padded_body(ciphertext: bytes, padded: int) -> bytes:
    return ciphertext + bytes(padded - len(ciphertext))


def strip_padding(body: bytes, size: int, what: str) -> bytes:
    """The ciphertext in a padded body; the padding must be zeros (nothing else may ride)."""
    if len(body) < size or any(body[size:]):
        raise SealError(f"{what}: padding is not zeros or the body is short")
    return body[:size]


# -- signed control messages (receipts, commands) ----------------------------------------------
def sign_json(key: SigningKey, body: dict[str, Any]) -> bytes:
    """``{"body": {...}, "sig": base64(Ed25519(canonical JSON of body))}``."""
    canonical = canonical_json(body)
    return json.dumps({"body": body, "sig": base64.b64encode(key.sign(canonical)).decode()},
                      sort_keys=True, separators=(",", ":")).encode()


MAX_STATUS = 64 * 1024            # a device's status: health, outbox and camera figures


def open_signed_json(payload: bytes, public: Ed25519PublicKey, what: str,
                     limit: int = MAX_CONTROL, version: int = WIRE_VERSION) -> dict[str, Any]:
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
    try:
        verify(public, sig, canonical_json(body))
    except SignatureError as exc:
        raise SignatureError(f"{what}: {exc}") from None
    if body.get("v") != version:
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
        body = open_signed_json(payload, owner_public, "command", MAX_SIGNAL)
        action = str(body.get("action"))
        if action not in COMMAND_ACTIONS:
            raise SealError(f"command: unknown action {action[:40]!r} "
                            f"(allowed: {', '.join(sorted(COMMAND_ACTIONS))})")
        params = body.get("params", {})
        if not isinstance(params, dict) or len(params) > 8 or not all(
                isinstance(k, str) and isinstance(v, str)
                and len(v) <= (MAX_SDP if k == "sdp" else 512) for k, v in params.items()):
            raise SealError("command: params must be at most 8 short text values (an sdp "
                            f"at most {MAX_SDP} bytes)")
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
    so the broker learns nothing from it that the command itself did not say. ``data``: what
    the command asked for (an ``rtc_offer``'s SDP answer), written only when there is any, so
    every other answer is byte for byte what it always was."""

    device: str
    counter: int
    ok: bool
    reason: str
    time: float
    data: str = ""

    def sign(self, key: SigningKey) -> bytes:
        body = {"v": WIRE_VERSION, "type": "ack", **asdict(self)}
        if not self.data:
            del body["data"]
        return sign_json(key, body)

    @classmethod
    def open(cls, payload: bytes, device_public: Ed25519PublicKey) -> Ack:
        body = open_signed_json(payload, device_public, "ack", MAX_SIGNAL)
        if body.get("type") != "ack":
            raise SealError("ack: not an acknowledgement")
        data = body.get("data", "")
        if not isinstance(data, str) or len(data) > MAX_SDP:
            raise SealError(f"ack: data must be text of at most {MAX_SDP} bytes")
        try:
            return cls(device=str(body["device"]), counter=int(body["counter"]),
                       ok=bool(body["ok"]), reason=str(body["reason"])[:200],
                       time=float(body["time"]), data=data)
        except (KeyError, ValueError, TypeError, OverflowError) as exc:
            raise SealError(f"ack: missing or bad field ({exc})") from exc


def sign_status(key: SigningKey, body: dict[str, Any]) -> bytes:
    """The device's retained status, signed by the device key, so that nobody with publish
    access to the broker can put a status in its name (a forged "privacy on", say)."""
    return sign_json(key, {"v": WIRE_VERSION, "type": "status", **body})


def open_status(payload: bytes, device_public: Ed25519PublicKey) -> dict[str, Any]:
    """A device's signed status, checked; raises SealError for an unsigned or badly signed
    one."""
    body = open_signed_json(payload, device_public, "status", MAX_STATUS)
    if body.get("type") != "status":
        raise SealError("status: not a status")
    return body


STATUS_BUCKET = 1024


def seal_status(key: SigningKey, body: dict[str, Any], inbox: X25519Recipient) -> bytes:
    """The status as it travels (wire version 2): signed by the device, then sealed to the
    inbox key, padded to a multiple of STATUS_BUCKET, so the broker reads nothing of it."""
    return seal_box(STATUS_MAGIC, sign_status(key, body), inbox, STATUS_BUCKET)


def open_sealed_status(payload: bytes, inbox: X25519Identity,
                       device_public: Ed25519PublicKey) -> dict[str, Any]:
    """Open a sealed status with the inbox's identity and check the device's signature."""
    return open_status(open_box(STATUS_MAGIC, payload, inbox, "status", MAX_STATUS + 1024),
                       device_public)


def seal_command(signed: bytes, device_public: Ed25519PublicKey,
                 reply_to: X25519Recipient) -> bytes:
    """A signed command as it travels: sealed to the device key, with the recipient its
    answer is to be sealed to, so the broker learns neither the action nor the answer."""
    content = str(reply_to).encode("ascii") + b"\n" + signed
    return seal_box(COMMAND_MAGIC, content, recipient_of(device_public), CONTROL_BUCKET)


def open_sealed_command(payload: bytes,
                        device: X25519Identity) -> tuple[bytes, X25519Recipient]:
    """(the signed command, the recipient to seal the answer to); signature not checked."""
    content = open_box(COMMAND_MAGIC, payload, device, "command", MAX_SIGNAL + 2048)
    line, sep, signed = content.partition(b"\n")
    try:
        if not sep:
            raise ValueError("no reply recipient")
        return signed, X25519Recipient.parse(line.decode("ascii"))
    except (ValueError, DoorstepError) as exc:
        raise SealError(f"command: bad reply recipient ({exc})") from None


def seal_answer(signed: bytes, reply_to: X25519Recipient) -> bytes:
    return seal_box(ANSWER_MAGIC, signed, reply_to, CONTROL_BUCKET)


def open_sealed_answer(payload: bytes, identity: X25519Identity) -> bytes:
    """The device's signed answer inside; check it with ``Ack.open``."""
    return open_box(ANSWER_MAGIC, payload, identity, "answer", MAX_SIGNAL + 2048)


def counter_of(signed: bytes) -> int | None:
    """The ``counter`` of a signed command or answer, unchecked, or None: only to pair an
    answer with its command's reply recipient."""
    try:
        body = json.loads(signed[:MAX_SIGNAL])["body"]
        counter = body["counter"]
    except (ValueError, KeyError, TypeError, RecursionError):
        return None
    return counter if type(counter) is int else None


def device_prefix(template: str, device: str) -> str:
    """A device's topic prefix from an ``mqtt.prefix`` template: ``{device}`` replaced by its
    id, ending in "/". The device and the owner's tools use this one rule."""
    prefix = template.replace("{device}", device)
    return prefix if prefix.endswith("/") else prefix + "/"
