"""The driver contract: ``struct vm_area_desc``, ``struct mmap_action`` and the action machinery.

Models include/linux/mm_types.h (vm_area_desc, mmap_action, mmap_action_type), the action helpers of
include/linux/mm.h (mmap_action_remap(), _remap_full(), _ioremap(), _ioremap_full(), _simple_ioremap(),
_map_kernel_pages(), _map_kernel_pages_full()) and mm/util.c + mm/memory.c (mmap_action_prepare(),
remap_pfn_range_prepare(), simple_ioremap_prepare(), map_kernel_pages_prepare(), mmap_action_complete()).
What differs between kernel releases is not decided here but by the MM's profile
(:mod:`vmalab.profiles`): which fields and action types exist, whether prepare validates, and how an
action finishes (hooks, ``vm_ops->mapped``, ``error_override``, unmap order).
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from . import constants as C
from .constants import PAGE_SHIFT, PAGE_SIZE
from .files import ProfileFeatureError
from .pagetable import PFN, Page, PfnPage

if TYPE_CHECKING:
    from .files import File, VmOperations
    from .mm_types import VMA, MmStruct
    from .profiles import KernelProfile

VM_REMAP_FLAGS = C.VM_IO | C.VM_PFNMAP | C.VM_DONTEXPAND | C.VM_DONTDUMP
MAX_ERRNO = 4095


class MmapActionType(Enum):
    """Models ``enum mmap_action_type``."""

    NOTHING = "NOTHING"
    REMAP_PFN = "REMAP_PFN"
    IO_REMAP_PFN = "IO_REMAP_PFN"
    SIMPLE_IO_REMAP = "SIMPLE_IO_REMAP"
    MAP_KERNEL_PAGES = "MAP_KERNEL_PAGES"


@dataclass
class MmapAction:
    """Models ``struct mmap_action``: what the core does once the VMA is established.

    The union members are flattened: ``start``/``start_pfn``/``size``/``pgprot`` (remap),
    ``start_phys_addr``/``size`` (simple_ioremap), ``start``/``pages``/``nr_pages``/``pgoff``
    (map_kernel).  ``is_io_remap`` exists only in the seed (v3) design; ``success_hook``/``error_hook`` in
    6.19–7.1 (and seed-v3); ``error_override`` from ~7.2; ``finish`` only in the experimental
    ``finish`` profile (the reviewer's single hook).
    """

    type: MmapActionType = MmapActionType.NOTHING
    start: int = 0
    start_pfn: int = 0
    size: int = 0
    pgprot: int = 0
    is_io_remap: bool = False
    start_phys_addr: int = 0
    pages: list[Page] | None = None
    nr_pages: int = 0
    pgoff: int = 0
    success_hook: Callable[[VMA], int] | None = None
    error_hook: Callable[[int], int] | None = None
    error_override: int = 0
    finish: Callable[[int], int] | None = None
    hide_from_rmap_until_complete: bool = False


class PrivateRef:
    """The ``void **vm_private_data`` that ``vm_ops->mapped`` receives: read and replace ``value``."""

    def __init__(self, value: Any) -> None:
        self.value = value


class VmAreaDesc:
    """Models ``struct vm_area_desc`` for the MM's kernel profile.

    Input-only: ``mm``, ``file``, ``start``, ``end`` (changing them has no effect: the core never reads them
    back).  Mutable: ``pgoff``, ``vm_file``, ``vm_flags`` (also reachable as ``vma_flags`` from 6.19),
    ``page_prot``.  Write-only: ``vm_ops``, ``private_data``.  ``action`` exists from 6.19 (seed-v3 too);
    touching it under a profile without actions raises :class:`ProfileFeatureError`.
    """

    def __init__(self, profile: KernelProfile, mm: MmStruct, file: File, start: int, end: int, pgoff: int,
                 vm_file: File | None, vm_flags: int, page_prot: int = 0,
                 vm_ops: VmOperations | None = None) -> None:
        self.profile = profile
        self.mm = mm
        self.file = file
        self.start = start
        self.end = end
        self.pgoff = pgoff
        self.vm_file = vm_file
        self.vm_flags = vm_flags
        self.page_prot = page_prot
        self.vm_ops = vm_ops
        self.private_data: Any = None
        self._action = MmapAction() if profile.has_actions else None

    @property
    def action(self) -> MmapAction:
        if self._action is None:
            raise ProfileFeatureError(f"kernel {self.profile.name} has no mmap_action in vm_area_desc")
        return self._action

    @property
    def action_if_any(self) -> MmapAction | None:
        """The action, or None under a profile without actions (for tools: never raises)."""
        return self._action

    @property
    def vma_flags(self) -> int:
        if not self.profile.has_vma_flags:
            raise ProfileFeatureError(f"kernel {self.profile.name} has no desc->vma_flags")
        return self.vm_flags

    @vma_flags.setter
    def vma_flags(self, value: int) -> None:
        if not self.profile.has_vma_flags:
            raise ProfileFeatureError(f"kernel {self.profile.name} has no desc->vma_flags")
        self.vm_flags = value

    # include/linux/mm.h helpers
    def size(self) -> int:
        """vma_desc_size()."""
        return self.end - self.start

    def pages(self) -> int:
        """vma_desc_pages()."""
        return (self.end - self.start) >> PAGE_SHIFT

    def is_cow_mapping(self) -> bool:
        """vma_desc_is_cow_mapping(): private and may-write."""
        return (self.vm_flags & (C.VM_SHARED | C.VM_MAYWRITE)) == C.VM_MAYWRITE

    def set_flags(self, flags: int) -> None:
        """vma_desc_set_flags()."""
        self.vm_flags |= flags

    def clear_flags(self, flags: int) -> None:
        """vma_desc_clear_flags()."""
        self.vm_flags &= ~flags

    def test_any(self, flags: int) -> bool:
        """vma_desc_test_any()."""
        return bool(self.vm_flags & flags)

    def set_anonymous(self) -> None:
        """vma_desc_set_anonymous() (~7.2): the VMA becomes anonymous memory (vm_ops NULL)."""
        if not self.profile.null_vm_ops_makes_anonymous:
            raise ProfileFeatureError(f"kernel {self.profile.name} has no vma_desc_set_anonymous()")
        self.vm_ops = None


# -------------------------------------------------------------------------------------------------------
# action helpers (called by drivers inside mmap_prepare)
def _need(desc: VmAreaDesc, t: MmapActionType) -> MmapAction:
    action = desc.action
    if t not in desc.profile.action_types:
        raise ProfileFeatureError(f"kernel {desc.profile.name} has no MMAP_{t.value} action")
    return action


def mmap_action_remap(desc: VmAreaDesc, start: int, start_pfn: int, size: int) -> None:
    """mmap_action_remap(): remap ``size`` bytes at ``start`` to ``start_pfn``; page_prot captured now."""
    a = _need(desc, MmapActionType.REMAP_PFN)
    a.type = MmapActionType.REMAP_PFN
    a.start, a.start_pfn, a.size, a.pgprot = start, start_pfn, size, desc.page_prot


def mmap_action_remap_full(desc: VmAreaDesc, start_pfn: int) -> None:
    """mmap_action_remap_full(): remap the whole VMA."""
    mmap_action_remap(desc, desc.start, start_pfn, desc.size())


def mmap_action_ioremap(desc: VmAreaDesc, start: int, start_pfn: int, size: int) -> None:
    """mmap_action_ioremap(): an I/O remap (seed-v3: ``remap.is_io_remap``)."""
    if desc.profile.ioremap_is_flag:
        mmap_action_remap(desc, start, start_pfn, size)
        desc.action.is_io_remap = True
        return
    _need(desc, MmapActionType.IO_REMAP_PFN)
    mmap_action_remap(desc, start, start_pfn, size)
    desc.action.type = MmapActionType.IO_REMAP_PFN


def mmap_action_ioremap_full(desc: VmAreaDesc, start_pfn: int) -> None:
    mmap_action_ioremap(desc, desc.start, start_pfn, desc.size())


def mmap_action_simple_ioremap(desc: VmAreaDesc, start_phys_addr: int, size: int) -> None:
    """mmap_action_simple_ioremap() (7.1): the vm_iomap_memory() equivalent."""
    a = _need(desc, MmapActionType.SIMPLE_IO_REMAP)
    a.type = MmapActionType.SIMPLE_IO_REMAP
    a.start_phys_addr, a.size = start_phys_addr, size


def mmap_action_map_kernel_pages(desc: VmAreaDesc, start: int, pages: list[Page], nr_pages: int) -> None:
    """mmap_action_map_kernel_pages() (7.1)."""
    a = _need(desc, MmapActionType.MAP_KERNEL_PAGES)
    a.type = MmapActionType.MAP_KERNEL_PAGES
    a.start, a.pages, a.nr_pages, a.pgoff = start, pages, nr_pages, desc.pgoff


def mmap_action_map_kernel_pages_full(desc: VmAreaDesc, pages: list[Page]) -> None:
    mmap_action_map_kernel_pages(desc, desc.start, pages, desc.pages())


# -------------------------------------------------------------------------------------------------------
# prepare steps (the profile decides which run)
def range_in_desc(desc: VmAreaDesc, start: int, end: int) -> bool:
    """range_in_vma_desc()."""
    return desc.start <= start < end <= desc.end


def remap_pfn_range_prepare(desc: VmAreaDesc, checked: bool) -> int:
    """Models remap_pfn_range_prepare(): 7.1 (``checked``) refuses a range outside the VMA (-EFAULT) and
    a partial CoW remap (-EINVAL); both versions set pgoff = pfn for CoW and add VM_REMAP_FLAGS."""
    a = desc.action
    cow = desc.is_cow_mapping()
    if checked:
        if not range_in_desc(desc, a.start, a.start + a.size):
            return -errno.EFAULT
        if cow and (a.start != desc.start or a.start + a.size != desc.end):
            return -errno.EINVAL
    if cow:
        desc.pgoff = a.start_pfn
    desc.vm_flags |= VM_REMAP_FLAGS
    return 0


def simple_ioremap_prepare(desc: VmAreaDesc) -> int:
    """Models simple_ioremap_prepare() / __simple_ioremap_prep() (7.1): turn (phys, size) into a remap of
    the whole VMA from ``pfn + pgoff``.  The overflow checks are 64-bit wraps: ``start + len`` as a
    phys_addr_t and ``pfn + pages`` as an unsigned long (which cannot wrap on 64-bit)."""
    a = desc.action
    phys, size = a.start_phys_addr, a.size
    if phys + size >= 1 << 64:  # start + len < start
        return -errno.EINVAL
    size += phys & (PAGE_SIZE - 1)
    pfn = phys >> PAGE_SHIFT
    pages = ((size + PAGE_SIZE - 1) & C.ULONG_MASK) >> PAGE_SHIFT  # (len + ~PAGE_MASK) >> PAGE_SHIFT
    if pfn + pages >= 1 << 64:  # pfn + pages < pfn
        return -errno.EINVAL
    if desc.pgoff > pages:
        return -errno.EINVAL
    pfn += desc.pgoff
    pages -= desc.pgoff
    if desc.pages() > pages:
        return -errno.EINVAL
    a.type = MmapActionType.REMAP_PFN
    a.start, a.start_pfn, a.size, a.pgprot = desc.start, pfn, desc.size(), desc.page_prot
    return remap_pfn_range_prepare(desc, checked=True)


def map_kernel_pages_prepare(desc: VmAreaDesc) -> int:
    """Models map_kernel_pages_prepare() (7.1): VM_MIXEDMAP and a range check."""
    a = desc.action
    desc.vm_flags |= C.VM_MIXEDMAP
    if not range_in_desc(desc, a.start, a.start + a.nr_pages * PAGE_SIZE):
        return -errno.EFAULT
    return 0


# -------------------------------------------------------------------------------------------------------
# complete steps
def do_action(mm: MmStruct, vma: VMA, action: MmapAction) -> int:
    """Run an action's page-table work on an established VMA (remap_pfn_range_complete() /
    map_kernel_pages_complete()).  Returns 0 or -errno."""
    t = action.type
    if t is MmapActionType.NOTHING:
        return 0
    if t is MmapActionType.REMAP_PFN:
        start, end = action.start, action.start + action.size
        if start & (PAGE_SIZE - 1) or start < vma.vm_start or end > vma.vm_end or end <= start:
            return -errno.EINVAL  # remap_pfn_range_internal(): WARN and refuse
        cow = (vma.vm_flags & (C.VM_SHARED | C.VM_MAYWRITE)) == C.VM_MAYWRITE
        if cow and (start != vma.vm_start or end != vma.vm_end):
            return -errno.EINVAL
        e = mm.probe.inject("action_complete")
        if e:
            return e
        install_pfn_ptes(mm, start, action.start_pfn, (end - start) >> PAGE_SHIFT, action.pgprot)
        return 0
    if t is MmapActionType.MAP_KERNEL_PAGES:
        pages = action.pages or []
        if len(pages) < action.nr_pages:
            return -errno.EINVAL
        e = mm.probe.inject("action_complete")
        if e:
            return e
        for i in range(action.nr_pages):
            mm.pt.set((action.start >> PAGE_SHIFT) + i, pages[i])
        return 0
    # IO_REMAP_PFN / SIMPLE_IO_REMAP should have been rewritten to REMAP_PFN during prepare (7.1)
    return -errno.EINVAL


def install_pfn_ptes(mm: MmStruct, addr: int, pfn: int, npages: int, pgprot: int) -> None:
    """remap_pte_range(): special PTEs for ``npages`` raw PFNs from ``pfn`` at ``addr`` (no struct page:
    not in Rss)."""
    vpn = addr >> PAGE_SHIFT
    for i in range(npages):
        mm.pt.set(vpn + i, PfnPage(PFN, pfn=pfn + i, pgprot=pgprot))


def is_valid_error(err: int) -> bool:
    return -MAX_ERRNO <= err < 0


@dataclass
class ActionOutcome:
    """What happened when an action finished (for traces and the explorer)."""

    err: int = 0
    unmapped: bool = False
    events: list[str] = field(default_factory=list)


# -------------------------------------------------------------------------------------------------------
# the legacy API, for drivers that still implement f_op->mmap
def remap_pfn_range(mm: MmStruct, vma: VMA, addr: int, pfn: int, size: int, pgprot: int = 0) -> int:
    """Models mm/memory.c: remap_pfn_range() as a legacy ``->mmap`` calls it on the VMA it was given:
    marks the VMA VM_IO | VM_PFNMAP | VM_DONTEXPAND | VM_DONTDUMP, rewrites pgoff for a CoW mapping (which
    must be remapped whole) and installs the PFN PTEs.  Returns 0 or -errno."""
    end = addr + size
    if addr & (PAGE_SIZE - 1) or size & (PAGE_SIZE - 1) or addr < vma.vm_start or end > vma.vm_end or end <= addr:
        return -errno.EINVAL
    if (vma.vm_flags & (C.VM_SHARED | C.VM_MAYWRITE)) == C.VM_MAYWRITE:
        if addr != vma.vm_start or end != vma.vm_end:
            return -errno.EINVAL
        vma.vm_pgoff = pfn
    vma.vm_flags |= VM_REMAP_FLAGS
    install_pfn_ptes(mm, addr, pfn, size >> PAGE_SHIFT, pgprot)
    return 0
