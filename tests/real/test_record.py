"""``vmalab record-program``: recording real programs under ptrace (vmalab.oracle.record_program).

Live tests: they need Linux on x86-64, ptrace and a C compiler; each skips with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from vmalab.oracle.record_program import (
    FORMAT,
    MEMORY_CALLS,
    RecordError,
    check_followable,
    masked_maps,
    memory_calls,
    parse_log,
    record_program,
    recording_differences,
)

from ..conftest import live_release, numeric_release, release_matches, skip_live

PAGE = 4096
MAPS_LINE = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) ([-r][-w][-x][ps]) ([0-9a-f]+) ([0-9a-f]+:[0-9a-f]+) (\d+)\s*(.*)$")
REPO = Path(__file__).resolve().parents[2]
PROGRAMS = REPO / "tests" / "programs"
CC = shutil.which(os.environ.get("CC", "cc"))


def _ptrace_reason() -> str | None:
    if not sys.platform.startswith("linux") or os.uname().machine != "x86_64":
        return f"recording needs Linux on x86-64, this is {sys.platform} {os.uname().machine}"
    if CC is None:
        return "no C compiler (cc) to build the tracer"
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope") as f:
            if f.read().strip() == "3":
                return "ptrace is disabled (kernel.yama.ptrace_scope = 3)"
    except OSError:
        pass
    return None


live = pytest.mark.skipif(_ptrace_reason() is not None, reason=_ptrace_reason() or "")


# --- helpers ------------------------------------------------------------------------------------------
def rec(*command: str, **kw: Any) -> dict[str, Any]:
    kw.setdefault("stdout", subprocess.DEVNULL)
    kw.setdefault("stdin", subprocess.DEVNULL)
    return record_program(list(command), **kw)


def mem_events(proc: dict[str, Any], call: str | None = None) -> list[dict[str, Any]]:
    return [ev for ev in proc["events"] if ev["call"] in MEMORY_CALLS and (call is None or ev["call"] == call)]


def parse_maps(text: str) -> list[tuple[int, int, str, str]]:
    out = []
    for line in text.splitlines():
        m = MAPS_LINE.match(line)
        assert m, f"not a maps line: {line!r}"
        out.append((int(m[1], 16), int(m[2], 16), m[3], m[7]))
    return out


def core(ev: dict[str, Any]) -> dict[str, Any]:
    """An event without what varies from run to run (its thread id, its stop counters)."""
    return {k: v for k, v in ev.items() if k not in ("tid", "seq")}


#: the events that name a file, and so carry its identity (when they succeeded)
FILE_CALLS = ("openat", "memfd_create", "execve")


def check_fields(trace: dict[str, Any]) -> None:
    """Round-2 fields: every event has ``tid`` and ``seq`` = [entry, exit] (entry < exit, except an
    exit_group: no exit stop), the stop counters are unique over the whole recording and increase along
    each thread; events naming a file carry its identity; openat's args are [dirfd, flags, mode]."""
    seen: list[int] = []
    for p in trace["processes"]:
        by_tid: dict[int, list[list[int]]] = {}
        for ev in p["events"]:
            assert isinstance(ev["tid"], int) and ev["tid"] > 0, ev
            a, b = ev["seq"]
            if ev["call"] == "exit_group":
                assert a == b, ev
                seen.append(a)
            else:
                assert 0 < a < b, ev
                seen += [a, b]
            by_tid.setdefault(ev["tid"], []).append(ev["seq"])
            ok = ev.get("ret") is not None and ev["ret"] >= 0
            if ev["call"] in FILE_CALLS or (ev["call"] == "mmap" and ev["args"][4] >= 0 and not ev["args"][3] & 0x20):
                if ok and (ev["call"] != "execve" or ev["ret"] == 0):
                    f = ev["file"]
                    assert re.fullmatch(r"[0-9a-f]{2,}:[0-9a-f]{2,}", f["dev"]) and f["ino"] > 0, ev
                    assert f["size"] >= 0 and f["fstype"] and not f["fstype"].startswith("0x"), ev
            else:
                assert "file" not in ev, ev
            if ev["call"] == "openat":
                assert len(ev["args"]) == 3 and 0 <= ev["args"][1] < 1 << 32 and 0 <= ev["args"][2] <= 0o7777, ev
        for tid, seqs in by_tid.items():
            # one thread is in one syscall at a time: its intervals follow each other
            flat = [x for s in seqs for x in s]
            assert flat == sorted(flat), (p["pid"], tid, seqs)
        if "exec" in p["start"]:
            f = p["start"]["exec"]["file"]
            assert f["ino"] > 0 and f["size"] > 0, p["start"]
    assert len(seen) == len(set(seen)), "a stop counter value was given twice"


