"""Measure the model against the live kernel: op rates, fault rates and memory, pure and compiled builds.

Usage: python benchmarks/bench_ops.py [N ...] [--ops K] [--pages P] [--seed S] [--repeats R]
                                      [--no-compiled] [--no-kernel] [--json | --markdown]

Op workloads (N = 1,000, 10,000 and 100,000 by default).  Each is generated once per N into an op file
(format in benchmarks/replay.c) that the model and a small C replayer of the same file both replay:

* fixed: N one-page VMAs on every other page of a 2N-page region, then N random MAP_FIXED mmap, mprotect
  and munmap of 1-2 pages at page-aligned addresses inside the region (about N VMAs stay live);
* nonfixed: N one-page anonymous VMAs packed below mmap_base by mmap(NULL), PROT_READ and
  PROT_READ|PROT_WRITE alternately (so neighbours never merge, no holes), then N ops alternating
  mmap(NULL) of 1-2 read-write pages and munmap of a random earlier mapping, named by its index in the
  table of addresses the replay got back (so the file does not depend on where anything was placed).
  The top-down gap search has to get past the packed VMAs.

Building the N VMAs is not timed; the op loop is (ops/s of the loop; the best of a few repeats for
small N).  Columns: the pure-Python build (this process), the compiled build (``build/mypyc/`` made by
``python tools/build_mypyc.py``, measured in a child process with ``PYTHONPATH`` set to it) and the live
kernel (``benchmarks/replay.c``, compiled at first use with ``cc`` and cached in ``~/.cache/vmalab/``).
For large N the kernel run needs ``vm.max_map_count`` above its default: as root the script raises it for
the run and restores it afterwards, and says so; otherwise the kernel cell is ``n/a (reason)``.

Faults: touching every page of a fresh P-page private anonymous mapping for write (a fresh page per
fault) and for read (the zero page); the model through ``MM.touch``, the kernel with one volatile store
or load per page.  Memory (tracemalloc, in a child process): bytes per VMA (building N VMAs of the fixed
setup, divided by N) and bytes per resident page (write-faulting P pages, divided by P).

Ratios are of rates measured in one run; absolute numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import textwrap
import time
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import vmalab
from vmalab import constants as C
from vmalab.mm import MM
from vmalab.oracle.cbuild import CBuildError, build_c_helper

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
REPLAY_SOURCE = HERE / "replay.c"
BUILD_TOOL = ROOT / "tools" / "build_mypyc.py"
CFLAGS = ("-O2", "-Wall")
MAX_MAP_COUNT = Path("/proc/sys/vm/max_map_count")

PAGE = C.PAGE_SIZE
BASE = 0x500000000000
RO = C.PROT_READ
RW = C.PROT_READ | C.PROT_WRITE
ANON = C.MAP_PRIVATE | C.MAP_ANONYMOUS
FIXED = ANON | C.MAP_FIXED
ENOMEM = 12
EINVAL = 22
WORKLOADS = ("fixed", "nonfixed")
WORKLOAD_TEXT = {
    "fixed": "N one-page VMAs on every other page of 2N pages; N random MAP_FIXED mmap/mprotect/munmap",
    "nonfixed": "N one-page VMAs packed below mmap_base; N ops alternating mmap(NULL) / munmap",
}
FAULT_TEXT = {"write": "write (fresh anonymous page)", "read": "read (zero page)"}

#: one op: kind (m p u n x, see replay.c), address or table index, length, prot
Op = tuple[str, int, int, int]
Row = dict[str, Any]


class Unavailable(Exception):
    """A column cannot be measured here: the message is the reason, shown as ``n/a (reason)``."""


# --- op files ---------------------------------------------------------------------------------------------
def make_fixed(n: int, k: int, seed: int) -> tuple[list[Op], list[Op]]:
    setup = [("m", BASE + 2 * i * PAGE, PAGE, RW) for i in range(n)]
    rng = random.Random(seed)
    ops: list[Op] = []
    for _ in range(k):
        kind = rng.randrange(3)
        npg = rng.randint(1, 2)
        addr = BASE + rng.randrange(2 * n - npg) * PAGE
        prot = rng.choice((C.PROT_READ, RW, C.PROT_NONE))
        ops.append(("mpu"[kind], addr, npg * PAGE, prot if kind < 2 else 0))
    return setup, ops


def make_nonfixed(n: int, k: int, seed: int) -> tuple[list[Op], list[Op]]:
    setup = [("n", 0, PAGE, RW if i % 2 else RO) for i in range(n)]  # RO first: the replayer's neighbours are RW
    lengths = [PAGE] * n
    live = list(range(n))
    rng = random.Random(seed)
    ops: list[Op] = []
    for i in range(k):
        if i % 2 == 0 or not live:
            length = rng.randint(1, 2) * PAGE
            ops.append(("n", 0, length, RW))
            live.append(len(lengths))
            lengths.append(length)
        else:
            j = rng.randrange(len(live))
            idx = live[j]
            live[j] = live[-1]
            live.pop()
            ops.append(("x", idx, lengths[idx], 0))
    return setup, ops


def write_opfile(path: Path, workload: str, setup: list[Op], ops: list[Op]) -> None:
    lines = ["vmalab-ops 1", f"workload {workload}", f"setup {len(setup):x}", f"ops {len(ops):x}"]
    for kind, a, length, prot in setup + ops:
        if kind in "mp":
            lines.append(f"{kind} {a:x} {length:x} {prot:x}")
        elif kind in "ux":
            lines.append(f"{kind} {a:x} {length:x}")
        else:
            lines.append(f"n {length:x} {prot:x}")
    lines.append("end")
    path.write_text("\n".join(lines) + "\n")


def read_opfile(path: Path) -> tuple[str, list[Op], list[Op]]:
    words = path.read_text().split("\n")
    head = [ln.split() for ln in words[:4]]
    if head[0] != ["vmalab-ops", "1"] or [h[0] for h in head[1:]] != ["workload", "setup", "ops"]:
        raise ValueError(f"{path}: not a vmalab-ops 1 file")
    workload, nsetup, nops = head[1][1], int(head[2][1], 16), int(head[3][1], 16)
    out: list[Op] = []
    for ln in words[4:4 + nsetup + nops]:
        f = ln.split()
        if f[0] in ("m", "p"):
            out.append((f[0], int(f[1], 16), int(f[2], 16), int(f[3], 16)))
        elif f[0] in ("u", "x"):
            out.append((f[0], int(f[1], 16), int(f[2], 16), 0))
        elif f[0] == "n":
            out.append(("n", 0, int(f[1], 16), int(f[2], 16)))
        else:
            raise ValueError(f"{path}: bad op line {ln!r}")
    if words[4 + nsetup + nops].strip() != "end":
        raise ValueError(f"{path}: does not end with 'end'")
    return workload, out[:nsetup], out[nsetup:]


def opfile_path(opdir: Path, workload: str, n: int, k: int, seed: int) -> Path:
    return opdir / f"{workload}-{n}-{k}-{seed}.ops"


def ensure_opfile(opdir: Path, workload: str, n: int, k: int, seed: int) -> Path:
    path = opfile_path(opdir, workload, n, k, seed)
    if not path.exists():
        make = make_fixed if workload == "fixed" else make_nonfixed
        write_opfile(path, workload, *make(n, k, seed))
    return path


def repeats_for(n: int, override: int) -> int:
    return override if override > 0 else max(1, min(5, 20000 // max(n, 1)))


# --- the model ---------------------------------------------------------------------------------------------
def play(mm: MM, ops: list[Op], table: list[int], fails: Counter[tuple[str, int]]) -> None:
    """Replays ``ops`` on ``mm`` like replay.c's run(): failures counted by (kind, errno; 0: wrong address)."""
    mmap, mprotect, munmap, append = mm.sys_mmap, mm.sys_mprotect, mm.sys_munmap, table.append
    for kind, a, length, prot in ops:
        if kind == "m":
            r = mmap(a, length, prot, FIXED, -1, 0)
            if r != a:
                fails[kind, -r if r < 0 else 0] += 1
        elif kind == "p":
            r = mprotect(a, length, prot)
            if r:
                fails[kind, -r] += 1
        elif kind == "u":
            r = munmap(a, length)
            if r:
                fails[kind, -r] += 1
        elif kind == "n":
            r = mmap(0, length, prot, ANON, -1, 0)
            if r < 0:
                fails[kind, -r] += 1
                r = 0
            append(r)
        else:
            addr = table[a] if a < len(table) else 0
            r = munmap(addr, length) if addr else -EINVAL
            if r:
                fails[kind, -r] += 1


