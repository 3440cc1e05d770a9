"""Pages and page tables.

Models what the VMA layer and procfs can observe of ``struct page``/``struct folio`` and of the PTEs of
one mm: whether a virtual page is mapped, by the shared zero page, an anonymous page or a page-cache
page, and how many PTEs map each page (for PSS, which smaps' ``Locked:`` is computed from).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from ._mypyc import mypyc_attr

if TYPE_CHECKING:
    from .mmu_notifier import MmuNotifier

ANON = "anon"
FILE = "file"
ZERO = "zero"
GUARD = "guard"  # a guard-region marker PTE (MADV_GUARD_INSTALL): not a page, faults with SIGSEGV
PFN = "pfn"  # a special PTE installed by remap_pfn_range(): no struct page (not counted in Rss)
KERNEL = "kernel"  # a kernel page inserted into a VM_MIXEDMAP VMA by vm_insert_pages() (counted in Rss)
NOT_IN_RSS = (ZERO, GUARD, PFN)  # vm_normal_page() gives no page for these: not counted in Rss
LRU_LAZYFREE = "lazyfree"  # Page.lru: MADV_FREE'd and clean (folio_mark_lazyfree())
LRU_UNEVICTABLE = "unevictable"  # Page.lru: mlocked, with no VM_LOCKED VMA left to munlock it
PTRS_PER_PTE = 512  # PTEs per table: one table maps a 2 MiB region
PTE_SHIFT = 9


class Page:
    """One 4 KiB page: ``kind`` is ``anon``, ``file`` (page cache) or ``zero`` (the shared zero page), or
    ``guard``: a guard-region marker (not resident, not counted in Rss).

    Contents: ``base`` is None (zeroes) or 4096 immutable bytes (a file page's bytes from its inode's
    content provider, or an anonymous page compacted after many writes), and ``data`` holds the bytes
    written over it sparsely (offset -> value).  ``data`` empty means the page was never written (a
    page-cache page is clean).  Neither is ever mutated while ``frozen`` (a snapshot, :mod:`vmalab.access`,
    refers to them): a write first gives the page a copy of ``data``, and a compaction replaces both.

    ``lru``: where reclaim finds the folio when it matters, else ``""``: :data:`LRU_LAZYFREE` (an
    anonymous folio MADV_FREE made lazily freeable and not written since: the kernel's ``!PG_swapbacked``
    and a clean PTE; reclaim discards it) or :data:`LRU_UNEVICTABLE` (still mlocked although no VM_LOCKED
    VMA maps it any more, as mremap(MREMAP_DONTUNMAP) leaves it: reclaim and MADV_FREE skip it)."""

    __slots__ = ("kind", "mapcount", "data", "uptodate", "base", "frozen", "lru")

    def __init__(self, kind: str, data: dict[int, int] | None = None, base: bytes | None = None) -> None:
        self.kind = kind
        self.mapcount = 0
        self.data: dict[int, int] = {} if data is None else data
        # page cache: PG_uptodate.  A folio created without being read (ext4's partial-block zeroing on a
        # truncate over a hole) is in the cache (mincore 1) but fault-around skips it until it is read.
        self.uptodate = True
        self.base: bytes | None = base
        self.frozen = False
        self.lru = ""

    def read(self, off: int) -> int:
        v = self.data.get(off)
        if v is not None:
            return v
        b = self.base
        return 0 if b is None else b[off]

    def write(self, off: int, value: int) -> None:
        if self.frozen:
            self.data = dict(self.data)
            self.frozen = False
        if value or self.base is not None:
            self.data[off] = value
        else:
            self.data.pop(off, None)

    def copy_data(self, kind: str) -> Page:
        """A new page of ``kind`` with this page's contents (a COW copy: ``base`` is shared, immutable)."""
        return Page(kind, dict(self.data), base=self.base)

    def zero_from(self, off: int) -> None:
        """Zero the bytes from ``off`` to the end of the page (truncation's partial-page zeroing)."""
        data = self.data
        if self.frozen:
            data = self.data = dict(data)
            self.frozen = False
        for o in [o for o in data if o >= off]:
            del data[o]
        b = self.base
        if b is not None and any(b[off:]):
            self.base = b[:off] + bytes(len(b) - off)

    def __repr__(self) -> str:
        return f"Page({self.kind}, mapcount={self.mapcount})"


