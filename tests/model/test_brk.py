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


def test_bare_mm_has_no_program_break() -> None:
    """A bare MM() ran no exec, so it has no program break (start_brk 0): brk fails the way the kernel's
    brk fails, returning the current break, and maps nothing (before: it made page 0 a writable heap)."""
    mm = MM()
    assert mm.start_brk == 0 and mm.sys_brk(0) == 0
    for want in (P, 3 * P + 5, BASE, C.TASK_SIZE - P):
        assert mm.sys_brk(want) == 0
    assert mm.map_count == 0 and mm.total_vm == 0 and mm.committed == 0
    assert mm.find_vma(0) is None
    mm.validate()
    mm.start_brk = mm.brk = BASE  # what an exec would set: the end of the program's bss
    assert mm.sys_brk(BASE + P) == BASE + P and mm.map_count == 1
    mm.validate()
