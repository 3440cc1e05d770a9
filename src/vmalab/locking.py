"""Locks of the mmap path, and the driver-side mutex.

Models the locks a driver's callbacks can observe: ``mm->mmap_lock`` (an rwsem, held for write across
do_mmap and for read by mm_populate), the per-VMA write lock (``vma_start_write()``, held from the moment a
syscall links, splits, merges, modifies, detaches or (fork) copies a VMA until the mmap lock is released),
and a file's rmap lock (``mapping->i_mmap_rwsem``,
``i_mmap_lock_write()``).  :class:`LockState` records what is held; each callback the model makes is
traced with a snapshot of it, so a driver author (and the explorer) can see exactly what the kernel would
hold at that point.  :class:`Mutex` is the lock type drivers written for vmalab use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ._mypyc import mypyc_attr


class LockObserver(Protocol):
    """Told about every acquisition (``vmalab.lockcheck.LockChecker``, in the spirit of lockdep)."""

    def acquire(self, lock_class: str) -> None: ...

    def mutex_locked(self, m: Mutex) -> None: ...

    def mutex_unlocked(self, m: Mutex) -> None: ...


class _Vma(Protocol):
    """What the lock state needs of a VMA (``vmalab.mm_types.VMA``)."""

    vm_start: int


@mypyc_attr(native_class=False)
class LockError(RuntimeError):
    """A lock was used the way the kernel would WARN or deadlock on (double unlock, recursion).
    ``callback`` names the driver callback it happened in (set by the lock checker), if any."""

    callback: str = ""


@mypyc_attr(native_class=False)
class SelfDeadlock(LockError):
    """A driver callback took a lock its caller (the core) already holds in that context: the task would
    wait for itself forever."""


class Mutex:
    """A driver's ``struct mutex``: owned by at most one holder; relocking or unlocking an unheld mutex
    raises :class:`LockError` (the kernel would deadlock or WARN)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.held = False
        self.acquisitions = 0
        self.observer: LockObserver | None = None  # the lock checker of the MM the driver was opened in

    def lock(self) -> None:
        if self.held:
            raise LockError(f"mutex {self.name} locked twice (deadlock)")
        if self.observer is not None:
            self.observer.acquire(f"driver:{self.name}")
        self.held = True
        self.acquisitions += 1
        if self.observer is not None:
            self.observer.mutex_locked(self)

    def unlock(self) -> None:
        if not self.held:
            raise LockError(f"mutex {self.name} unlocked while not held")
        self.held = False
        if self.observer is not None:
            self.observer.mutex_unlocked(self)

    def __repr__(self) -> str:
        return f"Mutex({self.name}, {'held' if self.held else 'free'})"


