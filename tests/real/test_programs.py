"""Recorded programs as scenarios: every tests/programs/NAME.program.json replayed on the model agrees with
the recording, and `vmalab run` / `vmalab diff` take a recorded program where they take a scenario.

What is compared, per process: every memory call's return, the final maps (start, end, perms, offset,
device, inode, name) and every VMA's VmFlags from the final smaps.  Nothing is masked.  Rss is not
compared: the trace has no page faults, so the model's pages are not the program's (and shared-library
Rss is page-cache state besides).

The replays start from the recorded post-exec maps and smaps and model every file from its recorded
identity (dev, inode, size, fs type), so they do not depend on this machine: CI replays them as they are.
The exec model is checked against the recorded post-exec maps separately, only where this machine's
binary (and every file the post-exec maps name) is the recorded one.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vmalab import programtrace
from vmalab.programtrace import LEGACY_OPENAT_NOTE, Event, ProcessTrace, ProgramTrace, Start
from vmalab.replay import compare_maps, local_identity, replay

from ..conftest import ROOT

PROGRAMS = Path(ROOT) / "tests" / "programs"
NAMES = sorted(p.name.removesuffix(".program.json") for p in PROGRAMS.glob("*.program.json"))
#: (recording, pid index, event index) -> the cause, for a memory call or final-maps line the model does not
#: reproduce.  Empty: every committed recording agrees.
KNOWN_DIVERGENCES: dict[tuple[str, int, int], str] = {}
_MAPS_LINE = re.compile(r"^([0-9a-f]+)-[0-9a-f]+ \S{4} [0-9a-f]+ ([0-9a-f]+):([0-9a-f]+) (\d+)\s+(/\S.*)$")


def _load(name: str) -> ProgramTrace:
    return programtrace.load(PROGRAMS / f"{name}.program.json")


def test_the_recordings_cover_the_issue() -> None:
    """The programs issue 13 names are there, recorded with the kernel release, in the Round-2 format."""
    assert len(NAMES) >= 12, NAMES
    for must in ("ls", "python3", "bash", "cc", "git", "sort", "threads", "forkexec", "realloc"):
        assert must in NAMES
    for name in NAMES:
        t = _load(name)
        assert t.source == "record" and t.kernel, name
        assert LEGACY_OPENAT_NOTE not in t.notes, f"{name} is in the first recorder's layout: record it again"
        assert all(e.seq is not None and e.tid is not None for p in t.processes for e in p.events), name
    threads = _load("threads").processes[0].events
    assert len({e.tid for e in threads}) >= 3
    assert sum(e.call == "mremap" for e in _load("realloc").processes[0].events) >= 3
    assert len(_load("forkexec").processes) == 2 and len(_load("cc").processes) >= 3


@pytest.mark.parametrize("name", NAMES)
def test_replay_agrees_with_the_recording(name: str) -> None:
    t = _load(name)
    r = replay(t)
    assert r.ok == (not r.divergences and not any(p.maps_differences for p in r.processes))
    for proc, res in zip(t.processes, r.processes, strict=True):
        assert res.replayed, res.notes
        if proc.start.kind == "exec":
            assert res.start == "recorded post-exec maps"  # not this machine's binaries
        assert not any("this machine's stat" in n for n in res.notes)  # every file from its recorded identity
        assert res.memory_calls == sum(e.call in programtrace.MEMORY_CALLS for e in proc.events)
        known = {i for (n, pi, i) in KNOWN_DIVERGENCES if n == name and t.processes[pi].pid == proc.pid}
        assert [d.describe() for d in res.divergences if d.index not in known] == []
        assert proc.final_maps is not None and proc.final_smaps is not None
        assert res.maps_differences == [], res.maps_differences  # maps fields and VmFlags
        assert not res.reordered or all("reordered concurrent calls" in n for n in res.notes if "reorder" in n)


def test_vmflags_are_compared() -> None:
    t = _load("ls")
    p = t.processes[0]
    assert p.final_smaps is not None
    heap = re.search(r"^([0-9a-f]+)-.*\[heap\]$", p.final_maps or "", re.M)
    assert heap is not None
    # drop "ac" from the heap's VmFlags in the recording: the comparison must see it
    start = heap.group(1)
    i = p.final_smaps.index(start + "-")
    j = p.final_smaps.index("VmFlags:", i)
    k = p.final_smaps.index("\n", j)
    p.final_smaps = p.final_smaps[:j] + p.final_smaps[j:k].replace(" ac", "") + p.final_smaps[k:]
    r = replay(t)
    assert any(d.startswith(f"{start.lstrip('0')}: VmFlags") and "model has ac" in d
               for d in r.processes[0].maps_differences or [])


def test_file_identity_comes_from_the_recording() -> None:
    """libc gets another inode number in the recording (as on another machine): the replay follows the
    recording, not this machine's stat."""
    t = _load("ls")
    p = t.processes[0]
    libc = "/usr/lib/x86_64-linux-gnu/libc.so.6"
    old = next(e.file for e in p.events if e.path == libc and e.file is not None)
    assert old is not None
    new = programtrace.FileId(old.dev, 987654321, old.size, old.fstype)
    for e in p.events:
        if e.path == libc and e.file is not None:
            e.file = new
    p.final_maps = (p.final_maps or "").replace(f" {old.ino} ", f" {new.ino}".ljust(len(f" {old.ino} ")))
    r = replay(t)
    assert r.ok, (r.divergences, r.processes[0].maps_differences)
    assert f" {new.ino} " in r.processes[0].maps


