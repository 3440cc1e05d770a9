"""VMAs, anon_vmas and the ordered VMA tree.

Models ``struct vm_area_struct`` (the fields the VMA layer reads), ``struct anon_vma`` (identity and the
length of a VMA's anon_vma chain, which is what merging looks at) and the mm's maple tree, here a sorted
map keyed by ``vm_start`` with O(log n) lookup, insert, erase and range iteration.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from sortedcontainers import SortedList

from .constants import PAGE_SHIFT, STACK_GUARD_GAP, VM_GROWSDOWN

if TYPE_CHECKING:
    from .files import File, VmOperations


class AnonVma:
    """Models ``struct anon_vma``: only its identity matters to the VMA layer (two VMAs with different
    anon_vmas never merge)."""

    __slots__ = ("id",)

    def __init__(self, ident: int) -> None:
        self.id = ident

    def __repr__(self) -> str:
        return f"AnonVma#{self.id}"


class VMA:
    """Models ``struct vm_area_struct``.

    ``avc_len`` is the length of the VMA's ``anon_vma_chain``: 1 for an anon_vma created or reused in
    this mm, more for a VMA whose anon_vma was inherited over fork ("uncowed parents"), which changes the
    merge rules (mm/vma.c: ``vma_had_uncowed_parents()``).
    """

    __slots__ = ("vm_start", "vm_end", "vm_flags", "vm_pgoff", "vm_file", "anon_vma", "avc_len", "vm_ops",
                 "vm_private_data", "anon_name", "special_name", "page_prot")

    def __init__(self, vm_start: int, vm_end: int, vm_flags: int, vm_pgoff: int,
                 vm_file: File | None = None, vm_ops: VmOperations | None = None) -> None:
        self.vm_start = vm_start
        self.vm_end = vm_end
        self.vm_flags = vm_flags
        self.vm_pgoff = vm_pgoff
        self.vm_file = vm_file
        self.anon_vma: AnonVma | None = None
        self.avc_len = 0
        self.vm_ops = vm_ops
        self.vm_private_data: Any = None
        self.anon_name: str | None = None
        self.special_name: str | None = None  # names from vm_ops->name / arch_vma_name ([vdso], ...)
        self.page_prot: int = 0

    # -- geometry -------------------------------------------------------------------------------------
    @property
    def pages(self) -> int:
        return (self.vm_end - self.vm_start) >> PAGE_SHIFT

    def pgoff_at(self, addr: int) -> int:
        """linear_page_index(): the file page offset mapped at ``addr``."""
        return self.vm_pgoff + ((addr - self.vm_start) >> PAGE_SHIFT)

    def start_gap(self) -> int:
        """vm_start_gap(): the start of the VMA including the stack guard gap below a GROWSDOWN VMA."""
        if self.vm_flags & VM_GROWSDOWN:
            gap = self.vm_start - STACK_GUARD_GAP
            return gap if gap < self.vm_start else 0
        return self.vm_start

    def is_anonymous(self) -> bool:
        """vma_is_anonymous(): no vm_ops."""
        return self.vm_ops is None

    def copy(self) -> VMA:
        """vm_area_dup(): a copy sharing the file, ops, anon_vma and private data."""
        n = VMA(self.vm_start, self.vm_end, self.vm_flags, self.vm_pgoff, self.vm_file, self.vm_ops)
        n.anon_vma = self.anon_vma
        n.avc_len = self.avc_len
        n.vm_private_data = self.vm_private_data
        n.anon_name = self.anon_name
        n.special_name = self.special_name
        n.page_prot = self.page_prot
        return n

    def __repr__(self) -> str:
        from .constants import vmflags_str
        f = f" file={self.vm_file.path}" if self.vm_file else ""
        a = f" {self.anon_vma}" if self.anon_vma else ""
        return (f"VMA({self.vm_start:#x}-{self.vm_end:#x} pgoff={self.vm_pgoff:#x} "
                f"[{vmflags_str(self.vm_flags)}]{f}{a})")


class VmaTree:
    """The mm's VMA tree (models the maple tree ``mm->mm_mt``): VMAs ordered by ``vm_start``.

    Keys live in a ``sortedcontainers.SortedList`` (a list of sorted sublists with their maxima), VMAs in
    a dict keyed by ``vm_start``.  Neighbour lookups bisect the sublist maxima and then one sublist, so
    every lookup, insert and erase is O(log n) without positional indexing.  The tree does not check
    overlap on insert; :meth:`vmalab.mm.MM.validate` does.
    """

    __slots__ = ("_sl", "_by_start")

    def __init__(self) -> None:
        self._sl = SortedList()
        self._by_start: dict[int, VMA] = {}

    def __len__(self) -> int:
        return len(self._by_start)

    def __iter__(self) -> Iterator[VMA]:
        d = self._by_start
        return (d[k] for k in list(self._sl))

    # -- key helpers on the SortedList's sublists ------------------------------------------------------
    def _floor(self, key: int) -> int | None:
        """The largest start <= key."""
        maxes = self._sl._maxes
        if not maxes:
            return None
        pos = bisect_right(maxes, key)
        if pos == len(maxes):
            return maxes[-1]
        sub = self._sl._lists[pos]
        idx = bisect_right(sub, key)
        if idx:
            return sub[idx - 1]
        return maxes[pos - 1] if pos else None

    def _lower(self, key: int) -> int | None:
        """The largest start < key."""
        return self._floor(key - 1)

    def _ceil(self, key: int) -> int | None:
        """The smallest start >= key."""
        maxes = self._sl._maxes
        pos = bisect_left(maxes, key)
        if pos == len(maxes):
            return None
        sub = self._sl._lists[pos]
        return sub[bisect_left(sub, key)]

    # -- API ---------------------------------------------------------------------------------------------
    def insert(self, vma: VMA) -> None:
        self._sl.add(vma.vm_start)
        self._by_start[vma.vm_start] = vma

    def erase(self, vma: VMA) -> None:
        del self._by_start[vma.vm_start]
        self._sl.remove(vma.vm_start)

    def rekey(self, vma: VMA, old_start: int) -> None:
        """Call after changing ``vma.vm_start`` of a VMA that is in the tree."""
        if old_start != vma.vm_start:
            del self._by_start[old_start]
            self._sl.remove(old_start)
            self._sl.add(vma.vm_start)
            self._by_start[vma.vm_start] = vma

    def find(self, addr: int) -> VMA | None:
        """find_vma(): the first VMA with ``vm_end > addr``."""
        k = self._floor(addr)
        if k is not None:
            v = self._by_start[k]
            if v.vm_end > addr:
                return v
        k = self._ceil(addr + 1)
        return None if k is None else self._by_start[k]

    def lookup(self, addr: int) -> VMA | None:
        """vma_lookup(): the VMA containing ``addr``."""
        k = self._floor(addr)
        if k is not None:
            v = self._by_start[k]
            if v.vm_end > addr:
                return v
        return None

    def find_intersection(self, start: int, end: int) -> VMA | None:
        """find_vma_intersection(): the first VMA intersecting ``[start, end)``."""
        v = self.find(start)
        if v is not None and v.vm_start < end:
            return v
        return None

    def prev(self, vma_or_addr: VMA | int) -> VMA | None:
        """The last VMA that starts before the given VMA (or address) and does not contain the address."""
        addr = vma_or_addr.vm_start if isinstance(vma_or_addr, VMA) else vma_or_addr
        k = self._lower(addr)
        if k is None:
            return None
        v = self._by_start[k]
        if v.vm_end <= addr:
            return v
        k = self._lower(k)
        return None if k is None else self._by_start[k]

    def next(self, vma_or_addr: VMA | int) -> VMA | None:
        """The first VMA starting at or after the given VMA's end (or address)."""
        addr = vma_or_addr.vm_end if isinstance(vma_or_addr, VMA) else vma_or_addr
        k = self._ceil(addr)
        return None if k is None else self._by_start[k]

    def range(self, start: int, end: int) -> list[VMA]:
        """All VMAs intersecting ``[start, end)``, in order."""
        d = self._by_start
        out: list[VMA] = []
        k = self._floor(start)
        if k is not None and d[k].vm_end > start:
            out.append(d[k])
        k = self._ceil(start + 1)
        while k is not None and k < end:
            v = d[k]
            out.append(v)
            k = self._ceil(v.vm_end)
        return out

    def iter_from_top(self, below: int) -> Iterator[VMA]:
        """VMAs with ``vm_start < below``, highest first (for the top-down gap search)."""
        d = self._by_start
        k = self._lower(below)
        while k is not None:
            yield d[k]
            k = self._lower(k)

    def iter_from(self, addr: int) -> Iterator[VMA]:
        """VMAs with ``vm_end > addr``, lowest first."""
        v = self.find(addr)
        d = self._by_start
        while v is not None:
            yield v
            k = self._ceil(v.vm_end)
            v = None if k is None else d[k]

    def first(self) -> VMA | None:
        return self._by_start[self._sl[0]] if self._by_start else None

    def last(self) -> VMA | None:
        return self._by_start[self._sl[-1]] if self._by_start else None
