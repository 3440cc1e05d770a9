"""madvise(2) and process_madvise(2).

Models mm/madvise.c of Linux 6.18: the front checks (``is_valid_madvise()`` / ``madvise_should_skip()``),
the walk over the VMAs of the range (``madvise_walk_vmas()``: holes are remembered as ENOMEM while the
mapped parts are still processed, an error on a VMA ends the walk), the advices that change ``vm_flags``
through :func:`vmalab.vma.vma_modify` (so they split and merge like mprotect, and a split refused at
``max_map_count`` is reported as EAGAIN), and the page-level advices: DONTNEED / DONTNEED_LOCKED (zap
PTEs, keeping guard markers), FREE, REMOVE (punch the file's page cache), WILLNEED (readahead of regular
files), COLD / PAGEOUT (only clean, unshared page-cache pages of regular files can be reclaimed: there is no
swap), POPULATE_READ / POPULATE_WRITE (``madvise_populate()`` over GUP:
:func:`vmalab.gup.faultin_page_range`) and the guard regions
(GUARD_INSTALL / GUARD_REMOVE: marker PTEs of kind :data:`vmalab.pagetable.GUARD`, the sticky
``VM_MAYBE_GUARD`` on the whole VMA, no split).

Not modelled beyond their argument checks: MADV_COLLAPSE (EINVAL when the VMA cannot hold an aligned
PMD, otherwise 0 with no change), MADV_HWPOISON and MADV_SOFT_OFFLINE (0, no change).
"""

from __future__ import annotations

import errno
from contextlib import AbstractContextManager, nullcontext

from . import constants as C
from .constants import PAGE_SHIFT, PAGE_SIZE, ULONG_MASK, page_align
from .faults import anon_vma_prepare
from .files import FMODE_WRITE, S_IFREG, File, Inode, vma_kernel_pagesize
from .gup import faultin_page_range
from .mm_types import VMA, MmStruct
from .mmu_notifier import invalidate_range
from .pagetable import ANON, FILE, GUARD, LRU_LAZYFREE, LRU_UNEVICTABLE, Page
from .vma import vma_modify
from .vma_tree import VmaIterator

M = C.MADV_NAMES
MADV_NORMAL = M["MADV_NORMAL"]
MADV_RANDOM = M["MADV_RANDOM"]
MADV_SEQUENTIAL = M["MADV_SEQUENTIAL"]
MADV_WILLNEED = M["MADV_WILLNEED"]
MADV_DONTNEED = M["MADV_DONTNEED"]
MADV_FREE = M["MADV_FREE"]
MADV_REMOVE = M["MADV_REMOVE"]
MADV_DONTFORK = M["MADV_DONTFORK"]
MADV_DOFORK = M["MADV_DOFORK"]
MADV_MERGEABLE = M["MADV_MERGEABLE"]
MADV_UNMERGEABLE = M["MADV_UNMERGEABLE"]
MADV_HUGEPAGE = M["MADV_HUGEPAGE"]
MADV_NOHUGEPAGE = M["MADV_NOHUGEPAGE"]
MADV_DONTDUMP = M["MADV_DONTDUMP"]
MADV_DODUMP = M["MADV_DODUMP"]
MADV_WIPEONFORK = M["MADV_WIPEONFORK"]
MADV_KEEPONFORK = M["MADV_KEEPONFORK"]
MADV_COLD = M["MADV_COLD"]
MADV_PAGEOUT = M["MADV_PAGEOUT"]
MADV_POPULATE_READ = M["MADV_POPULATE_READ"]
MADV_POPULATE_WRITE = M["MADV_POPULATE_WRITE"]
MADV_DONTNEED_LOCKED = M["MADV_DONTNEED_LOCKED"]
MADV_COLLAPSE = M["MADV_COLLAPSE"]
MADV_HWPOISON = M["MADV_HWPOISON"]
MADV_SOFT_OFFLINE = M["MADV_SOFT_OFFLINE"]
MADV_GUARD_INSTALL = M["MADV_GUARD_INSTALL"]
MADV_GUARD_REMOVE = M["MADV_GUARD_REMOVE"]