class LockState:
    """What the model's mm holds right now (names such as ``mmap_lock:write``, ``vma:0x500000000000``,
    ``i_mmap:1042``)."""

    def __init__(self) -> None:
        self.mmap_lock: str | None = None  # None, "read" or "write"
        # the write-locked VMAs, keyed by object identity (id(vma) -> vma): a VMA keeps its lock when a
        # split or merge moves its vm_start, and a detached VMA stays locked until the mmap lock drops
        self.vma_locks: dict[int, _Vma] = {}
        self.attached: Callable[[_Vma], bool] | None = None  # is the VMA in the tree (set by MmStruct)
        self.i_mmap: set[int] = set()  # inode numbers whose rmap lock is held for write
        self.observer: LockObserver | None = None
        self.deferred: list[Callable[[], object]] = []  # task work: run when the mmap lock is dropped

    def defer(self, work: Callable[[], object]) -> None:
        """Run ``work`` now, or — while the mmap lock is held — once its outermost holder drops it (task
        work such as __fput() runs on the return to user space, after every mm lock is released)."""
        if self.mmap_lock is None:
            work()
        else:
            self.deferred.append(work)

    def vma_start_write(self, vma: _Vma) -> None:
        """vma_start_write(): write-lock one VMA until the mmap write lock is dropped (a no-op if held)."""
        self.vma_locks[id(vma)] = vma

    def vma_write_locked(self, vma: _Vma) -> bool:
        """Is this VMA object (not merely one at its address) write-locked?"""
        return self.vma_locks.get(id(vma)) is vma

    def held(self) -> frozenset[str]:
        """The held locks by name; ``vma:0x<start>`` for each write-locked VMA still in the tree."""
        out = set()
        if self.mmap_lock:
            out.add(f"mmap_lock:{self.mmap_lock}")
        attached = self.attached
        out.update(f"vma:{v.vm_start:#x}" for v in self.vma_locks.values() if attached is None or attached(v))
        out.update(f"i_mmap:{i}" for i in self.i_mmap)
        return frozenset(out)

    def mmap_write(self) -> MmapLockHold:
        """mmap_write_lock() ... mmap_write_unlock(); dropping the mmap lock also drops VMA write locks."""
        return MmapLockHold(self, True)

    def mmap_lock_acquire(self, write: bool) -> str | None:
        """mmap_write_lock() / mmap_read_lock(): the one implementation of a hold, used by
        :class:`MmapLockHold` and, without a context-manager object, by the hot syscalls
        (``outer = locks.mmap_lock_acquire(True); try: ... finally: locks.mmap_lock_release(outer, True)``).
        A read hold under an outer write hold stays a write hold.  Returns the outer mode."""
        outer = self.mmap_lock
        if outer is None and self.observer is not None:
            self.observer.acquire("mmap_lock")
        self.mmap_lock = "write" if write else (outer or "read")
        return outer

    def mmap_lock_release(self, outer: str | None, write: bool) -> None:
        """Drop a hold taken by :meth:`mmap_lock_acquire`: the outer mode comes back; leaving the
        outermost write hold drops the VMA write locks (vma_end_write_all()), and leaving the outermost
        hold runs the deferred task work."""
        self.mmap_lock = outer
        if outer is None:
            if write and self.vma_locks:
                self.vma_locks.clear()
            while self.deferred:
                self.deferred.pop(0)()

    def mmap_read(self) -> MmapLockHold:
        """mmap_read_lock() ... mmap_read_unlock() (a no-op under an outer write hold)."""
        return MmapLockHold(self, False)

    def lock_i_mmap(self, ino: int) -> None:
        if ino in self.i_mmap:
            raise LockError(f"i_mmap_rwsem of inode {ino} taken twice (deadlock)")
        if self.observer is not None:
            self.observer.acquire("i_mmap_rwsem")
        self.i_mmap.add(ino)

    def unlock_i_mmap(self, ino: int) -> None:
        if ino not in self.i_mmap:
            raise LockError(f"i_mmap_rwsem of inode {ino} released while not held")
        self.i_mmap.discard(ino)


class MmapLockHold:
    """One hold of ``mm->mmap_lock`` as a context manager (``with locks.mmap_write():``).  Nested holds
    restore the outer mode on exit; leaving the outermost write hold drops the VMA write locks, as
    mmap_write_unlock() does (vma_end_write_all())."""

    __slots__ = ("locks", "write", "outer")

    def __init__(self, locks: LockState, write: bool) -> None:
        self.locks = locks
        self.write = write
        self.outer: str | None = None

    def __enter__(self) -> None:
        self.outer = self.locks.mmap_lock_acquire(self.write)

    def __exit__(self, *exc: object) -> None:
        self.locks.mmap_lock_release(self.outer, self.write)


class _HasLocks(Protocol):
    locks: LockState


def driver_take_mmap_lock(mm: _HasLocks | LockState, write: bool = False) -> MmapLockHold:
    """A driver callback takes ``mm->mmap_lock`` (``mmap_read_lock(desc->mm)`` / ``mmap_write_lock()``) —
    ``with driver_take_mmap_lock(desc.mm): ...``.  The rwsem is not recursive: if the core already holds it
    in this context (every mmap callback runs under the write lock) the task deadlocks on itself, which
    raises :class:`SelfDeadlock`; otherwise it is an ordinary hold."""
    locks = mm if isinstance(mm, LockState) else mm.locks
    if locks.mmap_lock is not None:
        raise SelfDeadlock(f"mmap_lock taken for {'write' if write else 'read'} while this task already holds "
                           f"it for {locks.mmap_lock} (self-deadlock)")
    return MmapLockHold(locks, write)
