"""The failure and lock explorer for drivers (``vmalab explore DRIVER``).

It runs a driver's mmap under a few shapes — a new mapping, MAP_FIXED over an anonymous VMA with pages,
and a mapping adjacent to a compatible one of the same file (so the merge path runs), each shared and
private — first with no fault, then with every single fault (each point of :mod:`vmalab.faultpoints`, each
hit the baseline run makes) and, with ``pairs``, with a second fault at every point hit in each single-fault
run.  Every run is a scenario (the model-only ``"inject"`` field names the faults) followed by an
uninjected clean-up of the window, and after each run it checks:

* ``mm.validate()``; no exception from the driver or the core (a :class:`~vmalab.locking.LockError` is a
  deadlock or a double unlock);
* the errno of every syscall a fault hit: the injected one, or the driver's filtered one for failures in the
  action-completion phase (error_hook / error_override / finish);
* driver locks (:mod:`vmalab.lockcheck`): a mutex held when a callback returns to the core, or still held
  when the syscall returned (on failure, on merge), order inversions across runs;
* resources (:mod:`vmalab.resources`): refcounts, PFNs, file references left when no mapping is left;
  VMAs and PTEs left in the window, map_count.

Findings that are the kernel's own behaviour under a profile — the commit charge 6.16–7.1 keep after a
failed ``mmap_prepare``, the hole a failed MAP_FIXED leaves, a failed mmap that leaves its VMA mapped
(6.19/7.0 success_hook, an ignored unmap failure), the 6.19/7.0 unmap under ``i_mmap_rwsem`` — are
reported separately ("kernel behaviour") and never blamed on the driver.

Driver convention (``DRIVER`` argument): a built-in driver name (``vmalab.drivers``), or a Python file
(``path/to/drv.py``) or module (``pkg.mod``), optionally ``:NAME``.  The module provides either a function
``open(mm, size) -> fd`` (it opens the device in ``mm``, e.g. with ``mm.open_device(path, fops)``) or
exactly one :class:`~vmalab.files.FileOperations` subclass defined in it (instantiated without arguments
and opened as ``/dev/NAME``); ``:NAME`` picks the function or class.  Locks and resources the explorer
should watch are reachable as attributes of the FileOperations instance (directly or one object deep,
e.g. ``self.vm_ops.dev.mutex``); :class:`~vmalab.resources.Kref` / ``PfnAllocator`` register themselves
with the MM they are created for.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from . import constants as C
from .driver import ProfileFeatureError
from .execute import ModelRunner
from .faultpoints import FAULT_POINTS
from .fdtable import close as fd_close
from .files import FileOperations
from .lockcheck import LockChecker, LockOrderGraph
from .locking import LockError, Mutex, SelfDeadlock
from .mm import MM, ValidationError
from .pagetable import PFN, PfnPage
from .profiles import PROFILES
from .scenario import BASE, FdSpec, parse_scenario

K = C.PAGE_SIZE
WINDOW = 1 << 20
MAX_PAIRS_PER_SHAPE = 120


class ExploreError(ValueError):
    """The driver cannot be loaded (one-line message)."""


# ---------------------------------------------------------------------------------------------------------
# loading a driver
@dataclass
class DriverSpec:
    """A driver the explorer can open: ``name`` is what scenarios call it (``dev:NAME``)."""

    name: str
    source: str
    opener: Callable[[MM, int], int]


def load_driver(spec: str) -> DriverSpec:
    """Resolve ``spec`` (built-in name, ``file.py[:NAME]`` or ``pkg.mod[:NAME]``) to a :class:`DriverSpec`."""
    from .drivers import REGISTRY, _load_all
    _load_all()
    if spec in REGISTRY:
        return DriverSpec(spec, "built-in", REGISTRY[spec])
    target, _, attr = spec.partition(":") if not os.path.exists(spec) else (spec, "", "")
    is_file = target.endswith(".py") or os.sep in target
    try:
        if is_file:
            if not os.path.isfile(target):
                raise ExploreError(f"{target}: no such driver file (and {spec!r} is not a built-in driver)")
            stem = os.path.splitext(os.path.basename(target))[0]
            ispec = importlib.util.spec_from_file_location(f"vmalab_explore_{stem}", target)
            if ispec is None or ispec.loader is None:
                raise ExploreError(f"{target}: cannot be imported")
            mod = importlib.util.module_from_spec(ispec)
            ispec.loader.exec_module(mod)
        else:
            stem = target.rsplit(".", 1)[-1]
            mod = importlib.import_module(target)
    except ExploreError:
        raise
    except ModuleNotFoundError:
        raise ExploreError(f"unknown driver {spec!r}: not a built-in driver ({', '.join(sorted(REGISTRY))}), "
                           "file or module") from None
    except Exception as e:  # a broken driver module: report it in one line
        raise ExploreError(f"{target}: import failed: {type(e).__name__}: {e}") from None
    name = stem.replace("-", "_")
    if attr:
        obj = getattr(mod, attr, None)
        if obj is None:
            raise ExploreError(f"{target}: has no {attr!r}")
        return DriverSpec(name, target, _opener(obj, name, target))
    fn = mod.__dict__.get("open")
    if callable(fn) and not isinstance(fn, type):
        return DriverSpec(name, target, _opener(fn, name, target))
    classes = [o for o in vars(mod).values() if isinstance(o, type) and issubclass(o, FileOperations)
               and o.__module__ == mod.__name__ and (o.has_mmap or o.has_mmap_prepare)]
    if len(classes) != 1:
        raise ExploreError(f"{target}: define open(mm, size) -> fd or exactly one FileOperations subclass "
                           f"(found {len(classes)}; pick one with {target}:NAME)")
    return DriverSpec(name, target, _opener(classes[0], name, target))


def _opener(obj: Any, name: str, where: str) -> Callable[[MM, int], int]:
    if isinstance(obj, type) and issubclass(obj, FileOperations):
        cls = obj
        return lambda mm, size: mm.open_device(f"/dev/{name}", cls(), size)
    if callable(obj):
        fn = obj
        return lambda mm, size: int(fn(mm, size))
    raise ExploreError(f"{where}: {obj!r} is neither open(mm, size) nor a FileOperations subclass")


# ---------------------------------------------------------------------------------------------------------
# shapes
@dataclass
class Shape:
    """A short scenario around one mmap of the driver (``test`` is the index of that op)."""

    name: str
    ops: list[dict[str, Any]]
    test: int
    description: str


def _b(off: int) -> str:
    return f"base+{off:#x}"


def shapes(dev: str) -> list[Shape]:
    """new / fixed (over an anonymous VMA with pages) / merge (after a compatible mapping of the same file),
    shared and private.  After the mmap: a write touch, an mprotect that splits the mapping (->open), and
    an munmap of the window (->close)."""
    out: list[Shape] = []
    fd = f"dev:{dev}"
    for kind in ("MAP_SHARED", "MAP_PRIVATE"):
        tag = "shared" if kind == "MAP_SHARED" else "private"

        def tail(at: int) -> list[dict[str, Any]]:
            return [{"op": "touch", "addr": _b(at), "write": True},
                    {"op": "mprotect", "addr": _b(at), "len": "4K", "prot": "PROT_READ"},
                    {"op": "munmap", "addr": _b(0), "len": "1M"}]

        rw = "PROT_READ|PROT_WRITE"
        out.append(Shape(f"new-{tag}", [
            {"op": "mmap", "addr": _b(0x10000), "len": "8K", "prot": rw, "flags": kind, "fd": fd, "offset": 0},
            *tail(0x10000)], 0, f"a new {tag} mapping of the driver"))
        out.append(Shape(f"fixed-{tag}", [
            {"op": "mmap", "addr": _b(0x10000), "len": "16K", "prot": rw,
             "flags": "MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED"},
            {"op": "touch", "addr": _b(0x11000), "write": True},
            {"op": "mmap", "addr": _b(0x11000), "len": "8K", "prot": rw, "flags": kind + "|MAP_FIXED", "fd": fd,
             "offset": 0},
            *tail(0x11000)], 2, f"a {tag} MAP_FIXED mapping over an anonymous VMA with pages"))
        out.append(Shape(f"merge-{tag}", [
            {"op": "mmap", "addr": _b(0x10000), "len": "8K", "prot": rw, "flags": kind + "|MAP_FIXED", "fd": fd,
             "offset": 0},
            {"op": "mmap", "addr": _b(0x12000), "len": "8K", "prot": rw, "flags": kind + "|MAP_FIXED", "fd": fd,
             "offset": "8K"},
            *tail(0x12000)], 1, f"a {tag} mapping right after a compatible one of the same file (merge path)"))
    return out


# ---------------------------------------------------------------------------------------------------------
# one run
@dataclass
class Problem:
    """One thing wrong with one run."""

    kind: str  # "driver" or "kernel"
    category: str  # lock, lock-order, ref, pfn, file, errno, validate, exception, leak | commit, hole, vma-left,
    #                contract, lock-order
    what: str


@dataclass
class RunResult:
    scenario: dict[str, Any]
    problems: list[Problem] = field(default_factory=list)
    hits: dict[str, int] = field(default_factory=dict)
    unavailable: str | None = None
    test_errno: str | None = None  # the test mmap's errno (None: it succeeded)
    crashed: bool = False


class _Runner(ModelRunner):
    """A ModelRunner that opens ``dev:NAME`` with the explorer's driver and watches it."""

    def __init__(self, scn: Any, driver: DriverSpec, graph: LockOrderGraph) -> None:
        super().__init__(scn, validate=False, trace=True)
        self.driver = driver
        self.checker = LockChecker(self.mm, graph)
        self.driver_fops: list[FileOperations] = []

    def fd(self, spec: FdSpec) -> int:
        if spec.kind == "dev" and self._ours(spec.name) and spec.key not in self.fds:
            fd = self.driver.opener(self.mm, spec.size or 0)
            self.fds[spec.key] = {"rw": fd}
            self._watch(self.mm.fdtable[fd].f_op)
        return super().fd(spec)

    def _ours(self, name: str) -> bool:
        """``dev:NAME`` is the explored driver: its own name, or (replaying a reproducer written for a
        variant, e.g. the fixed driver) any name that is not a built-in driver."""
        from .drivers import REGISTRY
        return name == self.driver.name or name not in REGISTRY

    def _watch(self, fops: FileOperations) -> None:
        """Bind the driver's mutexes to the lock checker and check the core-path mmap_prepare rules."""
        self.driver_fops.append(fops)
        seen: set[int] = set()

        def scan(obj: Any, depth: int) -> None:
            if id(obj) in seen or depth > 2:
                return
            seen.add(id(obj))
            if isinstance(obj, Mutex):
                self.checker.bind(obj)
                return
            if isinstance(obj, (list, tuple)):
                for x in obj:
                    scan(x, depth + 1)
                return
            for v in getattr(obj, "__dict__", {}).values():
                if isinstance(v, (Mutex, list, tuple)) or hasattr(v, "__dict__") and not isinstance(v, type):
                    scan(v, depth + 1)

        scan(fops, 0)
        if fops.has_mmap_prepare:
            self.checker.watch(fops)


