"""Record a real program's memory syscalls under ptrace into a ProgramTrace (``docs/real-programs.md``).

The work is split as for the scenario runner (:mod:`vmalab.oracle.kernel`): a small C helper,
``tracer.c``, compiled at first use and cached by a hash of its source, runs the command with ASLR off
under ptrace, follows every fork, thread and execve, and writes line records (its header comment
describes them) to a log file; :func:`parse_log` turns the log into the ProgramTrace JSON object
(format ``vmalab-program/1``, ``"source": "record"``):

* one process entry per thread group (a thread's calls go to its tgid's entry), in the order the
  processes appeared; the command's own process starts with ``{"exec": ...}`` (its first execve, not
  repeated among its events), a forked one with ``{"fork": {"parent": PID, "event": I}}`` where ``I`` indexes
  the parent's clone/fork/vfork/clone3 event (``"shared_vm": true`` when the child shares the parent's
  mm until it execs: vfork, posix_spawn);
* events: the memory calls with their integer arguments as the kernel reads them and the return (an
  address, 0, or ``-errno``); the fd calls (``openat``, also for ``open``, ``creat`` and ``openat2`` as
  the ``openat(AT_FDCWD, ...)`` they are; ``close``, ``close_range``, ``dup``/``dup2``/``dup3``,
  ``fcntl_dupfd`` (F_DUPFD, F_DUPFD_CLOEXEC), ``memfd_create`` (its ``name``), ``ftruncate``) with
  ``path``: the file the descriptor names (``readlink /proc/PID/fd/N``, for ``openat`` the opened file, for
  ``mmap`` of a descriptor the file it maps) and ``arg`` the string the program passed when it differs;
  ``execve`` (also for ``execveat``: path, argv, envp, ret, and the new image's ``maps``/``smaps``); the
  clone family (``args``: the clone flags, for fork/vfork those the kernel uses; ``thread``; ``vm`` when
  the child shares the mm without being a thread); ``exit_group``;
* on every event ``tid``, the thread that made the call, and ``seq``: ``[entry, exit]``, the values of
  one counter over the whole recording, incremented at every syscall-entry and -exit stop the tracer
  sees (an ``exit_group`` has no exit stop: ``[entry, entry]``), so calls of two threads that were in
  flight at once have overlapping intervals;
* ``file`` on the events that name a file (``openat``, ``memfd_create``, ``execve`` and its ``start.exec``,
  ``mmap`` of a descriptor): ``{"dev": "MAJ:MIN"`` (hex, as maps prints it), ``"ino"``, ``"size"``,
  ``"fstype"}`` as the tracer saw it (stat/statfs of ``/proc/PID/fd/N`` at the call's exit, for mmap at
  its entry; for execve of the path at its entry), so a replay need not stat the local file;
* ``exec_maps``/``exec_smaps`` after the first exec, ``final_maps``/``final_smaps`` at the exit stop,
  ``exit`` (``{"code": N}`` or ``{"signal": "SIGSEGV"}``).

A program the tracer cannot follow gives :class:`RecordError` with a one-line message: ptrace refused, a
setuid/setgid binary when not root (the kernel would run it without its privileges), a process killed by
SIGSYS (a seccomp filter), a timeout (the tracer's process group is killed, and PTRACE_O_EXITKILL kills
every tracee with it).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from vmalab.oracle.cbuild import CBuildError, build_c_helper

__all__ = ["RecordError", "ensure_tracer", "parse_log", "record_program", "FORMAT", "MEMORY_CALLS", "memory_calls",
           "memory_call_count", "recording_differences", "mask_varying", "masked_maps"]

FORMAT = "vmalab-program/1"
TRACER_SOURCE = Path(__file__).with_name("tracer.c")
CFLAGS = ("-O2", "-Wall")
DEFAULT_TIMEOUT = 600.0

#: the memory calls and how many of their arguments are recorded (the kernel's order)
MEMORY_CALLS: dict[str, int] = {
    "mmap": 6, "munmap": 2, "mprotect": 3, "mremap": 5, "brk": 1, "madvise": 3, "mlock": 2, "mlock2": 3,
    "munlock": 2, "mlockall": 1, "munlockall": 0, "mseal": 3, "msync": 3, "mincore": 3,
}
#: the descriptor calls: argument count, and which arguments are ints (file descriptors) read signed;
#: ``open``, ``creat`` and ``openat2`` are written as the ``openat`` they are (AT_FDCWD, flags, mode)
_FD_CALLS: dict[str, tuple[int, tuple[int, ...]]] = {
    "openat": (3, (0,)), "close": (1, (0,)), "close_range": (3, ()), "dup": (1, (0,)), "dup2": (2, (0, 1)),
    "dup3": (3, (0, 1)), "fcntl_dupfd": (3, (0,)), "memfd_create": (1, ()), "ftruncate": (2, (0,)),
}
_OPEN_CALLS = ("open", "creat", "openat", "openat2")
_AT_FDCWD = -100
_O_CREAT_WRONLY_TRUNC = 0o1101
_SIGCHLD = 17
_CLONE_THREAD = 0x00010000
_CLONE_VM = 0x00000100
_CLONE_VFORK = 0x00004000

_tracer_path: str | None = None

#: statfs f_type -> file-system name, for a file whose device is not mounted (memfd, an unlinked tmpfs)
_FS_MAGIC: dict[int, str] = {
    0x01021994: "tmpfs", 0x958458F6: "hugetlbfs", 0xEF53: "ext4", 0x58465342: "xfs", 0x9123683E: "btrfs",
    0x794C7630: "overlay", 0x9FA0: "proc", 0x62656572: "sysfs", 0x1CD1: "devpts", 0x6969: "nfs",
    0x2FC12FC1: "zfs", 0xF2F52010: "f2fs", 0x73717368: "squashfs", 0x4D44: "vfat", 0x65735546: "fuse",
    0x42494E4D: "binfmt_misc", 0x27E0EB: "cgroup", 0x63677270: "cgroup2", 0xBAD1DEA: "futexfs",
    0x50495045: "pipefs", 0x534F434B: "sockfs", 0x09041934: "anon_inode_fs", 0x6E736673: "nsfs",
}


class RecordError(Exception):
    """Recording failed: the message is one line naming the reason."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


