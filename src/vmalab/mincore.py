"""mincore(2).

Models mm/mincore.c of Linux 6.18: the argument checks of the syscall (alignment, ``access_ok()`` on the
range) and ``do_mincore()``'s walk, one VMA at a time, stopping with ENOMEM at the first address no VMA
covers.  What each VMA reports comes from :meth:`vmalab.mm.MM.mincore_vma`: PTE presence for anonymous
memory (the zero page counts), page-cache residency for file VMAs whose PTE is empty or a guard marker,
and "all resident" for VMAs without a file that are not anonymous (``[vvar]``).
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from .constants import PAGE_SHIFT, PAGE_SIZE, TASK_SIZE, ULONG_MASK

if TYPE_CHECKING:
    from .mm import MM


class MincoreMixin:
    """The mincore part of :class:`vmalab.mm.MM` (see the module docstring)."""

    def sys_mincore(self: MM, addr: int, length: int) -> tuple[int, str | None]:
        """mincore(2): models mm/mincore.c: SYSCALL mincore + do_mincore().  Returns ``(0, vec)`` with one
        ``'0'``/``'1'`` per page of ``[addr, addr + length)`` (length rounded up), or ``(-errno, None)``."""
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
            vma = self.tree.lookup(start)
            if vma is None:
                return -errno.ENOMEM, None
            end = min(vma.vm_end, start + (pages << PAGE_SHIFT))
            out.append(self.mincore_vma(vma, start, end))
            pages -= (end - start) >> PAGE_SHIFT
            start = end
        return 0, "".join(out)
