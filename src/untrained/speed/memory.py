"""The allocator setting a fit's process gets (``performance.reuse_freed_memory``)."""

from __future__ import annotations

import ctypes
import sys


def reuse_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of unmapping it; returns whether it could.

    A fit frees and allocates the same activation maps every step. By default glibc serves large blocks
    with fresh mappings and trims the freed heap top, so every step faults its maps in again. Here large
    blocks come from the heap and stay there (the measurement: docs/performance.md, ``python -m
    benchmarks.malloc``). Process-wide (a fit's process keeps its peak heap); glibc only.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    trim_threshold, mmap_max = -1, -4  # glibc's M_TRIM_THRESHOLD, M_MMAP_MAX
    return bool(mallopt(mmap_max, 0)) and bool(mallopt(trim_threshold, 1 << 30))