# --- the helper ---------------------------------------------------------------------------------------
def ensure_tracer() -> str:
    """Compile ``tracer.c`` if needed and return the helper's path
    (:func:`vmalab.oracle.cbuild.build_c_helper`: cached in ``$VMALAB_CACHE`` by a hash of the source, the
    compiler and the flags)."""
    global _tracer_path
    try:
        _tracer_path = build_c_helper(TRACER_SOURCE, "tracer", CFLAGS)[0]
    except CBuildError as e:
        raise RecordError(str(e)) from None
    return _tracer_path


# --- recording ----------------------------------------------------------------------------------------
def _resolve(command: list[str], env: dict[str, str] | None = None) -> str:
    if not command:
        raise RecordError("no command given")
    name = command[0]
    path = name if "/" in name else shutil.which(name, path=(env or os.environ).get("PATH", os.defpath))
    if not path or not os.path.isfile(path):
        raise RecordError(f"{name}: command not found")
    if not os.access(path, os.X_OK):
        raise RecordError(f"{name}: not executable")
    return path


def check_followable(path: str, euid: int | None = None) -> None:
    """Refuse what a tracer cannot record faithfully: a setuid or setgid binary run by a user other than
    root (under ptrace the kernel runs it without its privileges, so the recording would not be what the
    program does)."""
    euid = os.geteuid() if euid is None else euid
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise RecordError(f"{path}: {e.strerror or e}") from None
    if mode & (stat.S_ISUID | stat.S_ISGID) and euid != 0:
        kind = "setuid" if mode & stat.S_ISUID else "setgid"
        raise RecordError(f"{path} is a {kind} binary: under ptrace it would run without its privileges "
                          "(record it as root)")


