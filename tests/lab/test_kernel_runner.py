"""Tests of the live-kernel runner (:mod:`vmalab.oracle.kernel`).

Each test runs scenarios on this machine's kernel and asserts outcomes measured on it by hand (small C
probes), independent of the model.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

if sys.platform != "linux":  # pragma: no cover
    pytest.skip("the live-kernel runner needs Linux", allow_module_level=True)

from vmalab.oracle import KernelRunnerError, ensure_runner, run_on_kernel  # noqa: E402
from vmalab.oracle import kernel as K  # noqa: E402
from vmalab.scenario import parse_scenario  # noqa: E402

RW = "PROT_READ|PROT_WRITE"
ANON_FIXED = "MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED"
ANON = "MAP_PRIVATE|MAP_ANONYMOUS"


def run(ops: list[dict[str, Any]], **top: Any) -> dict[str, Any]:
    """Run a scenario made of ``ops`` (plus top-level fields) and return the result object."""
    return run_on_kernel(parse_scenario({"name": "test", "ops": ops, **top}), timeout=60)


def mmap(addr: Any, length: str | int, prot: str = RW, flags: str = ANON_FIXED, **kw: Any) -> dict[str, Any]:
    return {"op": "mmap", "addr": addr, "len": length, "prot": prot, "flags": flags, **kw}


def vmas(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """A snapshot's VMAs as (start, end, perms, vmflags)."""
    return [(v["start"], v["end"], v["perms"], v["vmflags"]) for v in result["vmas"]]


def test_ensure_runner_is_cached() -> None:
    path = ensure_runner()
    assert path == ensure_runner()
    assert "runner-" in path


def test_adjacent_anon_merges_and_three_way_merge() -> None:
    r = run([
        mmap("base+0", "8K"), mmap("base+8K", "8K"), {"op": "snapshot"},       # low -> high
        mmap("base+64K", "4K"), mmap("base+72K", "4K"), {"op": "snapshot"},   # a gap between two VMAs
        mmap("base+68K", "4K"), {"op": "snapshot"},                            # filled: 3-way merge
        mmap("base+128K", "4K", prot="PROT_READ"), {"op": "snapshot", "range": ["base+128K", "base+132K"]},
    ])
    res = r["results"]
    assert res[0]["ret"] == "base+0x0" and res[0]["errno"] is None
    assert vmas(res[2]) == [("base+0x0", "base+0x4000", "rw-p", "rd wr mr mw me ac")]
    v = res[2]["vmas"][0]
    assert v["len"] == "0x4000" and v["pgoff"] == "0x0" and v["name"] == "" and v["rss_kb"] == 0
    assert "locked_kb" not in v and v["maps"].startswith("500000000000-500000004000 rw-p")
    assert len(res[5]["vmas"]) == 3
    assert [x[:2] for x in vmas(res[7])][1] == ("base+0x10000", "base+0x13000")
    assert len(res[7]["vmas"]) == 2
    # a r-- private anon VMA has no "ac"
    assert vmas(res[9]) == [("base+0x20000", "base+0x21000", "r--p", "rd mr mw me")]
    env = r["env"]
    assert env["base"] == "0x500000000000" and env["window"] is True
    assert env["initial_map_count"] > 0 and "[stack]" in env["initial_maps"]
    assert env["initial_brk"].startswith("0x") and env["machine"] == "x86_64"


def test_mprotect_middle_splits_and_merges_back() -> None:
    r = run([
        mmap("base+0", "12K"),
        {"op": "mprotect", "addr": "base+4K", "len": "4K", "prot": "PROT_READ", "note": "split"},
        {"op": "snapshot"},
        {"op": "mprotect", "addr": "base+4K", "len": "4K", "prot": RW},
        {"op": "snapshot"},
        {"op": "mprotect", "addr": "base+1K", "len": "4K", "prot": RW},
    ])
    res = r["results"]
    assert res[1] == {"op": "mprotect", "args": {"addr": "base+4K", "len": "4K", "prot": "PROT_READ"},
                      "ret": 0, "errno": None, "note": "split"}
    assert [p for _, _, p, _ in vmas(res[2])] == ["rw-p", "r--p", "rw-p"]
    assert vmas(res[4]) == [("base+0x0", "base+0x3000", "rw-p", "rd wr mr mw me ac")]
    assert (res[5]["ret"], res[5]["errno"]) == (-1, "EINVAL")