def check_plausible(trace: dict[str, Any], kernel: str | None = None) -> None:
    """The memory events' returns are what the kernel can return, and every process has its maps."""
    assert trace["format"] == FORMAT and trace["source"] == "record"
    check_fields(trace)
    assert trace["kernel"] == (kernel or os.uname().release)
    for p in trace["processes"]:
        for ev in mem_events(p):
            ret = ev["ret"]
            assert isinstance(ret, int), ev
            assert len(ev["args"]) == MEMORY_CALLS[ev["call"]], ev
            if ev["call"] in ("mmap", "mremap"):
                assert ret % PAGE == 0 or -4095 <= ret < 0, ev
                if ret >= 0 and ev["call"] == "mmap" and ev["args"][3] & 0x10:  # MAP_FIXED
                    assert ret == ev["args"][0], ev
            elif ev["call"] == "brk":
                assert ret > 0, ev
            else:
                assert ret == 0 or -4095 <= ret < 0, ev
            if ev["call"] == "munmap":
                assert ret == 0, ev
        assert p["final_maps"], p["pid"]
        regions = parse_maps(p["final_maps"])
        assert regions == sorted(regions) and all(s < e for s, e, _, _ in regions)
        assert any(name == "[stack]" for *_, name in regions)
        # a successful mmap's range is mapped at the end unless a later call changed it
        assert "exit" in p


