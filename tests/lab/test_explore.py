"""The failure and lock explorer: fault points, the lock checker, resource tracking, ``vmalab explore``.

Expectations come from the upstream mmap_prepare design (§1.4, §2, §8, §10 of its design notes;
docs/mmap-prepare.md) and
the kernel functions each fault point names: the errno a failing step returns and what it leaves behind.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner

from vmalab import MM
from vmalab import constants as C
from vmalab.cli import main
from vmalab.driver import VmAreaDesc
from vmalab.drivers import driver_names, open_driver
from vmalab.execute import run_on_model
from vmalab.explore import DriverSpec, explore, load_driver, run_scenario, shapes
from vmalab.faultpoints import FAULT_POINTS
from vmalab.files import File, FileOperations, VmOperations
from vmalab.lockcheck import LockChecker, LockOrderGraph
from vmalab.locking import LockError, Mutex
from vmalab.profiles import PROFILES
from vmalab.resources import Kref, PfnAllocator
from vmalab.scenario import ScenarioError, parse_scenario
from vmalab.vma import VMA

from ..conftest import ROOT

B = 0x500000000000
K = 4096
RW = C.PROT_READ | C.PROT_WRITE
ANON = C.MAP_PRIVATE | C.MAP_ANONYMOUS
ANONF = ANON | C.MAP_FIXED
SH = C.MAP_SHARED | C.MAP_FIXED
PR = C.MAP_PRIVATE | C.MAP_FIXED
EX = os.path.join(ROOT, "examples", "drivers")


def ex(name: str) -> str:
    return os.path.join(EX, name + ".py")


def mk(kernel: str = "6.18") -> MM:
    mm = MM(kernel=kernel)
    mm.tracing = True
    return mm


def clean(mm: MM) -> None:
    """Nothing of the window is left after an munmap: no VMA, no PTE, refs/files balanced, model valid."""
    mm.fail_plan.clear()
    assert mm.sys_munmap(B, 1 << 20) == 0
    assert not mm.tree.range(B, B + (1 << 20))
    assert not list(mm.pt.items(B >> 12, (B + (1 << 20)) >> 12))
    assert mm.resources.check(mm) == []
    assert not mm.locks.held()
    mm.validate()


# ---------------------------------------------------------------------------------------------------------
# every fault point: the failure is injected, the errno is the kernel's, nothing leaks, validate passes
def _fail(mm: MM, point: str, hit: int = 1) -> None:
    mm.fail_plan[point] = (mm.fail_hits.get(point, 0) + hit, -FAULT_POINTS[point].errno)


def _pt_simple(point: str, kernel: str, want: int) -> Callable[[], None]:
    def run() -> None:
        mm = mk(kernel)
        _fail(mm, point)
        assert mm.sys_mmap(B, 2 * K, RW, ANONF, -1, 0) == -want
        assert not mm.tree.range(B, B + 2 * K)
        clean(mm)
    return run


def _pt_gather() -> None:
    mm = mk()
    assert mm.sys_mmap(B, 4 * K, RW, ANONF, -1, 0) == B
    _fail(mm, "gather")
    assert mm.sys_mmap(B + K, K, RW, ANONF, -1, 0) == -errno.ENOMEM
    got = [(v.vm_start - B, v.vm_end - B) for v in mm.tree.range(B, B + 4 * K)]
    assert got == [(0, K), (K, 2 * K), (2 * K, 4 * K)]  # reattached; the edge splits stay
    clean(mm)


def _pt_split() -> None:
    mm = mk()
    assert mm.sys_mmap(B, 4 * K, RW, ANONF, -1, 0) == B
    _fail(mm, "split_vma")
    assert mm.sys_mprotect(B + K, K, C.PROT_READ) == -errno.ENOMEM
    assert len(mm.tree.range(B, B + 4 * K)) == 1
    clean(mm)


def _pt_driver(point: str, kernel: str, drv: str, flags: int, want: int,
               extra: str | None = None) -> Callable[[], None]:
    def run() -> None:
        mm = mk(kernel)
        fd = open_driver(mm, drv, 0)
        _fail(mm, point)
        if extra:
            _fail(mm, extra)
        r = mm.sys_mmap(B, 2 * K, RW, flags, fd, 0)
        assert r == -want
        if point == "error_unmap" or extra == "error_unmap":
            assert mm.tree.range(B, B + 2 * K)  # the kernel ignores the failed unmap: the VMA stays
        else:
            assert not mm.tree.range(B, B + 2 * K)
        clean(mm)
    return run


def _pt_merge() -> None:
    mm = mk()
    assert mm.sys_mmap(B, K, RW, ANONF, -1, 0) == B
    _fail(mm, "vma_merge")
    assert mm.sys_mmap(B + K, K, RW, ANONF, -1, 0) == B + K  # falls back to a new VMA
    assert len(mm.tree.range(B, B + 2 * K)) == 2
    assert mm.validate()  # legal, but noted: mergeable neighbours left apart
    clean(mm)


def _pt_anon_vma() -> None:
    mm = mk()
    assert mm.sys_mmap(B, 2 * K, RW, ANONF, -1, 0) == B
    _fail(mm, "anon_vma_prepare")
    assert mm.touch(B, True, 7) is None  # VM_FAULT_OOM, then the access faults again and succeeds
    assert mm.touch(B, False) == 7 and mm.fail_hits["anon_vma_prepare"] == 2
    _fail(mm, "anon_vma_prepare")
    mm2 = mk()
    assert mm2.sys_mmap(B, 2 * K, RW, ANONF, -1, 0) == B
    _fail(mm2, "anon_vma_prepare")
    assert mm2.sys_madvise(B, 2 * K, C.MADV_NAMES["MADV_POPULATE_WRITE"]) == -errno.ENOMEM
    clean(mm)
    clean(mm2)


POINT_CASES: dict[str, Callable[[], None]] = {
    "security_mmap_file": _pt_simple("security_mmap_file", "6.18", errno.EACCES),
    "security_mmap_addr": _pt_simple("security_mmap_addr", "6.18", errno.EPERM),
    "gather": _pt_gather,
    "split_vma": _pt_split,
    "vm_enough_memory": _pt_simple("vm_enough_memory", "6.18", errno.ENOMEM),
    "mmap_prepare": _pt_driver("mmap_prepare", "6.18", "filemap", SH, errno.ENOMEM),
    "action_prepare": _pt_driver("action_prepare", "7.1", "kpages", SH, errno.EINVAL),
    "vma_merge": _pt_merge,
    "vma_alloc": _pt_simple("vma_alloc", "6.18", errno.ENOMEM),
    "vma_prealloc": _pt_simple("vma_prealloc", "6.18", errno.ENOMEM),
    "mmap": _pt_driver("mmap", "6.18", "devzero", SH, errno.ENOMEM),
    "action_complete": _pt_driver("action_complete", "7.1", "kpages", SH, errno.ENOMEM),
    "mapped": _pt_driver("mapped", "7.1", "mapped_private", SH, errno.ENOMEM),
    "success_hook": _pt_driver("success_hook", "7.1", "devzero", PR, errno.ENOMEM),
    "finish": _pt_driver("finish", "finish", "devmem", SH, errno.ENOMEM),
    "error_unmap": _pt_driver("action_complete", "7.1", "kpages", SH, errno.ENOMEM, extra="error_unmap"),
    "anon_vma_prepare": _pt_anon_vma,
}


def test_every_point_has_a_case() -> None:
    assert set(POINT_CASES) == set(FAULT_POINTS)


@pytest.mark.parametrize("point", list(FAULT_POINTS))
def test_fault_point(point: str) -> None:
    POINT_CASES[point]()


def test_action_prepare_only_fallible_from_71() -> None:
    mm = mk("6.19")
    fd = open_driver(mm, "devmem", 0)
    _fail(mm, "action_prepare")
    assert mm.sys_mmap(B, 2 * K, RW, SH, fd, 0) == B  # 6.19's mmap_action_prepare() cannot fail
    assert "action_prepare" not in mm.fail_hits
    clean(mm)


# ---------------------------------------------------------------------------------------------------------
# the scenario field
def test_scenario_inject_field() -> None:
    mmap = {"op": "mmap", "addr": "base", "len": "4K", "prot": "PROT_READ", "flags": "MAP_PRIVATE|MAP_ANONYMOUS"}
    raw = {"name": "inj", "inject": [{"point": "vma_alloc", "hit": 1, "errno": "ENOMEM"}], "ops": [mmap, mmap]}
    res = run_on_model(parse_scenario(raw), validate=True)
    assert [r["errno"] for r in res["results"]] == ["ENOMEM", None]
    for bad in ([{"point": "nope", "hit": 1}], [{"point": "gather", "hit": 0}], [{"point": "gather", "errno": "EWHAT"}],
                "x", [{"point": "gather"}, {"point": "gather", "hit": 2}]):
        with pytest.raises(ScenarioError):
            parse_scenario({**raw, "inject": bad})


def test_live_runner_refuses_inject() -> None:
    from vmalab.oracle.kernel import KernelRunnerError, run_on_kernel
    scn = parse_scenario({"name": "inj", "inject": [{"point": "gather", "hit": 1}], "ops": []})
    with pytest.raises(KernelRunnerError, match="injects faults"):
        run_on_kernel(scn)


# ---------------------------------------------------------------------------------------------------------
# the lock checker
class _Ops(FileOperations):
    """A configurable test driver (page-cache-like, mergeable unless told otherwise)."""

    has_mmap_prepare = True
    fault_style = "filemap"

    def __init__(self, mm: MM, prepare: Callable[[_Ops, VmAreaDesc], int] | None = None,
                 vm_ops: VmOperations | None = None) -> None:
        self.mm = mm
        self.mutex = Mutex("testdrv")
        self.ref = Kref(mm, "testdrv obj")
        self.pool = PfnAllocator(mm, "testdrv pages", 0x200000, 64)
        self.prepare = prepare
        self.vm_ops = vm_ops or VmOperations()

    def mmap_prepare(self, desc: VmAreaDesc) -> int:
        desc.vm_ops = self.vm_ops
        return self.prepare(self, desc) if self.prepare else 0


def _spec(make: Callable[[MM], FileOperations], name: str = "testdrv") -> DriverSpec:
    return DriverSpec(name, "test", lambda mm, size: mm.open_device(f"/dev/{name}", make(mm), size or 1 << 20))


def _cats(rep: Any) -> set[str]:
    return {f.category for f in rep.findings}


def test_lock_held_across_core_and_after_failure() -> None:
    rep = explore(load_driver(ex("spooky_lock")), ["7.1"], pairs=False)
    whats = [f.what for f in rep.findings]
    assert "driver mutex spooky still held when mmap_prepare returned to the core" in whats
    assert any("still held after mmap() failed" in w for w in whats)
    assert any("locked twice (deadlock)" in w for w in whats)  # the next mmap() deadlocks


def test_lock_error_double_unlock() -> None:
    def prepare(d: _Ops, desc: VmAreaDesc) -> int:
        d.mutex.lock()
        d.mutex.unlock()
        d.mutex.unlock()
        return 0
    rep = explore(_spec(lambda mm: _Ops(mm, prepare)), ["6.18"], pairs=False)
    assert any("unlocked while not held" in f.what and f.category == "lock" for f in rep.findings)


def test_lock_order_inversion_across_runs() -> None:
    """mapped takes the driver mutex under the rmap lock (hide_from_rmap), while mmap_prepare takes the rmap lock
    (an rmap walk such as unmap_mapping_range()) under the driver mutex: i_mmap_rwsem <-> driver:testdrv."""
    class Ops(_Ops):
        def mmap_prepare(self, desc: VmAreaDesc) -> int:
            ino = desc.file.inode.ino
            with_mutex = desc.pgoff == 0
            if with_mutex:
                self.mutex.lock()
                self.mm.locks.lock_i_mmap(ino)  # i_mmap_lock_write() of an rmap walk
                self.mm.locks.unlock_i_mmap(ino)
                self.mutex.unlock()
            desc.vm_ops = self.vm_ops
            desc.action.hide_from_rmap_until_complete = True
            return 0

    class Vm(VmOperations):
        def __init__(self, d: _Ops) -> None:
            self.d = d

        def mapped(self, start: int, end: int, pgoff: int, file: File | None, priv: Any) -> int:
            self.d.mutex.lock()
            self.d.mutex.unlock()
            return 0

    def make(mm: MM) -> Ops:
        o = Ops(mm)
        o.vm_ops = Vm(o)
        return o
    rep = explore(_spec(make), ["7.1"], pairs=False)
    orders = [f for f in rep.findings if f.category == "lock-order"]
    assert orders and "driver:testdrv" in orders[0].what and "i_mmap_rwsem" in orders[0].what
    g = LockOrderGraph()
    g.add("a", "b", "x")
    g.add("b", "c", "x")
    assert g.cycles() == []
    g.add("c", "a", "y")
    assert [set(c) for c in g.cycles()] == [{"a", "b", "c"}]


def test_contract_table_and_kernel_lock_order_619() -> None:
    """6.19/7.0: the failed VMA is unmapped (->close runs) while i_mmap_rwsem is still held — reported as the
    kernel's lock-order problem, gone in 7.1; never a driver finding."""
    rep = explore(load_driver(ex("spooky_lock_fixed")), ["6.19", "7.1"], pairs=False)
    assert rep.findings == []
    k = {(f.profile, f.category) for f in rep.kernel}
    assert ("6.19", "lock-order") in k and ("6.19", "contract") in k
    assert ("7.1", "lock-order") not in k and ("7.1", "contract") not in k