def record_program(command: list[str], *, timeout: float = DEFAULT_TIMEOUT, stdout_to_stderr: bool = False,
                   stdin: Any = None, stdout: Any = None, stderr: Any = None,
                   env: dict[str, str] | None = None, cwd: str | None = None) -> dict[str, Any]:
    """Run ``command`` under the tracer with ASLR off and return its ProgramTrace JSON object.

    The command inherits this process's environment, working directory, stdin, stdout (stderr when
    ``stdout_to_stderr``) and stderr, or the ``stdin``/``stdout``/``stderr``/``env``/``cwd`` given (as for
    ``subprocess``; the environment is recorded in ``start.exec.envp``, and its size moves the stack).
    ``timeout``: seconds until the whole traced tree is killed and :class:`RecordError` raised."""
    if not sys.platform.startswith("linux") or os.uname().machine != "x86_64":
        raise RecordError(f"recording needs Linux on x86_64 (this is {sys.platform} {os.uname().machine})")
    path = _resolve(list(command), env)
    check_followable(path)
    tracer = ensure_tracer()
    with tempfile.TemporaryDirectory(prefix="vmalab-record-") as tmp:
        log = os.path.join(tmp, "trace.log")
        argv = ["vmalab-tracer", str(os.getpid()), log, "1" if stdout_to_stderr else "0", path, *command]
        try:
            # the tracer's own messages go to its log (err records); its stderr is the command's
            proc = subprocess.Popen(argv, executable=tracer, stdin=stdin, stdout=stdout, stderr=stderr,
                                    env=env, cwd=cwd, start_new_session=True)
        except OSError as e:
            raise RecordError(f"cannot start the tracer: {e.strerror or e}") from None
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(proc)
            raise RecordError(f"{command[0]}: timed out after {timeout:g} s (the traced processes were killed)") \
                from None
        except BaseException:
            _kill(proc)
            raise
        # the tracer is gone: PTRACE_O_EXITKILL killed what it still traced; the group catches the rest
        _killpg(proc.pid)
        try:
            with open(log, "rb") as f:
                data = f.read()
        except OSError:
            data = b""
    if proc.returncode != 0:
        msg = _error_record(data) or f"the tracer failed with status {proc.returncode}"
        raise RecordError(f"{command[0]}: {msg}")
    return parse_log(data, list(command), kernel=os.uname().release, mountinfo=_read_mountinfo())


def _read_mountinfo() -> str:
    try:
        with open("/proc/self/mountinfo") as f:
            return f.read()
    except OSError:
        return ""


def _fstypes(mountinfo: str) -> dict[str, str]:
    """``MAJ:MIN`` (decimal, as mountinfo's third field) -> the file-system type of the first mount."""
    out: dict[str, str] = {}
    for line in mountinfo.splitlines():
        pre, sep, post = line.partition(" - ")
        f = pre.split()
        if sep and len(f) >= 3 and post.split():
            out.setdefault(f[2], post.split()[0])
    return out


def _file_identity(token: str, fstypes: dict[str, str]) -> dict[str, Any]:
    """The tracer's ``file=DEV,INO,SIZE,FSMAGIC`` as the ``file`` object of an event."""
    dev, ino, size, magic = (int(x) for x in token.split(","))
    major, minor = os.major(dev), os.minor(dev)
    fstype = fstypes.get(f"{major}:{minor}") or _FS_MAGIC.get(magic) or (f"0x{magic:x}" if magic else "unknown")
    return {"dev": f"{major:02x}:{minor:02x}", "ino": ino, "size": size, "fstype": fstype}


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _kill(proc: subprocess.Popen[bytes]) -> None:
    _killpg(proc.pid)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def _error_record(data: bytes) -> str | None:
    for line in data.split(b"\n"):
        if line.startswith(b"err "):
            return line[4:].decode("utf-8", "replace")
    return None


# --- the log ------------------------------------------------------------------------------------------
def _hex(token: str) -> str:
    return "" if token == "-" else bytes.fromhex(token).decode("utf-8", "surrogateescape")


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def _signal_name(n: int) -> str:
    try:
        return signal.Signals(n).name
    except ValueError:
        return f"SIG{n}"


class _Proc:
    def __init__(self, pid: int, parent: int | None, start: dict[str, Any] | None) -> None:
        self.entry: dict[str, Any] = {"pid": pid, "parent": parent, "start": start, "events": []}
        self.pending_exec_maps: tuple[str, str | None] | None = None

    @property
    def events(self) -> list[dict[str, Any]]:
        ev: list[dict[str, Any]] = self.entry["events"]
        return ev