def brk_monotone(p: dict[str, Any]) -> list[int]:
    rets = [ev["ret"] for ev in mem_events(p, "brk")]
    assert rets == sorted(rets), rets
    return rets


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The test programs of tests/programs/src, compiled once: fork-and-exec, threads, realloc growth, a
    seccomp kill."""
    if _ptrace_reason():
        pytest.skip(_ptrace_reason() or "")
    d = tmp_path_factory.mktemp("programs")
    sources = sorted((PROGRAMS / "src").glob("*.c"))
    assert {p.stem for p in sources} >= {"forkexec", "threads", "realloc", "seccomp"}
    out = {}
    for src in sources:
        exe = d / src.stem
        proc = subprocess.run([CC or "cc", "-O1", "-pthread", "-o", str(exe), str(src)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        out[src.stem] = str(exe)
    return out


# --- the log parser (no ptrace needed) ----------------------------------------------------------------
def _hex(s: str) -> str:
    return s.encode().hex()


def test_parse_log_structure() -> None:
    maps = "555555554000-555555556000 r-xp 00000000 08:01 12 /bin/x\n"
    log = (f"start 10\nxpath 10 {_hex('/bin/x')}\nxarg 10 {_hex('x')}\nxenv 10 {_hex('A=1')}\nexec 10 10\n"
           f"blob 10 exec_maps {len(maps)}\n{maps}\nblob 10 exec_smaps 0\n\n"
           "sys 10 10 execve 0 1 2 3 0 0 0\n"
           "sys 10 10 mmap 140737353875456 0 8192 3 34 4294967295 0\n"
           "task 11 10 10 clone\nsys 10 10 clone 11 4001536 0 0 0 0 0\n"
           "task 12 12 11 fork\nsys 11 10 clone 12 18874385 0 0 0 0 0\n"
           "sys 12 12 munmap 0 140737353875456 4096 0 0 0 0\n"
           f"sys 12 12 openat 3 4294967196 1 524288 0 0 0 path={_hex('lib.so')} fdpath={_hex('/usr/lib/lib.so')}"
           f" file={os.makedev(254, 0)},77,1024,61267 seq=40,41\n"
           f"sys 12 12 exit_group - 0 0 0 0 0 0\nblob 12 final_maps {len(maps)}\n{maps}\nexit 12 12 code 0\n"
           "sys 10 10 exit_group - 3 0 0 0 0 0\n"
           f"blob 10 final_maps {len(maps)}\n{maps}\nexit 11 10 code 0\nexit 10 10 code 3\nend 768\n").encode()
    t = parse_log(log, ["x"], kernel="k")
    assert [p["pid"] for p in t["processes"]] == [10, 12]
    root, child = t["processes"]
    assert root["start"] == {"exec": {"path": "/bin/x", "argv": ["x"], "envp": ["A=1"]}}
    assert root["exec_maps"] == maps and root["final_maps"] == maps
    calls = [ev["call"] for ev in root["events"]]
    assert calls == ["mmap", "clone", "clone", "exit_group"]  # the thread's clone is in the tgid's entry
    assert root["events"][0]["args"][4] == -1 and root["events"][1]["thread"] is True
    assert root["events"][2]["thread"] is False
    assert child["start"] == {"fork": {"parent": 10, "event": 2}} and child["parent"] == 10
    # openat's args are [dirfd, flags, mode] (the path pointer is the "path"); the file is as stat saw it
    assert child["events"][1] == {"call": "openat", "args": [-100, 524288, 0], "ret": 3, "arg": "lib.so",
                                  "path": "/usr/lib/lib.so", "file": {"dev": "fe:00", "ino": 77, "size": 1024,
                                                                      "fstype": "ext4"},
                                  "tid": 12, "seq": [40, 41]}
    assert [ev["tid"] for ev in root["events"]] == [10, 10, 11, 10]
    assert root["exit"] == {"code": 3}


def test_parse_log_file_identity_and_seq() -> None:
    """The file-system type comes from the recording machine's mountinfo (by device), else from statfs's
    magic number; an mmap of a descriptor and a successful execve carry the identity, close_range its
    three arguments, every event its thread and stop counters."""
    mountinfo = "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n30 25 0:27 / /dev/shm rw - tmpfs tmpfs rw\n"
    x = _hex("/bin/x")
    log = (f"start 10\nxpath 10 {x}\nexec 10 10\nsys 10 10 execve 0 1 2 3 0 0 0 file={os.makedev(254, 0)},5,800,61267"
           " seq=1,4\n"
           f"sys 10 10 mmap 4096 0 4096 1 2 3 0 fdpath={_hex('/dev/shm/a')} file={os.makedev(0, 27)},9,4096,16914836"
           " seq=5,6\n"
           f"sys 10 10 memfd_create 4 1 1 0 0 0 0 path={_hex('m')} fdpath={_hex('/memfd:m (deleted)')}"
           f" file={os.makedev(0, 1)},3,0,16914836 seq=7,8\n"
           f"sys 10 10 mmap 8192 0 4096 1 2 5 0 fdpath={_hex('/x')} file={os.makedev(0, 99)},4,1,1234 seq=9,10\n"
           f"xpath 10 {_hex('/nope')}\nsys 10 10 execve -2 1 2 3 0 0 0 seq=11,12\n"
           "sys 10 10 close_range 0 3 4294967295 4 0 0 0 seq=13,14\n"
           "sys 10 10 exit_group - 0 0 0 0 0 0 seq=15,15\n").encode()
    t = parse_log(log, ["x"], kernel="k", mountinfo=mountinfo)
    (p,) = t["processes"]
    assert p["start"]["exec"]["file"] == {"dev": "fe:00", "ino": 5, "size": 800, "fstype": "ext4"}
    ev = p["events"]
    assert ev[0]["file"] == {"dev": "00:1b", "ino": 9, "size": 4096, "fstype": "tmpfs"}  # by mountinfo
    assert ev[1]["file"]["fstype"] == "tmpfs" and ev[1]["file"]["dev"] == "00:01"  # not mounted: statfs magic
    assert ev[2]["file"]["fstype"] == "0x4d2"  # neither: the magic number itself
    assert ev[3]["ret"] == -2 and "file" not in ev[3]
    assert core(ev[4]) == {"call": "close_range", "args": [3, 4294967295, 4], "ret": 0}
    assert [e["seq"] for e in ev] == [[5, 6], [7, 8], [9, 10], [11, 12], [13, 14], [15, 15]]
    assert {e["tid"] for e in ev} == {10}


def test_recording_differences() -> None:
    """Two recordings compare equal up to pids, stop counters, pipe inodes and cc's temporary names; a
    different return, a missing call or another maps line is named."""
    maps = ("555555554000-555555556000 r-xp 00000000 fe:00 12 /bin/x\n"
            "7ffff7fb0000-7ffff7fb1000 rw-s 00000000 00:0e 4711 pipe:[4711]\n"
            "7ffff7fc0000-7ffff7fc1000 r--p 00000000 fe:00 99 /tmp/ccAbC123.s\n")
    def trace(pid: int, ret: int, maps: str) -> dict[str, Any]:
        return {"processes": [{"pid": pid, "start": {"exec": {}}, "exec_maps": maps, "final_maps": maps, "events": [
            {"call": "mmap", "args": [0, 4096, 3, 2, 3, 0], "ret": ret, "path": f"/tmp/cc{pid:06d}.o",
             "tid": pid, "seq": [pid, pid + 1]},
            {"call": "openat", "args": [-100, 0, 0], "ret": 3, "tid": pid, "seq": [1, 2]}]}]}
    other = maps.replace("4711", "815").replace("ccAbC123", "ccXyZ987").replace(" 99 ", " 98 ")
    assert recording_differences(trace(10, 4096, maps), trace(20, 4096, other)) == []
    assert masked_maps(other)[1:] == ["7ffff7fb0000-7ffff7fb1000 rw-s 00000000 00:0e N pipe:[N]",
                                      "7ffff7fc0000-7ffff7fc1000 r--p 00000000 fe:00 N /tmp/ccXXXXXX.s"]
    assert memory_calls(trace(10, 4096, maps)["processes"][0]) == [("mmap", (0, 4096, 3, 2, "/tmp/ccXXXXXX.o", 0),
                                                                     4096)]
    d = recording_differences(trace(10, 4096, maps), trace(20, 8192, maps))
    assert len(d) == 1 and "memory call 0" in d[0] and "4096) before" in d[0]
    d = recording_differences(trace(10, 4096, maps), trace(20, 4096, maps.replace("/bin/x", "/bin/y")))
    assert len(d) == 2 and all("maps differ" in x and "/bin/y" in x for x in d)


@pytest.mark.parametrize("line, message", [
    ("err ptrace refused: PTRACE_TRACEME: Operation not permitted", "ptrace refused"),
    ("warn setid /usr/bin/passwd", "setuid or setgid"),
    ("exit 10 10 signal 31", "SIGSYS"),
])
def test_parse_log_errors(line: str, message: str) -> None:
    log = f"start 10\nxpath 10 {_hex('/bin/x')}\nexec 10 10\nsys 10 10 execve 0 0 0 0 0 0 0\n{line}\n".encode()
    with pytest.raises(RecordError, match=message):
        parse_log(log, ["x"])


def test_setuid_binary_refused_unless_root(tmp_path: Path) -> None:
    exe = tmp_path / "suid"
    shutil.copy("/bin/true", exe)
    os.chmod(exe, 0o4755)
    if not os.stat(exe).st_mode & stat.S_ISUID:
        pytest.skip("this file system drops the setuid bit")
    with pytest.raises(RecordError, match="setuid binary"):
        check_followable(str(exe), euid=1000)
    check_followable(str(exe), euid=0)  # root: the kernel honours it under ptrace
    check_followable("/bin/true", euid=1000)


# --- the committed recordings (tests/programs/*.program.json, made by tools/record_programs.py) -------------
COMMITTED = sorted(PROGRAMS.glob("*.program.json"))


IDS = [p.name.split(".")[0] for p in COMMITTED]


def _tools() -> Any:
    """tools/record_programs.py: the examples' commands, environment and inputs."""
    sys.path.insert(0, str(REPO / "tools"))
    try:
        import record_programs
    finally:
        sys.path.remove(str(REPO / "tools"))
    return record_programs