def test_checker_records_locks_at_every_callback() -> None:
    mm = mk("7.1")
    chk = LockChecker(mm)
    fd = open_driver(mm, "mapped_private", 0)
    assert mm.sys_mmap(B, 2 * K, RW, SH, fd, 0) == B
    assert mm.sys_munmap(B, 2 * K) == 0
    names = [n for n, _ in chk.held_log]
    assert names == ["mmap_prepare", "mapped", "close"]
    assert all("mmap_lock:write" in held for _, held in chk.held_log)
    assert f"vma:{B:#x}" in dict(chk.held_log)["mapped"]
    assert chk.reports == []


def test_lockerror_relock() -> None:
    m = Mutex("x")
    m.lock()
    with pytest.raises(LockError):
        m.lock()


# ---------------------------------------------------------------------------------------------------------
# resources
def _res_driver(kind: str) -> DriverSpec:
    class Vm(VmOperations):
        has_close = True

        def __init__(self, d: _Ops) -> None:
            self.d = d

        def close(self, vma: VMA) -> None:
            if kind == "underflow":
                self.d.ref.put()
            if kind in ("pfn", "double") and isinstance(vma.vm_private_data, int):
                self.d.pool.free(vma.vm_private_data)
                if kind == "double":
                    self.d.pool.free(vma.vm_private_data)

    def prepare(d: _Ops, desc: VmAreaDesc) -> int:
        if kind in ("pfn", "double"):
            desc.private_data = d.pool.alloc()  # BUG: allocated before the VMA exists
        if kind == "file":
            desc.file.refcount += 1  # get_file() with no fput
        if kind == "fput":
            desc.file.refcount -= 1
        return 0

    def make(mm: MM) -> _Ops:
        o = _Ops(mm, prepare)
        o.vm_ops = Vm(o)
        return o
    return _spec(make)


