"""mlock(2), mlock2(2), munlock(2), mlockall(2), munlockall(2).

Models mm/mlock.c of Linux 6.18: the argument rounding of do_mlock(), the RLIMIT_MEMLOCK check (skipped with
CAP_IPC_LOCK), the range walk of apply_vma_lock_flags() (a hole ends it with ENOMEM after the VMAs before
it were already changed), mlock_fixup() (VM_SPECIAL, secretmem and droppable VMAs are silently skipped;
the others are split or merged through :func:`vmalab.vma.vma_modify`; ``locked_vm`` follows), the
population of a newly locked range (mm/gup.c: __mm_populate(), :func:`vmalab.gup.populate_range`, with
errors reported, not ignored), and mlockall()'s ``mm->def_flags`` for future mappings.
"""

from __future__ import annotations

import errno

from . import constants as C
from .constants import (
    MLOCK_NAMES,
    PAGE_MASK,
    PAGE_SHIFT,
    PAGE_SIZE,
    ULONG_MASK,
    VM_LOCKED,
    VM_LOCKED_MASK,
    VM_LOCKONFAULT,
    page_align,
)
from .files import vma_is_secretmem
from .gup import populate_range
from .mm_types import VMA, MmStruct
from .mmu_notifier import vma_changed
from .vma import vma_modify
from .vma_tree import VmaIterator

MLOCK_ONFAULT = MLOCK_NAMES["MLOCK_ONFAULT"]
MCL_CURRENT = MLOCK_NAMES["MCL_CURRENT"]
MCL_FUTURE = MLOCK_NAMES["MCL_FUTURE"]
MCL_ONFAULT = MLOCK_NAMES["MCL_ONFAULT"]


# -- syscalls -------------------------------------------------------------------------------------------
def sys_mlock(mm: MmStruct, start: int, length: int) -> int:
    """Models mm/mlock.c: SYSCALL_DEFINE2(mlock)."""
    return do_mlock(mm, start, length, VM_LOCKED)


def sys_mlock2(mm: MmStruct, start: int, length: int, flags: int) -> int:
    """Models mm/mlock.c: SYSCALL_DEFINE3(mlock2): MLOCK_ONFAULT adds VM_LOCKONFAULT."""
    flags &= 0xFFFFFFFF
    if flags & ~MLOCK_ONFAULT:
        return -errno.EINVAL
    vm_flags = VM_LOCKED | (VM_LOCKONFAULT if flags & MLOCK_ONFAULT else 0)
    return do_mlock(mm, start, length, vm_flags)


def sys_munlock(mm: MmStruct, start: int, length: int) -> int:
    """Models mm/mlock.c: SYSCALL_DEFINE2(munlock): no capability or rlimit check, no population."""
    start &= ULONG_MASK
    length = page_align((length & ULONG_MASK) + (start & (PAGE_SIZE - 1)))
    start &= PAGE_MASK
    with mm.locks.mmap_write():
        return apply_vma_lock_flags(mm, start, length, 0)


def sys_mlockall(mm: MmStruct, flags: int) -> int:
    """Models mm/mlock.c: SYSCALL_DEFINE1(mlockall)."""
    flags &= 0xFFFFFFFF
    if flags >= 1 << 31:
        flags -= 1 << 32  # the argument is an int
    if not flags or flags & ~(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) or flags == MCL_ONFAULT:
        return -errno.EINVAL
    if not mm.can_do_mlock():
        return -errno.EPERM
    lock_limit = mm.rlimit("RLIMIT_MEMLOCK") >> PAGE_SHIFT
    with mm.locks.mmap_write():
        if flags & MCL_CURRENT and mm.total_vm > lock_limit and not mm.cap_ipc_lock:
            return -errno.ENOMEM
        apply_mlockall_flags(mm, flags)
    if flags & MCL_CURRENT:
        with mm.locks.mmap_read():  # mm_populate() after mmap_write_unlock()
            populate_range(mm, 0, C.TASK_SIZE, ignore_errors=True)
    return 0


def sys_munlockall(mm: MmStruct) -> int:
    """Models mm/mlock.c: SYSCALL_DEFINE0(munlockall)."""
    with mm.locks.mmap_write():
        apply_mlockall_flags(mm, 0)
    return 0


# -- internals ------------------------------------------------------------------------------------------
def do_mlock(mm: MmStruct, start: int, length: int, flags: int) -> int:
    """Models mm/mlock.c: do_mlock(): round, check the capability and RLIMIT_MEMLOCK, lock, populate."""
    start &= ULONG_MASK
    if not mm.can_do_mlock():
        return -errno.EPERM
    length = page_align((length & ULONG_MASK) + (start & (PAGE_SIZE - 1)))
    start &= PAGE_MASK
    lock_limit = mm.rlimit("RLIMIT_MEMLOCK") >> PAGE_SHIFT
    locked = (length >> PAGE_SHIFT) + mm.locked_vm
    # pages of the range that are locked already are not charged twice
    with mm.locks.mmap_write():  # do_mlock(): the limit check and apply_vma_lock_flags() under the write lock
        if locked > lock_limit and not mm.cap_ipc_lock:
            locked -= count_mm_mlocked_page_nr(mm, start, length)
        if locked > lock_limit and not mm.cap_ipc_lock:
            return -errno.ENOMEM
        e = apply_vma_lock_flags(mm, start, length, flags)
    if e:
        return e
    with mm.locks.mmap_read():  # __mm_populate() after mmap_write_unlock()
        e = populate_range(mm, start, length, ignore_errors=False)
    if e == -errno.EFAULT:
        return -errno.ENOMEM  # __mlock_posix_error_return()
    if e == -errno.ENOMEM:
        return -errno.EAGAIN
    return e


