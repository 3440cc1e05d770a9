"""mseal through the Python API: refusals leave the state as the kernel leaves it (the live behaviour
is recorded by the mseal_* scenarios)."""

from __future__ import annotations

import errno

from vmalab import constants as C
from vmalab.mm import MM

BASE = 0x500000000000
P = C.PAGE_SIZE
RW = C.PROT_READ | C.PROT_WRITE
ANON = C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_FIXED


def test_mseal_refusals_leave_state() -> None:
    mm = MM()
    mm.mmap(BASE, 4 * P, RW, ANON)
    assert mm.sys_mseal(BASE + P, P, 0) == 0
    assert mm.map_count == 3
    assert mm.sys_munmap(BASE, 4 * P) == -errno.EPERM
    assert mm.sys_mprotect(BASE + P, P, C.PROT_READ) == -errno.EPERM
    assert mm.sys_mseal(BASE, 8 * P, 0) == -errno.ENOMEM  # a hole: nothing sealed
    assert not mm.vmas()[0].vm_flags & C.VM_SEALED
    assert mm.sys_mseal(BASE + 3, P, 0) == -errno.EINVAL
    assert mm.sys_mseal(BASE, P, 1) == -errno.EINVAL
    assert mm.sys_mseal(BASE, 0, 0) == 0
    mm.validate()
