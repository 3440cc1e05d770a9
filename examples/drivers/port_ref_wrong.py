"""WRONG (on purpose): a port of ``port_ref_legacy.py`` that takes the reference in ``mmap_prepare``.

``mmap_prepare`` runs before the kernel knows a VMA will exist: when the mapping merges into its
neighbour, or fails after the hook, no ``->close`` ever drops the reference (the afs lesson).  The right
place is ``vm_ops->mapped`` (7.1+; see afs_ref_fixed.py).  ``vmalab port-check
examples/drivers/port_ref_legacy.py examples/drivers/port_ref_wrong.py`` reports the leak (exit status 1).
"""

from vmalab.driver import VmAreaDesc
from vmalab.files import FileOperations, VmOperations
from vmalab.mm import MM
from vmalab.mm_types import VMA
from vmalab.resources import Kref


class CountingVmOps(VmOperations):
    has_close = True

    def __init__(self, users: Kref) -> None:
        self.users = users

    def open(self, vma: VMA) -> None:  # noqa: ARG002
        self.users.get()

    def close(self, vma: VMA) -> None:  # noqa: ARG002
        self.users.put()


class PreparedCounted(FileOperations):
    has_mmap_prepare = True

    def __init__(self, mm: MM) -> None:
        self.users = Kref(mm, "port_ref users")
        self.vm_ops = CountingVmOps(self.users)

    def mmap_prepare(self, desc: VmAreaDesc) -> int:
        self.users.get()  # BUG: taken before the kernel knows a VMA will exist
        desc.vm_ops = self.vm_ops
        return 0


def open(mm: MM, size: int) -> int:  # noqa: A001 - the explorer's driver convention
    return mm.open_device("/dev/port_ref", PreparedCounted(mm), size)
