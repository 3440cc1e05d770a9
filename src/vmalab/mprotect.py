"""mprotect(2): mm/mprotect.c.

Models do_mprotect_pkey() (argument checks, PROT_GROWSDOWN, the walk that changes VMA after VMA and stops
at the first hole or refusal, leaving what came before it changed) and mprotect_fixup() (sealed VMAs,
the commit charge of a VMA becoming writable, vma_modify_flags(), vm_stat_account(), and the population a
locked VMA gets when it becomes writable).
"""

from __future__ import annotations

import errno

from . import constants as C
from .constants import PAGE_SHIFT, PAGE_SIZE, ULONG_MASK, VM_ACCOUNT, VM_GROWSDOWN, VM_LOCKED, VM_SHARED, VM_WRITE
from .gup import mm_populate
from .mm_types import VMA, MmStruct
from .mmu_notifier import invalidate_range
from .vma import vma_modify
from .vma_tree import VmaIterator


def sys_mprotect(mm: MmStruct, start: int, length: int, prot: int) -> int:
    """Models mm/mprotect.c: SYSCALL_DEFINE3(mprotect) -> do_mprotect_pkey()."""
    locks = mm.locks
    outer = locks.mmap_lock_acquire(True)
    try:
        return do_mprotect_pkey(mm, start, length, prot)
    finally:
        locks.mmap_lock_release(outer, True)


def do_mprotect_pkey(mm: MmStruct, start: int, length: int, prot: int) -> int:
    """Models mm/mprotect.c: do_mprotect_pkey() with its for_each_vma_range() walk: a hole ends it with
    ENOMEM, a refused VMA with its errno; the VMAs before either stay changed."""
    start &= ULONG_MASK
    length &= ULONG_MASK
    prot &= ULONG_MASK  # an unsigned long: bits above 31 fail arch_validate_prot()
    grows = prot & (C.PROT_GROWSDOWN | C.PROT_GROWSUP)
    if grows == (C.PROT_GROWSDOWN | C.PROT_GROWSUP):
        return -errno.EINVAL
    prot &= ~grows
    if start & (PAGE_SIZE - 1):
        return -errno.EINVAL
    if not length:
        return 0
    length = C.page_align(length)
    end = (start + length) & ULONG_MASK
    if end <= start:
        return -errno.ENOMEM
    if prot & ~(C.PROT_READ | C.PROT_WRITE | C.PROT_EXEC | C.PROT_SEM):
        return -errno.EINVAL
    vma = mm.tree.find_intersection(start, end)
    if vma is None:
        return -errno.ENOMEM
    if grows & C.PROT_GROWSDOWN:
        start = vma.vm_start
        if not vma.vm_flags & VM_GROWSDOWN:
            return -errno.EINVAL
    else:
        if vma.vm_start > start:
            return -errno.ENOMEM
        if grows & C.PROT_GROWSUP:
            return -errno.EINVAL  # no VM_GROWSUP on x86
    prev = vma if start > vma.vm_start else mm.tree.prev(vma)
    tmp = vma.vm_start
    nstart = start
    vmi = VmaIterator(mm.tree, vma.vm_start)
    for cur in vmi.range(end):
        if cur.vm_start != tmp:
            return -errno.ENOMEM
        newflags = C.calc_vm_prot_bits(prot) | (cur.vm_flags & ~C.VM_ACCESS_FLAGS)
        if (newflags & ~(newflags >> 4)) & C.VM_ACCESS_FLAGS:
            return -errno.EACCES
        r = mprotect_fixup(mm, cur, prev, nstart, min(cur.vm_end, end), newflags)
        if isinstance(r, int):
            return r
        prev = vmi.on(r)
        tmp = nstart = r.vm_end  # vma_iter_end()
    if tmp < end:
        return -errno.ENOMEM
    return 0


def mprotect_fixup(mm: MmStruct, vma: VMA, prev: VMA | None, start: int, end: int, newflags: int) -> VMA | int:
    """Models mm/mprotect.c: mprotect_fixup(): returns the VMA covering [start, end) or -errno."""
    if vma.vm_flags & C.VM_SEALED:
        return -errno.EPERM
    oldflags = vma.vm_flags
    if newflags == oldflags:
        return vma
    nrpages = (end - start) >> PAGE_SHIFT
    charged = 0
    if newflags & VM_WRITE:
        if not mm.may_expand_vm(newflags, nrpages) and mm.may_expand_vm(oldflags, nrpages):
            return -errno.ENOMEM
        if not oldflags & (VM_ACCOUNT | VM_WRITE | C.VM_HUGETLB | VM_SHARED | C.VM_NORESERVE):
            charged = nrpages
            if not mm.vm_enough_memory(charged):
                return -errno.ENOMEM
            newflags |= VM_ACCOUNT
    elif oldflags & VM_ACCOUNT and vma.is_anonymous() and vma.anon_vma is None:
        newflags &= ~VM_ACCOUNT
    r = vma_modify(mm, vma, prev, start, end, newflags, op="mprotect")
    if isinstance(r, int):
        if charged:
            mm.vm_unacct_memory(charged)
        return r
    if oldflags & VM_ACCOUNT and not newflags & VM_ACCOUNT:
        mm.vm_unacct_memory(nrpages)
    mm.vm_stat_account(oldflags, -nrpages)
    mm.vm_stat_account(newflags, nrpages)
    if mm.notifiers:  # change_protection(): MMU_NOTIFY_PROTECTION_VMA over the changed part
        invalidate_range(mm, start, end, "protect")
    # change_protection(): a PTE that no longer permits access stays, permissions are per VMA here.
    # A private VM_LOCKED VMA becoming writable: populate_vma_page_range() breaks COW now (not for
    # VM_LOCKONFAULT, which populate_vma_page_range() leaves alone).
    if ((oldflags & (VM_WRITE | VM_SHARED | VM_LOCKED)) == VM_LOCKED and newflags & VM_WRITE
            and not newflags & C.VM_LOCKONFAULT):
        mm_populate(mm, start, end - start)
    return r
