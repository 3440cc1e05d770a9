"""A device that maps an array of its own kernel pages with ``mmap_action_map_kernel_pages_full()``
(7.1+): the action of include/linux/mm.h, run by mm/util.c map_kernel_pages_prepare() (VM_MIXEDMAP, range
check) and map_kernel_pages_complete() (mm/memory.c vm_insert_pages()), the pattern of ring-buffer
drivers that export a kernel buffer (e.g. kernel/trace/ring_buffer.c, drivers/usb/mon/mon_bin.c).

The buffer is ``size`` bytes of real pages (each pre-filled with its index + 1 at offset 0, so a read
shows which page is mapped).  Only shared mappings are allowed (-EINVAL otherwise), ``pgoff`` selects the
first buffer page and a mapping past the buffer end is -EINVAL.  The inserted pages are normal pages:
smaps Rss counts them.  ``dev:kpages[:SIZE]`` (default 16K).
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from ..constants import PAGE_SHIFT, VM_DONTEXPAND, VM_SHARED
from ..driver import mmap_action_map_kernel_pages_full
from ..fdtable import open_device
from ..files import FileOperations, VmOperations
from ..pagetable import KERNEL, Page, PfnPage
from . import register

if TYPE_CHECKING:
    from ..driver import VmAreaDesc
    from ..mm_types import MmStruct

KPAGES_PFN_BASE = 0x120000


class KpagesVmOps(VmOperations):
    """The device's vm_ops (no close)."""


KPAGES_VM_OPS = KpagesVmOps()


class KpagesOps(FileOperations):
    """Owns ``pages``: the kernel buffer."""

    has_mmap_prepare = True

    def __init__(self, size: int) -> None:
        self.pages: list[Page] = [PfnPage(KERNEL, {0: i + 1}, pfn=KPAGES_PFN_BASE + i)
                                  for i in range(size >> PAGE_SHIFT)]

    def mmap_prepare(self, desc: VmAreaDesc) -> int:
        desc.action  # noqa: B018 - a kernel without actions cannot run this driver at all
        if not desc.vm_flags & VM_SHARED:
            return -errno.EINVAL
        if desc.pgoff + desc.pages() > len(self.pages):
            return -errno.EINVAL
        desc.vm_flags |= VM_DONTEXPAND
        desc.vm_ops = KPAGES_VM_OPS
        mmap_action_map_kernel_pages_full(desc, self.pages[desc.pgoff:])
        return 0


@register("kpages")
def open_kpages(mm: MmStruct, size: int) -> int:
    size = size or 16 << 10
    return open_device(mm, "/dev/kpages", KpagesOps(size), size)
