"""WRONG (on purpose): a lock-order inversion against the rmap lock (``i_mmap_rwsem``).

The device hides a new VMA from rmap walkers until it is set up (``hide_from_rmap_until_complete``, 7.1), so
the core calls ``vm_ops->mapped`` with the file's ``i_mmap_rwsem`` held; ``mapped`` takes the device mutex to
record the mapping: i_mmap_rwsem -> dev mutex.  ``mmap_prepare`` invalidates the device's earlier mappings
(an rmap walk, ``unmap_mapping_range()``, which takes ``i_mmap_rwsem``) under the same mutex: dev mutex ->
i_mmap_rwsem.  Two tasks doing both deadlock (ABBA).  ``vmalab explore`` reports the cycle with the callback
that took each lock, and ``--replay`` of its reproducer reports it again.  The fix, ``rmap_order_fixed.py``:
the rmap walk runs after the mutex is dropped.  Needs ``vm_ops->mapped`` and the rmap hide (7.1).
"""

from __future__ import annotations

from vmalab.driver import PrivateRef, ProfileFeatureError, VmAreaDesc
from vmalab.files import File, FileOperations, VmOperations
from vmalab.locking import Mutex
from vmalab.mm import MM


class RmapVmOps(VmOperations):
    def __init__(self, dev: RmapOrderOps) -> None:
        self.dev = dev

    def mapped(self, start: int, end: int, pgoff: int, file: File | None, priv: PrivateRef) -> int:  # noqa: ARG002
        with_lock(self.dev.lock, lambda: None)  # called with i_mmap_rwsem held: i_mmap_rwsem -> dev mutex
        return 0


def with_lock(m: Mutex, fn: object) -> None:
    m.lock()
    try:
        if callable(fn):
            fn()
    finally:
        m.unlock()


class RmapOrderOps(FileOperations):
    has_mmap_prepare = True
    fault_style = "filemap"

    def __init__(self, mm: MM) -> None:
        self.mm = mm
        self.lock = Mutex("rmapdev")
        self.vm_ops = RmapVmOps(self)

    def invalidate(self, ino: int) -> None:
        """unmap_mapping_range() of the device's old mappings: an rmap walk under i_mmap_rwsem."""
        self.mm.locks.lock_i_mmap(ino)
        self.mm.locks.unlock_i_mmap(ino)

    def mmap_prepare(self, desc: VmAreaDesc) -> int:
        prof = desc.profile
        if not (prof.has_mapped and prof.has_rmap_hide):
            raise ProfileFeatureError(f"kernel {prof.name}: no vm_ops->mapped under the rmap lock")
        ino = desc.file.inode.ino
        with_lock(self.lock, lambda: self.invalidate(ino))  # BUG: dev mutex -> i_mmap_rwsem
        desc.vm_ops = self.vm_ops
        desc.action.hide_from_rmap_until_complete = True
        return 0


def open(mm: MM, size: int) -> int:  # noqa: A001 - the explorer's driver convention
    return mm.open_device("/dev/rmapdev", RmapOrderOps(mm), size or 1 << 20)
