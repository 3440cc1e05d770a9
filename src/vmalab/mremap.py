"""mremap(2): shrink, expand in place, move (MREMAP_MAYMOVE, MREMAP_FIXED, MREMAP_DONTUNMAP).

Models mm/mremap.c as restructured for Linux 6.17/6.18 (a ``struct vma_remap_struct`` threaded through
check_mremap_params(), check_prep_vma(), mremap_at()/mremap_to(), move_vma() and, for a pure fixed move,
remap_move() over several VMAs), plus mm/vma.c: vma_merge_extend() (in :func:`_expand_vma_in_place`);
mm/vma.c: copy_vma() is :func:`vmalab.vma.copy_vma`.

What the model keeps from the kernel, and why it is observable:

* the errno order (EINVAL argument checks before any VMA is looked up, then EFAULT / EPERM / EINVAL /
  EAGAIN / ENOMEM from the VMA checks, then whatever the unmaps and the placement return);
* copy_vma()'s pgoff rule (an anonymous VMA that never had an anon_vma takes ``new_addr >> 12``), which
  decides merges at the destination, and that the page tables (Rss, data) move with the VMA;
* the VM_ACCOUNT trick of unmap_source_vma() (the moved range is not uncharged, the pieces left behind
  keep ``ac``), DONTUNMAP leaving the whole old VMA in place without its pages (and without ``lo``);
* the population of the grown part of an mlocked VMA, done after the mmap lock is dropped.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

from . import constants as C
from .constants import PAGE_SHIFT, PAGE_SIZE, TASK_SIZE, ULONG_MASK, VM_ACCOUNT, VM_LOCKED, page_align
from .files import vma_kernel_pagesize
from .gup import mm_populate
from .layout import get_unmapped_area
from .mm_types import VMA, MmStruct
from .mmu_notifier import invalidate_range, vma_changed
from .pagetable import ANON, FILE, LRU_UNEVICTABLE
from .vma import copy_vma, do_vmi_munmap, merge_new_range
from .vma_tree import VmaIterator

__all__ = ["VmaRemap", "sys_mremap"]

MREMAP_MAYMOVE = C.MREMAP_NAMES["MREMAP_MAYMOVE"]
MREMAP_FIXED = C.MREMAP_NAMES["MREMAP_FIXED"]
MREMAP_DONTUNMAP = C.MREMAP_NAMES["MREMAP_DONTUNMAP"]

# enum mremap_type
MREMAP_NO_RESIZE = "no_resize"
MREMAP_SHRINK = "shrink"
MREMAP_EXPAND = "expand"


@dataclass
class VmaRemap:
    """Models ``struct vma_remap_struct``: the state one mremap() call threads through its helpers."""

    addr: int
    old_len: int
    new_len: int
    flags: int
    new_addr: int
    vma: VMA | None = None
    delta: int = 0
    remap_type: str = MREMAP_NO_RESIZE
    charged: int = 0
    populate_expand: bool = False

    def implies_new_addr(self) -> bool:
        """vrm_implies_new_addr(): FIXED or DONTUNMAP always pick a target address."""
        return bool(self.flags & (MREMAP_FIXED | MREMAP_DONTUNMAP))

    def move_only(self) -> bool:
        """vrm_move_only(): a FIXED move without a size change (may span several VMAs)."""
        return bool(self.flags & MREMAP_FIXED) and self.old_len == self.new_len

    def overlaps(self) -> bool:
        """vrm_overlaps()."""
        return self.addr + self.old_len > self.new_addr and self.new_addr + self.new_len > self.addr

    def set_delta(self) -> None:
        """vrm_set_delta() and vrm_remap_type()."""
        self.delta = abs(self.old_len - self.new_len)
        if not self.delta:
            self.remap_type = MREMAP_NO_RESIZE
        elif self.old_len > self.new_len:
            self.remap_type = MREMAP_SHRINK
        else:
            self.remap_type = MREMAP_EXPAND


# ------------------------------------------------------------------------------------------------
# entry
def sys_mremap(mm: MmStruct, addr: int, old_len: int, new_len: int, flags: int, new_addr: int) -> int:
    """Models mm/mremap.c: SYSCALL_DEFINE5(mremap) -> do_mremap(): returns the new address or -errno.

    The arguments are taken as the unsigned longs the kernel sees."""
    vrm = VmaRemap(addr & ULONG_MASK, page_align(old_len & ULONG_MASK) & ULONG_MASK,
                   page_align(new_len & ULONG_MASK) & ULONG_MASK, flags & ULONG_MASK, new_addr & ULONG_MASK)
    e = _check_mremap_params(mm, vrm)
    if e:
        return e
    with mm.locks.mmap_write():  # do_mremap(): mmap_write_lock_killable() after check_mremap_params()
        if vrm.move_only():
            res = _remap_move(mm, vrm)
        else:
            vrm.vma = mm.tree.lookup(vrm.addr)
            res = _check_prep_vma(mm, vrm)
            if not res:
                res = _mremap_to(mm, vrm) if vrm.implies_new_addr() else _mremap_at(mm, vrm)
    if res >= 0 and vrm.populate_expand:
        # do_mremap(): an mlocked VMA that grew is populated after the mmap lock is dropped.
        start = vrm.new_addr + vrm.old_len
        v = mm.tree.lookup(start)
        if v is not None and not v.vm_flags & C.VM_LOCKONFAULT:
            with mm.locks.mmap_read():  # mm_populate() -> __mm_populate() takes the read lock
                mm_populate(mm, start, vrm.delta)
    return res


def _check_mremap_params(mm: MmStruct, vrm: VmaRemap) -> int:
    """Models check_mremap_params(): the argument checks made before any VMA is looked up."""
    if vrm.flags & ~(MREMAP_FIXED | MREMAP_MAYMOVE | MREMAP_DONTUNMAP):
        return -errno.EINVAL
    if vrm.addr & (PAGE_SIZE - 1):
        return -errno.EINVAL
    if not vrm.new_len or vrm.new_len > TASK_SIZE:
        return -errno.EINVAL
    if not vrm.implies_new_addr():
        return 0
    if vrm.new_addr > TASK_SIZE - vrm.new_len or vrm.new_addr & (PAGE_SIZE - 1):
        return -errno.EINVAL
    if not vrm.flags & MREMAP_MAYMOVE:
        return -errno.EINVAL
    if vrm.flags & MREMAP_DONTUNMAP and vrm.old_len != vrm.new_len:
        return -errno.EINVAL
    if vrm.overlaps():
        return -errno.EINVAL
    # Both the destination and the source may be split in three before the move (2 more VMAs); the
    # move itself wants the headroom of prep_move_vma().  Measured: a FIXED move fails at
    # map_count 65525 and works at 65524 (max 65530).
    if mm.map_count + 2 >= mm.max_map_count - 3:
        return -errno.ENOMEM
    return 0


def _check_prep_vma(mm: MmStruct, vrm: VmaRemap) -> int:
    """Models check_prep_vma(): the checks against the source VMA; 0 or -errno."""
    vma = vrm.vma
    if vma is None:
        return -errno.EFAULT
    if vma.vm_flags & C.VM_SEALED:
        return -errno.EPERM
    if vma.vm_flags & C.VM_HUGETLB and not _align_hugetlb(vrm, vma):
        return -errno.EINVAL
    vrm.set_delta()
    if not vrm.implies_new_addr():
        vrm.new_addr = vrm.addr
    if vrm.remap_type != MREMAP_EXPAND and not vrm.implies_new_addr():
        return 0  # a shrink or a no-op maps nothing new
    old_len, new_len = vrm.old_len, vrm.new_len
    if not old_len and not vma.vm_flags & (C.VM_SHARED | C.VM_MAYSHARE):
        return -errno.EINVAL  # "duplicating" a private mapping is refused
    if vrm.flags & MREMAP_DONTUNMAP and vma.vm_flags & (C.VM_DONTEXPAND | C.VM_PFNMAP):
        return -errno.EINVAL
    if vrm.remap_type == MREMAP_SHRINK:
        old_len = new_len  # the unmapped tail may cross VMA boundaries
    if old_len > vma.vm_end - vrm.addr:
        return -errno.EFAULT
    if new_len == old_len:
        return 0
    if vma.vm_flags & VM_LOCKED:
        vrm.populate_expand = True
    pgoff = vma.pgoff_at(vrm.addr)
    if pgoff + (new_len >> PAGE_SHIFT) > ULONG_MASK:
        return -errno.EINVAL
    if vma.vm_flags & (C.VM_DONTEXPAND | C.VM_PFNMAP):
        return -errno.EFAULT
    if not mm.mlock_future_ok(vma.vm_flags & VM_LOCKED, vrm.delta):
        return -errno.EAGAIN
    if not mm.may_expand_vm(vma.vm_flags, vrm.delta >> PAGE_SHIFT):
        return -errno.ENOMEM
    return 0


def _align_hugetlb(vrm: VmaRemap, vma: VMA) -> bool:
    """Models align_hugetlb(): both lengths are rounded up to the huge page size; the old address and
    the new_addr argument (checked even without MREMAP_FIXED, before check_prep_vma() replaces it) must
    be aligned to it, and a hugetlb mapping cannot grow."""
    size = vma_kernel_pagesize(vma)
    vrm.old_len = (vrm.old_len + size - 1) & ~(size - 1) & ULONG_MASK
    vrm.new_len = (vrm.new_len + size - 1) & ~(size - 1) & ULONG_MASK
    if (vrm.addr | vrm.new_addr) & (size - 1):
        return False
    return vrm.new_len <= vrm.old_len


# ------------------------------------------------------------------------------------------------
# resize at the same address
def _mremap_at(mm: MmStruct, vrm: VmaRemap) -> int:
    """Models mremap_at(): no-op, shrink in place, or expand (in place, else move with MAYMOVE)."""
    if vrm.remap_type == MREMAP_NO_RESIZE:
        return vrm.addr
    if vrm.remap_type == MREMAP_SHRINK:
        e = _shrink_vma(mm, vrm)
        return e if e else vrm.addr
    return _expand_vma(mm, vrm)


def _shrink_vma(mm: MmStruct, vrm: VmaRemap) -> int:
    """Models shrink_vma(): unmap [addr + new_len, addr + old_len) and look the VMA up again.
    do_vmi_munmap() checks the range first: past TASK_SIZE is EINVAL."""
    start = vrm.addr + vrm.new_len
    if start > TASK_SIZE or vrm.delta > TASK_SIZE - start:
        return -errno.EINVAL
    e = do_vmi_munmap(mm, start, start + vrm.delta)
    vrm.vma = None
    if e:
        return e
    vrm.vma = mm.tree.lookup(vrm.addr)
    return 0 if vrm.vma is not None else -errno.EFAULT


def _vma_expandable(mm: MmStruct, vma: VMA, delta: int) -> bool:
    """Models vma_expandable(): nothing mapped in [vm_end, vm_end + delta) and the grown range passes
    get_unmapped_area(MAP_FIXED) (which refuses to cross TASK_SIZE)."""
    end = vma.vm_end + delta
    if end > ULONG_MASK:
        return False
    if mm.tree.find_intersection(vma.vm_end, end) is not None:
        return False
    got = get_unmapped_area(mm, None, vma.vm_start, end - vma.vm_start, 0, C.MAP_FIXED, 0)
    return got >= 0 and not got & (PAGE_SIZE - 1)


def _expand_vma(mm: MmStruct, vrm: VmaRemap) -> int:
    """Models expand_vma(): in place when [addr, addr + old_len) ends at the VMA's end and the space
    after it is free; otherwise a move (MREMAP_MAYMOVE) or ENOMEM."""
    vma = vrm.vma
    assert vma is not None
    if vma.vm_end - vrm.addr == vrm.old_len and _vma_expandable(mm, vma, vrm.delta):
        return _expand_vma_in_place(mm, vrm)
    if not vrm.flags & MREMAP_MAYMOVE:
        return -errno.ENOMEM
    e = _vrm_set_new_addr(mm, vrm)
    if e:
        return e
    return _move_vma(mm, vrm)


def _expand_vma_in_place(mm: MmStruct, vrm: VmaRemap) -> int:
    """Models expand_vma_in_place() with mm/vma.c: vma_merge_extend(): the VMA is extended as a new
    range merged after it, which can also swallow a compatible next VMA."""
    vma = vrm.vma
    assert vma is not None
    if not _vrm_calc_charge(mm, vrm):
        return -errno.ENOMEM
    start, end = vma.vm_end, vma.vm_end + vrm.delta
    nxt = mm.tree.next(vma)
    got = merge_new_range(mm, start, end, vma.vm_flags, vma.vm_file, vma.vm_pgoff + vma.pages, vma, nxt,
                          anon_name=vma.anon_name, anon_vma=vma.anon_vma, op="mremap")
    if got is None:
        _vrm_uncharge(mm, vrm)
        return -errno.ENOMEM
    vrm.vma = got
    _vrm_stat_account(mm, vrm, vrm.delta)
    mm.probe.trace("mremap", "expanded in place", start=got.vm_start, end=got.vm_end)
    return vrm.addr


# ------------------------------------------------------------------------------------------------
# moves
def _mremap_to(mm: MmStruct, vrm: VmaRemap) -> int:
    """Models mremap_to(): FIXED unmaps the destination first; a shrink happens before the move."""
    if vrm.flags & MREMAP_FIXED:
        e = do_vmi_munmap(mm, vrm.new_addr, vrm.new_addr + vrm.new_len)
        vrm.vma = None
        if e:
            return e
        vrm.vma = mm.tree.lookup(vrm.addr)
        if vrm.vma is None:
            return -errno.EFAULT
    if vrm.remap_type == MREMAP_SHRINK:
        e = _shrink_vma(mm, vrm)
        if e:
            return e
        vrm.old_len = vrm.new_len
    if vrm.flags & MREMAP_DONTUNMAP:
        assert vrm.vma is not None
        if not mm.may_expand_vm(vrm.vma.vm_flags, vrm.old_len >> PAGE_SHIFT):
            return -errno.ENOMEM
    e = _vrm_set_new_addr(mm, vrm)
    if e:
        return e
    return _move_vma(mm, vrm)


def _vrm_set_new_addr(mm: MmStruct, vrm: VmaRemap) -> int:
    """Models vrm_set_new_addr(): MAP_FIXED for MREMAP_FIXED, new_addr as a hint for DONTUNMAP alone,
    else the normal (top-down) search; the file's pgoff and MAP_SHARED steer file placement."""
    vma = vrm.vma
    assert vma is not None
    map_flags = C.MAP_FIXED if vrm.flags & MREMAP_FIXED else 0
    if vma.vm_flags & C.VM_MAYSHARE:
        map_flags |= C.MAP_SHARED
    hint = vrm.new_addr if vrm.implies_new_addr() else 0
    res = get_unmapped_area(mm, vma.vm_file, hint, vrm.new_len, vma.pgoff_at(vrm.addr), map_flags, 0)
    if res < 0:
        return res
    vrm.new_addr = res
    return 0