@pytest.mark.parametrize("kind,cat,text", [
    ("underflow", "ref", "underflow"), ("pfn", "pfn", "still allocated"), ("double", "pfn", "freed twice"),
    ("file", "file", "leaked"), ("fput", "file", "fput() too often")])
def test_resource_leak_kinds(kind: str, cat: str, text: str) -> None:
    rep = explore(_res_driver(kind), ["7.1"], pairs=False)
    assert any(f.category == cat and text in f.what for f in rep.findings), [f.what for f in rep.findings]


# ---------------------------------------------------------------------------------------------------------
# the example drivers: exactly the planted bug, with a reproducing scenario; the fixed versions are clean
def test_spooky_lock_found_exactly(tmp_path: Any) -> None:
    drv = load_driver(ex("spooky_lock"))
    rep = explore(drv, list(PROFILES), pairs=True)
    assert rep.findings
    assert all(f.category in ("lock", "lock-order") and "spooky" in f.what for f in rep.findings)
    assert {f.profile for f in rep.findings} == {"seed-v3", "6.19", "7.0", "7.1", "finish"}
    assert set(rep.unavailable) == {"6.18", "7.2", "7.3"}  # no hook to release the lock in: cannot be written
    from vmalab.explore import write_scenarios
    write_scenarios(rep, str(tmp_path))
    row = next(f for f in rep.findings if "still held after mmap() failed" in f.what and f.profile == "7.1")
    assert row.path and row.scenario.get("inject")
    with open(row.path, encoding="utf-8") as fh:
        scn = json.load(fh)
    again = run_scenario(scn, drv)
    assert any(p.what == row.what for p in again.problems)
    fixed = run_scenario(scn, load_driver(ex("spooky_lock_fixed")))
    assert not [p for p in fixed.problems if p.kind == "driver"]


