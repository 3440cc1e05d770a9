"""The VMA tree against a plain sorted list: random inserts, erases and in-place moves of starts and ends
with tiny and default sublist sizes; every query agrees with the list and the tree's own check passes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from vmalab import constants as C
from vmalab.mm_types import VMA
from vmalab.vma_tree import VmaTree

P = C.PAGE_SIZE
SLOTS = 400  # each slot is 4 pages; a VMA lives inside one slot, so order never changes


def _ref_find(vmas: list[VMA], addr: int) -> VMA | None:
    return next((v for v in vmas if v.vm_end > addr), None)


@settings(max_examples=150, deadline=None)
@given(load=st.sampled_from([4, 5, 16, 128]),
       ops=st.lists(st.tuples(st.integers(0, 3), st.integers(0, SLOTS - 1), st.integers(0, 3)), max_size=300),
       probes=st.lists(st.integers(0, SLOTS * 4 + 8), min_size=1, max_size=20))
def test_tree_agrees_with_a_sorted_list(load: int, ops: list[tuple[int, int, int]], probes: list[int]) -> None:
    tree = VmaTree(load=load)
    live: dict[int, VMA] = {}
    for kind, slot, k in ops:
        base = (slot * 4 + 1) * P
        v = live.get(slot)
        if v is None:
            if kind != 3:
                v = live[slot] = VMA(base + (k % 2) * P, base + (2 + k % 2) * P, C.VM_READ, 0)
                tree.insert(v)
        elif kind == 0:
            tree.erase(v)
            del live[slot]
        elif kind == 1:
            tree.set_start(v, base + (k % 2) * P if v.vm_end > base + (k % 2) * P else base)
        elif kind == 2:
            tree.set_end(v, max(v.vm_start + P, base + (1 + k) * P if k < 3 else base + 3 * P))
        if kind == 3 and slot % 7 == 0:  # a gap search now and then: summaries must be exact afterwards
            tree.max_gap()
        assert not tree.check_gaps()
    ref = sorted(live.values(), key=lambda v: v.vm_start)
    assert list(tree) == ref and len(tree) == len(ref)
    assert tree.first() is (ref[0] if ref else None) and tree.last() is (ref[-1] if ref else None)
    for p in probes:
        addr = p * P
        assert tree.find(addr) is _ref_find(ref, addr)
        assert tree.lookup(addr) is next((v for v in ref if v.vm_start <= addr < v.vm_end), None)
        assert tree.next(addr) is next((v for v in ref if v.vm_start >= addr), None)
        before = [v for v in ref if v.vm_start < addr and v.vm_end <= addr]
        assert tree.prev(addr) is (before[-1] if before else None)
        below = [v for v in ref if v.vm_start < addr]
        assert tree.last_below(addr) is (below[-1] if below else None)
        end = addr + 3 * P
        inside = [v for v in ref if v.vm_start < end and v.vm_end > addr]
        assert tree.range(addr, end) == inside
        first, prev, nxt = tree.around(addr, end)
        assert first is (inside[0] if inside else None)
        if not inside:
            assert prev is (before[-1] if before else None)
            assert nxt is next((v for v in ref if v.vm_start >= end), None)
        assert list(tree.iter_from(addr)) == [v for v in ref if v.vm_end > addr]
        assert list(tree.iter_from_top(addr)) == below[::-1]
    gaps = [v.vm_start - (ref[i - 1].vm_end if i else 0) for i, v in enumerate(ref)]
    assert tree.max_gap() == max(gaps, default=-1)
    assert not tree.check_gaps()


def test_erase_of_a_vma_not_in_the_tree_is_a_key_error() -> None:
    tree = VmaTree()
    a = VMA(P, 2 * P, C.VM_READ, 0)
    tree.insert(a)
    twin = VMA(P, 2 * P, C.VM_READ, 0)
    try:
        tree.erase(twin)
    except KeyError:
        pass
    else:
        raise AssertionError("erasing a different VMA object at the same start must fail")
    assert list(tree) == [a] and not tree.check_gaps()