def _vrm_calc_charge(mm: MmStruct, vrm: VmaRemap) -> bool:
    """Models vrm_calc_charge(): charge the growth (or, with DONTUNMAP, the whole new VMA)."""
    vma = vrm.vma
    assert vma is not None
    if not vma.vm_flags & VM_ACCOUNT:
        return True
    charged = (vrm.new_len if vrm.flags & MREMAP_DONTUNMAP else vrm.delta) >> PAGE_SHIFT
    if not mm.vm_enough_memory(charged):
        return False
    vrm.charged = charged
    return True


def _vrm_uncharge(mm: MmStruct, vrm: VmaRemap) -> None:
    """Models vrm_uncharge()."""
    if vrm.vma is not None and vrm.vma.vm_flags & VM_ACCOUNT:
        mm.vm_unacct_memory(vrm.charged)
    vrm.charged = 0


def _vrm_stat_account(mm: MmStruct, vrm: VmaRemap, nbytes: int) -> None:
    """Models vrm_stat_account(): total/data/exec/stack_vm and locked_vm for the added pages."""
    vma = vrm.vma
    assert vma is not None
    pages = nbytes >> PAGE_SHIFT
    mm.vm_stat_account(vma.vm_flags, pages)
    if vma.vm_flags & VM_LOCKED:
        mm.locked_vm += pages


