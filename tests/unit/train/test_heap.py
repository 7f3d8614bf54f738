import resource

import pytest
import torch

from hone.train.heap import M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, glibc, retained_heap

pytestmark = pytest.mark.skipif(glibc() is None, reason="mallopt is glibc's")

BLOCKS, BLOCK_BYTES = 24, 8 << 20  # a step's worth of activations: 192 MiB in blocks under 32 MiB
PAGE = resource.getpagesize()
PAGES = BLOCKS * BLOCK_BYTES // PAGE


def glibc_initial_thresholds() -> None:
    """glibc's thresholds as a process starts (128 KiB each), before its own adjustment raises them."""
    glibc().mallopt(M_MMAP_THRESHOLD, 128 << 10)
    glibc().mallopt(M_TRIM_THRESHOLD, 128 << 10)


def blocks() -> list[torch.Tensor]:
    return [torch.ones(BLOCK_BYTES, dtype=torch.uint8) for _ in range(BLOCKS)]


def faults_to_refill() -> int:
    """Page faults taken to allocate and write BLOCKS blocks after the same blocks were freed."""
    freed = blocks()
    del freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    refilled = blocks()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    assert all(int(b[-1]) == 1 for b in refilled)
    return after - before


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


def test_freed_blocks_are_reused_without_faulting_inside_the_block() -> None:
    glibc_initial_thresholds()
    assert faults_to_refill() > PAGES // 2  # the blocks went back to the kernel and fault in again
    glibc_initial_thresholds()
    with retained_heap() as kept:
        assert kept
        assert faults_to_refill() < PAGES // 10  # reused: their pages are still mapped


def test_free_memory_goes_back_to_the_os_after_the_block() -> None:
    with retained_heap():
        freed = blocks()
        del freed
        retained = resident_bytes()
    assert retained - resident_bytes() > BLOCKS * BLOCK_BYTES // 2