def test_spooky_lock_fixed_clean() -> None:
    rep = explore(load_driver(ex("spooky_lock_fixed")), list(PROFILES), pairs=True)
    assert rep.findings == []
    assert set(rep.unavailable) == {"6.18"}


def test_afs_ref_found_exactly() -> None:
    drv = load_driver(ex("afs_ref"))
    rep = explore(drv, list(PROFILES), pairs=False)
    assert rep.findings and all(f.category == "ref" and "afs vnode" in f.what for f in rep.findings)
    assert {f.profile for f in rep.findings} == set(PROFILES)
    merge = [f for f in rep.findings if "(no fault)" in f.points]
    assert merge and all(s.startswith("merge") for f in merge for s in f.shapes if f.points == ["(no fault)"])
    assert not merge[0].scenario.get("inject")  # the merge path alone leaks: no fault needed


def test_afs_ref_fixed_clean() -> None:
    rep = explore(load_driver(ex("afs_ref_fixed")), list(PROFILES), pairs=True)
    assert rep.findings == []


def test_afs_ref_fixed_needs_mapped_to_not_fail() -> None:
    """With the driver's own callbacks failing too, ->close runs for a VMA whose mapped never ran: the fixed
    driver (like afs_mapped(), which cannot fail) drops a reference it never took."""
    rep = explore(load_driver(ex("afs_ref_fixed")), ["7.1"], pairs=False, driver_points=True)
    assert {f.category for f in rep.findings} == {"ref"}
    assert all(p.startswith("mapped#") for f in rep.findings for p in f.points)