def parse_log(data: bytes, command: list[str], kernel: str | None = None,
              mountinfo: str | None = None) -> dict[str, Any]:
    """Turn the tracer's log into the ProgramTrace JSON object (the module docstring describes it).
    ``mountinfo`` (``/proc/self/mountinfo`` of the recording machine) names the file systems of the
    ``file`` identities; without it the file-system magic number of statfs decides."""
    fstypes = _fstypes(mountinfo or "")
    procs: list[_Proc] = []
    by_tgid: dict[int, _Proc] = {}
    tid_tgid: dict[int, int] = {}
    pending: dict[int, dict[str, Any]] = {}  # tid -> execve path/argv/envp read at entry
    waiting_fork: dict[int, _Proc] = {}  # child tid -> the child process whose fork event is still to come
    notes: list[str] = []
    errors: list[str] = []
    root: _Proc | None = None
    pos = 0
    n = len(data)
    while pos < n:
        end = data.find(b"\n", pos)
        if end < 0:
            end = n
        line = data[pos:end].decode("utf-8", "surrogateescape")
        pos = end + 1
        if not line:
            continue
        kind, _, rest = line.partition(" ")
        f = rest.split(" ")
        if kind == "blob":
            length = int(f[2])
            text = data[pos:pos + length].decode("utf-8", "surrogateescape")
            pos += length + 1
            p = by_tgid.get(int(f[0]))
            if p is None:
                continue
            what = f[1]
            if what == "exec_maps":
                p.pending_exec_maps = (text, None)
            elif what == "exec_smaps" and p.pending_exec_maps is not None:
                p.pending_exec_maps = (p.pending_exec_maps[0], text)
            elif what in ("final_maps", "final_smaps"):
                p.entry[what] = text
        elif kind == "start":
            pid = int(f[0])
            root = _Proc(pid, None, None)
            procs.append(root)
            by_tgid[pid] = root
            tid_tgid[pid] = pid
        elif kind == "task":
            ctid, ctgid, ptid = int(f[0]), int(f[1]), int(f[2])
            ptgid = tid_tgid.get(ptid, ptid)
            tid_tgid[ctid] = ctgid
            if ctgid != ptgid:
                child = _Proc(ctgid, ptgid, {"fork": {"parent": ptgid, "event": None}})
                procs.append(child)
                by_tgid[ctgid] = child
                waiting_fork[ctid] = child
        elif kind in ("xpath", "xarg", "xenv"):
            tid = int(f[0])
            if kind == "xpath":
                pending[tid] = {"path": _hex(f[1]), "argv": [], "envp": []}
            elif tid in pending:
                pending[tid]["argv" if kind == "xarg" else "envp"].append(_hex(f[1]))
        elif kind == "exec":
            tgid, old = int(f[0]), int(f[1])
            if old in pending:
                pending[tgid] = pending.pop(old)
            p = by_tgid.get(tgid)
            if p is not None:
                p.entry.pop("final_maps", None)
                p.entry.pop("final_smaps", None)
        elif kind == "sys":
            tid, tgid, name = int(f[0]), int(f[1]), f[2]
            p = by_tgid.get(tgid)
            if p is None:
                p = _Proc(tgid, None, None)
                procs.append(p)
                by_tgid[tgid] = p
            _sys_event(p, tid, name, f[3:], pending, waiting_fork, fstypes)
        elif kind == "exit":
            tid, tgid, how, value = int(f[0]), int(f[1]), f[2], int(f[3])
            p = by_tgid.get(tgid)
            if tid == tgid and p is not None:
                p.entry["exit"] = {"code": value} if how == "code" else {"signal": _signal_name(value)}
                if how == "signal" and value == signal.SIGSYS:
                    errors.append(f"process {tgid} was killed by SIGSYS (a seccomp filter): the recorder "
                                  "cannot follow it")
        elif kind == "warn":
            if rest.startswith("setid "):
                errors.append(f"{rest[6:]} is a setuid or setgid binary: under ptrace it ran without its "
                              "privileges")
            else:
                notes.append(rest)
        elif kind == "err":
            errors.append(rest)
        elif kind == "end":
            pass
    if errors:
        raise RecordError(errors[0])
    if root is None or root.entry["start"] is None:
        raise RecordError("the log has no exec of the command")
    out: dict[str, Any] = {"format": FORMAT, "source": "record", "kernel": kernel, "command": list(command),
                           "processes": [p.entry for p in procs if p.entry["start"] is not None]}
    if notes:
        out["notes"] = notes
    return out


