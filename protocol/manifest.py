"""Signed, hash-chained artifact manifests: what the device says it sealed, so the owner can prove
a clip came unaltered from their doorbell and can spot what a relay dropped, reordered or changed.

Wire form, version 1. An envelope is UTF-8 JSON of at most 16 KiB:
    {"manifest":{...},"sig":"<standard base64 of the 64-byte Ed25519 signature>"}
A manifest's canonical bytes are its JSON with sorted keys, no whitespace, UTF-8 (non-ASCII kept as
is), `created` always written as a float. The device key signs SIGN_CONTEXT + canonical bytes; the
prefix keeps any other device-signed message from passing as a manifest. A manifest's hash (the next
manifest's `prev`) is the hex SHA-256 of its canonical bytes, so re-spacing the envelope changes
nothing, while editing any field breaks the signature and the chain.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from doorstep.core.errors import SealError, SignatureError
from doorstep.protocol.keys import SigningKey, verify
from doorstep.protocol.kinds import Kind

VERSION = 1
MAX_ENVELOPE = 16 * 1024
SIGN_CONTEXT = b"doorstep/manifest/v1\n"
KINDS = tuple(Kind)
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Manifest:
    """One artifact as the device vouches for it. Construction validates every field."""

    device: str
    seq: int                 # per device, from 1, no gaps
    kind: str                # one of KINDS
    artifact: str            # artifact id, e.g. "<device>-<seq>"
    created: float           # unix time on the device's clock
    clock_synced: bool       # was that clock NTP-synchronised?
    size: int                # ciphertext bytes
    sha256: str              # hex SHA-256 of the ciphertext
    prev: str                # hash of the previous manifest; "" for seq 1
    priority: int = 0        # 0 = ring/event, higher = less urgent (motion clip: 1)
    parent: str = ""         # artifact this one belongs to (a snapshot's event), "" if none
    version: int = VERSION

    def __post_init__(self) -> None:
        problems = _problems(self)
        if problems:
            raise SealError("invalid manifest: " + "; ".join(problems))

    def canonical(self) -> bytes:
        """The bytes that are signed and hashed."""
        d = asdict(self)
        d["created"] = float(self.created)
        return json.dumps(d, sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False, allow_nan=False).encode("utf-8")

    def hash(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()


def _is_int(v: Any) -> bool:
    return type(v) is int


def _problems(m: Manifest) -> list[str]:
    p = []
    if not _is_int(m.version) or m.version != VERSION:
        p.append(f"version {m.version!r} is not {VERSION}")
    if not isinstance(m.device, str) or not _ID.fullmatch(m.device):
        p.append(f"device {m.device!r} is not a valid id")
    if not _is_int(m.seq) or not 1 <= m.seq < 2**63:
        p.append(f"seq {m.seq!r} is not an integer >= 1")
    if m.kind not in KINDS:
        p.append(f"kind {m.kind!r} is not one of {', '.join(KINDS)}")
    if not isinstance(m.artifact, str) or not _ID.fullmatch(m.artifact):
        p.append(f"artifact {m.artifact!r} is not a valid id")
    if (type(m.created) not in (int, float) or not math.isfinite(m.created)
            or m.created < 0):
        p.append(f"created {m.created!r} is not a finite unix time")
    if not isinstance(m.clock_synced, bool):
        p.append(f"clock_synced {m.clock_synced!r} is not a boolean")
    if not _is_int(m.size) or m.size < 0:
        p.append(f"size {m.size!r} is not an integer >= 0")
    if not isinstance(m.sha256, str) or not _HEX64.fullmatch(m.sha256):
        p.append("sha256 is not 64 lower-case hex digits")
    if m.seq == 1 and m.prev != "":
        p.append("prev must be empty for seq 1")
    elif m.seq != 1 and not (isinstance(m.prev, str) and _HEX64.fullmatch(m.prev)):
        p.append("prev is not 64 lower-case hex digits")
    if not _is_int(m.priority) or not 0 <= m.priority <= 9:
        p.append(f"priority {m.priority!r} is not an integer 0..9")
    if not isinstance(m.parent, str) or (m.parent and not _ID.fullmatch(m.parent)):
        p.append(f"parent {m.parent!r} is not empty or a valid id")
    return p


def sign_manifest(key: SigningKey, manifest: Manifest) -> bytes:
    """The signed envelope, ready to publish."""
    body = manifest.canonical()
    sig = base64.b64encode(key.sign(SIGN_CONTEXT + body))
    return b'{"manifest":' + body + b',"sig":"' + sig + b'"}'


def _no_dupes(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise SealError(f"manifest envelope: duplicate key {k!r}")
        out[k] = v
    return out


def _reject_constant(name: str) -> Any:
    raise SealError(f"manifest envelope: {name} is not allowed")


def _parse(data: bytes) -> tuple[Manifest, bytes]:
    if len(data) > MAX_ENVELOPE:
        raise SealError(f"manifest envelope is {len(data)} bytes, more than {MAX_ENVELOPE}")
    try:
        doc = json.loads(data.decode("utf-8"), object_pairs_hook=_no_dupes,
                         parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:
        # ValueError: bad UTF-8, bad JSON, or an integer of more digits than Python parses;
        # RecursionError: a few KiB of "[[[[..." nest deeper than the parser can go
        raise SealError(f"manifest envelope is not valid JSON: "
                        f"{e.__class__.__name__}: {str(e)[:100]}") from None
    if not isinstance(doc, dict) or set(doc) != {"manifest", "sig"}:
        raise SealError('manifest envelope must be {"manifest": {...}, "sig": "..."}')
    body, sig_text = doc["manifest"], doc["sig"]
    names = {f.name for f in fields(Manifest)}
    if not isinstance(body, dict) or set(body) != names:
        got = set(body) if isinstance(body, dict) else set()
        raise SealError(f"manifest fields wrong: missing {sorted(names - got)}, "
                        f"unknown {sorted(got - names)}")
    try:
        sig = base64.b64decode(sig_text, validate=True) if isinstance(sig_text, str) else b""
    except binascii.Error:
        sig = b""
    if len(sig) != 64:
        raise SealError("manifest envelope: sig is not a base64 Ed25519 signature")
    if _is_int(body["created"]):
        try:
            body["created"] = float(body["created"])
        except OverflowError:
            raise SealError("manifest: created is not a finite unix time") from None
    return Manifest(**body), sig


def open_envelope(data: bytes, device_public: Ed25519PublicKey,
                  expect_device: str | None = None) -> Manifest:
    """Check an envelope's form and signature; raises SealError / SignatureError."""
    manifest, sig = _parse(data)
    try:
        verify(device_public, sig, SIGN_CONTEXT + manifest.canonical())
    except SignatureError as e:
        raise SignatureError(f"manifest {manifest.device} seq {manifest.seq}: {e}") from None
    if expect_device is not None and manifest.device != expect_device:
        raise SignatureError(f"manifest is from device {manifest.device!r}, "
                             f"expected {expect_device!r}")
    return manifest