def test_committed_recordings() -> None:
    """Every example of tools/record_programs.py is committed (at least 12 programs, among them the ones
    issue 13 names), and nothing else is."""
    names = set(IDS)
    assert names == set(_tools().EXAMPLES) and len(names) >= 12
    assert names >= {"true", "ls", "python3", "bash", "cc", "git", "sort", "threads", "forkexec", "realloc"}


@pytest.mark.parametrize("path", COMMITTED, ids=IDS)
def test_committed_recording_is_plausible(path: Path) -> None:
    from vmalab import programtrace
    trace = json.loads(path.read_text())
    assert trace["kernel"]  # the kernel release it came from
    check_plausible(trace, kernel=trace["kernel"])
    assert trace["processes"][0]["start"]["exec"]["envp"] == ["PATH=/usr/bin:/bin", "LANG=C"]
    assert trace["command"] == _tools().EXAMPLES[path.name.split(".")[0]]
    programtrace.load(path).validate()


def test_committed_sort_input_is_large() -> None:
    """sort reads the 20 MB generated input (its identity is in the recording: the replay needs no file)."""
    trace = json.loads((PROGRAMS / "sort.program.json").read_text())
    tools = _tools()
    (op,) = [ev for ev in trace["processes"][0]["events"] if ev["call"] == "openat" and
             ev.get("path") == str(tools.SORT_INPUT)]
    assert op["file"]["size"] == tools.SORT_INPUT_SIZE == 20 << 20


