"""The VMA algebra of mm/vma.c: merging, splitting, modifying a range, and unmapping.

Models mm/vma.c and mm/vma.h of Linux 6.18 as functions over an :class:`~vmalab.mm_types.MmStruct`:

* one merge struct, :class:`VmaMerge` (``struct vma_merge_struct``), and one pair of predicates,
  :func:`can_vma_merge_left` / :func:`can_vma_merge_right`, used by new-range merges
  (:func:`vma_merge_new_range`), existing-range merges (:func:`vma_merge_existing_range`) and the
  invariant checker alike;
* :func:`split_vma`, :func:`vma_modify` (``vma_modify_flags()`` / ``vma_modify_name()``) and
  :func:`copy_vma`;
* the munmap machinery: :class:`VmaMunmap` (``struct vma_munmap_struct``) with gather / clean-up /
  complete / abort, and :func:`do_vmi_munmap`.

No syscall entry points live here: mm/mmap.c (:mod:`vmalab.mmap`), mm/mprotect.c (:mod:`vmalab.mprotect`)
and the others call in.
"""

from __future__ import annotations

import errno
import functools

from . import constants as C
from .constants import PAGE_SHIFT, VM_ACCOUNT, VM_LOCKED, VM_SPECIAL
from .explain import trace_merge_attempt
from .files import File, fput
from .mm_types import VMA, AnonVma, MmStruct
from .mmu_notifier import invalidate_range, vma_changed

__all__ = [
    "VMA", "AnonVma",  # their home is vmalab.mm_types; importable from here for this release
    "VmaMerge", "VmaMunmap", "can_vma_merge_left", "can_vma_merge_right", "copy_vma", "could_merge",
    "do_vmi_munmap", "is_mergeable_anon_vma", "merge_new_range", "release_vma", "split_vma",
    "vma_dup_references", "vma_merge_existing_range", "vma_merge_new_range", "vma_modify", "vma_set_start",
    "vms_abort_munmap_vmas", "vms_clean_up_area", "vms_complete_munmap_vmas", "vms_gather_munmap_vmas",
]


# ---------------------------------------------------------------------------------------------------
# merge rules
class VmaMerge:
    """Models ``struct vma_merge_struct``: the proposed range ``[start, end)`` with its flags, file,
    pgoff, anon_vma and name, and the VMAs around it.

    ``middle`` is the VMA being changed (None for a new range).  ``src`` is the VMA whose anon_vma chain
    the compatibility check looks at (``vmg->middle`` in the kernel, or the VMA copy_vma()/mremap copies
    from); ``op`` labels trace lines."""

    __slots__ = ("prev", "middle", "next", "start", "end", "pgoff", "vm_flags", "file", "anon_vma",
                 "anon_name", "src", "op")

    def __init__(self, start: int, end: int, vm_flags: int, file: File | None, pgoff: int, *,
                 prev: VMA | None = None, middle: VMA | None = None, next: VMA | None = None,
                 anon_vma: AnonVma | None = None, anon_name: str | None = None, src: VMA | None = None,
                 op: str = "mmap") -> None:
        self.prev = prev
        self.middle = middle
        self.next = next
        self.start = start
        self.end = end
        self.pgoff = pgoff
        self.vm_flags = vm_flags
        self.file = file
        self.anon_vma = anon_vma
        self.anon_name = anon_name
        self.src = src
        self.op = op

    @property
    def pglen(self) -> int:
        return (self.end - self.start) >> PAGE_SHIFT


def vma_had_uncowed_parents(v: VMA | None) -> bool:
    """Models mm/vma.c: vma_had_uncowed_parents(): an anon_vma inherited over fork (a chain longer
    than one)."""
    return v is not None and v.anon_vma is not None and v.avc_len != 1


def is_mergeable_anon_vma(tgt: VMA, src: VMA | None, src_anon: AnonVma | None) -> bool:
    """Models mm/vma.c: is_mergeable_anon_vma()."""
    tgt_anon = tgt.anon_vma
    if tgt_anon is None and src_anon is not None:
        return not vma_had_uncowed_parents(src)
    if tgt_anon is not None and src_anon is None:
        return not vma_had_uncowed_parents(tgt)
    return src_anon is tgt_anon