def count_mm_mlocked_page_nr(mm: MmStruct, start: int, length: int) -> int:
    """Models mm/mlock.c: count_mm_mlocked_page_nr(): locked pages of VMAs inside [start, start+len)."""
    end = (start + length) & ULONG_MASK
    if end < start:
        end = ULONG_MASK
    count = 0
    vmi = VmaIterator(mm.tree, start)
    for v in vmi.range(end):
        if v.vm_flags & VM_LOCKED:
            lo, hi = max(v.vm_start, start), min(v.vm_end, end)
            count += (hi - lo) >> PAGE_SHIFT
    return count


def apply_vma_lock_flags(mm: MmStruct, start: int, length: int, flags: int) -> int:
    """Models mm/mlock.c: apply_vma_lock_flags(): walk [start, start+len) VMA by VMA; a hole -> ENOMEM
    (the VMAs before it stay changed)."""
    end = start + length
    if end > ULONG_MASK:
        return -errno.EINVAL
    if end == start:
        return 0
    vma = mm.tree.lookup(start)
    if vma is None:
        return -errno.ENOMEM
    prev = vma if start > vma.vm_start else mm.tree.prev(vma)
    nstart = start
    tmp = vma.vm_start
    vmi = VmaIterator(mm.tree, start)
    for cur in vmi.range(end):
        if cur.vm_start != tmp:
            return -errno.ENOMEM
        newflags = (cur.vm_flags & ~VM_LOCKED_MASK) | flags
        tmp = min(cur.vm_end, end)
        r = mlock_fixup(mm, cur, prev, nstart, tmp, newflags)
        if isinstance(r, int):
            return r
        vmi.on(r)
        prev = r
        tmp = r.vm_end  # vma_iter_end(): the end of the VMA the iterator is on
        nstart = tmp
    if tmp < end:
        return -errno.ENOMEM
    return 0


def mlock_fixup(mm: MmStruct, vma: VMA, prev: VMA | None, start: int, end: int, newflags: int) -> VMA | int:
    """Models mm/mlock.c: mlock_fixup(): returns the VMA now covering [start, end) (``vma`` itself when
    nothing is done) or -errno."""
    oldflags = vma.vm_flags
    if (newflags == oldflags or oldflags & C.VM_SPECIAL or oldflags & C.VM_HUGETLB
            or oldflags & C.VM_DROPPABLE or vma_is_secretmem(vma)):
        return vma  # don't set VM_LOCKED or VM_LOCKONFAULT and don't count
    r = vma_modify(mm, vma, prev, start, end, newflags, op="mlock")
    if isinstance(r, int):
        return r
    nr_pages = (end - start) >> PAGE_SHIFT
    if not newflags & VM_LOCKED:
        nr_pages = -nr_pages
    elif oldflags & VM_LOCKED:
        nr_pages = 0
    mm.locked_vm += nr_pages
    # vma_modify() keeps the sticky flags of merged VMAs; the lock bits are exactly newflags'.
    r.vm_flags = (r.vm_flags & ~VM_LOCKED_MASK) | (newflags & VM_LOCKED_MASK)
    if mm.notifiers:
        vma_changed(mm, r.vm_start, r.vm_end)
    return r


def apply_mlockall_flags(mm: MmStruct, flags: int) -> None:
    """Models mm/mlock.c: apply_mlockall_flags(): set ``def_flags`` for MCL_FUTURE and (re)lock or
    unlock every VMA; errors of single VMAs are ignored."""
    mm.def_flags &= ~VM_LOCKED_MASK
    if flags & MCL_FUTURE:
        mm.def_flags |= VM_LOCKED
        if flags & MCL_ONFAULT:
            mm.def_flags |= VM_LOCKONFAULT
        if not flags & MCL_CURRENT:
            return
    to_add = 0
    if flags & MCL_CURRENT:
        to_add = VM_LOCKED | (VM_LOCKONFAULT if flags & MCL_ONFAULT else 0)
    prev: VMA | None = None
    vmi = VmaIterator(mm.tree, 0)
    for cur in vmi.range(ULONG_MASK):  # for_each_vma(): vma_find(vmi, ULONG_MAX)
        newflags = (cur.vm_flags & ~VM_LOCKED_MASK) | to_add
        r = mlock_fixup(mm, cur, prev, cur.vm_start, cur.vm_end, newflags)
        if isinstance(r, int):
            r = cur
        vmi.on(r)
        prev = r
