"""Replaying a real program's trace on the model, process by process, and comparing with what it got.

:func:`replay` runs a :class:`~vmalab.programtrace.ProgramTrace` (from ``vmalab record-program`` or an
strace log, :mod:`vmalab.strace`) on the model: for each process, the mm it starts with (the exec model
:func:`vmalab.binfmt_elf.exec_elf` of the traced ``execve``, or an imported maps text), then its events
in order — fork/clone make the child from the parent's mm at that event (:func:`vmalab.fork.fork`, what
kernel/fork.c: copy_mm() does), a CLONE_VM child (vfork, posix_spawn) shares its parent's mm until its
execve, threads share their leader's mm (their events are in the leader's entry), execve replaces the
mm (fs/exec.c: exec_mmap()) and closes the O_CLOEXEC descriptors, descriptors map to model files — and
compares every memory call's model return with the traced one, and the final maps with the traced
ones when the trace has them.  No kernel counterpart: this is the lab's check of the model against a
real program.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from . import fdtable
from .constants import MAP_ANONYMOUS, MAP_PRIVATE, MAP_TYPE, PROT_WRITE
from .fdtable import FILE_KINDS
from .files import FMODE_READ, FMODE_WRITE, S_IFCHR, File, FileOperations, Inode, ShmemFileOps, shmem_kernel_file_setup
from .mm import MM
from .procfs import import_maps, maps
from .procfs import smaps as smaps_of
from .programtrace import CLONE_VM, MEMORY_CALLS, OPEN_CALLS, Event, FileId, ProcessTrace, ProgramTrace
from .realfile import THP_FILE_SYSTEMS, find_inode, open_real

__all__ = ["Divergence", "ProcessResult", "ReplayResult", "replay", "mm_from_maps", "smaps_vmflags",
           "compare_maps"]

O_ACCMODE, O_CLOEXEC = 0o3, 0x80000
MFD_CLOEXEC = 0x1
F_DUPFD_CLOEXEC = 1030
CLOSE_RANGE_CLOEXEC = 0x4
_MAPS_RE = re.compile(r"^([0-9a-f]+)-([0-9a-f]+)\s+(\S{4})\s+([0-9a-f]+)\s+([0-9a-f]+):([0-9a-f]+)\s+(\d+)\s*(.*)$")
_SMAPS_HEAD = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) ")


@dataclass
class Divergence:
    """A memory call whose model return differs from the traced one."""

    pid: int
    index: int
    call: str
    args: list[int]
    traced: int
    model: int
    line: int | None = None
    tid: int | None = None

    def describe(self) -> str:
        where = f"pid {self.pid}" + (f" (thread {self.tid})" if self.tid else "") + f" event {self.index}"
        if self.line is not None:
            where += f" (log line {self.line})"
        args = ", ".join(_hex(a) for a in self.args)
        return f"{where}: {self.call}({args}) = {_ret(self.traced)} traced, {_ret(self.model)} on the model"

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "event": self.index, "call": self.call, "args": self.args, "traced": self.traced,
                "model": self.model, "line": self.line, "tid": self.tid}


def _hex(v: int) -> str:
    return hex(v) if v > 9 or v < -9 else str(v)


def _ret(v: int) -> str:
    if v < 0:
        import errno

        return f"-{errno.errorcode.get(-v, str(-v))}"
    return _hex(v)


@dataclass
class ProcessResult:
    """What the replay of one process gave: how its mm started (``start``), the model's maps at its
    end, the divergent memory calls, the differences of the final maps from the traced ones (None when
    the trace has none), and notes (fallbacks taken, files not found).  ``replayed`` is False when no
    initial state could be made (``notes`` say why)."""

    pid: int
    start: str
    maps: str = ""
    divergences: list[Divergence] = field(default_factory=list)
    maps_differences: list[str] | None = None
    notes: list[str] = field(default_factory=list)
    memory_calls: int = 0
    replayed: bool = True
    #: pairs of event indices of concurrent calls of two threads replayed in the other order than listed
    #: (the listed order diverged, the other gives exactly the traced returns); also in ``notes``
    reordered: list[tuple[int, int]] = field(default_factory=list)
    #: the model's smaps at the end (for the VmFlags comparison)
    smaps: str = ""
    #: event index -> the model's return of that memory call
    returns: dict[int, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "start": self.start, "replayed": self.replayed, "memory_calls": self.memory_calls,
                "maps": self.maps, "divergences": [d.to_json() for d in self.divergences],
                "maps_compared": self.maps_differences is not None,
                "maps_differences": self.maps_differences or [], "notes": self.notes,
                "reordered": [list(p) for p in self.reordered]}


@dataclass
class ReplayResult:
    """The replay of a whole ProgramTrace."""

    processes: list[ProcessResult]
    notes: list[str] = field(default_factory=list)

    @property
    def divergences(self) -> list[Divergence]:
        return [d for p in self.processes for d in p.divergences]

    @property
    def ok(self) -> bool:
        """No divergent return and no final-maps difference (processes not replayed are in ``notes``)."""
        return not self.divergences and not any(p.maps_differences for p in self.processes)

    def process(self, pid: int) -> ProcessResult:
        for p in self.processes:
            if p.pid == pid:
                return p
        raise KeyError(pid)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "notes": self.notes, "processes": [p.to_json() for p in self.processes]}


# -- initial states -------------------------------------------------------------------------------------
def smaps_vmflags(smaps: str) -> dict[int, str]:
    """start address -> the VmFlags line of each entry of an smaps text."""
    out: dict[int, str] = {}
    start: int | None = None
    for line in smaps.splitlines():
        m = _SMAPS_HEAD.match(line)
        if m:
            start = int(m.group(1), 16)
        elif line.startswith("VmFlags:") and start is not None:
            out[start] = line.split(":", 1)[1].strip()
    return out


def _infer_start_brk(mm: MM) -> int | None:
    """Where the break starts in an mm imported from maps taken right after execve (no [heap] yet):
    with ASLR off, fs/binfmt_elf.c puts it at the page-aligned end of the bss, i.e. the end of the
    executable's last mapping or of the anonymous bss mapping right after it.  The executable is the
    file of the lowest file mapping."""
    exe: File | None = None
    end = 0
    for v in mm.tree:
        if exe is None and v.vm_file is not None:
            exe = v.vm_file
        if exe is not None:
            if v.vm_file is not None and v.vm_file.inode is exe.inode:
                end = v.vm_end
            elif v.vm_file is None and v.vm_start == end and v.vm_ops is None and v.special_name is None:
                end = v.vm_end
                break
            elif end:
                break
    return end or None


def mm_from_maps(text: str, smaps: str | None = None, start_brk: int | None = None,
                 **kwargs: Any) -> tuple[MM, list[str]]:
    """An MM from a maps text (and its smaps, whose VmFlags are then taken as they are), with its
    ``start_brk`` given or, when the text has no ``[heap]``, inferred (:func:`_infer_start_brk`).
    Returns the mm and notes on what was inferred."""
    notes: list[str] = []
    params = inspect.signature(MM.from_maps).parameters
    if "smaps" in params and "start_brk" in params:  # the import of issue 13 item 4
        mm = MM.from_maps(text, smaps=smaps, start_brk=start_brk, **kwargs)
    else:
        mm = MM(**kwargs)
        import_maps(mm, text, smaps_vmflags(smaps) if smaps else None)
        for v in mm.tree:
            if v.vm_ops is not None and v.vm_ops.name(v) == "[vdso]":
                mm.mmap_base = v.vm_end
        if start_brk is not None and not mm.start_brk:
            mm.start_brk = mm.brk = start_brk
    if not mm.start_brk:
        guess = _infer_start_brk(mm)
        if guess is not None:
            mm.start_brk = mm.brk = guess
            notes.append(f"start_brk {guess:#x} inferred from the maps (end of the executable's bss)")
    return mm, notes


# -- the replay ---------------------------------------------------------------------------------------------
@dataclass
class _Fd:
    file: File
    cloexec: bool = False


@dataclass
class _State:
    """One process during the replay: its mm and its descriptor table (traced fd -> model file)."""

    mm: MM
    fds: dict[int, _Fd]
    result: ProcessResult
    #: [start, end) of the VMAs the process's final smaps shows with anonymous pages, for its calls after
    #: its last execve (empty: not known)
    written: list[tuple[int, int]] = field(default_factory=list)
    #: the index of the process's last successful execve (-1: none): ``written`` applies after it
    last_exec: int = -1
    written_faults: int = 0


class _Replayer:
    def __init__(self, trace: ProgramTrace, initial_maps: str | dict[str, str] | None,
                 initial_smaps: str | dict[str, str] | None, exec_model: bool | None,
                 orders: dict[int, list[int]] | None = None,
                 reordered: dict[int, list[tuple[int, int]]] | None = None) -> None:
        self.trace = trace
        self.initial_maps = initial_maps
        self.initial_smaps = initial_smaps
        self.exec_model = exec_model
        #: pid -> the order its events are replayed in (default: as listed); reordered: the swapped pairs
        self.orders = orders or {}
        self.reordered = reordered or {}
        self.inodes: dict[str, Inode] = {}
        self.stat_note_given: set[int] = set()
        self.pending: dict[int, tuple[_State, int]] = {}
        self.results: dict[int, ProcessResult] = {}
        self.notes: list[str] = []
        self.first_exec_done = False

    # -- files ----------------------------------------------------------------------------------------
    def open_file(self, st: _State, path: str, flags: int, fid: FileId | None = None) -> File:
        """The model file a traced open of ``path`` gives: from the file's recorded identity ``fid`` (device,
        inode, size, file-system type) when the trace has it, else from this machine's ``stat``
        (:func:`vmalab.realfile.open_real`; the process's notes say so), else (a file that is not on this
        machine) a regular file of unknown size."""
        acc = flags & O_ACCMODE
        fmode = FMODE_READ if acc == 0 else FMODE_WRITE if acc == 1 else FMODE_READ | FMODE_WRITE
        if path == "/dev/zero":
            fd = fdtable.open_registered(st.mm, "devzero")
            f = st.mm.fdtable.pop(fd)
            f.f_mode = fmode
            return f
        if path.startswith("/memfd:"):
            name = path.removesuffix(" (deleted)")
            f = shmem_kernel_file_setup(st.mm, name, fid.size if fid else 0)
            if fid is not None:  # the kernel's inode number (maps shows it)
                f.inode.ino, f.inode.dev = fid.ino, fid.dev_pair
            return f
        if fid is not None:
            return _file_from_identity(st.mm, path, fid, fmode)
        if st.result.pid not in self.stat_note_given:
            self.stat_note_given.add(st.result.pid)
            st.result.notes.append("the trace has no file identities (dev, inode, size, fs type): files are "
                                   "modelled from this machine's stat()")
        with contextlib.suppress(OSError, ValueError):
            return open_real(st.mm, path, flags)
        inode = self.inodes.get(path)
        if inode is None:
            try:
                s = os.stat(path)
                mode = S_IFCHR if stat.S_ISCHR(s.st_mode) else stat.S_IFMT(s.st_mode)
                inode = Inode(s.st_ino, (os.major(s.st_dev), os.minor(s.st_dev)), mode=mode, size=s.st_size)
            except OSError:
                inode = Inode(st.mm.alloc_ino(), (0, 0), size=1 << 40)
                st.result.notes.append(f"{path}: not on this machine, modelled as a file of unknown size")
            self.inodes[path] = inode
        return File(inode, FILE_KINDS["disk"](), path, f_mode=fmode, owner=st.mm)

    @contextlib.contextmanager
    def installed(self, st: _State, fd: int, ev: Event) -> Iterator[None]:
        """The file of traced descriptor ``fd`` in the mm's fdtable for the duration of one call (the
        replay keeps its own table: a vfork child shares the mm, not the descriptors)."""
        entry = st.fds.get(fd)
        if ev.path is not None and (entry is None or entry.file.display_path != ev.path):
            if entry is not None:
                st.result.notes.append(f"event line {ev.line}: fd {fd} is {ev.path} in the trace, "
                                       f"{entry.file.display_path} in the replay's table: reopened")
            entry = _Fd(self.open_file(st, ev.path, _flags_for(ev), ev.file))
            st.fds[fd] = entry
        table = st.mm.fdtable
        saved = table.get(fd)
        if entry is not None:
            table[fd] = entry.file
        else:
            table.pop(fd, None)
        try:
            yield
        finally:
            if saved is not None:
                table[fd] = saved
            else:
                table.pop(fd, None)

    # -- initial states -------------------------------------------------------------------------------
    def _given_maps(self, path: str | None) -> tuple[str | None, str | None]:
        if isinstance(self.initial_maps, dict):
            key = path if path in self.initial_maps else os.path.basename(path or "")
            smaps = self.initial_smaps.get(key) if isinstance(self.initial_smaps, dict) else None
            return self.initial_maps.get(key), smaps
        if self.initial_maps is not None and not self.first_exec_done:
            return self.initial_maps, self.initial_smaps if isinstance(self.initial_smaps, str) else None
        return None, None

    def exec_mm(self, path: str, argv: list[str], envp: list[str] | None, recorded: str | None,
                recorded_smaps: str | None, notes: list[str], fid: FileId | None = None) -> tuple[MM | None, str]:
        """The mm right after execve of ``path``: the maps given to the replay, else (a recording, by
        default) the recorded post-exec maps, else the exec model, else (an strace log) the recorded maps.
        Returns (mm or None, how it was made)."""
        given, given_smaps = self._given_maps(path)
        self.first_exec_done = True
        if given is not None:
            mm, more = mm_from_maps(given, given_smaps)
            notes.extend(more)
            return mm, "given maps"
        recorded_first = self.exec_model is False or (self.exec_model is None and self.trace.source == "record")
        if recorded is not None and recorded_first:
            mm, more = mm_from_maps(recorded, recorded_smaps)
            notes.extend(more)
            return mm, "recorded post-exec maps"
        if self.exec_model is not False:
            if fid is not None:
                local = local_identity(path)
                if local != (fid.dev_pair, fid.ino, fid.size):
                    notes.append(f"{path} here is not the recorded binary (dev, inode, size {_ident(local)} here, "
                                 f"{_ident((fid.dev_pair, fid.ino, fid.size))} recorded): the exec model loads "
                                 "this machine's file")
            try:
                from . import binfmt_elf  # type: ignore[attr-defined,unused-ignore]
            except ImportError:
                notes.append("no exec model (vmalab.binfmt_elf is not there)")
            else:
                script = _script_interpreter(path)
                if script is not None:  # fs/binfmt_script.c: exec the #! interpreter with the script as argument
                    interp, arg = script
                    notes.append(f"{path} is a #! script: exec of its interpreter {interp}")
                    argv = [interp, *([arg] if arg else []), path, *argv[1:]]
                    path = interp
                try:
                    mm = MM()
                    binfmt_elf.exec_elf(mm, path, list(argv), list(envp or []))
                    return mm, "exec model"
                except Exception as e:  # noqa: BLE001  (any failure of the model falls back and is reported)
                    notes.append(f"exec model failed for {path}: {type(e).__name__}: {e}")
        if recorded is not None:
            mm, more = mm_from_maps(recorded, recorded_smaps)
            notes.extend(more)
            return mm, "recorded post-exec maps"
        notes.append(f"no initial state for execve({path!r}): give its maps (--maps)")
        return None, "none"

    # -- events ---------------------------------------------------------------------------------------
    def run(self, st: _State, proc: ProcessTrace, start: int, stop_at_exec: bool = False) -> int:
        """Replay ``proc``'s events from ``start``; returns where it stopped (len(events) at the end, the
        index of the execve when ``stop_at_exec``, or -1 when the process cannot go on)."""
        events = proc.events
        order = self.orders.get(proc.pid) or list(range(len(events)))
        for i in order[order.index(start) if start else 0:] if start < len(events) else []:
            ev = events[i]
            call = ev.call
            if call in MEMORY_CALLS:
                self.memory(st, proc, i, ev)
            elif call in OPEN_CALLS:
                if ev.ret is not None and ev.ret >= 0 and ev.path is not None:
                    flags = ev.open_flags
                    st.fds[ev.ret] = _Fd(self.open_file(st, ev.path, flags, ev.file), bool(flags & O_CLOEXEC))
            elif call == "close":
                if ev.ret == 0:
                    st.fds.pop(ev.args[0], None)
            elif call == "close_range":
                if ev.ret == 0:
                    first, last, flags = ev.args
                    for fd in [fd for fd in st.fds if first <= fd <= last]:
                        if flags & CLOSE_RANGE_CLOEXEC:
                            st.fds[fd].cloexec = True
                        else:
                            del st.fds[fd]
            elif call in ("dup", "dup2", "dup3", "fcntl_dupfd"):
                src = st.fds.get(ev.args[0])
                if ev.ret is not None and ev.ret >= 0 and src is not None:
                    cloexec = (call == "dup3" and bool(ev.args[2] & O_CLOEXEC)) or (
                        call == "fcntl_dupfd" and ev.args[1] == F_DUPFD_CLOEXEC)
                    st.fds[ev.ret] = _Fd(src.file, cloexec)
            elif call == "memfd_create":
                if ev.ret is not None and ev.ret >= 0:
                    path = ev.path if ev.path and ev.path.startswith("/memfd:") else f"/memfd:{ev.name or ''}"
                    st.fds[ev.ret] = _Fd(self.open_file(st, path, 2, ev.file), bool(ev.args[0] & MFD_CLOEXEC))
            elif call == "ftruncate":
                with self.installed(st, ev.args[0], ev):
                    model = fdtable.ftruncate(st.mm, ev.args[0], ev.args[1])
                if ev.ret is not None and model != ev.ret:
                    st.result.divergences.append(Divergence(proc.pid, i, call, list(ev.args), ev.ret, model, ev.line,
                                                            ev.tid))
            elif call == "execve" and ev.ret == 0:
                if stop_at_exec:
                    return i
                notes = st.result.notes
                mm, how = self.exec_mm(ev.path or "", ev.argv or [], ev.envp, ev.maps, ev.smaps, notes, ev.file)
                if mm is None:
                    notes.append(f"replay stopped at event {i} (execve of {ev.path})")
                    return -1
                notes.append(f"event {i}: execve({ev.path}) -> {how}")
                st.mm = mm
                st.fds = {fd: e for fd, e in st.fds.items() if not e.cloexec}
            elif call in ("clone", "clone3", "fork", "vfork"):
                self.clone(st, proc, i, ev)
        return len(events)

    def memory(self, st: _State, proc: ProcessTrace, i: int, ev: Event) -> None:
        name = ev.call
        args = list(ev.args)
        if name == "mremap" and len(args) == 4:
            args.append(0)
        elif name == "mseal" and len(args) == 2:
            args.append(0)
        elif name == "mincore":
            args = args[:2]
        st.result.memory_calls += 1
        if name == "mmap" and not args[3] & MAP_ANONYMOUS:
            fd = args[4] & 0xFFFFFFFF
            fd = fd - (1 << 32) if fd & 0x80000000 else fd
            with self.installed(st, fd, ev):
                model = st.mm.syscall(name, *args)
        else:
            model = st.mm.syscall(name, *args)
        traced = ev.ret
        assert traced is not None
        st.result.returns[i] = model
        if name == "mmap" and model == traced and i > st.last_exec and st.written:
            self.written_fault(st, model, args)
        if model != traced:
            st.result.divergences.append(Divergence(proc.pid, i, name, list(ev.args), traced, model, ev.line, ev.tid))

    def written_fault(self, st: _State, addr: int, args: list[int]) -> None:
        """The trace has no page faults, but whether a VMA has an anon_vma (made by its first write fault)
        decides what mprotect does with VM_ACCOUNT (mm/mprotect.c: mprotect_fixup() drops it from an
        anonymous VMA without one) and which VMAs may merge.  A private writable mapping that lies in a VMA
        the final smaps shows with anonymous pages was written: the model writes its first page in that
        VMA right after the mmap (the earliest the program could have)."""
        if not args[2] & PROT_WRITE or args[3] & MAP_TYPE != MAP_PRIVATE:
            return
        end = addr + ((args[1] + 0xFFF) & ~0xFFF)
        for lo, hi in st.written:
            if lo < end and addr < hi:
                with contextlib.suppress(Exception):
                    st.mm.touch(max(lo, addr), write=True)
                    st.written_faults += 1
                return

    def clone(self, st: _State, proc: ProcessTrace, i: int, ev: Event) -> None:
        if ev.thread or ev.ret is None or ev.ret <= 0:
            return  # a thread shares the mm and the descriptors: its events are already in this entry
        child = ev.ret
        try:
            cproc = self.trace.process(child)
        except KeyError:
            return
        fds = {fd: _Fd(e.file, e.cloexec) for fd, e in st.fds.items()}
        res = self.result_for(cproc, f"fork of {proc.pid} at event {i}")
        if ev.clone_flags & CLONE_VM or cproc.start.shared_vm:
            # vfork / posix_spawn: the child runs on the parent's mm (the parent waits) until its execve
            res.start = f"CLONE_VM child of {proc.pid} at event {i} (shares its mm until execve)"
            cst = _State(st.mm, fds, res)
            stop = self.run(cst, cproc, 0, stop_at_exec=True)
            self.pending[child] = (cst, stop)
            return
        child_mm = st.mm.fork()
        self.pending[child] = (_State(child_mm, fds, res), 0)

    def result_for(self, proc: ProcessTrace, start: str) -> ProcessResult:
        res = self.results.get(proc.pid)
        if res is None:
            res = ProcessResult(proc.pid, start)
            self.results[proc.pid] = res
        return res

    # -- processes ------------------------------------------------------------------------------------
    def replay_process(self, proc: ProcessTrace) -> None:
        begin = 0
        if proc.start.kind == "fork":
            pending = self.pending.pop(proc.pid, None)
            if pending is None:
                res = self.result_for(proc, "not replayed")
                res.replayed = False
                res.notes.append(f"its parent {proc.start.parent} was not replayed up to the fork")
                return
            st, begin = pending
            res = st.result
            if begin < 0:
                res.maps = maps(st.mm)
                return
        else:
            res = self.result_for(proc, "")
            if proc.start.kind == "exec":
                mm, how = self.exec_mm(proc.start.path or "", proc.start.argv or [], proc.start.envp,
                                       proc.exec_maps, proc.exec_smaps, res.notes, proc.start.file)
            else:
                text, smaps = (proc.start.maps, proc.start.smaps)
                if text is None:
                    text, smaps = self._given_maps(None)
                mm, how = (None, "none") if text is None else (
                    mm_from_maps(text, smaps, proc.start.start_brk)[0], "maps")
                if mm is None:
                    res.notes.append("the trace does not say how this process started: give its maps (--maps)")
            res.start = how
            if mm is None:
                res.replayed = False
                return
            st = _State(mm, {}, res)
        for i, j in self.reordered.get(proc.pid, []):
            a, b = proc.events[i], proc.events[j]
            res.reordered.append((i, j))
            res.notes.append(f"reordered concurrent calls: events {i} ({a.call}, thread {a.tid}) and {j} ({b.call}, "
                             f"thread {b.tid}) were in flight at once (seq {_seq(a)} and {_seq(b)}); the listed "
                             f"order diverges, event {j} first gives exactly the traced returns")
        if proc.final_smaps:
            st.written = _written_ranges(proc.final_smaps)
            st.last_exec = max((n for n, e in enumerate(proc.events) if e.call == "execve" and e.ret == 0),
                               default=-1)
        end = self.run(st, proc, begin)
        if st.written_faults:
            res.notes.append(f"{st.written_faults} private writable mapping(s) written once right after their mmap: "
                             "the final smaps shows anonymous pages there (the trace has no page faults; an "
                             "anon_vma decides mprotect's VM_ACCOUNT and merges)")
        res.maps = maps(st.mm)
        res.smaps = smaps_of(st.mm)
        if end >= 0 and proc.final_maps is not None:
            res.maps_differences = compare_maps(res.maps, proc.final_maps, res.smaps, proc.final_smaps)

    def replay(self) -> ReplayResult:
        for proc in self.trace.processes:
            self.replay_process(proc)
        if not any(p.final_maps for p in self.trace.processes):
            self.notes.append("the trace has no final maps (strace cannot give them): only the memory calls' "
                              "returns are compared")
        return ReplayResult([self.results[p.pid] for p in self.trace.processes if p.pid in self.results],
                            self.notes)


def _script_interpreter(path: str) -> tuple[str, str] | None:
    """fs/binfmt_script.c: load_script(): the interpreter and its one optional argument of a ``#!`` file
    (None for another file, or one that cannot be read)."""
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None
    first = head[2:].split(b"\n", 1)[0].decode("utf-8", "surrogateescape").strip()
    if not first:
        return None
    interp, _, arg = first.partition(" ")
    return interp, arg.strip()


def _flags_for(ev: Event) -> int:
    """The open flags to model a file first seen in an mmap: read-write for a shared writable mapping."""
    if ev.call == "mmap" and ev.args[3] & 0x1 and ev.args[2] & 0x2:
        return 2
    return 0


def _written_ranges(smaps_text: str) -> list[tuple[int, int]]:
    """[start, end) of every smaps entry with ``Anonymous`` pages."""
    out: list[tuple[int, int]] = []
    cur: tuple[int, int] | None = None
    for line in smaps_text.splitlines():
        m = _SMAPS_HEAD.match(line)
        if m:
            cur = (int(m.group(1), 16), int(m.group(2), 16))
        elif line.startswith("Anonymous:") and cur is not None and int(line.split()[1]) > 0:
            out.append(cur)
    return out


def _seq(ev: Event) -> str:
    return f"{ev.seq[0]}-{ev.seq[1]}" if ev.seq else "?"


def local_identity(path: str) -> tuple[tuple[int, int], int, int] | None:
    """(device, inode, size) of ``path`` on this machine (None when it is not here)."""
    try:
        s = os.stat(path)
    except OSError:
        return None
    return (os.major(s.st_dev), os.minor(s.st_dev)), s.st_ino, s.st_size


def _ident(ident: tuple[tuple[int, int], int, int] | None) -> str:
    if ident is None:
        return "none (not on this machine)"
    (major, minor), ino, size = ident
    return f"{major:02x}:{minor:02x} {ino} {size}"


def _file_from_identity(mm: MM, path: str, fid: FileId, fmode: int) -> File:
    """A model file of the recorded identity: the same (dev, inode) as a file the mm already holds shares
    its Inode (as realfile.open_real does); the file system decides ``get_unmapped_area`` (ext4/xfs:
    ``thp_get_unmapped_area``, tmpfs: shmem's, others: the mm's default)."""
    dev = fid.dev_pair
    inode = find_inode(mm, dev, fid.ino)
    if inode is None:
        mode = S_IFCHR if fid.fstype == "devtmpfs" and path.startswith("/dev/") else stat.S_IFREG
        inode = Inode(fid.ino, dev, mode=mode, size=fid.size)
    elif inode.size == 1 << 40:  # an inode imported from maps text, whose size was unknown
        inode.size = fid.size
    f_op: FileOperations
    if fid.fstype in ("tmpfs", "shmem"):
        f_op = ShmemFileOps()
    else:
        f_op = FILE_KINDS["disk"]()
        if fid.fstype not in THP_FILE_SYSTEMS:
            f_op.get_unmapped_area = None  # no thp_get_unmapped_area() on this file system
    return File(inode, f_op, path, f_mode=fmode, owner=mm)


def compare_maps(model: str, traced: str, model_smaps: str | None = None,
                 traced_smaps: str | None = None) -> list[str]:
    """The differences of two maps texts, VMA by VMA on start, end, perms, offset, device, inode and name
    (``[vsyscall]`` is left out: it is not a VMA), and, when both smaps are given, the VmFlags of every
    VMA both have; an empty list when they agree."""

    def rows(text: str) -> dict[int, tuple[str, ...]]:
        out: dict[int, tuple[str, ...]] = {}
        for line in text.splitlines():
            m = _MAPS_RE.match(line.strip())
            if not m or m.group(8).strip() == "[vsyscall]":
                continue
            start = int(m.group(1), 16)
            out[start] = (m.group(1), m.group(2), m.group(3), f"{int(m.group(4), 16):x}",
                          f"{int(m.group(5), 16):02x}:{int(m.group(6), 16):02x}", m.group(7), m.group(8).strip())
        return out

    names = ("start", "end", "perms", "offset", "dev", "inode", "name")
    a, b = rows(model), rows(traced)
    diffs: list[str] = []
    for start in sorted(set(a) | set(b)):
        if start not in b:
            diffs.append(f"{start:x}: only on the model: {' '.join(a[start])}")
        elif start not in a:
            diffs.append(f"{start:x}: only in the trace: {' '.join(b[start])}")
        elif a[start] != b[start]:
            fields = [f"{n} {x} (model) vs {y} (trace)" for n, x, y in zip(names, a[start], b[start], strict=True)
                      if x != y]
            diffs.append(f"{start:x}: " + "; ".join(fields))
    if model_smaps is not None and traced_smaps is not None:
        fa, fb = smaps_vmflags(model_smaps), smaps_vmflags(traced_smaps)
        for start in sorted(set(fa) & set(fb) & set(a) & set(b)):
            if fa[start].split() != fb[start].split():
                more = sorted(set(fa[start].split()) - set(fb[start].split()))
                less = sorted(set(fb[start].split()) - set(fa[start].split()))
                what = (f"model has {' '.join(more)}" if more else "") + ("; " if more and less else "") + (
                    f"trace has {' '.join(less)}" if less else "") or "order differs"
                diffs.append(f"{start:x}: VmFlags {fa[start]} (model) vs {fb[start]} (trace): {what}")
    return diffs


def replay(trace: ProgramTrace, *, initial_maps: str | dict[str, str] | None = None,
           initial_smaps: str | dict[str, str] | None = None, exec_model: bool | None = None) -> ReplayResult:
    """Replay ``trace`` on the model (see the module docstring).

    ``initial_maps`` is the maps text of the first process right after its execve (a dict maps an exec'd
    path, or its basename, to its post-exec maps, for every exec of the trace); ``initial_smaps`` the
    matching smaps, whose VmFlags are then used.  Given maps win.  Then, by default (``exec_model`` None),
    a recording (``source`` ``record``) starts each exec from its recorded post-exec maps and smaps, so the
    replay does not depend on this machine's binaries, and an strace log from the exec model
    (:func:`vmalab.binfmt_elf.exec_elf`); ``exec_model=True`` tries the exec model first for both,
    ``exec_model=False`` never.

    Threads: two memory calls of different threads whose ``seq`` intervals overlap were in flight at once,
    and the trace cannot say which took ``mmap_lock`` first.  They are replayed in the listed order; when
    one of them diverges, the replay is made again with the two swapped, and that order is kept only when
    both then return exactly what the trace says (and the process diverges no more than before): it is
    reported in the process's ``reordered`` and ``notes``."""
    def run(orders: dict[int, list[int]], swaps: dict[int, list[tuple[int, int]]]) -> ReplayResult:
        return _Replayer(trace, initial_maps, initial_smaps, exec_model, orders, swaps).replay()

    orders: dict[int, list[int]] = {}
    swaps: dict[int, list[tuple[int, int]]] = {}
    result = run(orders, swaps)
    tried: set[tuple[int, int, int]] = set()
    for _ in range(64):
        cand = _next_swap(trace, result, orders, tried)
        if cand is None:
            break
        pid, i, j = cand  # i listed before j; try j first
        tried.add(cand)
        proc = trace.process(pid)
        order = list(orders.get(pid) or range(len(proc.events)))
        k, m = order.index(i), order.index(j)
        order[k], order[m] = j, i
        new_orders = {**orders, pid: order}
        new_swaps = {**swaps, pid: [*swaps.get(pid, []), (i, j)]}
        trial = run(new_orders, new_swaps)
        before, after = result.process(pid), trial.process(pid)
        exact = all(after.returns.get(n) == proc.events[n].ret for n in (i, j))
        if exact and len(after.divergences) <= len(before.divergences):
            orders, swaps, result = new_orders, new_swaps, trial
    return result


def _next_swap(trace: ProgramTrace, result: ReplayResult, orders: dict[int, list[int]],
               tried: set[tuple[int, int, int]]) -> tuple[int, int, int] | None:
    """A pair of concurrent memory calls to try in the other order: the first divergent call of a process
    (in replay order) and a neighbour in that order that was in flight at the same time in another
    thread, not tried yet.  Returns (pid, the earlier listed, the later listed)."""
    for pres in result.processes:
        try:
            proc = trace.process(pres.pid)
        except KeyError:
            continue
        order = orders.get(pres.pid) or list(range(len(proc.events)))
        pos = {e: n for n, e in enumerate(order)}
        for d in pres.divergences:
            k = pos.get(d.index)
            if k is None:
                continue
            for n in (k - 1, k + 1):
                if not 0 <= n < len(order):
                    continue
                a, b = sorted((order[k], order[n]), key=lambda e: pos[e])
                ea, eb = proc.events[a], proc.events[b]
                if ea.call in MEMORY_CALLS and eb.call in MEMORY_CALLS and ea.concurrent_with(eb):
                    cand = (pres.pid, min(a, b), max(a, b))
                    if cand not in tried:
                        return cand
    return None