def is_mergeable_vma(tgt: VMA, vmg: VmaMerge) -> bool:
    """Models mm/vma.c: is_mergeable_vma(): flags (but the ones merges ignore), file and name agree."""
    return (not ((tgt.vm_flags ^ vmg.vm_flags) & ~C.VM_IGNORE_MERGE) and tgt.vm_file is vmg.file
            and tgt.anon_name == vmg.anon_name)


def can_vma_merge_left(vmg: VmaMerge) -> bool:
    """Models mm/vma.c: can_vma_merge_left() (can_vma_merge_after()): ``vmg.prev`` ends at the range,
    is compatible and its pgoff continues into it."""
    prev = vmg.prev
    return (prev is not None and prev.vm_end == vmg.start and is_mergeable_vma(prev, vmg)
            and is_mergeable_anon_vma(prev, vmg.src, vmg.anon_vma) and prev.vm_pgoff + prev.pages == vmg.pgoff)


def can_vma_merge_right(vmg: VmaMerge) -> bool:
    """Models mm/vma.c: can_vma_merge_right() (can_vma_merge_before()): ``vmg.next`` starts at the end
    of the range, is compatible and its pgoff continues the range's."""
    nxt = vmg.next
    return (nxt is not None and nxt.vm_start == vmg.end and is_mergeable_vma(nxt, vmg)
            and is_mergeable_anon_vma(nxt, vmg.src, vmg.anon_vma) and nxt.vm_pgoff == vmg.pgoff + vmg.pglen)


def can_merge_remove_vma(v: VMA) -> bool:
    """Models mm/vma.c: can_merge_remove_vma(): a VMA with vm_ops->close cannot be removed by a merge."""
    return v.vm_ops is None or not v.vm_ops.has_close


def _anon_vmas_compatible(prev: VMA, nxt: VMA) -> bool:
    """Merging both sides needs prev's and next's anon_vmas to agree (is_mergeable_anon_vma() of the
    pair, as vma_merge_new_range() / vma_merge_existing_range() check it)."""
    return prev.anon_vma is None or nxt.anon_vma is None or prev.anon_vma is nxt.anon_vma


def could_merge(a: VMA, b: VMA) -> bool:
    """Would Linux merge ``b`` into the adjacent ``a`` below it?  (The merge predicate of
    vma_merge_existing_range() applied to two existing VMAs; validate_mm() notes such pairs.)"""
    if (a.vm_flags | b.vm_flags) & VM_SPECIAL:
        return False
    return can_vma_merge_left(VmaMerge(b.vm_start, b.vm_end, b.vm_flags, b.vm_file, b.vm_pgoff, prev=a,
                                       anon_vma=b.anon_vma, anon_name=b.anon_name, src=b))


def vma_set_start(mm: MmStruct, v: VMA, start: int, pgoff: int) -> None:
    """Move the start (and pgoff) of a VMA in the tree (vma_set_range() on a linked VMA)."""
    v.vm_pgoff = pgoff
    mm.tree.set_start(v, start)


