"""mlock, mlock2 and mlockall through the Python API: what scenarios cannot show.

The scenario runner is root with CAP_IPC_LOCK, so RLIMIT_MEMLOCK never applies there.  The expectations
without the capability are the live kernel's, measured once by dropping CAP_IPC_LOCK; the model's
``cap_ipc_lock`` flag stands for the capability.
"""

from __future__ import annotations

import errno

from vmalab import constants as C
from vmalab.mm import MM

BASE = 0x500000000000
P = C.PAGE_SIZE
RW = C.PROT_READ | C.PROT_WRITE
ANON = C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_FIXED


def _nocap(limit: int) -> MM:
    mm = MM()
    mm.cap_ipc_lock = False
    mm.rlimits[C.RLIMIT_NAMES["RLIMIT_MEMLOCK"]] = (limit, limit)
    return mm


def test_memlock_limit_without_cap_ipc_lock() -> None:
    mm = _nocap(2 * P)
    mm.mmap(BASE, 16 * P, RW, ANON)
    assert mm.sys_mlock(BASE, 2 * P) == 0  # up to the limit
    assert mm.sys_mlock(BASE + 2 * P, P) == -errno.ENOMEM  # one page more
    assert mm.sys_mlock(BASE, 2 * P) == 0  # re-locking locked pages is not charged twice
    assert mm.sys_mlock2(BASE + 4 * P, P, 1) == -errno.ENOMEM
    assert mm.sys_mmap(BASE + 32 * P, P, RW, ANON | C.MAP_LOCKED, -1, 0) == -errno.EAGAIN
    assert mm.sys_mlockall(1) == -errno.ENOMEM  # MCL_CURRENT: total_vm > limit
    assert mm.sys_mlockall(2) == 0  # MCL_FUTURE alone is not checked
    assert mm.sys_mmap(BASE + 32 * P, P, RW, ANON, -1, 0) == -errno.EAGAIN  # now every mapping is locked
    mm.validate()
    assert mm.locked_vm == 2


def test_memlock_limit_zero_is_eperm() -> None:
    mm = _nocap(0)
    mm.mmap(BASE, 4 * P, RW, ANON)
    assert mm.sys_mlock(BASE, P) == -errno.EPERM
    assert mm.sys_mlock2(BASE, P, 1) == -errno.EPERM
    assert mm.sys_mlockall(3) == -errno.EPERM
    assert mm.sys_mmap(BASE + 8 * P, P, RW, ANON | C.MAP_LOCKED, -1, 0) == -errno.EPERM
    assert mm.sys_munlock(BASE, P) == 0  # munlock needs nothing
    assert mm.sys_munlockall() == 0
    mm.validate()


def test_mlockall_future_brk_over_limit() -> None:
    mm = _nocap(2 * P)
    mm.start_brk = mm.brk = BASE + 64 * P
    assert mm.sys_mlockall(2) == 0
    assert mm.sys_brk(BASE + 66 * P) == BASE + 66 * P  # 2 pages: fits
    assert mm.locked_vm == 2
    assert mm.sys_brk(BASE + 67 * P) == BASE + 66 * P  # check_brk_limits: mlock_future_ok fails
    mm.validate()


def test_mlock_accounting_and_onfault() -> None:
    mm = MM()
    mm.mmap(BASE, 8 * P, RW, ANON)
    assert mm.sys_mlock2(BASE + P, 4 * P, 1) == 0
    v = mm.vma_at(BASE + P)
    assert v is not None and v.vm_flags & C.VM_LOCKONFAULT and mm.rss_pages(v) == 0
    assert mm.locked_vm == 4
    assert mm.sys_mlock(BASE, 8 * P) == 0  # lf cleared, everything populated
    assert mm.map_count == 1 and mm.locked_vm == 8 and mm.rss_pages(mm.vmas()[0]) == 8
    assert mm.sys_munlockall() == 0 and mm.locked_vm == 0
    mm.validate()