def _sys_event(p: _Proc, tid: int, name: str, f: list[str], pending: dict[int, dict[str, Any]],
               waiting_fork: dict[int, _Proc], fstypes: dict[str, str] | None = None) -> None:
    ret = None if f[0] == "-" else int(f[0])
    regs = [int(x) for x in f[1:7]]
    extra = dict(tok.split("=", 1) for tok in f[7:] if "=" in tok)
    ev: dict[str, Any] = {"call": name}
    file = _file_identity(extra["file"], fstypes or {}) if "file" in extra else None
    ev_tail: dict[str, Any] = {"tid": tid}
    if "seq" in extra:
        ev_tail["seq"] = [int(x) for x in extra["seq"].split(",")]
    if name in MEMORY_CALLS:
        args = regs[:MEMORY_CALLS[name]]
        if name == "mmap":
            args[4] = _s32(args[4])
        ev["args"] = args
        ev["ret"] = ret
        if name == "mmap" and "fdpath" in extra:
            ev["path"] = _hex(extra["fdpath"])
        if name == "mmap" and file is not None:
            ev["file"] = file
    elif name in _FD_CALLS or name in _OPEN_CALLS:
        if name == "openat":
            regs = [regs[0], regs[2], regs[3]]  # dirfd, flags, mode (the path pointer is "path")
        elif name == "open":
            regs = [_AT_FDCWD & 0xFFFFFFFF, regs[1], regs[2]]
        elif name == "creat":
            regs = [_AT_FDCWD & 0xFFFFFFFF, _O_CREAT_WRONLY_TRUNC, regs[1]]
        elif name == "openat2":
            regs = [regs[0], int(extra.get("cflags", 0)), int(extra.get("cmode", 0))]
        elif name == "memfd_create":
            regs = [regs[1]]  # the flags (the name is the event's "name")
        if name in _OPEN_CALLS:
            ev["call"] = name = "openat"
        count, signed = _FD_CALLS[name]
        ev["args"] = [_s32(v) if i in signed else v for i, v in enumerate(regs[:count])]
        ev["ret"] = ret
        arg = _hex(extra["path"]) if "path" in extra else None
        path = _hex(extra["fdpath"]) if "fdpath" in extra else None
        if name == "memfd_create":
            ev["name"] = arg
        elif arg is not None and arg != path:
            ev["arg"] = arg
        if name == "openat" and path is None:
            path = arg
        if path is not None:
            ev["path"] = path
        if file is not None and name in ("openat", "memfd_create"):
            ev["file"] = file
    elif name in ("clone", "clone3", "fork", "vfork"):
        if name == "clone":
            flags: int | None = regs[0]
        elif name == "clone3":
            flags = int(extra["cflags"]) if "cflags" in extra else None
        else:  # what the kernel's fork and vfork pass to kernel_clone
            flags = (_CLONE_VM | _CLONE_VFORK if name == "vfork" else 0) | _SIGCHLD
        ev["args"] = [flags] if flags is not None else []
        ev["ret"] = ret
        ev["thread"] = bool(flags and flags & _CLONE_THREAD)
        if flags and flags & _CLONE_VM and not flags & _CLONE_THREAD:
            ev["vm"] = True
        child = waiting_fork.pop(ret, None) if ret is not None and ret > 0 else None
        if child is not None:
            child.entry["start"]["fork"]["event"] = len(p.events)
            if ev.get("vm"):
                child.entry["start"]["fork"]["shared_vm"] = True
    elif name in ("execve", "execveat"):
        ev["call"] = "execve"  # execveat: the path as given (relative to its dirfd)
        info = pending.pop(tid, {"path": "", "argv": [], "envp": []})
        if file is not None and ret == 0:
            info["file"] = file
        ev.update(info)
        ev["ret"] = ret
        maps, smaps = p.pending_exec_maps or (None, None)
        p.pending_exec_maps = None
        if ret == 0 and maps is not None:
            ev["maps"] = maps
            ev["smaps"] = smaps
            if "exec_maps" not in p.entry:
                p.entry["exec_maps"] = maps
                p.entry["exec_smaps"] = smaps
        if p.entry["start"] is None:  # the command's own first execve: the process's start, not an event
            if ret != 0:
                return
            p.entry["start"] = {"exec": info}
            return
    elif name == "exit_group":
        ev["args"] = [regs[0]]
    else:
        return
    ev.update(ev_tail)
    p.events.append(ev)


