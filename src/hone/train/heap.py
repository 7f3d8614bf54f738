"""Freed tensor memory kept in the process's heap while training on CPU.

PyTorch has no caching allocator on CPU: every activation and gradient is a fresh malloc, and glibc hands
large freed blocks back to the kernel (munmap, or trimming the top of the heap), so the next step's
tensors of the same sizes fault their pages in again and the kernel zeroes each one. A LoRA step of
SmolLM2-135M at 8 x 215 tokens took ~45,000 page faults and 0.17 CPU-seconds of system time that way.
Intel's guidance for PyTorch on CPU is to preload jemalloc or tcmalloc; glibc's own `mallopt` does the
same for this pattern without a preload: an mmap threshold of 32 MiB (glibc's ceiling: larger blocks are
still mapped) and a trim threshold above any step's working set keep freed blocks for reuse (measured:
faults 45,000 -> 1,100 and system time 0.17 -> 0.01 s per step; per step 1.64 -> 1.50 s, the same peak
RSS). After training the trim threshold goes back to the 64 MiB glibc's own adjustment reaches at that
mmap threshold, and `malloc_trim` returns what is free to the OS.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import platform
from collections.abc import Iterator
from typing import Any

M_TRIM_THRESHOLD = -1  # glibc's <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit)
TRIM_WHILE_TRAINING = (1 << 31) - 1  # mallopt takes an int
TRIM_AFTER = 2 * MMAP_THRESHOLD


@functools.cache
def glibc() -> Any | None:
    """glibc's C library where this process runs on it (musl and macOS have no mallopt to tune)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


@contextlib.contextmanager
def retained_heap() -> Iterator[bool]:
    """Inside the block freed memory stays in the heap for reuse; yields whether glibc took the setting."""
    libc = glibc()
    if libc is None:
        yield False
        return
    kept = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_WHILE_TRAINING)
    )
    try:
        yield kept
    finally:
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_AFTER)
        libc.malloc_trim(0)
