"""FIXED: ``remap_range.py`` with the bounds check: a mapping must fit in the device's two pages.

``mmap_prepare`` (``->mmap`` on 6.18) refuses with -EINVAL a mapping whose offset and length run past the
device memory (``pgoff + pages > DEV_PAGES``), as drivers do before remap_pfn_range() (e.g. vm_iomap_memory()).
"""

from __future__ import annotations

import errno

from vmalab.driver import VmAreaDesc, mmap_action_remap_full, remap_pfn_range
from vmalab.files import File, FileOperations
from vmalab.mm import MM
from vmalab.mm_types import VMA

DEV_PFN = 0x180000
DEV_PAGES = 2
CHECKED = True  # the fix: a mapping must fit in the device's memory


class RemapRangeFixedOps(FileOperations):
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
    return mm.open_device("/dev/remapdev", RemapRangeFixedOps(mm), size or 1 << 20)