def manifest_hash(envelope: bytes | Manifest) -> str:
    """The chain hash of a manifest (given itself or its envelope; the signature is not checked)."""
    return (envelope if isinstance(envelope, Manifest) else _parse(envelope)[0]).hash()


# The ``prev`` of the first manifest after a device lost its chain position (a visible break)
RESTART_PREV = hashlib.sha256(b"doorstep: chain position lost; numbering restarted").hexdigest()


class Chain:
    """The device's position in its manifest chain. next() advances it: persist to_json() with
    the sealed artifact before publishing, so a restart never reuses a sequence number."""

    def __init__(self, device: str, last_seq: int = 0, last_hash: str = "") -> None:
        if last_seq < 0 or (last_seq == 0) != (last_hash == ""):
            raise SealError(f"chain state inconsistent: seq {last_seq}, hash {last_hash!r}")
        self.device = device
        self.last_seq = last_seq
        self.last_hash = last_hash

    @classmethod
    def restart(cls, device: str, last_seq: int) -> Chain:
        """A chain that goes on after ``last_seq`` when its true position was lost: the next
        manifest's ``prev`` is RESTART_PREV, which no manifest hashes to, so verifiers report
        the break rather than a fork."""
        return cls(device, last_seq, RESTART_PREV)

    @classmethod
    def after(cls, manifest: Manifest, digest: str | None = None) -> Chain:
        """The chain positioned just after `manifest` (whose hash is `digest` if known)."""
        return cls(manifest.device, manifest.seq, digest or manifest.hash())

    def next(self, kind: str, size: int, sha256: str, *, created: float, clock_synced: bool,
             priority: int = 0, parent: str = "", artifact: str | None = None) -> Manifest:
        seq = self.last_seq + 1
        m = Manifest(device=self.device, seq=seq, kind=kind,
                     artifact=artifact or f"{self.device}-{seq}", created=created,
                     clock_synced=clock_synced, size=size, sha256=sha256, prev=self.last_hash,
                     priority=priority, parent=parent)
        self.last_seq, self.last_hash = seq, m.hash()
        return m

    def to_json(self) -> str:
        return json.dumps({"device": self.device, "last_seq": self.last_seq,
                           "last_hash": self.last_hash}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Chain:
        try:
            d = json.loads(text)
            return cls(str(d["device"]), int(d["last_seq"]), str(d["last_hash"]))
        except (ValueError, KeyError, TypeError) as e:
            raise SealError(f"chain state is unreadable: {e}") from None


def verify_chain(manifests: Sequence[Manifest],
                 hashes: Sequence[str] | None = None) -> list[str]:
    """Problems in a set of received manifests: missing sequence numbers, broken prev links,
    duplicates and conflicting manifests for one seq. `hashes`, if given, are the stored hashes of
    `manifests` (checked against them). An empty list means the chain is whole from seq 1."""
    if hashes is not None and len(hashes) != len(manifests):
        raise ValueError("verify_chain: manifests and hashes differ in length")
    problems: list[str] = []
    by_device: dict[str, dict[int, list[str]]] = {}
    for i, m in enumerate(manifests):
        h = m.hash()
        if hashes is not None and hashes[i] != h:
            problems.append(f"{m.device} seq {m.seq}: stored hash does not match its manifest")
        by_device.setdefault(m.device, {}).setdefault(m.seq, []).append(h)
    prevs = {(m.device, m.seq, m.hash()): m.prev for m in manifests}
    for device, by_seq in sorted(by_device.items()):
        expected = 1
        for seq in sorted(by_seq):
            if seq > expected:
                span = str(expected) if seq - 1 == expected else f"{expected}-{seq - 1}"
                problems.append(f"{device}: missing seq {span}")
            expected = seq + 1
            hs = by_seq[seq]
            if len(set(hs)) > 1:
                problems.append(f"{device} seq {seq}: {len(set(hs))} different manifests "
                                "(fork or forgery)")
            elif len(hs) > 1:
                problems.append(f"{device} seq {seq}: duplicate (received {len(hs)} times)")
            before = set(by_seq.get(seq - 1, []))
            if before and any(prevs[(device, seq, h)] not in before for h in set(hs)):
                problems.append(f"{device} seq {seq}: prev does not match seq {seq - 1} "
                                "(broken link)")
    return problems