#: madvise_behavior_valid() on this kernel (CONFIG_KSM, CONFIG_TRANSPARENT_HUGEPAGE, CONFIG_MEMORY_FAILURE)
VALID_ADVICE = frozenset(M.values())
#: is_discard(): the advices a sealed read-only anonymous VMA refuses (can_madvise_modify())
DISCARD_ADVICE = frozenset({MADV_FREE, MADV_DONTNEED, MADV_DONTNEED_LOCKED, MADV_REMOVE, MADV_DONTFORK,
                            MADV_WIPEONFORK, MADV_GUARD_INSTALL})
#: process_madvise_remote_valid(): what may be applied to another process's mm
REMOTE_VALID_ADVICE = frozenset({MADV_COLD, MADV_PAGEOUT, MADV_WILLNEED, MADV_COLLAPSE})

#: the single guard-marker "page" installed in page tables (like the zero page, shared by all PTEs)
GUARD_MARKER = Page(GUARD)


def is_valid_madvise(start: int, len_in: int, behavior: int) -> bool:
    """Models mm/madvise.c: is_valid_madvise()."""
    if behavior not in VALID_ADVICE:
        return False
    if start & (PAGE_SIZE - 1):
        return False
    length = page_align(len_in) & ULONG_MASK
    if len_in and not length:
        return False  # a small negative length rounded up to 0
    return start + length <= ULONG_MASK


def _is_pagecache_file(f: File) -> bool:
    """A regular file with a disk behind its page cache (ext4-like): not shmem, not a device, not
    hugetlbfs (whose noop backing device makes generic_fadvise() ignore WILLNEED)."""
    return f.inode.mode == S_IFREG and f.f_op.fault_style == "filemap" and not f.f_op.huge_page_size




# ----------------------------------------------------------------------------------------------------
# entry points
def sys_madvise(mm: MmStruct, addr: int, length: int, advice: int) -> int:
    """madvise(2): models mm/madvise.c: do_madvise(); returns 0 or -errno."""
    start = addr & ULONG_MASK
    len_in = length & ULONG_MASK
    advice &= 0xFFFFFFFF
    if advice >= 1 << 31:
        advice -= 1 << 32
    e = _madvise_should_skip(start, len_in, advice)
    if e is not None:
        return e
    with _madvise_lock(mm, advice):
        return _madvise_do_behavior(mm, start, len_in, advice)


#: The advices that mm/madvise.c get_lock_mode() (6.18) runs under the mmap read lock, or under the per-VMA
#: read lock (DONTNEED, DONTNEED_LOCKED, FREE), which the model takes as the read lock that
#: madvise_walk_vmas() falls back to; every other advice takes the write lock, and memory-failure
#: injection (HWPOISON, SOFT_OFFLINE) none.
MADVISE_READ_LOCKED = frozenset((MADV_REMOVE, MADV_WILLNEED, MADV_COLD, MADV_PAGEOUT, MADV_FREE,
                                 MADV_POPULATE_READ, MADV_POPULATE_WRITE, MADV_COLLAPSE, MADV_GUARD_INSTALL,
                                 MADV_GUARD_REMOVE, MADV_DONTNEED, MADV_DONTNEED_LOCKED))


def _madvise_lock(mm: MmStruct, advice: int) -> AbstractContextManager[None]:
    """Models mm/madvise.c: madvise_lock() / get_lock_mode(): the mmap lock the advice is applied under."""
    if advice in (MADV_HWPOISON, MADV_SOFT_OFFLINE):
        return nullcontext()
    return mm.locks.mmap_read() if advice in MADVISE_READ_LOCKED else mm.locks.mmap_write()


