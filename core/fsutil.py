"""Writing files so a crash leaves the old content or the new, never a mix: a temporary file
beside the target, fsync, rename, fsync of the directory. A leaf module: it imports nothing of
ours, and every package that writes state uses it."""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename or unlink in ``path`` durable. Some file systems (FAT) refuse to fsync a
    directory; that is logged, not fatal."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
        log.debug("fsync of directory %s: %s", path, exc)
    finally:
        os.close(fd)


@contextmanager
def atomic_file(path: str | os.PathLike[str], mode: int = 0o600, *,
                durable: bool = True) -> Iterator[BinaryIO]:
    """Write ``path`` all or nothing. The file gets exactly ``mode`` (the umask cannot widen or
    narrow it). On an exception the temporary file is removed and ``path`` is left as it was.
    ``durable=False`` skips the fsyncs, for hints that may be lost in a power cut."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w+b") as f:
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def write_atomic(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o600,
                 durable: bool = True) -> None:
    """Replace ``path`` with ``data``, all or nothing."""
    with atomic_file(path, mode, durable=durable) as f:
        f.write(data)
