"""WRONG (on purpose): a reference taken in ``mmap_prepare`` — the afs lesson.

fs/afs converted to ``mmap_prepare`` in 6.17 and took its open-mmap reference there
(``afs_add_open_mmap()``), dropping it in ``vm_ops->close`` (``afs_drop_open_mmap()``; ``->open`` takes
another for a split or fork copy).  That looks balanced — every VMA gets one reference, every close drops
one — but ``mmap_prepare`` runs before the kernel knows whether a VMA will be created: when the mapping
merges into its neighbour (same file, contiguous offset) or fails after the hook (VMA allocation, tree
preallocation), the reference is never dropped.  Upstream reverted the conversion ("fs: afs: revert
mmap_prepare() change") and restored it with the reference taken in ``vm_ops->mapped``: ``afs_ref_fixed.py``.

The module uses the ``open(mm, size) -> fd`` convention of ``vmalab explore``.
"""

from __future__ import annotations

from vmalab.driver import VmAreaDesc
from vmalab.files import FileOperations, VmOperations
from vmalab.mm import MM
from vmalab.mm_types import VMA
from vmalab.resources import Kref


class AfsVmOps(VmOperations):
    """afs_vm_ops: open/close count the VMAs that use the vnode."""

    has_close = True

    def __init__(self, vnode: Kref) -> None:
        self.vnode = vnode

    def open(self, vma: VMA) -> None:  # noqa: ARG002
        self.vnode.get()  # afs_vm_open(): afs_add_open_mmap()

    def close(self, vma: VMA) -> None:  # noqa: ARG002
        self.vnode.put()  # afs_vm_close(): afs_drop_open_mmap()


class AfsFileOps(FileOperations):
    """afs_file_operations with the 6.17 afs_file_mmap_prepare()."""

    has_mmap_prepare = True
    fault_style = "filemap"

    def __init__(self, mm: MM) -> None:
        self.vnode = Kref(mm, "afs vnode cb_nr_mmap")
        self.vm_ops = AfsVmOps(self.vnode)

    def mmap_prepare(self, desc: VmAreaDesc) -> int:
        self.vnode.get()  # BUG: afs_add_open_mmap() before the kernel knows a VMA will exist
        desc.vm_ops = self.vm_ops
        return 0


def open(mm: MM, size: int) -> int:  # noqa: A001 - the explorer's driver convention
    return mm.open_device("/afs/cell/file", AfsFileOps(mm), size or 1 << 20)