def process_madvise(mm: MmStruct, iovecs: list[tuple[int, int]], advice: int, flags: int = 0,
                    remote: bool = False, cap_sys_nice: bool = True) -> int:
    """process_madvise(2) on this mm: models mm/madvise.c: SYSCALL process_madvise + vector_madvise().

    ``iovecs`` are (address, length) pairs; ``remote`` says the pidfd names another process (then
    only COLD, PAGEOUT, WILLNEED and COLLAPSE are allowed, with CAP_SYS_NICE).  Returns the number
    of bytes advised (the iovecs before the first failure), or -errno when the first one fails."""
    if flags != 0:
        return -errno.EINVAL
    if len(iovecs) > C.UIO_MAXIOV:
        return -errno.EINVAL
    if remote and advice not in REMOTE_VALID_ADVICE:
        return -errno.EINVAL
    if remote and not cap_sys_nice:
        return -errno.EPERM
    total = sum(n & ULONG_MASK for _, n in iovecs)
    if total > (1 << 63) - 1:
        return -errno.EINVAL  # import_iovec(): the total must fit in ssize_t
    done = 0
    ret = 0
    for a, n in iovecs:
        start, len_in = a & ULONG_MASK, n & ULONG_MASK
        e = _madvise_should_skip(start, len_in, advice)
        if e is not None:
            ret = e
        else:
            with _madvise_lock(mm, advice):
                ret = _madvise_do_behavior(mm, start, len_in, advice)
        if ret < 0:
            break
        done += len_in
    return done if done else ret


# ----------------------------------------------------------------------------------------------------
# the walk
def _madvise_should_skip(start: int, len_in: int, advice: int) -> int | None:
    """Models madvise_should_skip(): -EINVAL for bad arguments, 0 for an empty range, else None."""
    if not is_valid_madvise(start, len_in, advice):
        return -errno.EINVAL
    if page_align(len_in) & ULONG_MASK == 0:
        return 0
    return None


def _madvise_do_behavior(mm: MmStruct, start: int, len_in: int, advice: int) -> int:
    """Models madvise_do_behavior(); POPULATE_READ / POPULATE_WRITE are madvise_populate() over
    :func:`vmalab.gup.faultin_page_range`."""
    if advice in (MADV_HWPOISON, MADV_SOFT_OFFLINE):
        # madvise_inject_error(): CAP_SYS_ADMIN or EPERM; the poisoning itself is not modelled
        return 0 if mm.cap_sys_admin else -errno.EPERM
    end = start + page_align(len_in)
    if advice in (MADV_POPULATE_READ, MADV_POPULATE_WRITE):
        return faultin_page_range(mm, start, end, advice == MADV_POPULATE_WRITE)
    return _madvise_walk_vmas(mm, start, end, advice)


def _find_vma_prev(mm: MmStruct, start: int) -> VMA | None:
    """find_vma_prev() followed by ``if (vma && start > vma->vm_start) prev = vma;``: the ``prev`` a walk
    from ``start`` hands to vma_modify() with its first VMA (the VMA before it, or itself when ``start``
    is inside it; the last VMA when none ends above ``start``)."""
    vma = mm.tree.find(start)
    if vma is None:
        return mm.tree.last()
    return vma if start > vma.vm_start else mm.tree.prev(vma)


def _madvise_walk_vmas(mm: MmStruct, start: int, end: int, advice: int) -> int:
    """Models madvise_walk_vmas(): apply the advice to every VMA piece of [start, end); a hole makes
    the result ENOMEM unless a VMA fails, whose error ends the walk at once."""
    prev = _find_vma_prev(mm, start)
    unmapped_error = 0
    vmi = VmaIterator(mm.tree, start)
    for vma in vmi.range(end):
        if start < vma.vm_start:
            unmapped_error = -errno.ENOMEM
            start = vma.vm_start  # < end: the iterator only yields VMAs that start below end
        piece_end = min(vma.vm_end, end)
        r = _madvise_vma_behavior(mm, vma, prev, start, piece_end, advice)
        if isinstance(r, int):
            return r
        done, lock_dropped = r
        if lock_dropped:
            prev = None  # the mmap lock was dropped: the VMA may be gone, look it up again
            start = piece_end
        else:
            prev = done
            start = max(piece_end, done.vm_end)
        if start >= end:
            break
        # resume with a fresh lookup: the first VMA that ends above start (after a lock drop, piece_end;
        # else past ``done``, which may have merged with the next VMA)
        vmi.set(start)
    else:
        return -errno.ENOMEM  # no VMA (or none below end) from start on: the rest of the range is a hole
    return unmapped_error


