"""The mm's VMA tree and the VMA iterator.

Models the maple tree ``mm->mm_mt`` (here a sorted map keyed by ``vm_start`` with O(log n) lookup,
insert, erase and range iteration) and ``struct vma_iterator`` with ``for_each_vma_range()``
(include/linux/mm.h, mm/vma.h: vma_find(), vma_iter_set()), including where a walk resumes after its
body changed the VMA it was given.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from typing import TYPE_CHECKING

from sortedcontainers import SortedList

if TYPE_CHECKING:
    from .mm_types import VMA


class VmaTree:
    """The mm's VMA tree (models the maple tree ``mm->mm_mt``): VMAs ordered by ``vm_start``.

    Keys live in a ``sortedcontainers.SortedList`` (a list of sorted sublists with their maxima), VMAs in
    a dict keyed by ``vm_start``.  Neighbour lookups bisect the sublist maxima and then one sublist, so
    every lookup, insert and erase is O(log n) without positional indexing.  The tree does not check
    overlap on insert; :func:`vmalab.debug.validate_mm` does.

    Gap summaries (the maple tree's per-node largest gap, used by the gap search of
    ``get_unmapped_area``): ``_gap[j]`` is the largest gap ``vm_start - prev.vm_end`` between two
    consecutive VMAs that both lie in sublist ``j``, or ``-1`` when sublist ``j`` changed since it was
    computed (recomputed lazily by :meth:`_sub_gap`).  Every insert, erase and rekey marks the sublists it
    touches; a VMA's ``vm_end`` changed in place must be reported with :meth:`end_changed`.  The gap
    below the first VMA of a sublist is read from the VMAs themselves, never summarised.
    :meth:`check_gaps` (run by validate_mm) says whether a clean summary is stale.
    """

    __slots__ = ("_sl", "_by_start", "_gap")

    def __init__(self, load: int | None = None) -> None:
        self._sl = SortedList()
        if load is not None:
            self._sl._reset(load)  # small sublists: tests exercise splits and merges
        self._by_start: dict[int, VMA] = {}
        self._gap: list[int] = []

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
    def _add(self, key: int) -> None:
        sl = self._sl
        gap = self._gap
        pos = bisect_right(sl._maxes, key)
        if pos == len(gap):
            pos -= 1
        sl.add(key)
        n = len(sl._lists)
        if n == len(gap):
            gap[pos] = -1
        elif n == len(gap) + 1 and pos >= 0:
            gap[pos] = -1
            gap.insert(pos + 1, -1)  # SortedList._expand() split sublist pos
        else:
            self._gap = [-1] * n

    def _remove(self, key: int) -> None:
        sl = self._sl
        gap = self._gap
        pos = bisect_left(sl._maxes, key)
        sl.remove(key)
        n = len(sl._lists)
        if n == len(gap):
            # a merge with a neighbour may have been split again: mark both sides
            for j in (pos - 1, pos, pos + 1):
                if 0 <= j < n:
                    gap[j] = -1
        else:
            self._gap = [-1] * n

    def insert(self, vma: VMA) -> None:
        self._add(vma.vm_start)
        self._by_start[vma.vm_start] = vma

    def erase(self, vma: VMA) -> None:
        del self._by_start[vma.vm_start]
        self._remove(vma.vm_start)

    def rekey(self, vma: VMA, old_start: int) -> None:
        """Call after changing ``vma.vm_start`` of a VMA that is in the tree."""
        if old_start != vma.vm_start:
            del self._by_start[old_start]
            self._remove(old_start)
            self._add(vma.vm_start)
            self._by_start[vma.vm_start] = vma
        else:
            self.end_changed(vma)

    def end_changed(self, vma: VMA) -> None:
        """Call after changing ``vma.vm_end`` of a VMA that is in the tree (its gap summary is stale)."""
        maxes = self._sl._maxes
        pos = bisect_left(maxes, vma.vm_start)
        if pos < len(maxes):
            self._gap[pos] = -1

    # -- gap summaries and the gap search --------------------------------------------------------------
    def _calc_gap(self, j: int) -> int:
        d = self._by_start
        sub = self._sl._lists[j]
        best = 0
        end = d[sub[0]].vm_end
        for i in range(1, len(sub)):
            k = sub[i]
            if k - end > best:
                best = k - end
            end = d[k].vm_end
        return best

    def _sub_gap(self, j: int) -> int:
        g = self._gap[j]
        if g < 0:
            g = self._gap[j] = self._calc_gap(j)
        return g

    def _end_before(self, j: int, i: int) -> int:
        """vm_end of the VMA before ``_lists[j][i]`` (0 below the first VMA)."""
        if i:
            return self._by_start[self._sl._lists[j][i - 1]].vm_end
        if j:
            return self._by_start[self._sl._lists[j - 1][-1]].vm_end
        return 0

    def gap_down(self, key: int, length: int, floor: int) -> tuple[int, int] | None:
        """The highest VMA start ``s`` with ``floor < s <= key`` whose gap below (``s`` minus the end of
        the VMA before it, or minus 0 for the first VMA) is at least ``length``: ``(s, that end)``.
        ``key`` must be a VMA start."""
        lists = self._sl._lists
        d = self._by_start
        j = bisect_left(self._sl._maxes, key)
        sub = lists[j]
        i = bisect_left(sub, key)
        while True:
            # scan sublist j from index i down to its first element
            while i > 0:
                s = sub[i]
                if s <= floor:
                    return None
                e = d[sub[i - 1]].vm_end
                if s - e >= length:
                    return s, e
                i -= 1
            s = sub[0]
            if s <= floor:
                return None
            e = self._end_before(j, 0)
            if s - e >= length:
                return s, e
            # skip whole sublists below whose internal gaps are too small
            j -= 1
            while j >= 0:
                sub = lists[j]
                if sub[-1] <= floor:
                    return None
                if self._sub_gap(j) >= length:
                    break
                s = sub[0]
                if s <= floor:
                    return None
                e = self._end_before(j, 0)
                if s - e >= length:
                    return s, e
                j -= 1
            if j < 0:
                return None
            i = len(sub) - 1

    def gap_up(self, key: int, length: int, ceil: int) -> tuple[int, int] | None:
        """The lowest VMA start ``s`` with ``key < s < ceil`` whose gap below is at least ``length``:
        ``(s, the end of the VMA before it)``.  ``key`` must be a VMA start."""
        lists = self._sl._lists
        d = self._by_start
        nl = len(lists)
        j = bisect_left(self._sl._maxes, key)
        sub = lists[j]
        i = bisect_left(sub, key) + 1
        while True:
            e = d[sub[i - 1]].vm_end
            n = len(sub)
            while i < n:
                s = sub[i]
                if s >= ceil:
                    return None
                if s - e >= length:
                    return s, e
                e = d[s].vm_end
                i += 1
            # the first VMA of each following sublist, then its internal gaps when they may fit
            j += 1
            while j < nl:
                sub = lists[j]
                s = sub[0]
                if s >= ceil:
                    return None
                if s - e >= length:
                    return s, e
                if self._sub_gap(j) >= length:
                    break
                e = d[sub[-1]].vm_end
                j += 1
            if j >= nl:
                return None
            i = 1

    def check_gaps(self) -> list[str]:
        """validate_mm's check of the gap summaries: one entry per sublist, and no clean one stale."""
        problems: list[str] = []
        if len(self._gap) != len(self._sl._lists):
            return [f"gap summaries: {len(self._gap)} for {len(self._sl._lists)} sublists"]
        for j, g in enumerate(self._gap):
            if g >= 0 and g != self._calc_gap(j):
                problems.append(f"stale gap summary of sublist {j}: {g:#x}, really {self._calc_gap(j):#x}")
        return problems

    def find(self, addr: int) -> VMA | None:
        """find_vma(): the first VMA with ``vm_end > addr``.  One descent: the sublist holding the last
        start <= addr also holds (or is followed by) the first start > addr."""
        maxes = self._sl._maxes
        if not maxes:
            return None
        d = self._by_start
        pos = bisect_right(maxes, addr)
        if pos == len(maxes):
            v = d[maxes[-1]]
            return v if v.vm_end > addr else None
        sub = self._sl._lists[pos]
        idx = bisect_right(sub, addr)
        k = sub[idx - 1] if idx else (maxes[pos - 1] if pos else None)
        if k is not None:
            v = d[k]
            if v.vm_end > addr:
                return v
        return d[sub[idx]]

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
        addr = vma_or_addr if isinstance(vma_or_addr, int) else vma_or_addr.vm_start
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
        addr = vma_or_addr if isinstance(vma_or_addr, int) else vma_or_addr.vm_end
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

    def last_below(self, addr: int) -> VMA | None:
        """The VMA with the highest ``vm_start < addr`` (whether or not it contains ``addr``)."""
        k = self._lower(addr)
        return None if k is None else self._by_start[k]

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


