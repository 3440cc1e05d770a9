"""Address-space layout: ``mmap_base`` and ``get_unmapped_area``.

Models arch/x86/mm/mmap.c (mmap_base, arch_pick_mmap_layout), arch/x86/kernel/sys_x86_64.c
(arch_get_unmapped_area[_topdown]), mm/vma.c (unmapped_area[_topdown]), mm/mmap.c (__get_unmapped_area,
round_hint_to_min), mm/huge_memory.c (__thp_get_unmapped_area) and fs/hugetlbfs/inode.c
(hugetlb_get_unmapped_area).
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from .constants import (
    MAP_32BIT,
    MAP_ABOVE4G,
    MAP_FIXED,
    MAP_SHARED,
    PAGE_MASK,
    PAGE_SHIFT,
    PAGE_SIZE,
    PMD_SIZE,
    STACK_GUARD_GAP,
    TASK_SIZE,
    ULONG_MASK,
    VM_GROWSDOWN,
    VM_SHADOW_STACK,
    page_align,
)

if TYPE_CHECKING:
    from .files import File
    from .mm_types import MmStruct

MIN_GAP = 128 << 20
STACK_RND_MASK = 0x3FFFFF  # x86-64: 22 bits of stack randomisation (pages)
TASK_UNMAPPED_BASE = page_align(TASK_SIZE // 3)
SZ_4G = 1 << 32
MAX_ERRNO = 4095  # include/linux/err.h: IS_ERR_VALUE(x) is x >= (unsigned long)-MAX_ERRNO


def mmap_base(rlimit_stack: int, rnd: int = 0, randomize: bool = False, task_size: int = TASK_SIZE) -> int:
    """Models arch/x86/mm/mmap.c: mmap_base() — the top of the top-down mmap area.

    ``rlimit_stack`` is RLIMIT_STACK's soft value (``RLIM_INFINITY`` for unlimited), ``rnd`` the page-aligned
    random offset (0 with ADDR_NO_RANDOMIZE)."""
    pad = STACK_GUARD_GAP + ((STACK_RND_MASK << PAGE_SHIFT) if randomize else 0)
    gap = rlimit_stack & ULONG_MASK
    if ((gap + pad) & ULONG_MASK) > gap:
        gap += pad
    gap_max = task_size // 6 * 5
    gap = max(MIN_GAP, min(gap, gap_max))
    return page_align(task_size - gap - rnd)


def round_hint_to_min(hint: int, mmap_min_addr: int) -> int:
    """Models mm/mmap.c: round_hint_to_min()."""
    hint &= PAGE_MASK
    if hint and hint < mmap_min_addr:
        return page_align(mmap_min_addr)
    return hint


def _stack_guard_placement(vm_flags: int) -> int:
    return PAGE_SIZE if vm_flags & VM_SHADOW_STACK else 0


def unmapped_area_topdown(mm: MmStruct, length: int, low_limit: int, high_limit: int, align_mask: int = 0,
                          align_offset: int = 0, start_gap: int = 0) -> int:
    """Models mm/vma.c: unmapped_area_topdown(): the highest fitting gap below ``high_limit``; returns
    the address or ``-ENOMEM``.

    O(log n): the tree's gap summaries (:meth:`VmaTree.gap_down`) skip runs of VMAs without a fitting
    gap, as the maple tree's gap maxima do.  It must return what the VMA-by-VMA walk it replaced returns:
    that walk is the reference of tests/model/test_layout_gap_search.py."""
    want = length
    length = length + align_mask + start_gap
    need = max(length, 1)
    low_limit = max(low_limit, mm.mmap_min_addr)
    tree = mm.tree
    while True:
        if high_limit <= low_limit or high_limit - low_limit < length:
            return -errno.ENOMEM
        nxt = tree.find(high_limit - 1)
        hole_hi = nxt.vm_start if nxt is not None and nxt.vm_start < high_limit else high_limit
        gap_end = -1
        below = tree.last_below(hole_hi)  # the highest VMA starting below hole_hi
        if below is None:
            if hole_hi > low_limit and hole_hi - low_limit >= length:
                gap_end = hole_hi
        else:
            lo = max(below.vm_end, low_limit)
            if hole_hi > lo and hole_hi - lo >= length:
                gap_end = hole_hi
            elif below.vm_start > low_limit:
                got = tree.gap_down(below.vm_start, need, low_limit)
                if got is not None:
                    hi, lo = got[0], max(got[1], low_limit)
                    if hi > lo and hi - lo >= length:
                        gap_end = hi
        if gap_end < 0:
            return -errno.ENOMEM
        gap = gap_end - want
        gap -= (gap - align_offset) & align_mask
        after = tree.find(gap_end)
        if after is not None and after.vm_flags & (VM_GROWSDOWN | VM_SHADOW_STACK):
            if after.start_gap() < gap_end:
                high_limit = after.start_gap()
                continue
        return gap


def unmapped_area(mm: MmStruct, length: int, low_limit: int, high_limit: int, align_mask: int = 0,
                  align_offset: int = 0, start_gap: int = 0) -> int:
    """Models mm/vma.c: unmapped_area(): the lowest fitting gap above ``low_limit``.  O(log n) with
    :meth:`VmaTree.gap_up`; the linear walk is the reference in the tests."""
    length = length + align_mask + start_gap
    need = max(length, 1)
    low_limit = max(low_limit, mm.mmap_min_addr)
    tree = mm.tree
    while True:
        if high_limit <= low_limit or high_limit - low_limit < length:
            return -errno.ENOMEM
        found = -1
        first = tree.find(low_limit)
        if first is None or first.vm_start >= high_limit:
            prev_end = low_limit
        elif first.vm_start > low_limit and first.vm_start - low_limit >= length:
            found = prev_end = low_limit
        else:
            got = tree.gap_up(first.vm_start, need, high_limit)
            if got is not None:
                found = prev_end = got[1]
            else:
                last = tree.last_below(high_limit)  # the highest VMA starting below high_limit
                assert last is not None
                prev_end = max(low_limit, last.vm_end)
        if found < 0 and min(high_limit, TASK_SIZE) - prev_end >= length:
            found = prev_end
        if found < 0:
            return -errno.ENOMEM
        gap = found + start_gap
        gap += (align_offset - gap) & align_mask
        after = tree.find(gap)
        if after is not None and after.vm_flags & (VM_GROWSDOWN | VM_SHADOW_STACK):
            if after.start_gap() < gap + length - 1:
                low_limit = after.vm_end
                continue
        return gap


def _hint_ok(mm: MmStruct, addr: int, length: int) -> bool:
    """mmap_address_hint_valid() and the free-range check of the x86 hint path."""
    if TASK_SIZE - length < addr:
        return False
    v = mm.tree.find(addr)
    return v is None or addr + length <= v.start_gap()


def arch_get_unmapped_area(mm: MmStruct, addr: int, length: int, flags: int, vm_flags: int,
                           huge_size: int = 0) -> int:
    """Models arch/x86/kernel/sys_x86_64.c: arch_get_unmapped_area() (bottom-up).  ``huge_size`` is the
    huge page size of a hugetlbfs file (get_align_mask(): the gap is aligned to it, no stack guard)."""
    if flags & MAP_FIXED:
        return addr
    if flags & MAP_32BIT:
        begin, end = 0x40000000, 0x80000000
    else:
        begin, end = mm.mmap_legacy_base, TASK_SIZE
    if length > end:
        return -errno.ENOMEM
    if addr:
        addr = page_align(addr)
        if end - length >= addr and _hint_ok(mm, addr, length):
            return addr
    low = SZ_4G if flags & MAP_ABOVE4G and begin < SZ_4G else begin
    if huge_size:
        return unmapped_area(mm, length, low, end, align_mask=huge_size - PAGE_SIZE)
    return unmapped_area(mm, length, low, end, start_gap=_stack_guard_placement(vm_flags))


def arch_get_unmapped_area_topdown(mm: MmStruct, addr: int, length: int, flags: int, vm_flags: int,
                                   huge_size: int = 0) -> int:
    """Models arch/x86/kernel/sys_x86_64.c: arch_get_unmapped_area_topdown() (``huge_size``: as
    :func:`arch_get_unmapped_area`)."""
    if length > TASK_SIZE:
        return -errno.ENOMEM
    if flags & MAP_FIXED:
        return addr
    if not (flags & MAP_32BIT):
        if addr:
            addr &= PAGE_MASK
            if _hint_ok(mm, addr, length):
                return addr
        low = SZ_4G if flags & MAP_ABOVE4G else PAGE_SIZE
        if huge_size:
            got = unmapped_area_topdown(mm, length, low, mm.mmap_base, align_mask=huge_size - PAGE_SIZE)
        else:
            got = unmapped_area_topdown(mm, length, low, mm.mmap_base,
                                        start_gap=_stack_guard_placement(vm_flags))
        if got >= 0:
            return got
    return arch_get_unmapped_area(mm, addr, length, flags, vm_flags, huge_size)


def mm_get_unmapped_area(mm: MmStruct, addr: int, length: int, flags: int, vm_flags: int,
                         huge_size: int = 0) -> int:
    """Models mm/mmap.c: mm_get_unmapped_area_vmflags()."""
    if mm.topdown:
        return arch_get_unmapped_area_topdown(mm, addr, length, flags, vm_flags, huge_size)
    return arch_get_unmapped_area(mm, addr, length, flags, vm_flags, huge_size)


def hugetlb_get_unmapped_area(mm: MmStruct, addr: int, length: int, flags: int, huge_size: int) -> int:
    """Models fs/hugetlbfs/inode.c: hugetlb_get_unmapped_area(): the length and a MAP_FIXED address
    must be multiples of the huge page size (EINVAL); a hint is rounded up to one."""
    mask = huge_size - 1
    if length & mask:
        return -errno.EINVAL
    if flags & MAP_FIXED and addr & mask:
        return -errno.EINVAL
    addr0 = ((addr + mask) & ~mask & ULONG_MASK) if addr else 0
    return mm_get_unmapped_area(mm, addr0, length, flags, 0, huge_size)


def thp_get_unmapped_area(mm: MmStruct, addr: int, length: int, off: int, flags: int, vm_flags: int) -> int:
    """Models mm/huge_memory.c: __thp_get_unmapped_area() (0 means "not aligned, use the default")."""
    size = PMD_SIZE
    off_end = off + length
    off_align = (off + size - 1) // size * size
    if off_end <= off_align or off_end - off_align < size:
        return 0
    len_pad = length + size
    if len_pad < length:
        return 0
    ret = mm_get_unmapped_area(mm, addr, len_pad, flags, vm_flags)
    if ret < 0:
        return 0
    if ret == addr:
        return addr
    off_sub = (off - ret) & (size - 1)
    if mm.topdown and not off_sub:
        return ret + size
    return ret + off_sub


def get_unmapped_area(mm: MmStruct, file: File | None, addr: int, length: int, pgoff: int, flags: int,
                      vm_flags: int) -> int:
    """Models mm/mmap.c: __get_unmapped_area(): returns the address or -errno (a fixed address in the
    IS_ERR_VALUE() range comes back as the -errno it reads as)."""
    if length > TASK_SIZE:
        return -errno.ENOMEM
    style: str | None = None
    if file is not None:
        style = file.f_op.get_unmapped_area
        if style == "zero":
            style = "shmem" if flags & MAP_SHARED else "thp"
    elif flags & MAP_SHARED:
        pgoff = 0
        style = "shmem"
    if file is None:
        pgoff = 0
    if style == "hugetlb":
        assert file is not None
        got = hugetlb_get_unmapped_area(mm, addr, length, flags, file.f_op.huge_page_size)
    elif style == "thp":
        got = thp_get_unmapped_area(mm, addr, length, pgoff << PAGE_SHIFT, flags, vm_flags)
        if not got:
            got = mm_get_unmapped_area(mm, addr, length, flags, vm_flags)
    elif style is not None:
        # shmem_get_unmapped_area() with shmem THP "never": the default placement.
        got = mm_get_unmapped_area(mm, addr, length, flags, vm_flags)
    elif file is None and not addr and length % PMD_SIZE == 0:
        got = thp_get_unmapped_area(mm, addr, length, 0, flags, vm_flags)
        if not got:
            got = mm_get_unmapped_area(mm, addr, length, flags, vm_flags)
    else:
        got = mm_get_unmapped_area(mm, addr, length, flags, vm_flags)
    if got < 0:
        return got
    if got > ULONG_MASK - MAX_ERRNO:
        # IS_ERR_VALUE(): the arch code returns a MAP_FIXED address unchecked, so an address in the last
        # 4095 bytes of the address space *is* an error value: -1 is EPERM, -22 EINVAL, ...
        # (tests/scenarios/mmap_fixed_iserr_address.json)
        return got - (ULONG_MASK + 1)
    if got > TASK_SIZE - length:
        return -errno.ENOMEM
    if got & (PAGE_SIZE - 1):
        return -errno.EINVAL
    # security_mmap_addr() -> cap_mmap_addr(): below dac_mmap_min_addr needs CAP_SYS_RAWIO.
    if got < mm.dac_mmap_min_addr and not mm.cap_sys_rawio:
        return -errno.EPERM
    return got