def _prep_move_vma(mm: MmStruct, vrm: VmaRemap) -> int:
    """Models prep_move_vma(): map_count headroom (the unmap of the source may split one VMA into
    three) and vm_ops->may_split at both ends."""
    vma = vrm.vma
    assert vma is not None
    if mm.map_count >= mm.max_map_count - 3:
        return -errno.ENOMEM  # measured: a moving grow fails at 65527, works at 65526
    if vma.vm_ops is not None:
        e = 0
        if vma.vm_start != vrm.addr:
            e = vma.vm_ops.may_split(vma, vrm.addr)
        if not e and vma.vm_end != vrm.addr + vrm.old_len:
            e = vma.vm_ops.may_split(vma, vrm.addr + vrm.old_len)
        if e:
            return e
    return 0


def _move_vma(mm: MmStruct, vrm: VmaRemap) -> int:
    """Models move_vma(): copy the VMA to new_addr (copy_vma), move the page tables, account, then
    unmap the source range (or, with DONTUNMAP, keep the old VMA without its pages)."""
    e = _prep_move_vma(mm, vrm)
    if e:
        return e
    if not _vrm_calc_charge(mm, vrm):
        return -errno.ENOMEM
    if vrm.charged and not vrm.flags & MREMAP_DONTUNMAP:
        # After a shrink in mremap_to() the delta is still charged although the move adds no pages.
        leak = vrm.charged - ((vrm.new_len - vrm.old_len) >> PAGE_SHIFT)
        if leak > 0:
            mm.leaked_commit += leak
            mm.probe.trace("mremap", "commit charge leaked", pages=leak)
    assert vrm.vma is not None
    mm.locks.vma_start_write(vrm.vma)  # move_vma(): the source is write-locked before copy_vma()
    new_vma = _copy_vma_and_data(mm, vrm)
    _vrm_stat_account(mm, vrm, vrm.new_len)
    if vrm.flags & MREMAP_DONTUNMAP:
        _dontunmap_complete(mm, vrm, new_vma)
    else:
        _unmap_source_vma(mm, vrm)
    mm.probe.trace("mremap", "moved", addr=vrm.addr, start=vrm.new_addr, end=vrm.new_addr + vrm.new_len)
    return vrm.new_addr