def _can_madvise_modify(vma: VMA, advice: int) -> bool:
    """Models can_madvise_modify(): a sealed VMA refuses the discard advices when it is anonymous
    and the user could not write to it anyway (file mappings and writable memory are allowed)."""
    if not vma.vm_flags & C.VM_SEALED or advice not in DISCARD_ADVICE:
        return True
    if not vma.is_anonymous():  # vma_is_anonymous(): no vm_ops (private /dev/zero counts as anonymous)
        return True
    return bool(vma.vm_flags & C.VM_WRITE)


def _madvise_vma_behavior(mm: MmStruct, vma: VMA, prev: VMA | None, start: int, end: int,
                          advice: int) -> int | tuple[VMA, bool]:
    """Models madvise_vma_behavior() for [start, end) inside ``vma``: returns -errno, or the VMA that
    now covers the range and whether the kernel dropped the mmap lock on the way."""
    if not _can_madvise_modify(vma, advice):
        return -errno.EPERM
    e: int
    if advice == MADV_REMOVE:
        e = _madvise_remove(mm, vma, start, end)
        return e if e else (vma, True)
    if advice == MADV_WILLNEED:
        return _madvise_willneed(mm, vma, start, end)
    if advice in (MADV_COLD, MADV_PAGEOUT):
        e = _madvise_cold_or_pageout(mm, vma, start, end, advice == MADV_PAGEOUT)
        return e if e else (vma, False)
    if advice in (MADV_DONTNEED, MADV_DONTNEED_LOCKED, MADV_FREE):
        e = _madvise_dontneed_free(mm, vma, start, end, advice)
        return e if e else (vma, False)
    if advice == MADV_COLLAPSE:
        e = _madvise_collapse(vma)
        return e if e else (vma, False)
    if advice == MADV_GUARD_INSTALL:
        e = _madvise_guard_install(mm, vma, start, end)
        return e if e else (vma, False)
    if advice == MADV_GUARD_REMOVE:
        e = _madvise_guard_remove(mm, vma, start, end)
        return e if e else (vma, False)
    r = _madvise_new_flags(vma, advice)
    if isinstance(r, tuple):
        return r[0]
    if r == vma.vm_flags:
        return vma, False
    return _madvise_update_vma(mm, vma, prev, start, end, r)


