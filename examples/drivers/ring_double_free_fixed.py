"""FIXED: the ring of ``ring_double_free.py`` belongs to the open file, not to a mapping.

The ring (16 pages) is allocated on the file's first mmap and freed once, in ``->release``, when the file's
last reference is dropped (its descriptor closed and every VMA that maps it gone: the kernel's last
``fput()``).  ``->close`` and the error path free nothing, so no path can free it twice or leak it.
Works on every profile with actions.
"""

from __future__ import annotations

import errno

from vmalab.driver import VmAreaDesc, mmap_action_remap_full
from vmalab.files import File, FileOperations, VmOperations
from vmalab.mm import MM
from vmalab.resources import PfnAllocator

RING_PFN = 0x190000
RING_PAGES = 16


class RingFixedOps(FileOperations):
    has_mmap_prepare = True
    has_release = True

    def __init__(self, mm: MM) -> None:
        self.pool = PfnAllocator(mm, "ring pages", RING_PFN, RING_PAGES)
        self.device_ranges = [(RING_PFN, RING_PAGES)]
        self.vm_ops = VmOperations()
        self.ring: list[int] = []

    def mmap_prepare(self, desc: VmAreaDesc) -> int:
        if desc.pgoff + ((desc.end - desc.start) >> 12) > RING_PAGES:
            return -errno.EINVAL
        if not self.ring:
            self.ring = [self.pool.alloc() for _ in range(RING_PAGES)]
        desc.vm_ops = self.vm_ops
        mmap_action_remap_full(desc, self.ring[0] + desc.pgoff)
        return 0

    def release(self, file: File) -> None:  # noqa: ARG002
        for pfn in self.ring:
            self.pool.free(pfn)
        self.ring = []


def open(mm: MM, size: int) -> int:  # noqa: A001 - the explorer's driver convention
    return mm.open_device("/dev/ring", RingFixedOps(mm), size or 1 << 20)