def unexpected(fails: dict[str, int]) -> int:
    """Failures a correct replay never has: all but mprotect's ENOMEM (a range with a hole) in the ops."""
    return sum(c for key, c in fails.items() if key != f"ops p {ENOMEM}")


def model_ops(path: Path, repeats: int) -> Row:
    workload, setup, ops = read_opfile(path)
    best = float("inf")
    for _ in range(repeats):
        mm = MM(max_map_count=1 << 22)
        table: list[int] = []
        fs: Counter[tuple[str, int]] = Counter()
        fo: Counter[tuple[str, int]] = Counter()
        play(mm, setup, table, fs)
        before = mm.map_count
        t0 = time.perf_counter()
        play(mm, ops, table, fo)
        best = min(best, time.perf_counter() - t0)
    mm.validate()  # raises on a broken invariant
    fails = {f"setup {k} {e}": c for (k, e), c in fs.items()} | {f"ops {k} {e}": c for (k, e), c in fo.items()}
    return {"workload": workload, "n": len(setup), "ops": len(ops), "repeats": repeats, "seconds": best,
            "ops_per_s": len(ops) / best if best > 0 else float("inf"), "vmas_setup": before,
            "vmas_end": mm.map_count, "fails": fails, "unexpected": unexpected(fails),
            "enomem": fails.get(f"ops p {ENOMEM}", 0), "valid": True}