def _copy_vma_and_data(mm: MmStruct, vrm: VmaRemap) -> VMA:
    """Models copy_vma_and_data(): :func:`vmalab.vma.copy_vma` then move_page_tables() (all PTEs move;
    the model has no page-table allocation failure, so the revert path is not taken)."""
    vma = vrm.vma
    assert vma is not None
    new_vma = copy_vma(mm, vma, vrm.new_addr, vrm.new_len, vma.pgoff_at(vrm.addr))
    if vrm.old_len:
        mm.pt.move(vrm.addr >> PAGE_SHIFT, vrm.new_addr >> PAGE_SHIFT, vrm.old_len >> PAGE_SHIFT)
        if mm.notifiers:
            # move_page_tables(): the source range is invalidated; the moved PTEs are set at their new place
            invalidate_range(mm, vrm.addr, vrm.addr + vrm.old_len, "move")
            for vpn, page in mm.pt.items(vrm.new_addr >> PAGE_SHIFT, (vrm.new_addr + vrm.old_len) >> PAGE_SHIFT):
                for n in list(mm.notifiers):
                    n.pte_set(vpn, page)
    # the source VMA may have been merged into the new one: look it up again.
    vrm.vma = mm.tree.lookup(vrm.addr) or new_vma
    return new_vma