def _errno_name(res: dict[str, Any]) -> str | None:
    return res.get("errno")


def run_scenario(raw: dict[str, Any], driver: DriverSpec, graph: LockOrderGraph | None = None,
                 test: int | None = None) -> RunResult:
    """Run one scenario (with its ``inject`` field) on the driver, clean the window up, and check."""
    graph = graph if graph is not None else LockOrderGraph()
    graph.context = raw
    out = RunResult(raw)
    scn = parse_scenario(raw)
    try:
        runner = _Runner(scn, driver, graph)
    except ProfileFeatureError as e:
        out.unavailable = str(e)
        return out
    mm = runner.mm
    chk = runner.checker
    plan = {p: (k, e) for p, (k, e) in mm.fail_plan.items()}
    initial_count = mm.map_count
    probs = out.problems

    def add(kind: str, cat: str, what: str) -> None:
        if not any(p.kind == kind and p.what == what for p in probs):
            probs.append(Problem(kind, cat, what))

    reported: set[int] = set()
    for i, op in enumerate(scn.ops):
        before_hits = dict(mm.fail_hits)
        lo = runner.addr(op.p["addr"]) if op.op == "mmap" else 0
        hi = lo + op.p["len"] if op.op == "mmap" else 0
        before_range = list(mm.tree.range(lo, hi)) if op.op == "mmap" else []
        leaked_before = mm.leaked_commit
        tstart = len(mm.trace)
        try:
            res = runner.do(op)
            mm.validate()
        except ProfileFeatureError as e:
            out.unavailable = str(e)
            return out
        except SelfDeadlock as e:
            add("driver", "self-deadlock", f"{e.callback or 'a callback'} takes a lock the core already holds in "
                                           f"{op.op}(): {e}")
            out.crashed = True
            break
        except LockError as e:
            add("driver", "lock", f"{e} in {op.op}" + (f" (in {e.callback})" if e.callback else ""))
            out.crashed = True
            break
        except ValidationError as e:
            add("driver", "validate", f"mm.validate() after {op.op}: {e}")
            out.crashed = True
            break
        except Exception as e:  # the driver (or the core) raised: the kernel would oops
            add("driver", "exception", f"{type(e).__name__} in {op.op}: {e}")
            out.crashed = True
            break
        if op.op == "mmap":
            for what in _outside_device(mm):
                add("driver", "device-range", what)
        fired = [(p, k, e) for p, (k, e) in plan.items() if before_hits.get(p, 0) < k <= mm.fail_hits.get(p, 0)]
        got = _errno_name(res)
        if i == test:
            out.test_errno = got
        events = [ev.what for ev in mm.trace[tstart:]]
        merged = any(w.startswith("merged with") for w in events)
        if fired:
            _check_errno(op.op, res, fired, events, chk, add)
        if op.op == "mmap" and got is not None:
            if mm.leaked_commit > leaked_before:
                add("kernel", "commit", "a failed mmap() keeps the commit charge of the mapping "
                                        "(__mmap_region() abort path: Committed_AS leak)")
            after = mm.tree.range(lo, hi)
            ids = {id(v) for v in before_range}
            if any(v.vm_file is not None and id(v) not in ids for v in after):
                add("kernel", "vma-left", "mmap() failed but the new VMA stays mapped")
            elif before_range and not after:
                add("kernel", "hole", "a failed MAP_FIXED mmap() leaves a hole where the old mapping was")
        if op.op in ("mmap", "munmap", "mprotect"):
            for m, where in chk.after_syscall(op.op):
                if id(m) in reported:
                    continue
                reported.add(id(m))
                how = "failed" if got else ("merged into the existing VMA" if merged else "succeeded")
                add("driver", "lock", f"driver mutex {m.name} (taken in {where}) still held after {op.op}() {how}")
    out.hits = dict(mm.fail_hits)
    for r in chk.reports:
        if r.kind == "held-across-core":
            add("driver", "lock", r.what)
        elif r.kind == "contract":
            add("kernel", "contract", r.what)
    if mm.lock_events:
        chk.note_recursive("i_mmap_rwsem", "do_munmap() in mmap_action_finish()")
        add("kernel", "lock-order", "the failed VMA is unmapped while i_mmap_rwsem is still held: do_munmap() -> "
                                    "free_pgtables() -> unlink_file_vma_batch_process() takes it again "
                                    "(i_mmap_rwsem -> i_mmap_rwsem: deadlock)")
    for cyc in _driver_cycles(chk.run_graph):
        add("driver" if any(c.startswith("driver:") for c in cyc) else "kernel", "lock-order",
            chk.run_graph.describe(cyc))
    if out.crashed:
        return out
    # uninjected clean-up of the window and the descriptors (the last fput() calls ->release), then the
    # leak checks
    mm.fail_plan.clear()
    try:
        mm.sys_munmap(BASE, WINDOW)
        for fd in sorted(mm.fdtable):
            fd_close(mm, fd)
        mm.validate()
    except LockError as e:
        add("driver", "lock", f"{e} in the final munmap")
        return out
    except Exception as e:
        add("driver", "exception", f"{type(e).__name__} in the final munmap: {e}")
        return out
    if mm.tree.range(BASE, BASE + WINDOW):
        add("driver", "leak", "VMAs left in the window after munmap")
    if any(True for _ in mm.pt.items(BASE >> C.PAGE_SHIFT, (BASE + WINDOW) >> C.PAGE_SHIFT)):
        add("driver", "leak", "PTEs left in the window after munmap")
    if mm.map_count != initial_count:
        add("driver", "leak", f"map_count {mm.map_count}, {initial_count} before the run")
    for rp in mm.resources.check(mm):
        add("driver", rp.kind, rp.what)
    return out


