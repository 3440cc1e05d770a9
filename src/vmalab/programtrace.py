"""The ProgramTrace: what a real program did to its address space, process by process.

A ProgramTrace (JSON format ``vmalab-program/1``, described in docs/real-programs.md) is written by the
recorder (``vmalab record-program``, :mod:`vmalab.oracle.record_program`) or made from ``strace`` output
(:mod:`vmalab.strace`), and replayed on the model by :mod:`vmalab.replay`.  It has no kernel counterpart:
it is the list of ``struct task_struct``s of one program run, each with the syscalls (memory calls and
the descriptor calls those need) that changed its ``struct mm_struct``.

One entry per process (per thread group: a thread's memory events go into its leader's entry, since
they share one mm).  A process starts from an ``exec`` (the traced ``execve`` of the first program), a
``fork`` (a copy of its parent's mm at one of the parent's events) or a ``maps`` text (an mm imported
from ``/proc/PID/maps``).  ``load``/``loads`` validate: a problem is a :class:`ProgramTraceError` with one
line naming the process and the event.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["FORMAT", "MEMORY_CALLS", "FD_CALLS", "PROCESS_CALLS", "Event", "FileId", "ProcessTrace", "ProgramTrace",
           "ProgramTraceError", "Start", "load", "loads", "save", "dumps", "is_program_trace"]

FORMAT = "vmalab-program/1"

#: memory syscalls -> the numbers of arguments a trace may give (the kernel's integer registers; strace
#: leaves out mremap's new_address without MREMAP_FIXED and mincore's vector is a pointer we drop)
MEMORY_CALLS: dict[str, tuple[int, ...]] = {
    "mmap": (6,), "munmap": (2,), "mprotect": (3,), "mremap": (4, 5), "brk": (1,), "madvise": (3,),
    "mlock": (2,), "mlock2": (3,), "munlock": (2,), "mlockall": (1,), "munlockall": (0,), "mseal": (2, 3),
    "msync": (3,), "mincore": (2, 3),
}
#: descriptor calls the replay follows (they decide which file an mmap maps) -> argument counts
FD_CALLS: dict[str, tuple[int, ...]] = {
    "openat": (3, 4), "open": (2, 3), "creat": (1, 2), "openat2": (3, 4), "close": (1,), "close_range": (3,),
    "dup": (1,), "dup2": (2,), "dup3": (3,), "fcntl_dupfd": (3,), "memfd_create": (1,), "ftruncate": (2,),
}
OPEN_CALLS = ("openat", "open", "creat", "openat2")
#: process-life calls -> argument counts (execve carries path/argv/envp instead of arguments)
PROCESS_CALLS: dict[str, tuple[int, ...]] = {
    "execve": (0,), "clone": (0, 1), "clone3": (0, 1), "fork": (0, 1), "vfork": (0, 1), "exit_group": (1,),
}
ALL_CALLS = {**MEMORY_CALLS, **FD_CALLS, **PROCESS_CALLS}

CLONE_VM = 0x100
CLONE_VFORK = 0x4000
CLONE_THREAD = 0x10000
SIGCHLD = 17
O_WRONLY, O_CREAT, O_TRUNC = 0o1, 0o100, 0o1000


class ProgramTraceError(ValueError):
    """A ProgramTrace that cannot be used: one line naming the process and the event."""


@dataclass(frozen=True)
class FileId:
    """The identity of a file as the recorder saw it (``fstat`` of the descriptor, ``stat`` of an execve's
    path): device (``MAJ:MIN`` in hex, as maps prints it), inode number, size and file-system type
    (which decides the file's ``get_unmapped_area``).  The replay models the file from this, not from
    this machine's ``stat``, so a recording replays the same anywhere."""

    dev: str
    ino: int
    size: int
    fstype: str

    @property
    def dev_pair(self) -> tuple[int, int]:
        major, _, minor = self.dev.partition(":")
        return int(major, 16), int(minor, 16)

    def to_json(self) -> dict[str, Any]:
        return {"dev": self.dev, "ino": self.ino, "size": self.size, "fstype": self.fstype}


#: event keys the model knows (the rest of an event's keys are kept in ``Event.extra``, round-tripped)
_EVENT_KEYS = ("call", "args", "ret", "path", "arg", "name", "argv", "envp", "thread", "vm", "maps", "smaps", "tid",
               "seq", "file", "line")


@dataclass
class Event:
    """One syscall of one process: ``call`` (a name of :data:`ALL_CALLS`), its integer arguments as the
    kernel's registers (``openat``: ``[dirfd, flags, mode]``, the path is ``path``), and its return (an
    address, 0, a descriptor or ``-errno``; None when the call did not return, as exit_group).  ``path`` is
    the file a descriptor call or an mmap of a descriptor names (the path ``/proc/PID/maps`` would show),
    ``arg`` the path string the program passed when it differs, ``name`` a memfd's name, ``file`` the
    file's identity (:class:`FileId`), ``argv``/``envp`` those of an execve (``envp`` None when the trace
    did not show it), ``thread`` tells a clone that made a thread, ``vm`` one whose child shares the mm
    without being a thread (vfork, posix_spawn), ``maps``/``smaps`` the post-exec maps when recorded,
    ``tid`` the thread that made the call, ``seq`` ``[entry, exit]`` of the recorder's global stop counter
    (two calls whose intervals overlap were in flight at once), ``line`` the line of the strace log it came
    from, ``extra`` any other key of the JSON event (kept as it is)."""

    call: str
    args: list[int] = field(default_factory=list)
    ret: int | None = None
    path: str | None = None
    argv: list[str] | None = None
    envp: list[str] | None = None
    thread: bool | None = None
    vm: bool | None = None
    maps: str | None = None
    smaps: str | None = None
    tid: int | None = None
    line: int | None = None
    seq: tuple[int, int] | None = None
    file: FileId | None = None
    arg: str | None = None
    name: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def clone_flags(self) -> int:
        """The clone flags of a clone/fork/vfork/clone3 event (0 for another call): ``args[0]`` when
        given, with CLONE_VM added for ``vm`` and CLONE_THREAD|CLONE_VM for ``thread``."""
        if self.call == "vfork":
            return CLONE_VM | CLONE_VFORK | SIGCHLD
        if self.call == "fork":
            return SIGCHLD
        if self.call not in ("clone", "clone3"):
            return 0
        flags = self.args[0] if self.args else 0
        if self.vm:
            flags |= CLONE_VM
        if self.thread:
            flags |= CLONE_THREAD | CLONE_VM
        return flags

    @property
    def open_flags(self) -> int:
        """The open flags of an ``openat`` event (``args`` ``[dirfd, flags, mode]``; ``creat`` and ``open``
        of older traces: their own layouts)."""
        a = self.args
        if self.call == "creat":
            return O_WRONLY | O_CREAT | O_TRUNC
        if self.call == "open":
            return a[1] if len(a) > 1 else 0  # [path pointer, flags, mode]
        if self.call == "openat" and len(a) >= 2:
            return a[1]
        return 0  # openat2: the flags are in struct open_how

    def concurrent_with(self, other: Event) -> bool:
        """Whether this call and ``other`` were in flight at the same time in different threads (their
        ``seq`` intervals overlap): ptrace cannot tell which took ``mmap_lock`` first."""
        if self.seq is None or other.seq is None or self.tid is None or other.tid is None or self.tid == other.tid:
            return False
        return self.seq[0] < other.seq[1] and other.seq[0] < self.seq[1]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"call": self.call}
        if self.call != "execve" or self.args:
            out["args"] = list(self.args)
        for key in ("path", "arg", "name", "argv", "envp", "ret", "thread", "vm", "maps", "smaps", "tid", "line"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.seq is not None:
            out["seq"] = list(self.seq)
        if self.file is not None:
            out["file"] = self.file.to_json()
        out.update(self.extra)
        return out


@dataclass
class Start:
    """How a process began: ``kind`` is ``exec`` (``path``, ``argv``, ``envp``, ``file``: the identity of the
    executable), ``fork`` (``parent`` and ``event``, the index of the clone event in the parent's events;
    ``shared_vm`` when the child shares the parent's mm until its execve: vfork, posix_spawn) or ``maps``
    (``maps``, ``smaps``, ``start_brk``)."""

    kind: str
    path: str | None = None
    argv: list[str] | None = None
    envp: list[str] | None = None
    parent: int | None = None
    event: int | None = None
    maps: str | None = None
    smaps: str | None = None
    start_brk: int | None = None
    file: FileId | None = None
    shared_vm: bool | None = None

    def to_json(self) -> dict[str, Any]:
        if self.kind == "exec":
            x: dict[str, Any] = {"path": self.path, "argv": self.argv, "envp": self.envp}
            if self.file is not None:
                x["file"] = self.file.to_json()
            return {"exec": x}
        if self.kind == "fork":
            f: dict[str, Any] = {"parent": self.parent, "event": self.event}
            if self.shared_vm is not None:
                f["shared_vm"] = self.shared_vm
            return {"fork": f}
        return {"maps": self.maps, "smaps": self.smaps, "start_brk": self.start_brk}


@dataclass
class ProcessTrace:
    """One process (thread group) of a ProgramTrace."""

    pid: int
    start: Start
    parent: int | None = None
    events: list[Event] = field(default_factory=list)
    exec_maps: str | None = None
    exec_smaps: str | None = None
    final_maps: str | None = None
    final_smaps: str | None = None
    #: how it ended: {"code": N} or {"signal": "SIGSEGV"} (None: not seen)
    exit: dict[str, Any] | None = None
    #: other keys of the JSON process entry (kept as they are)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"pid": self.pid, "parent": self.parent, "start": self.start.to_json()}
        for key in ("exec_maps", "exec_smaps"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        out["events"] = [e.to_json() for e in self.events]
        for key in ("final_maps", "final_smaps", "exit"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        out.update(self.extra)
        return out


@dataclass
class ProgramTrace:
    """A program run: its processes in the order they were created (a parent before its children)."""

    processes: list[ProcessTrace]
    source: str = "strace"
    kernel: str | None = None
    command: list[str] = field(default_factory=list)
    #: the recorder's notes (what it could not record), and the loader's (a converted older layout)
    notes: list[str] = field(default_factory=list)
    #: other top-level keys of the JSON (kept as they are)
    extra: dict[str, Any] = field(default_factory=dict)

    def process(self, pid: int) -> ProcessTrace:
        for p in self.processes:
            if p.pid == pid:
                return p
        raise KeyError(pid)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format": FORMAT, "source": self.source, "kernel": self.kernel,
                               "command": list(self.command), "processes": [p.to_json() for p in self.processes]}
        if self.notes:
            out["notes"] = list(self.notes)
        out.update(self.extra)
        return out

    def validate(self) -> None:
        """Raise :class:`ProgramTraceError` (one line) when the trace cannot be replayed as written."""
        seen: dict[int, ProcessTrace] = {}
        for p in self.processes:
            where = f"process {p.pid}"
            if p.pid in seen:
                raise ProgramTraceError(f"{where}: listed twice")
            if p.start.kind == "fork":
                parent = seen.get(p.start.parent if p.start.parent is not None else -1)
                if parent is None:
                    raise ProgramTraceError(f"{where}: forked from process {p.start.parent}, which is not "
                                            f"listed before it")
                ev = p.start.event
                if ev is None or not 0 <= ev < len(parent.events) or parent.events[ev].call not in (
                        "clone", "clone3", "fork", "vfork"):
                    raise ProgramTraceError(f"{where}: start event {ev} of process {parent.pid} is not a clone "
                                            f"or fork event")
            elif p.start.kind == "exec":
                if not p.start.path:
                    raise ProgramTraceError(f"{where}: start exec has no path")
            elif p.start.kind != "maps":  # maps text None: to be given to the replay (--maps)
                raise ProgramTraceError(f"{where}: unknown start {p.start.kind!r}")
            for i, e in enumerate(p.events):
                _validate_event(f"{where} event {i} ({e.call})", e)
            seen[p.pid] = p


def _validate_event(where: str, e: Event) -> None:
    counts = ALL_CALLS.get(e.call)
    if counts is None:
        raise ProgramTraceError(f"{where}: unknown call (known: {', '.join(sorted(ALL_CALLS))})")
    if not all(isinstance(a, int) and not isinstance(a, bool) for a in e.args):
        raise ProgramTraceError(f"{where}: args must be integers, got {e.args!r}")
    if len(e.args) not in counts:
        want = " or ".join(str(c) for c in counts)
        raise ProgramTraceError(f"{where}: takes {want} argument(s), got {len(e.args)}")
    if e.ret is not None and (not isinstance(e.ret, int) or isinstance(e.ret, bool)):
        raise ProgramTraceError(f"{where}: ret must be an integer or null, got {e.ret!r}")
    if e.call in MEMORY_CALLS and e.ret is None:
        raise ProgramTraceError(f"{where}: a memory call needs its return value")
    if e.call == "execve" and e.ret == 0:
        if not e.path:
            raise ProgramTraceError(f"{where}: execve needs a path")
        if e.argv is None or not all(isinstance(a, str) for a in e.argv):
            raise ProgramTraceError(f"{where}: execve needs argv, a list of strings")
    if e.call in OPEN_CALLS and e.ret is not None and e.ret >= 0 and not e.path:
        raise ProgramTraceError(f"{where}: a successful openat needs its path")
    if e.seq is not None and not e.seq[0] <= e.seq[1]:
        raise ProgramTraceError(f"{where}: seq {list(e.seq)} ends before it starts")


# -- JSON ---------------------------------------------------------------------------------------------
def _get(d: dict[str, Any], key: str, types: type | tuple[type, ...], where: str, default: Any = ...) -> Any:
    if key not in d or d[key] is None:
        if default is ...:
            raise ProgramTraceError(f"{where}: missing {key!r}")
        return default
    value = d[key]
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in (
            types if isinstance(types, tuple) else (types,))):
        raise ProgramTraceError(f"{where}: {key!r} has the wrong type ({type(value).__name__})")
    return value


def _str_list(value: Any, where: str, key: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise ProgramTraceError(f"{where}: {key!r} must be a list of strings")
    return list(value)


_FORMAT_RE = re.compile(r'"format"\s*:\s*"' + re.escape(FORMAT) + '"')
_DEV_RE = re.compile(r"^[0-9a-f]+:[0-9a-f]+$")


def _file_from_json(d: Any, where: str) -> FileId | None:
    if d is None:
        return None
    if not isinstance(d, dict):
        raise ProgramTraceError(f"{where}: 'file' must be an object")
    dev = _get(d, "dev", str, f"{where} file")
    if not _DEV_RE.match(dev):
        raise ProgramTraceError(f"{where}: file dev {dev!r} is not MAJOR:MINOR in hex")
    ino, size = _get(d, "ino", int, f"{where} file"), _get(d, "size", int, f"{where} file")
    if ino < 0 or size < 0:
        raise ProgramTraceError(f"{where}: file ino and size must not be negative")
    return FileId(dev, ino, size, _get(d, "fstype", str, f"{where} file"))


def _seq_from_json(d: Any, where: str) -> tuple[int, int] | None:
    if d is None:
        return None
    if (not isinstance(d, list) or len(d) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in d)):
        raise ProgramTraceError(f"{where}: 'seq' must be [entry, exit], two integers")
    return d[0], d[1]


def _event_from_json(d: Any, where: str) -> Event:
    if not isinstance(d, dict):
        raise ProgramTraceError(f"{where}: an event must be an object")
    call = _get(d, "call", str, where)
    where = f"{where} ({call})"
    args = _get(d, "args", list, where, [])
    if call in ("clone", "clone3") and args == [None]:
        args = []  # flags the recorder could not read: thread/vm say what matters
    return Event(call=call, args=list(args), ret=d.get("ret"), path=_get(d, "path", str, where, None),
                 argv=_str_list(d.get("argv"), where, "argv"), envp=_str_list(d.get("envp"), where, "envp"),
                 thread=_get(d, "thread", bool, where, None), vm=_get(d, "vm", bool, where, None),
                 maps=_get(d, "maps", str, where, None),
                 smaps=_get(d, "smaps", str, where, None), tid=_get(d, "tid", int, where, None),
                 line=_get(d, "line", int, where, None), seq=_seq_from_json(d.get("seq"), where),
                 file=_file_from_json(d.get("file"), where), arg=_get(d, "arg", str, where, None),
                 name=_get(d, "name", str, where, None),
                 extra={k: v for k, v in d.items() if k not in _EVENT_KEYS})


def _start_from_json(d: Any, where: str) -> Start:
    if not isinstance(d, dict):
        raise ProgramTraceError(f"{where}: 'start' must be an object")
    if "exec" in d:
        x = _get(d, "exec", dict, where)
        return Start("exec", path=_get(x, "path", str, where), argv=_str_list(x.get("argv"), where, "argv") or [],
                     envp=_str_list(x.get("envp"), where, "envp"), file=_file_from_json(x.get("file"), where))
    if "fork" in d:
        x = _get(d, "fork", dict, where)
        return Start("fork", parent=_get(x, "parent", int, where), event=_get(x, "event", int, where),
                     shared_vm=_get(x, "shared_vm", bool, where, None))
    if "maps" in d:
        return Start("maps", maps=_get(d, "maps", str, where, None), smaps=_get(d, "smaps", str, where, None),
                     start_brk=_get(d, "start_brk", int, where, None))
    raise ProgramTraceError(f"{where}: 'start' must have 'exec', 'fork' or 'maps'")


def from_json(data: Any) -> ProgramTrace:
    """A validated :class:`ProgramTrace` from parsed JSON."""
    if not isinstance(data, dict):
        raise ProgramTraceError("a ProgramTrace must be a JSON object")
    if data.get("format") != FORMAT:
        raise ProgramTraceError(f"format is {data.get('format')!r}, expected {FORMAT!r}")
    procs = _get(data, "processes", list, "trace")
    processes = []
    for n, pd in enumerate(procs):
        if not isinstance(pd, dict):
            raise ProgramTraceError(f"process #{n}: must be an object")
        pid = _get(pd, "pid", int, f"process #{n}")
        where = f"process {pid}"
        events = [_event_from_json(e, f"{where} event {i}") for i, e in enumerate(_get(pd, "events", list, where))]
        processes.append(ProcessTrace(
            pid=pid, parent=_get(pd, "parent", int, where, None), start=_start_from_json(pd.get("start"), where),
            events=events, exec_maps=_get(pd, "exec_maps", str, where, None),
            exec_smaps=_get(pd, "exec_smaps", str, where, None), final_maps=_get(pd, "final_maps", str, where, None),
            final_smaps=_get(pd, "final_smaps", str, where, None), exit=_get(pd, "exit", dict, where, None),
            extra={k: v for k, v in pd.items() if k not in _PROCESS_KEYS}))
    trace = ProgramTrace(processes=processes, source=_get(data, "source", str, "trace", "strace"),
                         kernel=_get(data, "kernel", str, "trace", None),
                         command=_str_list(data.get("command"), "trace", "command") or [],
                         notes=_str_list(data.get("notes"), "trace", "notes") or [],
                         extra={k: v for k, v in data.items() if k not in _TRACE_KEYS})
    _convert_legacy_openat(trace)
    trace.validate()
    return trace


_PROCESS_KEYS = ("pid", "parent", "start", "events", "exec_maps", "exec_smaps", "final_maps", "final_smaps", "exit")
_TRACE_KEYS = ("format", "source", "kernel", "command", "processes", "notes")
LEGACY_OPENAT_NOTE = "openat args converted from the first recorder's [dirfd, path pointer, flags] (no 'seq' in it)"


def _convert_legacy_openat(trace: ProgramTrace) -> None:
    """The first recorder (before the ``seq``/``file`` additions) wrote ``openat`` args as the registers
    ``[dirfd, path pointer, flags]``.  Such a recording is recognised as a whole, without guessing from
    values: ``source`` ``record`` and no event with ``seq`` (every event of a later recording has one).
    Its openat args become ``[dirfd, flags, 0]`` (the mode was not recorded), and a note says so."""
    if trace.source != "record":
        return
    events = [e for p in trace.processes for e in p.events]
    if any(e.seq is not None for e in events):
        return
    opens = [e for e in events if e.call == "openat" and len(e.args) == 3]
    for e in opens:
        e.args = [e.args[0], e.args[2], 0]
    if opens:
        trace.notes.append(LEGACY_OPENAT_NOTE)


def is_program_trace(text: str) -> bool:
    """Whether ``text`` is a ProgramTrace JSON (its ``format`` is :data:`FORMAT`, or a text that is not JSON
    but names that format): how the command line tells a recorded program from a scenario."""
    if _FORMAT_RE.search(text) is None:
        return False
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError):  # a broken file that says it is one is one (loads says why)
        return True
    return isinstance(data, dict) and data.get("format") == FORMAT


def loads(text: str) -> ProgramTrace:
    """Parse and validate a ProgramTrace JSON text."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ProgramTraceError(f"not JSON: {e}") from None
    except RecursionError:
        raise ProgramTraceError("not JSON: nested too deeply") from None
    return from_json(data)


def load(path: str | Path) -> ProgramTrace:
    """Read and validate a ProgramTrace JSON file."""
    return loads(Path(path).read_text(encoding="utf-8"))


def dumps(trace: ProgramTrace) -> str:
    return json.dumps(trace.to_json(), indent=1) + "\n"


def save(trace: ProgramTrace, path: str | Path) -> None:
    """Validate ``trace`` and write it as JSON."""
    trace.validate()
    Path(path).write_text(dumps(trace), encoding="utf-8")