# ----------------------------------------------------------------------------------------------------
# flag-changing advices
def _madvise_new_flags(vma: VMA, advice: int) -> int | tuple[int]:
    """The vm_flags an advice asks for (madvise_vma_behavior()'s switch, ksm_madvise(),
    hugepage_madvise()), or ``(-errno,)``."""
    f = vma.vm_flags
    if advice == MADV_NORMAL:
        return f & ~(C.VM_RAND_READ | C.VM_SEQ_READ)
    if advice == MADV_SEQUENTIAL:
        return (f & ~C.VM_RAND_READ) | C.VM_SEQ_READ
    if advice == MADV_RANDOM:
        return (f & ~C.VM_SEQ_READ) | C.VM_RAND_READ
    if advice == MADV_DONTFORK:
        return f | C.VM_DONTCOPY
    if advice == MADV_DOFORK:
        if f & C.VM_IO:
            return (-errno.EINVAL,)
        return f & ~C.VM_DONTCOPY
    if advice == MADV_WIPEONFORK:
        if vma.vm_file is not None or f & C.VM_SHARED:
            return (-errno.EINVAL,)  # anonymous private memory only
        return f | C.VM_WIPEONFORK
    if advice == MADV_KEEPONFORK:
        if f & C.VM_DROPPABLE:
            return (-errno.EINVAL,)
        return f & ~C.VM_WIPEONFORK
    if advice == MADV_DONTDUMP:
        return f | C.VM_DONTDUMP
    if advice == MADV_DODUMP:
        if (not f & C.VM_HUGETLB and f & C.VM_SPECIAL) or f & C.VM_DROPPABLE:
            return (-errno.EINVAL,)
        return f & ~C.VM_DONTDUMP
    if advice == MADV_MERGEABLE:
        # ksm_madvise(): ignored (0, no flag) where KSM cannot work: vma_ksm_compatible()
        if f & (C.VM_SHARED | C.VM_MAYSHARE | C.VM_PFNMAP | C.VM_IO | C.VM_DONTEXPAND | C.VM_HUGETLB
                | C.VM_MIXEDMAP | C.VM_DROPPABLE):
            return f
        return f | C.VM_MERGEABLE
    if advice == MADV_UNMERGEABLE:
        return f & ~C.VM_MERGEABLE
    if advice == MADV_HUGEPAGE:
        return (f & ~C.VM_NOHUGEPAGE) | C.VM_HUGEPAGE
    if advice == MADV_NOHUGEPAGE:
        return (f & ~C.VM_HUGEPAGE) | C.VM_NOHUGEPAGE
    raise AssertionError(f"advice {advice} is not a flag advice")  # pragma: no cover


def _madvise_update_vma(mm: MmStruct, vma: VMA, prev: VMA | None, start: int, end: int,
                        new_flags: int) -> int | tuple[VMA, bool]:
    """Models madvise_update_vma() -> vma_modify_flags(); a failed split (ENOMEM at max_map_count)
    is returned as EAGAIN, as madvise_vma_behavior() does."""
    r = vma_modify(mm, vma, prev, start, end, new_flags, op="madvise")
    if isinstance(r, int):
        return -errno.EAGAIN if r == -errno.ENOMEM else r
    return r, False


# ----------------------------------------------------------------------------------------------------
# page-level advices
def _madvise_dontneed_free(mm: MmStruct, vma: VMA, start: int, end: int, advice: int) -> int:
    """Models madvise_dontneed_free(): DONTNEED zaps the range (file pages stay in the page cache, COW
    copies and anonymous pages are gone; zap_page_range_single() as madvise uses it keeps guard markers);
    FREE only marks private anonymous pages lazily freeable, which changes nothing visible while there is
    no memory pressure."""
    if vma.vm_flags & C.VM_HUGETLB:
        # madvise_dontneed_free_valid_vma(): no FREE; DONTNEED needs a huge-page aligned start and zaps
        # whole huge pages only (the end is rounded down)
        size = vma_kernel_pagesize(vma)
        if advice == MADV_FREE or start & (size - 1):
            return -errno.EINVAL
        end &= ~(size - 1)
        if end > start:
            mm.pt.zap_except_guards(start >> PAGE_SHIFT, end >> PAGE_SHIFT)
            if mm.notifiers:
                invalidate_range(mm, start, end, "zap")
        return 0
    forbidden = C.VM_PFNMAP | (0 if advice == MADV_DONTNEED_LOCKED else C.VM_LOCKED)
    if vma.vm_flags & forbidden:
        return -errno.EINVAL
    if advice == MADV_FREE:
        if not vma.is_anonymous():
            return -errno.EINVAL  # madvise_free_single_vma(): anonymous memory only
        # madvise_free_pte_range(): each anonymous folio is cleaned and marked lazily freeable
        # (folio_mark_lazyfree()), the zero page is not a folio; one still shared after fork is marked too,
        # but reclaim leaves it alone while it stays shared, and no write reaches it in place (COW)
        for _vpn, p in mm.pt.items(start >> PAGE_SHIFT, end >> PAGE_SHIFT):
            if p.kind == ANON and p.lru != LRU_UNEVICTABLE:  # folio_mark_lazyfree() skips unevictable ones
                p.lru = LRU_LAZYFREE
        if mm.notifiers:  # madvise_free_single_vma() clears dirty and young bits (MMU_NOTIFY_CLEAR)
            invalidate_range(mm, start, end, "zap")
        return 0
    mm.pt.zap_except_guards(start >> PAGE_SHIFT, end >> PAGE_SHIFT)
    mm.pt.reclaim_empty_tables(start >> PAGE_SHIFT, end >> PAGE_SHIFT)  # details.reclaim_pt
    if mm.notifiers:  # zap_page_range_single(): MMU_NOTIFY_CLEAR
        invalidate_range(mm, start, end, "zap")
    mm.probe.trace("madvise", "zapped", start=start, end=end)
    return 0


