"""memfd_secret(2) files: mm/secretmem.c secretmem_mmap_prepare() (an mmap_prepare user since 6.16).

The hook refuses private mappings (-EINVAL) and mappings that would exceed RLIMIT_MEMLOCK (-EAGAIN), and
sets VM_LOCKED | VM_DONTDUMP on the descriptor — flags that then take part in the merge decision, so two
adjacent shared mappings with contiguous offsets merge into one ``lo dd`` VMA (measured on 6.18.44).

What secretmem lacks is modelled by the capabilities of :class:`~vmalab.files.FileOperations` and
:class:`~vmalab.files.VmOperations` it leaves unset: no ``->fsync`` (msync(MS_SYNC) is EINVAL), no
``->fallocate`` (MADV_REMOVE is EOPNOTSUPP once the VMA is not VM_LOCKED, e.g. in a fork child), no
``->map_pages`` (no fault-around); and its ``setattr`` refuses a size change once i_size is set.
The scenario kind ``secretmem:NAME[:SIZE]`` and ``dev:secretmem[:SIZE]`` open one.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from ..constants import VM_DONTDUMP, VM_LOCKED, VM_MAYSHARE, VM_SHARED
from ..fdtable import install
from ..files import SHMEM_DEV, File, FileOperations, Inode, VmOperations
from . import register

if TYPE_CHECKING:
    from ..driver import VmAreaDesc
    from ..mm_types import MmStruct


class SecretmemVmOps(VmOperations):
    """Models mm/secretmem.c: secretmem_vm_ops (a fault handler only: no close, no map_pages, merges
    allowed)."""

    secretmem = True  # vma_is_secretmem()


SECRETMEM_VM_OPS = SecretmemVmOps()


class SecretmemOps(FileOperations):
    """Models mm/secretmem.c: secretmem_fops (mmap_prepare only: no fsync, no fallocate) and
    secretmem_iops (setattr)."""

    get_unmapped_area = None
    has_mmap_prepare = True
    fault_style = "shmem"

    def setattr(self, file: File, size: int) -> int:  # noqa: ARG002
        """Models secretmem_setattr(): the size can be set once (while i_size is 0)."""
        if file.inode.size:
            return -errno.EINVAL
        return 0

    def mmap_prepare(self, desc: VmAreaDesc) -> int:
        """Models secretmem_mmap_prepare()."""
        if not desc.vm_flags & (VM_SHARED | VM_MAYSHARE):
            return -errno.EINVAL
        if not desc.mm.mlock_future_ok(desc.vm_flags | VM_LOCKED, desc.end - desc.start):
            return -errno.EAGAIN
        desc.vm_flags |= VM_LOCKED | VM_DONTDUMP
        desc.vm_ops = SECRETMEM_VM_OPS
        return 0


@register("secretmem")
def open_secretmem(mm: MmStruct, size: int) -> int:
    """memfd_secret() + ftruncate(size): maps show ``/secretmem (deleted)``; the inode is noexec."""
    inode = Inode(mm.alloc_ino(), SHMEM_DEV, size=size, noexec=True)
    return install(mm, File(inode, SecretmemOps(), "/secretmem", deleted=True, owner=mm))
