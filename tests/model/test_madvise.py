"""Unit tests of madvise / process_madvise / mincore / msync on the model (behaviour measured in the
madvise_*, mincore_* and msync_* scenarios; these pin the Python-only API and extreme arguments)."""

from __future__ import annotations

import errno

import pytest

from vmalab import constants as C
from vmalab.faults import Fault
from vmalab.mm import MM

BASE = 0x500000000000
P = C.PAGE_SIZE
A = C.MADV_NAMES
RW = C.PROT_READ | C.PROT_WRITE
ANON = C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_FIXED


def test_process_madvise_counts_bytes_until_the_first_failure() -> None:
    mm = MM()
    mm.mmap(BASE, 8 * P, RW, ANON)
    mm.touch(BASE, True)
    iov = [(BASE, 2 * P), (BASE + 4 * P, P), (BASE + 64 * P, P), (BASE + 6 * P, P)]
    assert mm.process_madvise(iov, A["MADV_DONTNEED"]) == 3 * P
    assert mm.pt.get(BASE >> C.PAGE_SHIFT) is None
    assert mm.process_madvise([(BASE + 64 * P, P)], A["MADV_DONTNEED"]) == -errno.ENOMEM
    assert mm.process_madvise(iov, A["MADV_DONTNEED"], flags=1) == -errno.EINVAL
    assert mm.process_madvise([(BASE, P)], A["MADV_DONTNEED"], remote=True) == -errno.EINVAL
    assert mm.process_madvise([(BASE, P)], A["MADV_COLD"], remote=True, cap_sys_nice=False) == -errno.EPERM
    assert mm.process_madvise([(BASE, P)], A["MADV_COLD"], remote=True) == P
    assert mm.process_madvise([(BASE, P)] * 1025, A["MADV_COLD"]) == -errno.EINVAL
    mm.validate()


@pytest.mark.parametrize("length", [0, 1, P, (1 << 64) - 1, (1 << 64) - P, 1 << 63])
@pytest.mark.parametrize("addr", [0, BASE, BASE + 1, (1 << 64) - P, C.TASK_SIZE])
def test_extreme_arguments_return_errno(addr: int, length: int) -> None:
    mm = MM()
    mm.mmap(BASE, 4 * P, RW, ANON)
    for advice in [*A.values(), -1, 1 << 40]:
        assert mm.sys_madvise(addr, length, advice) <= 0
    rc, vec = mm.sys_mincore(addr, length)
    assert rc <= 0 and (vec is None) == (rc < 0)
    for flags in (0, 1, 2, 4, 6, -1, 1 << 40):
        assert mm.sys_msync(addr, length, flags) <= 0
    mm.validate()


def test_guard_markers_are_not_resident_and_fault() -> None:
    mm = MM()
    mm.mmap(BASE, 3 * P, RW, ANON)
    for i in range(3):
        mm.touch(BASE + i * P, True)
    assert mm.sys_madvise(BASE + P, P, A["MADV_GUARD_INSTALL"]) == 0
    assert mm.map_count == 1
    assert mm.sys_mincore(BASE, 3 * P) == (0, "101")
    with pytest.raises(Fault):
        mm.touch(BASE + P)
    assert mm.sys_madvise(BASE, 3 * P, A["MADV_DONTNEED"]) == 0
    with pytest.raises(Fault):
        mm.touch(BASE + P, True)
    assert mm.sys_madvise(BASE, 3 * P, A["MADV_GUARD_REMOVE"]) == 0
    assert mm.touch(BASE + P) == 0
    v = mm.vma_at(BASE)
    assert v is not None and v.vm_flags & C.VM_MAYBE_GUARD
    mm.validate()
