"""MMU notifiers (vmalab.mmu_notifier): a recording notifier sees exactly the ranges the kernel's
mmu_notifier_invalidate_range_start() callers name (mm/vma.c: unmap_vmas() over the whole munmap range,
mm/mprotect.c: change_protection() per changed VMA part, mm/mremap.c: move_page_tables() of the source,
mm/madvise.c: zap_page_range_single(), mm/memory.c: copy_page_range() of a COW mapping, mm/mmap.c:
exit_mmap()'s mmu_notifier_release() first)."""

from __future__ import annotations

import errno
from typing import Any

from vmalab import MM
from vmalab import constants as C
from vmalab.execute import default_layout
from vmalab.mmu_notifier import MmuNotifier
from vmalab.pagetable import Page
from vmalab.procfs import import_maps

P = 4096
RW = C.PROT_READ | C.PROT_WRITE
ANON = C.MAP_PRIVATE | C.MAP_ANONYMOUS
FIXED = ANON | C.MAP_FIXED
BASE = 0x500000000000


class Recorder(MmuNotifier):
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def invalidate_range(self, start: int, end: int, event: str) -> None:
        self.events.append(("inv", start, end, event))

    def pte_set(self, vpn: int, page: Page) -> None:
        self.events.append(("pte", vpn, page.kind))

    def vma_changed(self, start: int, end: int) -> None:
        self.events.append(("vma", start, end))

    def release(self) -> None:
        self.events.append(("release",))

    def take(self, kind: str | None = None) -> list[tuple[Any, ...]]:
        ev, self.events = self.events, []
        return [e for e in ev if kind is None or e[0] == kind]


def _mm() -> tuple[MM, Recorder]:
    mm = MM()
    r = Recorder()
    mm.mmu_notifier_register(r)
    return mm, r


def _covered(events: list[tuple[Any, ...]]) -> list[tuple[int, int]]:
    """The union of the vma_changed ranges, as sorted disjoint intervals."""
    out: list[list[int]] = []
    for _k, s, e in sorted(events, key=lambda x: x[1]):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


def test_mmap_reports_the_new_vma_and_no_invalidation() -> None:
    mm, r = _mm()
    a = mm.mmap(BASE, 4 * P, RW, FIXED)
    assert r.take() == [("vma", a, a + 4 * P)]
    mm.mmap(BASE + 4 * P, 2 * P, RW, FIXED)  # merges: the old VMA grows
    assert _covered(r.take("vma")) == [(BASE, BASE + 6 * P)]


def test_faults_report_pte_set_and_cow_replacement() -> None:
    mm, r = _mm()
    mm.mmap(BASE, 2 * P, RW, FIXED)
    r.take()
    mm.touch(BASE)  # read: the zero page
    mm.touch(BASE, write=True)  # write: the zero page replaced by an anonymous page
    mm.touch(BASE, write=True)  # present and writable: nothing
    assert r.take() == [("pte", BASE >> 12, "zero"), ("pte", BASE >> 12, "anon")]


def test_munmap_across_holes_is_one_unmap_of_the_whole_range() -> None:
    mm, r = _mm()
    for i in (0, 2, 4):
        mm.mmap(BASE + i * P, P, RW, FIXED)
    r.take()
    mm.munmap(BASE, 5 * P)
    ev = r.take()
    assert [e for e in ev if e[0] == "inv"] == [("inv", BASE, BASE + 5 * P, "unmap")]
    assert sorted(e for e in ev if e[0] == "vma") == [("vma", BASE + i * P, BASE + (i + 1) * P) for i in (0, 2, 4)]
    mm.munmap(BASE, 5 * P)  # nothing mapped: do_vmi_munmap() returns before unmap_vmas()
    assert r.take() == []


def test_munmap_of_part_splits_then_unmaps_the_requested_range() -> None:
    mm, r = _mm()
    mm.mmap(BASE, 4 * P, RW, FIXED)
    r.take()
    mm.munmap(BASE + P, 2 * P)
    ev = r.take()
    assert [e for e in ev if e[0] == "inv"] == [("inv", BASE + P, BASE + 3 * P, "unmap")]
    assert _covered([e for e in ev if e[0] == "vma"]) == [(BASE, BASE + 4 * P)]


