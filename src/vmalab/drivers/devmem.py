"""/dev/mem: drivers/char/mem.c mmap_mem_prepare() (an mmap_prepare user since 6.19).

The hook checks the physical range (it must fit phys_addr_t, must not wrap, must be possible on this
machine: -EINVAL; STRICT_DEVMEM: System RAM above the first MiB is refused with -EPERM), installs
mmap_mem_ops and asks for a remap of the whole VMA from pfn ``pgoff`` (``mmap_action_remap_full``).
Whatever error the remap then meets is reported as -EAGAIN, the historical /dev/mem errno: through
``error_hook`` (6.19–7.1, seed-v3), ``error_override`` (~7.2) or ``finish`` (experimental).  6.18 has no
actions: opening works, mmap() raises ProfileFeatureError (the live 6.18 /dev/mem is a legacy driver).

A private writable mapping is a CoW remap: prepare sets ``pgoff = pfn`` (the same value here) and the remap
must cover the whole VMA.  ``dev:devmem[:SIZE]``: SIZE is the end of System RAM (default 2 GiB).
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from ..constants import PAGE_SHIFT, PAGE_SIZE
from ..driver import mmap_action_remap_full
from ..fdtable import open_device
from ..files import FileOperations, VmOperations
from . import register
from ._helpers import filter_action_error

if TYPE_CHECKING:
    from ..driver import VmAreaDesc
    from ..mm_types import MmStruct

X86_PHYS_BITS = 46  # boot_cpu_data.x86_phys_bits of the modelled machine
FIRST_MB_PFNS = 256  # the low 1 MiB that devmem_is_allowed() always lets through


class MemVmOps(VmOperations):
    """Models mmap_mem_ops (an ->access hook only: no close)."""


MMAP_MEM_OPS = MemVmOps()


class DevMemOps(FileOperations):
    """Models /dev/mem's file_operations (mmap_prepare only); ``ram_end`` is the end of System RAM."""

    has_mmap_prepare = True

    def __init__(self, ram_end: int = 2 << 30) -> None:
        self.ram_end_pfn = ram_end >> PAGE_SHIFT

    def valid_mmap_phys_addr_range(self, pfn: int, size: int) -> bool:
        """x86 valid_mmap_phys_addr_range() -> arch_pfn_possible()."""
        return pfn + (size >> PAGE_SHIFT) <= (1 << (X86_PHYS_BITS - PAGE_SHIFT))

    def devmem_is_allowed(self, pfn: int) -> bool:
        """x86 devmem_is_allowed() (STRICT_DEVMEM): RAM only in the first MiB."""
        if pfn < self.ram_end_pfn:
            return pfn < FIRST_MB_PFNS
        return True

    def range_is_allowed(self, pfn: int, size: int) -> bool:
        return all(self.devmem_is_allowed(pfn + i) for i in range((size + PAGE_SIZE - 1) >> PAGE_SHIFT))

    def mmap_prepare(self, desc: VmAreaDesc) -> int:
        """Models mmap_mem_prepare()."""
        size = desc.size()
        offset = desc.pgoff << PAGE_SHIFT
        if offset >= 1 << 64:  # does not fit phys_addr_t
            return -errno.EINVAL
        if offset + size - 1 >= 1 << 64:  # wraps around the physical address space
            return -errno.EINVAL
        if not self.valid_mmap_phys_addr_range(desc.pgoff, size):
            return -errno.EINVAL
        if not self.range_is_allowed(desc.pgoff, size):
            return -errno.EPERM
        desc.vm_ops = MMAP_MEM_OPS
        mmap_action_remap_full(desc, desc.pgoff)  # remap_pfn_range marks the VMA VM_IO | VM_PFNMAP
        filter_action_error(desc, -errno.EAGAIN)  # mmap_filter_error()
        return 0


@register("devmem")
def open_devmem(mm: MmStruct, size: int) -> int:
    return open_device(mm, "/dev/mem", DevMemOps(size or 2 << 30))
