"""FIXED: the lock of ``spooky_lock.py`` is released before ``mmap_prepare`` returns.

Everything the mutex protects (here: choosing the device memory and counting the request) is done inside
``mmap_prepare``; the descriptor carries the result, and the core does the rest without any driver lock
held — the vme_user pattern (drivers/staging/vme_user/vme_user.c after its conversion).  No completion
hook is needed, so the driver works unchanged on every profile with actions, ~7.2 included.
"""

from __future__ import annotations

from vmalab.driver import VmAreaDesc, mmap_action_remap_full
from vmalab.files import FileOperations, VmOperations
from vmalab.locking import Mutex

SPOOKY_PFN = 0x140000


class SpookyVmOps(VmOperations):
    """No close: the device's pages are remapped, nothing per VMA."""


class SpookyLockFixedOps(FileOperations):
    has_mmap_prepare = True

    def __init__(self) -> None:
        self.lock = Mutex("spooky")
        self.vm_ops = SpookyVmOps()
        self.requests = 0

    def mmap_prepare(self, desc: VmAreaDesc) -> int:
        self.lock.lock()
        try:
            self.requests += 1
            desc.vm_ops = self.vm_ops
            mmap_action_remap_full(desc, SPOOKY_PFN)
            if desc.profile.has_rmap_hide:
                desc.action.hide_from_rmap_until_complete = True
            return 0
        finally:
            self.lock.unlock()  # released on every path, before the core goes on