def _driver_cycles(graph: LockOrderGraph) -> list[list[str]]:
    """The graph's cycles, without the kernel's recursive i_mmap_rwsem (reported with its cause)."""
    return [c for c in graph.cycles() if not (len(c) == 2 and c[0] == c[1] and not c[0].startswith("driver:"))]


def _outside_device(mm: MM) -> list[str]:
    """PFNs mapped in the window (by an action or remap_pfn_range()) outside the ``device_ranges`` that the
    VMA's driver declares (:attr:`vmalab.files.FileOperations.device_ranges`)."""
    out: list[str] = []
    for v in mm.tree.range(BASE, BASE + WINDOW):
        ranges = v.vm_file.f_op.device_ranges if v.vm_file is not None else None
        if ranges is None:
            continue
        bad = [(vpn, pg.pfn) for vpn, pg in mm.pt.items(v.vm_start >> C.PAGE_SHIFT, v.vm_end >> C.PAGE_SHIFT)
               if isinstance(pg, PfnPage) and pg.kind == PFN and not any(b <= pg.pfn < b + n for b, n in ranges)]
        if bad:
            dev = ", ".join(f"{b:#x}-{b + n - 1:#x}" for b, n in ranges)
            first_vpn, first_pfn = bad[0]
            out.append(f"PFN {first_pfn:#x} remapped at base+{(first_vpn << C.PAGE_SHIFT) - BASE:#x}: "
                       f"{len(bad)} page(s) outside the device memory the driver declares (PFNs {dev})")
    return out


