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
from vmalab.files import VmOperations
from vmalab.mm import MM
from vmalab.mm_types import VMA
from vmalab.scenario import BASE, parse_scenario
from vmalab.vma import vma_modify
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


#: the probe wraps VmaTree's methods, which compiled callers bind at compile time
PROBE_NEEDS_PURE = pytest.mark.pure_only(reason="the probe monkeypatches VmaTree methods, which compiled callers "
                                         "bind at compile time")


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


@PROBE_NEEDS_PURE
@pytest.mark.parametrize("what,call", WRITE, ids=[w for w, _ in WRITE])
def test_write_locked(what: str, call: Callable[[MM], Any], monkeypatch: pytest.MonkeyPatch) -> None:
    mm = _mm()
    with lock_modes(mm, monkeypatch) as seen:
        call(mm)
    assert "write" in seen and None not in seen, (what, seen)


@PROBE_NEEDS_PURE
@pytest.mark.parametrize("what,call", READ, ids=[w for w, _ in READ])
def test_read_locked(what: str, call: Callable[[MM], Any], monkeypatch: pytest.MonkeyPatch) -> None:
    mm = _mm()
    with lock_modes(mm, monkeypatch) as seen:
        call(mm)
    assert seen == {"read"}, (what, seen)
    assert mm.locks.mmap_lock is None


# -- the per-VMA write locks a driver callback sees (vma_start_write(), 6.18) ----------------------------
class _Recorder(VmOperations):
    """vm_ops whose ->open / ->close record, for the VMA they get: is it write-locked (by identity), and
    which ``vma:`` locks are held (the names of the write-locked VMAs still in the tree)."""

    def __init__(self, mm: MM) -> None:
        self.mm = mm
        self.seen: list[tuple[str, VMA, bool, frozenset[str]]] = []

    def _note(self, what: str, vma: VMA) -> None:
        vmas = frozenset(h for h in self.mm.locks.held() if h.startswith("vma:"))
        self.seen.append((what, vma, self.mm.locks.vma_write_locked(vma), vmas))

    def open(self, vma: VMA) -> None:
        self._note("open", vma)

    def close(self, vma: VMA) -> None:
        self._note("close", vma)


def _recorded(pages: int = 8) -> tuple[MM, _Recorder]:
    mm = _mm()
    rec = _Recorder(mm)
    vma = mm.tree.lookup(BASE)
    assert vma is not None and vma.vm_end == BASE + pages * K
    vma.vm_ops = rec
    return mm, rec


def test_split_open_sees_no_lock_on_either_vma() -> None:
    """mm/vma.c: __split_vma() calls vm_ops->open(new) before vma_start_write(vma) and
    vma_start_write(new): the first split of a syscall runs ->open with no VMA write-locked."""
    mm, rec = _recorded()
    assert mm.sys_mprotect(BASE + 4 * K, 4 * K, C.PROT_READ) == 0
    what, new, locked, vmas = rec.seen[0]
    assert what == "open" and not locked and vmas == frozenset()
    assert mm.locks.vma_locks == {}  # dropped with the mmap write lock


def test_callback_after_a_split_sees_the_split_vmas_locked() -> None:
    """mprotect of the middle of a VMA splits twice (vma_modify()): the second ->open sees both VMAs of
    the first split write-locked, under their new starts (the lock follows the VMA, not its address)."""
    mm, rec = _recorded()
    assert mm.sys_mprotect(BASE + 2 * K, 2 * K, C.PROT_READ) == 0
    assert [w for w, *_ in rec.seen] == ["open", "open"]
    _, new, locked, vmas = rec.seen[1]
    assert not locked  # the VMA being created is still not locked
    assert vmas == {f"vma:{BASE:#x}", f"vma:{BASE + 2 * K:#x}"}


def test_munmap_close_sees_its_vma_locked() -> None:
    """mm/vma.c: vms_gather_munmap_vmas() write-locks each VMA before detaching it, so ->close in
    vms_clean_up_area() runs on a write-locked (detached, so not named by held()) VMA; the split that
    cut it out left the remaining VMA locked too."""
    mm, rec = _recorded()
    assert mm.sys_munmap(BASE + 4 * K, 4 * K) == 0
    (w0, _, locked0, _), (w1, gone, locked1, vmas) = rec.seen
    assert (w0, locked0) == ("open", False)
    assert w1 == "close" and gone.vm_start == BASE + 4 * K and locked1
    assert vmas == {f"vma:{BASE:#x}"}


def test_merge_locks_the_expanded_vma() -> None:
    """mm/vma.c: vma_merge_existing_range() write-locks the VMA it changes and the neighbour it merges
    into: an mprotect that merges back lets a later ->close (munmap in the same mm lock hold) see it."""
    mm, rec = _recorded()
    assert mm.sys_mprotect(BASE, 4 * K, C.PROT_READ) == 0
    with mm.locks.mmap_write():
        vma = mm.tree.lookup(BASE)
        assert vma is not None
        got = vma_modify(mm, vma, None, BASE, BASE + 4 * K, vma.vm_flags | C.VM_WRITE)
        assert isinstance(got, VMA) and got.vm_start == BASE and got.vm_end == BASE + 8 * K
        assert mm.locks.vma_write_locked(got) and mm.locks.held() >= {f"vma:{BASE:#x}"}


def test_fork_open_sees_the_parent_vma_locked() -> None:
    """mm/mmap.c: dup_mmap() write-locks each parent VMA before copying it, so ->open on the child's
    copy runs with the parent's VMA write-locked (the child's copy itself is not)."""
    mm, rec = _recorded()
    parent_vma = mm.tree.lookup(BASE)
    child = mm.fork()
    what, copy, locked, vmas = rec.seen[0]  # locks as the parent's mm holds them
    assert what == "open" and copy is not parent_vma and copy is child.tree.lookup(BASE)
    assert not locked and not child.locks.vma_write_locked(copy)
    assert f"vma:{BASE:#x}" in vmas  # the parent's VMA (and every parent VMA copied before it)
    assert mm.locks.vma_locks == {}  # released with the parent's mmap lock