def test_committed_threads_overlap() -> None:
    """In threads.program.json, the four workers' mprotect/munmap calls (made after a barrier) come from
    four threads, and the 3 MiB maps made under a mutex all return one address."""
    (p,) = json.loads((PROGRAMS / "threads.program.json").read_text())["processes"]
    workers = {ev["tid"] for ev in p["events"] if ev["call"] == "mprotect" and ev["args"][1] == 4096
               and ev["args"][2] == 1 and ev["tid"] != p["pid"]}
    assert len(workers) == 4
    work = [ev for ev in mem_events(p, "mmap") if ev["args"][1] == 3 << 20]
    assert len(work) == 4 and len({ev["ret"] for ev in work}) == 1 and {ev["tid"] for ev in work} == workers


@live
@pytest.mark.live
@pytest.mark.parametrize("path", COMMITTED, ids=IDS)
def test_committed_recording_matches_live(path: Path, request: pytest.FixtureRequest) -> None:
    """Recorded again here (same command, environment and working directory: tools/record_programs.py),
    a program makes the same memory calls (call, args with an mmap's fd as its file, ret) and ends in the
    same maps as the committed recording, up to what varies from run to run (pids, stop counters, pipe
    inodes, cc's temporary names, inodes of files under /tmp: recording_differences).  Whenever the live
    kernel has the recording's numeric release; otherwise the check is skipped and listed in the test
    summary (the tests/corpus policy: with CI set, a skip of a check that could have run fails)."""
    old = json.loads(path.read_text())
    recorded = old["kernel"]
    if not release_matches(recorded, live_release()):
        skip_live(request, recorded, f"recorded on {numeric_release(recorded) or recorded}, live kernel is "
                  f"{numeric_release(live_release()) or live_release()}: re-record with tools/record_programs.py")
    tools = _tools()
    tools.prepare()
    new = tools.record(path.name.split(".")[0])
    diffs = recording_differences(old, new)
    if any("exec_maps differ" in d for d in diffs):
        diffs.insert(0, "this machine's binaries differ from the recording's (post-exec maps differ)")
    assert not diffs, (f"{path.name} (recorded on {recorded}) differs from a recording on the live kernel "
                       f"{live_release()}: re-record with tools/record_programs.py\n" + "\n".join(diffs[:20]))


