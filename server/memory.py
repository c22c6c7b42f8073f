"""Give freed memory back to the operating system, so a burst of big requests does not leave a
process holding its peak for good.

glibc keeps freed heap memory for reuse; after a burst of large messages and decoded images a
process could hold a gigabyte it no longer uses. Two remedies, both no-ops off glibc:
`use_mmap_for_large_blocks` at start-up makes every allocation from `MMAP_THRESHOLD` up its own
mapping, unmapped the moment it is freed (glibc otherwise raises that threshold as it goes, up to
32 MB, after which large blocks stay in the heap); `trim` hands back the free pages left in the
heaps (called after big work, never on the hot path of small requests).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

MMAP_THRESHOLD = 1 << 20  # 1 MiB: a request's image or pixels above this get a mapping of their own
_M_MMAP_THRESHOLD = -3  # mallopt parameter numbers from glibc's malloc.h
_M_TRIM_THRESHOLD = -1


def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim  # noqa: B018 - only glibc has it
        libc.mallopt  # noqa: B018
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _libc()


def use_mmap_for_large_blocks(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold (and the trim threshold beside it); True if it took effect."""
    if _LIBC is None:
        return False
    return bool(_LIBC.mallopt(_M_MMAP_THRESHOLD, threshold)) and bool(_LIBC.mallopt(_M_TRIM_THRESHOLD, threshold))


def trim() -> None:
    """Return the heaps' free pages to the system (glibc's malloc_trim)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
