"""The stacked-filesystem compatibility layer: ``vfs_mmap()`` and ``compat_vma_mmap()``.

Models include/linux/fs.h: vfs_mmap() and mm/util.c: compat_vma_mmap() (6.19+; named
compat_vma_mmap_prepare() / __compat_vma_mmap_prepare() up to 6.18, split into compat_set_desc_from_vma()
+ __compat_vma_mmap() in 7.1).  A stacked driver whose own hook is a legacy ``->mmap(file, vma)`` calls
:func:`vfs_mmap` on the file below it; if that file only has ``mmap_prepare``, the descriptor is built
from the (detached, not write-locked) VMA, the inner hook runs, the descriptor is applied back and — from
6.19 — the action completes immediately, with ``is_compat`` semantics from 7.1.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from .driver import VmAreaDesc
from .files import vma_set_file
from .mmap import mmap_file

if TYPE_CHECKING:
    from .files import File
    from .mm_types import VMA, MmStruct


def vfs_mmap(mm: MmStruct, file: File, vma: VMA) -> int:
    """Models vfs_mmap(): compat_vma_mmap() for an mmap_prepare file, else the legacy ``->mmap``, whose
    result is returned as is (a ``vm_ops->mapped`` it installs is never called: 3d3544a6c996)."""
    if file.f_op.has_mmap_prepare and file.f_op.has_mmap:
        mm.probe.trace("mmap", "WARN: file has both mmap and mmap_prepare")
        return -errno.ENODEV
    if file.f_op.has_mmap_prepare:
        return compat_vma_mmap(mm, file, vma)
    if not file.f_op.has_mmap:
        return -errno.ENODEV
    return mmap_file(mm, file, vma, linked=False)


def compat_set_desc_from_vma(mm: MmStruct, file: File, vma: VMA) -> VmAreaDesc:
    """Models compat_set_desc_from_vma() (7.1; inline before): a zeroed descriptor describing the VMA,
    ``file`` being the inner file and ``vm_file`` the VMA's."""
    prof = mm.profile
    desc = VmAreaDesc(prof, mm, file, vma.vm_start, vma.vm_end, vma.vm_pgoff, vma.vm_file, vma.vm_flags,
                      vma.page_prot, vma.vm_ops if prof.compat_desc_copies_vm_ops else prof.initial_desc_vm_ops())
    return desc


def compat_set_vma_from_desc(mm: MmStruct, vma: VMA, desc: VmAreaDesc) -> None:
    """Models compat_set_vma_from_desc() (set_vma_from_desc() before 7.1): only pgoff, vm_file
    (vma_set_file), flags, page_prot, vm_ops and private_data are written back, vm_ops unconditionally: up
    to 7.1 the desc starts with NULL vm_ops, so an inner hook that sets none leaves the VMA with NULL
    vm_ops; 7.2 starts the desc from the VMA's vm_ops."""
    vma.vm_pgoff = desc.pgoff
    if desc.vm_file is not None and desc.vm_file is not vma.vm_file:
        vma_set_file(vma, desc.vm_file)
    vma.vm_flags = desc.vm_flags
    vma.page_prot = desc.page_prot
    vma.vm_ops = desc.vm_ops
    vma.vm_private_data = desc.private_data


def __compat_vma_mmap(mm: MmStruct, desc: VmAreaDesc, vma: VMA) -> int:
    """Models __compat_vma_mmap(): action prepare, apply the descriptor, complete the action at once on
    the detached VMA (``is_compat``)."""
    prof = mm.profile
    if prof.has_actions:
        e = prof.action_prepare(mm, desc)
        if e:
            return e
    compat_set_vma_from_desc(mm, vma, desc)
    if prof.has_actions:
        return prof.action_complete(mm, vma, desc.action, is_compat=True)
    return 0


def compat_vma_mmap(mm: MmStruct, file: File, vma: VMA) -> int:
    """Models compat_vma_mmap() (``compat_vma_mmap_prepare()`` in 6.18): run ``file``'s mmap_prepare for a
    VMA that a stacked driver's legacy ``->mmap`` is setting up.  On failure the raw error is returned and
    nothing is unmapped (the core's ->mmap failure path cleans up); 6.19/7.0 instead tried to unmap the
    detached VMA (a kernel WARN), which the trace reports."""
    desc = compat_set_desc_from_vma(mm, file, vma)
    mm.probe.trace("mmap", f"{mm.profile.compat_names[0]}()", start=vma.vm_start, end=vma.vm_end)
    e = int(mm.callback("mmap_prepare", lambda: file.f_op.mmap_prepare(desc), desc=desc))
    if e:
        return e
    if mm.profile.has_actions:
        desc.action.hide_from_rmap_until_complete = False  # "being invoked from .mmap": no rmap hiding
    return __compat_vma_mmap(mm, desc, vma)
