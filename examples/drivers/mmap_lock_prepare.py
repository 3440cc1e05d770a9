"""WRONG (on purpose): ``mmap_prepare`` takes the mmap lock, which the core already holds (self-deadlock).

The device wants to look at the caller's other mappings and takes ``mmap_read_lock(desc->mm)`` — but every
``mmap_prepare`` runs under ``mmap_write_lock()``, taken by the core in vm_mmap_pgoff(), and the rwsem is not
recursive: the task waits for itself.  vmalab models the driver side of that lock with
:func:`vmalab.locking.driver_take_mmap_lock`; ``vmalab explore`` reports a ``self-deadlock``.  The fix,
``mmap_lock_prepare_fixed.py``, relies on the lock the core holds (``mmap_assert_write_locked()``).
"""

from __future__ import annotations

from vmalab.driver import VmAreaDesc
from vmalab.files import FileOperations
from vmalab.locking import driver_take_mmap_lock


class MmapLockOps(FileOperations):
    has_mmap_prepare = True
    fault_style = "filemap"

    def mmap_prepare(self, desc: VmAreaDesc) -> int:
        with driver_take_mmap_lock(desc.mm):  # BUG: mmap_read_lock() under the core's mmap_write_lock()
            neighbours = len(desc.mm.tree.range(desc.start - 4096, desc.end + 4096))
        self.seen = neighbours
        return 0