def test_munmap_and_noreplace() -> None:
    r = run([
        mmap("base+0", "12K"),
        {"op": "munmap", "addr": "base+4K", "len": "4K"},
        {"op": "snapshot"},
        {"op": "munmap", "addr": "base+0", "len": 0},
        {"op": "munmap", "addr": "base+1K", "len": "4K"},
        {"op": "munmap", "addr": "base+1M", "len": "1M"},
        mmap("base+0", "4K", flags="MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED_NOREPLACE"),
        mmap("base-4K", "8K", flags="MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED_NOREPLACE"),
        mmap("base+12K", "4K", flags="MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED_NOREPLACE"),
        {"op": "snapshot"},
        mmap("base+0", 0, flags=ANON),
    ])
    res = r["results"]
    assert vmas(res[2]) == [("base+0x0", "base+0x1000", "rw-p", "rd wr mr mw me ac"),
                            ("base+0x2000", "base+0x3000", "rw-p", "rd wr mr mw me ac")]
    assert (res[3]["ret"], res[3]["errno"]) == (-1, "EINVAL")
    assert (res[4]["ret"], res[4]["errno"]) == (-1, "EINVAL")
    assert (res[5]["ret"], res[5]["errno"]) == (0, None)
    assert (res[6]["ret"], res[6]["errno"]) == (-1, "EEXIST")
    assert (res[7]["ret"], res[7]["errno"]) == (-1, "EEXIST")
    assert res[8]["ret"] == "base+0x3000"              # adjacent: allowed, and it merges
    assert vmas(res[9])[1][:2] == ("base+0x2000", "base+0x4000")
    assert (res[10]["ret"], res[10]["errno"]) == (-1, "EINVAL")


def test_touch_rss_values_and_mincore() -> None:
    r = run([
        mmap("base+0", "16K"),
        {"op": "touch", "addr": "base+0", "write": True},
        {"op": "touch", "addr": "base+8K", "write": False},
        {"op": "touch", "addr": "base+4K", "write": True, "value": 42},
        {"op": "touch", "addr": "base+4K", "write": False},
        {"op": "touch", "addr": "base+64K", "write": False},
        {"op": "mincore", "addr": "base+0", "len": "16K"},
        {"op": "mincore", "addr": "base+64K", "len": "4K"},
        {"op": "mincore", "addr": "base+1K", "len": "4K"},
        {"op": "mincore", "addr": "base+0", "len": 0},
        {"op": "snapshot"},
    ])
    res = r["results"]
    assert res[1] == {"op": "touch", "args": {"addr": "base+0", "write": True}, "ret": 0, "errno": None}
    assert (res[2]["ret"], res[2]["value"]) == (0, 0)
    assert res[4]["value"] == 42
    assert (res[5]["ret"], res[5]["errno"], res[5]["signal"]) == (-1, None, "SIGSEGV")
    assert res[6]["vec"] == "1110"                       # the read fault maps the zero page
    assert (res[7]["ret"], res[7]["errno"]) == (-1, "ENOMEM") and "vec" not in res[7]
    assert (res[8]["ret"], res[8]["errno"]) == (-1, "EINVAL")
    assert (res[9]["ret"], res[9]["vec"]) == (0, "")
    assert res[10]["vmas"][0]["rss_kb"] == 8              # two written pages; the zero page is not Rss


def test_read_touch_alone_leaves_rss_zero() -> None:
    r = run([mmap("base+0", "4K"), {"op": "touch", "addr": "base+0", "write": False}, {"op": "snapshot"},
             {"op": "touch", "addr": "base+0", "write": True}, {"op": "snapshot"}])
    res = r["results"]
    assert res[1]["value"] == 0
    assert res[2]["vmas"][0]["rss_kb"] == 0
    assert res[4]["vmas"][0]["rss_kb"] == 4


def test_file_kinds_names_and_sigbus() -> None:
    r = run([
        mmap("base+0", "8K", flags="MAP_SHARED|MAP_FIXED", fd="memfd:shm:8K"),
        mmap("base+64K", "8K", flags="MAP_SHARED|MAP_FIXED", fd="disk:d:4K"),
        {"op": "touch", "addr": "base+64K", "write": True},
        {"op": "touch", "addr": "base+68K", "write": False},
        {"op": "ftruncate", "fd": "disk:d", "len": "8K"},
        {"op": "touch", "addr": "base+68K", "write": False},
        mmap("base+128K", "4K", flags="MAP_SHARED|MAP_FIXED", fd="tmpfs:t:4K"),
        mmap("base+192K", "4K", flags="MAP_SHARED|MAP_FIXED", fd="devzero"),
        mmap("base+256K", "4K", flags="MAP_SHARED|MAP_FIXED", fd="memfd:shm::ro"),
        mmap("base+256K", "4K", prot="PROT_READ", flags="MAP_SHARED|MAP_FIXED", fd="memfd:shm::ro"),
        mmap("base+320K", "4K", flags="MAP_SHARED|MAP_FIXED", fd="fd:1000"),
        mmap("base+384K", "4K", flags="MAP_SHARED|MAP_FIXED", fd="none"),
        {"op": "snapshot"},
        {"op": "munmap", "addr": "map:$FILES/tmpfs/t+0", "len": "4K"},
        {"op": "munmap", "addr": "mapend:$FILES/disk/d-4K", "len": "4K"},
        {"op": "snapshot"},
    ])
    res = r["results"]
    assert (res[3]["ret"], res[3]["signal"]) == (-1, "SIGBUS")
    assert (res[4]["ret"], res[5]["ret"], res[5]["value"]) == (0, 0, 0)
    assert (res[8]["ret"], res[8]["errno"]) == (-1, "EACCES")
    assert res[9]["ret"] == "base+0x40000"
    assert (res[10]["ret"], res[10]["errno"]) == (-1, "EBADF")
    assert (res[11]["ret"], res[11]["errno"]) == (-1, "EBADF")
    by_start = {v["start"]: v for v in res[12]["vmas"]}
    assert by_start["base+0x0"]["name"] == "/memfd:shm (deleted)"
    assert by_start["base+0x0"]["vmflags"] == "rd wr sh mr mw me ms"
    assert by_start["base+0x10000"]["name"] == "$FILES/disk/d"
    assert by_start["base+0x20000"]["name"] == "$FILES/tmpfs/t"
    assert by_start["base+0x30000"]["name"] == "/dev/zero (deleted)"
    ro = by_start["base+0x40000"]                         # read-only shared on O_RDONLY: no sh, no mw
    assert (ro["perms"], ro["vmflags"]) == ("r--s", "rd mr me ms")
    starts = [v["start"] for v in res[15]["vmas"]]
    assert "base+0x20000" not in starts and "base+0x11000" not in starts and "base+0x10000" in starts


