"""The durable outbox: sealed artifacts (ciphertext only) on disk, signed and chained at commit,
kept until the inbox's receipt arrives, evicted by priority when the quota is reached.

Layout under the outbox root:
    tmp/                 artifacts being written; anything here at start-up is a torn leftover
    ready/NNNNNNNNNN.age ciphertext of artifact seq N
    ready/NNNNNNNNNN.env its signed manifest envelope (the commit point)
    ready/NNNNNNNNNN.ack chunks the broker has acknowledged (a hint for resuming; may lag)
    chain.json           last committed seq and manifest hash

Every commit is atomic: tmp file, fsync, rename, fsync of the directory (DESIGN.md decision 5),
and all or nothing as a whole: a commit that fails part-way (a full disk) is taken back, so the
running outbox and the next start see the same thing, and no seq is ever used twice.
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

from doorstep.core.errors import DiskFull, SealError
from doorstep.core.fsutil import fsync_dir, write_atomic
from doorstep.protocol.age import whole_chunks_length
from doorstep.protocol.keys import SigningKey
from doorstep.protocol.manifest import Chain, Manifest, manifest_hash, open_envelope, sign_manifest
from doorstep.uplink.pending import PendingArtifact

log = logging.getLogger(__name__)

ACK_EVERY = 16     # chunks between upload-progress records
_TMP_NAME = re.compile(r"^(?P<kind>[a-z_]+)-p(?P<priority>\d)-[0-9a-f]{32}\.part$")


_KIND_RANK = {"event": 0, "thumbnail": 1, "snapshot": 1}   # anything else (clips): 2


def _importance(priority: int, kind: str) -> tuple[int, int]:
    """Lower is more important: by priority, then events before pictures before clips."""
    return priority, _KIND_RANK.get(kind, 2)


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
        # A second copy of the chain position, beside the outbox (so even a deleted outbox
        # folder cannot make the numbering start again from 1)
        self._mirror = self.root.parent / f".{self.root.name}-chain.json"
        self._ran_before = (self._ready.is_dir() or (self.root / "chain.json").exists()
                            or self._mirror.exists())
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._ready.mkdir(parents=True, exist_ok=True)
        self._items: dict[int, Item] = {}
        self._acks_saved: dict[int, int] = {}
        self._pending: dict[Path, PendingArtifact] = {}
        self._used = 0
        self._chain_saved = 0    # the last seq chain.json names on disk
        self._chain_lost = False
        self.evictions = 0
        self.evicted_bytes = 0
        self.recovery = self._recover()

    # -- start-up -----------------------------------------------------------------------------
    def _recover(self) -> Recovery:
        torn = 0
        chain = self._load_chain()
        self._chain_saved = chain.last_seq
        leftovers = sorted(self._tmp.iterdir())
        bare: list[tuple[int, Path]] = []    # signed manifests whose ciphertext is gone
        for env_path in sorted(self._ready.glob("*.env")):
            age_path = env_path.with_suffix(".age")
            try:
                envelope = env_path.read_bytes()
                manifest = open_envelope(envelope, self._public)
            except (OSError, SealError) as exc:
                log.warning("outbox: removing torn artifact %s (unreadable manifest: %s)",
                            env_path.stem, exc)
                for p in (env_path, age_path, env_path.with_suffix(".ack")):
                    p.unlink(missing_ok=True)
                torn += 1
                continue
            # A signed manifest takes its seq for good, ciphertext or not: it may have been
            # sent (issue 18: a seq used twice forks the owner's chain).
            if manifest.seq > chain.last_seq:
                chain = Chain.after(manifest, manifest_hash(envelope))
            try:
                if not age_path.exists():
                    self._reclaim(manifest, age_path, leftovers)
                ok = age_path.exists() and age_path.stat().st_size == manifest.size
            except OSError:
                ok = False
            if not ok:
                age_path.unlink(missing_ok=True)
                env_path.with_suffix(".ack").unlink(missing_ok=True)
                bare.append((manifest.seq, env_path))
                continue
            self._items[manifest.seq] = Item(manifest, envelope, age_path)
            self._used += manifest.size
        for age_path in self._ready.glob("*.age"):
            if not age_path.with_suffix(".env").exists():
                log.warning("outbox: removing %s, which has no manifest (torn commit)",
                            age_path.name)
                age_path.unlink()
                age_path.with_suffix(".ack").unlink(missing_ok=True)
                torn += 1
        if chain.last_seq == 0 and self._chain_lost:
            chain = self._restart_chain()
        elif chain.last_seq == 0 and not self._ran_before:
            self._save_initial_chain(chain)
        self._chain = chain
        self._save_chain_at_start()
        for seq, env_path in bare:
            if seq <= self._chain_saved:      # chain.json now keeps the number taken
                log.warning("outbox: removing seq %d, a manifest without its ciphertext", seq)
                env_path.unlink()
                torn += 1
        salvaged = 0
        for leftover in leftovers:
            outcome = self._salvage(leftover)
            if outcome == "salvaged":
                salvaged += 1
            elif outcome == "torn":
                log.warning("outbox: removing torn leftover %s (%d bytes) from an interrupted "
                            "write", leftover.name, leftover.stat().st_size)
                leftover.unlink()
                torn += 1
        fsync_dir(self._ready)
        if self._items or torn:
            log.info("outbox: resuming %d artifact(s) (%d salvaged), removed %d torn "
                     "leftover(s)", len(self._items), salvaged, torn)
        return Recovery(resumed=len(self._items), torn_removed=torn, salvaged=salvaged)

    def _save_chain_at_start(self) -> None:
        """chain.json must name the last seq taken before any manifest can leave ready/ (a
        receipt, an eviction): otherwise an empty outbox at the next start would number from
        an older seq again. On a disk too full even for that, the manifests stay where they are
        and keep the number until a commit writes chain.json."""
        if self._chain.last_seq <= self._chain_saved:
            return
        try:
            self._save_chain(self._chain)
        except OSError as exc:
            log.warning("outbox: cannot record the chain position (seq %d) yet: %s",
                        self._chain.last_seq, exc.strerror or exc)
            return
        self._chain_saved = self._chain.last_seq

    def _save_initial_chain(self, chain: Chain) -> None:
        """A new outbox records its (empty) position at once: from then on, a missing
        chain.json means a lost one, never a new outbox."""
        try:
            self._save_chain(chain)
        except OSError as exc:
            log.warning("outbox: cannot record the new chain yet: %s", exc.strerror or exc)

    def _save_chain(self, chain: Chain) -> None:
        write_atomic(self.root / "chain.json", chain.to_json().encode())
        self._mirror_chain(chain)

    def _mirror_chain(self, chain: Chain) -> None:
        """The mirror beside the outbox: a second copy of the position, so one lost file
        cannot restart the numbering. Best effort: chain.json is what a commit depends on."""
        try:
            write_atomic(self._mirror, chain.to_json().encode(), durable=False)
        except OSError as exc:
            log.debug("outbox: chain mirror not written: %s", exc)

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

    def _salvage(self, path: Path) -> str:
        """A clip cut short by a crash keeps every whole age chunk it wrote: trim it to them and
        commit it as ``clip_partial``. The owner's tools open it, flagged as cut short; every
        chunk still authenticates, and the fragmented MP4 inside plays to its last fragment.
        Returns "salvaged", "torn" (nothing to keep) or "kept" (the disk is too full to commit
        it now: it waits in tmp/ for the next start)."""
        match = _TMP_NAME.match(path.name)
        if match is None or match["kind"] != "clip":
            return "torn"
        size = path.stat().st_size
        try:
            with open(path, "rb") as f:
                keep = whole_chunks_length(f, size)
        except SealError:
            return "torn"
        if keep == 0:
            return "torn"
        with open(path, "r+b") as f:
            f.truncate(keep)
            f.seek(0)
            digest = hashlib.file_digest(f, "sha256")
            os.fsync(f.fileno())
        try:
            self._commit(path, kind="clip_partial", priority=int(match["priority"]), parent="",
                         created=path.stat().st_mtime, size=keep, sha256=digest.hexdigest())
        except OSError as exc:
            log.error("outbox: cannot commit %s cut short by a crash now (%s); it stays in tmp/ "
                      "for the next start", path.name, exc.strerror or exc)
            return "kept"
        log.warning("outbox: salvaged %s cut short by a crash: %d of %d bytes kept as a "
                    "partial clip", path.name, keep, size)
        with self._lock:
            self._used += keep
        return "salvaged"

    def _load_chain(self) -> Chain:
        """The chain position from chain.json or its mirror (ready/.chain), whichever is
        further on. If both are gone from an outbox that ran before, numbering from 1 again
        would fork the owner's chain and have every later artifact refused: the chain restarts
        far above anything used (at the clock's seconds), with a marked break the owner's
        `inbox verify` shows, and nothing is refused."""
        found: list[Chain] = []
        for path in (self.root / "chain.json", self._mirror):
            try:
                found.append(Chain.from_json(path.read_text()))
            except FileNotFoundError:
                continue
            except (OSError, SealError) as exc:
                log.error("outbox: %s is unreadable (%s)", path, exc)
                self._chain_lost = True
        if found:
            return max(found, key=lambda c: c.last_seq)
        self._chain_lost = self._chain_lost or self._ran_before
        return Chain(self.device)

    def _restart_chain(self) -> Chain:
        floor = int(time.time())
        log.error("outbox: the chain position is lost (chain.json and its mirror are gone or "
                  "unreadable, and no manifest is left); numbering restarts at seq %d, and "
                  "the owner's chain shows a break there", floor + 1)
        return Chain.restart(self.device, floor)

    # -- writing ------------------------------------------------------------------------------
    def open(self, kind: str, *, priority: int, parent: str = "") -> PendingArtifact:
        """Start a new artifact. Write ciphertext to it, then ``commit()`` or ``abort()``."""
        kind, priority = str(kind), int(priority)   # plain values on disk and in manifests
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
            if self._used + n > self.quota_bytes and not self._evict_for(
                    n, pending.priority, kind=pending.kind, spare=pending.spare):
                raise DiskFull(f"outbox quota of {self.quota_bytes} bytes reached and nothing "
                               f"is left to evict for this {pending.kind}")
            self._used += n

    def _evict_for(self, n: int, priority: int, *, disk_full: bool = False,
                   kind: str = "clip", spare: frozenset[int] = frozenset()) -> bool:
        """Evict ready items, least important and oldest first, until ``n`` more bytes fit in
        the quota or, when the disk itself is full, until ``n`` bytes have been freed. Never
        evicts an item more important than the one being written: a lower priority number, or
        the same priority and a smaller kind (an event before a snapshot before a clip), so a
        ring's clip can push out an older ring clip but never the ring's own event. Items in
        ``spare`` are never evicted (a clip's own earlier segments: its start, with the
        pre-roll and the trigger, is worth more than its end)."""
        why = "disk full" if disk_full else f"quota of {self.quota_bytes} bytes reached"
        writing = _importance(priority, kind)
        with self._lock:
            victims = sorted(self._items.values(), key=lambda it: (
                tuple(-x for x in _importance(it.manifest.priority, it.manifest.kind)),
                it.seq))
            freed = 0
            for item in victims:
                if (freed >= n) if disk_full else (self._used + n <= self.quota_bytes):
                    return True
                if _importance(item.manifest.priority, item.manifest.kind) < writing:
                    break
                if item.seq in spare:
                    continue
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
        """Sign the next manifest for the ciphertext at ``path`` and publish both in ready/.
        All or nothing, as this process and the next start see it: if any step fails (a full
        disk) the steps before it are taken back, and the seq is not used."""
        synced = self._clock_synced()       # may run a subprocess: never under the lock
        with self._commit_lock:
            chain = Chain(self.device, self._chain.last_seq, self._chain.last_hash)
            manifest = chain.next(kind=kind, size=size, sha256=sha256, created=created,
                                  clock_synced=synced, priority=priority,
                                  parent=parent)
            envelope = sign_manifest(self._key, manifest)
            stem = f"{manifest.seq:010d}"
            env_path, age_path = self._ready / f"{stem}.env", self._ready / f"{stem}.age"
            try:
                # The manifest first, then the rename: a crash between the two leaves a signed
                # manifest whose ciphertext is still in tmp/, which start-up puts back in place.
                self._write_small(env_path, envelope, priority, kind)
                os.replace(path, age_path)
                fsync_dir(self._ready)
                # chain.json last: a crash before it is a commit the next start completes
                # (it takes the seq from the manifest); a failure is taken back here.
                self._write_small(self.root / "chain.json", chain.to_json().encode(), priority,
                                  kind)
                self._mirror_chain(chain)
            except OSError:
                self._take_back(env_path, age_path, path)
                raise
            item = Item(manifest, envelope, age_path)
            with self._lock:
                self._chain = chain
                self._chain_saved = chain.last_seq
                self._pending.pop(path, None)
                self._items[manifest.seq] = item
        log.info("outbox: committed %s seq %d (%d bytes)", manifest.kind, manifest.seq,
                 manifest.size)
        if self.on_commit is not None:
            self.on_commit(item)
        return item

    def _write_small(self, path: Path, data: bytes, priority: int, kind: str) -> None:
        """A manifest or chain.json, written atomically. On a full disk, items of the same or
        lower priority are evicted one at a time, until it fits or none is left (a small file
        needs a block, which any evicted file gives back)."""
        while True:
            try:
                write_atomic(path, data)
                return
            except OSError as exc:
                if exc.errno != errno.ENOSPC or not self._evict_for(1, priority, disk_full=True,
                                                                    kind=kind):
                    raise

    def _take_back(self, env_path: Path, age_path: Path, tmp_path: Path) -> None:
        """Undo a commit that failed part-way: the manifest goes, the ciphertext returns to
        tmp/ (its owner removes it). Unlinks and renames need no free space."""
        try:
            env_path.unlink(missing_ok=True)
            if age_path.exists():
                os.replace(age_path, tmp_path)
            fsync_dir(self._ready)
        except OSError as exc:   # the next commit takes the same seq and replaces both files
            log.error("outbox: could not take back the failed commit of %s: %s", env_path.stem,
                      exc)

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
        # The manifest goes first: an .age without .env is a torn leftover at start-up. While
        # chain.json lags behind this seq (a disk too full at start-up to write it), the
        # manifest stays: it is the record that the seq is taken.
        keep_manifest = seq > self._chain_saved
        for suffix in (".env", ".age", ".ack"):
            if not (keep_manifest and suffix == ".env"):
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