def _check_errno(opname: str, res: dict[str, Any], fired: list[tuple[str, int, int]], events: list[str],
                 chk: LockChecker, add: Callable[[str, str, str], None]) -> None:
    """The errno a syscall returned after fault(s) fired in it."""
    first = fired[0]
    point, _, err = first
    fp = FAULT_POINTS[point]
    if opname not in ("mmap", "munmap", "mprotect") or fp.outcome != "returned":
        return
    want = C.errname(err)
    got = res.get("errno")
    mark = f"injected failure at {point} "
    at = next((n for n, w in enumerate(events) if w.startswith(mark)), len(events))
    if any(" failed -" in w for w in events[:at]):
        return  # the fault hit the clean-up of an earlier failure (an unmap whose error the kernel ignores)
    if len(fired) > 1 and got is not None:
        return  # two faults in one syscall: the first one on the path decides
    filtered = fp.completion and (
        any(w in ("error_hook", "finish") for w in events)
        or bool(chk.desc is not None and chk.desc.action_if_any is not None
                and chk.desc.action_if_any.error_override))
    if got is None:
        ret = res.get("ret")
        if isinstance(ret, str) and ret.startswith("0x"):
            ret = int(ret, 16)
        shown = f"{ret:#x}" if isinstance(ret, int) else str(ret)
        if fp.completion and filtered:
            hook = next((w for w in ("error_hook", "finish") if w in events), "error_override")
            if isinstance(ret, int) and 0 < ret <= 4095:
                why = (f"the driver's {hook} returned {ret} ({C.errname(-ret)} as a positive number), which "
                       "is not an error code (-errno): it became the address")
            else:
                why = f"the driver's {hook} returned {shown}, not an error code (-errno)"
            add("driver", "errno", f"{opname}() returned {shown} although the mapping failed and was unmapped: "
                                   f"{why}")
        else:
            add("driver", "errno", f"{opname}() succeeded although {point} failed")
    elif got != want and not filtered:
        add("driver", "errno", f"{opname}() returned {got} after {point} failed with {want}")


