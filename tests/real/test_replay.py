"""Replaying real programs: the strace parser, the ProgramTrace model, the replay engine and `vmalab replay`.

The committed strace logs (tests/programs/NAME.strace.log) come with NAME.strace.json: the maps and smaps
of each exec'd program right after its execve and, for one-process commands, the maps at exit, both taken
by a ptrace stop of a separate run of the same command with ASLR off (strace cannot print maps).  The
replays start from those maps, so they do not depend on this machine's binaries; one test also starts
from the exec model (vmalab.binfmt_elf) when the traced binaries are here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vmalab import programtrace
from vmalab.programtrace import Event, ProcessTrace, ProgramTrace, ProgramTraceError, Start
from vmalab.replay import compare_maps, replay
from vmalab.strace import StraceParseError, parse_int, parse_strace, split_args

from ..conftest import ROOT

PROGRAMS = Path(ROOT) / "tests" / "programs"
SAMPLES = ["ls", "python3", "bash", "pipe"]
#: memory calls whose traced return the model does not give, with the reason (none today)
KNOWN_DIVERGENCES: dict[str, list[tuple[int, int, str]]] = {}

HEAD = '100 execve("/usr/bin/x", ["x"], 0x7fffffffe818 /* 3 vars */) = 0\n'


# -- the parser --------------------------------------------------------------------------------------------
def test_parser_reads_every_form() -> None:
    log = HEAD + "\n".join([
        "100 brk(NULL)                         = 0x55555557a000",
        '100 openat(-100</tmp>, "/etc/ld.so.cache", 0x80000) = 3</etc/ld.so.cache>',
        "100 mmap(NULL, 34547, 0x1, 0x2, 3</etc/ld.so.cache>, 0) = 0x7ffff7fb7000",
        '100 openat(-100</tmp>, "/nope", 0x80000) = -1 ENOENT (No such file or directory)',
        "100 mmap(0x1000, 4096, 0x3, 0x32, -1, 0) = -1 EPERM (Operation not permitted)",
        "100 close(3</etc/ld.so.cache>)        = 0",
        "100 clone(child_stack=NULL, flags=0x1200000|17 <unfinished ...>",
        "101 mmap(NULL, 8192, 0x3, 0x22, -1, 0 <unfinished ...>",
        "100 <... clone resumed>, child_tidptr=0x7ffff7d9fa10) = 101",
        "101 <... mmap resumed>)                = 0x7ffff7fc0000",
        "100 --- SIGCHLD {si_signo=17, si_code=0x1, si_pid=101, si_uid=0, si_status=0} ---",
        '101 write(1<pipe:[3770407]>, "a, b) = 3\\n\\"x\\"", 9) = 9',
        '101 memfd_create("buf", 0x1) = 4</memfd:buf (deleted)>',
        "101 ftruncate(4</memfd:buf (deleted)>, 8192) = 0",
        "101 exit_group(0)                     = ?",
        "101 +++ exited with 0 +++",
        "100 exit_group(1)                     = ?",
        "100 +++ killed by SIGKILL +++",
    ]) + "\n"
    t = parse_strace(log)
    assert [p.pid for p in t.processes] == [100, 101]
    root, child = t.processes
    assert root.start.kind == "exec" and root.start.path == "/usr/bin/x" and root.start.envp is None
    assert t.command == ["x"]
    calls = [(e.call, e.args, e.ret, e.path) for e in root.events]
    assert calls[0] == ("brk", [0], 0x55555557a000, None)
    assert calls[1] == ("openat", [-100, 0x80000, 0], 3, "/etc/ld.so.cache")
    assert calls[2] == ("mmap", [0, 34547, 1, 2, 3, 0], 0x7ffff7fb7000, "/etc/ld.so.cache")
    assert calls[3][2] == -2 and calls[4][2] == -1  # -ENOENT, -EPERM
    assert calls[5] == ("close", [3], 0, "/etc/ld.so.cache")
    clone = root.events[6]
    assert clone.call == "clone" and clone.args == [0x1200011] and clone.ret == 101 and clone.thread is False
    assert clone.line == 8  # the line the call starts on
    assert child.start.kind == "fork" and child.start.parent == 100 and child.start.event == 6
    assert [e.call for e in child.events] == ["mmap", "memfd_create", "ftruncate", "exit_group"]
    assert child.events[1].path == "/memfd:buf (deleted)" and child.events[1].ret == 4
    assert child.exit == {"code": 0} and root.exit == {"signal": "SIGKILL"}


def test_parser_threads_join_their_leader() -> None:
    log = HEAD + "\n".join([
        "100 clone3({flags=0x3d0f00, child_tid=0x7ffff7a00990, parent_tid=0x7ffff7a00990, exit_signal=0, "
        "stack=0x7ffff7200000, stack_size=0x7fff80, tls=0x7ffff7a006c0} => {parent_tid=[101]}, 88) = 101",
        "101 mmap(NULL, 134217728, 0, 0x4022, -1, 0) = 0x7fffef200000",
        "[pid   101] munmap(0x7fffef200000, 14680064) = 0",
        "101 +++ exited with 0 +++",
    ]) + "\n"
    t = parse_strace(log)
    assert len(t.processes) == 1
    ev = t.processes[0].events
    assert ev[0].call == "clone3" and ev[0].thread and ev[0].clone_flags & 0x10000
    assert [(e.call, e.tid) for e in ev[1:]] == [("mmap", 101), ("munmap", 101)]


def test_tokenizer() -> None:
    assert split_args('3</a, b>, "x, \\"y\\"", [1, 2], {a=1, b=2}, /* 2 vars */ 0x1') == [
        "3</a, b>", '"x, \\"y\\""', "[1, 2]", "{a=1, b=2}", "/* 2 vars */ 0x1"]
    assert parse_int("flags=0x1200000|17") == 0x1200011
    assert parse_int("NULL") == 0 and parse_int("-100</tmp>") == -100 and parse_int("0100644") == 0o100644


@pytest.mark.parametrize(("line", "message"), [
    ("100 mmap(NULL, 4096, 0x3, 0x22, -1, 0", "line 2: no '= RETURN'"),
    ("hello world", "line 2: not strace -f output"),
    ("100 <... mmap resumed>) = 0x1000", "line 2: '<... mmap resumed>' without an unfinished mmap()"),
    ("100 +++ exited badly +++", "line 2: cannot parse the exit line"),
    ("100 mmap(NULL, 4096, 0x3, 0x22, -1, zero) = 0x1000", "line 2: mmap(): not an integer"),
    ("100 mmap(NULL, 4096, [0x3, 0x22, -1, 0) = 0x1000", "line 2: mmap(): unbalanced brackets"),
    ('100 openat(-100, "/x, 0) = 3', "line 2: openat(): unterminated string"),
])
def test_malformed_lines_name_the_line(line: str, message: str) -> None:
    with pytest.raises(StraceParseError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_strace(HEAD + line + "\n")


# -- the ProgramTrace model --------------------------------------------------------------------------------
def _trace(*events: Event) -> ProgramTrace:
    return ProgramTrace([ProcessTrace(7, Start("maps", maps=""), events=list(events))])


@pytest.mark.parametrize(("event", "message"), [
    (Event("mmap", [0, 4096], 0), "process 7 event 0 (mmap): takes 6 argument(s), got 2"),
    (Event("frobnicate", [], 0), "process 7 event 0 (frobnicate): unknown call"),
    (Event("munmap", [0, 4096], None), "process 7 event 0 (munmap): a memory call needs its return value"),
    (Event("execve", [], 0, path="/x"), "process 7 event 0 (execve): execve needs argv"),
])
def test_validation_names_process_and_event(event: Event, message: str) -> None:
    with pytest.raises(ProgramTraceError, match=r"^" + message.replace("(", r"\(").replace(")", r"\)")):
        _trace(event).validate()


def test_json_round_trip_and_errors(tmp_path: Path) -> None:
    t = parse_strace((PROGRAMS / "pipe.strace.log").read_text())
    path = tmp_path / "pipe.json"
    programtrace.save(t, path)
    again = programtrace.load(path)
    assert again.to_json() == t.to_json()
    bad = t.to_json()
    bad["processes"][1]["start"]["fork"]["event"] = 0
    with pytest.raises(ProgramTraceError, match=r"process \d+: start event 0 of process \d+ is not a clone"):
        programtrace.loads(json.dumps(bad))
    with pytest.raises(ProgramTraceError, match="format is 'x'"):
        programtrace.loads('{"format": "x"}')


# -- replaying the committed logs ------------------------------------------------------------------------
def _sidecar(name: str) -> dict[str, object]:
    return json.loads((PROGRAMS / f"{name}.strace.json").read_text())  # type: ignore[no-any-return]


def _replay_sample(name: str, exec_model: bool = False):  # type: ignore[no-untyped-def]
    t = parse_strace((PROGRAMS / f"{name}.strace.log").read_text())
    side = _sidecar(name)
    execs = side["exec"]
    assert isinstance(execs, dict)
    maps = {k: v["maps"] for k, v in execs.items()}
    smaps = {k: v["smaps"] for k, v in execs.items()}
    if exec_model:
        return t, side, replay(t)
    return t, side, replay(t, initial_maps=maps, initial_smaps=smaps, exec_model=False)


@pytest.mark.parametrize("name", SAMPLES)
def test_committed_logs_replay_without_divergence(name: str) -> None:
    t, side, r = _replay_sample(name)
    assert all(p.replayed for p in r.processes), [p.notes for p in r.processes]
    assert sum(p.memory_calls for p in r.processes) >= 17 * len(t.processes)
    known = {(pid, i) for pid, i, _ in KNOWN_DIVERGENCES.get(name, [])}
    assert [d.describe() for d in r.divergences if (d.pid, d.index) not in known] == []
    if "exit_maps" in side:  # one-process commands: the maps at exit of an identical run
        assert compare_maps(r.processes[0].maps, str(side["exit_maps"])) == []


def test_fork_children_start_from_the_parent_at_the_fork() -> None:
    t, _, r = _replay_sample("pipe")
    assert [p.start.kind for p in t.processes] == ["exec", "fork", "fork"]
    for child in r.processes[1:]:
        assert child.start.startswith(f"fork of {t.processes[0].pid}")
        assert any("execve(/usr/bin/" in n for n in child.notes)
    assert "/usr/bin/ls" in r.processes[1].maps and "/usr/bin/cat" in r.processes[2].maps


def test_a_wrong_return_is_reported() -> None:
    t = parse_strace((PROGRAMS / "ls.strace.log").read_text())
    ev = next(e for e in t.processes[0].events if e.call == "mmap")
    ev.ret = (ev.ret or 0) + 0x1000
    side = _sidecar("ls")
    execs = side["exec"]
    assert isinstance(execs, dict)
    r = replay(t, initial_maps=execs["/usr/bin/ls"]["maps"], initial_smaps=execs["/usr/bin/ls"]["smaps"],
               exec_model=False)
    assert not r.ok and len(r.divergences) >= 1
    d = r.divergences[0]
    assert d.call == "mmap" and d.traced == ev.ret and d.model == ev.ret - 0x1000 and d.line == ev.line


def test_exec_model_start_when_the_binaries_are_here() -> None:
    side = _sidecar("ls")
    execs = side["exec"]
    assert isinstance(execs, dict)
    if side["kernel"] != os.uname().release or not os.path.exists("/usr/bin/ls"):
        pytest.skip("recorded on another machine")
    _, _, r = _replay_sample("ls", exec_model=True)
    p = r.processes[0]
    if p.start != "exec model":
        pytest.skip(f"no exec model: {p.notes}")
    if compare_maps(_exec_maps_now(), execs["/usr/bin/ls"]["maps"]):
        pytest.skip("/usr/bin/ls or its libraries changed since the recording")
    assert r.ok, [d.describe() for d in r.divergences]


def _exec_maps_now() -> str:
    from vmalab.mm import MM
    from vmalab.procfs import maps

    return maps(MM.exec("/usr/bin/ls", ["ls", "/"], ["PATH=/usr/bin:/bin", "LANG=C"]))


def test_strace_without_final_maps_is_said() -> None:
    _, _, r = _replay_sample("bash")
    assert any("no final maps" in n for n in r.notes)
    assert all(p.maps_differences is None for p in r.processes)


def test_recorded_program_traces_replay() -> None:
    """The recorder's ProgramTraces (with final maps) load and replay with the same engine."""
    path = PROGRAMS / "python3.program.json"
    if not path.exists():
        pytest.skip("no recording")
    t = programtrace.load(path)
    r = replay(t, exec_model=False)  # the recorded post-exec maps: independent of this machine's binaries
    p = r.processes[0]
    assert p.start == "recorded post-exec maps"
    assert p.maps_differences == [] and not p.divergences


