"""Issue 11: every syscall walks the VMA tree under the mmap lock the kernel takes (6.18).

Write: mm/mremap.c do_mremap(), mm/mlock.c do_mlock() / SYSCALL munlock / mlockall / munlockall,
mm/mseal.c do_mseal(), mm/mmap.c SYSCALL brk, and mm/madvise.c madvise_lock() for the advices that change
VMA flags.  Read: mm/madvise.c get_lock_mode() (REMOVE, WILLNEED, COLD, PAGEOUT, POPULATE_*, COLLAPSE,
GUARD_*; DONTNEED, DONTNEED_LOCKED, FREE under the per-VMA read lock, whose fallback is the mmap read
lock), mm/msync.c SYSCALL msync and mm/mincore.c SYSCALL mincore.  The probe is the mode of
``mm.locks.mmap_lock`` whenever the syscall looks a VMA up."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from vmalab import constants as C
from vmalab.execute import ModelRunner
from vmalab.mm import MM
from vmalab.scenario import BASE, parse_scenario
from vmalab.vma_tree import VmaTree

K = C.PAGE_SIZE
RW = C.PROT_READ | C.PROT_WRITE
ANON = C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_FIXED


@contextmanager
def lock_modes(mm: MM, monkeypatch: pytest.MonkeyPatch) -> Iterator[set[str | None]]:
    """The mmap-lock modes seen whenever ``mm``'s VMA tree is searched inside the block."""
    seen: set[str | None] = set()
    for name in ("find", "lookup", "find_intersection", "prev", "range", "__iter__"):
        orig = getattr(VmaTree, name)

        def wrapped(self: VmaTree, *a: Any, _orig: Callable[..., Any] = orig, **kw: Any) -> Any:
            if self is mm.tree:
                seen.add(mm.locks.mmap_lock)
            return _orig(self, *a, **kw)
        monkeypatch.setattr(VmaTree, name, wrapped)
    yield seen
    monkeypatch.undo()


def _mm() -> MM:
    mm = ModelRunner(parse_scenario({"name": "locks", "ops": []})).mm  # the runner's layout (with a heap)
    assert mm.sys_mmap(BASE, 8 * K, RW, ANON, -1, 0) == BASE
    return mm


WRITE: list[tuple[str, Callable[[MM], Any]]] = [
    ("mremap", lambda mm: mm.sys_mremap(BASE, 8 * K, 4 * K, 0, 0)),
    ("mlock", lambda mm: mm.sys_mlock(BASE, K)),
    ("mlock2", lambda mm: mm.sys_mlock2(BASE, K, 1)),
    ("munlock", lambda mm: mm.sys_munlock(BASE, K)),
    ("mlockall", lambda mm: mm.sys_mlockall(5)),  # MCL_CURRENT|MCL_ONFAULT
    ("munlockall", lambda mm: mm.sys_munlockall()),
    ("mseal", lambda mm: mm.sys_mseal(BASE, K, 0)),
    ("brk", lambda mm: mm.sys_brk(mm.brk + 4 * K)),
    ("madvise DONTFORK", lambda mm: mm.sys_madvise(BASE, K, C.MADV_NAMES["MADV_DONTFORK"])),
    ("madvise NOHUGEPAGE", lambda mm: mm.sys_madvise(BASE, K, C.MADV_NAMES["MADV_NOHUGEPAGE"])),
    ("madvise WIPEONFORK", lambda mm: mm.sys_madvise(BASE, K, C.MADV_NAMES["MADV_WIPEONFORK"])),
]

READ_ADVICE = ["MADV_REMOVE", "MADV_WILLNEED", "MADV_COLD", "MADV_PAGEOUT", "MADV_FREE", "MADV_POPULATE_READ",
               "MADV_POPULATE_WRITE", "MADV_COLLAPSE", "MADV_GUARD_INSTALL", "MADV_GUARD_REMOVE", "MADV_DONTNEED",
               "MADV_DONTNEED_LOCKED"]

READ: list[tuple[str, Callable[[MM], Any]]] = [
    ("msync", lambda mm: mm.sys_msync(BASE, 8 * K, 4)),  # MS_SYNC
    ("mincore", lambda mm: mm.sys_mincore(BASE, 8 * K)),
    *[(f"madvise {a}", lambda mm, a=a: mm.sys_madvise(BASE, 8 * K, C.MADV_NAMES[a])) for a in READ_ADVICE],
]


@pytest.mark.parametrize("what,call", WRITE, ids=[w for w, _ in WRITE])
def test_write_locked(what: str, call: Callable[[MM], Any], monkeypatch: pytest.MonkeyPatch) -> None:
    mm = _mm()
    with lock_modes(mm, monkeypatch) as seen:
        call(mm)
    assert "write" in seen and None not in seen, (what, seen)


@pytest.mark.parametrize("what,call", READ, ids=[w for w, _ in READ])
def test_read_locked(what: str, call: Callable[[MM], Any], monkeypatch: pytest.MonkeyPatch) -> None:
    mm = _mm()
    with lock_modes(mm, monkeypatch) as seen:
        call(mm)
    assert seen == {"read"}, (what, seen)
    assert mm.locks.mmap_lock is None
