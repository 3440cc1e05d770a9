"""Capabilities in the model (MmStruct.cap_*) and the memory lines of /proc/self/status (procfs.task_mem).

The kernel behaviour each test pins is recorded in tests/scenarios/caps_*.json and status_*.json; the
admin reserve of OVERCOMMIT_NEVER cannot be recorded here (vm.overcommit_memory is 0 on this machine) and
follows mm/util.c: __vm_enough_memory().
"""

from __future__ import annotations

import errno

import pytest

from vmalab import MM
from vmalab import constants as C
from vmalab.execute import ModelLimitExceeded, run_on_model
from vmalab.procfs import STATUS_FIELDS, task_mem
from vmalab.scenario import ScenarioError, compare_results, parse_scenario

BASE = 0x500000000000
P = C.PAGE_SIZE
RW = C.PROT_READ | C.PROT_WRITE
ANON = C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_FIXED
ALL = {"CAP_IPC_LOCK", "CAP_SYS_RAWIO", "CAP_SYS_RESOURCE", "CAP_SYS_ADMIN"}


def test_a_bare_mm_is_root_and_caps_choose() -> None:
    assert MM().caps == ALL
    assert MM(caps=()).caps == frozenset()
    assert MM(caps=["CAP_IPC_LOCK", "CAP_CHOWN"]).caps == {"CAP_IPC_LOCK"}
    with pytest.raises(ValueError, match="unknown capability 'CAP_NOPE'"):
        MM(caps=["CAP_NOPE"])
    mm = MM()
    mm.drop_cap("CAP_SYS_RAWIO")
    mm.drop_cap("CAP_CHOWN")  # not one the mm checks: nothing changes
    assert mm.caps == ALL - {"CAP_SYS_RAWIO"}
    child = mm.fork()
    assert child.caps == mm.caps  # the child has the parent's credentials


def test_cap_ipc_lock_and_rlimit_memlock() -> None:
    mm = MM(caps=())
    mm.rlimits[C.RLIMIT_NAMES["RLIMIT_MEMLOCK"]] = (4 * P, 4 * P)
    mm.mmap(BASE, 16 * P, RW, ANON)
    assert mm.sys_mlock(BASE, 2 * P) == 0
    assert mm.sys_mlock(BASE, 8 * P) == -errno.ENOMEM
    assert mm.sys_mmap(BASE + (1 << 20), 8 * P, RW, ANON | C.MAP_LOCKED, -1, 0) == -errno.EAGAIN
    assert mm.sys_mlockall(C.MLOCK_NAMES["MCL_CURRENT"]) == -errno.ENOMEM
    mm.rlimits[C.RLIMIT_NAMES["RLIMIT_MEMLOCK"]] = (0, 0)
    assert mm.sys_mlock(BASE, P) == -errno.EPERM
    root = MM()
    root.rlimits[C.RLIMIT_NAMES["RLIMIT_MEMLOCK"]] = (0, 0)
    root.mmap(BASE, 16 * P, RW, ANON)
    assert root.sys_mlock(BASE, 16 * P) == 0
    mm.validate()
    root.validate()


def test_cap_sys_rawio_and_mmap_min_addr() -> None:
    ro = C.PROT_READ
    assert MM().sys_mmap(0, P, ro, ANON, -1, 0) == 0
    user = MM(caps=())
    assert user.sys_mmap(0, P, ro, ANON, -1, 0) == -errno.EPERM
    assert user.sys_mmap(P, P, ro, ANON, -1, 0) == P  # at dac_mmap_min_addr: allowed
    assert user.sys_mmap(2 * P, P, ro, C.MAP_PRIVATE | C.MAP_ANONYMOUS, -1, 0) == C.MMAP_MIN_ADDR  # hint rounded


def test_cap_sys_admin_keeps_the_admin_reserve_under_overcommit_never() -> None:
    """__vm_enough_memory() with OVERCOMMIT_NEVER: the charge must stay below the commit limit (RAM * 50%),
    less admin_reserve_kbytes for a task without CAP_SYS_ADMIN and min(total_vm / 32, user reserve)."""
    def mm_with(caps: set[str] | None) -> MM:
        mm = MM(caps=caps)
        mm.overcommit_memory = 2
        mm.totalram_pages = 2 * 4096  # 32 MiB: the commit limit is 16 MiB (4096 pages)
        return mm

    root, user = mm_with(None), mm_with(set())
    # 4095 pages leave the root task under the limit; the user loses the 8 MiB (2048 page) admin reserve
    assert root.sys_mmap(BASE, 4095 * P, RW, ANON, -1, 0) == BASE
    assert user.sys_mmap(BASE, 4095 * P, RW, ANON, -1, 0) == -errno.ENOMEM
    assert user.sys_mmap(BASE, 2047 * P, RW, ANON, -1, 0) == BASE
    assert user.sys_mmap(BASE + (64 << 20), P, RW, ANON, -1, 0) == -errno.ENOMEM  # 2048 is not below 2048
    assert user.committed == 2047 and root.committed == 4095
    user.validate()
    # the heuristic policy does not look at the capability
    guess = MM(caps=())
    assert guess.sys_mmap(BASE, 1 << 30, RW, ANON, -1, 0) == BASE


