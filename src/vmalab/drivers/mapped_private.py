"""Per-VMA private data kept through ``vm_ops->mapped`` (7.1+), as drivers/staging/vme_user/vme_user.c
does after its conversion: vme_user_mmap_prepare() works under the image mutex but **releases it before
returning**, maps the window with ``mmap_action_simple_ioremap()``, and vme_user_vm_mapped() allocates the
per-VMA structure and counts the user; ``vm_ops->open`` (split, fork) takes another reference and
``vm_ops->close`` drops one, freeing the structure with the last.

``mapped`` runs only for a newly established VMA (never on a merge — and this one cannot merge: the
action makes it VM_SPECIAL).  When ``mapped`` (or anything after it) fails, the new VMA is unmapped and
``close`` runs on a VMA whose private data was never set: close tolerates that.  The device counts every
call (``mapped_calls``, ``close_calls``, ``allocs``, ``frees``, ``users``) so tests can check the
contract.  ``dev:mapped_private[:SIZE]`` (window default 64K at 0xa0000000).
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from ..driver import PrivateRef, mmap_action_simple_ioremap
from ..fdtable import open_device
from ..files import File, FileOperations, VmOperations
from ..locking import Mutex
from . import register

if TYPE_CHECKING:
    from ..driver import VmAreaDesc
    from ..mm_types import VMA, MmStruct

VME_WINDOW = 0xA0000000


class VmePriv:
    """struct vme_user_vma_priv: a reference count on the image."""

    def __init__(self) -> None:
        self.refcnt = 1


class VmeUserVmOps(VmOperations):
    """vme_user_vm_ops: open, close and mapped."""

    has_close = True

    def __init__(self, dev: MappedPrivateOps) -> None:
        self.dev = dev

    def mapped(self, start: int, end: int, pgoff: int, file: File | None, priv: PrivateRef) -> int:  # noqa: ARG002
        """vme_user_vm_mapped(): allocate the per-VMA structure, count the user."""
        d = self.dev
        d.mapped_calls += 1
        vp = VmePriv()
        d.allocs += 1
        d.users += 1
        priv.value = vp
        return 0

    def open(self, vma: VMA) -> None:
        vp = vma.vm_private_data
        if isinstance(vp, VmePriv):
            vp.refcnt += 1

    def close(self, vma: VMA) -> None:
        d = self.dev
        d.close_calls += 1
        vp = vma.vm_private_data
        if not isinstance(vp, VmePriv):
            return  # mapped() never ran or failed: nothing was allocated
        vp.refcnt -= 1
        if vp.refcnt == 0:
            d.frees += 1
            d.users -= 1


class MappedPrivateOps(FileOperations):
    """The device; its counters live here (and so in the MM that opened it)."""

    has_mmap_prepare = True

    def __init__(self, phys: int = VME_WINDOW, size: int = 64 << 10) -> None:
        self.phys = phys
        self.size = size
        self.mutex = Mutex("vme_user image")
        self.vm_ops = VmeUserVmOps(self)
        self.mapped_calls = 0
        self.close_calls = 0
        self.allocs = 0
        self.frees = 0
        self.users = 0

    def mmap_prepare(self, desc: VmAreaDesc) -> int:
        """vme_user_mmap_prepare(): the mutex is released before returning, on every path."""
        self.mutex.lock()
        try:
            if desc.size() > self.size:
                return -errno.EINVAL
            desc.vm_ops = self.vm_ops
            mmap_action_simple_ioremap(desc, self.phys, self.size)
            return 0
        finally:
            self.mutex.unlock()


@register("mapped_private")
def open_mapped_private(mm: MmStruct, size: int) -> int:
    return open_device(mm, "/dev/bus/vme/m0", MappedPrivateOps(VME_WINDOW, size or 64 << 10))