def _madvise_remove(mm: MmStruct, vma: VMA, start: int, end: int) -> int:
    """Models madvise_remove(): fallocate(PUNCH_HOLE|KEEP_SIZE) on the file behind a shared writable
    mapping: the pages leave the page cache and every mapping of them (private COW copies stay)."""
    if vma.vm_flags & C.VM_LOCKED:
        return -errno.EINVAL
    f = vma.vm_file
    if f is None:
        return -errno.EINVAL
    if (vma.vm_flags & (C.VM_SHARED | C.VM_MAYWRITE)) != (C.VM_SHARED | C.VM_MAYWRITE):
        return -errno.EACCES  # vma_is_shared_maywrite()
    if not f.f_mode & FMODE_WRITE:
        return -errno.EBADF  # vfs_fallocate()
    if f.inode.mode != S_IFREG:
        return -errno.ENODEV  # vfs_fallocate() on a device
    if not f.f_op.has_fallocate:
        return -errno.EOPNOTSUPP  # vfs_fallocate(): no ->fallocate (secretmem)
    first = vma.pgoff_at(start)
    _punch_hole(mm, f.inode, first, first + ((end - start) >> PAGE_SHIFT))
    return 0


def _punch_hole(mm: MmStruct, inode: Inode, first: int, last: int) -> None:
    """truncate_pagecache_range() after unmap_mapping_range(): drop page-cache pages [first, last)
    and the PTEs that map them (guard markers and private COW copies are not touched)."""
    for v in mm.tree:
        if v.vm_file is None or v.vm_file.inode is not inode:
            continue
        lo = max(first, v.vm_pgoff)
        hi = min(last, v.vm_pgoff + v.pages)
        if lo >= hi:
            continue
        base = (v.vm_start >> PAGE_SHIFT) - v.vm_pgoff
        for vpn, p in mm.pt.items(base + lo, base + hi):
            if p.kind == FILE:
                mm.pt.zap(vpn, vpn + 1)
        if mm.notifiers:  # unmap_mapping_range() -> zap_page_range_single(): MMU_NOTIFY_CLEAR
            invalidate_range(mm, (base + lo) << PAGE_SHIFT, (base + hi) << PAGE_SHIFT, "zap")
    for pgoff in [k for k in inode.pages if first <= k < last]:
        del inode.pages[pgoff]


def _madvise_willneed(mm: MmStruct, vma: VMA, start: int, end: int) -> int | tuple[VMA, bool]:
    """Models madvise_willneed(): anonymous and shmem memory are only swapped in (nothing to do
    without swap); for another file, vfs_fadvise(WILLNEED) reads the advised pages into the page
    cache without mapping them (and the kernel drops the mmap lock meanwhile)."""
    f = vma.vm_file
    if f is None or f.f_op.fault_style == "shmem":
        return vma, False
    inode = f.inode
    if _is_pagecache_file(f):
        first = vma.pgoff_at(start)
        n = min((end - start) >> PAGE_SHIFT, mm.ra_pages)  # force_page_cache_ra(): at most ra_pages
        for pgoff in range(first, min(first + n, inode.npages())):
            inode.cache_page(pgoff)
    return vma, True