@pytest.mark.parametrize("name", driver_names())
def test_builtin_drivers_clean(name: str) -> None:
    rep = explore(load_driver(name), list(PROFILES), pairs=False, driver_points=True)
    assert rep.findings == [], [(f.profile, f.what, f.points[:3]) for f in rep.findings]


@pytest.mark.parametrize("name", ["mapped_private", "devzero", "ovl"])
def test_builtin_drivers_clean_with_pairs(name: str) -> None:
    rep = explore(load_driver(name), ["7.1", "6.19"], pairs=True)
    assert rep.findings == []


def test_kernel_behaviour_per_profile() -> None:
    """The commit charge kept after a failed mmap_prepare (6.16-7.2.0, not 7.3: 6cc27d821963) and the MAP_FIXED
    hole are the kernel's, never the driver's."""
    rep = explore(load_driver("secretmem"), ["6.18", "7.3"], pairs=False)
    assert rep.findings == []
    k = {(f.profile, f.category) for f in rep.kernel}
    # secretmem refuses a private mapping: 6.18 keeps the new mapping's charge, 7.3 releases it; both lose the
    # charge of the anonymous VMA a MAP_FIXED replaced (handed to the new mapping at setup, vms->nr_accounted = 0)
    commit = {f.profile: f.shapes for f in rep.kernel if f.category == "commit"}
    assert "new-private" in commit["6.18"] and commit["7.3"] == ["fixed-private"]
    assert ("6.18", "hole") in k and ("7.3", "hole") in k


