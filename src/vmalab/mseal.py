"""mseal(2).

Models mm/mseal.c of Linux 6.18: argument checks, the single "is the whole range mapped" pass
(range_contains_unmapped(), so a hole -> ENOMEM before anything changes) and mseal_apply(), which sets
VM_SEALED through :meth:`MM.vma_modify` (splitting and merging like mprotect).  The refusals of sealed
VMAs live where the kernel has them: munmap and MAP_FIXED in ``MM._gather`` (vms_gather_munmap_vmas),
mprotect in ``MM.mprotect_fixup``, brk through munmap, mremap and madvise in their modules.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from .constants import PAGE_MASK, PAGE_SIZE, ULONG_MASK, VM_SEALED

if TYPE_CHECKING:
    from .mm import MM
    from .vma import VMA


class MsealMixin:
    """The mseal part of :class:`vmalab.mm.MM` (see the module docstring)."""

    def sys_mseal(self: MM, start: int, length: int, flags: int) -> int:
        """Models mm/mseal.c: SYSCALL_DEFINE3(mseal) -> do_mseal()."""
        start &= ULONG_MASK
        length &= ULONG_MASK
        if flags & ULONG_MASK:
            return -errno.EINVAL
        if start & (PAGE_SIZE - 1):
            return -errno.EINVAL
        aligned = (length + PAGE_SIZE - 1) & PAGE_MASK & ULONG_MASK
        if length and not aligned:
            return -errno.EINVAL  # a small negative len rounded up to 0
        end = start + aligned
        if end > ULONG_MASK:
            return -errno.EINVAL
        if end == start:
            return 0
        if self.range_contains_unmapped(start, end):
            return -errno.ENOMEM
        return self.mseal_apply(start, end)

    def range_contains_unmapped(self: MM, start: int, end: int) -> bool:
        """Models mm/mseal.c: range_contains_unmapped()."""
        prev_end = start
        for v in self.tree.range(start, end):
            if v.vm_start > prev_end:
                return True
            prev_end = v.vm_end
        return prev_end < end

    def mseal_apply(self: MM, start: int, end: int) -> int:
        """Models mm/mseal.c: mseal_apply(): seal each VMA piece of the (fully mapped) range."""
        vma = self.tree.lookup(start)
        assert vma is not None
        prev: VMA | None = vma if start > vma.vm_start else self.tree.prev(vma)
        curr_start = start
        cur: VMA | None = vma
        while cur is not None and cur.vm_start < end:
            curr_end = min(cur.vm_end, end)
            if not cur.vm_flags & VM_SEALED:
                r = self.vma_modify(cur, prev, curr_start, curr_end, cur.vm_flags | VM_SEALED, op="mseal")
                if isinstance(r, int):
                    return r
                r.vm_flags |= VM_SEALED
                # After a modification the VMA iterator is left on the resulting (possibly merged) VMA,
                # which the loop then meets once more (measured: mseal_merge_revisits_merged_vma).
                prev = r
                curr_start = curr_end
                cur = r
                continue
            prev = cur
            curr_start = curr_end
            cur = self.tree.next(cur)
        return 0
