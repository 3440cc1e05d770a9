"""msync(2).

Models mm/msync.c of Linux 6.18.  Writeback is not modelled (the page cache is the file's content here),
so msync only decides its return value: the flag and alignment checks, ENOMEM for unmapped parts of the
range (MS_ASYNC alone gives up at the first hole, the other forms go on and report ENOMEM at the end),
EBUSY for MS_INVALIDATE on an mlocked VMA, which ends the walk, and EINVAL for MS_SYNC on a shared mapping
of a file without ``->fsync`` (``FileOperations.has_fsync``: secretmem, devices).
"""

from __future__ import annotations

import errno

from .constants import MSYNC_NAMES, PAGE_SIZE, ULONG_MASK, VM_LOCKED, VM_SHARED, page_align
from .mm_types import MmStruct

MS_ASYNC = MSYNC_NAMES["MS_ASYNC"]
MS_INVALIDATE = MSYNC_NAMES["MS_INVALIDATE"]
MS_SYNC = MSYNC_NAMES["MS_SYNC"]


def sys_msync(mm: MmStruct, addr: int, length: int, flags: int) -> int:
    """msync(2): models mm/msync.c: SYSCALL msync; returns 0 or -errno.

    Like the kernel (which drops mmap_lock around fsync) the next VMA is looked up by address
    (find_vma()) after each one."""
    start = addr & ULONG_MASK
    length &= ULONG_MASK
    flags &= 0xFFFFFFFF
    if flags & ~(MS_ASYNC | MS_INVALIDATE | MS_SYNC):
        return -errno.EINVAL
    if start & (PAGE_SIZE - 1):
        return -errno.EINVAL
    if flags & MS_ASYNC and flags & MS_SYNC:
        return -errno.EINVAL
    length = page_align(length) & ULONG_MASK  # a length within a page of 2^64 rounds to 0
    end = start + length
    if end > ULONG_MASK:
        return -errno.ENOMEM
    if end == start:
        return 0
    with mm.locks.mmap_read():  # SYSCALL msync: mmap_read_lock() for the walk (dropped around fsync)
        unmapped_error = 0
        vma = mm.tree.find(start)
        while True:
            if vma is None:
                return -errno.ENOMEM
            if start < vma.vm_start:
                if flags == MS_ASYNC:
                    return -errno.ENOMEM
                start = vma.vm_start
                if start >= end:
                    return -errno.ENOMEM
                unmapped_error = -errno.ENOMEM
            if flags & MS_INVALIDATE and vma.vm_flags & VM_LOCKED:
                return -errno.EBUSY
            f = vma.vm_file
            if flags & MS_SYNC and f is not None and vma.vm_flags & VM_SHARED and not f.f_op.has_fsync:
                # vfs_fsync_range() on a file without ->fsync (secretmem, devices): its error ends the walk and
                # replaces an ENOMEM for a hole before it
                return -errno.EINVAL
            start = vma.vm_end
            if start >= end:
                return unmapped_error
            vma = mm.tree.find(start)
