"""Run a scenario on the model and produce the scenario format's result object.

The model starts from a process layout: by default one shaped like the static live-kernel runner's
(program image at 0x400000, ``[heap]``, the vDSO block ending at ``mmap_base``, ``[stack]`` at the top),
or — when comparing with a kernel recording — exactly the initial maps the recording captured.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from . import constants as C
from .faults import Fault
from .files import ProfileFeatureError
from .mm import MM
from .pagetable import Page, PageTable
from .probe import TraceEvent
from .procfs import MapsFormatError, import_maps, maps_line, maps_offset, perms, task_mem, vma_name
from .scenario import BASE, WINDOW_SIZE, Addr, FdSpec, Op, Scenario, format_addr, parse_inject
from .syscalls import ADDR, FD, OPS, RET_ADDR, RET_BRK, RET_VEC, Syscall, for_op

#: a driver's open(mm, size) -> fd (vmalab.drivers.REGISTRY values, drivers loaded from files)
Opener = Callable[[MM, int], int]

#: the ops that are not rows of the syscall table (vmalab.syscalls.OPS holds the others)
MODEL_OPS = {"touch", "snapshot", "vma_count", "repeat", "setrlimit", "ftruncate", "fork", "status", "capdrop"}


def op_supported(name: str) -> bool:
    """Whether the model implements scenario op ``name``."""
    return name in MODEL_OPS or name in OPS


def first_addr_key(op: Op) -> str:
    """The op's first address parameter (the one a repeat moves): ``old`` for mremap, else ``addr``."""
    sc = for_op(op.op, op.p)
    if sc is not None:
        return next((prm.key for prm in sc.params if prm.kind == ADDR), "addr")
    return "addr"


#: validation policies of a model run (True and False are the old spellings of "each" and "off")
VALIDATE_POLICIES: dict[bool | str, str] = {True: "each", False: "off", "each": "each", "end": "end", "off": "off"}


class ModelUnsupported(Exception):
    """The scenario uses an op or a feature the model does not implement yet."""


class ModelLimitExceeded(ModelUnsupported):
    """A model run went past a limit of the run (the scenario's ``timeout``, ...): a one-line message."""


#: Default limits of a model run, far above what a corpus scenario needs (under 1,000 PTEs, 70,000 repeat
#: iterations) and far below what would exhaust the host: the most PTEs the model holds at once (1 GiB of
#: 4 KiB pages, the size of the window), and the most repeat iterations of one run (all repeats together).
DEFAULT_MAX_RESIDENT = 1 << 18
DEFAULT_MAX_ITERATIONS = 1_000_000


class ResidentLimitExceeded(ModelLimitExceeded):
    """The model was about to hold more PTEs (or page-cache pages of one file) than ``max_resident``."""


class _BoundedPageTable(PageTable):
    """A runner's page table: a PTE beyond ``limit`` raises :class:`ResidentLimitExceeded`.  Every path
    that maps a page (faults, population, guard markers, driver remaps) goes through :meth:`set`."""

    __slots__ = ("limit",)

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def set(self, vpn: int, page: Page) -> None:
        if len(self) >= self.limit and self.get(vpn) is None:
            raise ResidentLimitExceeded(f"the model would map more than {self.limit} pages "
                                        "(--max-resident)")
        super().set(vpn, page)


def default_layout(rlimit_stack: int) -> str:
    """A maps text shaped like the static runner's initial layout (see docs/oracle.md)."""
    from .layout import mmap_base
    top = mmap_base(rlimit_stack)
    lines = [
        "00400000-00401000 r--p 00000000 fe:00 4242                               /vmalab-runner",
        "00401000-00498000 r-xp 00001000 fe:00 4242                               /vmalab-runner",
        "00498000-004c3000 r--p 00098000 fe:00 4242                               /vmalab-runner",
        "004c3000-004c7000 r--p 000c2000 fe:00 4242                               /vmalab-runner",
        "004c7000-004cc000 rw-p 000c6000 fe:00 4242                               /vmalab-runner",
        "004cc000-00737000 rw-p 00000000 00:00 0 ",
        "00737000-00759000 rw-p 00000000 00:00 0                                  [heap]",
        f"{top - 0x8000:x}-{top - 0x4000:x} r--p 00000000 00:00 0                          [vvar]",
        f"{top - 0x4000:x}-{top - 0x2000:x} r--p 00000000 00:00 0                          [vvar_vclock]",
        f"{top - 0x2000:x}-{top:x} r-xp 00000000 00:00 0                          [vdso]",
        "7ffffffde000-7ffffffff000 rw-p 00000000 00:00 0                          [stack]",
    ]
    return "\n".join(lines) + "\n"