def model_fault(kind: str, pages: int, repeats: int) -> Row:
    best, bad = float("inf"), 0
    for _ in range(repeats):
        mm = MM()
        start = mm.sys_mmap(0, pages * PAGE, RW, ANON, -1, 0)
        if start < 0:
            raise RuntimeError(f"model mmap of {pages} pages failed: {start}")
        addrs = range(start, start + pages * PAGE, PAGE)
        touch = mm.touch
        t0 = time.perf_counter()
        if kind == "write":
            for a in addrs:
                touch(a, True, 1)
        else:
            for a in addrs:
                if touch(a):
                    bad += 1
        best = min(best, time.perf_counter() - t0)
        bad += sum(touch(a) != (1 if kind == "write" else 0) for a in addrs)  # not timed
        mm.validate()
    return {"fault": kind, "pages": pages, "repeats": repeats, "seconds": best,
            "faults_per_s": pages / best if best > 0 else float("inf"), "bad": bad}


def memory_child(n: int, pages: int) -> Row:
    """Run in a fresh process (``--memory-child``): tracemalloc deltas of building VMAs and faulting pages."""
    setup, _ = make_fixed(n, 0, 0)
    mm = MM(max_map_count=1 << 22)
    fails: Counter[tuple[str, int]] = Counter()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    play(mm, setup, [], fails)
    per_vma = (tracemalloc.get_traced_memory()[0] - before) / n
    tracemalloc.stop()
    mm2 = MM()
    start = mm2.sys_mmap(0, pages * PAGE, RW, ANON, -1, 0)
    mm2.touch(start, True, 1)  # the first fault also creates the anon_vma: not a per-page cost
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for a in range(start + PAGE, start + pages * PAGE, PAGE):
        mm2.touch(a, True, 1)
    per_page = (tracemalloc.get_traced_memory()[0] - before) / max(pages - 1, 1)
    tracemalloc.stop()
    return {"n": n, "pages": pages, "bytes_per_vma": per_vma, "bytes_per_page": per_page,
            "vmas": mm.map_count, "setup_failures": sum(fails.values())}


def build_info() -> Row:
    compiled = sorted(name for name, mod in sys.modules.items() if name.startswith("vmalab")
                      and str(getattr(mod, "__file__", "") or "").endswith((".so", ".pyd")))
    return {"vmalab": str(Path(vmalab.__file__).parent), "compiled_modules": compiled}