# ---------------------------------------------------------------------------------------------------------
# exploring
@dataclass
class Finding:
    """One row of the report: the same problem, found by one or more runs."""

    kind: str
    profile: str
    category: str
    what: str
    points: list[str] = field(default_factory=list)
    shapes: list[str] = field(default_factory=list)
    scenario: dict[str, Any] = field(default_factory=dict)
    path: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "profile": self.profile, "category": self.category, "what": self.what,
                "points": self.points, "shapes": self.shapes, "scenario": self.path or self.scenario}


@dataclass
class Report:
    driver: str
    profiles: list[str]
    findings: list[Finding] = field(default_factory=list)
    kernel: list[Finding] = field(default_factory=list)
    unavailable: dict[str, dict[str, str]] = field(default_factory=dict)  # profile -> shape -> why
    refused: dict[str, dict[str, str]] = field(default_factory=dict)  # profile -> shape -> errno
    runs: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"driver": self.driver, "profiles": self.profiles, "runs": self.runs,
                "findings": [f.to_json() for f in self.findings],
                "kernel_behaviour": [f.to_json() for f in self.kernel],
                "unavailable": self.unavailable, "refused": self.refused, "summary": summary_line(self)}


def _inject_label(inj: list[dict[str, Any]]) -> str:
    return "+".join(f"{i['point']}#{i['hit']}" for i in inj) or "(no fault)"