def vma_merge_new_range(mm: MmStruct, vmg: VmaMerge) -> VMA | None:
    """Models mm/vma.c: vma_merge_new_range(): extend ``vmg.prev`` and/or ``vmg.next`` over the new range
    ``[vmg.start, vmg.end)``; returns the VMA that now covers it, or None."""
    prev, nxt = vmg.prev, vmg.next
    if mm.probe.tracing:
        trace_merge_attempt(mm, vmg, False)  # why each side merges or not (vmalab.explain)
    if vmg.vm_flags & VM_SPECIAL or (prev is None and nxt is None):
        return None
    left = can_vma_merge_left(vmg)
    right = can_vma_merge_right(vmg)
    if right and left:
        assert prev is not None and nxt is not None
        right = _anon_vmas_compatible(prev, nxt)
    op = vmg.op
    if (left or right) and op == "mmap" and mm.probe.inject("vma_merge"):
        return None  # vma_expand() could not preallocate: __mmap_region() allocates a new VMA instead
    anon_vma = vmg.anon_vma
    if left:
        assert prev is not None
        sticky = vmg.vm_flags & C.VM_STICKY
        mm.locks.vma_start_write(prev)  # vma_expand(): the target, and a next it removes
        if right and nxt is not None and can_merge_remove_vma(nxt):
            mm.locks.vma_start_write(nxt)
            mm.tree.set_end(prev, nxt.vm_end)
            sticky |= nxt.vm_flags & C.VM_STICKY
            if prev.anon_vma is None and nxt.anon_vma is not None:
                prev.anon_vma, prev.avc_len = nxt.anon_vma, nxt.avc_len
            mm.tree.erase(nxt)
            if mm.probe.tracing:
                mm.probe.trace(op, "merged with prev and next", start=prev.vm_start, end=prev.vm_end)
        else:
            mm.tree.set_end(prev, vmg.end)
            if mm.probe.tracing:
                mm.probe.trace(op, "merged with prev", start=prev.vm_start, end=prev.vm_end)
        prev.vm_flags |= sticky
        if prev.anon_vma is None and anon_vma is not None:
            prev.anon_vma, prev.avc_len = anon_vma, 1
        return prev
    if right:
        assert nxt is not None
        mm.locks.vma_start_write(nxt)  # vma_expand()
        vma_set_start(mm, nxt, vmg.start, vmg.pgoff)
        nxt.vm_flags |= vmg.vm_flags & C.VM_STICKY
        if nxt.anon_vma is None and anon_vma is not None:
            nxt.anon_vma, nxt.avc_len = anon_vma, 1
        if mm.probe.tracing:
            mm.probe.trace(op, "merged with next", start=nxt.vm_start, end=nxt.vm_end)
        return nxt
    return None


def merge_new_range(mm: MmStruct, start: int, end: int, flags: int, file: File | None, pgoff: int,
                    prev: VMA | None, nxt: VMA | None, anon_name: str | None = None,
                    anon_vma: AnonVma | None = None, src: VMA | None = None, op: str = "mmap") -> VMA | None:
    """:func:`vma_merge_new_range` with the merge struct built from its fields (VMG_STATE())."""
    return vma_merge_new_range(mm, VmaMerge(start, end, flags, file, pgoff, prev=prev, next=nxt,
                                            anon_vma=anon_vma, anon_name=anon_name, src=src, op=op))


def vma_merge_existing_range(mm: MmStruct, vmg: VmaMerge) -> VMA | None:
    """Models mm/vma.c: vma_merge_existing_range(): ``[vmg.start, vmg.end)`` of ``vmg.middle`` is to get
    new flags (or a new name): merge that part into ``vmg.prev`` and/or ``vmg.next`` where Linux would.
    Returns the VMA now covering the range, or None (the caller splits instead)."""
    mid = vmg.middle
    assert mid is not None
    if mm.probe.tracing:
        trace_merge_attempt(mm, vmg, True)  # why each side merges or not (vmalab.explain)
    if vmg.vm_flags & VM_SPECIAL:
        return None
    nxt = vmg.next = mm.tree.next(mid)
    prev = vmg.prev
    start, end = vmg.start, vmg.end
    left_side = start == mid.vm_start
    right_side = end == mid.vm_end
    merge_left = left_side and can_vma_merge_left(vmg)
    merge_right = right_side and can_vma_merge_right(vmg)
    if not merge_left and not merge_right:
        return None
    delete_mid = left_side and right_side
    if delete_mid and not can_merge_remove_vma(mid):
        return None
    if merge_left and merge_right:
        assert prev is not None and nxt is not None
        if not _anon_vmas_compatible(prev, nxt) or not can_merge_remove_vma(nxt):
            merge_right = False
    op = vmg.op
    # "No matter what happens, we will be adjusting vma": the middle and each VMA merged with it
    mm.locks.vma_start_write(mid)
    for v in (prev if merge_left else None, nxt if merge_right else None):
        if v is not None:
            mm.locks.vma_start_write(v)
    sticky = mid.vm_flags & C.VM_STICKY
    if merge_left:
        assert prev is not None
        if prev.anon_vma is None and mid.anon_vma is not None:
            prev.anon_vma, prev.avc_len = mid.anon_vma, mid.avc_len
        if merge_right:
            assert nxt is not None
            if prev.anon_vma is None and nxt.anon_vma is not None:
                prev.anon_vma, prev.avc_len = nxt.anon_vma, nxt.avc_len
            mm.tree.set_end(prev, nxt.vm_end)
            sticky |= nxt.vm_flags & C.VM_STICKY
            mm.tree.erase(mid)
            mm.tree.erase(nxt)
            if mm.probe.tracing:
                mm.probe.trace(op, "merged with prev and next", start=prev.vm_start, end=prev.vm_end)
        else:
            mm.tree.set_end(prev, end)
            if delete_mid:
                mm.tree.erase(mid)
            else:
                vma_set_start(mm, mid, end, mid.vm_pgoff + ((end - mid.vm_start) >> PAGE_SHIFT))
            if mm.probe.tracing:
                mm.probe.trace(op, "merged with prev", start=prev.vm_start, end=prev.vm_end)
        prev.vm_flags |= sticky
        return prev
    assert nxt is not None
    if nxt.anon_vma is None and mid.anon_vma is not None:
        nxt.anon_vma, nxt.avc_len = mid.anon_vma, mid.avc_len
    if delete_mid:
        mm.tree.erase(mid)
    else:
        mm.tree.set_end(mid, start)
    vma_set_start(mm, nxt, start, vmg.pgoff)
    nxt.vm_flags |= sticky
    if mm.probe.tracing:
        mm.probe.trace(op, "merged with next", start=nxt.vm_start, end=nxt.vm_end)
    return nxt


