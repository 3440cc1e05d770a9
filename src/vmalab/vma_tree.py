"""The mm's VMA tree and the VMA iterator.

Models the maple tree ``mm->mm_mt`` (VMAs ordered by address, with O(log n) lookup, insert, erase and
range iteration, and the largest gap of each subtree for the gap search of ``get_unmapped_area``) and
``struct vma_iterator`` with ``for_each_vma_range()`` (include/linux/mm.h, mm/vma.h: vma_find(),
vma_iter_set()), including where a walk resumes after its body changed the VMA it was given.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from operator import attrgetter, sub
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .mm_types import VMA
    from .mmu_notifier import MmuNotifier

_END = attrgetter("vm_end")
DEFAULT_LOAD = 32


class VmaTree:
    """The mm's VMA tree (models the maple tree ``mm->mm_mt``): VMAs ordered by ``vm_start``.

    A two-level sorted list: the VMAs live in sublists of between ``load // 4`` and ``2 * load`` entries
    (``_vmas[j]``), beside the sorted list of their starts (``_keys[j]``), and ``_maxes[j]`` is the last
    start of sublist ``j``.  A lookup bisects ``_maxes`` and then one sublist, so lookups, inserts and
    erases are O(log n) plus a memmove of one short list.  Moving a VMA's start or end in place
    (:meth:`set_start`, :meth:`set_end`: merges, splits, stack growth) keeps its position.  The tree does
    not check overlap on insert; :func:`vmalab.debug.validate_mm` does.

    Gap summaries, as the maple tree keeps the largest gap of each node: ``_gap[j]`` is the largest gap
    below a VMA of sublist ``j`` (its ``vm_start`` minus the ``vm_end`` of the VMA before it, which for
    the first VMA of the sublist is the last of sublist ``j - 1``, and 0 below the lowest VMA), or -1
    when unknown.  Every change updates the summaries it can update exactly (a gap that grows raises the
    maximum; a gap that shrinks or goes makes it unknown only if it was the maximum), and a max segment
    tree over the sublists (``_seg``) answers "the nearest sublist below / above with a gap of at least
    L" in O(log n).  Unknown summaries are recomputed (O(load), in C-level loops) and the segment tree
    brought up to date only when a gap search runs, so the fixed-address paths pay almost nothing.
    :meth:`check_gaps` (run by validate_mm) says whether a summary is stale.
    """

    __slots__ = ("_keys", "_vmas", "_maxes", "_gap", "_cnt", "_load", "_len", "_seg", "_size", "_dirty",
                 "_seg_ok", "notifiers")

    def __init__(self, load: int | None = None) -> None:
        self._load = max(4, load or DEFAULT_LOAD)
        self._keys: list[list[int]] = []
        self._vmas: list[list[VMA]] = []
        self._maxes: list[int] = []
        self._gap: list[int] = []
        self._cnt: list[int] = []  # how many gaps of sublist j equal _gap[j] (when known)
        self._len = 0
        self._seg: list[int] = []
        self._size = 0  # leaves of the segment tree (a power of two >= the number of sublists)
        self._dirty: set[int] = set()  # sublists whose leaf of the segment tree is out of date
        self._seg_ok = False  # False after sublists were split, merged or dropped: rebuild
        # the mm's MMU notifiers (vmalab.mmu_notifier.attach()): told of every VMA inserted, erased or resized
        self.notifiers: list[MmuNotifier] = []

    def __len__(self) -> int:
        return self._len

    def clone(self) -> VmaTree:
        """A copy of the tree holding copies of its VMAs (``VMA.copy()``), built list by list in O(n): the
        summaries stay as they are.  No notifiers."""
        new = VmaTree(self._load)
        new._keys = [list(k) for k in self._keys]
        new._vmas = [[v.copy() for v in vs] for vs in self._vmas]
        new._maxes = list(self._maxes)
        new._gap = list(self._gap)
        new._cnt = list(self._cnt)
        new._len = self._len
        new._seg = list(self._seg)
        new._size = self._size
        new._dirty = set(self._dirty)
        new._seg_ok = self._seg_ok
        return new

    def __iter__(self) -> Iterator[VMA]:
        return iter([v for vmas in self._vmas for v in vmas])

    # -- positions -------------------------------------------------------------------------------------
    def _pos(self, start: int) -> tuple[int, int]:
        """The position of the VMA whose ``vm_start`` is ``start`` (KeyError if there is none)."""
        maxes = self._maxes
        j = bisect_left(maxes, start)
        if j < len(maxes):
            keys = self._keys[j]
            i = bisect_left(keys, start)
            if keys[i] == start:
                return j, i
        raise KeyError(start)

    def _prev_end(self, j: int, i: int) -> int:
        """``vm_end`` of the VMA before position (j, i), 0 for the lowest."""
        if i:
            return self._vmas[j][i - 1].vm_end
        if j:
            return self._vmas[j - 1][-1].vm_end
        return 0

    def _after(self, j: int, i: int) -> tuple[int, int] | None:
        """The position after (j, i), or None."""
        if i + 1 < len(self._keys[j]):
            return j, i + 1
        if j + 1 < len(self._keys):
            return j + 1, 0
        return None

    # -- summary upkeep --------------------------------------------------------------------------------
    def _gap_set(self, j: int, old: int, new: int) -> None:
        """A gap below a VMA of sublist ``j`` went from ``old`` to ``new`` (-1: it did not exist / no
        longer exists)."""
        g = self._gap[j]
        if g < 0:
            return
        if new > g:
            self._gap[j] = new
            self._cnt[j] = 1
            self._dirty.add(j)
        elif new == g:
            if old != g:
                self._cnt[j] += 1
        elif old == g:
            c = self._cnt[j] = self._cnt[j] - 1
            if not c:  # the last gap of the maximum size shrank or went: unknown until the next search
                self._gap[j] = -1
                self._dirty.add(j)

    def _calc_gap(self, j: int) -> tuple[int, int]:
        """The largest gap of sublist ``j`` and how many gaps have that size."""
        vmas = self._vmas[j]
        ends = [self._vmas[j - 1][-1].vm_end if j else 0]
        ends.extend(map(_END, vmas))
        gaps = list(map(sub, self._keys[j], ends))
        g = max(gaps)
        return g, gaps.count(g)

    def _known(self, j: int) -> int:
        """The summary of sublist ``j``, computed now if unknown."""
        g = self._gap[j]
        if g < 0:
            g, self._cnt[j] = self._calc_gap(j)
            self._gap[j] = g
        return g

    def _split(self, j: int) -> None:
        keys, vmas = self._keys[j], self._vmas[j]
        half = len(keys) >> 1
        self._keys[j + 1:j + 1] = [keys[half:]]
        self._vmas[j + 1:j + 1] = [vmas[half:]]
        del keys[half:]
        del vmas[half:]
        self._maxes[j:j + 1] = [keys[-1], self._keys[j + 1][-1]]
        self._gap[j:j + 1] = [-1, -1]
        self._cnt[j:j + 1] = [0, 0]
        self._seg_ok = False

    def _join(self, j: int) -> None:
        """Sublist ``j`` got short: append it to a neighbour (and split that again if it grew too long)."""
        if len(self._keys) == 1:
            if not self._keys[0]:
                del self._keys[0], self._vmas[0], self._maxes[0], self._gap[0], self._cnt[0]
                self._seg_ok = False
            return
        if j == 0:
            j = 1  # join sublists 0 and 1
        a = j - 1
        g1, g2 = self._gap[a], self._gap[j]
        c1, c2 = self._cnt[a], self._cnt[j]
        self._keys[a].extend(self._keys[j])
        self._vmas[a].extend(self._vmas[j])
        del self._keys[j], self._vmas[j], self._maxes[j], self._gap[j], self._cnt[j]
        self._maxes[a] = self._keys[a][-1]
        if g1 < 0 or g2 < 0:
            self._gap[a] = -1
        else:
            self._gap[a] = max(g1, g2)
            self._cnt[a] = (c1 if g1 >= g2 else 0) + (c2 if g2 >= g1 else 0)
        self._seg_ok = False
        if len(self._keys[a]) > 2 * self._load:
            self._split(a)

    def _flush(self) -> None:
        """Bring every summary and the segment tree up to date (before a gap search)."""
        gap = self._gap
        if not self._seg_ok:
            m = len(gap)
            for j in range(m):
                if gap[j] < 0:
                    self._known(j)
            size = 1
            while size < m:
                size <<= 1
            seg = [-1] * (2 * size)
            seg[size:size + m] = gap
            for k in range(size - 1, 0, -1):
                a, b = seg[2 * k], seg[2 * k + 1]
                seg[k] = a if a > b else b
            self._seg, self._size, self._seg_ok = seg, size, True
            self._dirty.clear()
            return
        if not self._dirty:
            return
        seg, size = self._seg, self._size
        for j in self._dirty:
            g = self._known(j)
            k = size + j
            seg[k] = g
            k >>= 1
            while k:
                a, b = seg[2 * k], seg[2 * k + 1]
                m2 = a if a > b else b
                if seg[k] == m2:
                    break
                seg[k] = m2
                k >>= 1
        self._dirty.clear()

    def _seg_below(self, j: int, length: int) -> int:
        """The highest sublist index below ``j`` whose summary is at least ``length``, or -1."""
        seg, size = self._seg, self._size
        k = size + j
        while k > 1:
            if k & 1 and seg[k - 1] >= length:
                k -= 1
                while k < size:
                    k = 2 * k + 1 if seg[2 * k + 1] >= length else 2 * k
                return k - size
            k >>= 1
        return -1

    def _seg_above(self, j: int, length: int) -> int:
        """The lowest sublist index above ``j`` whose summary is at least ``length``, or -1."""
        seg, size = self._seg, self._size
        k = size + j
        while k > 1:
            if not k & 1 and seg[k + 1] >= length:
                k += 1
                while k < size:
                    k = 2 * k if seg[2 * k] >= length else 2 * k + 1
                return k - size if k - size < len(self._gap) else -1
            k >>= 1
        return -1

    # -- mutation --------------------------------------------------------------------------------------
    def _changed(self, start: int, end: int) -> None:
        """Tell the notifiers that VMAs over ``[start, end)`` changed (vma_changed())."""
        for n in list(self.notifiers):
            n.vma_changed(start, end)

    def insert(self, vma: VMA) -> None:
        start = vma.vm_start
        maxes = self._maxes
        self._len += 1
        if self.notifiers:
            self._changed(start, vma.vm_end)
        if not maxes:
            self._keys.append([start])
            self._vmas.append([vma])
            maxes.append(start)
            self._gap.append(-1)
            self._cnt.append(0)
            self._seg_ok = False
            return
        j = bisect_left(maxes, start)
        if j == len(maxes):
            j -= 1
        keys, vmas = self._keys[j], self._vmas[j]
        i = bisect_left(keys, start)
        keys.insert(i, start)
        vmas.insert(i, vma)
        n = len(keys)
        if i == n - 1:
            maxes[j] = start
        prev_end = self._prev_end(j, i)
        if i + 1 < n:  # the gap below the next VMA is cut in two, both in sublist j
            self._gap_set(j, keys[i + 1] - prev_end, keys[i + 1] - vma.vm_end)
        elif j + 1 < len(maxes):
            nstart = self._keys[j + 1][0]
            self._gap_set(j + 1, nstart - prev_end, nstart - vma.vm_end)
        self._gap_set(j, -1, start - prev_end)
        if n > 2 * self._load:
            self._split(j)

    def erase(self, vma: VMA) -> None:
        j, i = self._pos(vma.vm_start)
        keys, vmas = self._keys[j], self._vmas[j]
        if vmas[i] is not vma:
            raise KeyError(vma.vm_start)
        if self.notifiers:
            self._changed(vma.vm_start, vma.vm_end)
        prev_end = self._prev_end(j, i)
        below = vma.vm_start - prev_end
        del keys[i], vmas[i]
        self._len -= 1
        n = len(keys)
        if i < n:  # the gap below the next VMA (in this sublist) now reaches down to prev_end
            nstart = keys[i]
            self._gap_set(j, nstart - vma.vm_end, nstart - prev_end)
            self._gap_set(j, below, -1)
        else:
            self._gap_set(j, below, -1)
            if j + 1 < len(self._keys):
                nstart = self._keys[j + 1][0]
                self._gap_set(j + 1, nstart - vma.vm_end, nstart - prev_end)
            if n:
                self._maxes[j] = keys[-1]
        if not n:
            del self._keys[j], self._vmas[j], self._maxes[j], self._gap[j], self._cnt[j]
            self._seg_ok = False
        elif n < self._load >> 2:
            self._join(j)

    def set_start(self, vma: VMA, start: int) -> None:
        """Move ``vma.vm_start`` in place (between the VMA before it and its own end): vma_set_range(),
        expand_downwards()."""
        j, i = self._pos(vma.vm_start)
        old = vma.vm_start
        vma.vm_start = start
        if self.notifiers:
            self._changed(min(old, start), vma.vm_end)
        keys = self._keys[j]
        keys[i] = start
        if i == len(keys) - 1:
            self._maxes[j] = start
        prev_end = self._prev_end(j, i)
        self._gap_set(j, old - prev_end, start - prev_end)

    def set_end(self, vma: VMA, end: int) -> None:
        """Move ``vma.vm_end`` in place (below the next VMA's start): a merge, a split, an expansion."""
        old = vma.vm_end
        vma.vm_end = end
        if old == end:
            return
        if self.notifiers:
            self._changed(vma.vm_start, max(old, end))
        j, i = self._pos(vma.vm_start)
        if i + 1 < len(self._keys[j]):
            nj, nstart = j, self._keys[j][i + 1]
        elif j + 1 < len(self._keys):
            nj, nstart = j + 1, self._keys[j + 1][0]
        else:
            return
        self._gap_set(nj, nstart - old, nstart - end)

    def rekey(self, vma: VMA, old_start: int) -> None:
        """Call after changing ``vma.vm_start`` (and perhaps ``vm_end``) of a VMA in the tree behind its
        back, keeping its order; prefer :meth:`set_start`."""
        j, i = self._pos(old_start)
        keys = self._keys[j]
        keys[i] = vma.vm_start
        if i == len(keys) - 1:
            self._maxes[j] = vma.vm_start
        self._unknown(j)
        self.end_changed(vma)

    def end_changed(self, vma: VMA) -> None:
        """Call after changing ``vma.vm_end`` of a VMA in the tree behind its back; prefer :meth:`set_end`."""
        j, i = self._pos(vma.vm_start)
        if i + 1 < len(self._keys[j]):
            self._unknown(j)
        elif j + 1 < len(self._keys):
            self._unknown(j + 1)

    def _unknown(self, j: int) -> None:
        self._gap[j] = -1
        self._dirty.add(j)

    # -- queries ---------------------------------------------------------------------------------------
    def _floor_pos(self, addr: int) -> tuple[int, int] | None:
        """The position of the last VMA with ``vm_start <= addr``."""
        maxes = self._maxes
        j = bisect_right(maxes, addr)
        if j == len(maxes):
            return (j - 1, len(self._keys[j - 1]) - 1) if j else None
        i = bisect_right(self._keys[j], addr)
        if i:
            return j, i - 1
        return (j - 1, len(self._keys[j - 1]) - 1) if j else None

    def _ceil_pos(self, addr: int) -> tuple[int, int] | None:
        """The position of the first VMA with ``vm_start >= addr``."""
        maxes = self._maxes
        j = bisect_left(maxes, addr)
        if j == len(maxes):
            return None
        return j, bisect_left(self._keys[j], addr)

    def find(self, addr: int) -> VMA | None:
        """find_vma(): the first VMA with ``vm_end > addr``: one descent."""
        maxes = self._maxes
        j = bisect_right(maxes, addr)
        if j == len(maxes):
            if not j:
                return None
            v = self._vmas[-1][-1]
            return v if v.vm_end > addr else None
        i = bisect_right(self._keys[j], addr)
        vmas = self._vmas[j]
        if i:
            v = vmas[i - 1]
        elif j:
            v = self._vmas[j - 1][-1]
        else:
            return vmas[0]
        return v if v.vm_end > addr else vmas[i]

    def lookup(self, addr: int) -> VMA | None:
        """vma_lookup(): the VMA containing ``addr``."""
        p = self._floor_pos(addr)
        if p is None:
            return None
        v = self._vmas[p[0]][p[1]]
        return v if v.vm_end > addr else None

    def find_intersection(self, start: int, end: int) -> VMA | None:
        """find_vma_intersection(): the first VMA intersecting ``[start, end)``."""
        v = self.find(start)
        if v is not None and v.vm_start < end:
            return v
        return None

    def around(self, start: int, end: int) -> tuple[VMA | None, VMA | None, VMA | None]:
        """One descent for a new range ``[start, end)``: (the first VMA intersecting it, or None; the VMA
        before the range; the VMA after it).  The last two are meaningful only when nothing intersects
        (then they are ``vma_prev()`` / ``vma_next()`` of __mmap_setup())."""
        p = self._floor_pos(start)
        if p is None:
            if not self._len:
                return None, None, None
            first = self._vmas[0][0]
            return (first, None, None) if first.vm_start < end else (None, None, first)
        j, i = p
        v = self._vmas[j][i]
        if v.vm_end > start:
            return v, None, None
        q = self._after(j, i)
        if q is None:
            return None, v, None
        n = self._vmas[q[0]][q[1]]
        return (n, None, None) if n.vm_start < end else (None, v, n)

    def prev(self, vma_or_addr: VMA | int) -> VMA | None:
        """The last VMA that starts before the given VMA (or address) and does not contain the address."""
        addr = vma_or_addr if isinstance(vma_or_addr, int) else vma_or_addr.vm_start
        p = self._floor_pos(addr - 1)
        if p is None:
            return None
        j, i = p
        v = self._vmas[j][i]
        if v.vm_end <= addr:
            return v
        if i:
            return self._vmas[j][i - 1]
        return self._vmas[j - 1][-1] if j else None

    def next(self, vma_or_addr: VMA | int) -> VMA | None:
        """The first VMA starting at or after the given VMA's end (or address)."""
        addr = vma_or_addr if isinstance(vma_or_addr, int) else vma_or_addr.vm_end
        p = self._ceil_pos(addr)
        return None if p is None else self._vmas[p[0]][p[1]]

    def range(self, start: int, end: int) -> list[VMA]:
        """All VMAs intersecting ``[start, end)``, in order."""
        out: list[VMA] = []
        v = self.find(start)
        if v is None or v.vm_start >= end:
            return out
        j, i = self._pos(v.vm_start)
        keys, vmas = self._keys, self._vmas
        nsub = len(keys)
        while True:
            ks = keys[j]
            k = bisect_left(ks, end, i)
            out.extend(vmas[j][i:k])
            if k < len(ks) or j + 1 >= nsub:
                return out
            j, i = j + 1, 0

    def last_below(self, addr: int) -> VMA | None:
        """The VMA with the highest ``vm_start < addr`` (whether or not it contains ``addr``)."""
        p = self._floor_pos(addr - 1)
        return None if p is None else self._vmas[p[0]][p[1]]

    def iter_from_top(self, below: int) -> Iterator[VMA]:
        """VMAs with ``vm_start < below``, highest first."""
        v = self.last_below(below)
        while v is not None:
            yield v
            v = self.last_below(v.vm_start)

    def iter_from(self, addr: int) -> Iterator[VMA]:
        """VMAs with ``vm_end > addr``, lowest first."""
        v = self.find(addr)
        while v is not None:
            yield v
            v = self.next(v.vm_end)

    def first(self) -> VMA | None:
        return self._vmas[0][0] if self._len else None

    def last(self) -> VMA | None:
        return self._vmas[-1][-1] if self._len else None

    # -- the gap search --------------------------------------------------------------------------------
    def gap_down(self, key: int, length: int, floor: int) -> tuple[int, int] | None:
        """The highest VMA start ``s`` with ``floor < s <= key`` whose gap below (``s`` minus the end of
        the VMA before it, or minus 0 for the lowest VMA) is at least ``length``: ``(s, that end)``.
        ``key`` must be a VMA start.  O(log n): the segment tree names the sublist, which is scanned
        from the top in chunks of 32 VMAs."""
        self._flush()
        j, i = self._pos(key)
        keys, vmas = self._keys, self._vmas
        if self._gap[j] < length:
            j = self._seg_below(j, length)
            if j < 0:
                return None
            i = len(keys[j]) - 1
        while True:
            ks, vs = keys[j], vmas[j]
            if ks[i] <= floor:
                return None
            lo = i - 31 if i > 31 else 0
            ends = [vs[lo - 1].vm_end if lo else (vmas[j - 1][-1].vm_end if j else 0)]
            ends.extend(map(_END, vs[lo:i]))
            fits = list(map(length.__le__, map(sub, ks[lo:i + 1], ends)))
            fits.reverse()
            try:
                idx = i - fits.index(True)
            except ValueError:
                if lo:
                    i = lo - 1
                    continue
                j = self._seg_below(j, length)
                if j < 0:
                    return None
                i = len(keys[j]) - 1
                continue
            s = ks[idx]
            return (s, ends[idx - lo]) if s > floor else None

    def gap_up(self, key: int, length: int, ceil: int) -> tuple[int, int] | None:
        """The lowest VMA start ``s`` with ``key < s < ceil`` whose gap below is at least ``length``:
        ``(s, the end of the VMA before it)``.  ``key`` must be a VMA start."""
        self._flush()
        j, i = self._pos(key)
        keys, vmas = self._keys, self._vmas
        i += 1
        if i == len(keys[j]) or self._gap[j] < length:
            j = self._seg_above(j, length)
            if j < 0:
                return None
            i = 0
        while True:
            ks, vs = keys[j], vmas[j]
            if ks[i] >= ceil:
                return None
            hi = i + 32
            ends = [vs[i - 1].vm_end if i else (vmas[j - 1][-1].vm_end if j else 0)]
            ends.extend(map(_END, vs[i:hi - 1]))
            fits = list(map(length.__le__, map(sub, ks[i:hi], ends)))
            try:
                idx = fits.index(True)
            except ValueError:
                if hi < len(ks):
                    i = hi
                    continue
                j = self._seg_above(j, length)
                if j < 0:
                    return None
                i = 0
                continue
            s = ks[i + idx]
            return (s, ends[idx]) if s < ceil else None

    def max_gap(self) -> int:
        """The largest gap below any VMA (-1 for an empty tree), from the summaries."""
        self._flush()
        return max(self._gap, default=-1)

    def check_gaps(self) -> list[str]:
        """validate_mm's check of the tree itself: the sublists, their keys and maxima, and that no known
        gap summary (and no up-to-date leaf of the segment tree) is stale."""
        problems: list[str] = []
        m = len(self._keys)
        if not (len(self._vmas) == len(self._maxes) == len(self._gap) == len(self._cnt) == m):
            return [f"tree: {m} key lists, {len(self._vmas)} VMA lists, {len(self._maxes)} maxima, "
                    f"{len(self._gap)} gap summaries"]
        if sum(map(len, self._keys)) != self._len:
            problems.append(f"tree: {self._len} VMAs counted, {sum(map(len, self._keys))} held")
        last = -1
        for j in range(m):
            ks, vs = self._keys[j], self._vmas[j]
            if not ks or len(ks) != len(vs):
                problems.append(f"tree: sublist {j} is empty or its lists differ in length")
                continue
            if ks[0] <= last or any(a >= b for a, b in zip(ks, ks[1:], strict=False)):
                problems.append(f"tree: keys of sublist {j} are out of order")
            if any(k != v.vm_start for k, v in zip(ks, vs, strict=True)):
                problems.append(f"tree: a key of sublist {j} is not its VMA's vm_start")
            if self._maxes[j] != ks[-1]:
                problems.append(f"tree: maximum of sublist {j} is {self._maxes[j]:#x}, not {ks[-1]:#x}")
            last = ks[-1]
        if problems:
            return problems
        for j, g in enumerate(self._gap):
            real, count = self._calc_gap(j)
            if g >= 0 and (g, self._cnt[j]) != (real, count):
                problems.append(f"stale gap summary of sublist {j}: {g:#x} x{self._cnt[j]}, "
                                f"really {real:#x} x{count}")
            if self._seg_ok and j not in self._dirty and self._seg[self._size + j] != g:
                problems.append(f"segment tree leaf of sublist {j} is stale")
        return problems


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