def test_cap_sys_admin_for_hwpoison_and_cap_sys_resource_for_setrlimit() -> None:
    advice = C.MADV_NAMES["MADV_HWPOISON"]
    user = MM(caps=())
    user.mmap(BASE, P, RW, ANON)
    assert user.sys_madvise(BASE, P, advice) == -errno.EPERM  # madvise_inject_error()
    assert user.sys_madvise(BASE, P, C.MADV_NAMES["MADV_SOFT_OFFLINE"]) == -errno.EPERM
    assert user.sys_madvise(BASE + 1, P, advice) == -errno.EINVAL  # argument checks come first
    scn = parse_scenario({"name": "rl", "ops": [
        {"op": "setrlimit", "resource": "RLIMIT_MEMLOCK", "value": "4M", "max": "4M"},
        {"op": "setrlimit", "resource": "RLIMIT_MEMLOCK", "value": "4M", "max": "8M"},
        {"op": "setrlimit", "resource": "RLIMIT_MEMLOCK", "value": "9M", "max": "8M"}]})
    rets = [(r["ret"], r["errno"]) for r in run_on_model(scn, caps=())["results"]]
    assert rets == [(0, None), (-1, "EPERM"), (-1, "EINVAL")]
    rets = [(r["ret"], r["errno"]) for r in run_on_model(scn)["results"]]
    assert rets == [(0, None), (0, None), (-1, "EINVAL")]


def test_task_mem_counters_and_high_water_marks() -> None:
    mm = MM()
    st = task_mem(mm)
    assert list(st) == list(STATUS_FIELDS) and set(st.values()) == {0}
    mm.mmap(BASE, 16 * P, RW, ANON | C.MAP_POPULATE)
    mm.mmap(BASE + (1 << 20), 4 * P, RW, C.MAP_SHARED | C.MAP_ANONYMOUS | C.MAP_FIXED | C.MAP_POPULATE)
    mm.mlock(BASE, 2 * P)
    st = task_mem(mm)
    assert (st["VmSize"], st["VmData"], st["VmLck"], st["VmRSS"], st["RssAnon"], st["RssShmem"]) == \
        (80, 64, 8, 80, 64, 16)
    mm.madvise(BASE + 8 * P, 8 * P, C.MADV_NAMES["MADV_DONTNEED"])
    mm.munmap(BASE + (1 << 20), 4 * P)
    st = task_mem(mm)
    assert (st["VmPeak"], st["VmSize"], st["VmHWM"], st["VmRSS"]) == (80, 64, 80, 32)
    child = mm.fork()
    cst = task_mem(child)
    assert (cst["VmPeak"], cst["VmHWM"], cst["VmLck"]) == (64, 32, 0)  # dup_mm() resets the marks


def test_format_1_1_parsing() -> None:
    ok = parse_scenario({"name": "x", "timeout": 2.5, "ops": [
        {"op": "capdrop", "cap": "CAP_SYS_ADMIN"}, {"op": "capdrop", "cap": 14}, {"op": "status"},
        {"op": "munmap", "addr": "fail-8K", "len": "4K"}]})
    assert ok.timeout == 2.5 and [o.p.get("cap") for o in ok.ops[:2]] == ["CAP_SYS_ADMIN", "CAP_IPC_LOCK"]
    assert ok.ops[3].p["addr"].kind == "fail" and ok.ops[3].p["addr"].to_json() == "fail-0x2000"
    for bad, message in [
        ({"timeout": 0}, "'timeout' must be a positive number"), ({"timeout": "1"}, "'timeout' must be"),
        ({"timeout": True}, "'timeout' must be"),
        ({"ops": [{"op": "capdrop", "cap": "CAP_NOPE"}]}, r"op 0: capdrop.cap: unknown capability 'CAP_NOPE'"),
        ({"ops": [{"op": "capdrop"}]}, "needs field 'cap'"),
        ({"ops": [{"op": "status", "x": 1}]}, "has no field 'x'"),
        ({"ops": [{"op": "repeat", "count": 1, "step": 0, "body": {"op": "status"}}]}, "cannot be 'status'"),
    ]:
        with pytest.raises(ScenarioError, match=message):
            parse_scenario({"name": "x", "ops": [], **bad})


def test_status_agreement_uses_five_lines_and_fail_addr_when_both_have_it() -> None:
    st = {k: 4 for k in STATUS_FIELDS}
    a = {"results": [{"op": "status", "ret": 0, "errno": None, "status": st},
                     {"op": "repeat", "ret": 1, "errno": "ENOMEM", "failed_at": 1, "fail_addr": "base+0x1000"}]}
    informational = {**st, "VmPeak": 1 << 20, "VmRSS": 99, "VmHWM": 7, "RssFile": 3, "VmExe": 1, "VmPTE": 8}
    b = {"results": [{"op": "status", "ret": 0, "errno": None, "status": informational},
                     {"op": "repeat", "ret": 1, "errno": "ENOMEM", "failed_at": 1}]}
    assert compare_results(a, b) == []
    b["results"][0]["status"] = {**st, "VmData": 8}
    b["results"][1]["fail_addr"] = "base+0x2000"
    assert compare_results(a, b) == ["op 0 (status): status VmData expected 4 kB, got 8 kB",
                                     "op 1 (repeat): fail_addr expected 'base+0x1000', got 'base+0x2000'"]


def test_model_timeout_is_a_one_line_error() -> None:
    scn = parse_scenario({"name": "spin", "timeout": 0.2, "ops": [
        {"op": "repeat", "count": 10**12, "step": 0, "body": {"op": "munmap", "addr": "base+0", "len": "4K"}}]})
    with pytest.raises(ModelLimitExceeded, match=r"^op 0 \(repeat\): the model run timed out after 0\.2 s"):
        run_on_model(scn)