def test_map_fixed_over_mappings_unmaps_the_new_range() -> None:
    mm, r = _mm()
    mm.mmap(BASE, P, RW, FIXED)
    mm.mmap(BASE + 2 * P, 2 * P, C.PROT_READ, FIXED)
    mm.touch(BASE, write=True)
    r.take()
    mm.mmap(BASE, 3 * P, C.PROT_READ, FIXED)
    ev = r.take()
    assert [e for e in ev if e[0] == "inv"] == [("inv", BASE, BASE + 3 * P, "unmap")]
    assert mm.page_at(BASE) is None
    # MAP_FIXED_NOREPLACE over a mapping fails: no event at all
    assert mm.sys_mmap(BASE, P, RW, ANON | C.MAP_FIXED_NOREPLACE, -1, 0) == -errno.EEXIST
    assert r.take() == []


def test_mprotect_split_and_merge_protect_exactly_the_changed_parts() -> None:
    mm, r = _mm()
    mm.mmap(BASE, 4 * P, RW, FIXED)
    r.take()
    mm.mprotect(BASE + P, P, C.PROT_READ)
    ev = r.take()
    assert [e for e in ev if e[0] == "inv"] == [("inv", BASE + P, BASE + 2 * P, "protect")]
    assert _covered([e for e in ev if e[0] == "vma"]) == [(BASE, BASE + 4 * P)]
    mm.mprotect(BASE, 4 * P, RW)  # only the middle VMA changes flags: one protect, then the merge
    ev = r.take()
    assert [e for e in ev if e[0] == "inv"] == [("inv", BASE + P, BASE + 2 * P, "protect")]
    assert _covered([e for e in ev if e[0] == "vma"]) == [(BASE, BASE + 4 * P)]
    assert len(mm.tree.range(BASE, BASE + 4 * P)) == 1
    mm.mprotect(BASE, 4 * P, RW)  # no change: mprotect_fixup() returns early, nothing is invalidated
    assert r.take() == []


def test_mprotect_across_several_vmas_protects_each_part() -> None:
    mm, r = _mm()
    mm.mmap(BASE, 2 * P, RW, FIXED)
    mm.mmap(BASE + 2 * P, 2 * P, C.PROT_READ, FIXED)
    r.take()
    mm.mprotect(BASE + P, 2 * P, C.PROT_NONE)
    assert r.take("inv") == [("inv", BASE + P, BASE + 2 * P, "protect"),
                             ("inv", BASE + 2 * P, BASE + 3 * P, "protect")]


def test_mremap_move_grow_and_shrink() -> None:
    mm, r = _mm()
    mm.mmap(BASE, 2 * P, RW, FIXED)
    mm.touch(BASE, write=True, value=7)
    mm.touch(BASE + P, write=True, value=8)
    r.take()
    # grow in place: only the VMA changes
    assert mm.mremap(BASE, 2 * P, 3 * P) == BASE
    assert r.take("inv") == []
    # shrink: the tail is unmapped
    mm.mremap(BASE, 3 * P, 2 * P)
    assert r.take("inv") == [("inv", BASE + 2 * P, BASE + 3 * P, "unmap")]
    # move: the source is invalidated as moved, the PTEs are set at the destination, the source unmapped
    dst = BASE + 0x100000
    flags = C.MREMAP_NAMES["MREMAP_MAYMOVE"] | C.MREMAP_NAMES["MREMAP_FIXED"]
    assert mm.mremap(BASE, 2 * P, 2 * P, flags, dst) == dst
    ev = [e for e in r.take() if e[0] != "vma"]
    assert ev == [("inv", BASE, BASE + 2 * P, "move"), ("pte", dst >> 12, "anon"), ("pte", (dst >> 12) + 1, "anon"),
                  ("inv", BASE, BASE + 2 * P, "unmap")]
    assert mm.touch(dst + P) == 8