def _unmap_source_vma(mm: MmStruct, vrm: VmaRemap) -> None:
    """Models unmap_source_vma(): unmap [addr, addr + old_len) without uncharging it (its charge moved
    to the new VMA): VM_ACCOUNT is cleared on the source for the unmap and set again on the pieces of
    it that remain."""
    vma = vrm.vma
    assert vma is not None
    start, end = vrm.addr, vrm.addr + vrm.old_len
    accountable = bool(vma.vm_flags & VM_ACCOUNT)
    vm_start, vm_end = vma.vm_start, vma.vm_end
    if accountable:
        vma.vm_flags &= ~VM_ACCOUNT
    e = do_vmi_munmap(mm, start, end) if end > start else -errno.EINVAL
    vrm.vma = None
    if e:
        # "OOM: unable to split vma, just get accounts right" (also reached by the old_len == 0
        # duplicate of a shared mapping, where munmap of 0 bytes fails): the source keeps no VM_ACCOUNT
        # and its charge stays taken.
        if accountable:
            mm.committed += vrm.old_len >> PAGE_SHIFT
            mm.leaked_commit += (vm_end - vm_start) >> PAGE_SHIFT
        return
    if accountable:
        if vm_start < start:
            left = mm.tree.prev(start)
            if left is not None:
                left.vm_flags |= VM_ACCOUNT
                if mm.notifiers:
                    vma_changed(mm, left.vm_start, left.vm_end)
        if vm_end > end:
            right = mm.tree.next(end)
            if right is not None:
                right.vm_flags |= VM_ACCOUNT
                if mm.notifiers:
                    vma_changed(mm, right.vm_start, right.vm_end)


