"""WRONG (on purpose): a ring buffer freed by both ``->close`` and the error hook.

The device allocates a ring page for each mapping in ``mmap_prepare``, remaps it with an action, and frees it
in ``vm_ops->close``.  To be safe on failure it also frees it in ``action.error_hook`` — but when the action
fails the core first unmaps the new VMA, which calls ``->close`` (freeing the ring), and only then the error
hook: the page is freed twice.  (And a failure before the VMA exists leaks the page: nothing frees it.)  The
fix, ``ring_double_free_fixed.py``: one ring per open file, allocated on the first mmap and freed in
``->release`` when the file's last reference goes.  Needs the 6.19-7.1 hooks.
"""

from __future__ import annotations

import errno

from vmalab.driver import ProfileFeatureError, VmAreaDesc, mmap_action_remap_full
from vmalab.files import FileOperations, VmOperations
from vmalab.mm import MM
from vmalab.mm_types import VMA
from vmalab.resources import PfnAllocator

RING_PFN = 0x190000


class RingVmOps(VmOperations):
    has_close = True

    def __init__(self, pool: PfnAllocator) -> None:
        self.pool = pool

    def close(self, vma: VMA) -> None:
        if isinstance(vma.vm_private_data, int):
            self.pool.free(vma.vm_private_data)


class RingOps(FileOperations):
    has_mmap_prepare = True

    def __init__(self, mm: MM) -> None:
        self.pool = PfnAllocator(mm, "ring pages", RING_PFN, 64)
        self.device_ranges = [(RING_PFN, 64)]
        self.vm_ops = RingVmOps(self.pool)
        self.pfn = -1

    def mmap_prepare(self, desc: VmAreaDesc) -> int:
        if not desc.profile.has_hooks:
            raise ProfileFeatureError(f"kernel {desc.profile.name} has no action.error_hook")
        if desc.end - desc.start != 2 * 4096 and desc.end - desc.start != 4096:
            return -errno.EINVAL
        pfn = self.pool.alloc()
        if pfn < 0:
            return pfn
        self.pfn = pfn
        desc.private_data = pfn
        desc.vm_ops = self.vm_ops
        mmap_action_remap_full(desc, pfn)
        desc.action.error_hook = self.error
        return 0

    def error(self, err: int) -> int:
        self.pool.free(self.pfn)  # BUG: ->close already freed it when the core unmapped the VMA
        return err


def open(mm: MM, size: int) -> int:  # noqa: A001 - the explorer's driver convention
    return mm.open_device("/dev/ring", RingOps(mm), size or 1 << 20)
