"""WRONG (on purpose): PFNs remapped past the device's memory.

The device owns two pages of memory from ``DEV_PFN`` and declares them (``device_ranges``, model-only).  Its
``mmap_prepare`` (``->mmap`` on 6.18) remaps ``DEV_PFN + pgoff`` for the whole length of the mapping without
checking that the range fits, so a mapping at an offset (or longer than the device) exposes physical memory
that belongs to something else.  ``vmalab explore`` reports the PFN and where it was mapped.  The fix,
``remap_range_fixed.py``, refuses such a mapping with -EINVAL.
"""

from __future__ import annotations

import errno

from vmalab.driver import VmAreaDesc, mmap_action_remap_full, remap_pfn_range
from vmalab.files import File, FileOperations
from vmalab.mm import MM
from vmalab.mm_types import VMA

DEV_PFN = 0x180000
DEV_PAGES = 2
CHECKED = False


class RemapRangeOps(FileOperations):
    device_ranges = [(DEV_PFN, DEV_PAGES)]

    def __init__(self, mm: MM) -> None:
        self.mm = mm
        self.has_mmap_prepare = mm.profile.has_actions
        self.has_mmap = not self.has_mmap_prepare

    def fits(self, pgoff: int, size: int) -> bool:
        return not CHECKED or pgoff + (size >> 12) <= DEV_PAGES

    def mmap_prepare(self, desc: VmAreaDesc) -> int:
        if not self.fits(desc.pgoff, desc.end - desc.start):
            return -errno.EINVAL
        mmap_action_remap_full(desc, DEV_PFN + desc.pgoff)  # BUG (unchecked): may run past the device
        return 0

    def mmap(self, file: File, vma: VMA) -> int:  # noqa: ARG002
        size = vma.vm_end - vma.vm_start
        if not self.fits(vma.vm_pgoff, size):
            return -errno.EINVAL
        return remap_pfn_range(self.mm, vma, vma.vm_start, DEV_PFN + vma.vm_pgoff, size)  # BUG (unchecked)


def open(mm: MM, size: int) -> int:  # noqa: A001 - the explorer's driver convention
    return mm.open_device("/dev/remapdev", RemapRangeOps(mm), size or 1 << 20)
