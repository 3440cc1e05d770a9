"""The terminal view: ``vmalab maps --color[=WHEN] [--gaps]`` (pwndbg's vmmap colours and gaps) and
``vmalab run --step`` (each op's maps difference).

What is expected is derived independently of ``vmalab.termview``: colours from the permissions and names
the maps line itself shows (pwndbg's rules) plus the few VMAs whose kind the scenario below plants; gaps
from the addresses of the plain maps text; step differences from separate runs of each scenario prefix.
"""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from typing import Any

import pytest

from vmalab.execute import ModelRunner
from vmalab.mm import MM
from vmalab.procfs import maps as maps_text
from vmalab.scenario import load_scenario, parse_scenario
from vmalab.termview import KINDS, run_steps, vma_kind

from ..conftest import SCENARIO_DIR

RW, R, RX, RWX, NONE = "PROT_READ|PROT_WRITE", "PROT_READ", "PROT_READ|PROT_EXEC", "PROT_READ|PROT_WRITE|PROT_EXEC", \
    "PROT_NONE"
ANON = "MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED"


def _mmap(addr: str, length: str, prot: str, flags: str = ANON, fd: str = "none", offset: Any = 0) -> dict:
    return {"op": "mmap", "addr": addr, "len": length, "prot": prot, "flags": flags, "fd": fd, "offset": offset}


#: one VMA of every kind, each with a hole after it (7.1: the devmem driver is an mmap_prepare user)
KINDS_SCENARIO = {"name": "every_kind", "kernel_profile": "7.1", "ops": [
    _mmap("base+0K", "8K", RW),                       # data
    _mmap("base+16K", "4K", R),                       # rodata
    _mmap("base+32K", "4K", RX),                      # code
    _mmap("base+48K", "4K", RWX),                     # code, W+X
    _mmap("base+64K", "4K", NONE),                    # guard
    _mmap("base+80K", "8K", RW, "MAP_SHARED|MAP_FIXED", "dev:devmem", "0xfed00000"),  # io (PFN map)
    _mmap("base+128K", "8K", RW, ANON + "|MAP_GROWSDOWN"),  # stack (growsdown)
    {"op": "snapshot"}]}

#: what the scenario planted, by start address (the maps text alone cannot tell io and growsdown apart)
PLANTED = {"500000014000": "32", "500000020000": "33"}
SGR_RE = re.compile(r"\x1b\[([0-9;]*)m")


def vmalab(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vmalab", *args], capture_output=True, text=True, timeout=120,
                          env=env)


def in_pty(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run vmalab with stdout on a pseudo-terminal; its output with the terminal's CRLF undone."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "vmalab", *args], stdout=slave, stderr=subprocess.DEVNULL,
                            env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the other side closed
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=120), b"".join(chunks).decode().replace("\r\n", "\n")


def write(tmp_path: Any, obj: Any, name: str = "s.json") -> str:
    p = os.path.join(str(tmp_path), name)
    with open(p, "w", encoding="utf-8") as f:
        f.write(obj if isinstance(obj, str) else json.dumps(obj))
    return p


def expected_sgr(line: str) -> str:
    """pwndbg's colour of a maps line, from what the line shows (and the planted kinds)."""
    start = line.split("-", 1)[0]
    if start in PLANTED:
        return PLANTED[start]
    perms, name = line.split()[1], line[73:].strip() if len(line) > 73 else ""
    if perms[:3] == "---":
        return "36"
    if name == "[stack]":
        return "33"
    if name == "[heap]":
        return "34"
    if "x" in perms:
        return "31;4" if "w" in perms else "31"
    return "35" if "w" in perms else ""


def split_sgr(line: str) -> tuple[str, str]:
    """(SGR parameters, text) of one output line coloured as a whole ('' for a plain line)."""
    m = re.fullmatch(r"\x1b\[([0-9;]*)m(.*)\x1b\[0m", line)
    if m:
        return m.group(1), m.group(2)
    assert "\x1b" not in line, repr(line)
    return "", line


