"""brk(2).

Models mm/mmap.c: SYSCALL_DEFINE1(brk) and mm/vma.c: do_brk_flags() of Linux 6.18.  The break is
``mm.brk`` (stored unaligned, as the caller gave it) above ``mm.start_brk``; the heap VMAs are the
anonymous VMAs between them, named ``[heap]`` by procfs.  Failure is not an errno: the old break is
returned.  ``mm.start_data`` / ``mm.end_data`` are the ELF data segment bounds check_data_rlimit() adds
to the heap (0 for a model built from maps, which does not know them).

The program break is set by exec (load_elf_binary(): the page-aligned end of the bss).  A bare
:class:`~vmalab.mm.MM` ran no exec and has none (``start_brk`` 0): its brk always fails, returning the
current break, instead of making page 0 a heap.  Importing a process layout (``[heap]`` sets both fields)
or setting ``mm.start_brk = mm.brk = ADDR`` gives it one.
"""

from __future__ import annotations

import errno

from . import constants as C
from .constants import PAGE_SHIFT, TASK_SIZE, ULONG_MASK, VM_LOCKED, page_align
from .gup import populate_range
from .mm_types import VMA, MmStruct
from .vma import do_vmi_munmap, merge_new_range

__all__ = ["check_brk_limits", "check_data_rlimit", "do_brk_flags", "sys_brk"]


def sys_brk(mm: MmStruct, brk: int) -> int:
    """Models mm/mmap.c: SYSCALL_DEFINE1(brk): returns the new break, or the old one on failure."""
    with mm.locks.mmap_write():  # SYSCALL_DEFINE1(brk): mmap_write_lock_killable() first
        brk &= ULONG_MASK
        origbrk = mm.brk
        if not mm.start_brk:
            return origbrk  # no exec set a program break (a bare MM): refuse, never a heap at page 0
        if brk < mm.start_brk:
            return origbrk
        if check_data_rlimit(mm, brk):
            return origbrk
        newbrk = page_align(brk)
        oldbrk = page_align(mm.brk)
        if oldbrk == newbrk:
            mm.brk = brk
            return brk
        if brk <= mm.brk:
            # Always allow shrinking brk: unmap [newbrk, oldbrk) if a VMA lies there.
            brkvma = mm.tree.find_intersection(newbrk, oldbrk)
            if brkvma is None:
                return origbrk
            mm.brk = brk
            if do_vmi_munmap(mm, newbrk, oldbrk):
                mm.brk = origbrk
                return origbrk
            return brk
        length = (newbrk - oldbrk) & ULONG_MASK  # unsigned: a break that wraps is a huge length
        if check_brk_limits(mm, oldbrk, length):
            return origbrk
        nxt = mm.tree.find(oldbrk)
        if nxt is not None and nxt.vm_start < newbrk + C.PAGE_SIZE + C.STACK_GUARD_GAP:
            if newbrk + C.PAGE_SIZE > nxt.start_gap():
                return origbrk
        brkvma = mm.tree.prev(oldbrk)
        if brkvma is not None and brkvma.vm_end <= mm.start_brk:
            brkvma = None  # vma_prev_limit(): only VMAs of the heap area count
        if do_brk_flags(mm, brkvma, oldbrk, length, 0):
            return origbrk
        mm.brk = brk
        populate = bool(mm.def_flags & VM_LOCKED)
    if populate:
        with mm.locks.mmap_read():  # mm_populate() after mmap_write_unlock()
            populate_range(mm, oldbrk, length, ignore_errors=True)
    return brk


def check_data_rlimit(mm: MmStruct, new: int) -> bool:
    """Models include/linux/mm.h: check_data_rlimit() for brk: the heap plus the ELF data segment
    against RLIMIT_DATA (true means refused)."""
    rlim = mm.rlimit("RLIMIT_DATA")
    if rlim >= C.RLIM_INFINITY:
        return False
    return (new - mm.start_brk) + (mm.end_data - mm.start_data) > rlim


def check_brk_limits(mm: MmStruct, addr: int, length: int) -> int:
    """Models mm/mmap.c: check_brk_limits(): get_unmapped_area(MAP_FIXED)'s range check and
    mlock_future_ok() for mm->def_flags."""
    if length > TASK_SIZE or addr > TASK_SIZE - length:
        return -errno.ENOMEM
    if not mm.mlock_future_ok(mm.def_flags, length):
        return -errno.EAGAIN
    return 0


def do_brk_flags(mm: MmStruct, vma: VMA | None, addr: int, length: int, flags: int) -> int:
    """Models mm/vma.c: do_brk_flags(): extend the heap VMA ending at ``addr`` (just_expand merge) or
    create a new anonymous VMA; account it.  Returns 0 or -errno."""
    flags |= C.VM_DATA_DEFAULT_FLAGS | C.VM_ACCOUNT | mm.def_flags
    pages = length >> PAGE_SHIFT
    if not mm.may_expand_vm(flags, pages):
        return -errno.ENOMEM
    if mm.map_count > mm.max_map_count:
        return -errno.ENOMEM
    if not mm.vm_enough_memory(pages):
        return -errno.ENOMEM
    merged: VMA | None = None
    if vma is not None and vma.vm_end == addr:
        merged = merge_new_range(mm, addr, addr + length, flags, None, addr >> PAGE_SHIFT, vma, None, op="brk")
    if merged is None:
        new = VMA(addr, addr + length, flags, addr >> PAGE_SHIFT)
        mm.tree.insert(new)
        mm.probe.trace("brk", "new vma", start=addr, end=addr + length)
    mm.vm_stat_account(flags, pages)
    if flags & VM_LOCKED:
        mm.locked_vm += pages
    return 0