def test_madvise_dontneed_zaps_and_free_clears() -> None:
    mm, r = _mm()
    mm.mmap(BASE, 4 * P, RW, FIXED)
    for i in range(4):
        mm.touch(BASE + i * P, write=True)
    r.take()
    mm.madvise(BASE + P, 2 * P, C.MADV_NAMES["MADV_DONTNEED"])
    assert r.take() == [("inv", BASE + P, BASE + 3 * P, "zap")]
    mm.madvise(BASE, P, C.MADV_NAMES["MADV_FREE"])
    assert r.take() == [("inv", BASE, BASE + P, "zap")]
    mm.madvise(BASE, 4 * P, C.MADV_NAMES["MADV_NOHUGEPAGE"])  # a flag advice: VMAs change, no PTE does
    ev = r.take()
    assert ev and all(e[0] == "vma" for e in ev)


def test_brk_shrink_unmaps_the_released_heap() -> None:
    mm = MM()
    import_maps(mm, default_layout(8 << 20))
    r = Recorder()
    mm.mmu_notifier_register(r)
    top = mm.sys_brk(0)
    assert mm.sys_brk(top + 4 * P) == top + 4 * P
    assert r.take("inv") == []
    assert mm.sys_brk(top + P) == top + P
    assert r.take("inv") == [("inv", top + P, top + 4 * P, "unmap")]


def test_fork_write_protects_the_parents_cow_mappings_only() -> None:
    mm, r = _mm()
    mm.mmap(BASE, 2 * P, RW, FIXED)
    mm.mmap(BASE + 4 * P, P, RW, C.MAP_SHARED | C.MAP_ANONYMOUS | C.MAP_FIXED)
    mm.touch(BASE, write=True, value=1)
    mm.touch(BASE + P, write=True, value=1)
    mm.touch(BASE + 4 * P, write=True, value=2)
    r.take()
    child = mm.fork()
    assert r.take() == [("inv", BASE, BASE + 2 * P, "protect")]  # the shared one stays writable
    assert child.notifiers == []
    child.touch(BASE, write=True, value=3)  # the child's COW: the parent hears nothing
    assert r.take() == []
    mm.touch(BASE, write=True, value=4)  # the child copied it: the parent's page is reused in place
    assert r.take() == []
    mm.touch(BASE + P, write=True, value=5)  # still shared: the parent's PTE is replaced by a copy
    assert r.take() == [("pte", (BASE + P) >> 12, "anon")]
    assert (mm.touch(BASE), child.touch(BASE), mm.touch(BASE + P), child.touch(BASE + P)) == (4, 3, 5, 1)


def test_exit_releases_first_and_sends_nothing_after() -> None:
    mm, r = _mm()
    mm.mmap(BASE, 2 * P, RW, FIXED)
    mm.touch(BASE, write=True)
    r.take()
    mm.exit_mmap()
    assert r.take() == [("release",)]
    assert mm.notifiers == [] and mm.map_count == 0


def test_unregister_and_double_register() -> None:
    mm, r = _mm()
    mm.mmu_notifier_register(r)  # once only
    mm.mmap(BASE, P, RW, FIXED)
    assert r.take() == [("vma", BASE, BASE + P)]
    mm.mmu_notifier_unregister(r)
    mm.munmap(BASE, P)
    assert r.take() == []


def test_guard_install_and_truncate_zap() -> None:
    mm, r = _mm()
    mm.mmap(BASE, 2 * P, RW, FIXED)
    r.take()
    mm.madvise(BASE, P, C.MADV_NAMES["MADV_GUARD_INSTALL"])
    ev = r.take()
    assert ("pte", BASE >> 12, "guard") in ev and ev[-1] == ("inv", BASE, BASE + P, "zap")
    fd = mm.open_file("/tmp/f", 4 * P)
    mm.mmap(BASE + 8 * P, 4 * P, C.PROT_READ, C.MAP_SHARED | C.MAP_FIXED, fd, 0)
    r.take()
    mm.ftruncate(fd, P)
    assert r.take("inv") == [("inv", BASE + 9 * P, BASE + 12 * P, "zap")]
