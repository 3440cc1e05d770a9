"""FIXED: the rmap walk of ``rmap_order.py`` runs after the device mutex is dropped.

``vm_ops->mapped`` still takes the mutex under ``i_mmap_rwsem`` (the core holds it while the VMA is hidden from
rmap); ``mmap_prepare`` now takes the mutex only for its own state and does the rmap walk
(``unmap_mapping_range()``) without it, so the order is always i_mmap_rwsem -> dev mutex.
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
        with_lock(self.lock, lambda: None)  # the device state the mutex protects
        self.invalidate(ino)  # then the rmap walk, with no driver lock held: no dev mutex -> i_mmap_rwsem
        desc.vm_ops = self.vm_ops
        desc.action.hide_from_rmap_until_complete = True
        return 0


def open(mm: MM, size: int) -> int:  # noqa: A001 - the explorer's driver convention
    return mm.open_device("/dev/rmapdev", RmapOrderOps(mm), size or 1 << 20)
