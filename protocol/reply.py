"""A quick reply's transfer to the doorbell (docs/wire.md, "Quick replies"): a signed
``reply_put`` command that names the audio by size and SHA-256, then the audio itself in parts,
each sealed to the device key on the same ``cmd`` topic. The command's signature covers the
hash, so a part only has to be sealed, not signed: a forged part makes the hash differ and the
whole transfer is refused. Pure functions only.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from doorstep.core.errors import SealError
from doorstep.protocol.age import X25519Identity
from doorstep.protocol.seal import open_box, recipient_of, seal_box
from doorstep.protocol.wire import Command

PART_MAGIC = b"DS2P"             # one part of a reply's audio, sealed to the device key
PART_BYTES = 16 * 1024           # audio bytes in every part but the last
PART_BUCKET = 4096               # each part's sealed content is padded to a multiple of this
MAX_REPLY = 256 * 1024           # the largest reply a doorbell accepts at all
_HEAD = struct.Struct(">QI")     # counter, offset
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ReplyOffer:
    """What a signed ``reply_put`` promises: the reply's name, its audio's exact size and
    SHA-256, a label for the app, and whether it plays by itself after an unanswered ring."""

    name: str
    size: int
    sha256: str
    label: str
    auto: bool

    @classmethod
    def of(cls, cmd: Command, limit: int = MAX_REPLY) -> ReplyOffer:
        """Checked before a single byte of audio is taken: raises SealError naming what is
        wrong (the refusal the owner reads)."""
        name, size, digest = cmd.param("name"), cmd.param("size"), cmd.param("sha256")
        if not NAME.fullmatch(name):
            raise SealError(f"reply_put: name {name[:40]!r} is not 1-32 of a-z, 0-9, _ and -")
        if not size.isascii() or not size.isdigit() or len(size) > 9:
            raise SealError(f"reply_put: size {size[:20]!r} is not a whole number of bytes")
        n = int(size)
        if not 1 <= n <= limit:
            raise SealError(f"reply_put: {n} bytes is over this doorbell's limit of {limit} "
                            "bytes (voice.reply_max_kb)" if n else "reply_put: empty audio")
        if not SHA256.fullmatch(digest):
            raise SealError("reply_put: sha256 is not 64 lower-case hex digits")
        return cls(name=name, size=n, sha256=digest, label=cmd.param("label")[:80],
                   auto=cmd.param("auto") == "1")


def parts_of(audio: bytes) -> list[tuple[int, bytes]]:
    """(offset, bytes) of each part, in order."""
    return [(off, audio[off:off + PART_BYTES]) for off in range(0, len(audio), PART_BYTES)]


def seal_part(counter: int, offset: int, data: bytes, device_public: Ed25519PublicKey) -> bytes:
    """One part as it travels on ``cmd``: ``DS2P`` then a box sealed to the device key holding
    ``u64 counter || u32 offset || data``."""
    if len(data) > PART_BYTES:
        raise ValueError(f"a part holds at most {PART_BYTES} bytes")
    content = _HEAD.pack(counter, offset) + data
    return seal_box(PART_MAGIC, content, recipient_of(device_public), PART_BUCKET)


def open_part(payload: bytes, identity: X25519Identity) -> tuple[int, int, bytes]:
    """(the command's counter, the offset, the bytes) of a sealed part; SealError if it is
    not one, does not open, or is too long (checked before it is opened)."""
    content = open_box(PART_MAGIC, payload, identity, "reply part",
                       PART_BYTES + _HEAD.size + PART_BUCKET + 1024)
    if len(content) < _HEAD.size or len(content) > _HEAD.size + PART_BYTES:
        raise SealError(f"reply part: {len(content)} bytes of content is not a part")
    counter, offset = _HEAD.unpack_from(content)
    return counter, offset, content[_HEAD.size:]
