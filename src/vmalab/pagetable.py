"""Pages and page tables.

Models what the VMA layer and procfs can observe of ``struct page``/``struct folio`` and of the PTEs of
one mm: whether a virtual page is mapped, by the shared zero page, an anonymous page or a page-cache
page, and how many PTEs map each page (for PSS, which smaps' ``Locked:`` is computed from).
"""

from __future__ import annotations

from sortedcontainers import SortedDict

ANON = "anon"
FILE = "file"
ZERO = "zero"
GUARD = "guard"  # a guard-region marker PTE (MADV_GUARD_INSTALL): not a page, faults with SIGSEGV
PFN = "pfn"  # a special PTE installed by remap_pfn_range(): no struct page (not counted in Rss)
KERNEL = "kernel"  # a kernel page inserted into a VM_MIXEDMAP VMA by vm_insert_pages() (counted in Rss)


class Page:
    """One 4 KiB page: ``kind`` is ``anon``, ``file`` (page cache) or ``zero`` (the shared zero page), or
    ``guard``: a guard-region PTE marker (not resident, not counted in Rss).
    ``data`` holds the non-zero bytes sparsely (offset -> value)."""

    __slots__ = ("kind", "mapcount", "data", "pfn", "pgprot", "uptodate")

    def __init__(self, kind: str, data: dict[int, int] | None = None, pfn: int = -1, pgprot: int = 0) -> None:
        self.kind = kind
        self.mapcount = 0
        self.data: dict[int, int] = {} if data is None else data
        self.pfn = pfn  # for PFN/KERNEL pages: the page frame number mapped
        self.pgprot = pgprot  # for PFN pages: the pgprot the remap used
        # page cache: PG_uptodate.  A folio created without being read (ext4's partial-block zeroing on a
        # truncate over a hole) is in the cache (mincore 1) but fault-around skips it until it is read.
        self.uptodate = True

    def read(self, off: int) -> int:
        return self.data.get(off, 0)

    def write(self, off: int, value: int) -> None:
        if value:
            self.data[off] = value
        else:
            self.data.pop(off, None)

    def __repr__(self) -> str:
        return f"Page({self.kind}, mapcount={self.mapcount})"


class PageTable:
    """Models the mm's page tables: virtual page number -> mapped :class:`Page`.

    Ordered (``SortedDict``) so that a range can be zapped or counted in O(log n + k).
    """

    __slots__ = ("_ptes",)

    def __init__(self) -> None:
        self._ptes: SortedDict = SortedDict()

    def __len__(self) -> int:
        return len(self._ptes)

    def get(self, vpn: int) -> Page | None:
        return self._ptes.get(vpn)

    def set(self, vpn: int, page: Page) -> None:
        old = self._ptes.get(vpn)
        if old is page:
            return
        if old is not None:
            old.mapcount -= 1
        page.mapcount += 1
        self._ptes[vpn] = page

    def items(self, start_vpn: int, end_vpn: int) -> list[tuple[int, Page]]:
        """The PTEs in ``[start_vpn, end_vpn)``."""
        d = self._ptes
        return [(k, d[k]) for k in d.irange(start_vpn, end_vpn, inclusive=(True, False))]

    def zap(self, start_vpn: int, end_vpn: int) -> int:
        """zap_page_range_single(): unmap every PTE in the range; returns how many were present."""
        d = self._ptes
        keys = list(d.irange(start_vpn, end_vpn, inclusive=(True, False)))
        for k in keys:
            d.pop(k).mapcount -= 1
        return len(keys)

    def zap_except_guards(self, start_vpn: int, end_vpn: int) -> int:
        """zap_page_range_single() as madvise (DONTNEED ...) and truncate_pagecache() use it: unmap every
        PTE in the range except guard markers (kind :data:`GUARD`), which stay; returns how many PTEs were
        unmapped (guard markers not counted)."""
        d = self._ptes
        keys = [k for k in d.irange(start_vpn, end_vpn, inclusive=(True, False)) if d[k].kind != GUARD]
        for k in keys:
            d.pop(k).mapcount -= 1
        return len(keys)

    def move(self, src_vpn: int, dst_vpn: int, npages: int) -> None:
        """move_page_tables(): move the PTEs of a range to another virtual range."""
        moved = [(k - src_vpn + dst_vpn, p) for k, p in self.items(src_vpn, src_vpn + npages)]
        for k, _p in self.items(src_vpn, src_vpn + npages):
            del self._ptes[k]
        for k, p in moved:
            self._ptes[k] = p

    def all_items(self) -> list[tuple[int, Page]]:
        return list(self._ptes.items())
