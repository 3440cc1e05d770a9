"""FIXED: ``mmap_prepare`` of ``mmap_lock_prepare.py`` uses the mmap lock the core already holds.

Every ``mmap_prepare`` runs with ``mm->mmap_lock`` held for write (``mmap_assert_write_locked(desc->mm)``
would pass), so the driver reads the mm's mappings without taking it again.
"""

from __future__ import annotations

from vmalab.driver import VmAreaDesc
from vmalab.files import FileOperations


class MmapLockFixedOps(FileOperations):
    has_mmap_prepare = True
    fault_style = "filemap"

    def mmap_prepare(self, desc: VmAreaDesc) -> int:
        assert desc.mm.locks.mmap_lock == "write"  # mmap_assert_write_locked(): the core holds it
        self.seen = len(desc.mm.tree.range(desc.start - 4096, desc.end + 4096))
        return 0
