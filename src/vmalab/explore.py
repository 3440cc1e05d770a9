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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import constants as C
from .driver import ProfileFeatureError
from .execute import ModelRunner
from .faultpoints import FAULT_POINTS
from .files import FileOperations
from .lockcheck import LockChecker, LockOrderGraph
from .locking import LockError, Mutex
from .mm import MM, ValidationError
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
        except LockError as e:
            add("driver", "lock", f"{e} in {op.op}")
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
    if out.crashed:
        return out
    # uninjected clean-up of the window, then the leak checks
    mm.fail_plan.clear()
    try:
        mm.sys_munmap(BASE, WINDOW)
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
        if fp.completion and filtered:
            add("driver", "errno", f"{opname}() succeeded although the mapping failed and was unmapped: the "
                                   "driver's error filter cleared the error")
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
                "unavailable": self.unavailable, "refused": self.refused}


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


def explore(driver: DriverSpec, profiles: list[str], pairs: bool = True, driver_points: bool = False) -> Report:
    """Explore ``driver`` under each profile (see the module docstring).  Faults are injected at the core's
    points; ``driver_points`` also fails the driver's own callbacks (mmap_prepare, ->mmap, mapped,
    success_hook, finish) without running them — the driver then has to tolerate, e.g., a ->close for a
    VMA whose mapped hook failed."""

    def wanted(p: str) -> bool:
        return driver_points or not FAULT_POINTS[p].driver

    rep = Report(driver.name, profiles)
    rows: dict[tuple[str, str, str, str], Finding] = {}
    for prof in profiles:
        graph = LockOrderGraph()
        for shape in shapes(driver.name):
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
                        r2 = run_scenario(_scenario(driver, prof, shape, inj2), driver, graph, shape.test)
                        rep.runs += 1
                        npairs += 1
                        _collect(rows, prof, shape, inj2, r2)
        for cyc in graph.cycles():
            if len(cyc) == 2 and cyc[0] == cyc[1] and not cyc[0].startswith("driver:"):
                continue  # the recursive i_mmap_rwsem is reported with its cause
            involved = any(c.startswith("driver:") for c in cyc)
            where = graph.edges.get((cyc[-2], cyc[-1])) if len(cyc) > 1 else None
            text = " -> ".join(cyc + [cyc[0]] if cyc[0] != cyc[-1] else cyc)
            f = Finding("driver" if involved else "kernel", prof, "lock-order",
                        f"lock order inversion: {text}", ["(across runs)"], [],
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


def format_report(rep: Report) -> str:
    """The human-readable report: driver findings, kernel behaviour, availability."""
    lines = [f"# vmalab explore {rep.driver}: {rep.runs} runs, profiles {', '.join(rep.profiles)}"]

    def table(title: str, rows: list[Finding]) -> None:
        lines.append("")
        lines.append(f"## {title}")
        if not rows:
            lines.append("(none)")
            return
        lines.append("| # | profile | fault point(s) | shapes | what is wrong | scenario |")
        lines.append("|---|---|---|---|---|---|")
        for n, f in enumerate(rows, 1):
            pts = ", ".join(f.points[:4]) + (f" (+{len(f.points) - 4} more)" if len(f.points) > 4 else "")
            scn = f.path or ("(use --out)" if f.scenario else "-")
            lines.append(f"| {n} | {f.profile} | {pts} | {', '.join(f.shapes) or '-'} | {f.category}: {f.what} "
                         f"| {scn} |")

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
                lines.append(f"- {prof}: not available ({', '.join(sorted(un))}): {'; '.join(why)}")
            if rf:
                lines.append(f"- {prof}: the driver refuses " + ", ".join(f"{s} ({e})" for s, e in sorted(rf.items())))
    return "\n".join(lines) + "\n"


def all_profile_names() -> list[str]:
    return list(PROFILES)