class VmaIterator:
    """Models ``struct vma_iterator`` as the range walks use it (``for_each_vma_range(vmi, vma, end)``).

    ``index`` is where the next :meth:`find` starts: just past the VMA it last returned.  A walk body that
    changes that VMA (``vma_modify()`` may split it or merge it into a neighbour) leaves the kernel's
    iterator on the VMA the change returned; :meth:`on` says so, and the walk resumes after it.
    :meth:`set` (``vma_iter_set()``) moves the iterator so that the VMA containing an address is found
    again, which is how mseal_apply() meets a VMA it just merged once more."""

    __slots__ = ("tree", "index")

    def __init__(self, tree: VmaTree, addr: int) -> None:
        self.tree = tree
        self.index = addr

    def find(self, end: int) -> VMA | None:
        """vma_find(): the next VMA that ends after ``index`` and starts below ``end`` (none once
        ``index`` reached ``end``, as mas_find() stops at its maximum)."""
        if self.index >= end:
            return None
        v = self.tree.find(self.index)
        if v is None or v.vm_start >= end:
            return None
        self.index = v.vm_end
        return v

    def on(self, vma: VMA) -> VMA:
        """The iterator is left on ``vma`` (as vma_modify() leaves it): the walk resumes after it."""
        self.index = vma.vm_end
        return vma

    def set(self, addr: int) -> None:
        """vma_iter_set(): the next find starts at ``addr``."""
        self.index = addr

    def range(self, end: int) -> Iterator[VMA]:
        """for_each_vma_range(): every VMA below ``end`` from ``index`` on, re-reading ``index`` after
        each step so that the body's :meth:`on` / :meth:`set` take effect."""
        while True:
            v = self.find(end)
            if v is None:
                return
            yield v
