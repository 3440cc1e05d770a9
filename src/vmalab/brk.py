"""brk(2).

Models mm/mmap.c: SYSCALL_DEFINE1(brk) and mm/vma.c: do_brk_flags() of Linux 6.18.  The break is
``mm.brk`` (stored unaligned, as the caller gave it) above ``mm.start_brk``; the heap VMAs are the
anonymous VMAs between them, named ``[heap]`` by procfs.  Failure is not an errno: the old break is
returned.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from . import constants as C
from .constants import PAGE_SHIFT, TASK_SIZE, ULONG_MASK, VM_LOCKED, page_align

if TYPE_CHECKING:
    from .mm import MM
    from .vma import VMA

# VM_DATA_DEFAULT_FLAGS on x86-64 (VM_DATA_FLAGS_TSK_EXEC without READ_IMPLIES_EXEC)
VM_DATA_DEFAULT_FLAGS = C.VM_READ | C.VM_WRITE | C.VM_MAYREAD | C.VM_MAYWRITE | C.VM_MAYEXEC


class BrkMixin:
    """The brk part of :class:`vmalab.mm.MM` (see the module docstring)."""

    start_brk: int  # mm->start_brk, mm->brk: set by MM.__init__ and by procfs.import_maps from [heap]
    brk: int
    # ELF data segment bounds for check_data_rlimit(); a model built from maps does not know them.
    start_data: int = 0
    end_data: int = 0

    def sys_brk(self: MM, brk: int) -> int:
        """Models mm/mmap.c: SYSCALL_DEFINE1(brk): returns the new break, or the old one on failure."""
        brk &= ULONG_MASK
        origbrk = self.brk
        if brk < self.start_brk:
            return origbrk
        if self.check_data_rlimit(brk):
            return origbrk
        newbrk = page_align(brk)
        oldbrk = page_align(self.brk)
        if oldbrk == newbrk:
            self.brk = brk
            return brk
        if brk <= self.brk:
            # Always allow shrinking brk: unmap [newbrk, oldbrk) if a VMA lies there.
            brkvma = self.tree.find_intersection(newbrk, oldbrk)
            if brkvma is None:
                return origbrk
            self.brk = brk
            if self.do_munmap(newbrk, oldbrk):
                self.brk = origbrk
                return origbrk
            return brk
        if self.check_brk_limits(oldbrk, newbrk - oldbrk):
            return origbrk
        nxt = self.tree.find(oldbrk)
        if nxt is not None and nxt.vm_start < newbrk + C.PAGE_SIZE + C.STACK_GUARD_GAP:
            if newbrk + C.PAGE_SIZE > nxt.start_gap():
                return origbrk
        brkvma = self.tree.prev(oldbrk)
        if brkvma is not None and brkvma.vm_end <= self.start_brk:
            brkvma = None  # vma_prev_limit(): only VMAs of the heap area count
        if self.do_brk_flags(brkvma, oldbrk, newbrk - oldbrk, 0):
            return origbrk
        self.brk = brk
        if self.def_flags & VM_LOCKED:
            self.populate_range(oldbrk, newbrk - oldbrk, ignore_errors=True)
        return brk

    def check_data_rlimit(self: MM, new: int) -> bool:
        """Models include/linux/mm.h: check_data_rlimit() for brk: the heap plus the ELF data segment
        against RLIMIT_DATA (true means refused)."""
        rlim = self.rlimit("RLIMIT_DATA")
        if rlim >= C.RLIM_INFINITY:
            return False
        return (new - self.start_brk) + (self.end_data - self.start_data) > rlim

    def check_brk_limits(self: MM, addr: int, length: int) -> int:
        """Models mm/mmap.c: check_brk_limits(): get_unmapped_area(MAP_FIXED)'s range check and
        mlock_future_ok() for mm->def_flags."""
        if length > TASK_SIZE or addr > TASK_SIZE - length:
            return -errno.ENOMEM
        if not self.mlock_future_ok(self.def_flags, length):
            return -errno.EAGAIN
        return 0

    def do_brk_flags(self: MM, vma: VMA | None, addr: int, length: int, flags: int) -> int:
        """Models mm/vma.c: do_brk_flags(): extend the heap VMA ending at ``addr`` (just_expand merge) or
        create a new anonymous VMA; account it.  Returns 0 or -errno."""
        flags |= VM_DATA_DEFAULT_FLAGS | C.VM_ACCOUNT | self.def_flags
        pages = length >> PAGE_SHIFT
        if not self.may_expand_vm(flags, pages):
            return -errno.ENOMEM
        if self.map_count > self.max_map_count:
            return -errno.ENOMEM
        if not self.vm_enough_memory(pages):
            return -errno.ENOMEM
        merged: VMA | None = None
        if vma is not None and vma.vm_end == addr:
            merged = self.merge_new_range(addr, addr + length, flags, None, addr >> PAGE_SHIFT, vma, None,
                                          op="brk")
        if merged is None:
            from .vma import VMA as _VMA
            new = _VMA(addr, addr + length, flags, addr >> PAGE_SHIFT)
            self.tree.insert(new)
            self._trace("brk", "new vma", start=addr, end=addr + length)
        self.vm_stat_account(flags, pages)
        if flags & VM_LOCKED:
            self.locked_vm += pages
        return 0