# --- live recordings ----------------------------------------------------------------------------------
@live
def test_true() -> None:
    t = rec("true")
    check_plausible(t)
    (p,) = t["processes"]
    assert p["start"]["exec"]["argv"] == ["true"] and p["start"]["exec"]["path"].endswith("/true")
    assert p["exit"] == {"code": 0} and core(p["events"][-1]) == {"call": "exit_group", "args": [0]}
    assert p["exec_maps"] and "[stack]" in p["exec_maps"] and "[heap]" not in p["exec_maps"]
    brks = brk_monotone(p)
    assert brks and mem_events(p)[0]["call"] == "brk"  # ld.so asks for the break first
    # ASLR is off: the break and the first anonymous mmap are the same on every run
    again = rec("true")["processes"][0]
    assert [ev["ret"] for ev in mem_events(again)] == [ev["ret"] for ev in mem_events(p)]
    # every file mmap names its file, and libc is opened and mapped
    opened = [ev["path"] for ev in p["events"] if ev["call"] == "openat" and ev["ret"] >= 0]
    assert any("libc.so" in x for x in opened)
    for ev in mem_events(p, "mmap"):
        assert ("path" in ev) == (ev["args"][4] >= 0 and not ev["args"][3] & 0x20), ev


@live
def test_ls() -> None:
    t = rec("ls", "/")
    check_plausible(t)
    (p,) = t["processes"]
    brk_monotone(p)
    assert len(mem_events(p, "mmap")) >= 10
    names = {name for *_, name in parse_maps(p["final_maps"])}
    assert any(n.endswith("/ls") for n in names) and "[heap]" in names


@live
def test_python() -> None:
    t = rec("python3", "-c", "pass")
    check_plausible(t)
    assert len(mem_events(t["processes"][0])) >= 20


@live
def test_bash_c_true() -> None:
    t = rec("bash", "-c", "true")
    check_plausible(t)
    assert len(t["processes"]) == 1  # bash execs its last simple command's builtin: no fork


@live
def test_bash_fork_exec() -> None:
    t = rec("bash", "-c", "/bin/true; /bin/true")
    check_plausible(t)
    root, *children = t["processes"]
    assert len(children) >= 1
    for c in children:
        execs = [ev for ev in c["events"] if ev["call"] == "execve"]
        assert execs and execs[0]["ret"] == 0 and execs[0]["argv"] == ["/bin/true"] and execs[0]["maps"]
        assert c["exec_maps"] == execs[0]["maps"]


@live
def test_fork_and_exec(programs: dict[str, str]) -> None:
    t = rec(programs["forkexec"])
    check_plausible(t)
    root, child = t["processes"]
    assert root["parent"] is None and child["parent"] == root["pid"]
    fork = child["start"]["fork"]
    assert fork["parent"] == root["pid"]
    ev = root["events"][fork["event"]]
    assert ev["call"] in ("clone", "fork", "clone3") and ev["ret"] == child["pid"] and ev["thread"] is False
    # the child's munmap of the parent's mapping is the child's, the parent's mprotect after it its own
    big = next(e for e in mem_events(root, "mmap") if e["args"][1] == 1 << 20)
    assert mem_events(child, "munmap")[0]["args"] == [big["ret"], 4096]
    assert {"call": "mprotect", "args": [big["ret"], 8192, 1], "ret": 0} in map(core, root["events"])
    execs = [e for e in child["events"] if e["call"] == "execve"]
    assert len(execs) == 1 and execs[0]["path"] == "/bin/true" and "maps" in execs[0]
    assert mem_events(child).index(mem_events(child, "munmap")[0]) == 0
    assert child["exit"] == {"code": 0} and root["exit"] == {"code": 0}
    # the final maps of the child are true's, not the parent's
    assert programs["forkexec"] not in child["final_maps"] and programs["forkexec"] in root["final_maps"]


