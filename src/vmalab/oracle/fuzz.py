"""The differential oracle: random scenarios run on the live kernel and on the model, compared field by field.

``vmalab fuzz --seed S --cases N --ops K`` generates N scenarios, each a pure function of ``(S, case index,
config)``, runs each one on the live kernel (:func:`vmalab.oracle.kernel.run_on_kernel`) and on the model
(:func:`vmalab.execute.run_on_model`, starting from the recording's ``env.initial_maps`` exactly as
``vmalab diff`` does) and compares the two results with :func:`vmalab.scenario.compare_results`.

The generator is biased toward the parts of the VMA code that are easy to get wrong: ranges that start or
end at boundaries made by earlier ops (adjacent regions, partial overlaps, holes inside a range), faulted
and unfaulted neighbours, MAP_FIXED over existing mappings, file mappings with contiguous and
non-contiguous offsets (memfd, disk, tmpfs, /dev/zero; shared and private), prot changes that split and
merge, sealed and locked ranges, small resource limits, and non-fixed placement (``"window": false``).

There is one generator per op of the scenario format; the ops a case may use are those the model
implements *when the fuzzer runs* (:func:`vmalab.execute.op_supported`), so coverage grows by itself as
syscall families land.

A case that diverges is re-run (a kernel result that differs from itself is *noise*, reported as such)
and then shrunk by delta debugging (:func:`shrink`): drop chunks of ops, drop snapshots and optional
fields, shrink lengths, offsets and repeat counts, move addresses down and together — re-running both sides
for every candidate, within a step and time budget — to a small scenario that still diverges.
"""

from __future__ import annotations

import copy
import json
import multiprocessing
import os
import random
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from vmalab import constants as C
from vmalab.execute import ModelUnsupported, op_supported, run_on_model
from vmalab.scenario import (
    OP_FIELDS,
    Addr,
    ScenarioError,
    compare_results,
    parse_addr,
    parse_scenario,
    parse_size,
)

__all__ = ["ALL_OPS", "CaseOutcome", "FuzzConfig", "FuzzSummary", "check_case", "enabled_ops",
           "generate_scenario", "run_case", "run_fuzz", "shrink"]

PAGE = C.PAGE_SIZE
ALL_OPS: tuple[str, ...] = tuple(OP_FIELDS)
# Relative weights of the op generators (every op of the format has one).
OP_WEIGHTS: dict[str, float] = {
    "mmap": 20, "munmap": 7, "mprotect": 12, "touch": 14, "snapshot": 4, "vma_count": 1.5, "repeat": 2.5,
    "setrlimit": 1, "ftruncate": 1.5, "mremap": 7, "madvise": 7, "mlock": 3, "munlock": 2, "mlockall": 0.4,
    "munlockall": 0.6, "mseal": 2.5, "msync": 2, "mincore": 3, "brk": 1.5, "fork": 2, "status": 1, "capdrop": 0.5,
}
# Advice values the fuzzer uses.  Left out on purpose: MADV_HWPOISON and MADV_SOFT_OFFLINE (they act on
# physical pages of the machine) and MADV_COLLAPSE (its outcome depends on free huge pages right now).
ADVICE = ("MADV_NORMAL", "MADV_RANDOM", "MADV_SEQUENTIAL", "MADV_WILLNEED", "MADV_DONTNEED", "MADV_FREE",
          "MADV_REMOVE", "MADV_DONTFORK", "MADV_DOFORK", "MADV_MERGEABLE", "MADV_UNMERGEABLE", "MADV_HUGEPAGE",
          "MADV_NOHUGEPAGE", "MADV_DONTDUMP", "MADV_DODUMP", "MADV_WIPEONFORK", "MADV_KEEPONFORK", "MADV_COLD",
          "MADV_PAGEOUT", "MADV_POPULATE_READ", "MADV_POPULATE_WRITE", "MADV_DONTNEED_LOCKED",
          "MADV_GUARD_INSTALL", "MADV_GUARD_REMOVE")
# Optional flag bits the shrinker tries to drop, one at a time.
_DROPPABLE_BITS = {"MAP_POPULATE", "MAP_NORESERVE", "MAP_LOCKED", "MAP_GROWSDOWN", "MAP_STACK", "MAP_32BIT",
                   "MAP_SYNC", "MAP_HUGE_2MB",
                   "MREMAP_DONTUNMAP", "MCL_ONFAULT", "MCL_FUTURE", "MS_INVALIDATE", "PROT_EXEC", "PROT_WRITE",
                   "PROT_GROWSDOWN"}
_HUGE_LEN = 1 << 47          # larger than TASK_SIZE - BASE: an error, never a real range
_STACK_CHOICES = ("8M", "8M", "1G", "unlimited", "200M", "64M")


# --- configuration -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class FuzzConfig:
    """What a fuzz run generates.  ``include`` (None: every op) and ``exclude`` filter op kinds further
    than :func:`op_supported` does; ``nowindow_ratio`` is the share of ``"window": false`` cases."""

    ops: int = 12
    include: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()
    nowindow_ratio: float = 0.15
    shrink: bool = True
    shrink_steps: int = 300
    shrink_seconds: float = 60.0
    kernel_timeout: float = 60.0

    @staticmethod
    def from_filter(ops: int, filters: tuple[str, ...] | list[str], **kw: Any) -> FuzzConfig:
        """Build a config from ``--ops-filter`` words: ``a,b`` keeps only those op kinds, ``-a`` drops one."""
        include: list[str] = []
        exclude: list[str] = []
        for word in filters:
            for item in str(word).replace(" ", ",").split(","):
                item = item.strip()
                if not item:
                    continue
                name = item.lstrip("-+!")
                if name not in OP_FIELDS:
                    raise ValueError(f"unknown op {name!r} in --ops-filter (ops: {', '.join(ALL_OPS)})")
                (exclude if item[0] in "-!" else include).append(name)
        return FuzzConfig(ops=ops, include=tuple(include) or None, exclude=tuple(exclude), **kw)


def enabled_ops(config: FuzzConfig) -> list[str]:
    """The op kinds a case may contain: supported by the model now, and allowed by the filter."""
    out = []
    for name in ALL_OPS:
        if not op_supported(name):
            continue
        if config.include is not None and name not in config.include and name not in ("mmap", "snapshot"):
            continue
        if name in config.exclude:
            continue
        out.append(name)
    return out


