"""The O(log n) gap search of get_unmapped_area against the reference VMA-by-VMA walk.

Random layouts (with VM_GROWSDOWN VMAs, whose stack guard gap makes the search retry), alignment masks
and offsets, limits and lengths that exactly fit a gap; the tree uses tiny sublists so that the gap
summaries span many sublists, and is mutated in place (erase, rekey, vm_end changes) between searches so
that stale summaries would show."""

from __future__ import annotations

import errno

from hypothesis import given, settings
from hypothesis import strategies as st

from vmalab import constants as C
from vmalab.constants import TASK_SIZE, VM_GROWSDOWN, VM_SHADOW_STACK
from vmalab.layout import unmapped_area, unmapped_area_topdown
from vmalab.mm import MM
from vmalab.mm_types import VMA, MmStruct
from vmalab.vma_tree import VmaTree

P = C.PAGE_SIZE
BASE = 0x10000000
WINDOW = 4096  # pages: several stack guard gaps wide

# --- the reference: the VMA-by-VMA walks the package used before the gap summaries ------------------
def _unmapped_area_topdown_linear(mm: MmStruct, length: int, low_limit: int, high_limit: int,
                                  align_mask: int = 0, align_offset: int = 0, start_gap: int = 0) -> int:
    """The reference O(n) walk of :func:`unmapped_area_topdown`: VMA by VMA from the top."""
    want = length
    length = length + align_mask + start_gap
    low_limit = max(low_limit, mm.mmap_min_addr)
    tree = mm.tree
    while True:
        if high_limit <= low_limit or high_limit - low_limit < length:
            return -errno.ENOMEM
        found = None
        # Walk holes from the top: the hole above the highest VMA below high_limit first.
        nxt = tree.find(high_limit - 1)  # VMA at/after high_limit-1 (bounds the top hole)
        hole_hi = high_limit
        if nxt is not None and nxt.vm_start < high_limit:
            hole_hi = nxt.vm_start
            cursor = nxt.vm_start
        else:
            cursor = high_limit
        for v in tree.iter_from_top(cursor):
            lo = max(v.vm_end, low_limit)
            hi = hole_hi
            if hi > lo and hi - lo >= length:
                found = (lo, hi)
                break
            hole_hi = v.vm_start
            if hole_hi <= low_limit:
                break
        else:
            lo = low_limit
            hi = hole_hi
            if hi > lo and hi - lo >= length:
                found = (lo, hi)
        if found is None:
            return -errno.ENOMEM
        gap_end = found[1]
        gap = gap_end - want
        gap -= (gap - align_offset) & align_mask
        after = tree.find(gap_end)
        if after is not None and after.vm_flags & (VM_GROWSDOWN | VM_SHADOW_STACK):
            if after.start_gap() < gap_end:
                high_limit = after.start_gap()
                continue
        return gap


def _unmapped_area_linear(mm: MmStruct, length: int, low_limit: int, high_limit: int, align_mask: int = 0,
                          align_offset: int = 0, start_gap: int = 0) -> int:
    """The reference O(n) walk of :func:`unmapped_area`: VMA by VMA from ``low_limit``."""
    length = length + align_mask + start_gap
    low_limit = max(low_limit, mm.mmap_min_addr)
    tree = mm.tree
    while True:
        if high_limit <= low_limit or high_limit - low_limit < length:
            return -errno.ENOMEM
        found = None
        prev_end = low_limit
        for v in tree.iter_from(low_limit):
            if v.vm_start >= high_limit:
                break
            if v.vm_start > prev_end and v.vm_start - prev_end >= length:
                found = prev_end
                break
            prev_end = max(prev_end, v.vm_end)
        if found is None and min(high_limit, TASK_SIZE) - prev_end >= length:
            found = prev_end
        if found is None:
            return -errno.ENOMEM
        gap = found + start_gap
        gap += (align_offset - gap) & align_mask
        after = tree.find(gap)
        if after is not None and after.vm_flags & (VM_GROWSDOWN | VM_SHADOW_STACK):
            if after.start_gap() < gap + length - 1:
                low_limit = after.vm_end
                continue
        return gap


layouts = st.lists(st.tuples(st.integers(0, 600), st.integers(1, 300), st.booleans()), min_size=0,
                   max_size=40)


def _build(layout: list[tuple[int, int, bool]], load: int) -> tuple[MM, list[int]]:
    mm = MM()
    mm.tree = VmaTree(load=load)
    addr = BASE
    gaps = []
    for gap, size, down in layout:
        gaps.append(gap)
        addr += gap * P
        flags = C.VM_READ | C.VM_WRITE | (C.VM_GROWSDOWN if down else 0)
        mm.tree.insert(VMA(addr, addr + size * P, flags, addr >> C.PAGE_SHIFT))
        addr += size * P
    return mm, gaps