def test_repeat_reaches_max_map_count_quickly() -> None:
    t0 = time.monotonic()
    r = run([
        {"op": "repeat", "count": 70000, "step": "8K",
         "body": mmap("base+0", "4K")},
        {"op": "vma_count"},
        {"op": "munmap", "addr": "base+0", "len": "4K"},
        {"op": "vma_count"},
    ])
    elapsed = time.monotonic() - t0
    res = r["results"]
    n0 = r["env"]["initial_map_count"]
    # do_mmap checks map_count > max: isolated mmaps reach max + 1 = 65531 (measured: scenario limit_max_map_count_*)
    assert res[0]["ret"] == 65531 - n0
    assert (res[0]["errno"], res[0]["failed_at"]) == ("ENOMEM", 65531 - n0)
    assert res[1]["ret"] == 65531
    assert res[3]["ret"] == 65530
    assert elapsed < 20


def test_repeat_stops_at_first_failure_and_touch_faults() -> None:
    r = run([
        mmap("base+0", "16K"),
        {"op": "repeat", "count": 10, "step": "4K", "body": {"op": "touch", "addr": "base+0", "write": True}},
        {"op": "repeat", "count": 3, "step": "4K",
         "body": {"op": "mprotect", "addr": "base+0", "len": "4K", "prot": "PROT_READ"}},
        {"op": "repeat", "count": 0, "step": 0, "body": {"op": "vma_count"}},
    ])
    res = r["results"]
    assert (res[1]["ret"], res[1]["errno"], res[1]["failed_at"], res[1]["signal"]) == (4, None, 4, "SIGSEGV")
    assert (res[2]["ret"], res[2]["errno"], res[2]["failed_at"]) == (3, None, None)
    assert (res[3]["ret"], res[3]["failed_at"]) == (0, None)


def test_fork_child_view() -> None:
    r = run([
        mmap("base+0", "12K"),
        {"op": "touch", "addr": "base+0", "write": True, "value": 5},
        {"op": "touch", "addr": "base+4K", "write": True, "value": 6},
        {"op": "touch", "addr": "base+8K", "write": True, "value": 7},
        {"op": "madvise", "addr": "base+4K", "len": "4K", "advice": "MADV_DONTFORK"},
        {"op": "madvise", "addr": "base+8K", "len": "4K", "advice": "MADV_WIPEONFORK"},
        {"op": "fork", "read": ["base+0", "base+4K", "base+8K", "base+1M"]},
        {"op": "touch", "addr": "base+4K", "write": False},
    ])
    res = r["results"]
    f = res[6]
    assert (f["ret"], f["errno"]) == (0, None)
    reads = f["child"]["reads"]
    assert reads[0] == {"addr": "base+0", "ret": 0, "value": 5}
    assert (reads[1]["addr"], reads[1]["ret"], reads[1]["signal"]) == ("base+4K", -1, "SIGSEGV")
    assert reads[2] == {"addr": "base+8K", "ret": 0, "value": 0}
    assert reads[3]["signal"] == "SIGSEGV"
    child = {v["start"]: v for v in f["child"]["vmas"]}
    assert set(child) == {"base+0x0", "base+0x2000"}      # the DONTFORK VMA is absent
    assert child["base+0x0"]["rss_kb"] == 4                # private anon: rss copied
    assert child["base+0x2000"]["rss_kb"] == 0 and "wf" in child["base+0x2000"]["vmflags"]
    assert res[7]["value"] == 6                             # the parent still has it