def child_env(pythonpath: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([pythonpath, *filter(None, [env.get("PYTHONPATH")])])
    return env


def run_memory(n: int, pages: int) -> Row:
    """Memory figures of the build this process imports, measured in a child process."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-child", str(n), "--pages", str(pages)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600,
                          env=child_env(str(Path(vmalab.__file__).parent.parent)))
    if proc.returncode:
        raise RuntimeError(f"memory child failed: {last_line(proc.stderr)}")
    row: Row = json.loads(proc.stdout)
    return row


def measure_model(sizes: list[int], k: int, pages: int, seed: int, repeats: int, opdir: Path) -> Row:
    """Everything measured on the build this process imports: {"build", "ops", "faults", "memory"}."""
    out: Row = {"build": build_info(), "ops": [], "faults": [], "memory": []}
    for workload in WORKLOADS:
        for n in sizes:
            path = ensure_opfile(opdir, workload, n, k or n, seed)
            out["ops"].append(model_ops(path, repeats_for(n, repeats)))
    for kind in ("write", "read"):
        out["faults"].append(model_fault(kind, pages, repeats if repeats > 0 else 3))
    for n in sizes:
        out["memory"].append(run_memory(n, pages))
    return out


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"


# --- the compiled build -----------------------------------------------------------------------------------
def measure_compiled(sizes: list[int], k: int, pages: int, seed: int, repeats: int, opdir: Path) -> Row:
    """The model measurements of the compiled build, in a child process; raises Unavailable."""
    if not BUILD_TOOL.exists():
        raise Unavailable(f"{BUILD_TOOL.relative_to(ROOT)} not found")
    try:
        proc = subprocess.run([sys.executable, str(BUILD_TOOL)], cwd=ROOT, capture_output=True, text=True,
                              timeout=3600)
    except (OSError, subprocess.SubprocessError) as e:
        raise Unavailable(f"cannot run {BUILD_TOOL.name}: {e}") from None
    if proc.returncode:
        raise Unavailable(f"{BUILD_TOOL.name} failed: {last_line(proc.stderr or proc.stdout)}")
    build = Path(last_line(proc.stdout))
    if not build.is_absolute():
        build = ROOT / build
    if not (build / "vmalab").is_dir():
        build = ROOT / "build" / "mypyc"
    if not (build / "vmalab").is_dir():
        raise Unavailable(f"{BUILD_TOOL.name} did not leave a build (printed {last_line(proc.stdout)!r})")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--model-only", "--json", "--opdir", str(opdir),
           "--ops", str(k), "--pages", str(pages), "--seed", str(seed), "--repeats", str(repeats),
           *map(str, sizes)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=7200, env=child_env(str(build)))
    if proc.returncode:
        raise Unavailable(f"the compiled build's run failed: {last_line(proc.stderr)}")
    out: Row = json.loads(proc.stdout)
    if not out["build"]["compiled_modules"]:
        raise Unavailable(f"{build} imports no compiled module")
    if not out["build"]["vmalab"].startswith(str(build)):
        raise Unavailable(f"the child imported vmalab from {out['build']['vmalab']}, not {build}")
    return out


# --- the live kernel --------------------------------------------------------------------------------------
def ensure_replayer() -> str:
    """Compile replay.c if needed (vmalab.oracle.cbuild: cached by a hash of the source, compiler and flags);
    raises Unavailable."""
    if not sys.platform.startswith("linux"):
        raise Unavailable("the replayer needs Linux")
    try:
        return build_c_helper(REPLAY_SOURCE, "bench-replay", CFLAGS)[0]
    except CBuildError as e:
        raise Unavailable(str(e)) from None


def map_count_needed(n: int) -> int:
    """Enough for either workload at N: at most 2N VMAs in the fixed region, 1.5N in the non-fixed one, plus
    the replayer's own."""
    return 2 * n + 1000


@contextmanager
def max_map_count_at_least(need: int) -> Iterator[str | None]:
    """Raises vm.max_map_count to ``need`` for the block when it is lower (root only) and restores it
    afterwards; yields a note saying so (None when nothing changed); raises Unavailable when it cannot."""
    try:
        current = int(MAX_MAP_COUNT.read_text())
    except (OSError, ValueError) as e:
        raise Unavailable(f"cannot read {MAX_MAP_COUNT}: {e}") from None
    if current >= need:
        yield None
        return
    if os.geteuid() != 0:
        raise Unavailable(f"vm.max_map_count is {current}, the run needs {need}; raising it needs root")
    try:
        MAX_MAP_COUNT.write_text(str(need))
    except OSError as e:
        raise Unavailable(f"vm.max_map_count is {current}, cannot raise it to {need}: {e.strerror or e}") from None
    try:
        yield f"raised vm.max_map_count {current} -> {need} for the kernel run, restored afterwards"
    finally:
        MAX_MAP_COUNT.write_text(str(current))


def run_replayer(binary: str, *args: str) -> list[list[str]]:
    try:
        proc = subprocess.run([binary, *args], capture_output=True, text=True, timeout=3600)
    except (OSError, subprocess.SubprocessError) as e:
        raise Unavailable(f"cannot run the replayer: {e}") from None
    records = [ln.split() for ln in proc.stdout.splitlines() if ln.strip()]
    for rec in records:
        if rec[0] == "err":
            raise Unavailable(f"replayer: {' '.join(rec[1:])}")
    if proc.returncode:
        raise Unavailable(f"replayer exit status {proc.returncode}: {last_line(proc.stderr)}")
    return records


def kernel_ops(binary: str, path: Path, repeats: int) -> Row:
    """Replays the op file in ``repeats`` fresh replayer processes; the best time, all failures summed."""
    best = float("inf")
    first: dict[str, int] | None = None
    nops = vmas = None
    bad = 0
    for _ in range(repeats):
        fails: dict[str, int] = {}
        for rec in run_replayer(binary, "ops", str(path)):
            if rec[0] == "time":
                nops, best = int(rec[1]), min(best, float(rec[2]))
            elif rec[0] == "vmas":
                vmas = [int(x) for x in rec[1:4]]
            elif rec[0] == "fail":
                fails[f"{rec[1]} {rec[2]} {rec[3]}"] = int(rec[4])
        bad += unexpected(fails)
        first = fails if first is None else first
    if nops is None or vmas is None or first is None:
        raise Unavailable("the replayer printed no result")
    return {"ops": nops, "repeats": repeats, "seconds": best, "ops_per_s": nops / best if best > 0 else float("inf"),
            "vmas_setup": vmas[1] - vmas[0], "vmas_end": vmas[2] - vmas[0], "fails": first,
            "unexpected": bad, "enomem": first.get(f"ops p {ENOMEM}", 0)}


def kernel_fault(binary: str, kind: str, pages: int, repeats: int) -> Row:
    for rec in run_replayer(binary, "fault", kind, str(pages), str(repeats)):
        if rec[0] == "fault":
            seconds = float(rec[3])
            return {"fault": kind, "pages": pages, "repeats": repeats, "seconds": seconds,
                    "faults_per_s": pages / seconds if seconds > 0 else float("inf"), "bad": int(rec[4])}
    raise Unavailable("the replayer printed no fault result")


def measure_kernel(sizes: list[int], k: int, pages: int, seed: int, repeats: int, opdir: Path) -> Row:
    """{"ops": {(workload, n): row or reason}, "faults": {kind: row or reason}, "notes": [...]}"""
    out: Row = {"ops": {}, "faults": {}, "notes": []}
    try:
        binary = ensure_replayer()
    except Unavailable as e:
        for workload in WORKLOADS:
            for n in sizes:
                out["ops"][workload, n] = str(e)
        for kind in ("write", "read"):
            out["faults"][kind] = str(e)
        return out
    for n in sizes:
        try:
            with max_map_count_at_least(map_count_needed(n)) as note:
                if note:
                    out["notes"].append(f"N={n:,}: {note}")
                for workload in WORKLOADS:
                    path = ensure_opfile(opdir, workload, n, k or n, seed)
                    try:
                        out["ops"][workload, n] = kernel_ops(binary, path, repeats_for(n, repeats))
                    except Unavailable as e:
                        out["ops"][workload, n] = str(e)
        except Unavailable as e:
            for workload in WORKLOADS:
                out["ops"][workload, n] = str(e)
    for kind in ("write", "read"):
        try:
            out["faults"][kind] = kernel_fault(binary, kind, pages, repeats if repeats > 0 else 3)
        except Unavailable as e:
            out["faults"][kind] = str(e)
    return out


# --- the tables -------------------------------------------------------------------------------------------
def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def combine(sizes: list[int], pure: Row, compiled: Row | str, kernel: Row | None) -> list[Row]:
    """The rows of the report (see --json)."""
    rows: list[Row] = []
    comp_ops = {(r["workload"], r["n"]): r for r in compiled["ops"]} if isinstance(compiled, dict) else {}
    for workload in WORKLOADS:
        first: dict[str, float | None] = {}
        for n in sizes:
            p = next(r for r in pure["ops"] if r["workload"] == workload and r["n"] == n)
            c = comp_ops.get((workload, n))
            kr = kernel["ops"].get((workload, n)) if kernel else "--no-kernel"
            kd = kr if isinstance(kr, dict) else None
            rates = {"pure": p["ops_per_s"], "compiled": c["ops_per_s"] if c else None,
                     "kernel": kd["ops_per_s"] if kd else None}
            if not first:
                first = dict(rates)
            na: dict[str, str] = {}
            if not c:
                na["compiled"] = compiled if isinstance(compiled, str) else "no result"
            if not kd:
                na["kernel"] = str(kr)
            builds = {"pure": p, "compiled": c, "kernel": kd}
            rows.append({
                "kind": "ops", "workload": workload, "n": n, "ops": p["ops"], "repeats": p["repeats"],
                "pure": rates["pure"], "compiled": rates["compiled"], "kernel": rates["kernel"],
                "pure_kernel": ratio(rates["pure"], rates["kernel"]),
                "compiled_kernel": ratio(rates["compiled"], rates["kernel"]),
                "pure_rel": ratio(rates["pure"], first["pure"]),
                "compiled_rel": ratio(rates["compiled"], first["compiled"]),
                "kernel_rel": ratio(rates["kernel"], first["kernel"]),
                "vmas_end": {b: r["vmas_end"] for b, r in builds.items() if r},
                "unexpected": {b: r["unexpected"] for b, r in builds.items() if r},
                "enomem": {b: r["enomem"] for b, r in builds.items() if r},
                "fails": {b: r["fails"] for b, r in builds.items() if r},
                "valid": {b: r["valid"] for b, r in builds.items() if r and "valid" in r},
                "na": na})
    for i, kind in enumerate(("write", "read")):
        p = pure["faults"][i]
        c = compiled["faults"][i] if isinstance(compiled, dict) else None
        kr = kernel["faults"].get(kind) if kernel else "--no-kernel"
        kd = kr if isinstance(kr, dict) else None
        na = {}
        if not c:
            na["compiled"] = compiled if isinstance(compiled, str) else "no result"
        if not kd:
            na["kernel"] = str(kr)
        rates = {"pure": p["faults_per_s"], "compiled": c["faults_per_s"] if c else None,
                 "kernel": kd["faults_per_s"] if kd else None}
        rows.append({"kind": "faults", "fault": kind, "pages": p["pages"], **rates,
                     "pure_kernel": ratio(rates["pure"], rates["kernel"]),
                     "compiled_kernel": ratio(rates["compiled"], rates["kernel"]),
                     "bad": {b: r["bad"] for b, r in (("pure", p), ("compiled", c), ("kernel", kd)) if r},
                     "na": na})
    for what, key in (("vma", "bytes_per_vma"), ("page", "bytes_per_page")):
        for i, m in enumerate(pure["memory"]):
            if what == "page" and i:
                continue  # one per-page figure: the same P pages at every N
            cm = compiled["memory"][i] if isinstance(compiled, dict) else None
            rows.append({"kind": "memory", "what": what, "n": m["n"] if what == "vma" else m["pages"],
                         "pure": m[key], "compiled": cm[key] if cm else None,
                         "na": {} if cm else {"compiled": compiled if isinstance(compiled, str) else "no result"}})
    return rows


def fmt(x: float | None, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                cpu = ln.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{datetime.date.today().isoformat()}, Linux {platform.release()}, {cpu}, "
            f"{os.cpu_count()} cores")


def na_notes(rows: list[Row]) -> list[str]:
    seen: dict[str, list[str]] = {}
    for r in rows:
        if "na" not in r:
            continue
        where = (f"{r['workload']} N={r['n']:,}" if r["kind"] == "ops" else
                 f"{r['fault']} faults" if r["kind"] == "faults" else f"memory per {r['what']}")
        for build, reason in r["na"].items():
            seen.setdefault(f"{build}: n/a ({reason})", []).append(where)
    return [f"{k} [{', '.join(v)}]" if len(v) < 3 else k for k, v in seen.items()]


def check_notes(rows: list[Row]) -> list[str]:
    """What the replays say about each other: unexpected failures, and where model and kernel disagree."""
    notes = []
    for r in rows:
        if r["kind"] != "ops":
            continue
        where = f"{r['workload']} N={r['n']:,}"
        for build, u in r["unexpected"].items():
            if u:
                notes.append(f"{where}: {build}: {u} unexpected syscall failures {r['fails'][build]}")
        if "kernel" in r["enomem"] and r["enomem"]["kernel"] != r["enomem"]["pure"]:
            notes.append(f"{where}: mprotect ENOMEM: model {r['enomem']['pure']}, kernel {r['enomem']['kernel']}")
        # nonfixed: the replayer's own holes and anonymous neighbours below mmap_base take a few of the
        # kernel's placements, so only the fixed region (which nothing else uses) is compared exactly
        if r["workload"] == "fixed" and "kernel" in r["vmas_end"] and r["vmas_end"]["kernel"] != r["vmas_end"]["pure"]:
            notes.append(f"{where}: VMAs after the ops: model {r['vmas_end']['pure']}, "
                         f"kernel {r['vmas_end']['kernel']} (the replayer's own mappings excluded)")
    for r in rows:
        if r["kind"] == "faults":
            for build, b in r["bad"].items():
                if b:
                    notes.append(f"{r['fault']} faults: {build}: {b} pages read back wrong")
    return notes


def render_text(rows: list[Row], meta: Row) -> str:
    out = [f"vmalab bench_ops: {meta['machine']}"]
    ops = [r for r in rows if r["kind"] == "ops"]
    first = f"{ops[0]['n']:,}" if ops else "?"
    for workload in WORKLOADS:
        wr = [r for r in ops if r["workload"] == workload]
        if not wr:
            continue
        out += ["", f"{workload}: {WORKLOAD_TEXT[workload]}",
                f"ops/s of the op loop (setup not timed); rel = rate / rate at N={first}",
                f"{'N':>7} {'VMAs':>8} {'pure/s':>9} {'compiled/s':>10} {'kernel/s':>9} {'pure/kern':>9} "
                f"{'comp/kern':>9} {'pure rel':>8} {'comp rel':>8} {'kern rel':>8}"]
        for r in wr:
            out.append(f"{r['n']:>7,} {r['vmas_end']['pure']:>8,} {fmt(r['pure'], ',.0f'):>9} "
                       f"{fmt(r['compiled'], ',.0f'):>10} {fmt(r['kernel'], ',.0f'):>9} "
                       f"{fmt(r['pure_kernel'], '.2f'):>9} {fmt(r['compiled_kernel'], '.2f'):>9} "
                       f"{fmt(r['pure_rel'], '.2f'):>8} {fmt(r['compiled_rel'], '.2f'):>8} "
                       f"{fmt(r['kernel_rel'], '.2f'):>8}")
    faults = [r for r in rows if r["kind"] == "faults"]
    if faults:
        out += ["", f"page faults/s: every page of a fresh {faults[0]['pages']:,}-page private anonymous mapping",
                f"{'fault':<30} {'pure/s':>10} {'compiled/s':>10} {'kernel/s':>10} {'pure/kern':>9} "
                f"{'comp/kern':>9}"]
        for r in faults:
            out.append(f"{FAULT_TEXT[r['fault']]:<30} {fmt(r['pure'], ',.0f'):>10} {fmt(r['compiled'], ',.0f'):>10} "
                       f"{fmt(r['kernel'], ',.0f'):>10} {fmt(r['pure_kernel'], '.2f'):>9} "
                       f"{fmt(r['compiled_kernel'], '.2f'):>9}")
    mem = [r for r in rows if r["kind"] == "memory"]
    if mem:
        out += ["", "memory (tracemalloc, in a child process)", f"{'':<36} {'pure':>10} {'compiled':>10}"]
        for r in mem:
            label = (f"bytes per VMA, N={r['n']:,}" if r["what"] == "vma" else
                     f"bytes per resident page, {r['n']:,} pages")
            out.append(f"{label:<36} {fmt(r['pure'], ',.0f'):>10} {fmt(r['compiled'], ',.0f'):>10}")
    notes = meta["notes"] + na_notes(rows)
    checks = check_notes(rows)
    if not checks and any("kernel" in r.get("unexpected", {}) for r in ops):
        checks = ["no unexpected syscall failure; model and kernel agree on the fixed workload's VMA and "
                  "mprotect ENOMEM counts"]
    if notes or checks:
        out.append("")
        for prefix, items in (("note: ", notes), ("check: ", checks)):
            for item in items:
                out += textwrap.wrap(item, 96, initial_indent=prefix, subsequent_indent="  ")
    return "\n".join(out)


def render_markdown(rows: list[Row], meta: Row) -> str:
    ops = [r for r in rows if r["kind"] == "ops"]
    first = f"{ops[0]['n']:,}" if ops else "?"
    out = [f"Measured {meta['machine']} (`python benchmarks/bench_ops.py`)."]
    for workload in WORKLOADS:
        wr = [r for r in ops if r["workload"] == workload]
        if not wr:
            continue
        out += ["", f"**{workload}**: {WORKLOAD_TEXT[workload]} (ops/s; rel: rate / rate at N = {first})", "",
                "| N VMAs | pure | compiled | kernel | pure / kernel | compiled / kernel | pure rel | compiled rel "
                "| kernel rel |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in wr:
            out.append(f"| {r['n']:,} | {fmt(r['pure'], ',.0f')} | {fmt(r['compiled'], ',.0f')} | "
                       f"{fmt(r['kernel'], ',.0f')} | {fmt(r['pure_kernel'], '.2f')} | "
                       f"{fmt(r['compiled_kernel'], '.2f')} | {fmt(r['pure_rel'], '.2f')} | "
                       f"{fmt(r['compiled_rel'], '.2f')} | {fmt(r['kernel_rel'], '.2f')} |")
    faults = [r for r in rows if r["kind"] == "faults"]
    if faults:
        out += ["", f"**page faults/s** (every page of a fresh {faults[0]['pages']:,}-page anonymous mapping)", "",
                "| fault | pure | compiled | kernel | pure / kernel | compiled / kernel |",
                "|---|---:|---:|---:|---:|---:|"]
        for r in faults:
            out.append(f"| {FAULT_TEXT[r['fault']]} | {fmt(r['pure'], ',.0f')} | {fmt(r['compiled'], ',.0f')} | "
                       f"{fmt(r['kernel'], ',.0f')} | {fmt(r['pure_kernel'], '.2f')} | "
                       f"{fmt(r['compiled_kernel'], '.2f')} |")
    mem = [r for r in rows if r["kind"] == "memory"]
    if mem:
        out += ["", "**memory** (tracemalloc)", "", "| | pure | compiled |", "|---|---:|---:|"]
        for r in mem:
            label = (f"bytes per VMA, N = {r['n']:,}" if r["what"] == "vma" else
                     f"bytes per resident page ({r['n']:,} pages)")
            out.append(f"| {label} | {fmt(r['pure'], ',.0f')} | {fmt(r['compiled'], ',.0f')} |")
    notes = meta["notes"] + na_notes(rows) + check_notes(rows)
    if notes:
        out += [""] + [f"- {n}" for n in notes]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> list[Row]:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("sizes", nargs="*", type=int, default=[1000, 10000, 100000], help="VMA counts N")
    ap.add_argument("--ops", type=int, default=0, help="ops replayed per N (default: N)")
    ap.add_argument("--pages", type=int, default=20000, help="pages touched by the fault and memory runs")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=0, help="repeats (best kept; default: 5 down to 1 as N grows)")
    ap.add_argument("--no-compiled", action="store_true", help="skip the compiled build")
    ap.add_argument("--no-kernel", action="store_true", help="skip the live kernel")
    out_fmt = ap.add_mutually_exclusive_group()
    out_fmt.add_argument("--json", action="store_true", help="print the rows as JSON")
    out_fmt.add_argument("--markdown", action="store_true", help="print the README tables")
    ap.add_argument("--load", metavar="FILE", help="print the rows of an earlier --json run instead of measuring")
    ap.add_argument("--model-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--opdir", help=argparse.SUPPRESS)
    ap.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if min(args.sizes) < 2 or args.pages < 2:
        ap.error("N and --pages must be at least 2")

    if args.load:
        with open(args.load, encoding="utf-8") as f:
            rows = json.load(f)
        return report(rows, next(r for r in rows if r["kind"] == "meta"), args.json, args.markdown)
    if args.memory_child is not None:
        row = memory_child(args.memory_child, args.pages)
        print(json.dumps(row))
        return [row]
    with tempfile.TemporaryDirectory(prefix="vmalab-bench-") as tmp:
        opdir = Path(args.opdir) if args.opdir else Path(tmp)
        common = (args.sizes, args.ops, args.pages, args.seed, args.repeats, opdir)
        if args.model_only:
            res = measure_model(*common)
            print(json.dumps(res))
            return [res]
        kernel = None if args.no_kernel else measure_kernel(*common)
        pure = measure_model(*common)
        compiled: Row | str = "--no-compiled"
        if not args.no_compiled:
            try:
                compiled = measure_compiled(*common)
            except Unavailable as e:
                compiled = str(e)
    notes = list(kernel["notes"]) if kernel else []
    if pure["build"]["compiled_modules"]:
        notes.append(f"this process imports a compiled vmalab ({pure['build']['vmalab']}): the pure column "
                     "is not pure Python")
    meta = {"kind": "meta", "machine": machine(), "notes": notes,
            "pure_build": pure["build"], "compiled_build": compiled["build"] if isinstance(compiled, dict) else None}
    return report(combine(args.sizes, pure, compiled, kernel) + [meta], meta, args.json, args.markdown)


def report(rows: list[Row], meta: Row, as_json: bool, as_markdown: bool) -> list[Row]:
    if as_json:
        print(json.dumps(rows, indent=1))
    elif as_markdown:
        print(render_markdown(rows, meta))
    else:
        print(render_text(rows, meta))
    return rows


if __name__ == "__main__":
    main()