# -- the exec model against the recorded post-exec maps ---------------------------------------------------
def _execs(t: ProgramTrace) -> list[tuple[str, list[str], list[str], programtrace.FileId | None, str, str]]:
    out = []
    for p in t.processes:
        if p.start.kind == "exec" and p.exec_maps and p.exec_smaps:
            out.append((p.start.path or "", p.start.argv or [], p.start.envp or [], p.start.file, p.exec_maps,
                        p.exec_smaps))
        for e in p.events:
            if e.call == "execve" and e.ret == 0 and e.maps and e.smaps:
                out.append((e.path or "", e.argv or [], e.envp or [], e.file, e.maps, e.smaps))
    return out


def _not_the_recorded_files(fid: programtrace.FileId | None, path: str, exec_maps: str) -> str | None:
    """Why this machine's files are not those of the recording (None: they are)."""
    if fid is not None and local_identity(path) != (fid.dev_pair, fid.ino, fid.size):
        return f"{path} is not the recorded binary here (dev, inode, size differ)"
    for line in exec_maps.splitlines():
        m = _MAPS_LINE.match(line)
        if m:
            here = local_identity(m.group(5))
            if here is None or here[:2] != ((int(m.group(2), 16), int(m.group(3), 16)), int(m.group(4))):
                return f"{m.group(5)} is not the recorded file here"
    return None


@pytest.mark.parametrize("name", NAMES)
def test_exec_model_matches_the_recorded_exec(name: str) -> None:
    from vmalab.mm import MM
    from vmalab.procfs import maps, smaps

    execs = _execs(_load(name))
    assert execs
    compared = 0
    reasons = []
    for path, argv, envp, fid, exec_maps, exec_smaps in execs:
        why = _not_the_recorded_files(fid, path, exec_maps)
        if why is not None:  # a different binary is not the same program
            reasons.append(why)
            continue
        mm = MM.exec(path, argv, envp)
        assert compare_maps(maps(mm), exec_maps, smaps(mm), exec_smaps) == [], path
        compared += 1
    if not compared:
        pytest.skip("; ".join(reasons))


# -- threads: concurrent calls --------------------------------------------------------------------------------
_MAPS0 = "7ffffffde000-7ffffffff000 rw-p 00000000 00:00 0                          [stack]\n"


