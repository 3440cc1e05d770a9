"""An I/O-memory device mapped with ``mmap_action_simple_ioremap()`` (7.1+), as drivers/char/hpet.c
hpet_mmap_prepare(), drivers/hwtracing/stm/core.c and drivers/staging/vme_user do.

The hook refuses a disabled device (-EACCES) and an unaligned register window (-ENOSYS) like hpet, makes
the protection non-cached (``pgprot_noncached``), marks the VMA IO | DONTEXPAND | DONTDUMP like stm, and
asks for the window (``phys``, ``size``) to be mapped.  mm/util.c simple_ioremap_prepare() then checks
the geometry (offset beyond the window, or a VMA longer than what is left: -EINVAL) and turns the action
into a REMAP_PFN of the whole VMA from ``phys >> PAGE_SHIFT`` + ``pgoff``.  Kernels before 7.1 have no
SIMPLE_IO_REMAP: mmap() raises ProfileFeatureError.  ``dev:iomem[:SIZE]``: SIZE of the window (default
16K) at 0xfed00000.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from ..constants import PAGE_SIZE, VM_DONTDUMP, VM_DONTEXPAND, VM_IO
from ..driver import mmap_action_simple_ioremap
from ..fdtable import open_device
from ..files import FileOperations, VmOperations
from . import register
from ._helpers import pgprot_noncached

if TYPE_CHECKING:
    from ..driver import VmAreaDesc
    from ..mm_types import MmStruct

IOMEM_BASE = 0xFED00000


class IomemVmOps(VmOperations):
    """The device's vm_ops (no close)."""


IOMEM_VM_OPS = IomemVmOps()


class IomemOps(FileOperations):
    """A device exposing ``size`` bytes of registers at ``phys``."""

    has_mmap_prepare = True

    def __init__(self, phys: int = IOMEM_BASE, size: int = 16 << 10) -> None:
        self.phys = phys
        self.size = size
        self.enabled = True

    def mmap_prepare(self, desc: VmAreaDesc) -> int:
        if not self.enabled:
            return -errno.EACCES
        if self.phys & (PAGE_SIZE - 1):
            return -errno.ENOSYS
        desc.page_prot = pgprot_noncached(desc.page_prot)
        desc.vm_flags |= VM_IO | VM_DONTEXPAND | VM_DONTDUMP
        desc.vm_ops = IOMEM_VM_OPS
        mmap_action_simple_ioremap(desc, self.phys, self.size)
        return 0


@register("iomem")
def open_iomem(mm: MmStruct, size: int) -> int:
    return open_device(mm, "/dev/iomem", IomemOps(IOMEM_BASE, size or 16 << 10))
