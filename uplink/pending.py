"""Ciphertext on its way into the outbox: a file in tmp/ that an age writer streams into, with
its size and SHA-256 kept as it grows, and the quota reserved (or room made on a full disk) for
every write. ``commit`` hands it to the outbox to be signed and chained; ``abort`` throws it
away."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from doorstep.core.errors import DiskFull, OutboxError

if TYPE_CHECKING:
    from doorstep.uplink.outbox import Item, Outbox


class PendingArtifact:
    """Ciphertext being written into tmp/. ``write`` is a file-like sink for an age writer;
    the outbox's ``commit`` signs and publishes it, ``abort`` throws it away."""

    def __init__(self, outbox: Outbox, path: Path, kind: str, priority: int, parent: str) -> None:
        self._outbox = outbox
        self.path = path
        self.kind = kind
        self.priority = priority
        self.may_evict = True     # on a full disk, push out less important items to fit
        self.spare: frozenset[int] = frozenset()   # seqs never evicted for it (its own clip's)
        self.parent = parent
        self.created = time.time()
        # Unbuffered: every write reaches the kernel at once, so a killed process leaves all the
        # ciphertext it produced (each write is one sealed 64 KiB age chunk).
        # 0600 whatever the umask: ciphertext is nobody else's business either
        self._file: BinaryIO | None = open(  # noqa: SIM115
            path, "xb", buffering=0,
            opener=lambda p, flags: os.open(p, flags, 0o600))
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
                    if exc.errno != errno.ENOSPC or not self.may_evict or \
                            not self._outbox._evict_for(n - done, self.priority,
                                                        disk_full=True, kind=self.kind,
                                                        spare=self.spare):
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
            raise DiskFull(f"outbox could not commit {self.kind} ({self.size} bytes), so "
                           f"nothing was stored: {exc.strerror or exc}") from exc

    def keep_cut_short(self) -> str:
        """Writing failed part way (a full disk): keep every whole age chunk written so far,
        as a crash would (committed as ``clip_partial``, or left in tmp/ for the next start if
        even that does not fit now). Returns "salvaged", "kept" or "torn" (nothing to keep)."""
        with contextlib.suppress(OSError):      # what reached the kernel stays in the file
            self._close_file(sync=True)
        self._outbox._forget(self)
        outcome = self._outbox._salvage(self.path)
        if outcome == "torn":
            self.path.unlink(missing_ok=True)
        return outcome

    def abort(self) -> None:
        self._close_file(sync=False)
        self.path.unlink(missing_ok=True)
        self._outbox._forget(self)

    def __enter__(self) -> PendingArtifact:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self._file is not None:
            self.abort()