def _two_threads(overlap: bool) -> ProgramTrace:
    """Thread 11's mmap of 3 pages and thread 12's of 1 page; the kernel ran 12's first, the trace lists
    11's first."""
    from vmalab.replay import mm_from_maps

    mm, _ = mm_from_maps(_MAPS0)
    first = mm.mmap(None, 0x1000, 3, 0x22)
    second = mm.mmap(None, 0x3000, 3, 0x22)
    seq_a, seq_b = ((1, 4), (2, 3)) if overlap else ((1, 2), (3, 4))
    events = [Event("mmap", [0, 0x3000, 3, 0x22, -1, 0], second, tid=11, seq=seq_a),
              Event("mmap", [0, 0x1000, 3, 0x22, -1, 0], first, tid=12, seq=seq_b)]
    return ProgramTrace([ProcessTrace(10, Start("maps", maps=_MAPS0), events=events)], source="record")


def test_concurrent_calls_are_reordered_and_said() -> None:
    r = replay(_two_threads(overlap=True))
    p = r.processes[0]
    assert r.ok and p.reordered == [(0, 1)]
    assert any(n.startswith("reordered concurrent calls: events 0 (mmap, thread 11) and 1") for n in p.notes)


def test_calls_not_in_flight_together_are_not_reordered() -> None:
    r = replay(_two_threads(overlap=False))
    p = r.processes[0]
    assert not r.ok and p.reordered == [] and len(p.divergences) == 2


def test_close_range_is_followed() -> None:
    fid = programtrace.FileId("fe:00", 4242, 1 << 20, "ext4")

    def trace(flags: int, ret: int) -> ProgramTrace:
        events = [Event("openat", [-100, 0, 0], 3, path="/x/f", file=fid),
                  Event("close_range", [3, 0xFFFFFFFF, flags], 0),
                  Event("mmap", [0, 0x1000, 1, 2, 3, 0], ret)]
        return ProgramTrace([ProcessTrace(10, Start("maps", maps=_MAPS0), events=events)], source="record")

    assert replay(trace(0, -9)).ok  # closed: -EBADF
    r = replay(trace(4, 0x7ffff7ffe000))  # CLOSE_RANGE_CLOEXEC: still open
    assert r.ok, [d.describe() for d in r.divergences]
    assert "4242" in r.processes[0].maps and "/x/f" in r.processes[0].maps


# -- the format -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["ls", "cc", "threads"])
def test_round_trip_keeps_every_key(name: str) -> None:
    raw = json.loads((PROGRAMS / f"{name}.program.json").read_text())
    assert programtrace.loads(json.dumps(raw)).to_json() == raw


def test_first_recorder_layout_is_converted_and_said() -> None:
    t = ProgramTrace([ProcessTrace(10, Start("maps", maps=_MAPS0), events=[
        Event("openat", [-100, 0x7ffff7fd0000, 0x80000], 3, path="/etc/ld.so.cache")])], source="record")
    again = programtrace.loads(programtrace.dumps(t))
    assert again.processes[0].events[0].args == [-100, 0x80000, 0] and LEGACY_OPENAT_NOTE in again.notes


@pytest.mark.parametrize(("change", "message"), [
    (lambda e: e.update(seq=[5]), r"process \d+ event 0 \(brk\): 'seq' must be \[entry, exit\]"),
    (lambda e: e.update(seq=[9, 5]), r"process \d+ event 0 \(brk\): seq \[9, 5\] ends before it starts"),
    (lambda e: e.update(file={"dev": "fe00", "ino": 1, "size": 2, "fstype": "ext4"}),
     r"process \d+ event 0 \(brk\): file dev 'fe00' is not MAJOR:MINOR"),
])
def test_malformed_round2_fields_name_process_and_event(change, message) -> None:  # type: ignore[no-untyped-def]
    raw = json.loads((PROGRAMS / "true.program.json").read_text())
    change(raw["processes"][0]["events"][0])
    with pytest.raises(programtrace.ProgramTraceError, match=message):
        programtrace.loads(json.dumps(raw))