def _dontunmap_complete(mm: MmStruct, vrm: VmaRemap, new_vma: VMA) -> None:
    """Models dontunmap_complete(): the old VMA stays as it is (not split) but loses VM_LOCKED and
    VM_LOCKONFAULT; if all of it was moved it also loses its anon_vma."""
    vma = vrm.vma
    assert vma is not None
    if vma.vm_flags & VM_LOCKED:
        # The kernel clears VM_LOCKED here but leaves locked_vm as it is (VmLck counts the pages twice:
        # measured, scenario mremap_dontunmap_locked_vmlck); they stay counted for the life of the mm.
        mm.leaked_locked += vma.pages
        # nor does it munlock the folios still mapped there: they stay unevictable (MADV_FREE and
        # MADV_PAGEOUT leave them; scenario mremap_dontunmap_locked_pages_stay_unevictable)
        for _vpn, p in mm.pt.items(vma.vm_start >> PAGE_SHIFT, vma.vm_end >> PAGE_SHIFT):
            if p.kind in (ANON, FILE):
                p.lru = LRU_UNEVICTABLE
    vma.vm_flags &= ~C.VM_LOCKED_MASK
    if mm.notifiers:
        vma_changed(mm, vma.vm_start, vma.vm_end)
    if new_vma is not vma and vrm.addr == vma.vm_start and vrm.addr + vrm.old_len == vma.vm_end:
        vma.anon_vma = None
        vma.avc_len = 0


def _remap_move(mm: MmStruct, vrm: VmaRemap) -> int:
    """Models remap_move() (6.17+): a MREMAP_FIXED move with old_len == new_len moves every VMA in
    [addr, addr + old_len), keeping the holes between them; the range must start in a VMA."""
    start, end = vrm.addr, vrm.addr + vrm.old_len
    target = vrm.new_addr
    res = -errno.EFAULT
    seen = False
    last_end = 0
    vmi = VmaIterator(mm.tree, start)
    # for_each_vma_range(vmi, vma, end), written out: the kernel's iterator stops once its index has
    # reached ``end`` (mas_find() with max = end - 1) and resumes after the last VMA it returned
    # (vma_iter_invalidate() pauses it there), so a move that merged the source with its copy is not
    # visited again -- not even when that merge grew it across ``end`` (a DONTUNMAP move to just past
    # the source), which VmaIterator.range(), having no index check, would return once more.
    while vmi.index < end:
        vma = vmi.find(end)
        if vma is None:
            break
        addr = max(vma.vm_start, start)
        length = min(end, vma.vm_end) - addr
        if not seen and start < vma.vm_start:
            return -errno.EFAULT
        offset = vma.vm_start - last_end if seen else 0
        last_end = vma.vm_end
        sub = VmaRemap(addr, length, length, vrm.flags, target + offset, vma=vma)
        multi = _vma_multi_allowed(vma)
        if not multi and (seen or vma.vm_end < end):
            return -errno.EFAULT
        r = _check_prep_vma(mm, sub)
        if not r:
            r = _mremap_to(mm, sub)
        if r < 0:
            return r
        if not seen:
            res = r
        seen = True
        target = r + length
    return res


def _vma_multi_allowed(vma: VMA) -> bool:
    """Models vma_multi_allowed(): a file whose own get_unmapped_area might not honour MAP_FIXED
    (other than shmem, hugetlb and thp_get_unmapped_area) cannot be part of a multi-VMA move."""
    f = vma.vm_file
    if f is None or f.f_op.get_unmapped_area is None:
        return True
    return f.f_op.get_unmapped_area in ("shmem", "thp", "hugetlb")