class PfnPage(Page):
    """A PTE that names a page frame: a raw PFN installed by remap_pfn_range() (kind :data:`PFN`, no
    ``struct page``) or a kernel page inserted by vm_insert_pages() (kind :data:`KERNEL`).  Kept apart from
    :class:`Page` so that ordinary pages do not carry the two fields."""

    __slots__ = ("pfn", "pgprot")

    def __init__(self, kind: str, data: dict[int, int] | None = None, pfn: int = -1, pgprot: int = 0) -> None:
        super().__init__(kind, data)
        self.pfn = pfn  # the page frame number mapped
        self.pgprot = pgprot  # for PFN pages: the pgprot the remap used


@mypyc_attr(allow_interpreted_subclasses=True)  # vmalab.execute._BoundedPageTable
class PageTable:
    """Models the mm's page tables: virtual page number -> mapped :class:`Page`.

    Two levels, like the hardware's last two: ``_dir`` maps a 2 MiB region (``vpn >> 9``, one PTE table)
    to a dict of its present PTEs, so a lookup, an insert and a removal are O(1), and a range is visited
    region by region (or, for a range wider than the populated regions, over those regions only).
    ``tables`` is separate: the regions whose PTE table exists, which may have no PTE left (a table
    outlives its PTEs until free_pgtables() or PT_RECLAIM frees it).
    """

    __slots__ = ("_dir", "_count", "rss", "hiwater_rss", "tables", "notifiers")

    def __init__(self) -> None:
        self._dir: dict[int, dict[int, Page]] = {}
        self._count = 0
        self.rss = 0  # PTEs counted in Rss (get_mm_rss(): not the zero page, guard markers or raw PFNs)
        self.hiwater_rss = 0  # update_hiwater_rss(): the peak of rss, raised before every zap lowers it
        # the 2 MiB regions (vpn >> 9) that have a PTE table (pmd_none() is false)
        self.tables: set[int] = set()
        # the mm's MMU notifiers (vmalab.mmu_notifier.attach() shares the mm's list): told of every PTE set
        self.notifiers: list[MmuNotifier] = []

    def __len__(self) -> int:
        return self._count

    def get(self, vpn: int) -> Page | None:
        t = self._dir.get(vpn >> PTE_SHIFT)
        return None if t is None else t.get(vpn)

    def set(self, vpn: int, page: Page) -> None:
        ti = vpn >> PTE_SHIFT
        t = self._dir.get(ti)
        if t is None:
            t = self._dir[ti] = {}
            self.tables.add(ti)
            old = None
        else:
            old = t.get(vpn)
            if old is page:
                return
        if old is not None:
            old.mapcount -= 1
            self.rss -= old.kind not in NOT_IN_RSS
        else:
            self._count += 1
            if ti not in self.tables:
                self.tables.add(ti)
        page.mapcount += 1
        self.rss += page.kind not in NOT_IN_RSS
        t[vpn] = page
        if self.notifiers:
            for n in list(self.notifiers):
                n.pte_set(vpn, page)

    def has_table(self, vpn: int) -> bool:
        """Whether the 2 MiB region of ``vpn`` has a PTE table (its PMD entry is not none)."""
        return vpn >> PTE_SHIFT in self.tables

    def reclaim_empty_tables(self, start_vpn: int, end_vpn: int) -> None:
        """Models mm/pt_reclaim.c (CONFIG_PT_RECLAIM) as zap_pte_range() uses it for a zap with
        ``reclaim_pt`` (MADV_DONTNEED): the table of each 2 MiB region the range covers whole goes when no
        entry is left in it (a guard marker keeps it)."""
        lo, hi = (start_vpn + PTRS_PER_PTE - 1) >> PTE_SHIFT, end_vpn >> PTE_SHIFT
        for t in (range(lo, hi) if hi - lo <= len(self.tables) else sorted(self.tables)):
            if lo <= t < hi and t in self.tables and not self._dir.get(t):
                self.tables.discard(t)

    def _regions(self, start_vpn: int, end_vpn: int) -> list[int]:
        """The populated regions that ``[start_vpn, end_vpn)`` touches, in order."""
        lo, hi = start_vpn >> PTE_SHIFT, (end_vpn - 1) >> PTE_SHIFT
        d = self._dir
        if hi - lo < len(d):
            return [t for t in range(lo, hi + 1) if t in d]
        return sorted(t for t in d if lo <= t <= hi)

    def items(self, start_vpn: int, end_vpn: int) -> list[tuple[int, Page]]:
        """The PTEs in ``[start_vpn, end_vpn)``, in address order."""
        out: list[tuple[int, Page]] = []
        if end_vpn <= start_vpn:
            return out
        d = self._dir
        for ti in self._regions(start_vpn, end_vpn):
            t = d[ti]
            base = ti << PTE_SHIFT
            if base >= start_vpn and base + PTRS_PER_PTE <= end_vpn:
                out.extend(sorted(t.items()))
            else:
                out.extend(sorted((k, p) for k, p in t.items() if start_vpn <= k < end_vpn))
        return out

    def zap(self, start_vpn: int, end_vpn: int) -> int:
        """zap_page_range_single(): unmap every PTE in the range; returns how many were present."""
        if not self._count or end_vpn <= start_vpn:
            return 0
        if end_vpn - start_vpn == 1:  # the common single page: no range walk
            t = self._dir.get(start_vpn >> PTE_SHIFT)
            if t is None or start_vpn not in t:
                return 0
        keys = [k for k, _p in self.items(start_vpn, end_vpn)]
        self._unmap(keys)
        return len(keys)

    def _unmap(self, keys: list[int]) -> None:
        """Drop the PTEs ``keys``, raising the Rss high-water mark first (update_hiwater_rss())."""
        d = self._dir
        if self.rss > self.hiwater_rss:
            self.hiwater_rss = self.rss
        for k in keys:
            ti = k >> PTE_SHIFT
            t = d[ti]
            p = t.pop(k)
            if not t:
                del d[ti]  # no PTE left: the table itself stays in ``tables``
            p.mapcount -= 1
            self.rss -= p.kind not in NOT_IN_RSS
        self._count -= len(keys)

    def zap_except_guards(self, start_vpn: int, end_vpn: int) -> int:
        """zap_page_range_single() as madvise (DONTNEED ...) and truncate_pagecache() use it: unmap every
        PTE in the range except guard markers (kind :data:`GUARD`), which stay; returns how many PTEs were
        unmapped (guard markers not counted)."""
        keys = [k for k, p in self.items(start_vpn, end_vpn) if p.kind != GUARD]
        self._unmap(keys)
        return len(keys)

    def move(self, src_vpn: int, dst_vpn: int, npages: int) -> None:
        """move_page_tables(): move the PTEs of a range to another virtual range."""
        moved = self.items(src_vpn, src_vpn + npages)
        d = self._dir
        for k, _p in moved:
            ptes = d[k >> PTE_SHIFT]
            del ptes[k]
            if not ptes:
                del d[k >> PTE_SHIFT]
        for k, p in moved:
            nk = k - src_vpn + dst_vpn
            d.setdefault(nk >> PTE_SHIFT, {})[nk] = p
        # each part of the source whose region has a table gets one at the destination; a whole, aligned
        # 2 MiB region moves its table itself (move_normal_pmd())
        end = src_vpn + npages
        for t in sorted(t for t in self.tables if src_vpn >> PTE_SHIFT <= t <= (end - 1) >> PTE_SHIFT):
            lo, hi = max(src_vpn, t << PTE_SHIFT), min(end, (t + 1) << PTE_SHIFT)
            d_lo = lo - src_vpn + dst_vpn
            if hi - lo == PTRS_PER_PTE and not d_lo & (PTRS_PER_PTE - 1) and d_lo >> PTE_SHIFT not in self.tables:
                self.tables.discard(t)
            self.tables.update(range(d_lo >> PTE_SHIFT, ((hi - 1 - src_vpn + dst_vpn) >> PTE_SHIFT) + 1))

    def copy_ptes(self) -> dict[int, dict[int, Page]]:
        """The PTEs, region by region, in new dicts (a snapshot's shallow copy: the pages are shared)."""
        return {ti: dict(t) for ti, t in self._dir.items()}

    def load_ptes(self, ptes: dict[int, dict[int, Page]], count: int, rss: int, hiwater_rss: int,
                  tables: Iterable[int]) -> None:
        """Replace every PTE by ``ptes`` (as :meth:`copy_ptes` gave them) with the counters that go with
        them; mapcounts are the caller's (a snapshot's restore)."""
        self._dir = ptes
        self._count = count
        self.rss = rss
        self.hiwater_rss = hiwater_rss
        self.tables = {*tables}

    def all_items(self) -> list[tuple[int, Page]]:
        return sorted(kv for t in self._dir.values() for kv in t.items())