@live
def test_threads(programs: dict[str, str]) -> None:
    t = rec(programs["threads"])
    check_plausible(t)
    (p,) = t["processes"]  # the threads are merged into their thread group
    clones = [ev for ev in p["events"] if ev["call"] in ("clone", "clone3")]
    assert len(clones) == 4 and all(ev["thread"] for ev in clones)
    assert all(ev["ret"] > 0 for ev in clones)
    stacks = [ev for ev in mem_events(p, "mmap") if ev["args"][3] & 0x20000]  # MAP_STACK
    assert len(stacks) == 4
    work = [ev for ev in mem_events(p, "mmap") if ev["args"][1] == 3 << 20]
    unmaps = [ev for ev in mem_events(p, "munmap") if ev["args"][1] == 3 << 20]
    assert len(work) == 4 and sorted(e["ret"] for e in work) == sorted(e["args"][0] for e in unmaps)
    # each worker's calls carry its own tid: five threads in all, each thread's calls one after another
    tids = {ev["tid"] for ev in p["events"]}
    assert len(tids) == 5 and p["pid"] in tids and {ev["ret"] for ev in clones} == tids - {p["pid"]}
    for ev in work:
        unmap = next(u for u in unmaps if u["tid"] == ev["tid"])
        assert ev["seq"][1] < unmap["seq"][0]


@live
def test_realloc_uses_mremap(programs: dict[str, str]) -> None:
    t = rec(programs["realloc"])
    check_plausible(t)
    (p,) = t["processes"]
    mremaps = [ev for ev in mem_events(p, "mremap") if ev["ret"] >= 0]
    assert len(mremaps) >= 4
    for ev in mremaps:
        old, old_len, new_len = ev["args"][:3]
        assert new_len > old_len and old % PAGE == 0


def _strace_counts(command: list[str], tmp: Path) -> dict[str, int]:
    out = tmp / "strace.txt"
    subprocess.run(["setarch", "-R", "strace", "-f", "-qq", "-e", "trace=memory", "-c", "-o", str(out), *command],
                   check=True, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    counts = {}
    for line in out.read_text().splitlines():
        tok = line.split()
        if len(tok) >= 5 and tok[0][0].isdigit() and tok[-1] not in ("total",):
            counts[tok[-1]] = int(tok[3])
    return counts


@live
@pytest.mark.skipif(shutil.which("strace") is None or shutil.which("setarch") is None,
                    reason="strace (and setarch) not installed: no cross-check")
@pytest.mark.parametrize("command", [["true"], ["ls", "/"], ["python3", "-c", "pass"], ["bash", "-c", "true"]])
def test_counts_agree_with_strace(command: list[str], tmp_path: Path) -> None:
    expected = _strace_counts(command, tmp_path)
    t = rec(*command)
    got: dict[str, int] = {}
    for p in t["processes"]:
        for ev in mem_events(p):
            got[ev["call"]] = got.get(ev["call"], 0) + 1
    assert got.get("mmap", 0) == expected.get("mmap", 0) > 0
    for call in ("munmap", "mprotect", "brk", "mremap", "madvise"):
        assert got.get(call, 0) == expected.get(call, 0), call


# --- what the recorder cannot follow ------------------------------------------------------------------
def _alive_with(marker: str) -> list[int]:
    """The pids of the processes ``sleep MARKER`` (the traced ones) and of any process whose command line
    names MARKER (the tracer, a recorder: they must be gone too)."""
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        pids.append(int(d))
            except OSError:
                pass
    return pids


def _sleepers(marker: str) -> list[int]:
    out = []
    for pid in _alive_with(marker):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().split(b"\0")[0] == b"sleep":
                    out.append(pid)
        except OSError:
            pass
    return out


@live
def test_timeout_kills_the_whole_tree() -> None:
    marker = "31.4159"
    script = f"sleep {marker} & setsid sleep {marker} & sleep {marker}; wait"
    t0 = time.monotonic()
    with pytest.raises(RecordError, match="timed out after 1 s"):
        rec("bash", "-c", script, timeout=1.0)
    assert time.monotonic() - t0 < 15
    deadline = time.monotonic() + 5
    while _alive_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _alive_with(marker) == []


@live
def test_seccomp_kill_is_an_error(programs: dict[str, str]) -> None:
    with pytest.raises(RecordError, match="SIGSYS"):
        rec(programs["seccomp"])


def _cli(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "vmalab", *args], capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL, timeout=120, **kw)