# ---------------------------------------------------------------------------------------------------
# splitting and modifying
def vma_dup_references(mm: MmStruct, new: VMA) -> None:
    """The references a VMA copied by vm_area_dup() takes once its range is set, as split_vma(),
    copy_vma() and dup_mmap() do: get_file() on its file and ``vm_ops->open()`` (through the probe)."""
    if new.vm_file is not None:
        new.vm_file.refcount += 1
    ops = new.vm_ops
    if ops is not None:
        mm.callback("open", functools.partial(ops.open, new), vma=new)


def split_vma(mm: MmStruct, vma: VMA, addr: int, new_below: bool, check_count: bool = True) -> int:
    """Models mm/vma.c: split_vma() (``check_count``) / __split_vma(): returns 0 or -errno.

    Afterwards ``vma`` is the part above ``addr`` when ``new_below``, else the part below."""
    if check_count and mm.map_count >= mm.max_map_count:
        return -errno.ENOMEM
    if vma.vm_ops is not None:
        e = vma.vm_ops.may_split(vma, addr)
        if e:
            return e
    e = mm.probe.inject("split_vma")  # vm_area_dup() / vma_iter_prealloc(): before ->open
    if e:
        return e
    new = vma.copy()
    if new_below:
        new.vm_end = addr
        vma_set_start(mm, vma, addr, vma.vm_pgoff + ((addr - vma.vm_start) >> PAGE_SHIFT))
    else:
        new.vm_start = addr
        new.vm_pgoff += (addr - vma.vm_start) >> PAGE_SHIFT
        mm.tree.set_end(vma, addr)
    vma_dup_references(mm, new)  # ->open(new) runs before either VMA is write-locked
    mm.locks.vma_start_write(vma)
    mm.locks.vma_start_write(new)
    mm.tree.insert(new)
    if mm.probe.tracing:
        mm.probe.trace("split", "split", addr=addr)
    return 0


