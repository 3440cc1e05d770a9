"""A legacy driver that counts its VMAs: a reference taken in ``->mmap`` (which runs only for a new VMA)
and in ``->open``, dropped in ``->close``.  ``port_ref_wrong.py`` is a wrong port of it.
"""

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


class LegacyCounted(FileOperations):
    has_mmap = True

    def __init__(self, mm: MM) -> None:
        self.users = Kref(mm, "port_ref users")
        self.vm_ops = CountingVmOps(self.users)

    def mmap(self, file: object, vma: VMA) -> int:  # noqa: ARG002
        self.users.get()
        vma.vm_ops = self.vm_ops
        return 0


def open(mm: MM, size: int) -> int:  # noqa: A001 - the explorer's driver convention
    return mm.open_device("/dev/port_ref", LegacyCounted(mm), size)