@live
def test_cli_writes_a_trace(tmp_path: Path) -> None:
    out = tmp_path / "ls.program.json"
    r = _cli("record-program", "-o", str(out), "--", "ls", "-d", "/")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "/\n"  # the command's own output is untouched with -o
    assert re.fullmatch(r"recorded 1 process\(es\), \d+ memory calls -> .*\n", r.stderr)
    t = json.loads(out.read_text())
    assert t["command"] == ["ls", "-d", "/"]
    check_plausible(t)
    # without -o the JSON is stdout and the command's output goes to stderr
    r = _cli("record-program", "--", "ls", "-d", "/")
    assert r.returncode == 0 and json.loads(r.stdout)["format"] == FORMAT and r.stderr.startswith("/\n")


@live
def test_cli_errors_are_one_line(programs: dict[str, str]) -> None:
    r = _cli("record-program", "--", "no-such-command-vmalab")
    assert r.returncode == 2 and r.stderr == "vmalab: error: no-such-command-vmalab: command not found\n"
    r = _cli("record-program", "--", programs["seccomp"])
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and "SIGSYS" in r.stderr


@live
def test_ptrace_refused(tmp_path: Path) -> None:
    """A recorder run under a recorder: its command is already traced, so PTRACE_TRACEME fails: one line,
    exit status 2, and the outer recording shows the inner one's exit."""
    out = tmp_path / "outer.json"
    r = _cli("record-program", "-o", str(out), "--", sys.executable, "-m", "vmalab", "record-program", "--", "true")
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert "vmalab: error: true: ptrace refused: PTRACE_TRACEME: Operation not permitted" in lines
    outer = json.loads(out.read_text())
    assert outer["processes"][0]["exit"] == {"code": 2}


@live
def test_fd_calls(programs: dict[str, str], tmp_path: Path) -> None:
    target = tmp_path / "file"
    t = rec(programs["fdcalls"], str(target))
    check_plausible(t)
    (p,) = t["processes"]
    assert p["exit"] == {"code": 0}
    ev = p["events"]
    opens = [e for e in ev if e["call"] == "openat" and e.get("path") in ("/etc/passwd", str(target))]
    # open, creat and openat2 are recorded as the openat(AT_FDCWD, path, flags, mode) they are
    assert [e["args"] for e in opens] == [[-100, 0, 0], [-100, 0o1101, 0o600], [-100, 2, 0]]
    fd = opens[2]["ret"]
    assert {"call": "ftruncate", "args": [fd, 8192], "ret": 0, "path": str(target)} in map(core, ev)
    (shared,) = [e for e in mem_events(p, "mmap") if e["args"][3] == 1]  # MAP_SHARED
    assert shared["args"][4] == fd and shared["path"] == str(target)
    (dup,) = [e for e in ev if e["call"] == "fcntl_dupfd"]
    assert dup["args"] == [fd, 1030, 10] and dup["ret"] >= 10 and dup["path"] == str(target)
    (memfd,) = [e for e in ev if e["call"] == "memfd_create"]
    assert memfd["args"] == [1] and memfd["name"] == "vmalab" and memfd["path"] == "/memfd:vmalab (deleted)"
    assert {"call": "close_range", "args": [20, 30, 0], "ret": 0} in map(core, ev)
    # the identity of an opened file is the file's own, as os.stat gives it (and the mount's type)
    from vmalab.realfile import mount_of
    for e in opens:
        st = os.stat(e["path"])
        assert e["file"] == {"dev": f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}", "ino": st.st_ino,
                             "size": st.st_size if e["path"] == "/etc/passwd" else 0,
                             "fstype": mount_of(e["path"]).fstype}
    assert shared["file"]["ino"] == os.stat(target).st_ino and shared["file"]["size"] == 8192
    assert memfd["file"]["dev"] == "00:01" and memfd["file"]["fstype"] == "tmpfs"


@live
def test_killing_the_recorder_kills_the_tree() -> None:
    """SIGKILL of the recording Python process: the tracer dies with it (PR_SET_PDEATHSIG) and its
    tracees with the tracer (PTRACE_O_EXITKILL)."""
    marker = "27.1828"
    env = dict(os.environ, PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "vmalab", "record-program", "--", "bash", "-c",
                             f"sleep {marker} & setsid sleep {marker} & sleep {marker}"],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while len(_sleepers(marker)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(_sleepers(marker)) == 3
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 5
    while _alive_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _alive_with(marker) == []