def test_shapes_cover_merge_fixed_new() -> None:
    names = [s.name for s in shapes("x")]
    assert names == ["new-shared", "fixed-shared", "merge-shared", "new-private", "fixed-private", "merge-private"]


# ---------------------------------------------------------------------------------------------------------
# the CLI
def test_cli_faults_list() -> None:
    r = CliRunner().invoke(main, ["faults", "list"])
    assert r.exit_code == 0
    for p in FAULT_POINTS:
        assert p in r.output
    r = CliRunner().invoke(main, ["faults", "list", "--json"])
    assert {d["point"] for d in json.loads(r.output)} == set(FAULT_POINTS)


def test_cli_explore_builtin_clean() -> None:
    r = CliRunner().invoke(main, ["explore", "mapped_private", "--no-pairs"])
    assert r.exit_code == 0, r.output
    assert "## driver findings\n(none)" in r.output and "kernel behaviour" in r.output


def test_cli_explore_finding_exit_and_out(tmp_path: Any) -> None:
    out = tmp_path / "repro"
    r = CliRunner().invoke(main, ["explore", ex("afs_ref"), "--no-pairs", "--json", "--out", str(out)])
    assert r.exit_code == 1
    data = json.loads(r.output)
    assert data["findings"] and all(os.path.exists(f["scenario"]) for f in data["findings"])
    repro = data["findings"][0]["scenario"]
    r = CliRunner().invoke(main, ["explore", ex("afs_ref"), "--replay", repro])
    assert r.exit_code == 1 and "afs vnode" in r.output
    r = CliRunner().invoke(main, ["explore", ex("afs_ref_fixed"), "--replay", repro])
    assert r.exit_code == 0


def test_cli_explore_all_profiles() -> None:
    r = CliRunner().invoke(main, ["explore", ex("spooky_lock_fixed"), "--all-profiles", "--no-pairs"])
    assert r.exit_code == 0
    assert "| 6.19 |" in r.output and "i_mmap_rwsem -> i_mmap_rwsem" in r.output
    assert "- 6.18: not available" in r.output


@pytest.mark.parametrize("arg", ["nosuchdriver", "/nonexistent/drv.py", "no.such.module"])
def test_cli_explore_unknown_driver(arg: str) -> None:
    r = CliRunner().invoke(main, ["explore", arg])
    assert r.exit_code == 2
    err = r.stderr if hasattr(r, "stderr") else r.output
    assert err.count("\n") == 1 and err.startswith("vmalab: error:")


def test_success_ref_per_design() -> None:
    """The reviewer's second question, measured: a reference taken "on success" is right with vm_ops->mapped
    (7.1, ~7.2), wrong with success_hook (const VMA: ->close cannot tell) and with a naive finish(err)."""
    rep = explore(load_driver(ex("success_ref")), list(PROFILES), pairs=False)
    assert {f.profile for f in rep.findings} == {"seed-v3", "6.19", "7.0", "finish"}
    assert all(f.category == "ref" for f in rep.findings)


