"""The command line: every command works, bad input gives a one-line error and a non-zero exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ..conftest import SCENARIO_DIR, needs_linux

GOOD = {"name": "cli_good", "ops": [
    {"op": "mmap", "addr": "base+0", "len": "8K", "prot": "PROT_READ|PROT_WRITE",
     "flags": "MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED"},
    {"op": "mprotect", "addr": "base+4K", "len": "4K", "prot": "PROT_READ"},
    {"op": "snapshot"}]}


def vmalab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vmalab", *args], capture_output=True, text=True, timeout=120)


def write(tmp_path: object, obj: object, name: str = "s.json") -> str:
    p = os.path.join(str(tmp_path), name)
    with open(p, "w", encoding="utf-8") as f:
        f.write(obj if isinstance(obj, str) else json.dumps(obj))
    return p


def test_demo_runs() -> None:
    r = vmalab("demo")
    assert r.returncode == 0, r.stderr
    assert "EEXIST" in r.stdout and "0x7ffff7ff6000" in r.stdout


def test_run_json_is_the_result_format(tmp_path: object) -> None:
    r = vmalab("run", "--json", write(tmp_path, GOOD))
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert [x["op"] for x in res["results"]] == ["mmap", "mprotect", "snapshot"]
    assert len(res["results"][2]["vmas"]) == 2


def test_run_human_and_maps(tmp_path: object) -> None:
    p = write(tmp_path, GOOD)
    r = vmalab("run", "--trace", p)
    assert r.returncode == 0 and "final /proc/self/maps" in r.stdout and "split" in r.stdout
    r = vmalab("maps", p)
    assert r.returncode == 0 and r.stdout.splitlines()[-1].endswith("[vsyscall]")
    assert "500000000000-500000001000 rw-p" in r.stdout


@pytest.mark.parametrize(("content", "needle"), [
    ("{not json", "not valid JSON"),
    ({"name": "x", "ops": [{"op": "explode"}]}, "unknown op"),
    ({"name": "x", "ops": [{"op": "munmap", "addr": "base+0"}]}, "needs field 'len'"),
    ({"name": "x", "ops": [{"op": "munmap", "addr": "base+0", "len": "4K", "bogus": 1}]}, "no field 'bogus'"),
    ({"name": "x", "ops": [{"op": "mprotect", "addr": "base+0", "len": "4K", "prot": "PROT_FLY"}]},
     "unknown flag"),
    ({"name": "x", "ops": [{"op": "munmap", "addr": "base+zz", "len": "4K"}]}, "cannot parse"),
    ({"name": "x", "ops": [{"op": "mmap", "addr": None, "len": "4K", "prot": 1, "flags": 2, "fd": "pipe:x"}]},
     "unknown fd kind"),
    ([1, 2], "must be a JSON object"),
])
def test_bad_scenarios_give_one_line_errors(tmp_path: object, content: object, needle: str) -> None:
    r = vmalab("run", write(tmp_path, content))
    assert r.returncode == 2
    assert needle in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_missing_file_and_unsupported_op(tmp_path: object) -> None:
    r = vmalab("run", os.path.join(str(tmp_path), "nope.json"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    r = vmalab("run", write(tmp_path, {"name": "x", "ops": [
        {"op": "mmap", "addr": None, "len": "4K", "prot": 1, "flags": "MAP_SHARED", "fd": "dev:nosuch"}]}))
    assert r.returncode == 2 and "unknown built-in driver 'nosuch'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@needs_linux
def test_run_kernel_and_diff(tmp_path: object) -> None:
    p = write(tmp_path, GOOD)
    r = vmalab("run", "--kernel", "--json", p)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["env"]["kernel"] and len(res["results"][2]["vmas"]) == 2
    r = vmalab("diff", p)
    assert r.returncode == 0 and "agrees" in r.stdout


def test_diff_reports_divergence_against_a_recording(tmp_path: object) -> None:
    p = write(tmp_path, GOOD)
    fake = json.loads(vmalab("run", "--json", p).stdout)
    fake["results"][1]["errno"] = "ENOMEM"
    fake["results"][1]["ret"] = -1
    q = write(tmp_path, fake, "fake.kernel.json")
    r = vmalab("diff", p, "--expected", q)
    assert r.returncode == 1 and "DIVERGES" in r.stdout and "ENOMEM" in r.stdout
    assert "first divergence: op 1 (mprotect" in r.stdout and "kernel (expected)" in r.stdout


def test_all_profiles_and_profiles_list() -> None:
    path = os.path.join(SCENARIO_DIR, "driver_devmem_remap.json")
    r = vmalab("run", "--all-profiles", path)
    assert r.returncode == 0, r.stderr
    assert "== kernel profile 7.2" in r.stdout and "not available under: 6.18" in r.stdout
    r = vmalab("profiles")
    assert r.returncode == 0 and "seed-v3" in r.stdout and "finish" in r.stdout
    r = vmalab("run", "--kernel-profile", "9.9", path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
