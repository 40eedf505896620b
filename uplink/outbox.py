"""The durable outbox: sealed artifacts (ciphertext only) on disk, signed and chained at commit,
kept until the inbox's receipt arrives, evicted by priority when the quota is reached.

Layout under the outbox root:
    tmp/                 artifacts being written; anything here at start-up is a torn leftover
    ready/NNNNNNNNNN.age ciphertext of artifact seq N
    ready/NNNNNNNNNN.env its signed manifest envelope (the commit point)
    ready/NNNNNNNNNN.ack chunks the broker has acknowledged (a hint for resuming; may lag)
    chain.json           last committed seq and manifest hash

Every commit is atomic: tmp file, fsync, rename, fsync of the directory (DESIGN.md decision 5).
All methods are thread-safe: the recorder, the ring path and the uplink share one Outbox.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from doorstep.core.errors import DiskFull, OutboxError, SealError
from doorstep.core.fsutil import fsync_dir, write_atomic
from doorstep.protocol.age import whole_chunks_length
from doorstep.protocol.keys import SigningKey
from doorstep.protocol.manifest import Chain, Manifest, manifest_hash, open_envelope, sign_manifest

log = logging.getLogger(__name__)

ACK_EVERY = 16     # chunks between upload-progress records
_TMP_NAME = re.compile(r"^(?P<kind>[a-z_]+)-p(?P<priority>\d)-[0-9a-f]{32}\.part$")


@dataclass(frozen=True)
class Item:
    """One committed artifact waiting in the outbox."""

    manifest: Manifest
    envelope: bytes
    path: Path

    @property
    def seq(self) -> int:
        return self.manifest.seq

    @property
    def size(self) -> int:
        return self.manifest.size


@dataclass(frozen=True)
class Recovery:
    """What start-up found: committed items to resume, torn leftovers removed."""

    resumed: int
    torn_removed: int
    salvaged: int = 0


class PendingArtifact:
    """Ciphertext being written into tmp/. ``write`` is a file-like sink for an age writer;
    the outbox's ``commit`` signs and publishes it, ``abort`` throws it away."""

    def __init__(self, outbox: Outbox, path: Path, kind: str, priority: int, parent: str) -> None:
        self._outbox = outbox
        self.path = path
        self.kind = kind
        self.priority = priority
        self.parent = parent
        self.created = time.time()
        # Unbuffered: every write reaches the kernel at once, so a killed process leaves all the
        # ciphertext it produced (each write is one sealed 64 KiB age chunk).
        self._file: BinaryIO | None = open(path, "xb", buffering=0)  # noqa: SIM115
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._file is None:
            raise OutboxError(f"artifact {self.path.name} is already closed")
        view = memoryview(data).cast("B")
        n = len(view)
        self._outbox._reserve(n, self)
        done = 0
        try:
            while done < n:          # an unbuffered write may be short on a nearly full disk
                try:
                    wrote = self._file.write(view[done:])
                except OSError as exc:
                    if exc.errno != errno.ENOSPC or not self._outbox._evict_for(
                            n - done, self.priority, disk_full=True):
                        raise DiskFull(f"outbox disk is full writing {self.kind} "
                                       f"({self.size + n} bytes): {exc.strerror}") from exc
                    continue
                done += wrote or 0
        except BaseException:
            # what did reach the file still counts (abort() gives it back); the rest does not
            self._hash.update(view[:done])
            self.size += done
            self._outbox._release(n - done)
            raise
        self._hash.update(view)
        self.size += n
        return n

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def _close_file(self, *, sync: bool) -> None:
        if self._file is None:
            return
        f, self._file = self._file, None
        try:
            if sync:
                f.flush()
                os.fsync(f.fileno())
        finally:
            f.close()

    def commit(self) -> Item:
        try:
            self._close_file(sync=True)
            return self._outbox._commit(self.path, kind=self.kind, priority=self.priority,
                                        parent=self.parent, created=self.created,
                                        size=self.size, sha256=self.sha256)
        except OSError as exc:
            self.abort()
            raise DiskFull(f"outbox could not commit {self.kind} ({self.size} bytes): "
                           f"{exc.strerror or exc}") from exc

    def abort(self) -> None:
        self._close_file(sync=False)
        self.path.unlink(missing_ok=True)
        self._outbox._forget(self)

    def __enter__(self) -> PendingArtifact:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self._file is not None:
            self.abort()