def vma_modify(mm: MmStruct, vma: VMA, prev: VMA | None, start: int, end: int, new_flags: int,
               anon_name: str | None = None, op: str = "modify") -> VMA | int:
    """Models mm/vma.c: vma_modify() (vma_modify_flags(), vma_modify_name()): change [start, end) of
    ``vma``, merging with neighbours where Linux would, else splitting.  Returns the VMA now covering the
    range, or -errno (after a first split that already happened, as in the kernel).  ``anon_name`` None
    keeps the name, "" clears it."""
    name = vma.anon_name if anon_name is None else (anon_name or None)
    vmg = VmaMerge(start, end, new_flags, vma.vm_file, vma.vm_pgoff + ((start - vma.vm_start) >> PAGE_SHIFT),
                   prev=prev, middle=vma, anon_vma=vma.anon_vma, anon_name=name, src=vma, op=op)
    merged = vma_merge_existing_range(mm, vmg)
    if merged is not None:
        return merged
    if vma.vm_start < start:
        e = split_vma(mm, vma, start, True)
        if e:
            return e
    if vma.vm_end > end:
        e = split_vma(mm, vma, end, False)
        if e:
            return e
    mm.locks.vma_start_write(vma)  # the caller's vma_start_write() / vm_flags_reset() before the change
    vma.vm_flags = new_flags | (vma.vm_flags & C.VM_STICKY)
    vma.anon_name = name
    if mm.notifiers:
        vma_changed(mm, vma.vm_start, vma.vm_end)
    return vma


def copy_vma(mm: MmStruct, vma: VMA, addr: int, length: int, pgoff: int) -> VMA:
    """Models mm/vma.c: copy_vma(): a VMA like ``vma`` at [addr, addr + length), merged with the
    neighbours there when compatible.  An anonymous VMA that never had an anon_vma takes
    ``pgoff = addr >> PAGE_SHIFT``, so it can merge where it lands; otherwise the pgoff is kept."""
    if vma.is_anonymous() and vma.anon_vma is None:
        pgoff = addr >> PAGE_SHIFT
    end = addr + length
    got = merge_new_range(mm, addr, end, vma.vm_flags, vma.vm_file, pgoff, mm.tree.prev(addr), mm.tree.next(end),
                          anon_name=vma.anon_name, anon_vma=vma.anon_vma, op="mremap")
    if got is not None:
        return got
    new = vma.copy()  # vm_area_dup() + anon_vma_clone()
    new.vm_start, new.vm_end, new.vm_pgoff = addr, end, pgoff
    vma_dup_references(mm, new)
    mm.locks.vma_start_write(new)  # vma_link()
    mm.tree.insert(new)
    if mm.probe.tracing:
        mm.probe.trace("mremap", "new vma", start=addr, end=end)
    return new


# ---------------------------------------------------------------------------------------------------
# unmapping (vms_gather_munmap_vmas, vms_complete_munmap_vmas, vms_abort_munmap_vmas)
class VmaMunmap:
    """Models ``struct vma_munmap_struct``: the VMAs detached from ``[start, end)`` by
    vms_gather_munmap_vmas(), their neighbours and page counts."""

    __slots__ = ("start", "end", "detached", "prev", "next", "nr_pages", "nr_accounted", "cleared")

    def __init__(self, start: int, end: int) -> None:
        self.start = start
        self.end = end
        self.detached: list[VMA] = []
        self.prev: VMA | None = None
        self.next: VMA | None = None
        self.nr_pages = 0
        self.nr_accounted = 0
        self.cleared = False


def vms_gather_munmap_vmas(mm: MmStruct, vms: VmaMunmap, first: VMA) -> int:
    """Models mm/vma.c: vms_gather_munmap_vmas(): split at the edges and detach the VMAs of
    ``[vms.start, vms.end)``.  On failure the detached VMAs are put back (splits stay) and -errno is
    returned."""
    vma = first
    if vms.start > vma.vm_start:
        if vms.end < vma.vm_end and mm.map_count >= mm.max_map_count:
            return -errno.ENOMEM
        if vma.vm_flags & C.VM_SEALED:
            return -errno.EPERM
        e = split_vma(mm, vma, vms.start, True, check_count=False)
        if e:
            return e
    vms.prev = mm.tree.prev(vms.start)
    for v in mm.tree.range(vms.start, vms.end):
        if v.vm_flags & C.VM_SEALED:
            _reattach(mm, vms)
            return -errno.EPERM
        if v.vm_end > vms.end:
            e = split_vma(mm, v, vms.end, False, check_count=False)
            if e:
                _reattach(mm, vms)
                return e
        mm.locks.vma_start_write(v)  # before it is detached: ->close (vms_clean_up_area) sees it locked
        vms.detached.append(v)
        vms.nr_pages += v.pages
        if v.vm_flags & VM_ACCOUNT:
            vms.nr_accounted += v.pages
    e = mm.probe.inject("gather")  # the detach-tree store can fail: -ENOMEM, splits stay
    if e:
        _reattach(mm, vms)
        return e
    for v in vms.detached:
        mm.tree.erase(v)
    vms.next = mm.tree.next(vms.end)
    return 0