# ---------------------------------------------------------------------------------------------------------
# explorer v2 (issue 11): every finding kind has a wrong driver and its fix in examples/drivers/
WRONG_DRIVERS: dict[str, tuple[str, str, set[str]]] = {
    # wrong driver: (its fix, the finding category, the profiles where the bug is expressible)
    "afs_ref": ("afs_ref_fixed", "ref", set(PROFILES)),  # the kref taken in mmap_prepare
    "rmap_order": ("rmap_order_fixed", "lock-order", {p for p in PROFILES if PROFILES[p].has_mapped
                                                      and PROFILES[p].has_rmap_hide}),
    "errhook_positive": ("errhook_positive_fixed", "errno", {p for p in PROFILES if PROFILES[p].has_hooks}),
    "ring_double_free": ("ring_double_free_fixed", "pfn", {p for p in PROFILES if PROFILES[p].has_hooks}),
    "mmap_lock_prepare": ("mmap_lock_prepare_fixed", "self-deadlock", set(PROFILES)),
    "remap_range": ("remap_range_fixed", "device-range", set(PROFILES)),
    "per_file_buffer_leak": ("per_file_buffer", "pfn", set(PROFILES)),
}


@pytest.mark.parametrize("wrong", list(WRONG_DRIVERS))
def test_wrong_driver_found_and_fix_clean(wrong: str) -> None:
    fixed, cat, where = WRONG_DRIVERS[wrong]
    rep = explore(load_driver(ex(wrong)), list(PROFILES), pairs=False)
    assert {f.category for f in rep.findings} == {cat}, [(f.profile, f.what) for f in rep.findings]
    assert {f.profile for f in rep.findings} == where
    rep = explore(load_driver(ex(fixed)), list(PROFILES), pairs=False)
    assert rep.findings == [], [(f.profile, f.what) for f in rep.findings]


def test_every_example_driver_is_run() -> None:
    names = {os.path.splitext(n)[0] for n in os.listdir(EX) if n.endswith(".py")}
    covered = set(WRONG_DRIVERS) | {f for f, _, _ in WRONG_DRIVERS.values()}
    covered |= {"spooky_lock", "spooky_lock_fixed", "success_ref"}
    assert {n for n in names if not n.startswith("port_")} <= covered


def test_lock_order_replayed_with_callbacks(tmp_path: Any) -> None:
    """The inversion is found within one run, so its reproducer replays it (`--replay` used to record the edges
    and never look for cycles); each edge names the callbacks that took its two locks."""
    drv = load_driver(ex("rmap_order"))
    rep = explore(drv, ["7.1"], pairs=False)
    row = next(f for f in rep.findings if f.category == "lock-order")
    assert "i_mmap_rwsem taken in mmap_prepare while driver:rmapdev was held (taken in mmap_prepare)" in row.what
    assert "driver:rmapdev taken in mapped while i_mmap_rwsem was held (taken in the core)" in row.what
    assert "(across runs)" not in row.points
    from vmalab.explore import write_scenarios
    write_scenarios(rep, str(tmp_path))
    assert row.path
    again = run_scenario(json.load(open(row.path, encoding="utf-8")), drv)
    assert [p.what for p in again.problems if p.category == "lock-order"] == [row.what]
    r = CliRunner().invoke(main, ["explore", ex("rmap_order"), "--replay", row.path])
    assert r.exit_code == 1 and "lock order inversion" in r.output
    r = CliRunner().invoke(main, ["explore", ex("rmap_order_fixed"), "--replay", row.path])
    assert r.exit_code == 0 and "lock order inversion" not in r.output


def test_self_deadlock_names_callback() -> None:
    rep = explore(load_driver(ex("mmap_lock_prepare")), ["7.1"], pairs=False)
    assert rep.findings[0].what.startswith("mmap_prepare takes a lock the core already holds in mmap(): "
                                           "mmap_lock taken for read while this task already holds it for write")
    from vmalab.locking import SelfDeadlock, driver_take_mmap_lock
    mm = MM()
    with driver_take_mmap_lock(mm):  # no outer hold: an ordinary read hold
        assert mm.locks.mmap_lock == "read"
        with pytest.raises(SelfDeadlock):
            driver_take_mmap_lock(mm.locks, write=True)
    assert mm.locks.mmap_lock is None


