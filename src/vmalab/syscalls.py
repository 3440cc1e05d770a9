"""The one table of the model's memory syscalls.

Each :class:`Syscall` names the kernel syscall, the function of the model that implements it (called
``fn(mm, *args)``, returning what the kernel returns: an address, 0 or ``-errno``), its arguments in the
kernel's order with the scenario-format key each one is read from, and what its return value is.  From
this table come :meth:`vmalab.mm.MM.syscall`, the ``MM.sys_*`` methods, the Pythonic ``MM`` methods, the
scenario executor's dispatch (:mod:`vmalab.execute`) and the live runner's command lines
(:mod:`vmalab.oracle.kernel`).  Adding a syscall is one row here plus its function.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .brk import sys_brk
from .madvise import sys_madvise
from .mincore import sys_mincore
from .mlock import sys_mlock, sys_mlock2, sys_mlockall, sys_munlock, sys_munlockall
from .mmap import sys_mmap, sys_munmap
from .mprotect import sys_mprotect
from .mremap import sys_mremap
from .mseal import sys_mseal
from .msync import sys_msync

#: argument kinds: an address (scenario addresses are resolved), an integer, a file descriptor
ADDR, INT, FD = "addr", "int", "fd"
#: return kinds: 0 or -errno; an address or -errno; brk's (always an address); mincore's (rc, vector)
RET_INT, RET_ADDR, RET_BRK, RET_VEC = "int", "addr", "brk", "vec"


@dataclass(frozen=True)
class Param:
    """One argument: the scenario key it is read from, its kind, and its value when the key is absent
    (``None``: required)."""

    key: str
    kind: str
    default: Any = None


@dataclass(frozen=True)
class Syscall:
    """One row of the table (see the module docstring).  ``op`` is the scenario op it serves; ``selector``
    is the key whose presence picks this row among several for the same op (mlock -> mlock2)."""

    name: str
    fn: Callable[..., Any]
    params: tuple[Param, ...]
    ret: str = RET_INT
    op: str = ""
    selector: str | None = None

    @property
    def nargs(self) -> int:
        return len(self.params)

    @property
    def scenario_op(self) -> str:
        return self.op or self.name


def _p(*spec: tuple[str, str] | tuple[str, str, Any]) -> tuple[Param, ...]:
    return tuple(Param(*s) for s in spec)


_ROWS = (
    Syscall("mmap", sys_mmap, _p(("addr", ADDR), ("len", INT), ("prot", INT), ("flags", INT), ("fd", FD, "none"),
                                 ("offset", INT, 0)), RET_ADDR),
    Syscall("munmap", sys_munmap, _p(("addr", ADDR), ("len", INT))),
    Syscall("mprotect", sys_mprotect, _p(("addr", ADDR), ("len", INT), ("prot", INT))),
    Syscall("mremap", sys_mremap, _p(("old", ADDR), ("old_len", INT), ("new_len", INT), ("flags", INT, 0),
                                     ("new_addr", ADDR, "null")), RET_ADDR),
    Syscall("madvise", sys_madvise, _p(("addr", ADDR), ("len", INT), ("advice", INT))),
    Syscall("mlock", sys_mlock, _p(("addr", ADDR), ("len", INT))),
    Syscall("mlock2", sys_mlock2, _p(("addr", ADDR), ("len", INT), ("flags", INT)), op="mlock", selector="flags"),
    Syscall("munlock", sys_munlock, _p(("addr", ADDR), ("len", INT))),
    Syscall("mlockall", sys_mlockall, _p(("flags", INT))),
    Syscall("munlockall", sys_munlockall, ()),
    Syscall("mseal", sys_mseal, _p(("addr", ADDR), ("len", INT), ("flags", INT, 0))),
    Syscall("msync", sys_msync, _p(("addr", ADDR), ("len", INT), ("flags", INT))),
    Syscall("mincore", sys_mincore, _p(("addr", ADDR), ("len", INT)), RET_VEC),
    Syscall("brk", sys_brk, _p(("addr", ADDR)), RET_BRK),
)

#: syscall name -> row
SYSCALLS: dict[str, Syscall] = {s.name: s for s in _ROWS}
#: scenario op -> its rows (the first without a selector is the default)
OPS: dict[str, tuple[Syscall, ...]] = {}
for _row in _ROWS:
    OPS[_row.scenario_op] = (*OPS.get(_row.scenario_op, ()), _row)


def for_op(op: str, params: Mapping[str, Any]) -> Syscall | None:
    """The row a scenario op with these parameters runs, or None when ``op`` is not a syscall op."""
    rows = OPS.get(op)
    if rows is None:
        return None
    for row in rows:
        if row.selector is not None and row.selector in params:
            return row
    return next(r for r in rows if r.selector is None)
