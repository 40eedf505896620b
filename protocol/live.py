"""Live view's wire format (issue 15; docs/wire.md, "Live view"): one live segment per message,
sealed to the owner's recipients, with a header signed by the device inside the seal, so the
broker, the inbox and the hub see only ciphertext, and a viewer refuses a forged, replayed or
stale segment by its session, index and expiry.

A message is ``DS2V`` followed by an age file (one stanza per owner recipient, a fresh file
key each) whose plaintext is ``u32 n || signed header (n bytes) || media``. The media is fMP4:
the stream's init segment (only when ``init`` > 0: the session's first segment and every one
that starts at a keyframe) followed by fragments. Pure functions, no sockets.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from doorstep.core.errors import SealError
from doorstep.protocol.age import X25519Identity, X25519Recipient, decrypt, encrypt
from doorstep.protocol.keys import SigningKey
from doorstep.protocol.wire import WIRE_VERSION, open_signed_json, sign_json

LIVE_MAGIC = b"DS2V"
MAX_LIVE = 4 * 1024 * 1024          # one live message, sealed
MAX_LIVE_HEADER = 1024
SESSION = re.compile(r"^[0-9a-f]{16,32}$")   # chosen by the viewer: 64 to 128 random bits


def live_topic(prefix: str, session: str) -> str:
    """``<prefix>live/<session>``: a session's segments, QoS 0, never retained."""
    return f"{prefix}live/{session}"


def check_session(session: str) -> str | None:
    """Why ``session`` is not a usable session id, or None."""
    if not SESSION.match(session):
        return "live: the session id must be 16 to 32 lowercase hex digits"
    return None


@dataclass(frozen=True)
class LiveHeader:
    """What the device signs for each live segment. ``index`` counts from 0 in a session and
    only goes up; ``expires`` is when the session ends unless renewed (device clock); ``key``:
    the media's first frame is a keyframe (a viewer that missed a segment resumes there);
    ``init``: bytes of init segment at the start of the media (0: none); ``wall``: when the
    first frame was taken; ``sha256``: of the media."""

    device: str
    session: str
    index: int
    expires: float
    key: bool
    init: int
    wall: float
    sha256: str

    def sign(self, key: SigningKey) -> bytes:
        return sign_json(key, {"v": WIRE_VERSION, "type": "live", **asdict(self)})

    @classmethod
    def open(cls, payload: bytes, device_public: Ed25519PublicKey) -> LiveHeader:
        body = open_signed_json(payload, device_public, "live segment", MAX_LIVE_HEADER)
        if body.get("type") != "live":
            raise SealError("live segment: not a live segment header")
        try:
            return cls(device=str(body["device"]), session=str(body["session"]),
                       index=int(body["index"]), expires=float(body["expires"]),
                       key=bool(body["key"]), init=int(body["init"]),
                       wall=float(body["wall"]), sha256=str(body["sha256"]))
        except (KeyError, ValueError, TypeError, OverflowError) as exc:
            raise SealError(f"live segment: missing or bad field ({exc})") from exc


def seal_live(key: SigningKey, recipients: Sequence[X25519Recipient], *, device: str,
              session: str, index: int, expires: float, keyframe: bool, init: bytes,
              media: bytes, wall: float) -> bytes:
    """One live message: ``init`` (may be empty) then ``media`` (fragments), sealed."""
    body = init + media
    header = LiveHeader(device=device, session=session, index=index, expires=expires,
                        key=keyframe, init=len(init), wall=wall,
                        sha256=hashlib.sha256(body).hexdigest()).sign(key)
    return LIVE_MAGIC + encrypt(struct.pack(">I", len(header)) + header + body,
                                list(recipients))


@dataclass(frozen=True)
class LiveSegment:
    header: LiveHeader
    media: bytes          # init (header.init bytes) then fragments

    @property
    def init(self) -> bytes:
        return self.media[:self.header.init]

    @property
    def fragments(self) -> bytes:
        return self.media[self.header.init:]


def open_live(payload: bytes, identities: Sequence[X25519Identity],
              device_public: Ed25519PublicKey) -> LiveSegment:
    """Open and check one live message: sealed to us, signed by the device, its media the
    signed hash. Session, index and expiry are the viewer's to check (``LiveViewer``)."""
    if len(payload) > MAX_LIVE:
        raise SealError(f"live segment: {len(payload)} bytes is over the {MAX_LIVE}-byte limit")
    if payload[:4] != LIVE_MAGIC:
        raise SealError("live segment: not a Doorstep live segment (bad magic)")
    try:
        plain = decrypt(payload[4:], list(identities))
    except SealError as exc:
        raise SealError(f"live segment: cannot be opened: {exc}") from None
    if len(plain) < 4:
        raise SealError("live segment: too short")
    (n,) = struct.unpack(">I", plain[:4])
    if n > MAX_LIVE_HEADER or 4 + n > len(plain):
        raise SealError(f"live segment: header length {n} is impossible")
    header = LiveHeader.open(plain[4:4 + n], device_public)
    media = plain[4 + n:]
    if hashlib.sha256(media).hexdigest() != header.sha256 or header.init > len(media):
        raise SealError("live segment: the media is not what the device signed")
    return LiveSegment(header, media)


class LiveViewer:
    """A viewer's replay rules for one session it asked for: a segment must be for this
    device and session, not expired (``now`` on the viewer's clock, with ``skew`` seconds of
    leeway), and its index above every index seen. ``check`` returns the segment's fate:
    None to play it, else why it is refused."""

    def __init__(self, device: str, session: str, *, skew: float = 60.0) -> None:
        self.device = device
        self.session = session
        self.skew = skew
        self.last = -1
        self.need_key = True      # the first segment played must bring the init and a keyframe

    def check(self, header: LiveHeader, now: float) -> str | None:
        if header.device != self.device or header.session != self.session:
            return f"for {header.device}/{header.session[:32]}, not this session"
        if header.index <= self.last:
            return f"index {header.index} is not above {self.last} (replayed)"
        if header.expires + self.skew < now:
            return f"expired {now - header.expires:.0f} s ago (replayed)"
        if header.index != self.last + 1 and not header.key:
            self.need_key = True
        if self.need_key and not (header.key and header.init):
            self.last = header.index
            return f"index {header.index}: waiting for a keyframe after a lost segment"
        self.need_key = False
        self.last = header.index
        return None