def test_lock_seal_guard_remap() -> None:
    r = run([
        mmap("base+0", "12K"),
        mmap("base+1M", "12K"),
        {"op": "mlock", "addr": "base+4K", "len": "4K"},
        {"op": "snapshot", "range": ["base+0", "base+12K"]},
        {"op": "munlock", "addr": "base+4K", "len": "4K"},
        {"op": "mlock", "addr": "base+1M+4K", "len": "4K", "flags": "MLOCK_ONFAULT"},
        {"op": "snapshot", "range": ["base+1M", "base+2M"]},
        mmap("base+64K", "12K"),
        {"op": "mseal", "addr": "base+68K", "len": "4K"},
        {"op": "munmap", "addr": "base+64K", "len": "12K"},
        {"op": "snapshot", "range": ["base+64K", "base+76K"]},
        mmap("base+128K", "12K", flags=ANON_FIXED + "|MAP_POPULATE"),
        {"op": "madvise", "addr": "base+132K", "len": "4K", "advice": "MADV_GUARD_INSTALL"},
        {"op": "mincore", "addr": "base+128K", "len": "12K"},
        {"op": "touch", "addr": "base+132K", "write": False},
        {"op": "snapshot", "range": ["base+128K", "base+140K"]},
        mmap("base+256K", "8K"),
        {"op": "mremap", "old": "base+256K", "old_len": "8K", "new_len": "16K"},
        {"op": "mremap", "old": "base+256K", "old_len": "16K", "new_len": "16K",
         "flags": "MREMAP_MAYMOVE|MREMAP_FIXED", "new_addr": "base+512K"},
        {"op": "mremap", "old": "base+900M", "old_len": "4K", "new_len": "4K"},
    ])
    res = r["results"]
    s = res[3]["vmas"]
    assert [v["perms"] for v in s] == ["rw-p"] * 3
    assert "lo" in s[1]["vmflags"].split() and s[1]["rss_kb"] == 4 and s[1]["locked_kb"] == 4
    assert "locked_kb" not in s[0]
    assert res[4]["ret"] == 0
    mid = res[6]["vmas"][1]
    assert {"lo", "lf"} <= set(mid["vmflags"].split()) and mid["rss_kb"] == 0
    assert (res[9]["ret"], res[9]["errno"]) == (-1, "EPERM")
    sealed = res[10]["vmas"]
    assert len(sealed) == 3 and "sl" in sealed[1]["vmflags"].split()
    assert res[12]["ret"] == 0
    assert res[13]["vec"] == "101"
    assert res[14]["signal"] == "SIGSEGV"
    guard = res[15]["vmas"]
    assert len(guard) == 1 and "gu" in guard[0]["vmflags"].split() and guard[0]["rss_kb"] == 8
    assert res[17]["ret"] == "base+0x40000"
    assert res[18]["ret"] == "base+0x80000"
    assert (res[19]["ret"], res[19]["errno"]) == (-1, "EFAULT")


def test_brk_setrlimit_mlockall() -> None:
    r = run([
        {"op": "brk", "addr": "brk+8K"},
        {"op": "brk", "addr": "brk+8K+1"},
        {"op": "setrlimit", "resource": "RLIMIT_MEMLOCK", "value": "8K", "max": "8K"},
        {"op": "setrlimit", "resource": "RLIMIT_MEMLOCK", "value": "16K"},   # soft only: hard stays 8K
        {"op": "setrlimit", "resource": "RLIMIT_MEMLOCK", "value": "4K"},
        {"op": "mlockall", "flags": "MCL_FUTURE"},
        {"op": "munlockall"},
        {"op": "msync", "addr": "base+0", "len": "4K", "flags": "MS_SYNC"},
        {"op": "snapshot", "range": ["brk+0", "brk+16K"]},
    ])
    res = r["results"]
    brk0 = int(r["env"]["initial_brk"], 16)
    assert res[0]["ret"] == f"{brk0 + 0x2000:#x}"
    assert res[1]["ret"] == f"{brk0 + 0x2001:#x}"             # unaligned: returned unchanged
    assert res[2]["ret"] == 0
    assert (res[3]["ret"], res[3]["errno"]) == (-1, "EINVAL")
    assert res[4]["ret"] == 0 and res[5]["ret"] == 0 and res[6]["ret"] == 0
    assert (res[7]["ret"], res[7]["errno"]) == (-1, "ENOMEM")
    heap = [v for v in res[8]["vmas"] if v["name"] == "[heap]"]
    assert heap and heap[-1]["end"] == f"{brk0 + 0x3000:#x}"


@pytest.mark.parametrize("rlimit, mmap_base", [("8M", 0x7FFFF7FFF000), ("1G", 0x7FFFBFEFF000),
                                                ("unlimited", 0x155555556000)])
def test_rlimit_stack_moves_mmap_base(rlimit: str, mmap_base: int) -> None:
    r = run([mmap(None, "4K", flags=ANON), {"op": "snapshot"}, {"op": "vma_count"}],
            window=False, rlimit_stack=rlimit)
    res = r["results"]
    first = int(res[0]["ret"], 16)
    by_name = {v["name"]: v for v in res[1]["vmas"]}
    vvar = int(by_name["[vvar]"]["start"], 16)
    assert int(by_name["[vdso]"]["end"], 16) == mmap_base
    assert first + 0x1000 == vvar                         # right below the vdso block
    assert r["env"]["rlimit_stack"] == rlimit
    assert res[2]["ret"] == len(res[1]["vmas"]) == r["env"]["initial_map_count"] + 1
    assert "[vsyscall]" not in by_name


