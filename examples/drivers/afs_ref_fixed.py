"""FIXED: the afs reference is taken where a VMA is known to exist.

* Kernels with ``vm_ops->mapped`` (7.1+): ``mmap_prepare`` only installs the vm_ops; ``afs_mapped()`` takes
  the reference — it runs only for a newly established VMA, never when the range merged into a neighbour,
  and after every step that could fail before the mapping exists.  ``->close`` drops it, ``->open`` takes
  one for a split or fork copy (upstream "fs: afs: restore mmap_prepare implementation").
* Older kernels (6.18-7.0): the legacy ``->mmap`` (what the upstream revert went back to); it runs on the
  new VMA, so a merge cannot skip it, and a failing ``->mmap`` takes nothing.

Like afs_mapped(), ``mapped`` here cannot fail; a ``->mapped`` that could would have to tell ``->close``
whether it ran (``vmalab explore --driver-points`` shows why).
"""

from __future__ import annotations

from vmalab.driver import PrivateRef, VmAreaDesc
from vmalab.files import File, FileOperations, VmOperations
from vmalab.mm import MM
from vmalab.mm_types import VMA
from vmalab.resources import Kref


class AfsVmOps(VmOperations):
    has_close = True

    def __init__(self, vnode: Kref) -> None:
        self.vnode = vnode

    def mapped(self, start: int, end: int, pgoff: int, file: File | None, priv: PrivateRef) -> int:  # noqa: ARG002
        self.vnode.get()  # afs_mapped(): afs_add_open_mmap()
        return 0

    def open(self, vma: VMA) -> None:  # noqa: ARG002
        self.vnode.get()

    def close(self, vma: VMA) -> None:  # noqa: ARG002
        self.vnode.put()


class AfsFileOps(FileOperations):
    fault_style = "filemap"

    def __init__(self, mm: MM) -> None:
        self.vnode = Kref(mm, "afs vnode cb_nr_mmap")
        self.vm_ops = AfsVmOps(self.vnode)
        self.has_mmap_prepare = mm.profile.has_mapped
        self.has_mmap = not self.has_mmap_prepare

    def mmap_prepare(self, desc: VmAreaDesc) -> int:
        desc.vm_ops = self.vm_ops  # stateless: nothing is taken here
        return 0

    def mmap(self, file: File, vma: VMA) -> int:  # noqa: ARG002
        """The legacy hook of kernels without vm_ops->mapped: it runs on the new VMA."""
        vma.vm_ops = self.vm_ops
        self.vnode.get()
        return 0


def open(mm: MM, size: int) -> int:  # noqa: A001 - the explorer's driver convention
    return mm.open_device("/afs/cell/file", AfsFileOps(mm), size or 1 << 20)