def _reattach(mm: MmStruct, vms: VmaMunmap) -> None:
    """reattach_vmas(): put gathered VMAs back (the failure exits of the gather)."""
    for v in vms.detached:
        if mm.tree.lookup(v.vm_start) is not v:
            mm.tree.insert(v)
    vms.detached = []
    vms.nr_pages = 0
    vms.nr_accounted = 0


def vms_clean_up_area(mm: MmStruct, vms: VmaMunmap) -> None:
    """Models mm/vma.c: vms_clean_up_area(): zap the PTEs of the detached VMAs and call their ->close.
    unmap_vmas() invalidates the whole range ``[vms.start, vms.end)`` for the MMU notifiers, holes
    included (MMU_NOTIFY_UNMAP)."""
    for v in vms.detached:  # unmap_vmas(): every PTE goes before any ->close runs
        mm.pt.zap(v.vm_start >> PAGE_SHIFT, v.vm_end >> PAGE_SHIFT)
    if mm.notifiers and vms.detached:
        invalidate_range(mm, vms.start, vms.end, "unmap")
    for v in vms.detached:
        if v.vm_ops is not None:
            mm.callback("close", functools.partial(v.vm_ops.close, v), vma=v)
    # free_pgtables(): the PTE table of each 2 MiB region that no remaining VMA touches goes too
    for v in vms.detached:
        lo, hi = v.vm_start // C.PMD_SIZE, (v.vm_end - 1) // C.PMD_SIZE
        tables = mm.pt.tables
        for t in range(lo, hi + 1):  # the VMA's own regions: O(its size), not O(tables)
            if t in tables and mm.tree.find_intersection(t * C.PMD_SIZE, (t + 1) * C.PMD_SIZE) is None:
                tables.discard(t)
    vms.cleared = True


def vms_complete_munmap_vmas(mm: MmStruct, vms: VmaMunmap) -> None:
    """Models mm/vma.c: vms_complete_munmap_vmas(): the point of no return of an unmap."""
    if not vms.cleared:
        vms_clean_up_area(mm, vms)
    mm.update_hiwater_vm()  # before total_vm is lowered
    for v in vms.detached:
        release_vma(mm, v)


def release_vma(mm: MmStruct, v: VMA) -> None:
    """The accounting half of removing a VMA (vms_complete_munmap_vmas()'s stats and remove_vma()):
    total_vm and friends, locked_vm, the commit charge and the file reference."""
    mm.vm_stat_account(v.vm_flags, -v.pages)
    if v.vm_flags & VM_LOCKED:
        mm.locked_vm -= v.pages
    if v.vm_flags & VM_ACCOUNT:
        mm.vm_unacct_memory(v.pages)
    if v.vm_file is not None:
        fput(mm, v.vm_file)


def vms_abort_munmap_vmas(mm: MmStruct, vms: VmaMunmap) -> None:
    """Models mm/vma.c: vms_abort_munmap_vmas(): reattach if nothing was torn down yet, else leave a
    hole."""
    if not vms.detached:
        return
    if not vms.cleared:
        for v in vms.detached:
            mm.tree.insert(v)
        vms.detached = []
        return
    mm.probe.trace("mmap", "MAP_FIXED failed after the old mappings were torn down: hole left",
                   start=vms.start, end=vms.end)
    vms_complete_munmap_vmas(mm, vms)


def do_vmi_munmap(mm: MmStruct, start: int, end: int) -> int:
    """Models mm/vma.c: do_vmi_align_munmap() for a page-aligned range: gather, then complete."""
    first = mm.tree.find_intersection(start, end)
    if first is None:
        return 0
    vms = VmaMunmap(start, end)
    e = vms_gather_munmap_vmas(mm, vms, first)
    if e:
        return e
    vms_complete_munmap_vmas(mm, vms)
    if mm.probe.tracing:
        mm.probe.trace("munmap", "unmapped", start=start, end=end)
    return 0
