"""mincore(2).

Models mm/mincore.c of Linux 6.18: the argument checks of the syscall (alignment, ``access_ok()`` on the
range) and ``do_mincore()``'s walk, one VMA at a time, stopping with ENOMEM at the first address no VMA
covers.  What each VMA reports comes from :func:`mincore_vma`: PTE presence for anonymous memory (the
zero page counts), page-cache residency for file VMAs whose PTE is empty or a guard marker, and "all
resident" for VMAs without a file that are not anonymous (``[vvar]``).
"""

from __future__ import annotations

import errno

from .constants import PAGE_SHIFT, PAGE_SIZE, TASK_SIZE, ULONG_MASK
from .mm_types import VMA, MmStruct
from .pagetable import GUARD


def sys_mincore(mm: MmStruct, addr: int, length: int) -> tuple[int, str | None]:
    """mincore(2): models mm/mincore.c: SYSCALL mincore + do_mincore().  Returns ``(0, vec)`` with one
    ``'0'``/``'1'`` per page of ``[addr, addr + length)`` (length rounded up), or ``(-errno, None)``.
    Each step looks the VMA up by address (vma_lookup()), as do_mincore() does."""
    start = addr & ULONG_MASK
    length &= ULONG_MASK
    if start & (PAGE_SIZE - 1):
        return -errno.EINVAL, None
    # access_ok(start, len): the whole range must lie below the user address limit
    if start + length > TASK_SIZE:
        return -errno.ENOMEM, None
    pages = (length >> PAGE_SHIFT) + (1 if length & (PAGE_SIZE - 1) else 0)
    out: list[str] = []
    while pages:
        with mm.locks.mmap_read():  # SYSCALL mincore: mmap_read_lock() around each do_mincore()
            vma = mm.tree.lookup(start)
            if vma is None:
                return -errno.ENOMEM, None
            end = min(vma.vm_end, start + (pages << PAGE_SHIFT))
            out.append(mincore_vma(mm, vma, start, end))
        pages -= (end - start) >> PAGE_SHIFT
        start = end
    return 0, "".join(out)


def mincore_vma(mm: MmStruct, vma: VMA, start: int, end: int) -> str:
    """Models mm/mincore.c: can_do_mincore() + mincore_pte_range() for one VMA: a present PTE is 1;
    an empty PTE or a guard marker looks up the page cache (uptodate pages only) when the VMA has a file (also private
    /dev/zero, whose cache is empty), else 0; a VMA without file that is not anonymous ([vvar])
    reports every page resident."""
    if vma.vm_file is None and not vma.is_anonymous():
        return "1" * ((end - start) >> PAGE_SHIFT)
    out = []
    for a in range(start, end, PAGE_SIZE):
        p = mm.pt.get(a >> PAGE_SHIFT)
        if p is not None and p.kind != GUARD:
            out.append("1")
        elif vma.vm_file is not None:
            out.append("1" if vma.vm_file.inode.incore(vma.pgoff_at(a)) else "0")  # mincore_page()
        else:
            out.append("0")
    return "".join(out)
