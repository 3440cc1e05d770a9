"""Population: faulting in the pages of a range on behalf of a syscall.

Models mm/gup.c of Linux 6.18: __mm_populate() and mm_populate() (MAP_POPULATE, MAP_LOCKED, mlock(),
mlockall(), brk() under mlockall(MCL_FUTURE), mremap() growing a locked VMA), populate_vma_page_range()
and faultin_page_range() (madvise(MADV_POPULATE_READ/WRITE)), both over __get_user_pages(), whose fault
loop is :func:`_faultin_pages` here.  Every page is faulted through :func:`vmalab.faults.handle_mm_fault`.
"""

from __future__ import annotations

import errno

from . import constants as C
from .constants import PAGE_SIZE, TASK_SIZE, VM_LOCKONFAULT
from .faults import handle_mm_fault
from .files import vma_is_secretmem
from .mm_types import VMA, MmStruct


def _faultin_pages(mm: MmStruct, vma: VMA, start: int, end: int, write: bool) -> int:
    """The fault loop of mm/gup.c: __get_user_pages() over [start, end) of one VMA: fault every page
    (with FOLL_WRITE when ``write``); VM_FAULT_OOM -> -ENOMEM, a fault that would signal (SIGBUS beyond
    EOF, SIGSEGV on a guard marker) -> -EFAULT.  The pages before the failure stay faulted in."""
    for addr in range(start, end, PAGE_SIZE):
        sig = handle_mm_fault(mm, vma, addr, write, gup=True)
        if sig is not None:
            return -errno.ENOMEM if sig == "OOM" else -errno.EFAULT
    return 0


def populate_range(mm: MmStruct, start: int, length: int, ignore_errors: bool) -> int:
    """Models mm/gup.c: __mm_populate(): fault in [start, start+len) VMA by VMA (skipping VM_IO/VM_PFNMAP
    and VM_LOCKONFAULT VMAs); returns 0 or the first error (-EFAULT for PROT_NONE or a page beyond
    EOF) unless ``ignore_errors``.

    Like the kernel (which may drop mmap_lock between VMAs) this looks the next VMA up by address
    (find_vma_intersection()) rather than walking with a VMA iterator."""
    end = min(start + length, C.TASK_SIZE + PAGE_SIZE)
    nstart = start
    while nstart < end:
        v = mm.tree.find(nstart)
        if v is None or v.vm_start >= end:
            break
        nstart = max(nstart, v.vm_start)
        nend = min(end, v.vm_end)
        if v.vm_flags & (C.VM_IO | C.VM_PFNMAP):
            nstart = nend
            continue
        e = populate_vma_page_range(mm, v, nstart, nend)
        if e and not ignore_errors:
            return e
        nstart = nend
    return 0


def mm_populate(mm: MmStruct, start: int, length: int) -> None:
    """Models mm/gup.c: mm_populate() (MAP_POPULATE, MAP_LOCKED, mlockall): __mm_populate() with its
    errors ignored; one implementation, :func:`populate_range`."""
    populate_range(mm, start, length, ignore_errors=True)


def populate_vma_page_range(mm: MmStruct, vma: VMA, start: int, end: int) -> int:
    """Models mm/gup.c: populate_vma_page_range() with __get_user_pages(): write-fault a private
    writable VMA (breaking COW), read-fault the others; PROT_NONE -> -EFAULT; a fault that would
    raise SIGBUS -> -EFAULT.  VM_LOCKONFAULT VMAs are left alone."""
    if vma.vm_flags & VM_LOCKONFAULT:
        return 0
    if not vma.vm_flags & C.VM_ACCESS_FLAGS:
        return -errno.EFAULT  # no FOLL_FORCE for an inaccessible VMA: check_vma_flags() fails
    if vma_is_secretmem(vma):
        return -errno.EFAULT
    ops = vma.vm_ops
    if vma.vm_file is None and ops is not None and not ops.provides_pages:
        return 0  # a VMA without file whose pages the model does not know
    write = (vma.vm_flags & (C.VM_WRITE | C.VM_SHARED)) == C.VM_WRITE
    return _faultin_pages(mm, vma, start, end, write)


def faultin_page_range(mm: MmStruct, start: int, end: int, write: bool) -> int:
    """Models mm/madvise.c: madvise_populate() over mm/gup.c: faultin_page_range() / __get_user_pages()
    with FOLL_MADV_POPULATE: no VMA at an address -> ENOMEM, a VMA GUP may not fault (check_vma_flags():
    VM_IO/VM_PFNMAP, secretmem, missing VM_READ / VM_WRITE) -> EINVAL, a fault that would signal
    (SIGBUS beyond EOF, SIGSEGV on a guard marker) -> EFAULT.  Pages before the failure stay
    populated.  ``start`` and ``end`` are page aligned (madvise checked them); each VMA is looked up by
    address, as __get_user_pages() does (gup_vma_lookup())."""
    addr = start
    while addr < end:
        vma = mm.tree.lookup(addr)
        if vma is None or addr >= TASK_SIZE:
            return -errno.ENOMEM
        f = vma.vm_flags
        if (f & (C.VM_IO | C.VM_PFNMAP) or vma_is_secretmem(vma)
                or (write and (not f & C.VM_WRITE or f & C.VM_SHADOW_STACK))
                or (not write and not f & C.VM_READ)):
            return -errno.EINVAL
        stop = min(end, vma.vm_end)
        e = _faultin_pages(mm, vma, addr, stop, write)
        if e:
            return e
        addr = stop
    return 0
