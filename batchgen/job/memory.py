"""Process-wide allocator and collector settings for a process that handles multi-megabyte buffers.

glibc serves large allocations with fresh mmap()s and hands them back with
munmap(), so every multi-megabyte image and body is page-faulted in, zeroed and
unmapped again. Raising the mmap threshold lets freed blocks be reused from the
heap (docs/performance.md has the figures), and two arenas keep worker threads
from each growing their own. Peak memory is bounded by the
client's slots either way. Only the CLI, which owns its process, calls this.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
from collections.abc import Iterator

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def tune_allocator() -> bool:
    """Apply the settings if this is glibc; True when they were applied."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
        mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        return all(
            mallopt(option, value) == 1
            for option, value in (
                (_M_MMAP_THRESHOLD, 64 * 1024 * 1024),
                (_M_TRIM_THRESHOLD, 256 * 1024 * 1024),
                (_M_ARENA_MAX, 2),
            )
        )
    return False


@contextlib.contextmanager
def bulk() -> Iterator[None]:
    """No cycle collection while a catalog's worth of small objects is built (journal entries,
    outcomes, report rows, gallery cards): none of them is garbage yet, and the collector's
    default (a pass every 700 allocations, re-scanning older generations as they grow) spent a
    third of a 100,000-item nightly re-run on them. Around single-threaded phases only: cycles
    made by other threads meanwhile wait for the next pass."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
