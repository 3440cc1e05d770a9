"""The one hook object through which the lab's tools observe and perturb the model.

Tracing (``--trace``), fault injection (:mod:`vmalab.faultpoints`) and lock checking
(:mod:`vmalab.lockcheck`) reach the core only through an ``MmStruct``'s :class:`Probe`: the core calls
:meth:`Probe.trace` at the steps worth showing, :meth:`Probe.inject` at every fallible point, and routes
every driver callback (``->mmap_prepare``, ``->mmap``, ``->open``, ``->close``, hooks, ``mapped``)
through ``MmStruct.callback``, which hands it to the installed :class:`CallbackObserver`.  The core
imports none of the tools; a tool installs itself by setting ``probe.observer``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .constants import ERRNO_NAMES

if TYPE_CHECKING:
    from .mm_types import VMA


@dataclass
class TraceEvent:
    """One step of an operation, for ``--trace`` and for tests.  ``index`` is the scenario op that was
    running (:attr:`Probe.op_index`), shown as ``#N`` in front."""

    op: str
    what: str
    detail: dict[str, Any]
    index: int | None = None

    def __str__(self) -> str:
        extra = " ".join(f"{k}={v:#x}" if isinstance(v, int) and k in ("start", "end", "addr") else f"{k}={v}"
                         for k, v in self.detail.items())
        where = f"#{self.index} " if self.index is not None else ""
        return f"{where}{self.op}: {self.what}" + (f" ({extra})" if extra else "")


class CallbackObserver(Protocol):
    """Sees every driver callback the model makes (``vmalab.lockcheck.LockChecker``).  ``desc`` is the
    ``vm_area_desc`` of an ``mmap_prepare`` call, else None."""

    def call(self, name: str, fn: Callable[[], Any], vma: VMA | None, desc: Any = None) -> Any: ...


class Probe:
    """Trace buffer, fault-injection plan and callback observer of one mm (all off by default)."""

    __slots__ = ("events", "tracing", "fail_plan", "fail_hits", "lock_events", "observer", "syscall", "op_index")

    def __init__(self, tracing: bool = False) -> None:
        self.events: list[TraceEvent] = []
        self.tracing = tracing
        self.fail_plan: dict[str, tuple[int, int]] = {}  # fault point -> (hit number to fail, -errno)
        self.fail_hits: dict[str, int] = {}
        self.lock_events: list[tuple[str, str]] = []  # lock rules a profile's path broke (what, profile)
        self.observer: CallbackObserver | None = None
        self.syscall: str | None = None  # the syscall running now (a driver callback's label)
        self.op_index: int | None = None  # the scenario op running now (set by vmalab.execute)

    @contextmanager
    def in_syscall(self, name: str) -> Iterator[None]:
        """Mark ``name`` as the syscall running (the façade and the scenario runner enter each syscall
        through this); the outer one is restored on exit."""
        outer, self.syscall = self.syscall, name
        try:
            yield
        finally:
            self.syscall = outer

    def trace(self, op: str, what: str, **detail: Any) -> None:
        """Record one step when tracing is on."""
        if self.tracing:
            self.events.append(TraceEvent(op, what, detail, self.op_index))

    def inject(self, point: str) -> int:
        """A fallible point of the modelled paths: returns -errno when the fault plan fails this hit."""
        hits = self.fail_hits
        n = hits[point] = hits.get(point, 0) + 1
        if not self.fail_plan:
            return 0
        plan = self.fail_plan.get(point)
        if plan is not None and plan[0] == n:
            self.trace("fault", f"injected failure at {point} (hit {n})", errno=ERRNO_NAMES.get(-plan[1]))
            return plan[1]
        return 0