def _reclaim_pte(mm: MmStruct, vpn: int) -> None:
    """try_to_unmap() of one page that reclaim takes: its PTE goes (MMU_NOTIFY_CLEAR of the page)."""
    mm.pt.zap(vpn, vpn + 1)
    if mm.notifiers:
        invalidate_range(mm, vpn << PAGE_SHIFT, (vpn + 1) << PAGE_SHIFT, "zap")


def _madvise_cold_or_pageout(mm: MmStruct, vma: VMA, start: int, end: int, pageout: bool) -> int:
    """Models madvise_cold() / madvise_pageout(): deactivation is invisible.  Reclaim
    (shrink_folio_list()) without swap keeps anonymous pages mapped (add_to_swap() fails first), but
    a page-cache page that this PTE alone maps is unmapped; a clean page (of a regular file, or a
    shmem page never written) then leaves the page cache, while dirty pages stay cached (no swap).
    A page holding data counts as dirty here.

    Anonymous folios that are not swap-backed are discarded instead: those MADV_FREE marked lazily
    freeable and that were not written since, and every one of a VM_DROPPABLE VMA (never swap-backed,
    folio_add_new_anon_rmap(); unlike MADV_FREE ones, dropped even when dirty: try_to_unmap_one()).
    PAGEOUT drops each such folio this PTE alone maps, and a later touch faults in a new zero-filled
    page."""
    if vma.vm_flags & (C.VM_LOCKED | C.VM_PFNMAP | C.VM_HUGETLB):
        return -errno.EINVAL  # can_madv_lru_vma()
    if pageout and vma.vm_file is None:
        droppable = vma.vm_flags & C.VM_DROPPABLE
        for vpn, p in mm.pt.items(start >> PAGE_SHIFT, end >> PAGE_SHIFT):
            if p.kind == ANON and p.mapcount == 1 and (droppable or p.lru == LRU_LAZYFREE):
                _reclaim_pte(mm, vpn)
        return 0
    if not pageout or vma.vm_file is None:
        return 0
    f = vma.vm_file
    inode = f.inode
    for vpn, p in mm.pt.items(start >> PAGE_SHIFT, end >> PAGE_SHIFT):
        if p.kind != FILE or p.mapcount != 1 or p.lru == LRU_UNEVICTABLE:
            continue  # anonymous, zero page, guard marker, mapped more than once, or still mlocked
        _reclaim_pte(mm, vpn)
        pgoff = vma.pgoff_at(vpn << PAGE_SHIFT)
        # a clean folio leaves the cache: a regular file's (its data is on disk) and a shmem one's that
        # was never written (it reads back as zeroes); dirty shmem folios cannot go without swap
        clean_droppable = _is_pagecache_file(f) or f.f_op.fault_style == "shmem"
        if clean_droppable and not p.data and inode.pages.get(pgoff) is p:
            del inode.pages[pgoff]
    return 0


def _madvise_collapse(vma: VMA) -> int:
    """MADV_COLLAPSE: EINVAL unless the VMA can hold a PMD-aligned huge page (thp_vma_allowable_order());
    the collapse itself is not modelled."""
    if vma.vm_flags & (C.VM_SPECIAL | C.VM_HUGETLB):
        return -errno.EINVAL
    haddr = (vma.vm_start + C.PMD_SIZE - 1) & ~(C.PMD_SIZE - 1)  # HPAGE_PMD_SIZE == PMD_SIZE on x86-64
    if haddr + C.PMD_SIZE > vma.vm_end:
        return -errno.EINVAL
    return 0


# ----------------------------------------------------------------------------------------------------
# guard regions
def _is_valid_guard_vma(vma: VMA, allow_locked: bool) -> bool:
    """Models is_valid_guard_vma()."""
    disallowed = C.VM_SPECIAL | C.VM_HUGETLB | (0 if allow_locked else C.VM_LOCKED)
    return not vma.vm_flags & disallowed


