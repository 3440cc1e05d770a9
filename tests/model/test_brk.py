"""brk through the Python API (the live behaviour is recorded by the brk_* scenarios)."""

from __future__ import annotations

from vmalab import constants as C
from vmalab.mm import MM

BASE = 0x500000000000
P = C.PAGE_SIZE
RW = C.PROT_READ | C.PROT_WRITE
ANON = C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_FIXED


def test_brk_basics() -> None:
    mm = MM()
    mm.start_brk = mm.brk = BASE
    assert mm.sys_brk(0) == BASE
    assert mm.sys_brk(BASE + 3 * P + 5) == BASE + 3 * P + 5
    assert mm.map_count == 1 and mm.vmas()[0].vm_end == BASE + 4 * P
    mm.mmap(BASE + 6 * P, P, RW, ANON)
    assert mm.sys_brk(BASE + 6 * P) == BASE + 3 * P + 5  # one page must stay free below the next VMA
    assert mm.sys_brk(BASE + 5 * P) == BASE + 5 * P
    assert mm.sys_brk(BASE + P) == BASE + P
    assert mm.total_vm == 2 and mm.data_vm == 2
    mm.validate()