# --- formatting helpers ------------------------------------------------------------------------------
def fmt_size(n: int) -> int | str:
    """A size as the scenario format writes it: ``"8K"``, ``"2M"``, ``"0x1234"`` or ``0``."""
    if n == 0:
        return 0
    if n < 0:
        return n
    for suffix, unit in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n % unit == 0:
            return f"{n // unit}{suffix}"
    return f"{n:#x}"


def fmt_addr(a: Addr) -> Any:
    """An :class:`Addr` back into its JSON form (``base+0x3000``, ``map:[vvar]-0x4000``...)."""
    return a.to_json()


# --- the generator -----------------------------------------------------------------------------------
@dataclass
class _MapRec:
    start: int          # page offset in the arena
    npages: int
    fd: str | None      # the fd spec's kind:name, None for anonymous
    off: int            # file page offset


@dataclass
class _Gen:
    """Generation state of one case: the arena, the boundaries earlier ops made, files and mappings.

    In a windowed case the arena is ``[BASE, BASE + arena pages)``; in a ``"window": false`` case it is the
    ``arena`` pages right below ``[vvar]`` (where top-down placement puts the first mappings), addressed as
    ``map:[vvar]-X`` so that no op can reach the runner's own VMAs."""

    rng: random.Random
    window: bool
    kinds: list[str]
    arena: int = 64
    points: list[int] = field(default_factory=lambda: [0])
    maps: list[_MapRec] = field(default_factory=list)
    files: dict[str, int] = field(default_factory=dict)   # "memfd:m0" -> size in pages
    hugetlb: bool = False   # a MAP_HUGETLB mmap was generated: a 4 KiB munmap in the arena may fail (EINVAL)

    # -- choices --------------------------------------------------------------------------------------
    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def pick(self, weighted: dict[Any, float]) -> Any:
        keys = list(weighted)
        return self.rng.choices(keys, weights=[weighted[k] for k in keys])[0]

    def page(self) -> int:
        """A page offset in the arena, usually at (or next to) a boundary an earlier op made."""
        rng = self.rng
        if self.points and self.chance(0.6):
            p = rng.choice(self.points) + (rng.choice((-1, 1)) if self.chance(0.15) else 0)
        else:
            p = rng.randrange(self.arena)
        return max(0, min(p, self.arena - 1))

    def npages(self, start: int) -> int:
        """A length in pages, mostly small; never past the arena's end in a ``window: false`` case."""
        rng = self.rng
        n = self.pick({1: 30, 2: 20, 3: 10, 4: 10, 0: 15, -1: 15})
        if n == 0:
            n = rng.randint(5, 8)
        elif n == -1:
            n = rng.randint(1, self.arena)
        if self.points and self.chance(0.25):
            ends = [p - start for p in self.points if p > start]
            if ends:
                n = rng.choice(ends)
        if not self.window:
            n = max(1, min(n, self.arena - start))
        return n

    def note(self, start: int, n: int) -> None:
        for p in (start, start + n):
            if p not in self.points and 0 <= p <= self.arena + 64:
                self.points.append(p)

    def misalign(self) -> int:
        """A byte offset that makes an address unaligned (downward outside the window: never into [vvar])."""
        return 0x10 if self.window else -0x10

    def addr(self, page: int, byte: int = 0) -> str:
        if self.window:
            return f"base+{page * PAGE + byte:#x}"
        return f"map:[vvar]-{(self.arena - page) * PAGE - byte:#x}"

    def length(self, n: int, huge_ok: bool = False) -> int | str:
        """``n`` pages, sometimes made invalid or unaligned (bad input is part of the contract)."""
        if self.chance(0.04):
            choices: list[int] = [0, n * PAGE - PAGE + 0x123]
            if huge_ok and self.window:
                choices.append(_HUGE_LEN)
            return fmt_size(self.rng.choice(choices))
        return fmt_size(n * PAGE)

    def range_op(self, huge_ok: bool = False) -> tuple[str, int | str, int, int]:
        start = self.page()
        n = self.npages(start)
        self.note(start, n)
        a = self.addr(start, self.misalign() if self.chance(0.02) else 0)
        return a, self.length(n, huge_ok), start, n

    def prot(self, mprotect: bool = False) -> int | str:
        p = self.pick({"PROT_READ|PROT_WRITE": 40, "PROT_READ": 25, "PROT_NONE": 10, "PROT_READ|PROT_EXEC": 6,
                       "PROT_READ|PROT_WRITE|PROT_EXEC": 4, "PROT_WRITE": 4, "PROT_EXEC": 2, "odd": 1,
                       "growsdown": 2 if mprotect else 0})
        if p == "odd":
            return 0x13  # an unknown prot bit: mmap ignores it, mprotect refuses it
        if p == "growsdown":
            return "PROT_READ|PROT_WRITE|PROT_GROWSDOWN"
        return str(p)

    def file(self, kind: str) -> str:
        """An fd spec for a file of ``kind`` (one of two names per kind), with its size and rarely a mode."""
        name = f"{kind}:{kind[0]}{self.rng.randrange(2)}"
        if name not in self.files:
            self.files[name] = self.rng.choice((2, 4, 8, 16, 32, 64))
        spec = f"{name}:{self.files[name] * 4}K"
        if kind == "secretmem":
            return spec  # memfd_secret() takes no open mode
        mode = self.pick({"": 90, ":ro": 7, ":wo": 3})
        return spec + mode

    def file_offset(self, key: str, start: int, n: int) -> int:
        """A page offset in the file: contiguous with an earlier mapping of it at a boundary, or random
        (sometimes beyond EOF)."""
        if self.chance(0.65):
            for m in reversed(self.maps):
                if m.fd == key and m.start + m.npages == start:
                    return m.off + m.npages
                if m.fd == key and start + n == m.start and m.off >= n:
                    return m.off - n
        size = self.files.get(key, 4)
        return self.rng.randrange(size + 2)

    # -- one generator per op -------------------------------------------------------------------------
    def g_mmap(self) -> dict[str, Any]:
        rng = self.rng
        if self.window:
            mode = self.pick({"fixed": 72, "noreplace": 10, "hint": 11, "null": 7})
        else:
            mode = self.pick({"fixed": 28, "noreplace": 4, "hint": 18, "null": 45, "32bit": 5})
        start = self.page()
        n = self.npages(start)
        if mode in ("null", "32bit", "hint") and not self.window and self.chance(0.3):
            n = rng.choice((512, 768, 1024, 513, 16, 256))  # 2M, 3M, 4M, 2M+4K: THP alignment or not
        backing = self.pick({"anon": 52, "memfd": 16, "disk": 10, "tmpfs": 10, "devzero": 12, "secretmem": 3})
        shared = self.chance(0.25) or backing == "secretmem"
        flags = ["MAP_SHARED_VALIDATE" if shared and self.chance(0.1) else "MAP_SHARED" if shared
                 else "MAP_PRIVATE"]
        if backing == "anon" and not shared and self.chance(0.03):
            flags = ["MAP_DROPPABLE"]  # never locked, even under mlockall(MCL_FUTURE)
        fd: str = "none"
        offset = 0
        if backing == "anon":
            flags.append("MAP_ANONYMOUS")
        elif backing == "secretmem":
            fd = self.file("secretmem")
            offset = self.rng.choice((0, 0, PAGE))
        elif backing == "devzero":
            fd = "devzero"
            offset = rng.choice((0, 0, n * PAGE))
        else:
            fd = self.file(backing)
            key = ":".join(fd.split(":")[:2])
            offset = self.file_offset(key, start, n) * PAGE
        if backing == "anon" and self.window and self.chance(0.04):
            # hugetlb with the host's empty pool: MAP_NORESERVE maps, faults SIGBUS, splits need 2 MiB
            # alignment (window cases only: a 2 MiB MAP_FIXED below [vvar] could replace the runner's VMAs)
            flags.append("MAP_HUGETLB")
            self.hugetlb = True
            if self.chance(0.8):
                flags.append("MAP_NORESERVE")
            if self.chance(0.3):
                flags.append("MAP_HUGE_2MB")
        if self.chance(0.03):
            flags.append("MAP_SYNC")  # refused by ext4 without DAX, even where MAP_SHARED masks it
        if mode == "fixed":
            flags.append("MAP_FIXED")
        elif mode == "noreplace":
            flags.append("MAP_FIXED_NOREPLACE")
        elif mode == "32bit":
            flags.append("MAP_32BIT")
        for bit, p in (("MAP_POPULATE", 0.1), ("MAP_NORESERVE", 0.07), ("MAP_LOCKED", 0.04),
                       ("MAP_GROWSDOWN", 0.05), ("MAP_STACK", 0.02)):
            if self.chance(p):
                flags.append(bit)
        if mode in ("fixed", "noreplace") and self.chance(0.01):
            # the last page of the address space: MAP_FIXED returns the address itself as the error
            addr: Any = self.rng.choice(("abs:0xffffffffffffffff", "abs:0xfffffffffffffff4",
                                         "abs:0xffffffffffffffea", "abs:0xfffffffffffff000"))
        elif mode in ("fixed", "noreplace") or (mode == "hint" and self.window):
            addr = self.addr(start, self.misalign() if self.chance(0.02) else 0)
            self.note(start, n)
        elif mode == "hint":
            addr = self.pick({"abs:0x7ffff0000000": 3, "abs:0x1000": 2, "abs:0x900000000000": 2,
                              "map:[stack]-0x80000": 2, "map:[vvar]+0": 2,
                              self.addr(start): 4, "abs:0x10000000": 1})
        else:
            addr = None
        if backing not in ("anon", "devzero"):
            self.maps.append(_MapRec(start, n, ":".join(fd.split(":")[:2]), offset // PAGE))
        op: dict[str, Any] = {"op": "mmap", "addr": addr, "len": self.length(n, huge_ok=mode != "hint"),
                              "prot": self.prot(), "flags": "|".join(flags), "fd": fd}
        if offset or fd != "none":
            op["offset"] = fmt_size(offset) if not self.chance(0.02) else offset + 0x800
        return op

    def g_munmap(self) -> dict[str, Any]:
        a, ln, _, _ = self.range_op(huge_ok=True)
        return {"op": "munmap", "addr": a, "len": ln}

    def g_mprotect(self) -> dict[str, Any]:
        a, ln, _, _ = self.range_op(huge_ok=True)
        return {"op": "mprotect", "addr": a, "len": ln, "prot": self.prot(mprotect=True)}

    def g_touch(self) -> dict[str, Any]:
        if self.chance(0.02):
            # the vDSO image: its first bytes are the ELF magic (the rest of it differs between builds)
            return {"op": "touch", "addr": f"map:[vdso]+{self.rng.randrange(4)}", "write": False}
        if not self.window and self.chance(0.05):
            addr = self.rng.choice(("map:[stack]-0x1000", "map:[stack]-0x10000", "map:[stack]-0x40000"))
        else:
            p = self.page()
            addr = self.addr(p, self.rng.randrange(PAGE) if self.chance(0.3) else 0)
        op: dict[str, Any] = {"op": "touch", "addr": addr, "write": self.chance(0.5)}
        if op["write"] and self.chance(0.3):
            op["value"] = self.rng.randrange(256)
        return op

    def g_mremap(self) -> dict[str, Any]:
        rng = self.rng
        start = self.page()
        old_n = self.npages(start)
        new_n = max(1, min(rng.choice((1, 2, 3, 4, old_n * 2, old_n + 1, max(1, old_n - 1))), self.arena))
        self.note(start, old_n)
        self.note(start, new_n)
        kind = self.pick({"plain": 30, "maymove": 30, "fixed": 25, "dontunmap": 10, "bad": 5})
        op: dict[str, Any] = {"op": "mremap", "old": self.addr(start),
                              "old_len": 0 if self.chance(0.05) else fmt_size(old_n * PAGE),
                              "new_len": fmt_size(new_n * PAGE) if not self.chance(0.03) else fmt_size(_HUGE_LEN)}
        if not self.window:
            op["new_len"] = fmt_size(min(new_n, self.arena - start) * PAGE)
        if kind == "plain":
            if self.chance(0.3):
                op["flags"] = 0
        elif kind == "maymove":
            op["flags"] = "MREMAP_MAYMOVE"
        elif kind in ("fixed", "dontunmap"):
            dst = self.page()
            dst_n = new_n if kind == "fixed" else old_n
            if not self.window:
                dst = min(dst, self.arena - dst_n)
                if dst < 0:
                    return self.g_touch()
            op["flags"] = "MREMAP_MAYMOVE|MREMAP_FIXED" if kind == "fixed" else (
                "MREMAP_MAYMOVE|MREMAP_DONTUNMAP" + ("|MREMAP_FIXED" if self.chance(0.4) else ""))
            if kind == "dontunmap":
                op["new_len"] = op["old_len"]
            if kind == "fixed" or "MREMAP_FIXED" in op["flags"]:
                op["new_addr"] = self.addr(dst)
                self.note(dst, dst_n)
        else:
            op["flags"] = self.rng.choice(("MREMAP_FIXED", "MREMAP_DONTUNMAP", 8))
            op["new_addr"] = self.addr(self.page() if self.window else max(0, min(self.page(), self.arena - new_n)))
        return op

    def g_madvise(self) -> dict[str, Any]:
        a, ln, _, _ = self.range_op()
        return {"op": "madvise", "addr": a, "len": ln, "advice": self.rng.choice(ADVICE)}

    def g_mlock(self) -> dict[str, Any]:
        a, ln, _, _ = self.range_op()
        op: dict[str, Any] = {"op": "mlock", "addr": a, "len": ln}
        if self.chance(0.35):
            op["flags"] = self.pick({"MLOCK_ONFAULT": 8, 0: 2, 2: 1})
        return op

    def g_munlock(self) -> dict[str, Any]:
        a, ln, _, _ = self.range_op()
        return {"op": "munlock", "addr": a, "len": ln}

    def g_mlockall(self) -> dict[str, Any]:
        return {"op": "mlockall", "flags": self.pick({"MCL_CURRENT": 3, "MCL_FUTURE": 3, "MCL_CURRENT|MCL_FUTURE": 2,
                                                      "MCL_CURRENT|MCL_ONFAULT": 2, "MCL_FUTURE|MCL_ONFAULT": 2,
                                                      "MCL_ONFAULT": 1, 0: 1})}

    def g_munlockall(self) -> dict[str, Any]:
        return {"op": "munlockall"}

    def g_mseal(self) -> dict[str, Any]:
        a, ln, _, _ = self.range_op()
        op: dict[str, Any] = {"op": "mseal", "addr": a, "len": ln}
        if self.chance(0.1):
            op["flags"] = self.rng.choice((0, 1))
        return op

    def g_msync(self) -> dict[str, Any]:
        a, ln, _, _ = self.range_op()
        return {"op": "msync", "addr": a, "len": ln,
                "flags": self.pick({"MS_SYNC": 4, "MS_ASYNC": 4, "MS_INVALIDATE": 2, "MS_SYNC|MS_INVALIDATE": 2,
                                    "MS_ASYNC|MS_SYNC": 1, 0: 1, 8: 1})}

    def g_mincore(self) -> dict[str, Any]:
        a, ln, _, _ = self.range_op()
        return {"op": "mincore", "addr": a, "len": ln}

    def g_brk(self) -> dict[str, Any]:
        addr = self.pick({"brk+0": 1, "brk+0x1000": 3, "brk+0x10000": 3, "brk+0x101000": 1, "brk-0x1000": 2,
                          "brk+0x1801": 1, "brk-0x100000": 1, "null": 1, "abs:0xffffffffffffffff": 0.5,
                          "abs:0xfffffffffffff001": 0.5})
        return {"op": "brk", "addr": None if addr == "null" else addr}

    def g_ftruncate(self) -> dict[str, Any]:
        kind = self.pick({"memfd": 3, "disk": 3, "tmpfs": 3, "secretmem": 1})
        known = [k for k in self.files if k.startswith(kind)]
        fd = self.file(kind) if not known else f"{known[0]}:{self.files[known[0]] * 4}K"
        key = ":".join(fd.split(":")[:2])
        size = self.files[key]
        ln = self.rng.choice((0, size // 2, size - 1, size + 1, size * 2, 1))
        return {"op": "ftruncate", "fd": fd, "len": fmt_size(max(0, ln) * PAGE + (0x123 if self.chance(0.1) else 0))}

    def g_setrlimit(self) -> dict[str, Any]:
        res = self.pick({"RLIMIT_AS": 4, "RLIMIT_DATA": 3, "RLIMIT_MEMLOCK": 2, "RLIMIT_STACK": 1})
        values = {"RLIMIT_AS": ("5M", "6M", "8M", "16M", "64M"), "RLIMIT_DATA": ("4M", "5M", "8M", "32M"),
                  "RLIMIT_MEMLOCK": (0, "8K", "64K"), "RLIMIT_STACK": ("256K", "1M", "8M")}[res]
        return {"op": "setrlimit", "resource": res, "value": self.rng.choice(values)}

    def g_fork(self) -> dict[str, Any]:
        reads = [self.addr(self.page()) for _ in range(self.rng.randint(1, 4))]
        return {"op": "fork", "read": reads}

    def g_repeat(self) -> dict[str, Any]:
        rng = self.rng
        bodies = [k for k in ("mmap", "mprotect", "munmap", "touch", "mlock", "madvise", "mseal") if k in self.kinds]
        body = getattr(self, f"g_{rng.choice(bodies)}")()
        count = rng.choice((2, 3, 5, 8, 16, 40))
        step_pages = rng.choice((1, 2, 3, 4)) * (1 if self.window and self.chance(0.6) else -1)
        # keep the first address inside the arena on every iteration (window false: never upward into [vvar])
        key = "addr" if "addr" in body else None
        if key is None or not isinstance(body.get(key), str):
            return self.g_touch()
        if body["op"] == "mmap":
            flags = body["flags"].replace("MAP_FIXED_NOREPLACE", "MAP_FIXED")
            if "MAP_FIXED" not in flags:
                flags += "|MAP_FIXED"
            body["flags"] = flags
            body["addr"] = self.addr(self.page())
        first = self._page_of(body[key])
        if not self.window and "len" in body:
            # never past the arena's end (the runner's [vvar] is right above it)
            body["len"] = fmt_size(max(1, min(parse_size(body["len"]) // PAGE, self.arena - first)) * PAGE)
        if step_pages < 0:
            count = min(count, first // -step_pages + 1)
        return {"op": "repeat", "count": max(1, count), "step": fmt_size(step_pages * PAGE) if step_pages > 0
                else f"-{-step_pages * 4}K", "body": body}

    def _page_of(self, a: str) -> int:
        parsed = parse_addr(a)
        if self.window:
            return (parsed.offset // PAGE)
        return self.arena + parsed.offset // PAGE

    def g_vma_count(self) -> dict[str, Any]:
        return {"op": "vma_count"}

    def g_status(self) -> dict[str, Any]:
        return {"op": "status"}

    def g_capdrop(self) -> dict[str, Any]:
        # mostly CAP_IPC_LOCK: RLIMIT_MEMLOCK (setrlimit) then binds mlock, MAP_LOCKED and mlockall
        return {"op": "capdrop", "cap": self.pick({"CAP_IPC_LOCK": 6, "CAP_SYS_RAWIO": 1, "CAP_SYS_ADMIN": 1,
                                                   "CAP_SYS_RESOURCE": 1, "CAP_CHOWN": 1})}

    def g_snapshot(self) -> dict[str, Any]:
        if self.window and self.chance(0.1):
            lo = self.page()
            hi = min(self.arena + 8, lo + self.npages(lo) + 2)
            return {"op": "snapshot", "range": [self.addr(lo), self.addr(hi)]}
        return {"op": "snapshot"}

    def g_file_pattern(self) -> list[dict[str, Any]]:
        """Page-cache reads that single random ops rarely line up: a disk file whose size ends inside a
        page, mapped (sometimes executable, sometimes under MADV_RANDOM), read, grown, read again, and
        read past its end (readahead, the old end-of-file page after growth, fault-around at EOF)."""
        rng = self.rng
        npg = rng.randint(4, 12)
        x = rng.randrange(max(1, self.arena - npg))
        self.note(x, npg)
        name = f"disk:p{rng.randrange(2)}"
        size = rng.randint(1, npg - 1) * PAGE + rng.choice((0, 0x123, 0x800))
        prot = rng.choice(("PROT_READ", "PROT_READ|PROT_EXEC", "PROT_READ|PROT_WRITE|PROT_EXEC"))
        fd = f"{name}:{npg * 4}K"
        ops: list[dict[str, Any]] = [
            {"op": "ftruncate", "fd": fd, "len": fmt_size(size)},
            {"op": "mmap", "addr": self.addr(x), "len": fmt_size(npg * PAGE), "prot": prot,
             "flags": rng.choice(("MAP_PRIVATE|MAP_FIXED", "MAP_SHARED|MAP_FIXED")), "fd": fd, "offset": 0}]
        if self.chance(0.6):
            ops.append({"op": "madvise", "addr": self.addr(x), "len": fmt_size(npg * PAGE),
                        "advice": rng.choice(("MADV_RANDOM", "MADV_SEQUENTIAL", "MADV_NORMAL"))})
        ops.append({"op": "touch", "addr": self.addr(x + rng.randrange(max(1, size // PAGE))), "write": False})
        if self.chance(0.6):
            ops.append({"op": "ftruncate", "fd": fd, "len": fmt_size(size + rng.randint(1, npg) * PAGE)})
        ops.append({"op": "touch", "addr": self.addr(x + rng.randrange(npg)), "write": False})
        ops.append({"op": "mincore", "addr": self.addr(x), "len": fmt_size(npg * PAGE)})
        return ops

    def g_fail_pattern(self) -> list[dict[str, Any]]:
        """A repeat that surely stops (an mprotect of a page just unmapped: ENOMEM; a touch could grow a
        GROWSDOWN VMA above it instead of faulting), then ops at ``fail+X``: the first address of the
        iteration it stopped at (format 1.1)."""
        x = self.page()
        self.note(x, 1)
        rw = "PROT_READ|PROT_WRITE"
        ops: list[dict[str, Any]] = [
            {"op": "munmap", "addr": self.addr(x), "len": fmt_size(PAGE)},
            {"op": "repeat", "count": self.rng.choice((1, 2, 4)), "step": fmt_size(PAGE),
             "body": {"op": "mprotect", "addr": self.addr(x), "len": fmt_size(PAGE), "prot": "PROT_READ"}},
            {"op": "mmap", "addr": "fail+0", "len": fmt_size(PAGE), "prot": rw,
             "flags": "MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED", "fd": "none"},
            {"op": "touch", "addr": "fail+0", "write": True}]
        return ops

    def g_pattern(self) -> list[dict[str, Any]]:
        """A short sequence that builds neighbours with *different* anon_vmas, which single random ops
        rarely do: two mappings written while apart, then brought together by filling the gap between
        them (X | M | Y), by moving one next to the other (mremap), or by a prot change of a written
        neighbour."""
        rng = self.rng
        rw = "PROT_READ|PROT_WRITE"
        flags = "MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED"
        x = rng.randrange(max(1, self.arena // 2))
        nx, gap, ny = rng.randint(1, 3), rng.randint(1, 3), rng.randint(1, 3)
        y = x + nx + gap
        if y + ny > self.arena:
            return [self.g_touch()]
        for start, n in ((x, nx), (y, ny)):
            self.note(start, n)
        ops: list[dict[str, Any]] = [
            {"op": "mmap", "addr": self.addr(x), "len": fmt_size(nx * PAGE), "prot": rw, "flags": flags, "fd": "none"},
            {"op": "touch", "addr": self.addr(x + rng.randrange(nx)), "write": True},
            {"op": "mmap", "addr": self.addr(y), "len": fmt_size(ny * PAGE), "prot": rw, "flags": flags, "fd": "none"},
            {"op": "touch", "addr": self.addr(y + rng.randrange(ny)), "write": True}]
        kind = rng.choice(("fill", "move", "prot") if "mremap" in self.kinds else ("fill", "prot"))
        if kind == "fill":
            ops.append({"op": "mmap", "addr": self.addr(x + nx), "len": fmt_size(gap * PAGE),
                        "prot": rng.choice((rw, "PROT_READ")), "flags": flags, "fd": "none"})
            if rng.random() < 0.5:
                ops.append({"op": "touch", "addr": self.addr(x + nx), "write": rng.random() < 0.5})
        elif kind == "move":
            ops.append({"op": "mremap", "old": self.addr(y), "old_len": fmt_size(ny * PAGE),
                        "new_len": fmt_size(ny * PAGE), "flags": "MREMAP_MAYMOVE|MREMAP_FIXED",
                        "new_addr": self.addr(x + nx)})
        else:
            ops.append({"op": "mprotect", "addr": self.addr(y), "len": fmt_size(ny * PAGE), "prot": "PROT_READ"})
            ops.append({"op": "mmap", "addr": self.addr(x + nx), "len": fmt_size(gap * PAGE), "prot": "PROT_READ",
                        "flags": flags, "fd": "none"})
            ops.append({"op": "mprotect", "addr": self.addr(x + nx), "len": fmt_size((gap + ny) * PAGE),
                        "prot": rw})
        return ops

    def g_first_mmap(self) -> dict[str, Any]:
        """A MAP_FIXED mapping to start from (window), or a non-fixed one (window false)."""
        op = self.g_mmap()
        if self.window:
            start = self.rng.randrange(self.arena // 2)
            n = self.rng.randint(2, 12)
            op["addr"] = self.addr(start)
            op["len"] = fmt_size(n * PAGE)
            op["flags"] = "|".join([f for f in op["flags"].split("|") if f not in ("MAP_FIXED_NOREPLACE",)]
                                   + ([] if "MAP_FIXED" in op["flags"].split("|") else ["MAP_FIXED"]))
            self.note(start, n)
        return op


def generate_scenario(seed: int, index: int, config: FuzzConfig | None = None,
                      kinds: list[str] | None = None) -> dict[str, Any]:
    """The scenario (JSON object) of case ``index`` of a run with ``seed``: a pure function of its arguments
    and of the op kinds the model supports (``kinds``, default :func:`enabled_ops`)."""
    config = config or FuzzConfig()
    kinds = list(kinds if kinds is not None else enabled_ops(config))
    rng = random.Random(f"vmalab-fuzz:{seed}:{index}")
    window = not (config.nowindow_ratio > 0 and rng.random() < config.nowindow_ratio)
    gen = _Gen(rng, window, kinds, arena=rng.choice((16, 32, 64, 96)) if window else 64)
    weights = {k: OP_WEIGHTS.get(k, 1.0) for k in kinds if k != "snapshot"}
    raw: dict[str, Any] = {"name": f"fuzz_s{seed}_c{index}",
                           "description": f"vmalab fuzz --seed {seed}: case {index}", "window": window}
    if not window or rng.random() < 0.1:
        raw["rlimit_stack"] = rng.choice(_STACK_CHOICES)
    ops: list[dict[str, Any]] = []
    nfirst = rng.randint(1, 3) if "mmap" in kinds else 0
    for _ in range(min(nfirst, config.ops)):
        ops.append(gen.g_first_mmap())
    while len(ops) < config.ops and weights:
        if window and "touch" in kinds and rng.random() < 0.06:
            ops.extend(gen.g_pattern())
            continue
        if {"repeat", "touch", "munmap"} <= set(kinds) and rng.random() < 0.02:
            if not gen.hugetlb:  # under a hugetlb VMA the munmap fails, the repeat may not stop: no fail_addr
                ops.extend(gen.g_fail_pattern())
            continue
        if {"touch", "ftruncate", "madvise"} <= set(kinds) and rng.random() < 0.03:
            ops.extend(gen.g_file_pattern())
            continue
        kind = gen.pick(weights)
        if kind == "setrlimit" and len(ops) > 3 and rng.random() < 0.5:
            continue  # limits mostly early, so later ops run into them
        ops.append(getattr(gen, f"g_{kind}")())
        if "snapshot" in kinds and rng.random() < 0.12:
            ops.append(gen.g_snapshot())
    if "snapshot" in kinds and (not ops or ops[-1] != {"op": "snapshot"}):
        ops.append({"op": "snapshot"})
    raw["ops"] = ops
    return raw


# --- checking one scenario ---------------------------------------------------------------------------
@dataclass
class Check:
    """Both sides of one scenario: ``diffs`` is empty when they agree; ``error`` names a runner failure
    (the scenario could not be run on the live kernel — not a divergence)."""

    diffs: list[str]
    kernel: dict[str, Any] | None = None
    model: dict[str, Any] | None = None
    error: str | None = None

    @property
    def diverges(self) -> bool:
        return self.error is None and bool(self.diffs)


def check_case(raw: dict[str, Any], kernel_timeout: float = 60.0) -> Check:
    """Run one scenario on the live kernel and on the model and compare the results.

    A model that raises (a Python exception instead of ``-errno``, or a failed ``validate()``) diverges:
    the model's result is then ``{"exception": traceback}``."""
    from vmalab.oracle.kernel import KernelRunnerError, run_on_kernel
    try:
        scn = parse_scenario(raw)
    except ScenarioError as e:
        return Check([], error=f"scenario: {e}")
    try:
        kres = run_on_kernel(scn, timeout=kernel_timeout)
    except KernelRunnerError as e:
        return Check([], error=f"kernel: {e}")
    try:
        mres = run_on_model(scn, initial_maps=kres.get("env", {}).get("initial_maps"), validate=True,
                            caps=kres.get("env", {}).get("caps"))
    except ModelUnsupported as e:
        return Check([], kernel=kres, error=f"model: {e}")
    except Exception as e:  # noqa: BLE001 - any exception from the model is a finding
        tb = traceback.format_exc()
        return Check([f"model raised {type(e).__name__}: {e}"], kres, {"exception": tb})
    return Check(compare_results(kres, mres), kres, mres)


# --- shrinking ---------------------------------------------------------------------------------------
def _size_candidates(v: Any) -> list[Any]:
    try:
        n = parse_size(v)
    except ScenarioError:
        return []
    out: list[int] = []
    if n <= 0:
        return []
    if n > PAGE:
        out += [PAGE, (n // 2) & ~(PAGE - 1) or PAGE, n - PAGE]
    if n % PAGE:
        out.append((n + PAGE - 1) & ~(PAGE - 1))
    seen: list[Any] = []
    for c in out:
        f = fmt_size(c)
        if c != n and c > 0 and f not in seen:
            seen.append(f)
    return seen


def _addr_candidates(v: Any) -> list[Any]:
    try:
        a = parse_addr(v)
    except ScenarioError:
        return []
    out: list[Addr] = []
    if a.kind == "base" and a.offset > 0:
        off = a.offset
        out += [Addr("base", 0), Addr("base", (off // 2) & ~(PAGE - 1)), Addr("base", off - PAGE)]
        if off % PAGE:
            out.append(Addr("base", off & ~(PAGE - 1)))
    elif a.kind == "map" and a.name == "[vvar]" and a.offset < -PAGE:
        off = -a.offset
        out += [Addr("map", -PAGE, a.name), Addr("map", -((off // 2 + PAGE - 1) & ~(PAGE - 1)), a.name),
                Addr("map", -(off - PAGE), a.name)]
    res: list[Any] = []
    for c in out:
        j = c.to_json()
        if c != a and (c.kind != "base" or c.offset >= 0) and j not in res:
            res.append(j)
    return res


def _flag_candidates(v: Any) -> list[Any]:
    if not isinstance(v, str) or "|" not in v:
        return []
    parts = v.split("|")
    return ["|".join(p for p in parts if p != drop) for drop in parts if drop in _DROPPABLE_BITS]


def _op_candidates(op: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Simpler variants of one op, simplest first."""
    if op.get("op") == "repeat":
        body = op["body"]
        yield copy.deepcopy(body)
        for c in (1, 2, op["count"] // 2, op["count"] - 1):
            if 0 < c < op["count"]:
                yield {**op, "count": c}
        for b in _op_candidates(body):
            yield {**op, "body": b}
        return
    if "note" in op:
        yield {k: v for k, v in op.items() if k != "note"}
    if op.get("op") == "snapshot" and "range" in op:
        yield {"op": "snapshot"}
    if op.get("op") == "fork" and len(op.get("read", [])) > 0:
        reads = op["read"]
        for i in range(len(reads)):
            yield {**op, "read": reads[:i] + reads[i + 1:]}
    if op.get("op") == "touch" and "value" in op:
        yield {k: v for k, v in op.items() if k != "value"}
    if op.get("op") == "mmap" and op.get("offset") not in (None, 0):
        yield {**op, "offset": 0}
    for key in ("addr", "old", "new_addr"):
        if key in op:
            for c in _addr_candidates(op[key]):
                yield {**op, key: c}
    for key in ("len", "old_len", "new_len", "offset"):
        if key in op:
            for c in _size_candidates(op[key]):
                yield {**op, key: c}
    for key in ("flags", "prot"):
        if key in op:
            for c in _flag_candidates(op[key]):
                yield {**op, key: c}
    if op.get("op") == "mlock" and "flags" in op:
        yield {k: v for k, v in op.items() if k != "flags"}


def _map_addrs(raw: dict[str, Any], fn: Callable[[Addr], Addr]) -> dict[str, Any] | None:
    """A copy of ``raw`` with every address of every op passed through ``fn`` (None if ``fn`` refuses one
    by raising ValueError)."""
    out = copy.deepcopy(raw)

    def move(v: Any) -> Any:
        a = parse_addr(v)
        b = fn(a)
        return v if b == a else b.to_json()

    def fix(op: dict[str, Any]) -> None:
        for key in ("addr", "old", "new_addr"):
            if key in op:
                op[key] = move(op[key])
        if "read" in op:
            op["read"] = [move(a) for a in op["read"]]
        if "range" in op:
            op["range"] = [move(a) for a in op["range"]]
        if "body" in op:
            fix(op["body"])

    try:
        for op in out["ops"]:
            fix(op)
    except (ValueError, ScenarioError):
        return None
    return out


def _shift_down(threshold: int, delta: int) -> Callable[[Addr], Addr]:
    """An address map moving ``base+X`` with X >= ``threshold`` down by ``delta`` bytes."""
    def fn(a: Addr) -> Addr:
        if a.kind != "base" or a.offset < threshold:
            return a
        if a.offset - delta < 0:
            raise ValueError("below the window")
        return Addr("base", a.offset - delta)
    return fn


def _base_offsets(raw: dict[str, Any]) -> list[int]:
    offs: set[int] = set()

    def note(a: Addr) -> Addr:
        if a.kind == "base":
            offs.add(a.offset)
        return a

    _map_addrs(raw, note)
    return sorted(offs)


def _close_gaps(raw: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Move addresses together: shift the whole scenario down to base+0, then close each large gap between
    consecutive used addresses by moving everything above it down by half the gap."""
    offs = _base_offsets(raw)
    if not offs:
        return
    lo = offs[0] & ~(PAGE - 1)
    if lo > 0:
        t = _map_addrs(raw, _shift_down(0, lo))
        if t is not None:
            yield t
    for a, b in zip(offs, offs[1:], strict=False):
        gap = (b - a) & ~(PAGE - 1)
        if gap >= 4 * PAGE:
            t = _map_addrs(raw, _shift_down(b, gap // 2 & ~(PAGE - 1)))
            if t is not None:
                yield t


def shrink(raw: dict[str, Any], still_fails: Callable[[dict[str, Any]], bool], max_steps: int = 300,
           max_seconds: float = 60.0) -> tuple[dict[str, Any], int]:
    """Delta debugging: the smallest variant of ``raw`` found for which ``still_fails`` holds, and the
    number of candidates tried (at most ``max_steps``, for at most about ``max_seconds``).

    Passes, repeated until one round changes nothing: remove chunks of ops (halving the chunk size down
    to single ops), simplify each op (:func:`_op_candidates`: drop optional fields and flag bits, shrink
    lengths, offsets and counts, move addresses down), and move all addresses together
    (:func:`_close_gaps`)."""
    best = copy.deepcopy(raw)
    steps = 0
    deadline = time.monotonic() + max_seconds

    def budget() -> bool:
        return steps < max_steps and time.monotonic() < deadline

    def attempt(cand: dict[str, Any]) -> bool:
        nonlocal steps, best
        if not budget():
            return False
        steps += 1
        if still_fails(cand):
            best = cand
            return True
        return False

    changed = True
    while changed and budget():
        changed = False
        # 1. drop chunks of ops (ddmin)
        n = len(best["ops"])
        chunk = max(1, n // 2)
        while chunk >= 1 and budget():
            i = 0
            while i < len(best["ops"]) and budget():
                ops = best["ops"]
                if len(ops) <= 1:
                    break
                cand = {**best, "ops": ops[:i] + ops[i + chunk:]}
                if attempt(cand):
                    changed = True
                else:
                    i += chunk
            chunk //= 2
        # 2. simplify single ops
        i = 0
        while i < len(best["ops"]) and budget():
            progressed = True
            while progressed and budget():
                progressed = False
                for variant in _op_candidates(best["ops"][i]):
                    ops = list(best["ops"])
                    ops[i] = variant
                    if attempt({**best, "ops": ops}):
                        changed = progressed = True
                        break
                    if not budget():
                        break
            i += 1
        # 3. move addresses together
        for cand in list(_close_gaps(best)):
            if not budget():
                break
            if attempt(cand):
                changed = True
                break
        # 4. drop the stack rlimit
        if "rlimit_stack" in best and budget():
            if attempt({k: v for k, v in best.items() if k != "rlimit_stack"}):
                changed = True
    return best, steps


# --- one case ----------------------------------------------------------------------------------------
@dataclass
class CaseOutcome:
    """The outcome of one case: ``status`` is ``agree``, ``diverge`` or ``error`` (the kernel runner or
    the scenario parser refused the case: a generator bug); ``noise`` marks a divergence whose kernel
    result was not the same on a second run."""

    index: int
    status: str
    name: str
    nops: int
    first_diff: str = ""
    error: str = ""
    noise: bool = False
    original: dict[str, Any] | None = None
    shrunk: dict[str, Any] | None = None
    kernel: dict[str, Any] | None = None
    model: dict[str, Any] | None = None
    diffs: list[str] = field(default_factory=list)
    shrink_steps: int = 0
    seconds: float = 0.0
    original_diff: str = ""   # the first difference of the case as generated (shrinking changes first_diff)


def run_case(seed: int, index: int, config: FuzzConfig, kinds: list[str] | None = None) -> CaseOutcome:
    """Generate case ``index``, run it on both sides, and shrink it if it diverges."""
    t0 = time.monotonic()
    raw = generate_scenario(seed, index, config, kinds)
    name = raw["name"]
    chk = check_case(raw, config.kernel_timeout)
    if chk.error is not None:
        return CaseOutcome(index, "error", name, len(raw["ops"]), error=chk.error, original=raw,
                           seconds=time.monotonic() - t0)
    if not chk.diffs:
        return CaseOutcome(index, "agree", name, len(raw["ops"]), seconds=time.monotonic() - t0)
    out = CaseOutcome(index, "diverge", name, len(raw["ops"]), first_diff=chk.diffs[0], original=raw,
                      shrunk=raw, kernel=chk.kernel, model=chk.model, diffs=chk.diffs, original_diff=chk.diffs[0])
    # a second kernel run: a result that differs from itself is kernel-side noise, not a model bug
    again = check_case(raw, config.kernel_timeout)
    if again.kernel is not None and chk.kernel is not None and compare_results(chk.kernel, again.kernel):
        out.noise = True
    if config.shrink and not out.noise:
        def still_fails(cand: dict[str, Any]) -> bool:
            return check_case(cand, config.kernel_timeout).diverges

        small, steps = shrink(raw, still_fails, config.shrink_steps, config.shrink_seconds)
        final = check_case(small, config.kernel_timeout)
        if final.diverges:
            out.shrunk, out.kernel, out.model, out.diffs = small, final.kernel, final.model, final.diffs
            out.first_diff = final.diffs[0]
        out.shrink_steps = steps
    out.seconds = time.monotonic() - t0
    return out


def write_failure(out_dir: str, o: CaseOutcome) -> list[str]:
    """Write a diverging case: NAME.json (the shrunk scenario), NAME.kernel.json, NAME.model.json and
    NAME.original.json (the case as generated).  ``vmalab diff NAME.json --expected NAME.kernel.json``
    replays it.  Returns the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    scn = copy.deepcopy(o.shrunk or o.original or {})
    if scn:
        scn["description"] = (f"{scn.get('description', '')}; shrunk from {o.nops} to {len(scn.get('ops', []))} "
                              f"ops; first difference: {o.first_diff}" + ("; KERNEL NOISE" if o.noise else ""))
    for suffix, obj in ((".json", scn), (".kernel.json", o.kernel), (".model.json", o.model),
                        (".original.json", o.original)):
        if obj is None:
            continue
        p = os.path.join(out_dir, o.name + suffix)
        with open(p, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=1)
            f.write("\n")
        paths.append(p)
    return paths


# --- a whole run -------------------------------------------------------------------------------------
@dataclass
class FuzzSummary:
    cases: int = 0
    agree: int = 0
    diverge: int = 0
    errors: int = 0
    seconds: float = 0.0
    outcomes: list[CaseOutcome] = field(default_factory=list)   # the diverging and failing ones

    def line(self) -> str:
        s = f"{self.cases} cases, {self.agree} agree, {self.diverge} diverge"
        return s + (f", {self.errors} errors" if self.errors else "")


_WORKER: dict[str, Any] = {}


def _worker_init(seed: int, config: FuzzConfig, kinds: list[str]) -> None:
    _WORKER.update(seed=seed, config=config, kinds=kinds)


def _worker_case(index: int) -> CaseOutcome:
    return run_case(_WORKER["seed"], index, _WORKER["config"], _WORKER["kinds"])


def run_fuzz(seed: int, cases: int, config: FuzzConfig, jobs: int | None = None,
             on_outcome: Callable[[CaseOutcome], None] | None = None, start: int = 0) -> FuzzSummary:
    """Run cases ``start .. start+cases-1`` of ``seed``, in ``jobs`` processes (default: every core).

    ``on_outcome`` is called in this process for every case as it finishes (in completion order)."""
    from vmalab.oracle.kernel import ensure_runner
    ensure_runner()  # compile once, before the workers start
    kinds = enabled_ops(config)
    jobs = max(1, jobs or os.cpu_count() or 1)
    summary = FuzzSummary()
    t0 = time.monotonic()

    def account(o: CaseOutcome) -> None:
        summary.cases += 1
        if o.status == "agree":
            summary.agree += 1
        elif o.status == "diverge":
            summary.diverge += 1
            summary.outcomes.append(o)
        else:
            summary.errors += 1
            summary.outcomes.append(o)
        if on_outcome is not None:
            on_outcome(o)

    indices = range(start, start + cases)
    if jobs == 1 or cases <= 1:
        for i in indices:
            account(run_case(seed, i, config, kinds))
    else:
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
        with ctx.Pool(jobs, initializer=_worker_init, initargs=(seed, config, kinds)) as pool:
            for o in pool.imap_unordered(_worker_case, indices, chunksize=4):
                account(o)
    summary.outcomes.sort(key=lambda o: o.index)
    summary.seconds = time.monotonic() - t0
    return summary