# --- comparing two recordings of one command -------------------------------------------------------------
_TMP_CC = re.compile(r"/tmp/cc[A-Za-z0-9]{6}\.")


def mask_varying(name: str) -> str:
    """A path or maps name with what varies between two recordings of one command replaced: the inode
    number of a pipe or socket, the random part of a compiler's temporary file (``/tmp/ccAbC123.s``)."""
    name = re.sub(r"^(pipe|socket):\[\d+\]$", r"\1:[N]", name)
    return _TMP_CC.sub("/tmp/ccXXXXXX.", name)


#: files whose inode number varies between recordings: made for the recording (compiled test programs,
#: generated input under /tmp/vmalab-programs, a compiler's temporary files)
VARYING_INODES = ("/tmp/",)


def masked_maps(text: str | None) -> list[str]:
    """maps lines with the varying names masked, and their inode too (a temporary file's or a pipe's, or
    that of any file under :data:`VARYING_INODES`)."""
    out = []
    for line in (text or "").splitlines():
        f = line.split(None, 5)
        if len(f) == 6 and (mask_varying(f[5]) != f[5] or f[5].startswith(VARYING_INODES)):
            f[4] = "N"
            f[5] = mask_varying(f[5])
        out.append(" ".join(f))
    return out


def memory_calls(proc: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The memory calls of a process entry as ``(call, args, ret)``, an mmap's descriptor replaced by the
    (masked) path of the file it maps: what must be equal in two recordings of one command."""
    out = []
    for ev in proc["events"]:
        if ev["call"] not in MEMORY_CALLS:
            continue
        args = list(ev["args"])
        if ev["call"] == "mmap" and args[4] >= 0 and "path" in ev:
            args[4] = mask_varying(ev["path"])
        out.append((ev["call"], tuple(args), ev.get("ret")))
    return out


def memory_call_count(trace: dict[str, Any]) -> int:
    return sum(len(memory_calls(p)) for p in trace["processes"])


def _threaded(proc: dict[str, Any]) -> bool:
    return any(ev.get("thread") for ev in proc["events"])


def recording_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two recordings of one command, apart from what varies from run to run: pids
    and thread ids, the ``seq`` counters, pipe and socket inodes, compiler temporary file names, the
    inodes of files under :data:`VARYING_INODES`.  Compared per process (in order): how it started, its
    memory calls ``(call, args, ret)`` (an mmap's fd as its file's path; in a process with threads as a
    multiset, since two threads' calls in flight at once may run in either order), its post-exec and
    final maps.  Empty when they agree."""
    diffs: list[str] = []
    po, pn = old["processes"], new["processes"]
    if len(po) != len(pn):
        return [f"{len(po)} processes recorded before, {len(pn)} now"]
    for i, (a, b) in enumerate(zip(po, pn, strict=True)):
        where = f"process {i} (pid {a['pid']} before, {b['pid']} now)"
        ka, kb = next(iter(a["start"])), next(iter(b["start"]))
        if ka != kb:
            diffs.append(f"{where}: started by {ka} before, by {kb} now")
        elif ka == "fork" and a["start"]["fork"]["event"] != b["start"]["fork"]["event"]:
            diffs.append(f"{where}: forked at parent event {a['start']['fork']['event']} before, "
                         f"{b['start']['fork']['event']} now")
        ma, mb = memory_calls(a), memory_calls(b)
        if _threaded(a) or _threaded(b):
            ma, mb = sorted(ma, key=repr), sorted(mb, key=repr)
        if ma != mb:
            if len(ma) != len(mb):
                diffs.append(f"{where}: {len(ma)} memory calls before, {len(mb)} now")
            for j, (x, y) in enumerate(zip(ma, mb, strict=False)):
                if x != y:
                    diffs.append(f"{where}: memory call {j}: {x} before, {y} now")
                    break
        for key in ("exec_maps", "final_maps"):
            la, lb = masked_maps(a.get(key)), masked_maps(b.get(key))
            if la != lb:
                first = next((f"{x!r} before, {y!r} now" for x, y in zip(la, lb, strict=False) if x != y),
                             f"{len(la)} lines before, {len(lb)} now")
                diffs.append(f"{where}: {key} differ: {first}")
    return diffs