def _madvise_guard_install(mm: MmStruct, vma: VMA, start: int, end: int) -> int:
    """Models madvise_guard_install(): mark the whole VMA VM_MAYBE_GUARD (sticky, ignored by merges;
    no split), give an anonymous VMA its anon_vma, zap what is mapped in the range and put a guard
    marker in every PTE of it."""
    if not _is_valid_guard_vma(vma, allow_locked=False):
        return -errno.EINVAL
    vma.vm_flags |= C.VM_MAYBE_GUARD
    if vma.is_anonymous() and anon_vma_prepare(mm, vma):
        return -errno.ENOMEM
    for vpn in range(start >> PAGE_SHIFT, end >> PAGE_SHIFT):
        mm.pt.set(vpn, GUARD_MARKER)
    if mm.notifiers:  # what was mapped is zapped (zap_page_range_single(): MMU_NOTIFY_CLEAR)
        invalidate_range(mm, start, end, "zap")
    mm.probe.trace("madvise", "guard markers installed", start=start, end=end)
    return 0


def _madvise_guard_remove(mm: MmStruct, vma: VMA, start: int, end: int) -> int:
    """Models madvise_guard_remove(): clear the guard markers of the range (VM_MAYBE_GUARD stays)."""
    if not _is_valid_guard_vma(vma, allow_locked=True):
        return -errno.EINVAL
    for vpn, p in mm.pt.items(start >> PAGE_SHIFT, end >> PAGE_SHIFT):
        if p.kind == GUARD:
            mm.pt.zap(vpn, vpn + 1)
    if mm.notifiers:  # the markers are gone: a mirror that kept them drops them
        invalidate_range(mm, start, end, "zap")
    return 0


# ----------------------------------------------------------------------------------------------------
# prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME)
def sys_set_vma_anon_name(mm: MmStruct, start: int, length: int, name: str | None) -> int:
    """Models kernel/sys.c: prctl_set_vma() and mm/madvise.c: madvise_set_anon_name(): name (or, with
    ``None``, unname) the anonymous VMAs of a range; the name takes part in merging (VMAs with
    different names never merge) and shows in maps as ``[anon:NAME]``.  EINVAL when the kernel lacks
    CONFIG_ANON_VMA_NAME (``anon_vma_name_enabled``; off on the live kernel here), for a name longer
    than 80 bytes or with unprintable characters or any of ``\\`$[]``, for an unaligned start or a
    wrapping range; ENOMEM for holes (after naming what precedes them); EBADF for a file mapping."""
    if not mm.anon_vma_name_enabled:
        return -errno.EINVAL
    if name is not None and (len(name.encode()) >= C.ANON_VMA_NAME_MAX
                             or any(not (0x20 <= ord(c) < 0x7F) or c in "\\`$[]" for c in name)):
        return -errno.EINVAL
    start &= ULONG_MASK
    if start & (PAGE_SIZE - 1):
        return -errno.EINVAL
    end = start + page_align(length & ULONG_MASK)
    if end < start or (length and end == start):
        return -errno.EINVAL
    if end == start:
        return 0
    err = 0
    prev = _find_vma_prev(mm, start)
    pos = start  # where the part of the range not yet seen begins
    vmi = VmaIterator(mm.tree, start)
    for cur in vmi.range(end):
        if cur.vm_start > pos:
            err = -errno.ENOMEM
        if cur.vm_file is not None and not cur.is_anonymous() and not cur.vm_file.anon_shmem:
            return -errno.EBADF
        stop = min(cur.vm_end, end)
        if cur.anon_name != name:
            r = vma_modify(mm, cur, prev, max(pos, cur.vm_start), stop, cur.vm_flags,
                           anon_name=name if name is not None else "", op="prctl")
            if isinstance(r, int):
                return -errno.EAGAIN if r == -errno.ENOMEM else r
            cur = vmi.on(r)
        prev = cur
        pos = cur.vm_end
    if pos < end:
        err = -errno.ENOMEM
    return err
