"""Process-wide memory settings, made before any codec allocates (docs/design.md, decision 18)."""

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