def _mutate(mm: MM, ops: list[tuple[int, int]]) -> None:
    """Erase VMAs, move starts and ends in place (kept inside the neighbours' gaps)."""
    tree = mm.tree
    for kind, pick in ops:
        vmas = list(tree)
        if not vmas:
            return
        i = pick % len(vmas)
        v = vmas[i]
        lo = vmas[i - 1].vm_end if i else BASE
        hi = vmas[i + 1].vm_start if i + 1 < len(vmas) else BASE + 2 * WINDOW * P
        if kind == 0:
            tree.erase(v)
        elif kind == 1:  # grow down (expand_downwards) or shrink from below
            new = lo + (pick // 7 % max(1, (v.vm_end - lo) // P)) * P
            old = v.vm_start
            v.vm_start = new
            tree.rekey(v, old)
        elif kind == 2:  # move vm_end in place (merge, split, mremap)
            new = v.vm_start + P + (pick // 7 % max(1, (hi - v.vm_start) // P)) * P
            v.vm_end = min(new, hi)
            tree.end_changed(v)
        elif kind == 3:  # toggle VM_GROWSDOWN in place: the search must not depend on summaries of it
            v.vm_flags ^= C.VM_GROWSDOWN
        elif kind == 4:  # the same start moves through the tree's API (exact summary upkeep)
            tree.set_start(v, lo + (pick // 7 % max(1, (v.vm_end - lo) // P)) * P)
        else:
            tree.set_end(v, min(v.vm_start + P + (pick // 7 % max(1, (hi - v.vm_start) // P)) * P, hi))
        assert not tree.check_gaps()


masks = st.sampled_from([0, P * 15, P * 255, (C.PMD_SIZE - P)])


@settings(max_examples=400, deadline=None)
@given(layout=layouts, load=st.sampled_from([4, 8, 1000]), data=st.data(),
       ops=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 10**6)), max_size=8),
       mask=masks, start_gap=st.sampled_from([0, P]))
def test_gap_search_matches_linear_walk(layout: list[tuple[int, int, bool]], load: int, data: st.DataObject,
                                        ops: list[tuple[int, int]], mask: int, start_gap: int) -> None:
    mm, gaps = _build(layout, load)
    mm.mmap_min_addr = data.draw(st.sampled_from([0, P, BASE + 100 * P]))
    _mutate(mm, ops)
    real_gaps = [g for g in gaps if g] or [1]
    for _ in range(6):
        length = data.draw(st.one_of(
            st.sampled_from(real_gaps).map(lambda g: g * P - mask - start_gap),  # fits exactly
            st.integers(1, 700).map(lambda n: n * P)))
        if length <= 0:
            length = P
        low = BASE + data.draw(st.integers(-20, WINDOW)) * P
        high = low + data.draw(st.integers(-5, 2 * WINDOW)) * P
        offset = data.draw(st.integers(0, 600)) * P
        args = (length, low, high, mask, offset, start_gap)
        assert unmapped_area_topdown(mm, *args) == _unmapped_area_topdown_linear(mm, *args), args
        assert unmapped_area(mm, *args) == _unmapped_area_linear(mm, *args), args
    assert not mm.tree.check_gaps()


def test_summaries_follow_splits_and_merges_of_sublists() -> None:
    """Hundreds of VMAs in sublists of 4: inserts split sublists, erases merge them; every summary that
    is clean stays exact and every search agrees with the walk."""
    mm = MM()
    mm.tree = VmaTree(load=4)
    vmas = []
    for i in range(300):
        s = BASE + (3 * i + (i % 5)) * 4 * P
        v = VMA(s, s + (1 + i % 3) * P, C.VM_READ, 0)
        mm.tree.insert(v)
        vmas.append(v)
        if i % 17 == 0:
            assert unmapped_area_topdown(mm, 3 * P, BASE, s) == _unmapped_area_topdown_linear(mm, 3 * P, BASE, s)
    for v in vmas[::3]:
        mm.tree.erase(v)
        assert not mm.tree.check_gaps()
    for length in (P, 4 * P, 9 * P, 12 * P, 40 * P):
        top = BASE + 4000 * 4 * P
        assert unmapped_area_topdown(mm, length, BASE, top) == _unmapped_area_topdown_linear(mm, length, BASE, top)
        assert unmapped_area(mm, length, BASE, top) == _unmapped_area_linear(mm, length, BASE, top)
    assert not mm.tree.check_gaps()


def test_validate_mm_sees_a_vm_end_changed_behind_the_trees_back() -> None:
    """Gaps of two pages everywhere but below the lowest VMA; a vm_end lowered without telling the tree
    makes one gap three pages, above the known maximum of its sublist: check_gaps() (and validate_mm)
    report the stale summary."""
    mm = MM()
    mm.tree = VmaTree(load=4)
    for i in range(40):
        mm.tree.insert(VMA(BASE + 4 * i * P, BASE + (4 * i + 2) * P, C.VM_READ, 0))
    assert mm.tree.max_gap() == BASE  # computes every summary: the gap below the lowest VMA
    assert not mm.tree.check_gaps()
    v = mm.tree.lookup(BASE + 80 * P)
    assert v is not None
    v.vm_end -= P  # not reported with set_end() / end_changed()
    assert any("stale gap summary" in p for p in mm.tree.check_gaps())
    mm.tree.end_changed(v)  # reported: the summary is recomputed at the next search
    assert not mm.tree.check_gaps()
    assert mm.tree.gap_up(BASE, 3 * P, TASK_SIZE) == (BASE + 84 * P, BASE + 81 * P)
