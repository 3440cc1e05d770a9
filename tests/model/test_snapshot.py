"""mm.snapshot() / mm.restore(): a copy-on-write snapshot of a whole mm, and set_brk_base()."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vmalab import MM
from vmalab import constants as C
from vmalab.execute import default_layout
from vmalab.fdtable import install
from vmalab.pagetable import Page
from vmalab.procfs import import_maps, maps, smaps
from vmalab.realfile import open_real

P = 4096
RW = C.PROT_READ | C.PROT_WRITE
FIXED = C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_FIXED
BASE = 0x500000000000
COUNTERS = ("total_vm", "locked_vm", "data_vm", "exec_vm", "stack_vm", "committed", "hiwater_vm", "start_brk", "brk",
            "map_count", "next_anon_vma_id")


def _contents(p: Page) -> bytes:
    buf = bytearray(p.base or bytes(P))
    for off, v in p.data.items():
        buf[off] = v
    return bytes(buf)


def _state(mm: MM) -> tuple[object, ...]:
    pages = tuple((vpn, p.kind, p.mapcount, _contents(p)) for vpn, p in mm.pt.all_items())
    return (maps(mm), smaps(mm), pages, tuple(getattr(mm, c) for c in COUNTERS), mm.pt.rss, mm.pt.hiwater_rss,
            sorted(mm.pt.tables), sorted(mm.fdtable))


def _busy_mm(tmp_path: Path) -> MM:
    mm = MM()
    import_maps(mm, default_layout(8 << 20))
    mm.sys_brk(mm.sys_brk(0) + 5 * P)
    mm.mmap(BASE, 8 * P, RW, FIXED)
    mm.mprotect(BASE + 2 * P, P, C.PROT_READ)
    mm.write(BASE, b"first" * 300)
    mm.write(BASE + 4 * P, bytes(range(256)) * 16)
    mm.read(BASE + 6 * P, 10)
    mm.mlock(BASE + 7 * P, P)
    f = tmp_path / "file"
    f.write_bytes(os.urandom(3 * P))
    fd = install(mm, open_real(mm, str(f)))
    mm.mmap(BASE + 0x100000, 3 * P, RW, C.MAP_PRIVATE | C.MAP_FIXED, fd, 0)
    mm.read(BASE + 0x100000, 3 * P)
    mm.write(BASE + 0x100000 + P, b"cow")
    return mm


def test_restore_gives_back_maps_smaps_pages_and_counters(tmp_path: Path) -> None:
    mm = _busy_mm(tmp_path)
    before = _state(mm)
    snap = mm.snapshot()
    assert _state(mm) == before  # taking it changes nothing visible
    # change everything: writes, unmaps, new mappings, protections, brk, descriptors
    mm.write(BASE, b"SECOND" * 400)
    mm.write(BASE + 4 * P + 7, b"\0\0\0")
    mm.munmap(BASE + P, 3 * P)
    mm.mprotect(BASE + 5 * P, 2 * P, C.PROT_NONE)
    mm.mmap(BASE + 0x200000, 4 * P, RW, FIXED)
    mm.write(BASE + 0x200000, b"new")
    mm.sys_brk(mm.sys_brk(0) - 3 * P)
    mm.madvise(BASE + 0x100000, 3 * P, C.MADV_NAMES["MADV_DONTNEED"])
    mm.close(next(iter(mm.fdtable)))
    assert _state(mm) != before
    mm.restore(snap)
    mm.validate()
    assert _state(mm) == before
    # the snapshot stays usable: change again, restore again
    mm.write(BASE + 10, b"third")
    mm.restore(snap)
    assert _state(mm) == before
    mm.validate()


def test_writes_after_a_snapshot_do_not_leak_into_it() -> None:
    mm = MM()
    mm.mmap(BASE, 2 * P, RW, FIXED)
    mm.write(BASE, b"A" * 100)
    mm.write(BASE + P, bytes(range(256)) * 16)  # a compacted page (its bytes in Page.base)
    snap = mm.snapshot()
    mm.write(BASE, b"B" * 50)  # an anonymous page written in place (mapcount 1): its data is copied first
    mm.touch(BASE + 60, write=True, value=ord("C"))  # MM.touch's write path too
    mm.write(BASE + P, b"\xff" * P)
    assert mm.read(BASE, 3) == b"BBB"
    other = MM()
    other.mmap(BASE, 2 * P, RW, FIXED)
    other.restore(snap)  # a snapshot restores into any mm
    assert other.read(BASE, 100) == b"A" * 100 and other.read(BASE + P, P) == bytes(range(256)) * 16
    mm.restore(snap)
    assert mm.read(BASE, 100) == b"A" * 100 and mm.touch(BASE + 60) == ord("A")
    assert mm.read(BASE + P, P) == bytes(range(256)) * 16


def test_restore_does_not_change_a_child_forked_since() -> None:
    mm = MM()
    mm.mmap(BASE, 2 * P, RW, FIXED)
    mm.write(BASE, b"one")
    mm.write(BASE + P, b"uno")
    snap = mm.snapshot()
    mm.write(BASE, b"two")  # in place (mapcount 1)
    child = mm.fork()  # the child shares the page holding "two" and the one holding "uno"
    mm.write(BASE + P, b"dos")  # the parent copies; the child keeps "uno"
    child.write(BASE + P, b"UNO")  # now the child's alone: in place
    mm.restore(snap)
    assert mm.read(BASE, 3) == b"one" and mm.read(BASE + P, 3) == b"uno"
    assert child.read(BASE, 3) == b"two" and child.read(BASE + P, 3) == b"UNO"
    mm.validate()
    child.validate()
    # mapcounts still add up across both mms: a write in the child to the page it shares copies it
    child.write(BASE, b"xyz")
    assert mm.read(BASE, 3) == b"one"


def test_snapshot_is_not_a_fork() -> None:
    mm = MM()
    mm.mmap(BASE, 4 * P, RW, FIXED)
    committed, pid = mm.committed, mm.next_pid
    snap = mm.snapshot()
    assert (mm.committed, mm.next_pid, mm.children) == (committed, pid, {})
    assert len(list(snap.tree)) == 1 and next(iter(snap.tree)) is not mm.tree.lookup(BASE)


def test_restore_notifies_everything_stale() -> None:
    from vmalab.mmu_notifier import MmuNotifier

    seen: list[tuple[int, int, str]] = []

    class N(MmuNotifier):
        def invalidate_range(self, start: int, end: int, event: str) -> None:
            seen.append((start, end, event))

    mm = MM()
    mm.mmap(BASE, P, RW, FIXED)
    snap = mm.snapshot()
    n = N()
    mm.mmu_notifier_register(n)
    mm.restore(snap)
    assert seen == [(0, C.TASK_SIZE, "unmap")] and mm.notifiers == [n]
    mm.munmap(BASE, P)  # still subscribed after the restore (the new tree and page table report)
    assert seen[-1] == (BASE, BASE + P, "unmap")


def test_set_brk_base() -> None:
    mm = MM()
    assert mm.sys_brk(0) == 0
    mm.mmap(0x400000, 2 * P, RW, FIXED)  # an image loaded by an emulator
    mm.set_brk_base(0x403000)
    assert (mm.start_brk, mm.brk, mm.sys_brk(0)) == (0x403000, 0x403000, 0x403000)
    assert mm.sys_brk(0x405000) == 0x405000
    assert "[heap]" in maps(mm)
    mm.set_brk_base(0x600000, 0x600123)
    assert mm.sys_brk(0) == 0x600123
    with pytest.raises(ValueError):
        mm.set_brk_base(0x600001)
    with pytest.raises(ValueError):
        mm.set_brk_base(0x600000, 0x5FF000)