# -- the command line -----------------------------------------------------------------------------------------
def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vmalab", *args], capture_output=True, text=True, cwd=ROOT)


def test_cli_run_and_diff_take_a_recorded_program(tmp_path: Path) -> None:
    path = str(PROGRAMS / "forkexec.program.json")
    run = _cli("run", path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("== pid ") and "fork of " in run.stdout and "0 divergent memory call(s)" in run.stdout
    diff = _cli("diff", path)
    assert diff.returncode == 0 and "agrees (2 process(es), " in diff.stdout, diff.stdout + diff.stderr
    js = json.loads(_cli("diff", path, "--json").stdout)
    assert js["agree"] is True and js["differences"] == []
    # a wrong traced return: diff and run exit 1 and name it
    raw = json.loads(Path(path).read_text())
    ev = next(e for e in raw["processes"][0]["events"] if e["call"] == "mprotect")
    ev["ret"] = -12
    (tmp_path / "bad.json").write_text(json.dumps(raw))
    bad = _cli("diff", str(tmp_path / "bad.json"))
    assert bad.returncode == 1 and "DIVERGES" in bad.stdout and "= -ENOMEM traced, 0 on the model" in bad.stdout
    assert _cli("run", str(tmp_path / "bad.json")).returncode == 1


def test_cli_malformed_program_is_one_line_naming_the_event(tmp_path: Path) -> None:
    raw = json.loads((PROGRAMS / "true.program.json").read_text())
    raw["processes"][0]["events"][2]["args"] = [1]
    (tmp_path / "m.json").write_text(json.dumps(raw))
    for cmd in ("run", "diff"):
        out = _cli(cmd, str(tmp_path / "m.json"))
        assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert re.search(r"^vmalab: error: .*m\.json: process \d+ event 2 \(\w+\): takes", out.stderr)
    (tmp_path / "t.json").write_text('{"format": "vmalab-program/1", "processes": [')
    out = _cli("diff", str(tmp_path / "t.json"))
    assert out.returncode == 2 and "not JSON" in out.stderr
    opt = _cli("run", "--trace", str(PROGRAMS / "true.program.json"))
    assert opt.returncode == 2 and "--trace does not apply to a recorded program" in opt.stderr


def test_cli_run_kernel_records_again() -> None:
    """`vmalab run --kernel PROGRAM.json` records the program again live (skipped where ptrace is refused)."""
    out = _cli("run", "--kernel", str(PROGRAMS / "true.program.json"))
    if out.returncode == 2 and "ptrace" in out.stderr:
        pytest.skip(out.stderr.strip())
    assert out.returncode == 0, out.stderr
    assert "recorded live on" in out.stdout and "brk(0) = 0x" in out.stdout and "[stack]" in out.stdout


def test_strace_close_range_and_files_from_stat() -> None:
    """An strace log has close_range and no file identities: the replay says files come from stat()."""
    from vmalab.strace import parse_strace

    t = parse_strace('100 execve("/usr/bin/x", ["x"], 0x7fffffffe818 /* 3 vars */) = 0\n'
                     "100 close_range(3, ~0U, 0x4) = 0\n100 close_range(3</a>, 0xffffffff, 0) = 0\n")
    assert [(e.call, e.args) for e in t.processes[0].events] == [
        ("close_range", [3, 0xFFFFFFFF, 4]), ("close_range", [3, 0xFFFFFFFF, 0])]
    log = programtrace.ProgramTrace([ProcessTrace(10, Start("maps", maps=_MAPS0), events=[
        Event("openat", [-100, 0, 0], 3, path="/etc/hostname"),
        Event("mmap", [0, 0x1000, 1, 2, 3, 0], 0x7ffff7ffe000)])])
    r = replay(log)
    assert any("modelled from this machine's stat()" in n for n in r.processes[0].notes)