def test_initial_layout_is_deterministic() -> None:
    a = run([{"op": "vma_count"}], window=False)
    b = run([{"op": "vma_count"}], window=False)
    assert a["env"]["initial_maps"] == b["env"]["initial_maps"]
    assert a["env"]["initial_brk"] == b["env"]["initial_brk"]
    assert a["results"][0]["ret"] == a["env"]["initial_map_count"]


# --- failures ----------------------------------------------------------------------------------------
def test_window_must_be_empty() -> None:
    scn = parse_scenario({"name": "occupied", "ops": [{"op": "vma_count"}]})
    b = K._build(scn)
    b.header.append(f"premap {0x500000000000 + 0x10000} 4096")
    with pytest.raises(KernelRunnerError, match="window not empty"):
        K._execute(b, ensure_runner(), 30)


def test_unresolvable_map_name() -> None:
    with pytest.raises(KernelRunnerError, match=r"op 1 \(munmap\).*no VMA named 'nosuch'"):
        run([{"op": "vma_count"}, {"op": "munmap", "addr": "map:nosuch+0", "len": "4K"}])


def test_runner_crash_is_reported() -> None:
    with pytest.raises(KernelRunnerError, match=r"killed by SIGSEGV during op 1 \(munmap\)"):
        run([{"op": "vma_count"}, {"op": "munmap", "addr": "mapend:[stack]-64K", "len": "64K"}],
            window=False)


def test_timeout_is_reported() -> None:
    scn = parse_scenario({"name": "slow", "ops": [
        {"op": "repeat", "count": 10**9, "step": 0, "body": {"op": "vma_count"}}]})
    t0 = time.monotonic()
    with pytest.raises(KernelRunnerError, match="timed out"):
        run_on_kernel(scn, timeout=0.5)
    assert time.monotonic() - t0 < 10


def test_malformed_output_is_reported() -> None:
    scn = parse_scenario({"name": "m", "ops": [{"op": "vma_count"}]})
    b = K._build(scn)
    good_head = "init brk 0x1000\ninit count 3\nready\n"
    cases = ["garbage\n", good_head + "ret zz 0\ndone\nend\n", good_head + "ret 0x1 0\n",
             good_head + "bogus 1\ndone\nend\n", good_head + "ret 0x3 0\ndone\nend\nextra\n"]
    for out in cases:
        with pytest.raises(KernelRunnerError):
            K._parse_output(b, out, "", 0, ensure_runner())
    ok = K._parse_output(b, good_head + "ret 0x3 0\ndone\nend\n", "", 0, ensure_runner())
    assert ok["results"][0]["ret"] == 3


def test_compile_failure_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("VMALAB_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "false")
    with pytest.raises(KernelRunnerError, match="cannot compile"):
        ensure_runner()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".runner-")]