def _scenario(driver: DriverSpec, profile: str, shape: Shape, inj: list[dict[str, Any]]) -> dict[str, Any]:
    label = _inject_label(inj)
    raw: dict[str, Any] = {
        "name": f"explore_{driver.name}_{profile}_{shape.name}".replace(".", "_").replace("-", "_"),
        "description": f"vmalab explore {driver.source if driver.source != 'built-in' else driver.name}: "
                       f"{shape.description}, kernel {profile}, fault {label}",
        "kernel_profile": profile, "ops": shape.ops}
    if inj:
        raw["inject"] = inj
    return raw


def explore(driver: DriverSpec, profiles: list[str], pairs: bool = True, driver_points: bool = False,
            progress: Callable[[str, str, int], None] | None = None) -> Report:
    """Explore ``driver`` under each profile (see the module docstring).  Faults are injected at the core's
    points; ``driver_points`` also fails the driver's own callbacks (mmap_prepare, ->mmap, mapped,
    success_hook, finish) without running them — the driver then has to tolerate, e.g., a ->close for a
    VMA whose mapped hook failed.  ``progress(profile, shape, runs)`` is called before every run."""

    def wanted(p: str) -> bool:
        return driver_points or not FAULT_POINTS[p].driver

    rep = Report(driver.name, profiles)
    rows: dict[tuple[str, str, str, str], Finding] = {}
    for prof in profiles:
        graph = LockOrderGraph()
        for shape in shapes(driver.name):
            if progress is not None:
                progress(prof, shape.name, rep.runs)
            base = run_scenario(_scenario(driver, prof, shape, []), driver, graph, shape.test)
            rep.runs += 1
            if base.unavailable:
                rep.unavailable.setdefault(prof, {})[shape.name] = base.unavailable
                continue
            _collect(rows, prof, shape, [], base)
            if base.test_errno is not None:
                rep.refused.setdefault(prof, {})[shape.name] = base.test_errno
            singles = [(p, k) for p, n in sorted(base.hits.items()) if wanted(p) for k in range(1, n + 1)]
            npairs = 0
            for p, k in singles:
                inj = [{"point": p, "hit": k, "errno": C.ERRNO_NAMES[FAULT_POINTS[p].errno]}]
                if progress is not None:
                    progress(prof, shape.name, rep.runs)
                r = run_scenario(_scenario(driver, prof, shape, inj), driver, graph, shape.test)
                rep.runs += 1
                _collect(rows, prof, shape, inj, r)
                if not pairs or r.unavailable:
                    continue
                for q, m in sorted(r.hits.items()):
                    if q == p or not wanted(q):
                        continue
                    for j in range(1, m + 1):
                        if npairs >= MAX_PAIRS_PER_SHAPE:
                            break
                        inj2 = [*inj, {"point": q, "hit": j, "errno": C.ERRNO_NAMES[FAULT_POINTS[q].errno]}]
                        if progress is not None:
                            progress(prof, shape.name, rep.runs)
                        r2 = run_scenario(_scenario(driver, prof, shape, inj2), driver, graph, shape.test)
                        rep.runs += 1
                        npairs += 1
                        _collect(rows, prof, shape, inj2, r2)
        for cyc in _driver_cycles(graph):
            # a cycle no single run closes: its edges come from different runs, so no one scenario replays it
            involved = any(c.startswith("driver:") for c in cyc)
            text = graph.describe(cyc)
            if any(k[1] == prof and k[2] == "lock-order" and k[3].split(":", 2)[:2] == text.split(":", 2)[:2]
                   for k in rows):
                continue  # already found within one run (with a reproducer)
            where = graph.edges.get((cyc[-2], cyc[-1])) if len(cyc) > 1 else None
            f = Finding("driver" if involved else "kernel", prof, "lock-order", text, ["(across runs)"], [],
                        dict(where[1]) if where and isinstance(where[1], dict) else {})
            rows.setdefault((f.kind, prof, f.category, f.what), f)
    for f in rows.values():
        (rep.findings if f.kind == "driver" else rep.kernel).append(f)
    return rep


