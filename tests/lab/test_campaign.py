"""Campaigns (vmalab.campaign): shards run as separate processes merge to the unsharded run case for case,
a shard killed midway resumes to the same result, divergences are kept and deduplicated, merges group by
kernel release, and bad input (shard specs, mixed campaigns, overlapping or missing ranges, malformed
files) is a one-line error that changes nothing."""

from __future__ import annotations

import copy
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import pytest

from vmalab import campaign as cp
from vmalab import vma as vma_mod
from vmalab.oracle.fuzz import FuzzConfig
from vmalab.scenario import parse_scenario

from ..conftest import needs_linux

OPS = 8


def vmalab(*args: str, cwd: str | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vmalab", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd)


def one_line_error(r: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit status 2, exactly one line on stderr starting with 'vmalab: error:', naming ``words``."""
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vmalab: error: "), r.stderr
    assert "Traceback" not in r.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


def fuzz_args(seed: int, cases: int, *extra: str) -> list[str]:
    return ["fuzz", "--seed", str(seed), "--cases", str(cases), "--ops", str(OPS), *extra]


# --- shard arithmetic -----------------------------------------------------------------------------------
def test_shard_ranges_partition_the_campaign() -> None:
    for start, cases in ((0, 0), (0, 1), (5, 7), (0, 100), (1000, 99_999)):
        for n in (1, 2, 3, 7, 16):
            parts = [cp.shard_range((start, start + cases), (i, n)) for i in range(n)]
            assert parts[0][0] == start and parts[-1][1] == start + cases
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:], strict=False))
            sizes = [b - a for a, b in parts]
            assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("spec", ["4/4", "x", "1/0", "-1/2", "0/2/3", "", "1 of 2"])
def test_bad_shard_spec(spec: str) -> None:
    with pytest.raises(cp.CampaignError, match="bad shard spec"):
        cp.parse_shard(spec)


def test_bad_shard_spec_on_the_command_line(tmp_path: Any) -> None:
    r = vmalab(*fuzz_args(0, 4, "--shard", "2/2"), cwd=str(tmp_path))
    one_line_error(r, "bad shard spec", "2/2")
    assert os.listdir(tmp_path) == []
    r = vmalab("explore", "devmem", "--shard", "0-1", cwd=str(tmp_path))
    one_line_error(r, "bad shard spec")


# --- two shards in separate processes == one unsharded run ----------------------------------------------
@needs_linux
def test_two_shard_processes_merge_to_the_unsharded_run(tmp_path: Any) -> None:
    seed, cases = 4242, 48
    shards = tmp_path / "shards"
    procs = [subprocess.Popen([sys.executable, "-m", "vmalab", *fuzz_args(seed, cases, "--jobs", "1", "--shard",
                                                                          f"{i}/2", "--out", str(tmp_path / "f"))],
                              cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = [p.communicate(timeout=180) for p in procs]
    for proc, (_out, err) in zip(procs, outs, strict=True):
        assert proc.returncode in (0, 1), err
        assert "Traceback" not in err
    os.makedirs(shards)
    for i in range(2):
        os.replace(tmp_path / f"fuzz-seed{seed}-shard{i}of2.json", shards / f"s{i}.json")
    whole = vmalab(*fuzz_args(seed, cases, "--jobs", "2", "--summary", "whole.json", "--out", str(tmp_path / "f")),
                   cwd=str(tmp_path))
    assert whole.returncode in (0, 1), whole.stderr
    ref = cp.load_summary(str(tmp_path / "whole.json"))
    parts = [cp.load_summary(str(shards / f"s{k}.json")) for k in range(2)]
    assert [tuple(p["range"]) for p in parts] == [(0, 24), (24, 48)]
    assert all(p["kernel"]["release"] == os.uname().release and p["complete"] for p in parts)

    r = vmalab("campaign", "merge", str(shards), "--json", "merged.json", "-o", "merged.md", cwd=str(tmp_path))
    assert r.returncode in (0, 1) and "Traceback" not in r.stderr, r.stderr
    with open(tmp_path / "merged.json", encoding="utf-8") as f:
        merged = json.load(f)
    # case for case: the union of the shards' digests is the unsharded run's
    digests: dict[int, str] = {}
    for part in parts:
        digests.update(cp.case_digests(part))
    assert digests == cp.case_digests(ref)
    assert sorted(digests) == list(range(cases))
    assert merged["totals"]["cases"] == cases
    for key in ("agree", "diverge", "errors"):
        assert merged["totals"][key] == ref["counts"][key], key
    assert [d["index"] for d in ref["divergences"]] == sorted(
        i for p in parts for i in (d["index"] for d in p["divergences"]))
    assert r.stdout.strip() == merged["summary"]
    assert (r.returncode == 1) == bool(ref["counts"]["diverge"] or ref["counts"]["errors"])
    with open(tmp_path / "merged.md", encoding="utf-8") as f:
        assert os.uname().release in f.read()


# --- kill a shard midway, resume ------------------------------------------------------------------------
def _done(path: str) -> int:
    n = 0
    if os.path.exists(path):
        try:
            n = sum(d is not None for d in cp.load_summary(path)["digests"])
        except cp.CampaignError:
            n = 0
    if os.path.exists(path + ".journal"):
        with open(path + ".journal", encoding="utf-8", errors="replace") as f:
            n += max(0, f.read().count("\n") - 1)
    return n


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@needs_linux
def test_sigkill_midway_then_resume_gives_the_same_summary(tmp_path: Any) -> None:
    seed, cases = 77, 300
    path = str(tmp_path / "k.json")
    args = [sys.executable, "-m", "vmalab", *fuzz_args(seed, cases, "--jobs", "2", "--summary", path, "--out",
                                                       str(tmp_path / "f"))]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while _done(path) < 20 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "the shard ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)  # the shard's own process only: its workers must follow it
        proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(proc.pid), "worker processes outlived the killed shard"
    finally:
        if _alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    done = _done(path)
    assert 0 < done < cases, done
    resumed = vmalab(*fuzz_args(seed, cases, "--jobs", "2", "--summary", path, "--out", str(tmp_path / "f")))
    assert resumed.returncode in (0, 1) and "Traceback" not in resumed.stderr, resumed.stderr
    assert "resuming" in resumed.stderr
    assert not os.path.exists(path + ".journal")
    whole = vmalab(*fuzz_args(seed, cases, "--jobs", "2", "--summary", str(tmp_path / "w.json"), "--out",
                              str(tmp_path / "g")))
    a, b = cp.load_summary(path), cp.load_summary(str(tmp_path / "w.json"))
    assert a["complete"] and b["complete"]
    assert a["timing"]["runs"] == 2 and b["timing"]["runs"] == 1
    assert cp.case_digests(a) == cp.case_digests(b) and len(cp.case_digests(a)) == cases
    for key in ("counts", "errors", "range", "seed", "config", "kernel"):
        assert a[key] == b[key], key
    assert [d["index"] for d in a["divergences"]] == [d["index"] for d in b["divergences"]]
    assert resumed.stdout.split(" in ")[0] == whole.stdout.split(" in ")[0]
    # a rerun of a complete shard runs nothing and changes nothing
    before = open(path, encoding="utf-8").read()
    again = vmalab(*fuzz_args(seed, cases, "--jobs", "2", "--summary", path, "--out", str(tmp_path / "f")))
    assert "nothing to run" in again.stderr
    assert open(path, encoding="utf-8").read() == before


# --- interrupted in-process, torn journal line ----------------------------------------------------------
class _Interrupt(Exception):
    pass


def _stop_after(n: int) -> Any:
    def backend(plan: cp.Plan, indices: Sequence[int], on_record: cp.OnRecord, *, jobs: int | None = None,
                address: str | None = None) -> None:
        for k, i in enumerate(indices):
            if k == n:
                raise _Interrupt
            on_record(cp.run_case_record(plan, i))
    return backend


@needs_linux
def test_interrupted_shard_with_a_torn_journal_line_resumes(tmp_path: Any) -> None:
    plan = cp.plan_fuzz(5, 40, FuzzConfig(ops=OPS), shard="1/2")
    path = str(tmp_path / "s.json")
    with pytest.raises(_Interrupt):
        cp.run_shard(plan, path, backend=_stop_after(7), jobs=1)
    assert sum(d is not None for d in cp.load_summary(path)["digests"]) == 7  # saved on the way out
    with pytest.raises(_Interrupt):
        cp.run_shard(plan, path, backend=_stop_after(4), jobs=1)
    with open(path + ".journal", "a", encoding="utf-8") as f:
        f.write('{"i": 39, "status": "agree", "dig')  # a line torn by a kill
    s = cp.run_shard(plan, path, jobs=1)
    ref = cp.run_shard(plan, None, jobs=2)
    assert cp.case_digests(s) == cp.case_digests(ref)
    assert sorted(cp.case_digests(s)) == list(range(20, 40))
    assert s["timing"]["runs"] == 3


# --- divergences: kept, written, deduplicated -----------------------------------------------------------
def _never_merge(*args: Any, **kwargs: Any) -> None:  # noqa: ARG001
    return None


@needs_linux
@pytest.mark.pure_only(reason="plants a wrong model by monkeypatching a vmalab.vma function")
def test_divergences_are_kept_and_deduplicated(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vma_mod, "vma_merge_new_range", _never_merge)
    config = FuzzConfig.from_filter(12, ["mmap,mprotect,touch"], shrink_steps=40, nowindow_ratio=0.0)
    seen: list[dict[str, Any]] = []
    paths = []
    for i in range(2):
        plan = cp.plan_fuzz(4, 8, config, shard=(i, 2))
        paths.append(str(tmp_path / f"d{i}.json"))
        cp.run_shard(plan, paths[-1], jobs=2 if i else 1, on_record=seen.append)
    sums = [cp.load_summary(p) for p in paths]
    divs = [d for s in sums for d in s["divergences"]]
    assert divs, "the never-merging model diverged on none of 8 cases"
    for d in divs:
        parse_scenario(d["shrunk"])
        assert d["first_diff"] and d["original_diff"] and d["name"] == f"fuzz_s4_c{d['index']}"
        assert len(d["shrunk"]["ops"]) <= d["nops"]
        assert "kernel" not in d and "model" not in d  # kept out of the summary ...
    live = [r for r in seen if r["status"] == "diverge"]
    assert {r["i"] for r in live} == {d["index"] for d in divs}
    assert all(r["kernel"] is not None and r["model"] is not None for r in live)  # ... not from on_record
    digests = {i: d for s in sums for i, d in cp.case_digests(s).items()}
    assert {i for i, d in digests.items() if d.startswith(("diverge:", "noise:"))} == {d["index"] for d in divs}
    rep = cp.merge_summaries(paths)
    rows = rep["divergences"]
    assert sum(r["cases"] for r in rows) == len(divs) == rep["totals"]["diverge"]
    assert len({r["key"] for r in rows}) == len(rows)
    assert {cp.diff_key(d["first_diff"]) for d in divs} == {r["key"] for r in rows}
    assert cp.report_failed(rep)
    md = cp.format_markdown(rep)
    assert rows[0]["example"]["name"] in md


@needs_linux
@pytest.mark.pure_only(reason="plants a wrong model by monkeypatching a vmalab.vma function")
def test_cli_shard_writes_failures_and_exits_1(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from vmalab.cli import main
    monkeypatch.setattr(vma_mod, "vma_merge_new_range", _never_merge)
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, ["fuzz", "--seed", "7", "--cases", "6", "--ops", "10", "--jobs", "1", "--shard",
                                  "0/1", "--out", "f", "--ops-filter", "mmap,mprotect,touch", "--no-shrink"])
    assert r.exit_code == 1, r.output
    s = cp.load_summary(str(tmp_path / "fuzz-seed7-shard0of1.json"))
    names = os.listdir(tmp_path / "f")
    assert s["divergences"] and all(f"{d['name']}.kernel.json" in names for d in s["divergences"])


def test_diff_key_ignores_op_numbers_and_addresses() -> None:
    a = "op 3 (mmap): ret expected '0x7f0000001000', got '0x7f0000003000'"
    b = "op 11 (mmap): ret expected '0x10000', got '0x12000'"
    c = "op 3 (mmap): errno expected 'EINVAL', got None"
    assert cp.diff_key(a) == cp.diff_key(b) != cp.diff_key(c)


# --- merging: synthetic summaries (no kernel needed) ----------------------------------------------------
def _summary(seed: int = 1, cases: int = 20, shard: tuple[int, int] = (0, 1), release: str | None = None,
             ops: int = OPS, start: int = 0, diverge: dict[int, str] | None = None) -> dict[str, Any]:
    plan = cp.plan_fuzz(seed, cases, FuzzConfig(ops=ops), start=start, shard=shard)
    if release is not None:
        plan = cp.Plan(**{**plan.__dict__, "kernel": {"release": release, "machine": "x86_64"}})
    s = cp.new_summary(plan)
    for i in plan.indices():
        diff = (diverge or {}).get(i)
        if diff is None:
            cp.add_record(s, {"i": i, "status": "agree", "digest": "agree", "seconds": 0.005})
        else:
            cp.add_record(s, {"i": i, "status": "diverge", "digest": "diverge:" + diff[:8], "seconds": 0.5,
                              "name": f"fuzz_s{seed}_c{i}", "nops": 8, "first_diff": diff, "original_diff": diff,
                              "noise": False, "shrunk": {"name": f"fuzz_s{seed}_c{i}", "ops": [{"op": "snapshot"}]},
                              "diffs": [diff], "shrink_steps": 3})
    cp.recount(s)
    return s


def _write(tmp_path: Any, name: str, s: dict[str, Any]) -> str:
    path = str(tmp_path / name)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(s, f)
    return path


def test_merge_groups_by_kernel_release(tmp_path: Any) -> None:
    d1 = "op 2 (mprotect): ret expected 0, got -12"
    d2 = "op 5 (mmap): vmas expected 3, got 4"
    old = [_summary(shard=(i, 2), release="6.18.44", diverge={3: d1}) for i in range(2)]
    new = [_summary(shard=(i, 2), release="6.19.1", diverge={3: d1, 15: d2}) for i in range(2)]
    paths = [_write(tmp_path, f"{r}-{i}.json", s) for r, group in (("a", old), ("b", new)) for i, s in enumerate(group)]
    rep = cp.merge_summaries(paths)
    assert [k["release"] for k in rep["kernels"]] == ["6.18.44", "6.19.1"]
    assert rep["totals"]["cases"] == 40 and rep["totals"]["diverge"] == 3
    rows = {r["key"]: r for r in rep["divergences"]}
    assert rows[cp.diff_key(d1)]["kernels"] == {"6.18.44": [3], "6.19.1": [3]}
    assert rows[cp.diff_key(d2)]["kernels"] == {"6.19.1": [15]}
    assert rep["between_releases"]["compared"] == 20 and rep["between_releases"]["differ"] == 1
    assert rep["between_releases"]["examples"][0]["index"] == 15
    md = cp.format_markdown(rep)
    assert "## Between releases" in md and "6.19.1: 1 case(s), e.g. 15" in md


def test_merge_refuses_mixed_campaigns(tmp_path: Any) -> None:
    a = _write(tmp_path, "a.json", _summary(shard=(0, 2)))
    cases = {
        "seed": (_summary(seed=2, shard=(1, 2)), "seed differs"),
        "config": (_summary(ops=9, shard=(1, 2)), "config differs (ops 9 vs 8)"),
    }
    other_version = _summary(shard=(1, 2))
    other_version["vmalab"] = {"version": "0.0.9", "commit": "0" * 40, "source": "x"}
    cases["version"] = (other_version, "vmalab differs")
    for name, (s, words) in cases.items():
        b = _write(tmp_path, f"{name}.json", s)
        r = vmalab("campaign", "merge", a, b)
        one_line_error(r, "different campaigns", words, "a.json")


def test_merge_refuses_overlapping_missing_incomplete_and_malformed(tmp_path: Any) -> None:
    s0, s1 = _summary(shard=(0, 2)), _summary(shard=(1, 2))
    a, b = _write(tmp_path, "a.json", s0), _write(tmp_path, "b.json", s1)
    c = _write(tmp_path, "c.json", _summary(shard=(1, 4)))   # [5, 10): inside a's [0, 10)
    one_line_error(vmalab("campaign", "merge", a, b, c), "overlap on [5, 10)", "c.json", "a.json")
    one_line_error(vmalab("campaign", "merge", a), "cases [10, 20) missing", "shard 1/2")
    one_line_error(vmalab("campaign", "merge", a, a), "given twice")
    half = copy.deepcopy(s1)
    half["digests"][3] = None
    cp.recount(half)
    one_line_error(vmalab("campaign", "merge", a, _write(tmp_path, "half.json", half)), "incomplete", "9 of 10")
    bad = {"invalid.json": "{", "list.json": "[1]", "digests.json": json.dumps({**s1, "digests": ["agree"]}),
           "range.json": json.dumps({**s1, "range": [10, 30]}),
           "version.json": json.dumps({**s1, "format_version": 99})}
    for name, text in bad.items():
        with open(tmp_path / name, "w", encoding="utf-8") as f:
            f.write(text)
        one_line_error(vmalab("campaign", "merge", a, str(tmp_path / name)), name)
    one_line_error(vmalab("campaign", "merge", str(tmp_path / "nothere.json")), "no such file")
    os.makedirs(tmp_path / "empty")
    one_line_error(vmalab("campaign", "merge", str(tmp_path / "empty")), "no campaign summaries")
    r = vmalab("campaign", "merge", a, b, "-o", str(tmp_path / "r.md"), "--json", str(tmp_path / "r.json"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "20 cases on 1 kernel: 20 agree, 0 diverge (0 distinct first differences)"


def test_summary_of_another_run_is_refused_and_left_alone(tmp_path: Any) -> None:
    path = _write(tmp_path, "s.json", _summary(seed=1, cases=20, shard=(0, 2)))
    before = open(path, encoding="utf-8").read()
    r = vmalab(*fuzz_args(2, 20, "--shard", "0/2", "--summary", path))
    one_line_error(r, "summary of another run", "seed")
    r = vmalab(*fuzz_args(1, 20, "--shard", "1/2", "--summary", path))
    one_line_error(r, "summary of another run", "shard")
    with open(tmp_path / "junk.json", "w", encoding="utf-8") as f:
        f.write("not json")
    one_line_error(vmalab(*fuzz_args(1, 20, "--summary", str(tmp_path / "junk.json"))), "junk.json")
    assert open(path, encoding="utf-8").read() == before
    assert sorted(os.listdir(tmp_path)) == ["junk.json", "s.json"]
    one_line_error(vmalab(*fuzz_args(1, 4, "--address", "127.0.0.1:1")), "--backend ray")


# --- explore --------------------------------------------------------------------------------------------
def test_explore_shards_equal_the_unsharded_report(tmp_path: Any) -> None:
    from vmalab.explore import explore, load_driver
    profiles = ["6.18", "7.3"]
    ref = explore(load_driver("devmem"), profiles).to_json()
    reports = []
    for i in range(2):
        plan = cp.plan_explore("devmem", profiles, shard=(i, 2))
        s = cp.run_shard(plan, str(tmp_path / f"e{i}.json"), jobs=1)
        reports.append(cp.report_from_summary(s).to_json())
    for key in ("findings", "kernel_behaviour"):
        assert [f for r in reports for f in r[key]] == ref[key], key
    assert sum(r["runs"] for r in reports) == ref["runs"]
    rep = cp.merge_summaries([str(tmp_path / "e0.json"), str(tmp_path / "e1.json")])
    assert rep["totals"]["cases"] == 2 and rep["totals"]["runs"] == ref["runs"]
    assert ref["kernel_behaviour"], "no rows to compare"
    r = vmalab("explore", "devmem", "--kernel-profile", "7.3", "--shard", "0/1", "--summary", str(tmp_path / "x.json"))
    plain = vmalab("explore", "devmem", "--kernel-profile", "7.3")
    assert r.returncode == plain.returncode and r.stdout == plain.stdout
    one_line_error(vmalab("explore", "nosuchdriver", "--shard", "0/2"), "nosuchdriver")


# --- progress -------------------------------------------------------------------------------------------
def test_progress_bar_on_a_tty_lines_otherwise() -> None:
    out = io.StringIO()
    p = cp.Progress("fuzz seed 1", 4, stream=out, every=0.1, tty=False)
    p.update({"status": "agree"})
    assert out.getvalue() == ""  # not before `every` seconds
    time.sleep(0.15)
    p.update({"status": "diverge"})
    line = out.getvalue()
    assert line.endswith("\n") and line.count("\n") == 1 and "2/4 (50%)" in line and "1 failing" in line
    tty = io.StringIO()
    p = cp.Progress("fuzz seed 1", 4, stream=tty, tty=True)
    for _ in range(4):
        p.update({"status": "agree"})
    p.finish()
    text = tty.getvalue()
    assert text.startswith("\r") and "[" + "#" * 24 + "]" in text and "\n" not in text


# --- a worker that dies, a case that raises -------------------------------------------------------------
@needs_linux
def test_a_dying_worker_costs_one_case_not_the_shard(monkeypatch: pytest.MonkeyPatch) -> None:
    """Case 5 kills its worker process every time, case 7 raises: both become cases that could not run,
    every other case is reported once."""
    from vmalab.oracle import fuzz
    parent = os.getpid()

    def fake_run_case(seed: int, index: int, config: Any, kinds: Any = None) -> fuzz.CaseOutcome:
        if index == 5 and os.getpid() != parent:
            os._exit(9)
        if index == 7:
            raise RuntimeError("generator bug")
        return fuzz.CaseOutcome(index, "agree", f"fuzz_s{seed}_c{index}", 1)

    monkeypatch.setattr(fuzz, "run_case", fake_run_case)
    plan = cp.plan_fuzz(3, 40, FuzzConfig(ops=OPS))
    got: list[dict[str, Any]] = []
    cp.run_cases_local(plan, list(plan.indices()), got.append, jobs=2)
    assert sorted(r["i"] for r in got) == list(range(40))
    bad = {r["i"]: r for r in got if r["status"] != "agree"}
    assert set(bad) == {5, 7}
    assert "died" in bad[5]["error"] and "RuntimeError: generator bug" in bad[7]["error"]