def test_dynamic_fallback(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """When static linking fails, the helper is linked dynamically and still works."""
    cc = tmp_path / "cc-no-static"
    cc.write_text('#!/bin/sh\nfor a in "$@"; do [ "$a" = -static ] && exit 1; done\nexec cc "$@"\n')
    cc.chmod(0o755)
    monkeypatch.setenv("VMALAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CC", str(cc))
    path = ensure_runner()
    assert path.startswith(str(tmp_path / "cache"))
    r = run([mmap("base+0", "4K"), {"op": "touch", "addr": "base+0", "write": True}, {"op": "snapshot"}])
    assert r["env"]["runner_static"] is False
    assert r["results"][2]["vmas"][0]["rss_kb"] == 4


def test_mincore_over_a_huge_range_and_map_names() -> None:
    """mincore over more pages than the helper's buffer (it splits the call); a map: lookup by memfd name."""
    size = "2G+8K"
    r = run([
        mmap(None, size, prot="PROT_READ", flags="MAP_SHARED", fd=f"memfd:big:{size}"),
        {"op": "touch", "addr": "mapend:/memfd:big (deleted)-4K", "write": False},
        {"op": "mincore", "addr": "map:/memfd:big (deleted)+0", "len": size},
    ], rlimit_stack="8M")
    res = r["results"]
    assert int(res[0]["ret"], 16) + (2 << 30) + 0x2000 == 0x7FFFF7FF7000   # top-down, right below [vvar]
    vec = res[2]["vec"]
    assert len(vec) == (2 << 30) // 4096 + 2
    assert vec.count("1") >= 1 and vec[-1] == "1" and vec[0] == "0"


# --- format 1.1 on the live kernel -------------------------------------------------------------------------
def test_status_capdrop_and_fail_addr() -> None:
    """status gives the 15 memory lines of /proc/self/status; capdrop drops a capability for the rest of the
    run (env.caps: what the runner started with); a stopped repeat has fail_addr and "fail+X" uses it."""
    r = run([
        mmap("base+0", "64K"),
        {"op": "status"},
        {"op": "capdrop", "cap": "CAP_IPC_LOCK"},
        {"op": "setrlimit", "resource": "RLIMIT_MEMLOCK", "value": "8K"},
        {"op": "repeat", "count": 100, "step": "4K", "body": {"op": "mlock", "addr": "base+0", "len": "4K"}},
        {"op": "munlock", "addr": "fail-4K", "len": "4K"},
        {"op": "status"},
    ], timeout=30)
    res = r["results"]
    st = res[1]["status"]
    assert list(st) == ["VmPeak", "VmSize", "VmLck", "VmPin", "VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem",
                        "VmData", "VmStk", "VmExe", "VmLib", "VmPTE", "VmSwap"]
    assert (res[1]["ret"], res[1]["errno"], st["VmLck"], st["VmPin"]) == (0, None, 0, 0)
    assert (res[2]["ret"], res[2]["errno"]) == (0, None)
    assert (res[4]["ret"], res[4]["errno"], res[4]["failed_at"], res[4]["fail_addr"]) == (2, "ENOMEM", 2, "base+0x2000")
    assert res[6]["status"]["VmLck"] == 4 and res[6]["status"]["VmSize"] == st["VmSize"]
    assert "CAP_IPC_LOCK" in r["env"]["caps"] and r["env"]["vm_peak_kb"] >= st["VmSize"]


def test_fail_address_without_a_stopped_repeat_is_an_error() -> None:
    from vmalab.execute import ModelUnsupported, run_on_model
    scn = parse_scenario({"name": "nofail", "ops": [
        {"op": "repeat", "count": 2, "step": "4K", "body": {"op": "munmap", "addr": "base+0", "len": "4K"}},
        {"op": "munmap", "addr": "fail+0", "len": "4K"}]})
    with pytest.raises(KernelRunnerError, match=r"op 1 \(munmap\): fail\+X: the most recent repeat did not stop"):
        run_on_kernel(scn, timeout=30)
    with pytest.raises(ModelUnsupported, match=r"fail\+X: the most recent repeat did not stop"):
        run_on_model(scn)


def test_scenario_timeout_bounds_the_live_run_and_the_model() -> None:
    """The top-level "timeout" (format 1.1) is the live runner's limit, and the model honours it too."""
    from vmalab.execute import ModelLimitExceeded, run_on_model
    scn = parse_scenario({"name": "slow", "timeout": 0.5, "ops": [
        mmap("base+0", "4K"),
        {"op": "repeat", "count": 10**12, "step": 0,
         "body": {"op": "mprotect", "addr": "base+0", "len": "4K", "prot": "PROT_READ"}}]})
    t0 = time.monotonic()
    with pytest.raises(KernelRunnerError, match=r"timed out after 0\.5 s"):
        run_on_kernel(scn)
    with pytest.raises(ModelLimitExceeded, match=r"op 1 \(repeat\): the model run timed out after 0\.5 s"):
        run_on_model(scn)
    assert time.monotonic() - t0 < 20


# --- privileges ------------------------------------------------------------------------------------------
def test_unprivileged_runner_and_model_agree() -> None:
    """--unprivileged: the runner drops every capability before the first op (env.caps is empty), so
    RLIMIT_MEMLOCK and mmap_min_addr bind; the model started without capabilities gives the same result."""
    from vmalab.execute import run_on_model
    from vmalab.scenario import compare_results
    scn = parse_scenario({"name": "unpriv", "window": False, "rlimit_stack": "8M", "ops": [
        {"op": "setrlimit", "resource": "RLIMIT_MEMLOCK", "value": "16K"},
        mmap("map:[vvar]-1M", "64K"),
        {"op": "mlock", "addr": "map:[vvar]-1M", "len": "64K"},
        {"op": "mlock", "addr": "map:[vvar]-1M", "len": "8K"},
        mmap("abs:0x0", "4K", prot="PROT_READ"),
        {"op": "setrlimit", "resource": "RLIMIT_MEMLOCK", "value": "16K", "max": "32M"},
        {"op": "status"},
        {"op": "munmap", "addr": "map:[vvar]-1M", "len": "64K"}]})
    r = run_on_kernel(scn, unprivileged=True, timeout=30)
    assert r["env"]["caps"] == [] and r["env"]["unprivileged"] is True
    res = r["results"]
    assert [(x["ret"], x["errno"]) for x in res[2:6]] == [(-1, "ENOMEM"), (0, None), (-1, "EPERM"), (-1, "EPERM")]
    m = run_on_model(scn, initial_maps=r["env"]["initial_maps"], validate=True, caps=r["env"]["caps"])
    assert compare_results(r, m) == []
    root = run_on_model(scn, initial_maps=r["env"]["initial_maps"], validate=True)
    assert compare_results(r, root)  # the privileged model differs: privileges must match


def test_cli_diff_unprivileged(tmp_path: Any) -> None:
    from click.testing import CliRunner

    from vmalab.cli import main
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"name": "cli_unpriv", "ops": [
        {"op": "setrlimit", "resource": "RLIMIT_MEMLOCK", "value": "8K"}, mmap("base+0", "64K"),
        {"op": "mlock", "addr": "base+0", "len": "64K"}]}))
    out = CliRunner().invoke(main, ["diff", "--unprivileged", str(path)])
    assert out.exit_code == 0 and "agrees" in out.output, out.output
    out = CliRunner().invoke(main, ["run", "--unprivileged", "--json", str(path)])
    assert json.loads(out.output)["results"][2]["errno"] == "ENOMEM"
    out = CliRunner().invoke(main, ["run", "--json", str(path)])
    assert json.loads(out.output)["results"][2]["errno"] is None  # root: CAP_IPC_LOCK


