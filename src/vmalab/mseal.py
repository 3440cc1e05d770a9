"""mseal(2).

Models mm/mseal.c of Linux 6.18: argument checks, the single "is the whole range mapped" pass
(range_contains_unmapped(), so a hole -> ENOMEM before anything changes) and mseal_apply(), which sets
VM_SEALED through :func:`vmalab.vma.vma_modify` (splitting and merging like mprotect).  The refusals of
sealed VMAs live where the kernel has them: munmap and MAP_FIXED in :mod:`vmalab.vma`'s munmap gather
(vms_gather_munmap_vmas), mprotect in mprotect_fixup(), brk through munmap, mremap and madvise in their
modules.
"""

from __future__ import annotations

import errno

from .constants import PAGE_SIZE, ULONG_MASK, VM_SEALED, page_align
from .mm_types import VMA, MmStruct
from .mmu_notifier import vma_changed
from .vma import vma_modify
from .vma_tree import VmaIterator


def sys_mseal(mm: MmStruct, start: int, length: int, flags: int) -> int:
    """Models mm/mseal.c: SYSCALL_DEFINE3(mseal) -> do_mseal()."""
    start &= ULONG_MASK
    length &= ULONG_MASK
    if flags & ULONG_MASK:
        return -errno.EINVAL
    if start & (PAGE_SIZE - 1):
        return -errno.EINVAL
    aligned = page_align(length)
    if length and not aligned:
        return -errno.EINVAL  # a small negative len rounded up to 0
    end = start + aligned
    if end > ULONG_MASK:
        return -errno.EINVAL
    if end == start:
        return 0
    with mm.locks.mmap_write():  # do_mseal(): mmap_write_lock_killable() after the argument checks
        if range_contains_unmapped(mm, start, end):
            return -errno.ENOMEM
        return mseal_apply(mm, start, end)


def range_contains_unmapped(mm: MmStruct, start: int, end: int) -> bool:
    """Models mm/mseal.c: range_contains_unmapped()."""
    prev_end = start
    vmi = VmaIterator(mm.tree, start)
    for v in vmi.range(end):
        if v.vm_start > prev_end:
            return True
        prev_end = v.vm_end
    return prev_end < end


def mseal_apply(mm: MmStruct, start: int, end: int) -> int:
    """Models mm/mseal.c: mseal_apply(): seal each VMA piece of the (fully mapped) range."""
    vma = mm.tree.lookup(start)
    assert vma is not None
    prev: VMA | None = vma if start > vma.vm_start else mm.tree.prev(vma)
    curr_start = start
    vmi = VmaIterator(mm.tree, start)
    for cur in vmi.range(end):
        curr_end = min(cur.vm_end, end)
        if not cur.vm_flags & VM_SEALED:
            r = vma_modify(mm, cur, prev, curr_start, curr_end, cur.vm_flags | VM_SEALED, op="mseal")
            if isinstance(r, int):
                return r
            r.vm_flags |= VM_SEALED
            if mm.notifiers:
                vma_changed(mm, r.vm_start, r.vm_end)
            # After a modification the VMA iterator is left on the resulting (possibly merged) VMA,
            # which the loop then meets once more (measured: mseal_merge_revisits_merged_vma).
            prev = r
            curr_start = curr_end
            vmi.set(r.vm_start)
            continue
        prev = cur
        curr_start = curr_end
    return 0
