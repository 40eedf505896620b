"""The inbox's store: verified ciphertext only, one file per artifact, named by device and
sequence, plus an index. It reassembles chunked artifacts idempotently: a duplicate or a chunk
seen twice does no harm, and a half-received artifact waits for its missing chunks.

Layout under the store root:
    <device>/device.pub                  the device's Ed25519 public key (from the inbox config)
    <device>/NNNNNNNNNN.<kind>.age       ciphertext, exactly as the device sealed it
    <device>/NNNNNNNNNN.<kind>.env       the device's signed manifest for it
    <device>/index.jsonl                 one line per stored artifact
    .partial/<device>/<seq>.<chunk_bytes>/  the opened head and the chunks of an artifact
                                         still arriving, one folder per signed chunking

Several inbox workers may share one store (MQTT shared subscriptions split the messages of one
clip between them): every write is atomic, and assembly is idempotent.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from doorstep.core.errors import SealError
from doorstep.core.fsutil import write_atomic
from doorstep.protocol.keys import public_text
from doorstep.protocol.kinds import Kind
from doorstep.protocol.manifest import Manifest, manifest_hash, open_envelope, verify_chain
from doorstep.protocol.seal import pad_size
from doorstep.protocol.wire import (
    INLINE_KINDS,
    MAX_CHUNK,
    MAX_CHUNKS,
    Transfer,
    strip_padding,
)

log = logging.getLogger(__name__)

MAX_PARTIAL_BYTES = 4 * 1024 * 1024 * 1024
EARLY_BYTES = 1024 * 1024   # chunks ahead of their manifest, in memory, per device
PARTIAL_TTL = 24 * 3600      # an unassembled artifact untouched this long is given up
SWEEP_SECONDS = 60.0
CONFLICTS = "conflicts"      # signed manifests that contradict a stored one (forks)
STORED_NAME = re.compile(r"^(\d{10})\.([a-z_]+)\.age$")


@dataclass(frozen=True)
class Stored:
    """An artifact that is safely in the store (now, or already before: ``duplicate``)."""

    device: str
    manifest: Manifest
    path: Path
    duplicate: bool


class InboxStore:
    def __init__(self, root: Path, devices: dict[str, Ed25519PublicKey]) -> None:
        self.root = Path(root)
        self.devices = dict(devices)
        self._partial_total: dict[str, int] = {}
        self._swept: dict[str, float] = {}
        # Chunks that came before their seq's signed manifest: held in memory only, at most
        # EARLY_BYTES per device, oldest dropped first; nothing unauthenticated reaches disk.
        self._early: dict[str, OrderedDict[tuple[int, int, int], bytes]] = {}
        self._early_lock = threading.Lock()
        self.root.mkdir(parents=True, exist_ok=True)
        for device, public in self.devices.items():
            d = self.root / device
            d.mkdir(exist_ok=True)
            pub = d / "device.pub"
            text = public_text(public) + "\n"
            if not pub.exists() or pub.read_text() != text:
                write_atomic(pub, text.encode())

    # -- accepting messages -------------------------------------------------------------------
    def accept_head(self, device: str, seq: int, envelope: bytes, transfer: bytes,
                    inline: bytes) -> Stored | None:
        """An artifact's opened head (wire version 2; the inbox unsealed it): the signed
        manifest, the signed chunking, and for an artifact sent whole its padded ciphertext."""
        manifest = self._open(device, envelope)
        if manifest.seq != seq:
            raise SealError(f"{device}: manifest for seq {manifest.seq} arrived on the topic of "
                            f"seq {seq}")
        t = self._transfer(device, manifest, transfer)
        if t.inline:
            if manifest.kind not in INLINE_KINDS:
                raise SealError(f"{device} seq {seq}: a {manifest.kind} cannot come whole in "
                                "its head")
            if len(inline) != t.padded:
                raise SealError(f"{device} seq {seq}: {len(inline)} bytes in the head, the "
                                f"signed chunking says {t.padded}")
            return self._store(device, manifest, envelope,
                               strip_padding(inline, manifest.size, f"{device} seq {seq}"))
        if inline:
            raise SealError(f"{device} seq {seq}: bytes after a head whose chunking says none")
        done = self._existing(device, manifest)
        if done is not None:
            return done
        part = self._partial(device, seq, t.chunk_bytes)
        hpath = part / "head"
        if not hpath.exists():
            write_atomic(hpath, _head_file(envelope, transfer), durable=False)
        for index, data in self._take_early(device, seq, t.chunk_bytes):
            self._write_chunk(device, seq, part, index, data, t)
        return self._try_assemble(device, seq, t.chunk_bytes)

    def accept_chunk(self, device: str, seq: int, chunk_bytes: int, index: int,
                     payload: bytes) -> Stored | None:
        """A chunk is written only for a seq and chunking whose signed head is here, at its
        exact size and place; one that comes first waits in a small bounded buffer in memory.
        Each signed chunking assembles in its own place, so no head can make the inbox throw
        away another's chunks."""
        if device not in self.devices:
            raise SealError(f"chunk from unknown device {device!r}")
        if not 0 < chunk_bytes <= MAX_CHUNK or index >= MAX_CHUNKS or \
                len(payload) > chunk_bytes:
            raise SealError(f"{device} seq {seq}: impossible chunk {index} "
                            f"({len(payload)} bytes of {chunk_bytes})")
        if self.find(device, seq) is not None:
            return None  # already stored: a late duplicate
        part = self.root / ".partial" / device / f"{seq}.{chunk_bytes}"
        try:
            envelope, transfer = _read_head_file((part / "head").read_bytes())
        except FileNotFoundError:
            self._hold_early(device, seq, chunk_bytes, index, payload)
            return None
        manifest = self._open(device, envelope)
        t = self._transfer(device, manifest, transfer)
        self._write_chunk(device, seq, part, index, payload, t)
        return self._try_assemble(device, seq, chunk_bytes)

    def _transfer(self, device: str, manifest: Manifest, payload: bytes) -> Transfer:
        """The signed chunking, checked against the manifest it names."""
        t = Transfer.open(payload, self.devices[device])
        if (t.device, t.seq, t.manifest) != (device, manifest.seq, manifest.hash()):
            raise SealError(f"{device} seq {manifest.seq}: the chunking is signed for "
                            f"{t.device} seq {t.seq}, another manifest")
        if t.padded != pad_size(manifest.size):
            raise SealError(f"{device} seq {manifest.seq}: padded to {t.padded} bytes, not "
                            f"{pad_size(manifest.size)}")
        return t

    def _write_chunk(self, device: str, seq: int, part: Path, index: int, data: bytes,
                     t: Transfer) -> None:
        expected = min(t.chunk_bytes, t.padded - index * t.chunk_bytes)
        if not 0 <= index < t.count or len(data) != expected:
            raise SealError(f"{device} seq {seq}: chunk {index} of {len(data)} bytes does not "
                            f"fit the signed chunking ({t.count} chunks, {t.padded} bytes)")
        path = part / f"{index}"
        if not path.exists():
            if self._partial_bytes(device) + len(data) > MAX_PARTIAL_BYTES:
                raise SealError(f"{device}: too much unassembled data; dropping chunk")
            self._partial_total[device] = self._partial_total.get(device, 0) + len(data)
        write_atomic(path, data, durable=False)

    def _hold_early(self, device: str, seq: int, chunk_bytes: int, index: int,
                    data: bytes) -> None:
        with self._early_lock:
            held = self._early.setdefault(device, OrderedDict())
            held[(seq, chunk_bytes, index)] = data
            while sum(len(d) for d in held.values()) > EARLY_BYTES:
                held.popitem(last=False)

    def _take_early(self, device: str, seq: int, chunk_bytes: int) -> list[tuple[int, bytes]]:
        with self._early_lock:
            held = self._early.get(device)
            if not held:
                return []
            mine = [(key, data) for key, data in held.items() if key[:2] == (seq, chunk_bytes)]
            for key, _ in mine:
                del held[key]
        return [(index, data) for (_, _, index), data in mine]

    # -- internals ----------------------------------------------------------------------------
    def _open(self, device: str, envelope: bytes) -> Manifest:
        public = self.devices.get(device)
        if public is None:
            raise SealError(f"message from unknown device {device!r}")
        manifest = open_envelope(envelope, public)
        if manifest.device != device:
            raise SealError(f"manifest names device {manifest.device!r} but came on the topic "
                            f"of {device!r}")
        return manifest

    def _partial(self, device: str, seq: int, chunk_bytes: int) -> Path:
        p = self.root / ".partial" / device / f"{seq}.{chunk_bytes}"
        p.mkdir(parents=True, exist_ok=True)
        return p

    def _partial_bytes(self, device: str) -> int:
        """Unassembled bytes held for ``device``: counted as chunks arrive, and recounted (with
        expired partials removed) at most once every SWEEP_SECONDS."""
        now = time.monotonic()
        if now - self._swept.get(device, -SWEEP_SECONDS) >= SWEEP_SECONDS:
            self._swept[device] = now
            self._partial_total[device] = self._sweep(device)
        return self._partial_total.get(device, 0)

    def _sweep(self, device: str) -> int:
        """Remove partials nothing has touched for PARTIAL_TTL (a clip the device evicted
        mid-upload, or chunks nobody signed); return the bytes that remain."""
        base = self.root / ".partial" / device
        if not base.exists():
            return 0
        total = 0
        cutoff = time.time() - PARTIAL_TTL
        for part in base.iterdir():
            files = [f for f in part.iterdir() if f.is_file()] if part.is_dir() else []
            stats = [f.stat() for f in files]
            if part.is_dir() and all(s.st_mtime < cutoff for s in stats):
                log.warning("inbox: %s seq %s: discarding %d unassembled file(s) untouched for "
                            "%d h", device, part.name, len(files), PARTIAL_TTL // 3600)
                for f in files:
                    f.unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    part.rmdir()
                continue
            total += sum(s.st_size for s in stats)
        return total

    @contextlib.contextmanager
    def _locked(self, device: str) -> Iterator[None]:
        """One writer per device at a time, across threads, workers and processes: two workers
        that receive the last two chunks of one clip must not both store it."""
        with open(self.root / device / ".lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield

    def _try_assemble(self, device: str, seq: int, chunk_bytes: int) -> Stored | None:
        part = self.root / ".partial" / device / f"{seq}.{chunk_bytes}"
        with self._locked(device):
            hpath = part / "head"
            if not hpath.exists():
                if self.find(device, seq) is not None:
                    _clear(part)  # a late chunk of an artifact another worker stored
                return None
            envelope, transfer = _read_head_file(hpath.read_bytes())
            manifest = self._open(device, envelope)
            t = self._transfer(device, manifest, transfer)
            done = self._existing(device, manifest)
            if done is not None:
                _clear(part)
                return done
            paths = [part / str(i) for i in range(t.count)]
            if not all(p.exists() for p in paths):
                return None
            body = b"".join(p.read_bytes() for p in paths)
            data = body[:manifest.size]
            if len(body) != t.padded or any(body[manifest.size:]) or \
                    hashlib.sha256(data).hexdigest() != manifest.sha256:
                log.warning("inbox: %s seq %d reassembled to the wrong bytes; discarding its "
                            "chunks and waiting for the device to send them again", device, seq)
                for p in paths:
                    p.unlink(missing_ok=True)
                return None
            stored = self._store_locked(device, manifest, envelope, data)
            _clear(part)
            return stored

    def find(self, device: str, seq: int) -> Path | None:
        """The stored artifact of ``seq``: a look at each name it can have (one per kind),
        never a listing of the device's folder, which holds a year of artifacts."""
        base = self.root / device
        for kind in Kind:
            path = base / f"{seq:010d}.{kind}.age"
            if path.exists():
                return path
        return None

    def _existing(self, device: str, manifest: Manifest) -> Stored | None:
        path = self.find(device, manifest.seq)
        if path is None:
            return None
        env = path.with_suffix(".env")
        try:
            old = open_envelope(env.read_bytes(), self.devices[device])
        except (OSError, SealError):
            return None
        if old != manifest:
            log.error("inbox: %s seq %d: a second, different manifest for a stored seq "
                      "(fork or forgery); keeping the first", device, manifest.seq)
            self._record_conflict(device, manifest)
            raise SealError(f"{device} seq {manifest.seq}: conflicts with the stored artifact")
        return Stored(device, manifest, path, duplicate=True)

    def _record_conflict(self, device: str, manifest: Manifest) -> None:
        """Keep the rejected manifest (signed by the device: a fork, not noise) beside the
        store, so the owner's app can show it: ``<device>/conflicts/<seq>.<hash>.json``."""
        where = self.root / device / CONFLICTS
        where.mkdir(exist_ok=True)
        name = f"{manifest.seq:010d}.{manifest.hash()[:16]}.json"
        with contextlib.suppress(OSError):
            write_atomic(where / name, manifest.canonical(), durable=False)

    def _store(self, device: str, manifest: Manifest, envelope: bytes,
               ciphertext: bytes) -> Stored:
        with self._locked(device):
            return self._store_locked(device, manifest, envelope, ciphertext)

    def _store_locked(self, device: str, manifest: Manifest, envelope: bytes,
                      ciphertext: bytes) -> Stored:
        if len(ciphertext) != manifest.size or \
                hashlib.sha256(ciphertext).hexdigest() != manifest.sha256:
            raise SealError(f"{device} seq {manifest.seq}: ciphertext does not match its "
                            "signed hash (altered in transit)")
        existing = self._existing(device, manifest)
        if existing is not None:
            return existing
        stem = f"{manifest.seq:010d}.{manifest.kind}"
        path = self.root / device / f"{stem}.age"
        write_atomic(path.with_suffix(".env"), envelope)
        write_atomic(path, ciphertext)
        line = json.dumps({"seq": manifest.seq, "kind": manifest.kind, "file": path.name,
                           "size": manifest.size, "sha256": manifest.sha256,
                           "created": manifest.created, "parent": manifest.parent,
                           "priority": manifest.priority, "stored": time.time()},
                          sort_keys=True)
        self._append_index(device, line)
        log.info("inbox: stored %s seq %d %s (%d bytes)", device, manifest.seq, manifest.kind,
                 manifest.size)
        return Stored(device, manifest, path, duplicate=False)

    def _append_index(self, device: str, line: str) -> None:
        path = self.root / device / "index.jsonl"
        with open(path, "a", encoding="utf-8") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())


def _head_file(envelope: bytes, transfer: bytes) -> bytes:
    """What the inbox keeps of an opened head while its chunks arrive (it may read it: the
    inbox is the owner's own service)."""
    return struct.pack(">I", len(envelope)) + envelope + transfer


def _read_head_file(data: bytes) -> tuple[bytes, bytes]:
    (n,) = struct.unpack(">I", data[:4])
    return data[4:4 + n], data[4 + n:]


def _clear(part: Path) -> None:
    """Remove an assembled (or abandoned) artifact's chunks and their directory."""
    if part.is_dir():
        for p in part.iterdir():
            p.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            part.rmdir()


@dataclass(frozen=True)
class ChainReport:
    device: str
    artifacts: int
    last_seq: int
    problems: list[str]


def verify_store(root: Path) -> list[ChainReport]:
    """Check every device's chain in a store: signatures, hashes, gaps and broken links."""
    from doorstep.protocol.keys import parse_public_key

    reports = []
    for ddir in sorted(p for p in Path(root).iterdir() if p.is_dir() and p.name != ".partial"):
        problems: list[str] = []
        pub_path = ddir / "device.pub"
        try:
            public = parse_public_key(pub_path.read_text().strip())
        except (OSError, ValueError) as exc:
            reports.append(ChainReport(ddir.name, 0, 0, [f"{pub_path}: {exc}"]))
            continue
        manifests: list[Manifest] = []
        hashes: list[str] = []
        for age_path in sorted(ddir.glob("*.age")):
            if not STORED_NAME.match(age_path.name):
                continue
            env = age_path.with_suffix(".env")
            try:
                envelope = env.read_bytes()
                m = open_envelope(envelope, public)
            except (OSError, SealError) as exc:
                problems.append(f"{env.name}: {exc}")
                continue
            data = age_path.read_bytes()
            if hashlib.sha256(data).hexdigest() != m.sha256 or len(data) != m.size:
                problems.append(f"{age_path.name}: ciphertext does not match its manifest")
            manifests.append(m)
            hashes.append(manifest_hash(envelope))
        problems.extend(verify_chain(manifests, hashes))
        last = max((m.seq for m in manifests), default=0)
        reports.append(ChainReport(ddir.name, len(manifests), last, problems))
    return reports