# -- the command line --------------------------------------------------------------------------------------
def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vmalab", "replay", *args], capture_output=True, text=True,
                          cwd=ROOT)


def test_cli_replays_a_log_with_given_maps(tmp_path: Path) -> None:
    execs = _sidecar("ls")["exec"]
    assert isinstance(execs, dict)
    (tmp_path / "ls.maps").write_text(execs["/usr/bin/ls"]["maps"])
    (tmp_path / "ls.maps.smaps").write_text(execs["/usr/bin/ls"]["smaps"])
    out = _cli(str(PROGRAMS / "ls.strace.log"), "--maps", str(tmp_path / "ls.maps"), "--no-exec-model")
    assert out.returncode == 0, out.stderr
    assert "given maps; 26 memory calls, 0 divergent" in out.stdout
    assert "[heap]" in out.stdout and "/usr/lib/x86_64-linux-gnu/libc.so.6" in out.stdout
    js = _cli(str(PROGRAMS / "ls.strace.log"), "--maps", str(tmp_path / "ls.maps"), "--no-exec-model", "--json")
    data = json.loads(js.stdout)
    assert data["ok"] is True and data["processes"][0]["divergences"] == []


def test_cli_exit_status_and_errors(tmp_path: Path) -> None:
    t = parse_strace((PROGRAMS / "ls.strace.log").read_text())
    ev = next(e for e in t.processes[0].events if e.call == "mprotect")
    ev.ret = -22
    execs = _sidecar("ls")["exec"]
    assert isinstance(execs, dict)
    t.processes[0].exec_maps = execs["/usr/bin/ls"]["maps"]
    t.processes[0].exec_smaps = execs["/usr/bin/ls"]["smaps"]
    programtrace.save(t, tmp_path / "t.json")
    out = _cli(str(tmp_path / "t.json"), "--no-exec-model")
    assert out.returncode == 1 and "DIVERGES: " in out.stdout and "= -EINVAL traced, 0 on the model" in out.stdout
    (tmp_path / "bad.log").write_text(HEAD + "100 mmap(NULL\n")
    bad = _cli(str(tmp_path / "bad.log"))
    assert bad.returncode == 2 and "line 2:" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    (tmp_path / "junk.log").write_text("garbage line\n")  # no syscall shape at all: still named as strace's line
    junk = _cli(str(tmp_path / "junk.log"))
    assert junk.returncode == 2 and "line 1:" in junk.stderr and "JSON" not in junk.stderr


@pytest.mark.skipif(shutil.which("strace") is None or shutil.which("setarch") is None, reason="needs strace")
def test_live_strace_of_ls_replays() -> None:
    """Re-record live: strace ls / now and replay it on the exec model (skipped without it)."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        log = os.path.join(d, "ls.log")
        run = subprocess.run(["setarch", "-R", "strace", "-f", "-X", "raw", "-y", "-o", log, "ls", "/"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env={"PATH": "/usr/bin:/bin", "LANG": "C"}, cwd="/", check=False)
        if run.returncode or not os.path.getsize(log):
            pytest.skip(f"strace cannot trace here: {run.stderr.strip()[:200]}")
        t = parse_strace(Path(log).read_text())
    r = replay(t)
    if r.processes[0].start != "exec model":
        pytest.skip("no exec model")
    assert r.processes[0].memory_calls > 10
    assert r.ok, [d.describe() for d in r.divergences]