def test_colours_per_kind(tmp_path: Any) -> None:
    p = write(tmp_path, KINDS_SCENARIO)
    plain = vmalab("maps", p)
    r = vmalab("maps", "--color=always", p)
    assert r.returncode == 0 and plain.returncode == 0, r.stderr + plain.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("LEGEND: ")
    seen = set()
    body = lines[1:]
    assert [split_sgr(ln)[1] for ln in body] == plain.stdout.splitlines()  # the same text, only coloured
    for ln in body:
        params, text = split_sgr(ln)
        assert params == expected_sgr(text), text
        seen.add(params)
    assert {"31", "31;4", "32", "33", "34", "35", "36", ""} <= seen  # every kind occurs in the scenario


def test_vma_kind_of_every_kind() -> None:
    runner = ModelRunner(parse_scenario(KINDS_SCENARIO))
    runner.run()
    mm = runner.mm
    by_start = {v.vm_start: vma_kind(mm, v) for v in mm.tree}
    base = 0x500000000000
    assert [by_start[base + k * 1024] for k in (0, 16, 32, 48, 64, 80, 128)] == \
        ["data", "rodata", "code", "code", "guard", "io", "stack"]
    names = {vma_kind(mm, v) for v in mm.tree}
    assert {"heap", "stack"} <= names and names <= set(KINDS)
    assert by_start[0x7ffff7ff7000] == "rodata"  # [vvar]: VM_PFNMAP|VM_IO but the kernel's, not a device's


def test_legend_names_every_kind_in_its_colour(tmp_path: Any) -> None:
    r = vmalab("maps", "--color=always", write(tmp_path, KINDS_SCENARIO))
    legend = r.stdout.splitlines()[0]
    items = legend.removeprefix("LEGEND: ").split(" | ")
    got = {SGR_RE.sub("", it): (SGR_RE.match(it).group(1) if SGR_RE.match(it) else "") for it in items}
    assert got == {"STACK": "33", "HEAP": "34", "CODE": "31", "DATA": "35", "WX": "31;4", "RODATA": "",
                   "GUARD": "36", "IO": "32"}


def _holes(maps: str) -> list[tuple[int, int, str]]:
    """The holes between neighbouring lines of a maps text (not the one before [vsyscall]), each with the
    name of the VMA above it."""
    rows = []
    for ln in maps.splitlines():
        a, b = ln.split()[0].split("-")
        rows.append((int(a, 16), int(b, 16), ln[73:].strip() if len(ln) > 73 else ""))
    return [(lo[1], hi[0], hi[2]) for lo, hi in zip(rows[:-2], rows[1:-1], strict=True) if hi[0] > lo[1]]


@pytest.mark.parametrize("scenario", [None, "merge_anon_fill_gap_3way", "mremap_move_middle_splits_source",
                                      "placement_below_growsdown_gap"])
def test_gaps_are_the_real_holes(tmp_path: Any, scenario: str | None) -> None:
    args = [os.path.join(SCENARIO_DIR, scenario + ".json")] if scenario else [write(tmp_path, KINDS_SCENARIO)]
    plain = vmalab("maps", *args)
    r = vmalab("maps", "--gaps", *args)
    assert r.returncode == 0, r.stderr
    holes = _holes(plain.stdout)
    out = r.stdout.splitlines()
    assert [ln for ln in out if not ln.startswith("    ~~ gap ")] == plain.stdout.splitlines()
    got = []
    for i, ln in enumerate(out):
        m = re.match(r"    ~~ gap ([0-9a-f]+)-([0-9a-f]+) (0x[0-9a-f]+) \(([^)]*)\)(.*)", ln)
        if m:
            lo, hi, size = int(m.group(1), 16), int(m.group(2), 16), int(m.group(3), 16)
            assert size == hi - lo
            assert int(out[i - 1].split("-")[1].split()[0], 16) == lo  # right below the VMA it follows
            assert int(out[i + 1].split("-")[0], 16) == hi
            got.append((lo, hi, m.group(4), m.group(5)))
    assert [(lo, hi) for lo, hi, _, _ in got] == [(lo, hi) for lo, hi, _ in holes]
    for (lo, hi, human, notes), (_, _, above) in zip(got, holes, strict=True):
        if hi - lo == 8192:
            assert human == "8 KiB"
        if above == "[stack]":  # 6.18's stack_guard_gap: 256 pages
            assert "stack guard gap 1 MiB below [stack]" in notes