# --- host safety -----------------------------------------------------------------------------------------
def _runner_children(pid: int) -> list[int]:
    """The live processes whose parent is ``pid`` (zombies count as gone)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(entry))
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_runner_dies_with_its_parent(tmp_path: Any) -> None:
    """SIGTERM to `vmalab run --kernel` (a CI timeout) must not leave the C runner running."""
    ensure_runner()
    path = tmp_path / "long.json"
    path.write_text(json.dumps({"name": "long", "ops": [
        mmap("base+0", "4K"),
        {"op": "repeat", "count": 10**15, "step": 0,
         "body": {"op": "mprotect", "addr": "base+0", "len": "4K", "prot": "PROT_READ"}}]}))
    proc = subprocess.Popen([sys.executable, "-m", "vmalab", "run", "--kernel", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        children: list[int] = []
        while not children and time.monotonic() < deadline:
            time.sleep(0.1)
            children = _runner_children(proc.pid)
        assert children, "the runner did not start"
        time.sleep(0.3)  # past the re-exec: the runner is in its op loop
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 5
        while any(_alive(c) for c in children) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(c) for c in children), "the runner outlived vmalab"
    finally:
        for c in _runner_children(proc.pid):
            os.kill(c, signal.SIGKILL)
        proc.kill()


def test_hwpoison_is_refused_before_the_runner_starts(tmp_path: Any) -> None:
    """MADV_HWPOISON / MADV_SOFT_OFFLINE poison real pages as root: `--kernel` refuses them (also as a
    number, also in a repeat body) with a one-line error naming the op, unless --allow-hwpoison.  Nothing
    here reaches the kernel."""
    from click.testing import CliRunner

    from vmalab.cli import main
    cases = [
        ({"op": "madvise", "addr": "base+0", "len": "4K", "advice": "MADV_HWPOISON"}, "op 1 (madvise): MADV_HWPOISON"),
        ({"op": "madvise", "addr": "base+0", "len": "4K", "advice": 101}, "op 1 (madvise): MADV_SOFT_OFFLINE"),
        ({"op": "repeat", "count": 2, "step": "4K",
          "body": {"op": "madvise", "addr": "base+0", "len": "4K", "advice": "MADV_HWPOISON"}}, "op 1 (madvise)"),
    ]
    for op, message in cases:
        raw = {"name": "poison", "ops": [mmap("base+0", "8K"), op]}
        with pytest.raises(KernelRunnerError, match=re.escape(message) + ".*--allow-hwpoison"):
            run_on_kernel(parse_scenario(raw))
        path = tmp_path / "poison.json"
        path.write_text(json.dumps(raw))
        out = CliRunner().invoke(main, ["run", "--kernel", str(path)])
        assert out.exit_code == 2 and len(out.output.strip().splitlines()) == 1 and message in out.output
    # with the option the program asks the runner to let it through (not run here)
    text = K.build_program(parse_scenario({"name": "p", "ops": [cases[0][0]]}), allow_hwpoison=True)
    assert "allow_hwpoison 1" in text and "madvise a87960930222080 4096 100" in text


def test_runner_itself_refuses_hwpoison() -> None:
    """The runner refuses the advice too when the program does not allow it (a second line of defence).
    The address is unmapped, so even a broken check could not poison anything."""
    program = "\n".join(["vmalab-program 1", "window 1", "allow_hwpoison 0", "unprivileged 0", "ops 1",
                         f"madvise a{0x500000000000 + (512 << 20)} 4096 100", "end", ""])
    proc = subprocess.run([ensure_runner(), str(os.getpid())], input=program.encode(), capture_output=True,
                          timeout=30)
    assert proc.returncode == 2
    assert b"err op 0: MADV_HWPOISON / MADV_SOFT_OFFLINE would damage" in proc.stdout


def test_host_limits() -> None:
    """What a scenario may take from the machine: file sizes are checked before the runner starts; the
    address space (RLIMIT_AS of the runner) and locked memory while it runs; each is a one-line error."""
    small = K.HostLimits(address_space=1536 << 20, locked=1 << 20, file_size=1 << 20)
    files = parse_scenario({"name": "files", "ops": [
        mmap("base+0", "4K", flags="MAP_SHARED|MAP_FIXED", fd="tmpfs:a:512K"),
        {"op": "ftruncate", "fd": "memfd:b:4K", "len": "768K"}]})
    with pytest.raises(KernelRunnerError, match=r"op 1 \(ftruncate\): the scenario's files would add up to 1 MiB"):
        run_on_kernel(files, limits=K.HostLimits(file_size=(1 << 20) - 1))
    asr = parse_scenario({"name": "as", "ops": [{"op": "setrlimit", "resource": "RLIMIT_AS", "value": "unlimited"}]})
    with pytest.raises(KernelRunnerError, match=r"op 0 \(setrlimit\): RLIMIT_AS value above the runner's own"):
        run_on_kernel(asr, limits=small)
    big = parse_scenario({"name": "big", "ops": [
        mmap("base+1G", "64M", flags=ANON_FIXED + "|MAP_NORESERVE"),
        mmap("base+2G", "1536M", flags=ANON_FIXED + "|MAP_NORESERVE")]})
    with pytest.raises(KernelRunnerError, match=r"op 1 \(mmap\): host limit: the address space would reach "
                       r"\d+ MiB, more than the runner allows \(VMALAB_LIMIT_AS = 1536 MiB\)"):
        run_on_kernel(big, limits=small, timeout=30)
    # a request the kernel refuses anyway (longer than the address space) is the kernel's answer
    huge = run([mmap(None, "200T", flags=ANON + "|MAP_NORESERVE")])
    assert (huge["results"][0]["ret"], huge["results"][0]["errno"]) == (-1, "ENOMEM")
    locked = parse_scenario({"name": "locked", "ops": [
        mmap("base+0", "4M"), {"op": "mlock", "addr": "base+0", "len": "512K"},
        {"op": "mlock", "addr": "base+0", "len": "4M"}]})
    with pytest.raises(KernelRunnerError, match=r"op 2 \(mlock\): host limit: locked memory would reach 4 MiB"):
        run_on_kernel(locked, limits=small, timeout=30)
    r = run_on_kernel(parse_scenario({"name": "ok", "ops": [mmap("base+0", "8K", flags=ANON_FIXED + "|MAP_LOCKED")]}),
                      limits=small, timeout=30)
    assert r["results"][0]["ret"] == "base+0x0"
    # under mlockall(MCL_FUTURE) a break past any user address fails in check_brk_limits(): the kernel's
    # answer, not a host limit (the fuzz campaign of docs/fidelity.md, case 93065)
    far = run_on_kernel(parse_scenario({"name": "far", "ops": [  # VmSize above the break, as in that case
        mmap("base+0", "64M", prot="PROT_NONE", flags=ANON_FIXED + "|MAP_NORESERVE"),
        {"op": "mlockall", "flags": "MCL_FUTURE"}, {"op": "brk", "addr": "abs:0xffffffffffffffff"},
        {"op": "brk", "addr": "brk+0"}]}), limits=small, timeout=30)
    assert far["results"][2]["ret"] == far["results"][3]["ret"]  # the break did not move
    near = parse_scenario({"name": "near", "ops": [{"op": "mlockall", "flags": "MCL_FUTURE"},
                                                   {"op": "brk", "addr": "brk+512M"}]})
    with pytest.raises(KernelRunnerError, match=r"op 1 \(brk\): host limit: locked memory would reach 512 MiB"):
        run_on_kernel(near, limits=small, timeout=30)


def test_host_limits_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VMALAB_LIMIT_AS", "2G")
    monkeypatch.setenv("VMALAB_LIMIT_LOCKED", "64M")
    assert K.HostLimits.from_env() == K.HostLimits(address_space=2 << 30, locked=64 << 20)
    monkeypatch.setenv("VMALAB_LIMIT_FILE", "lots")
    with pytest.raises(KernelRunnerError, match="VMALAB_LIMIT_FILE: cannot parse size"):
        K.HostLimits.from_env()
    monkeypatch.setenv("VMALAB_LIMIT_FILE", "0")
    with pytest.raises(KernelRunnerError, match="VMALAB_LIMIT_FILE: must be a positive size"):
        K.HostLimits.from_env()


def test_runner_binary_keeps_the_recorded_layout() -> None:
    """The helper's segments (program, RELRO, data, bss, [heap]) are where the "window": false recordings
    saw them (kernel.CFLAGS): a change to runner.c that moves them would break those recordings."""
    from pathlib import Path
    rec = json.loads((Path(__file__).parents[1] / "scenarios" / "placement_fresh_sizes_8m.kernel.json").read_text())

    def image(maps: str) -> list[tuple[str, ...]]:  # range, perms, offset and name (not the inode)
        return [(f[0], f[1], f[2], *f[5:]) for f in (ln.split() for ln in maps.splitlines())
                if int(f[0].split("-", 1)[0], 16) < 0x10000000]

    live = run([{"op": "vma_count"}], window=False, rlimit_stack="8M")
    assert image(live["env"]["initial_maps"]) == image(rec["env"]["initial_maps"])
