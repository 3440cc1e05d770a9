"""What memfd_secret files lack, as FileOperations / VmOperations capabilities (the live behaviour is
recorded by the secretmem_* scenarios; the fork child below is measured separately, see the test)."""

from __future__ import annotations

import errno

import pytest

from vmalab import constants as C
from vmalab.fdtable import install
from vmalab.files import File, FileOperations, Inode, VmOperations
from vmalab.mm import MM

BASE = 0x500000000000
P = C.PAGE_SIZE
RW = C.PROT_READ | C.PROT_WRITE
SHF = C.MAP_SHARED | C.MAP_FIXED
MADV_REMOVE = C.MADV_NAMES["MADV_REMOVE"]
MS_SYNC = C.MSYNC_NAMES["MS_SYNC"]


def test_madvise_remove_without_fallocate_is_eopnotsupp_in_a_fork_child() -> None:
    """The parent's secretmem VMA is VM_LOCKED, so MADV_REMOVE stops at EINVAL; dup_mmap() clears
    VM_LOCKED in the child, whose MADV_REMOVE reaches vfs_fallocate(): secretmem has no ->fallocate,
    EOPNOTSUPP.  Measured on 6.18.44 with a C program (memfd_secret, mmap MAP_SHARED, fork, madvise in
    the child: "Operation not supported", child VmFlags "rd wr sh mr mw ms dd"); a scenario's fork op
    cannot run syscalls in the child.  A memfd (shmem_fallocate()) punches the hole: 0."""
    mm = MM()
    fd = mm.memfd_secret(16 * P)
    mm.mmap(BASE, 4 * P, RW, SHF, fd, 0)
    mm.touch(BASE, write=True, value=3)
    assert mm.sys_madvise(BASE, P, MADV_REMOVE) == -errno.EINVAL
    child = mm.fork()
    v = child.vma_at(BASE)
    assert v is not None and not v.vm_flags & C.VM_LOCKED
    assert child.sys_madvise(BASE, P, MADV_REMOVE) == -errno.EOPNOTSUPP
    assert child.sys_msync(BASE, P, MS_SYNC) == -errno.EINVAL  # no ->fsync either
    assert mm.touch(BASE) == 3  # nothing was punched
    mfd = child.memfd_create("m", 16 * P)
    child.mmap(BASE + 8 * P, 4 * P, RW, SHF, mfd, 0)
    assert child.sys_madvise(BASE + 8 * P, P, MADV_REMOVE) == 0
    assert child.sys_msync(BASE + 8 * P, P, MS_SYNC) == 0
    child.validate()
    child.exit_mmap()
    mm.validate()


def test_secretmem_size_is_set_once_through_the_api() -> None:
    mm = MM()
    fd = mm.memfd_secret()
    mm.ftruncate(fd, 8 * P)
    for size in (16 * P, 8 * P, 0):
        with pytest.raises(OSError) as e:
            mm.ftruncate(fd, size)
        assert e.value.errno == errno.EINVAL
    assert mm.fdtable[fd].inode.size == 8 * P


class _NoCapsOps(FileOperations):
    """A driver's file_operations that set no fsync, fallocate or map_pages (NULL in C)."""

    has_mmap = True

    def mmap(self, file: File, vma: object) -> int:  # noqa: ARG002
        vma.vm_ops = _NO_CAPS_VM_OPS  # type: ignore[attr-defined]
        return 0


_NO_CAPS_VM_OPS = VmOperations()


def test_capabilities_default_to_absent_as_null_hooks() -> None:
    """A FileOperations subclass gets the kernel's answer for a NULL hook: msync(MS_SYNC) of a shared
    mapping EINVAL (vfs_fsync_range()), MADV_REMOVE EOPNOTSUPP (vfs_fallocate()), a read fault maps
    only its own page (no ->map_pages)."""
    assert not FileOperations.has_fsync and not FileOperations.has_fallocate
    assert not VmOperations.has_map_pages and not VmOperations.provides_pages
    mm = MM()
    inode = Inode(mm.alloc_ino(), (0, 0x40), size=16 * P)
    for pg in range(16):
        inode.cache_page(pg)
    fd = install(mm, File(inode, _NoCapsOps(), "/nocaps", owner=mm))
    mm.mmap(BASE, 16 * P, RW, SHF, fd, 0)
    assert mm.sys_msync(BASE, P, MS_SYNC) == -errno.EINVAL
    assert mm.sys_msync(BASE, P, C.MSYNC_NAMES["MS_ASYNC"]) == 0
    assert mm.sys_madvise(BASE, P, MADV_REMOVE) == -errno.EOPNOTSUPP
    mm.touch(BASE + 4 * P)
    v = mm.vma_at(BASE)
    assert v is not None and mm.rss_pages(v) == 1  # no fault-around
    mm.validate()