def test_gaps_note_a_planted_growsdown_gap(tmp_path: Any) -> None:
    r = vmalab("maps", "--gaps", write(tmp_path, KINDS_SCENARIO))
    (line,) = [ln for ln in r.stdout.splitlines() if ln.startswith("    ~~ gap 500000016000-500000020000")]
    assert "0xa000 (40 KiB); stack guard gap 40 KiB below the growsdown VMA" in line


def test_plain_when_not_a_tty(tmp_path: Any) -> None:
    p = write(tmp_path, KINDS_SCENARIO)
    plain = vmalab("maps", p)
    for args in (["--color", p], [p, "--color"], ["--color=auto", p], ["--color=never", p], ["--color", "never", p]):
        r = vmalab("maps", *args)
        assert r.returncode == 0, r.stderr
        assert r.stdout == plain.stdout, args  # no legend, no escapes: byte for byte the maps text
    code, out = in_pty("maps", "--color", p)
    assert code == 0 and out.startswith("LEGEND: ") and "\x1b[33m" in out
    env = dict(os.environ, NO_COLOR="1")
    code, out = in_pty("maps", "--color", p, env=env)
    assert code == 0 and out == plain.stdout
    code, out = in_pty("maps", "--color=always", p, env=env)
    assert "\x1b[" in out