class Outbox:
    """See the module docstring. ``on_commit`` is called (outside the lock) with each new item,
    ``on_evict`` (under the lock: it must only hand over) with the seq of each evicted one."""

    def __init__(self, root: Path, *, device: str, key: SigningKey, quota_bytes: int,
                 clock_synced: Callable[[], bool] = lambda: True,
                 on_commit: Callable[[Item], None] | None = None) -> None:
        self.root = Path(root)
        self.device = device
        self._key = key
        self._public = key.public_key
        self.quota_bytes = quota_bytes
        self._clock_synced = clock_synced
        self.on_commit = on_commit
        self.on_evict: Callable[[int], None] | None = None
        self._lock = threading.RLock()       # the state: items, bytes used, pending writes
        # Commits are serialised (each manifest chains to the one before) under a lock of their
        # own, so their fsyncs never hold up a clip's chunk writes or a receipt, which need
        # only the state lock.
        self._commit_lock = threading.Lock()
        self._tmp = self.root / "tmp"
        self._ready = self.root / "ready"
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._ready.mkdir(parents=True, exist_ok=True)
        self._items: dict[int, Item] = {}
        self._acks_saved: dict[int, int] = {}
        self._pending: dict[Path, PendingArtifact] = {}
        self._used = 0
        self.evictions = 0
        self.evicted_bytes = 0
        self.recovery = self._recover()

    # -- start-up -----------------------------------------------------------------------------
    def _recover(self) -> Recovery:
        torn = 0
        chain = self._load_chain()
        leftovers = sorted(self._tmp.iterdir())
        for env_path in sorted(self._ready.glob("*.env")):
            age_path = env_path.with_suffix(".age")
            try:
                envelope = env_path.read_bytes()
                manifest = open_envelope(envelope, self._public)
                if not age_path.exists():
                    self._reclaim(manifest, age_path, leftovers)
                ok = age_path.exists() and age_path.stat().st_size == manifest.size
            except (OSError, SealError) as exc:
                log.warning("outbox: unreadable manifest %s: %s", env_path.name, exc)
                ok, manifest = False, None
            if not ok or manifest is None:
                log.warning("outbox: removing torn artifact %s", env_path.stem)
                for p in (env_path, age_path, env_path.with_suffix(".ack")):
                    p.unlink(missing_ok=True)
                torn += 1
                continue
            self._items[manifest.seq] = Item(manifest, envelope, age_path)
            self._used += manifest.size
            if manifest.seq > chain.last_seq:
                chain = Chain.after(manifest, manifest_hash(envelope))
        for age_path in self._ready.glob("*.age"):
            if not age_path.with_suffix(".env").exists():
                log.warning("outbox: removing %s, which has no manifest (torn commit)",
                            age_path.name)
                age_path.unlink()
                age_path.with_suffix(".ack").unlink(missing_ok=True)
                torn += 1
        self._chain = chain
        salvaged = 0
        for leftover in leftovers:
            if self._salvage(leftover):
                salvaged += 1
            else:
                log.warning("outbox: removing torn leftover %s (%d bytes) from an interrupted "
                            "write", leftover.name, leftover.stat().st_size)
                leftover.unlink()
                torn += 1
        fsync_dir(self._ready)
        if self._items or torn:
            log.info("outbox: resuming %d artifact(s) (%d salvaged), removed %d torn "
                     "leftover(s)", len(self._items), salvaged, torn)
        return Recovery(resumed=len(self._items), torn_removed=torn, salvaged=salvaged)

    def _reclaim(self, manifest: Manifest, age_path: Path, leftovers: list[Path]) -> None:
        """A crash fell between writing a manifest and renaming its ciphertext into ready/:
        find the tmp file it signed (same size and SHA-256) and finish the commit."""
        for leftover in leftovers:
            try:
                if leftover.stat().st_size != manifest.size:
                    continue
                with open(leftover, "rb") as f:
                    digest = hashlib.file_digest(f, "sha256")
            except OSError:
                continue
            if digest.hexdigest() == manifest.sha256:
                os.replace(leftover, age_path)
                leftovers.remove(leftover)
                log.warning("outbox: finished the commit of %s seq %d interrupted by a crash",
                            manifest.kind, manifest.seq)
                return

    def _salvage(self, path: Path) -> bool:
        """A clip cut short by a crash keeps every whole age chunk it wrote: trim it to them and
        commit it as ``clip_partial``. The owner's tools open it, flagged as cut short; every
        chunk still authenticates, and the fragmented MP4 inside plays to its last fragment."""
        match = _TMP_NAME.match(path.name)
        if match is None or match["kind"] != "clip":
            return False
        size = path.stat().st_size
        try:
            with open(path, "rb") as f:
                keep = whole_chunks_length(f, size)
        except SealError:
            return False
        if keep == 0:
            return False
        with open(path, "r+b") as f:
            f.truncate(keep)
            f.seek(0)
            digest = hashlib.file_digest(f, "sha256")
            os.fsync(f.fileno())
        log.warning("outbox: salvaged %s cut short by a crash: %d of %d bytes kept as a "
                    "partial clip", path.name, keep, size)
        self._used += keep
        self._commit(path, kind="clip_partial", priority=int(match["priority"]), parent="",
                     created=path.stat().st_mtime, size=keep, sha256=digest.hexdigest())
        return True

    def _load_chain(self) -> Chain:
        path = self.root / "chain.json"
        if not path.exists():
            return Chain(self.device)
        try:
            return Chain.from_json(path.read_text())
        except (ValueError, KeyError, TypeError) as exc:
            raise OutboxError(f"{path}: the chain state is corrupt ({exc}); refusing to "
                              "restart the sequence, which would break the owner's chain") from exc

    # -- writing ------------------------------------------------------------------------------
    def open(self, kind: str, *, priority: int, parent: str = "") -> PendingArtifact:
        """Start a new artifact. Write ciphertext to it, then ``commit()`` or ``abort()``."""
        path = self._tmp / f"{kind}-p{priority}-{uuid.uuid4().hex}.part"
        pending = PendingArtifact(self, path, kind, priority, parent)
        with self._lock:
            self._pending[path] = pending
        return pending

    def put(self, kind: str, ciphertext: bytes, *, priority: int, parent: str = "") -> Item:
        """Store a small artifact whose ciphertext is already in memory."""
        with self.open(kind, priority=priority, parent=parent) as pending:
            pending.write(ciphertext)
            return pending.commit()

    def _reserve(self, n: int, pending: PendingArtifact) -> None:
        with self._lock:
            if self._used + n > self.quota_bytes and not self._evict_for(n, pending.priority):
                raise DiskFull(f"outbox quota of {self.quota_bytes} bytes reached and nothing "
                               f"is left to evict for this {pending.kind}")
            self._used += n

    def _evict_for(self, n: int, priority: int, *, disk_full: bool = False) -> bool:
        """Evict ready items, lowest priority (highest number) and oldest first, until ``n``
        more bytes fit in the quota or, when the disk itself is full, until ``n`` bytes have been
        freed. Never evicts an item of higher priority than the one being written."""
        why = "disk full" if disk_full else f"quota of {self.quota_bytes} bytes reached"
        with self._lock:
            victims = sorted(self._items.values(),
                             key=lambda it: (-it.manifest.priority, it.seq))
            freed = 0
            for item in victims:
                if (freed >= n) if disk_full else (self._used + n <= self.quota_bytes):
                    return True
                if item.manifest.priority < priority:
                    break
                log.warning("outbox: %s; evicting %s seq %d (%d bytes, priority %d)", why,
                            item.manifest.kind, item.seq, item.size, item.manifest.priority)
                self._drop(item.seq)
                if self.on_evict is not None:
                    self.on_evict(item.seq)
                self.evictions += 1
                self.evicted_bytes += item.size
                freed += item.size
            return freed >= n if disk_full else self._used + n <= self.quota_bytes

    def _release(self, n: int) -> None:
        with self._lock:
            self._used -= n

    def _forget(self, pending: PendingArtifact) -> None:
        with self._lock:
            if self._pending.pop(pending.path, None) is not None:
                self._used -= pending.size

    def _commit(self, path: Path, *, kind: str, priority: int, parent: str, created: float,
                size: int, sha256: str) -> Item:
        synced = self._clock_synced()       # may run a subprocess: never under the lock
        with self._commit_lock:
            chain = Chain(self.device, self._chain.last_seq, self._chain.last_hash)
            manifest = chain.next(kind=kind, size=size, sha256=sha256, created=created,
                                  clock_synced=synced, priority=priority,
                                  parent=parent)
            envelope = sign_manifest(self._key, manifest)
            stem = f"{manifest.seq:010d}"
            age_path = self._ready / f"{stem}.age"
            # The manifest first, then the rename: a crash between the two leaves a signed
            # manifest whose ciphertext is still in tmp/, which start-up puts back in place.
            write_atomic(self._ready / f"{stem}.env", envelope)
            os.replace(path, age_path)
            fsync_dir(self._ready)
            # Committed: the chain moves on now, so even if chain.json cannot be written (a full
            # disk) the next commit takes the next number and never overwrites this one.
            with self._lock:
                self._chain = chain
            write_atomic(self.root / "chain.json", chain.to_json().encode())
            item = Item(manifest, envelope, age_path)
            with self._lock:
                self._pending.pop(path, None)
                self._items[manifest.seq] = item
        log.info("outbox: committed %s seq %d (%d bytes)", manifest.kind, manifest.seq,
                 manifest.size)
        if self.on_commit is not None:
            self.on_commit(item)
        return item

    # -- reading and removing -----------------------------------------------------------------
    def items(self) -> list[Item]:
        """Committed items, highest priority first, then oldest first."""
        with self._lock:
            return sorted(self._items.values(), key=lambda it: (it.manifest.priority, it.seq))

    def get(self, seq: int) -> Item | None:
        with self._lock:
            return self._items.get(seq)

    def acked_chunks(self, seq: int) -> int:
        path = self._ready / f"{seq:010d}.ack"
        try:
            return max(0, int(path.read_text() or 0))
        except (OSError, ValueError):
            return 0

    def set_acked_chunks(self, seq: int, chunks: int) -> None:
        """Record upload progress, every ACK_EVERY chunks (SD wear: a file per PUBACK would
        write more than the clip itself). Not fsynced: a stale value only means re-sending at
        most ACK_EVERY chunks after a crash."""
        with self._lock:
            if seq not in self._items or chunks - self._acks_saved.get(seq, 0) < ACK_EVERY:
                return
            self._acks_saved[seq] = chunks
            write_atomic(self._ready / f"{seq:010d}.ack", str(chunks).encode(), durable=False)

    def remove(self, seq: int) -> bool:
        """The inbox has the artifact: delete it. Returns False if it was not here."""
        with self._lock:
            if seq not in self._items:
                return False
            self._drop(seq)
        fsync_dir(self._ready)  # outside the lock: a clip's chunk writes need not wait for it
        return True

    def _drop(self, seq: int) -> None:
        item = self._items.pop(seq)
        self._acks_saved.pop(seq, None)
        stem = f"{seq:010d}"
        # The manifest goes first: an .age without .env is a torn leftover at start-up.
        for suffix in (".env", ".age", ".ack"):
            (self._ready / f"{stem}{suffix}").unlink(missing_ok=True)
        self._used -= item.size

    @property
    def depth(self) -> int:
        with self._lock:
            return len(self._items)

    @property
    def bytes_used(self) -> int:
        with self._lock:
            return self._used

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"depth": len(self._items), "bytes": self._used,
                    "evictions": self.evictions, "evicted_bytes": self.evicted_bytes,
                    "last_seq": self._chain.last_seq}