class ModelRunner:
    """Executes one scenario on a fresh :class:`MM`; ``validate`` says when ``mm.validate()`` runs: after
    every op (``"each"`` or True: O(n) per op, what the tests use), once at the ``"end"`` (the CLI's
    default: a run stays O(n log n)), or ``"off"`` (False)."""

    def __init__(self, scn: Scenario, initial_maps: str | None = None, validate: bool | str = False,
                 trace: bool = False, kernel: str | None = None, caps: Iterable[str] | None = None,
                 timeout: float | None = None, max_resident: int | None = None,
                 max_iterations: int | None = None, drivers: Mapping[str, Opener] | None = None) -> None:
        """``drivers``: drivers loaded from files named on the command line, by the name scenarios call
        them (``dev:NAME``; see :meth:`loaded_driver`).  ``caps``: the capabilities the process starts with
        (default: root with all of them; a live result's ``env.caps`` when comparing with it).
        ``timeout``: seconds of wall-clock time the run may take (default: the scenario's ``timeout``, else
        no limit).  ``max_resident``: the most PTEs the model holds at once, and the most page-cache pages
        of one file (default :data:`DEFAULT_MAX_RESIDENT`); ``max_iterations``: the most repeat iterations
        of the run (default :data:`DEFAULT_MAX_ITERATIONS`).  Going past a limit raises :class:`ModelLimitExceeded`."""
        self.scn = scn
        self.drivers: dict[str, Opener] = dict(drivers or {})
        self.op_traces: list[list[TraceEvent]] = []  # the trace events of each op, in op order
        self.max_resident = DEFAULT_MAX_RESIDENT if max_resident is None else max_resident
        self.max_iterations = DEFAULT_MAX_ITERATIONS if max_iterations is None else max_iterations
        self.iterations = 0
        self.timeout = timeout if timeout is not None else scn.timeout
        self.deadline: float | None = None
        self.fail_addr: int | None = None  # the fail_addr of the most recent repeat ("fail+X")
        rl = scn.rlimit_stack if scn.rlimit_stack is not None else 8 << 20
        profile = kernel or scn.raw.get("kernel_profile") or "6.18"
        if not isinstance(profile, str):
            raise ModelUnsupported("kernel_profile must be a string")
        try:
            self.mm = MM(rlimit_stack=rl, kernel=profile, caps=caps)
        except ValueError as e:
            raise ModelUnsupported(str(e)) from None
        self.mm.pt = _BoundedPageTable(self.max_resident)
        self.mm.tracing = trace
        for point, hit, err in parse_inject(scn.raw.get("inject", [])):
            self.mm.fail_plan[point] = (hit, err)  # model-only: fail the hit-th hit of a fault point
        try:
            if initial_maps is not None and not isinstance(initial_maps, str):
                raise MapsFormatError(f"expected a maps text, got {type(initial_maps).__name__}")
            import_maps(self.mm, initial_maps if initial_maps is not None else default_layout(rl))
        except MapsFormatError as e:  # a recording's env.initial_maps that is not a maps text
            raise ModelUnsupported(f"initial maps: {e}") from None
        #: when mm.validate() runs: "each" op (and every fork child), once at the "end", or "off"
        self.validate = VALIDATE_POLICIES[validate] if isinstance(validate, bool) else validate
        if self.validate not in VALIDATE_POLICIES.values():
            raise ValueError(f"validate must be one of each, end, off (or a bool), not {validate!r}")
        self.fds: dict[tuple[str, str], dict[str, int]] = {}
        self.initial_brk = self.mm.brk

    # -- helpers --------------------------------------------------------------------------------------
    def addr(self, a: Addr) -> int:
        if a.kind == "null":
            return 0
        if a.kind == "abs":
            return a.offset & C.ULONG_MASK
        if a.kind == "base":
            return (BASE + a.offset) & C.ULONG_MASK
        if a.kind == "brk":
            return (self.initial_brk + a.offset) & C.ULONG_MASK
        if a.kind == "fail":
            if self.fail_addr is None:
                raise ModelUnsupported("fail+X: the most recent repeat did not stop at an op with an address")
            return (self.fail_addr + a.offset) & C.ULONG_MASK
        for v in self.mm.tree:
            if vma_name(self.mm, v) == a.name:
                return ((v.vm_start if a.kind == "map" else v.vm_end) + a.offset) & C.ULONG_MASK
        raise ModelUnsupported(f"no VMA named {a.name!r} for {a.kind}:")

    def fd(self, spec: FdSpec) -> int:
        mm = self.mm
        if spec.kind == "none":
            return -1
        if spec.kind == "raw":
            return spec.raw
        if spec.kind == "devzero":
            # one open /dev/zero per scenario, as the live runner does (same struct file: merges possible)
            if ("devzero", "") not in self.fds:
                self.fds[("devzero", "")] = {"rw": mm.open_devzero()}
            return self.fds[("devzero", "")]["rw"]
        entry: dict[str, int] | None = self.fds.get(spec.key)
        if entry is None:
            size = spec.size or 0
            if spec.kind == "dev":
                opener = self.loaded_driver(spec.name)
                if opener is not None:
                    fd = opener(mm, size)
                else:
                    from .drivers import open_driver
                    try:
                        fd = open_driver(mm, spec.name, size)
                    except ValueError as e:  # a scenario never loads code: a driver file needs --driver
                        raise ModelUnsupported(f"{e}; a driver file is loaded only with --driver FILE.py") from None
            elif spec.kind == "memfd":
                fd = mm.memfd_create(spec.name, size)
            elif spec.kind == "secretmem":
                fd = mm.memfd_secret(size)
            else:
                fd = mm.open_file(f"$FILES/{spec.kind}/{spec.name}", size, kind=spec.kind)
            entry = {"rw": fd}
            self.fds[spec.key] = entry
        if spec.mode not in entry:
            entry[spec.mode] = mm.reopen(entry["rw"], spec.mode)
        return entry[spec.mode]

    def loaded_driver(self, name: str) -> Opener | None:
        """The loaded driver that ``dev:NAME`` opens: the one of that name; else, when exactly one driver
        was loaded and NAME is no built-in driver, that one (a reproducer written for a variant of it, as
        ``vmalab explore --replay`` does).  None: a built-in driver."""
        if name in self.drivers:
            return self.drivers[name]
        if len(self.drivers) == 1:
            from .drivers import REGISTRY
            if name not in REGISTRY:
                return next(iter(self.drivers.values()))
        return None

    def snapshot_vmas(self, lo: int, hi: int, window: bool) -> list[dict[str, Any]]:
        out = []
        mm = self.mm
        vmas = mm.tree.range(lo, hi) if window else list(mm.tree)
        for v in vmas:
            d: dict[str, Any] = {
                "start": format_addr(v.vm_start, self.scn.window), "end": format_addr(v.vm_end, self.scn.window),
                "len": f"{v.vm_end - v.vm_start:#x}", "perms": perms(v), "pgoff": f"{maps_offset(v):#x}",
                "name": vma_name(mm, v), "rss_kb": mm.rss_pages(v) * 4, "vmflags": C.vmflags_str(v.vm_flags),
            }
            if v.vm_flags & C.VM_LOCKED:
                lk = mm.pss_bytes(v) >> 10
                if lk:
                    d["locked_kb"] = lk
            d["maps"] = maps_line(mm, v)
            out.append(d)
        return out

    # -- ops --------------------------------------------------------------------------------------------
    def _ret(self, r: int, is_addr: bool = False) -> dict[str, Any]:
        if r < 0:
            return {"ret": -1, "errno": C.errname(r)}
        return {"ret": format_addr(r, self.scn.window) if is_addr else r, "errno": None}

    def do(self, op: Op, first_addr_shift: int = 0, first_addr: int | None = None) -> dict[str, Any]:
        """Run one op.  In a repeat body, only the first address (``addr``, or ``old`` of mremap) moves:
        it is ``first_addr`` (resolved once, before the first iteration, as the live runner does) plus
        ``first_addr_shift``; the op's other addresses are resolved as they are."""
        p = op.p
        mm = self.mm
        name = op.op
        if not op_supported(name):
            raise ModelUnsupported(f"op {name!r} is not supported by the model yet")
        first_key = first_addr_key(op)

        def a(key: str) -> int:
            if key != first_key:
                return self.addr(p[key])
            start = self.addr(p[key]) if first_addr is None else first_addr
            return (start + first_addr_shift) & C.ULONG_MASK

        if name == "touch":
            try:
                v = mm.touch(a("addr"), p["write"], p.get("value", 1))
            except Fault as f:
                return {"ret": -1, "errno": None, "signal": f.signal}
            res: dict[str, Any] = {"ret": 0, "errno": None}
            if not p["write"]:
                res["value"] = v
            return res
        if name == "vma_count":
            return {"ret": mm.map_count, "errno": None}
        if name == "status":
            return {"ret": 0, "errno": None, "status": task_mem(mm)}
        if name == "capdrop":
            mm.drop_cap(p["cap"])  # capset() of the reduced sets: always allowed
            return self._ret(0)
        if name == "setrlimit":
            # kernel/sys.c: do_prlimit(): soft above hard is EINVAL; raising the hard limit needs
            # CAP_SYS_RESOURCE
            res_id = p["resource"]
            cur, mx = mm.rlimits.get(res_id, (C.RLIM_INFINITY, C.RLIM_INFINITY))
            new_max = p.get("max", mx)
            if p["value"] > new_max:
                return self._ret(-errno.EINVAL)
            if new_max > mx and not mm.cap_sys_resource:
                return self._ret(-errno.EPERM)
            mm.rlimits[res_id] = (p["value"], new_max)
            return self._ret(0)
        if name == "ftruncate":
            fd = self.fd(p["fd"])
            try:
                mm.ftruncate(fd, p["len"])
            except OSError as e:
                return self._ret(-(e.errno or errno.EINVAL))
            return self._ret(0)
        if name == "repeat":
            body: Op = p["body"]
            done = 0
            failed: dict[str, Any] | None = None
            key = first_addr_key(body)
            first = self.addr(body.p[key]) if key in body.p else None
            for i in range(p["count"]):
                self.check_deadline()
                self.count_iteration()
                one = self.do(body, i * p["step"], first)
                if one["ret"] == -1:
                    failed = one
                    break
                done += 1
            out: dict[str, Any] = {"ret": done, "errno": failed.get("errno") if failed else None,
                                   "failed_at": done if failed is not None else None}
            if failed is not None and failed.get("signal"):
                out["signal"] = failed["signal"]
            # format 1.1: the stopped iteration's first address, for "fail+X"
            self.fail_addr = (first + done * p["step"]) & C.ULONG_MASK if failed is not None and first is not None \
                else None
            if self.fail_addr is not None:
                out["fail_addr"] = format_addr(self.fail_addr, self.scn.window)
            return out
        if name == "snapshot":
            if "range" in p:
                lo, hi = self.addr(p["range"][0]), self.addr(p["range"][1])
                return {"vmas": self.snapshot_vmas(lo, hi, True)}
            return {"vmas": self.snapshot_vmas(BASE, BASE + WINDOW_SIZE, self.scn.window)}
        return self.do_syscall_op(op, a)

    def do_syscall_op(self, op: Op, a: Callable[[str], int]) -> dict[str, Any]:
        """The ops that are syscalls of the table (:mod:`vmalab.syscalls`), and fork."""
        p = op.p
        sc = for_op(op.op, p)
        if sc is not None:
            return self.do_syscall(sc, p, a)
        if op.op == "fork":
            return self.do_fork(op)
        raise ModelUnsupported(f"op {op.op!r} is not supported by the model yet")  # pragma: no cover

    def do_syscall(self, sc: Syscall, p: dict[str, Any], a: Callable[[str], int]) -> dict[str, Any]:
        """Run one row of the syscall table with the op's arguments, in the kernel's order."""
        args: list[int] = []
        for prm in sc.params:
            if prm.kind == ADDR:
                args.append(a(prm.key) if prm.key in p else self.addr(Addr(prm.default)))
            elif prm.kind == FD:
                args.append(self.fd(p.get(prm.key, FdSpec(prm.default))))
            else:
                args.append(p[prm.key] if prm.default is None else p.get(prm.key, prm.default))
        if sc.ret == RET_VEC:
            self.check_mincore(args[0], args[1])
        with self.mm.probe.in_syscall(sc.name):
            r = sc.fn(self.mm, *args)
        if sc.ret == RET_VEC:
            rc, vec = r
            out = self._ret(rc)
            if rc == 0:
                out["vec"] = vec
            return out
        if sc.ret == RET_BRK:
            return {"ret": format_addr(r, self.scn.window), "errno": None}
        return self._ret(r, sc.ret == RET_ADDR)

    def do_fork(self, op: Op) -> dict[str, Any]:
        """fork: the child's window and reads, then the child is torn down."""
        p = op.p
        mm = self.mm
        try:
            child = mm.fork()
        except OSError as e:
            return self._ret(-(e.errno or errno.ENOMEM))
        if self.validate == "each":
            child.validate()
        saved = self.mm
        self.mm = child
        try:
            vmas = self.snapshot_vmas(BASE, BASE + WINDOW_SIZE, self.scn.window)
            reads = []
            for raw, addr in zip(op.args.get("read", []), p.get("read", []), strict=True):
                try:
                    v = child.touch(self.addr(addr), False)
                    reads.append({"addr": raw, "ret": 0, "value": v})
                except Fault as f:
                    reads.append({"addr": raw, "ret": -1, "signal": f.signal})
            if self.validate == "each":
                child.validate()
        finally:
            self.mm = saved
            child.exit_mmap()
            child.exit_files()
        return {"ret": 0, "errno": None, "child": {"vmas": vmas, "reads": reads}}

    def check_mincore(self, addr: int, length: int) -> None:
        """Raise :class:`ResidentLimitExceeded` before a mincore whose vector would have more than
        ``max_resident`` entries: the model builds the vector for the mapped part of the range (up to the
        first hole, where the kernel stops with ENOMEM)."""
        start, length = addr & C.ULONG_MASK, length & C.ULONG_MASK
        end = start + C.page_align(length)
        if start & (C.PAGE_SIZE - 1) or start + length > C.TASK_SIZE or end - start <= self.max_resident * C.PAGE_SIZE:
            return  # an error without a vector, or a small one
        a = start
        while a < end and (v := self.mm.tree.lookup(a)) is not None:
            a = v.vm_end
            if (min(a, end) - start) >> C.PAGE_SHIFT > self.max_resident:
                raise ResidentLimitExceeded(f"the model would build a mincore vector of more than "
                                            f"{self.max_resident} pages (--max-resident)")

    def count_iteration(self) -> None:
        """One more repeat iteration: raise :class:`ModelLimitExceeded` past ``max_iterations``, or when the
        iterations so far have filled a file's page cache past ``max_resident``."""
        self.iterations += 1
        if self.iterations > self.max_iterations:
            raise ModelLimitExceeded(f"more than {self.max_iterations} repeat iterations in one run "
                                     "(--max-iterations)")
        self.check_page_cache()

    def check_page_cache(self) -> None:
        """Raise :class:`ResidentLimitExceeded` when a file of the mm caches more than ``max_resident``
        pages (readahead and MADV_WILLNEED add page-cache pages that no PTE maps)."""
        for f in self.mm.fdtable.values():
            if len(f.inode.pages) > self.max_resident:
                raise ResidentLimitExceeded(f"the model would cache more than {self.max_resident} pages of "
                                            f"{f.display_path} (--max-resident)")

    def check_deadline(self) -> None:
        """Raise :class:`ModelLimitExceeded` once the run's ``timeout`` has passed."""
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise ModelLimitExceeded(f"the model run timed out after {self.timeout:g} s (the scenario's 'timeout')")

    def run(self) -> dict[str, Any]:
        results = []
        if self.timeout is not None:
            self.deadline = time.monotonic() + self.timeout
        for i, op in enumerate(self.scn.ops):
            res = {"op": op.op, "args": op.args}
            probe = self.mm.probe
            tstart = len(probe.events)
            probe.op_index = i
            try:
                self.check_deadline()
                with probe.in_syscall(op.op):
                    res.update(self.do(op))
                self.check_page_cache()
            except ModelUnsupported as e:  # one line naming the op (the CLI adds the file)
                raise type(e)(f"op {i} ({op.op}): {e}") from None
            except ProfileFeatureError as e:  # a driver needs a contract feature this kernel profile lacks
                raise ModelUnsupported(f"op {i} ({op.op}): {e}") from None
            if op.note is not None:
                res["note"] = op.note
            if self.validate == "each":
                self.mm.validate()
            self.op_traces.append(probe.events[tstart:])
            results.append(res)
        self.mm.probe.op_index = None
        if self.validate == "end":
            self.mm.validate()
        return {"name": self.scn.name, "description": self.scn.description,
                "env": {"kernel": "model-" + self.mm.profile.name, "machine": "x86_64", "base": f"{BASE:#x}",
                        "window": self.scn.window},
                "results": results}


