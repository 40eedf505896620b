"""Process-wide memory settings, made before any codec allocates (docs/design.md, decisions 18
and 21)."""

from __future__ import annotations

import ctypes
import logging
import os
import sys

log = logging.getLogger(__name__)

PR_SET_THP_DISABLE = 41  # linux/prctl.h


def no_huge_pages() -> bool:
    """Opt this process (and its children) out of transparent huge pages. x264 asks for huge
    pages for every buffer over 1.75 MB; each is then resident in whole 2 MB pages, touched or
    not (6 MB more at 1080p, measured; more on kernels with bigger pages). Speed is unchanged.
    Returns False where the kernel has no such switch."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        done = libc.prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False
    if not done:
        log.debug("prctl(PR_SET_THP_DISABLE): %s", os.strerror(ctypes.get_errno()))
    return bool(done)


M_MMAP_THRESHOLD = -3  # glibc malloc.h
MMAP_THRESHOLD = 1 << 20


def steady_malloc(threshold: int = MMAP_THRESHOLD) -> bool:
    """Give every allocation of ``threshold`` bytes or more its own mapping, returned to the
    system when it is freed. By default glibc raises that threshold to the largest block freed
    so far, so after one 6 MB buffer of a 1080p snapshot, the next ones come from the heap and
    stay resident after they are freed: 8 snapshots in a row left 31.6 MB more resident; with
    the threshold fixed, 2 MB (`doorstep bench --rows 4`). 1 MiB keeps the per-frame buffers
    (up to 518 KB, the first halving of a 1080p luma plane) on the heap. Returns False where
    the C library has no mallopt (musl)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, threshold) == 1)


def set_up() -> None:
    """What `doorstep run` does first, and the bench's in-process agent too: both settings
    above, before any codec allocates."""
    no_huge_pages()
    steady_malloc()
