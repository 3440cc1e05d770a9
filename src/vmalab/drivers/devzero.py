"""/dev/zero: drivers/char/mem.c mmap_zero() (legacy ``->mmap``, 6.18) and mmap_zero_prepare() (6.19+),
with mm/shmem.c shmem_zero_setup() / shmem_zero_setup_desc().

One module, three shapes, chosen by the MM's kernel profile when the device is opened:

* 6.18 (no actions): the legacy hook runs on the new VMA.  Shared: the VMA gets a new shmem file of its own
  (``/dev/zero (deleted)``), so shared /dev/zero never merges; private: ``vma_set_anonymous()``.
* 6.19–7.1 (and seed-v3): ``mmap_prepare``.  Shared: ``shmem_zero_setup_desc()`` swaps ``desc->vm_file``
  to a new shmem file (whose reference the VMA then owns) and sets the shmem anon vm_ops.  Private: the
  descriptor cannot express "anonymous" (a NULL vm_ops keeps the default ops), so a ``success_hook`` makes
  the new VMA anonymous once it exists.
* ~7.2: private uses ``vma_desc_set_anonymous()``; no hook.

The experimental ``finish`` profile has only ``finish(err)``, which gets no VMA: private /dev/zero cannot
be written for it (ProfileFeatureError).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..constants import VM_SHARED
from ..driver import ProfileFeatureError
from ..fdtable import install
from ..files import S_IFCHR, File, FileOperations, Inode, shmem_zero_setup, shmem_zero_setup_desc

if TYPE_CHECKING:
    from ..driver import VmAreaDesc
    from ..mm_types import VMA, MmStruct

from . import register


def _private_success(vma: VMA) -> int:
    """mmap_zero_private_success(): casts away const and calls vma_set_anonymous()."""
    vma.vm_ops = None
    return 0


class DevZeroOps(FileOperations):
    """Models /dev/zero's file_operations: ``prepare`` selects mmap_zero_prepare() (6.19+) over the
    legacy mmap_zero() (6.18)."""

    get_unmapped_area = "zero"

    def __init__(self, prepare: bool = False) -> None:
        self.has_mmap = not prepare
        self.has_mmap_prepare = prepare

    def mmap(self, file: File, vma: VMA) -> int:
        """Models mmap_zero() (6.18)."""
        if vma.vm_flags & VM_SHARED:
            # shmem_zero_setup(): the VMA gets a new shmem file of its own (its reference is the VMA's);
            # the /dev/zero reference the VMA held is dropped.
            assert file.owner is not None
            shmem_zero_setup(file.owner, vma)
            return 0
        vma.vm_ops = None  # vma_set_anonymous(): private /dev/zero is anonymous memory
        return 0

    def mmap_prepare(self, desc: VmAreaDesc) -> int:
        """Models mmap_zero_prepare() (6.19+)."""
        if desc.vm_flags & VM_SHARED:
            return shmem_zero_setup_desc(desc)
        prof = desc.profile
        if prof.null_vm_ops_makes_anonymous:
            desc.set_anonymous()
        elif prof.has_hooks:
            desc.action.success_hook = _private_success
        else:
            raise ProfileFeatureError(f"kernel {prof.name}: private /dev/zero needs the VMA after it is "
                                      "established (success_hook) or vma_desc_set_anonymous()")
        return 0


@register("devzero")
def open_devzero(mm: MmStruct, size: int) -> int:  # noqa: ARG001
    """open("/dev/zero") with the hook of the MM's kernel profile."""
    inode = Inode(5, (0, 5), mode=S_IFCHR)
    return install(mm, File(inode, DevZeroOps(prepare=mm.profile.has_actions), "/dev/zero", owner=mm))