def _collect(rows: dict[tuple[str, str, str, str], Finding], prof: str, shape: Shape,
             inj: list[dict[str, Any]], r: RunResult) -> None:
    label = _inject_label(inj)
    for p in r.problems:
        key = (p.kind, prof, p.category, p.what)
        f = rows.get(key)
        if f is None:
            f = Finding(p.kind, prof, p.category, p.what, scenario=r.scenario)
            rows[key] = f
        elif len(r.scenario.get("inject", [])) < len(f.scenario.get("inject", [])):
            f.scenario = r.scenario  # the smallest reproducer: fewest faults
        if label not in f.points:
            f.points.append(label)
            f.points.sort(key=lambda s: (s.count("+") + (s != "(no fault)"), s))
        if shape.name not in f.shapes:
            f.shapes.append(shape.name)


def write_scenarios(rep: Report, out_dir: str) -> None:
    """Write each finding's reproducing scenario to ``out_dir`` (sets ``Finding.path``)."""
    os.makedirs(out_dir, exist_ok=True)
    for n, f in enumerate(rep.findings + rep.kernel, 1):
        if not f.scenario:
            continue
        kind = "driver" if f.kind == "driver" else "kernel"
        path = os.path.join(out_dir, f"{rep.driver}-{kind}-{n:03d}.json")
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(f.scenario, fh, indent=1)
            fh.write("\n")
        f.path = path