def check_supported(scn: Scenario) -> None:
    """Raise :class:`ModelUnsupported` naming the first op the model cannot run."""
    for op in scn.iter_ops():
        if not op_supported(op.op):
            raise ModelUnsupported(f"op {op.op!r} is not supported by the model yet")


def run_on_model(scn: Scenario, initial_maps: str | None = None, validate: bool | str = False,
                 trace: bool = False, kernel: str | None = None, caps: Iterable[str] | None = None,
                 timeout: float | None = None, max_resident: int | None = None,
                 max_iterations: int | None = None, drivers: Mapping[str, Opener] | None = None) -> dict[str, Any]:
    """Run a scenario on a fresh model (under kernel profile ``kernel``, default the scenario's
    ``kernel_profile`` or 6.18) and return the result object of the scenario format.  ``caps``: the
    capabilities the process starts with (default all: root; pass a live result's ``env.caps`` to compare
    with it); ``timeout``, ``max_resident``, ``max_iterations``, ``drivers``: see :class:`ModelRunner`."""
    check_supported(scn)
    return ModelRunner(scn, initial_maps, validate, trace, kernel, caps, timeout, max_resident, max_iterations,
                       drivers).run()


def summarize_result(result: dict[str, Any]) -> list[str]:
    """One short line per op of a result (for comparing profiles side by side)."""
    out = []
    for i, r in enumerate(result["results"]):
        if "vmas" in r:
            shape = ", ".join(f"{v['start']}-{v['end']} {v['perms']} [{v['vmflags']}]" for v in r["vmas"])
            out.append(f"{i:3d} {r['op']}: {shape or '(no VMAs)'}")
            continue
        ret = f"-1 {r['errno']}" if r.get("errno") else (f"-1 {r['signal']}" if r.get("signal") else r.get("ret"))
        out.append(f"{i:3d} {r['op']} -> {ret}")
    return out
