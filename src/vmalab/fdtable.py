"""The descriptor table the model's syscalls take file descriptors from.

Models the parts of fs/open.c, fs/file.c, mm/memfd.c and fs/open.c: do_truncate() that the address space
sees: opening a file of a registered kind, installing a ``struct file`` at the lowest free descriptor
(fd_install()), memfd_create(2), reopening through /proc/self/fd, close(2) and ftruncate(2) (with
truncate_pagecache()'s zap of every mapping beyond the new end of file).

File kinds and devices with a driver of their own (ext4-like ``disk`` files, ``/dev/zero``, secretmem)
live in :mod:`vmalab.drivers` and register here (:func:`register_file_kind`, :func:`register_device`);
the core imports no driver.  Both registries are tables of code, not state: every open file lives in an
mm's ``fdtable``.
"""

from __future__ import annotations

import errno
from collections.abc import Callable

from .constants import PAGE_SHIFT
from .files import (
    FMODE_READ,
    FMODE_WRITE,
    S_IFCHR,
    S_IFREG,
    File,
    FileOperations,
    Inode,
    ShmemFileOps,
    fput,
    shmem_kernel_file_setup,
)
from .mm_types import MmStruct
from .mmu_notifier import invalidate_range

FMODES = {"rw": FMODE_READ | FMODE_WRITE, "ro": FMODE_READ, "wo": FMODE_WRITE}
TMPFS_DEV = (0, 0x1A)

#: kind -> a factory of its file_operations (``tmpfs`` here; ``disk`` from vmalab.drivers.filemap)
FILE_KINDS: dict[str, Callable[[], FileOperations]] = {"tmpfs": ShmemFileOps}
#: device name -> opener(mm, size) -> fd (the built-in drivers; vmalab.drivers.register fills it)
DEVICES: dict[str, Callable[[MmStruct, int], int]] = {}


def register_file_kind(kind: str, factory: Callable[[], FileOperations]) -> None:
    """Make ``open_file(..., kind=KIND)`` create files with ``factory()`` as their file_operations."""
    FILE_KINDS[kind] = factory


def register_device(name: str, opener: Callable[[MmStruct, int], int]) -> None:
    """Make :func:`open_registered` (and scenarios' ``dev:NAME``) open ``name`` with ``opener``."""
    DEVICES[name] = opener


def _fmode(mode: str) -> int:
    try:
        return FMODES[mode]
    except KeyError:
        raise ValueError(f"unknown open mode {mode!r} (known: {', '.join(FMODES)})") from None


def install(mm: MmStruct, f: File) -> int:
    """fd_install() at the lowest free descriptor (from 3): returns the fd; the mm tracks the file."""
    fd = 3
    while fd in mm.fdtable:
        fd += 1
    mm.fdtable[fd] = f
    mm.resources.track_file(f)
    return fd


def open_device(mm: MmStruct, path: str, f_op: FileOperations, size: int = 0, *, mode: str = "rw") -> int:
    """Open a character device driven by ``f_op`` (a driver written for vmalab); returns the fd."""
    inode = Inode(mm.alloc_ino(), (0, 0x0F), mode=S_IFCHR, size=size or (1 << 40))
    return install(mm, File(inode, f_op, path, f_mode=_fmode(mode), owner=mm))


def open_registered(mm: MmStruct, name: str, size: int = 0) -> int:
    """Open the built-in device ``name`` (a registered driver); returns the fd."""
    opener = DEVICES.get(name)
    if opener is None:
        raise ValueError(f"unknown built-in driver {name!r} (known: {', '.join(sorted(DEVICES))})")
    return opener(mm, size)


def memfd_create(mm: MmStruct, name: str, size: int = 0) -> int:
    """memfd_create(2) + ftruncate: returns a descriptor; maps show ``/memfd:NAME (deleted)``."""
    return install(mm, shmem_kernel_file_setup(mm, f"/memfd:{name}", size))


def open_file(mm: MmStruct, path: str, size: int = 0, *, kind: str = "disk", mode: str = "rw",
              inode: Inode | None = None, dev: tuple[int, int] = (0xFE, 0)) -> int:
    """Open (creating if ``inode`` is None) a regular file of a registered ``kind``: ``disk`` (ext4-like
    page cache, THP-aligned placement, readahead) or ``tmpfs`` (shmem).  ``mode`` is ``rw``, ``ro`` or
    ``wo``."""
    factory = FILE_KINDS.get(kind)
    if factory is None:
        raise ValueError(f"unknown file kind {kind!r} (known: {', '.join(sorted(FILE_KINDS))})")
    fmode = _fmode(mode)
    if inode is None:
        inode = Inode(mm.alloc_ino(), dev if kind == "disk" else TMPFS_DEV, size=size)
    return install(mm, File(inode, factory(), path, f_mode=fmode, owner=mm))


def reopen(mm: MmStruct, fd: int, mode: str) -> int:
    """Open another descriptor to the file behind ``fd`` (like opening /proc/self/fd/N)."""
    f = mm.fdtable[fd]
    return install(mm, File(f.inode, type(f.f_op)(), f.path, f_mode=_fmode(mode), deleted=f.deleted, owner=mm))


def close(mm: MmStruct, fd: int) -> int:
    """close(2): 0 or -EBADF."""
    f = mm.fdtable.pop(fd, None)
    if f is None:
        return -errno.EBADF
    fput(mm, f)  # filp_close(): the descriptor's reference
    return 0


def ftruncate(mm: MmStruct, fd: int, length: int) -> int:
    """ftruncate(2): 0 or -errno.  Models fs/open.c: do_sys_ftruncate(), ext4's partial-block handling
    and mm/truncate.c: truncate_pagecache()."""
    f = mm.fdtable.get(fd)
    if f is None:
        return -errno.EBADF
    if length < 0 or length > (1 << 63) - 1:
        return -errno.EINVAL
    if not f.f_mode & FMODE_WRITE or f.inode.mode != S_IFREG:
        return -errno.EINVAL
    e = f.f_op.setattr(f, length)  # do_truncate() -> notify_change() -> i_op->setattr()
    if e:
        return e
    old = f.inode.size
    f.inode.truncate(length)
    if f.f_op.fault_style == "filemap":
        # ext4_setattr(): a shrink or the same size runs ext4_truncate(), which zeroes the new last,
        # partial block; a truncate up zeroes the tail of the old one.  Either way, over a hole the folio
        # is created !uptodate (Inode.block_truncate_page; measured in
        # tests/scenarios/file_ftruncate_partial_eof_page_not_uptodate.json).
        f.inode.block_truncate_page(length if length <= old else old)
    if length < old:
        # truncate_pagecache() -> unmap_mapping_range(even_cows=1): zap the PTEs of every mapping
        # beyond the new EOF, the private COW copies too; guard markers stay.
        limit = f.inode.npages()
        for v in mm.tree:
            if v.vm_file is not None and v.vm_file.inode is f.inode:
                first = max(limit - v.vm_pgoff, 0)
                if first < v.pages:
                    mm.pt.zap_except_guards((v.vm_start >> PAGE_SHIFT) + first, v.vm_end >> PAGE_SHIFT)
                    if mm.notifiers:  # zap_page_range_single(): MMU_NOTIFY_CLEAR
                        invalidate_range(mm, v.vm_start + (first << PAGE_SHIFT), v.vm_end, "zap")
    return 0