WIDTH = 96  # the report fits a 100-column terminal


def summary_line(rep: Report) -> str:
    """The closing line: ``N findings on M profiles; K kernel-behaviour rows``."""
    n, m, k = len(rep.findings), len(rep.profiles), len(rep.kernel)
    return (f"{n} finding{'s' if n != 1 else ''} on {m} profile{'s' if m != 1 else ''}; "
            f"{k} kernel-behaviour row{'s' if k != 1 else ''}")


def _wrap(text: str, indent: str = "    ") -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=indent, subsequent_indent=indent + "  ",
                         break_on_hyphens=False, break_long_words=True)


def format_report(rep: Report) -> str:
    """The human-readable report (at most :data:`WIDTH` columns): driver findings, kernel behaviour,
    availability and the summary line.  Each finding is one short table row (number, profile, category,
    shapes) followed by indented lines: what is wrong, the fault points, the reproducing scenario."""
    lines = _wrap(f"# vmalab explore {rep.driver}: {rep.runs} runs, profiles {', '.join(rep.profiles)}", "")

    def table(title: str, rows: list[Finding]) -> None:
        lines.append("")
        lines.append(f"## {title}")
        if not rows:
            lines.append("(none)")
            return
        lines.append("| # | profile | category | shapes |")
        lines.append("|---|---|---|---|")
        for n, f in enumerate(rows, 1):
            lines.extend(_wrap(f"| {n} | {f.profile} | {f.category} | {', '.join(f.shapes) or '-'} |", ""))
            lines.extend(_wrap(f.what))
            pts = ", ".join(f.points[:4]) + (f" (+{len(f.points) - 4} more)" if len(f.points) > 4 else "")
            lines.extend(_wrap(f"faults: {pts}"))
            scn = f.path or ("(use --out DIR to write it)" if f.scenario else "-")
            lines.extend(_wrap(f"scenario: {scn}"))

    table("driver findings", rep.findings)
    table("kernel behaviour (per profile, not the driver's fault)", rep.kernel)
    if rep.unavailable or rep.refused:
        lines.append("")
        lines.append("## availability")
        for prof in rep.profiles:
            un = rep.unavailable.get(prof, {})
            rf = rep.refused.get(prof, {})
            if un:
                why = sorted(set(un.values()))
                lines.extend(_wrap(f"- {prof}: not available ({', '.join(sorted(un))}): {'; '.join(why)}", ""))
            if rf:
                lines.extend(_wrap(f"- {prof}: the driver refuses " +
                                   ", ".join(f"{s} ({e})" for s, e in sorted(rf.items())), ""))
    lines.append("")
    lines.append(summary_line(rep))
    return "\n".join(lines) + "\n"


class Progress:
    """Progress of an exploration on ``stream``: one line rewritten in place on a terminal, otherwise a
    line every ``every`` seconds (and one per profile)."""

    def __init__(self, stream: TextIO | None = None, every: float = 10.0) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.every = every
        self.last = time.monotonic()  # off a terminal the first line comes after ``every`` seconds
        self.profile = ""

    def __call__(self, profile: str, shape: str, runs: int) -> None:
        now = time.monotonic()
        new_profile = profile != self.profile
        self.profile = profile
        if self.tty:
            if new_profile or now - self.last >= 0.1:
                self.last = now
                self.stream.write(f"\rexplore: profile {profile}, shape {shape}: {runs} runs\x1b[K")
                self.stream.flush()
        elif now - self.last >= self.every:
            self.last = now
            self.stream.write(f"explore: profile {profile}, shape {shape}: {runs} runs\n")
            self.stream.flush()

    def done(self) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def all_profile_names() -> list[str]:
    return list(PROFILES)