def test_a_hostile_file_name_stays_printable(tmp_path: Any) -> None:
    """A live process maps a file whose name holds an escape sequence: printed escaped, even in colour."""
    path = os.path.join(str(tmp_path), "a\x1b[2Jb")
    with open(path, "wb") as f:
        f.write(b"x" * 4096)
    child = subprocess.Popen([sys.executable, "-c", "import mmap, sys\nf = open(sys.argv[1], 'rb')\n"
                              "m = mmap.mmap(f.fileno(), 4096, prot=mmap.PROT_READ)\nprint('ready', flush=True)\n"
                              "sys.stdin.read()", path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        r = vmalab("maps", "--color=always", "--gaps", "--pid", str(child.pid))
    finally:
        child.kill()
        child.wait()
    assert r.returncode == 0, r.stderr
    assert "\x1b[2J" not in r.stdout and "a\\x1b[2Jb" in r.stdout


# ---------------------------------------------------------------------------------------------------------
# --step
STEP_SCENARIOS = ["merge_anon_fill_gap_3way", "split_mprotect_middle", "mremap_move_middle_splits_source",
                  "fork_parent_changes_after_fork", "madvise_guard_basic", "brk_grow_shrink",
                  "fixed_replace_different_kind"]


def parse_steps(text: str) -> list[tuple[str, list[str], list[str]]]:
    """(head, removed, added) per step of ``vmalab run --step`` output."""
    steps: list[tuple[str, list[str], list[str]]] = []
    for ln in text.splitlines()[1:]:
        if ln.startswith("#"):
            steps.append((ln, [], []))
        elif ln.startswith("  - "):
            steps[-1][1].append(ln[4:])
        elif ln.startswith("  + "):
            steps[-1][2].append(ln[4:])
        else:
            assert ln in ("    (maps unchanged)",) or ln.startswith("    trace: "), ln
    return steps


def prefix_maps(raw: dict, k: int) -> str:
    """/proc/self/maps after the first k ops, from a separate run of just those ops."""
    runner = ModelRunner(parse_scenario({**raw, "ops": raw["ops"][:k]}))
    runner.run()
    return maps_text(runner.mm)


@pytest.mark.parametrize("name", STEP_SCENARIOS)
def test_step_differences_are_the_maps_differences(name: str) -> None:
    path = os.path.join(SCENARIO_DIR, name + ".json")
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    out: list[str] = []
    run_steps(load_scenario(path), out.append)
    steps = parse_steps("\n".join(out))
    assert len(steps) == len(raw["ops"])
    before = prefix_maps(raw, 0).splitlines()
    changed = 0
    for k, (head, removed, added) in enumerate(steps, start=1):
        assert head.startswith(f"#{k - 1} {raw['ops'][k - 1]['op']} ")
        after = prefix_maps(raw, k).splitlines()
        assert removed == [ln for ln in before if ln not in after], head
        assert added == [ln for ln in after if ln not in before], head
        # applying the difference to the old maps gives the new maps
        assert sorted((set(before) - set(removed)) | set(added)) == sorted(after)
        changed += bool(removed or added)
        before = after
    assert changed >= 1


def test_step_cli_output_and_colour(tmp_path: Any) -> None:
    path = os.path.join(SCENARIO_DIR, "split_mprotect_middle.json")
    r = vmalab("run", "--step", path)
    assert r.returncode == 0, r.stderr
    out: list[str] = []
    run_steps(load_scenario(path), out.append)
    assert r.stdout == "\n".join(out) + "\n"  # not a terminal: plain
    assert "\x1b" not in r.stdout
    assert "  - 500000000000-500000006000 rw-p" in r.stdout and "  + 500000002000-500000004000 r--p" in r.stdout
    code, tty = in_pty("run", "--step", path)
    assert code == 0
    assert "\x1b[31m  - 500000000000-500000006000 rw-p" in tty and "\x1b[32m  + 500000002000-500000004000 r--p" in tty
    r = vmalab("run", "--step", "--trace", path)
    assert r.returncode == 0 and "    trace: #1 split: split" in r.stdout


def test_step_prints_the_steps_before_a_failing_op(tmp_path: Any) -> None:
    scn = {"name": "fails", "ops": [_mmap("base+0K", "8K", RW), {"op": "munmap", "addr": "map:nosuch+0", "len": "4K"}]}
    r = vmalab("run", "--step", write(tmp_path, scn))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("vmalab: error: ") and "op 1 (munmap)" in r.stderr
    assert "#0 mmap" in r.stdout and "  + 500000000000-500000002000 rw-p" in r.stdout


@pytest.mark.parametrize(("args", "needle"), [
    (["maps", "--color=blue", "S"], "--color must be one of auto, always, never, not 'blue'"),
    (["maps", "--color", "blue", "S"], "--color must be one of auto, always, never, not 'blue'"),
    (["maps", "--smaps", "--color=always", "S"], "--smaps cannot be combined with --color"),
    (["maps", "--smaps", "--gaps", "S"], "--smaps cannot be combined with --gaps"),
    (["maps", "--color", "BAD"], "not valid JSON"),
    (["maps", "--gaps", "--color", "MISSING"], "missing.json: No such file"),
    (["run", "--step", "--json", "S"], "--step cannot be combined with --json"),
    (["run", "--step", "--kernel", "S"], "--step cannot be combined with --kernel"),
    (["run", "--step", "--all-profiles", "S"], "--step cannot be combined with --all-profiles"),
    (["run", "--step", "BAD"], "not valid JSON"),
    (["run", "--step", "--max-iterations", "3", "REPEAT"], "repeat iterations"),
    (["run", "--step", "--kernel-profile", "6.18", "DRIVER"], "kernel 6.18 has no mmap_action"),
    (["run", "--step", "PROGRAM"], "--step does not apply to a recorded program"),
])
def test_bad_input_is_one_line(tmp_path: Any, args: list[str], needle: str) -> None:
    files = {"S": write(tmp_path, KINDS_SCENARIO, "s.json"), "BAD": write(tmp_path, "{nope", "bad.json"),
             "MISSING": os.path.join(str(tmp_path), "missing.json"),
             "REPEAT": write(tmp_path, {"name": "r", "ops": [{"op": "repeat", "count": 10, "step": "4K",
                                                             "body": _mmap("base+0K", "4K", RW)}]}, "r.json"),
             "DRIVER": os.path.join(SCENARIO_DIR, "driver_devmem_remap.json"),
             "PROGRAM": os.path.join(os.path.dirname(SCENARIO_DIR), "programs", "bash.program.json")}
    r = vmalab(*[files.get(a, a) for a in args])
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith("vmalab: error: ") and r.stderr.count("\n") == 1, r.stderr
    assert needle in r.stderr


def test_maps_of_a_live_process_in_colour() -> None:
    mm = MM.from_pid(os.getpid())
    kinds = {vma_kind(mm, v) for v in mm.tree}
    assert {"stack", "code", "data"} <= kinds
    r = vmalab("maps", "--color=always", "--gaps", "--pid", str(os.getpid()))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("LEGEND: ") and "\x1b[33m" in r.stdout and "    ~~ gap " in r.stdout
