"""The command line: every command works, bad input gives a one-line error and a non-zero exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

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


# --- bad input: one-line errors naming the file and the op (issue 10) --------------------------------------
def cli(*args: str) -> Any:
    """Run the CLI in-process (click's CliRunner); the result has exit_code, stdout and stderr."""
    from click.testing import CliRunner

    from vmalab.cli import main
    return CliRunner().invoke(main, list(args))


def one_line_error(r: Any, *needles: str) -> None:
    assert r.exit_code == 2, (r.exit_code, r.stdout, r.stderr, r.exception)
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vmalab: error: "), r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


MALFORMED_FILES = {
    "json_int_of_5000_digits": ('{"name": "x", "ops": [{"op": "munmap", "addr": "base+0", "len": ' + "1" * 5000
                                + "}]}", "op 0: munmap.len"),
    "string_of_5000_digits": (json.dumps({"name": "x", "ops": [{"op": "munmap", "addr": "base+0", "len": "1" * 5000}]}),
                              "op 0: munmap.len"),
    "deep_nesting": ('{"name": "x", "ops": [' + "[" * 100000 + "]" * 100000 + "]}", "nested too deeply"),
    "leading_zero": (json.dumps({"name": "x", "ops": [{"op": "munmap", "addr": "base+0", "len": "08"}]}),
                     "op 0: munmap.len: cannot parse size '08'"),
    "list_as_op_name": (json.dumps({"name": "x", "ops": [{"op": ["munmap"], "addr": "base+0", "len": "4K"}]}),
                        "op 0: unknown op ['munmap']"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_FILES))
def test_malformed_scenario_files_give_one_line_errors(tmp_path: Any, case: str) -> None:
    text, needle = MALFORMED_FILES[case]
    p = write(tmp_path, text)
    for cmd in (["run"], ["maps"], ["diff", "--expected", p]):
        one_line_error(cli(*cmd, p), p + ": ", needle)


ESCAPES = ('{"name": "n\\ud800\\u001b[31mRED\\u009b", "ops": [{"op": "vma_count", "note": "\\udc80\\u001b]0;t\\u0007"},'
           ' {"op": "munmap", "addr": "base+0", "len": "4K", "note": "tab\\there\\u202e"}]}')


def test_run_escapes_control_characters_and_lone_surrogates(tmp_path: Any) -> None:
    """``name`` and ``note`` are printed escaped: no terminal escape sequence, no lone surrogate reaches the
    terminal (a real process's stdout, not CliRunner's)."""
    r = vmalab("run", write(tmp_path, ESCAPES))
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stdout and "\x07" not in r.stdout and "\x9b" not in r.stdout and "\u202e" not in r.stdout
    assert "# n\\ud800\\x1b[31mRED\\x9b " in r.stdout
    assert "# \\udc80\\x1b]0;t\\x07" in r.stdout and "tab\\x09here\\u202e" in r.stdout
    r = cli("run", write(tmp_path, ESCAPES))
    assert r.exit_code == 0 and r.exception is None, repr(r.exception)
    r = cli("run", "--json", write(tmp_path, ESCAPES))
    assert r.exit_code == 0 and json.loads(r.stdout)["name"] == "n\ud800\x1b[31mRED\x9b"


def test_errors_escape_the_path_and_values(tmp_path: Any) -> None:
    bad = json.dumps({"name": "x", "ops": [{"op": "munmap", "addr": "base+0", "len": "\x1b[2J"}]})
    r = cli("run", write(tmp_path, bad, "evil\x1b[2J.json"))
    one_line_error(r, "evil\\x1b[2J.json: op 0: munmap.len")
    assert "\x1b" not in r.stderr


def test_one_vma_is_singular(tmp_path: Any) -> None:
    p = write(tmp_path, {"name": "x", "ops": [
        {"op": "mmap", "addr": "base+0", "len": "4K", "prot": 3, "flags": "MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED"},
        {"op": "snapshot"}, {"op": "munmap", "addr": "base+0", "len": "4K"}, {"op": "snapshot"}]})
    out = cli("run", p).stdout
    assert " -> 1 VMA\n" in out and " -> 0 VMAs\n" in out and "1 VMAs" not in out


def test_model_errors_name_the_file_and_the_op(tmp_path: Any) -> None:
    p = write(tmp_path, {"name": "x", "ops": [{"op": "vma_count"},
                                              {"op": "munmap", "addr": "map:nosuch", "len": "4K"}]})
    for cmd in ("run", "maps"):
        one_line_error(cli(cmd, p), p + ": op 1 (munmap): ", "no VMA named 'nosuch'")


@pytest.mark.parametrize(("args", "needle"), [
    (["run", "--kernel", "--all-profiles"], "--kernel cannot be combined with --all-profiles"),
    (["run", "--kernel", "--kernel-profile", "7.1"], "--kernel cannot be combined with --kernel-profile"),
    (["run", "--all-profiles", "--kernel-profile", "7.1"], "--all-profiles cannot be combined with --kernel-profile"),
    (["run", "--json", "--trace"], "--json cannot be combined with --trace"),
    (["run", "--all-profiles", "--json", "--trace"], "--json cannot be combined with --trace"),
])
def test_conflicting_options_are_refused(tmp_path: Any, args: list[str], needle: str) -> None:
    one_line_error(cli(*args, write(tmp_path, GOOD)), needle)


def test_explore_refuses_all_profiles_with_kernel_profile() -> None:
    one_line_error(cli("explore", "devmem", "--all-profiles", "--kernel-profile", "7.1"),
                   "--all-profiles cannot be combined with --kernel-profile")


def _recording_of_good(tmp_path: Any) -> dict[str, Any]:
    res: dict[str, Any] = json.loads(cli("run", "--json", write(tmp_path, GOOD)).stdout)
    return res


@pytest.mark.parametrize(("expected", "needle"), [
    (GOOD, "not a recorded result: no 'results' (this is a scenario"),
    ([1, 2], "not a recorded result: a JSON list"),
    ("unknown_op", "results[1]: unknown op 'explode'"),
    ("results_not_a_list", "'results' must be a list"),
    ("vma_not_an_object", "results[2].vmas: must be a list of VMA objects"),
    ("args_not_an_object", "results[0]: 'args' must be an object"),
    ("initial_maps_not_text", "'initial_maps' is a text"),
    ("initial_maps_garbage", "initial maps: maps line 1: cannot parse"),
    ("{bad json", "not valid JSON"),
])
def test_diff_expected_bad_recordings(tmp_path: Any, expected: Any, needle: str) -> None:
    p = write(tmp_path, GOOD)
    rec = _recording_of_good(tmp_path)
    if expected == "unknown_op":
        rec["results"][1]["op"] = "explode"
    elif expected == "results_not_a_list":
        rec["results"] = 5
    elif expected == "vma_not_an_object":
        rec["results"][2]["vmas"] = [1]
    elif expected == "args_not_an_object":
        rec["results"][0]["args"] = [1]
    elif expected == "initial_maps_not_text":
        rec["env"]["initial_maps"] = 5
    elif expected == "initial_maps_garbage":
        rec["env"]["initial_maps"] = "garbage\n"
    else:
        rec = expected
    q = write(tmp_path, rec, "rec.kernel.json")
    r = cli("diff", p, "--expected", q)
    one_line_error(r, needle)
    if "initial maps" not in needle:
        assert q + ": " in r.stderr
    else:
        assert p + ": " in r.stderr


def test_diff_agreement_line_counts_ops(tmp_path: Any) -> None:
    one = {"name": "one", "ops": [{"op": "vma_count"}]}
    p = write(tmp_path, one)
    q = write(tmp_path, json.loads(cli("run", "--json", p).stdout), "one.kernel.json")
    r = cli("diff", p, "--expected", q)
    assert r.exit_code == 0 and "one: agrees (1 op)" in r.stdout


def test_model_limits_are_one_line_errors(tmp_path: Any) -> None:
    """A 200-byte file that would make the model populate 64 GiB, and a repeat that never stops: each is
    stopped by a limit of the run, with a one-line error naming the file and the op."""
    populate = write(tmp_path, {"name": "pop", "ops": [
        {"op": "mmap", "addr": None, "len": "64G", "prot": "PROT_READ|PROT_WRITE",
         "flags": "MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE|MAP_POPULATE"}]}, "pop.json")
    one_line_error(cli("run", populate), populate + ": op 0 (mmap): ", "more than 262144 pages (--max-resident)")
    one_line_error(cli("run", "--max-resident", "100", populate), "more than 100 pages")
    forever = write(tmp_path, {"name": "forever", "ops": [
        {"op": "mmap", "addr": "base+0", "len": "4K", "prot": 1, "flags": "MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED"},
        {"op": "repeat", "count": (1 << 64) - 1, "step": 0,
         "body": {"op": "mprotect", "addr": "base+0", "len": "4K", "prot": "PROT_READ"}}]}, "forever.json")
    one_line_error(cli("run", "--max-iterations", "1000", forever), forever + ": op 1 (repeat): ",
                   "more than 1000 repeat iterations in one run (--max-iterations)")
    one_line_error(cli("maps", "--max-iterations", "10", forever), "op 1 (repeat)")


@needs_linux
def test_record_a_glob_skips_recordings_and_model_only_and_goes_on(tmp_path: Any) -> None:
    """``vmalab record DIR/*.json``: recordings and model-only scenarios are skipped with a note, an error
    names its file and the next file is still recorded; the exit status says something failed.  (Tmp copies:
    the corpus is never re-recorded by a test.)"""
    import shutil
    d = str(tmp_path)
    for name in ("merge_anon_fill_gap_3way.json", "merge_anon_fill_gap_3way.kernel.json",
                 "driver_devmem_remap.json"):
        shutil.copy(os.path.join(SCENARIO_DIR, name), d)
    write(tmp_path, {"name": "x", "ops": [{"op": "munmap", "addr": "base+0", "len": "08"}]}, "b_broken.json")
    write(tmp_path, GOOD, "z_good.json")
    os.remove(os.path.join(d, "merge_anon_fill_gap_3way.kernel.json"))
    shutil.copy(os.path.join(SCENARIO_DIR, "merge_anon_fill_gap_3way.kernel.json"), os.path.join(d, "a.kernel.json"))
    paths = sorted(os.path.join(d, f) for f in os.listdir(d))
    r = cli("record", *paths)
    assert r.exit_code == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert f"skipped {os.path.join(d, 'a.kernel.json')}: a recording" in r.stdout
    assert f"skipped {os.path.join(d, 'driver_devmem_remap.json')}: model-only" in r.stdout
    assert f"vmalab: error: {os.path.join(d, 'b_broken.json')}: op 0: munmap.len" in r.stderr
    assert os.path.exists(os.path.join(d, "merge_anon_fill_gap_3way.kernel.json"))
    assert os.path.exists(os.path.join(d, "z_good.kernel.json"))
    assert not os.path.exists(os.path.join(d, "driver_devmem_remap.kernel.json"))
    assert "1 of 5 files failed" in r.stderr
