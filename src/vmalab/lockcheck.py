"""A lock checker for the driver contract, in the spirit of lockdep.

:class:`LockChecker` is attached to one mm as its probe's observer (``mm.probe.observer``; every driver
callback goes through ``MmStruct.callback``, which hands it here) and told about every acquisition
(``mm.locks.observer`` and the driver mutexes bound to it).  It reports:

* ``held-across-core`` — a driver :class:`~vmalab.locking.Mutex` still held when a callback returns to the
  core (the seed reviewer's "grab locks in mmap_prepare, and hold them across core mmap()");
* ``contract`` — a callback called without the locks the contract promises (:data:`CONTRACT`, per
  profile: mmap_lock for write at every callback; no VMA for the range during core ``mmap_prepare``; the
  new VMA attached and write-locked during ``mapped`` / ``success_hook`` / ``finish(0)``; ``i_mmap_rwsem``
  held there iff the action asked ``hide_from_rmap_until_complete``; never held during the error hook or
  an unmap's ``->close``);
* ``lock-order`` — cycles in the acquisition-order graph (:class:`LockOrderGraph`: an edge A -> B for
  every B taken while A is held, recorded across runs by lock *class*: ``mmap_lock``, ``vma_lock``,
  ``i_mmap_rwsem``, ``driver:NAME``);
* ``lock-error`` — a :class:`~vmalab.locking.LockError` (double unlock, relock = deadlock), recorded by
  the caller that catches it (:mod:`vmalab.explore`).

Models the checks of kernel/locking/lockdep.c (held-lock tracking, dependency graph, circular-dependency
report) applied to the rules of Documentation/filesystems/mmap_prepare.rst and the mmap path's lock
assertions (``mmap_assert_write_locked()``, ``vma_assert_write_locked()``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .locking import LockError

if TYPE_CHECKING:
    from .driver import VmAreaDesc
    from .locking import Mutex
    from .mm_types import VMA, MmStruct

#: callback -> the rule the checker enforces (documentation; the logic is in LockChecker._contract)
CONTRACT: dict[str, str] = {
    "mmap_prepare": "mmap_lock write; no VMA for the range in the tree (core path) / the VMA detached (compat); "
                    "no i_mmap_rwsem",
    "mmap": "mmap_lock write; the VMA detached and not write-locked (legacy ->mmap)",
    "mapped": "mmap_lock write; the new VMA attached and write-locked (compat: detached, unlocked); "
              "i_mmap_rwsem held iff hide_from_rmap_until_complete",
    "success_hook": "as mapped",
    "finish": "finish(0) as mapped; finish(err) with no i_mmap_rwsem",
    "error_hook": "mmap_lock write; no i_mmap_rwsem (the VMA is already unmapped)",
    "close": "mmap_lock write; no i_mmap_rwsem (free_pgtables() takes it: deadlock)",
    "open": "mmap_lock write",
}


@dataclass
class LockReport:
    """One finding of the checker."""

    kind: str  # held-across-core, contract, lock-order, lock-error, held-after-syscall
    what: str
    callback: str = ""


class LockOrderGraph:
    """Acquisition-order edges between lock classes, kept across runs (the explorer shares one per
    profile)."""

    def __init__(self) -> None:
        self.edges: dict[tuple[str, str], tuple[str, Any]] = {}  # (A, B) -> (callback, the run's context)
        self.held_in: dict[tuple[str, str], str] = {}  # (A, B) -> the callback (or "the core") that took A
        self.context: Any = None  # set by the caller before each run (the explorer: its scenario)

    def add(self, a: str, b: str, where: str, held_in: str = "") -> None:
        """B taken in callback ``where`` while A is held (A taken in ``held_in``)."""
        if (a, b) not in self.edges:
            self.edges[(a, b)] = (where, self.context)
            self.held_in[(a, b)] = held_in

    def describe(self, cyc: list[str]) -> str:
        """A cycle as the lock-order message: the locks in order, then each edge with the callbacks that
        took its two locks."""
        ring = cyc if len(cyc) > 1 and cyc[0] == cyc[-1] else [*cyc, cyc[0]]
        parts = []
        for a, b in zip(ring, ring[1:], strict=False):
            where = self.edges.get((a, b), ("?", None))[0]
            held = self.held_in.get((a, b)) or "?"
            parts.append(f"{b} taken in {_cb(where)} while {a} was held (taken in {_cb(held)})")
        return f"lock order inversion: {' -> '.join(ring)}: " + "; ".join(parts)

    def cycles(self) -> list[list[str]]:
        """Every elementary cycle found through each edge (deduplicated by lock set); a self-edge is a
        cycle of one (recursive acquisition)."""
        succ: dict[str, set[str]] = {}
        for a, b in self.edges:
            succ.setdefault(a, set()).add(b)
        found: dict[frozenset[str], list[str]] = {}
        for a, b in sorted(self.edges):
            if a == b:
                found.setdefault(frozenset([a]), [a, a])
                continue
            path = self._path(succ, b, a)
            if path is not None:
                cyc = [a, *path]
                found.setdefault(frozenset(cyc), cyc)
        return list(found.values())

    @staticmethod
    def _path(succ: dict[str, set[str]], src: str, dst: str) -> list[str] | None:
        prev: dict[str, str | None] = {src: None}
        todo = [src]
        while todo:
            n = todo.pop(0)
            if n == dst:
                out = [n]
                while prev[out[-1]] is not None:
                    p = prev[out[-1]]
                    assert p is not None
                    out.append(p)
                return out[::-1]
            for m in sorted(succ.get(n, ())):
                if m not in prev:
                    prev[m] = n
                    todo.append(m)
        return None


def _cb(name: str) -> str:
    return "the core" if name in ("syscall", "") else name


class LockChecker:
    """Records what is held at every callback of ``mm`` and reports violations (``reports``)."""

    def __init__(self, mm: MmStruct, graph: LockOrderGraph | None = None) -> None:
        self.mm = mm
        self.graph = graph if graph is not None else LockOrderGraph()
        self.run_graph = LockOrderGraph()  # the edges of this mm alone (a reproducer replays them)
        self.run_graph.context = self.graph.context
        self.holder: dict[str, str] = {}  # lock class -> the callback (or "syscall") that last took it
        self.mutexes: list[Mutex] = []
        self.reports: list[LockReport] = []
        self.stack: list[str] = []
        self.taken_in: dict[int, str] = {}  # id(mutex) -> the callback (or "syscall") that took it
        self.desc: VmAreaDesc | None = None  # the last core mmap_prepare descriptor (set by prepare_entry)
        self.held_log: list[tuple[str, frozenset[str]]] = []  # (callback, locks held) for every callback
        self.watched: set[int] = set()  # id() of the file_operations whose mmap_prepare entry is checked
        mm.probe.observer = self
        mm.locks.observer = self

    # -- binding ---------------------------------------------------------------------------------------
    def bind(self, m: Mutex) -> None:
        """Watch a driver mutex (the explorer binds every Mutex it finds on the driver)."""
        if not any(x is m for x in self.mutexes):
            m.observer = self
            self.mutexes.append(m)

    def held_mutexes(self) -> list[Mutex]:
        return [m for m in self.mutexes if m.held]

    def held_classes(self) -> list[str]:
        locks = self.mm.locks
        out = []
        if locks.mmap_lock:
            out.append("mmap_lock")
        if locks.vma_locks:
            out.append("vma_lock")
        if locks.i_mmap:
            out.append("i_mmap_rwsem")
        out += [f"driver:{m.name}" for m in self.held_mutexes()]
        return out

    def _report(self, kind: str, what: str, callback: str = "") -> None:
        if not any(r.kind == kind and r.what == what for r in self.reports):
            self.reports.append(LockReport(kind, what, callback))

    # -- LockObserver ------------------------------------------------------------------------------------
    def acquire(self, lock_class: str) -> None:
        where = self.stack[-1] if self.stack else "syscall"
        for h in self.held_classes():
            if h != lock_class:
                self.graph.add(h, lock_class, where, self.holder.get(h, ""))
                self.run_graph.add(h, lock_class, where, self.holder.get(h, ""))
        self.holder[lock_class] = where

    def mutex_locked(self, m: Mutex) -> None:
        self.taken_in[id(m)] = self.stack[-1] if self.stack else "syscall"

    def mutex_unlocked(self, m: Mutex) -> None:
        self.taken_in.pop(id(m), None)

    def note_recursive(self, lock_class: str, where: str) -> None:
        """A lock taken again by its holder (the 6.19/7.0 do_munmap() under i_mmap_rwsem)."""
        self.graph.add(lock_class, lock_class, where)
        self.run_graph.add(lock_class, lock_class, where)

    # -- callbacks ---------------------------------------------------------------------------------------
    def watch(self, fops: object) -> None:
        """Check the core-path rules on entry to ``fops.mmap_prepare`` (the explored driver's)."""
        self.watched.add(id(fops))

    def prepare_entry(self, desc: VmAreaDesc) -> None:
        """On entry to a watched driver's ``mmap_prepare``: the core-path rules."""
        self.desc = desc
        self.held_log.append(("mmap_prepare", frozenset(self.mm.locks.held())))
        if self.mm.locks.mmap_lock != "write":
            self._report("contract", "mmap_prepare called without mmap_lock held for write", "mmap_prepare")
        if self.mm.tree.find_intersection(desc.start, desc.end) is not None:
            self._report("contract", "a VMA exists in the range during mmap_prepare", "mmap_prepare")
        if self.mm.locks.i_mmap:
            self._report("contract", "mmap_prepare called with i_mmap_rwsem held", "mmap_prepare")

    def call(self, name: str, fn: Callable[[], Any], vma: VMA | None, desc: Any = None) -> Any:
        """Run one driver callback (the probe's observer: ``MmStruct.callback`` hands every callback here),
        checking the contract before and the driver's locks after.  ``desc`` is the descriptor of an
        ``mmap_prepare`` call."""
        self.held_log.append((name, frozenset(self.mm.locks.held())))
        self._contract(name, vma)
        before = {id(m) for m in self.held_mutexes()}
        self.stack.append(name)
        try:
            if desc is not None and id(desc.file.f_op) in self.watched:
                self.prepare_entry(desc)
            ret = fn()
        except LockError as e:
            if not e.callback:
                e.callback = name
            raise
        finally:
            self.stack.pop()
        for m in self.held_mutexes():
            if id(m) not in before:
                self._report("held-across-core", f"driver mutex {m.name} still held when {name} returned to the "
                                                 "core", name)
        return ret

    def _contract(self, name: str, vma: VMA | None) -> None:
        mm = self.mm
        locks = mm.locks
        if name == "release":
            return  # __fput() runs as task work on the return to user space: no mm lock is held
        if locks.mmap_lock != "write":
            self._report("contract", f"{name} called without mmap_lock held for write", name)
        if name == "mmap" and vma is not None:
            if mm.tree.lookup(vma.vm_start) is vma or locks.vma_write_locked(vma):
                self._report("contract", "legacy ->mmap called on an attached or write-locked VMA", name)
        success_side = name in ("mapped", "success_hook") or (name == "finish" and vma is not None)
        if success_side and vma is not None:
            attached = mm.tree.lookup(vma.vm_start) is vma
            if attached != locks.vma_write_locked(vma):
                self._report("contract", f"{name} called on an {'attached' if attached else 'detached'} VMA that "
                                         f"is {'not ' if attached else ''}write-locked", name)
            action = self.desc.action_if_any if self.desc is not None else None
            hide = bool(action is not None and action.hide_from_rmap_until_complete and attached)
            ino = vma.vm_file.inode.ino if vma.vm_file is not None else None
            held = ino is not None and ino in locks.i_mmap
            if hide != held:
                self._report("contract", f"{name}: i_mmap_rwsem {'held' if held else 'not held'} although "
                                         f"hide_from_rmap_until_complete is {'off' if held else 'on'}", name)
        elif name in ("error_hook", "close", "finish") and locks.i_mmap:
            what = "the VMA's ->close (do_munmap)" if name == "close" else name
            self._report("contract", f"{what} called with i_mmap_rwsem held (unmap under the rmap lock)", name)

    # -- after a syscall -----------------------------------------------------------------------------------
    def after_syscall(self, what: str) -> list[tuple[Mutex, str]]:
        """The driver mutexes still held when a syscall returned, with the callback that took each."""
        return [(m, self.taken_in.get(id(m), "?")) for m in self.held_mutexes()]