def test_device_range_finding_text() -> None:
    rep = explore(load_driver(ex("remap_range")), ["7.1", "6.18"], pairs=False)
    assert [f.what for f in rep.findings] == [
        "PFN 0x180002 remapped at base+0x12000: 2 page(s) outside the device memory the driver declares "
        "(PFNs 0x180000-0x180001)"] * 2
    assert all(f.shapes == ["merge-shared", "merge-private"] for f in rep.findings)


def test_errhook_message_says_what_mmap_returned() -> None:
    rep = explore(load_driver(ex("errhook_positive")), ["7.1"], pairs=False)
    assert [f.what for f in rep.findings] == [
        "mmap() returned 0xb although the mapping failed and was unmapped: the driver's error_hook returned 11 "
        "(EAGAIN as a positive number), which is not an error code (-errno): it became the address"]


class _Released(FileOperations):
    has_mmap_prepare = True
    has_release = True
    fault_style = "filemap"

    def __init__(self) -> None:
        self.released: list[str] = []

    def mmap_prepare(self, desc: VmAreaDesc) -> int:
        return 0

    def release(self, file: File) -> None:
        self.released.append(file.path)


def test_release_on_last_fput() -> None:
    """->release runs once, when the last reference goes (descriptor and VMAs), with no mm lock held (the
    kernel's __fput() is task work run on the return to user space)."""
    mm = mk("7.1")
    chk = LockChecker(mm)
    ops = _Released()
    fd = mm.open_device("/dev/rel", ops, 1 << 20)
    f = mm.fdtable[fd]
    assert mm.sys_mmap(B, 2 * K, RW, SH, fd, 0) == B
    assert mm.sys_mprotect(B, K, C.PROT_READ) == 0  # a split: two VMAs, two references
    assert f.refcount == 3
    mm.close(fd)
    assert f.refcount == 2 and ops.released == []
    assert mm.sys_munmap(B, K) == 0 and ops.released == []
    assert mm.sys_munmap(B, 2 * K) == 0
    assert f.refcount == 0 and ops.released == ["/dev/rel"]
    assert dict(chk.held_log)["release"] == frozenset()
    assert chk.reports == []
    # fork: the child's descriptor and VMA references count too; exit_files() drops the descriptors
    ops2 = _Released()
    fd = mm.open_device("/dev/rel2", ops2, 1 << 20)
    assert mm.sys_mmap(B, K, RW, SH, fd, 0) == B
    child = mm.fork()
    mm.close(fd)
    assert mm.sys_munmap(B, K) == 0 and ops2.released == []
    from vmalab.fork import exit_files
    exit_files(child)
    assert ops2.released == [] and child.sys_munmap(B, K) == 0 and ops2.released == ["/dev/rel2"]


def test_report_fits_terminal_and_summary() -> None:
    rep = explore(load_driver(ex("spooky_lock")), ["7.1", "6.19"], pairs=False)
    from vmalab.explore import Progress, format_report, summary_line
    text = format_report(rep)
    assert max(len(line) for line in text.splitlines()) <= 100
    assert text.splitlines()[-1] == summary_line(rep) == \
        f"{len(rep.findings)} findings on 2 profiles; {len(rep.kernel)} kernel-behaviour rows"
    assert rep.to_json()["summary"] == summary_line(rep)
    import io
    out = io.StringIO()
    explore(load_driver("devzero"), ["7.1"], pairs=False, progress=Progress(out, every=0))
    lines = out.getvalue().splitlines()
    assert lines and all(ln.startswith("explore: profile 7.1, shape ") for ln in lines)


def test_cli_explore_summary_and_json() -> None:
    r = CliRunner().invoke(main, ["explore", ex("per_file_buffer"), "--no-pairs"])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[-1].startswith("0 findings on 1 profile; ")
    r = CliRunner().invoke(main, ["explore", ex("per_file_buffer_leak"), "--no-pairs", "--json"])
    assert r.exit_code == 1 and json.loads(r.output)["summary"].startswith("1 finding on 1 profile; ")
