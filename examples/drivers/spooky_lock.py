"""WRONG (on purpose): a lock taken in ``mmap_prepare`` and released only when the mapping is complete.

The pattern the seed reviewer called "spooky" ("grab locks in mmap_prepare, and hold them across core
mmap()"), written the way it looks reasonable: a hugetlbfs-like device (it hides the new VMA from rmap
walkers until it is populated, ``hide_from_rmap_until_complete``, and remaps its memory with an action)
serialises mappings with a mutex, takes it in ``mmap_prepare`` and drops it in the completion hook the
kernel offers — ``success_hook`` (6.19-7.1, seed-v3) or, in the experimental ``finish`` profile, the single
``finish(err)`` hook (the reviewer's ``random_driver_finish()``).  ~7.2 has no hook to release it in and
6.18 no actions: the driver cannot be written there (ProfileFeatureError).

What goes wrong: nothing releases the mutex when anything fails between ``mmap_prepare`` and the hook
(VMA allocation, tree preallocation, the action itself, an unmap before the hook), so the next mmap()
deadlocks; ``vmalab explore examples/drivers/spooky_lock.py --all-profiles`` shows each path.  The fix is
``spooky_lock_fixed.py``: release the mutex before returning.
"""

from __future__ import annotations

from vmalab.driver import ProfileFeatureError, VmAreaDesc, mmap_action_remap_full
from vmalab.files import FileOperations, VmOperations
from vmalab.locking import Mutex
from vmalab.mm_types import VMA

SPOOKY_PFN = 0x140000


class SpookyVmOps(VmOperations):
    """No close: the device's pages are remapped, nothing per VMA."""


class SpookyLockOps(FileOperations):
    has_mmap_prepare = True

    def __init__(self) -> None:
        self.lock = Mutex("spooky")
        self.vm_ops = SpookyVmOps()
        self.mappings = 0

    def mmap_prepare(self, desc: VmAreaDesc) -> int:
        prof = desc.profile
        if not (prof.has_hooks or prof.has_finish_hook):
            raise ProfileFeatureError(f"kernel {prof.name}: no completion hook to release the lock in")
        self.lock.lock()  # BUG: held across the core's mmap; only the hook below releases it
        desc.vm_ops = self.vm_ops
        mmap_action_remap_full(desc, SPOOKY_PFN)
        if prof.has_rmap_hide:
            desc.action.hide_from_rmap_until_complete = True
        if prof.has_hooks:
            desc.action.success_hook = self.success
        else:
            desc.action.finish = self.finish
        return 0

    def success(self, vma: VMA) -> int:  # noqa: ARG002
        self.mappings += 1
        self.lock.unlock()
        return 0

    def finish(self, err: int) -> int:
        """The reviewer's example: ``if (err) pr_err(...); mutex_unlock(&big_lock); return err;``."""
        if not err:
            self.mappings += 1
        self.lock.unlock()
        return err
