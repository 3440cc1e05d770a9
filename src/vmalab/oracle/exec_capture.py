"""The kernel side of the exec model: a program's maps and smaps right after ``execve`` returns.

:func:`capture_exec` forks; the child turns address randomisation off (``personality(ADDR_NO_RANDOMIZE)``,
what ``setarch -R`` does), asks to be traced (``PTRACE_TRACEME``) and calls ``execve`` with the argv and
envp given (explicit, so the size of the strings on the new stack, and so the stack VMA, is reproducible).
A traced process that execs stops with SIGTRAP before its first user instruction (before ld.so runs): the
parent reads ``/proc/PID/maps``, ``/proc/PID/smaps`` and ``/proc/PID/stat`` there, then kills and reaps
the child.  Nothing is left behind: every exit path kills and reaps, and a wait that passes the timeout
raises :class:`ExecCaptureError` (a one-line message) after killing the child.

ctypes only (libc ``personality`` and ``ptrace``); no C helper is needed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
import signal
import sys
import time
from dataclasses import dataclass

__all__ = ["ADDR_NO_RANDOMIZE", "ExecCapture", "ExecCaptureError", "capture_exec", "smaps_vmflags"]

ADDR_NO_RANDOMIZE = 0x0040000
PTRACE_TRACEME = 0


class ExecCaptureError(RuntimeError):
    """The capture could not be made (not Linux, exec failed, the child did not stop in time)."""


@dataclass
class ExecCapture:
    """What the kernel left right after execve: the maps and smaps texts, and the fields of
    ``/proc/PID/stat`` the exec sets (``start_code`` .. ``env_end``, fields 26-28 and 45-51 of proc(5))."""

    path: str
    argv: list[str]
    envp: list[str]
    maps: str
    smaps: str
    stat: dict[str, int]


def smaps_vmflags(smaps: str) -> dict[int, str]:
    """start address -> the VmFlags text of each VMA of a smaps text."""
    out: dict[int, str] = {}
    start: int | None = None
    for line in smaps.splitlines():
        head = line.split(" ", 1)[0]
        if "-" in head and not head.endswith(":"):
            try:
                start = int(head.split("-", 1)[0], 16)
            except ValueError:
                continue
        elif line.startswith("VmFlags:") and start is not None:
            out[start] = line[len("VmFlags:"):].strip()
    return out


_STAT_FIELDS = {26: "start_code", 27: "end_code", 28: "start_stack", 45: "start_data", 46: "end_data",
                47: "start_brk", 48: "arg_start", 49: "arg_end", 50: "env_start", 51: "env_end"}


def _parse_stat(text: str) -> dict[str, int]:
    rest = text[text.rindex(")") + 2:].split()  # fields from 3 (state) on
    return {name: int(rest[n - 3]) for n, name in _STAT_FIELDS.items() if n - 3 < len(rest)}


def _kill_and_reap(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def capture_exec(path: str, argv: list[str], envp: list[str], timeout: float = 10.0,
                 rlimit_stack: int | None = None) -> ExecCapture:
    """Exec ``path`` with ``argv``/``envp`` under ptrace with ASLR off and return the kernel's post-exec
    maps, smaps and stat fields.  ``rlimit_stack``: the soft RLIMIT_STACK the child execs with (default:
    this process's).  Raises :class:`ExecCaptureError` when the platform cannot (not Linux),
    the exec fails, or the child does not stop within ``timeout`` seconds."""
    if not sys.platform.startswith("linux"):
        raise ExecCaptureError("exec capture needs Linux (ptrace and /proc)")
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.ptrace.restype = ctypes.c_long
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    libc.personality.restype = ctypes.c_int
    libc.personality.argtypes = [ctypes.c_ulong]
    bpath = os.fsencode(path)
    bargv = [os.fsencode(a) for a in argv]
    benv = {}
    for kv in envp:
        k, _, v = kv.partition("=")
        benv[os.fsencode(k)] = os.fsencode(v)
    r, w = os.pipe()  # the child reports an exec failure's errno through it (close-on-exec)
    pid = os.fork()
    if pid == 0:  # the child: only async-signal-safe work until execve
        try:
            os.close(r)
            libc.personality(ADDR_NO_RANDOMIZE)
            if rlimit_stack is not None:
                hard = resource.getrlimit(resource.RLIMIT_STACK)[1]
                resource.setrlimit(resource.RLIMIT_STACK, (rlimit_stack, hard))
            if libc.ptrace(PTRACE_TRACEME, 0, None, None) != 0:
                os.write(w, b"ptrace %d" % ctypes.get_errno())
            else:
                os.execve(bpath, bargv, benv)
        except OSError as e:
            os.write(w, b"execve %d" % (e.errno or 0))
        except BaseException:  # noqa: BLE001 - the child must never return into the caller's code
            os.write(w, b"child 0")
        finally:
            os._exit(127)
    os.close(w)
    try:
        deadline = time.monotonic() + timeout
        while True:
            got, status = os.waitpid(pid, os.WNOHANG)
            if got:
                break
            if time.monotonic() > deadline:
                raise ExecCaptureError(f"{path}: no exec stop within {timeout:g} s")
            time.sleep(0.002)
        if not os.WIFSTOPPED(status) or os.WSTOPSIG(status) != signal.SIGTRAP:
            msg = os.read(r, 200).decode(errors="replace")
            what, _, num = msg.partition(" ")
            if what in ("execve", "ptrace") and num.isdigit():
                raise ExecCaptureError(f"{path}: {what} failed: {os.strerror(int(num))}")
            raise ExecCaptureError(f"{path}: the child did not stop at exec (wait status {status:#x})")
        with open(f"/proc/{pid}/maps") as f:
            maps = f.read()
        with open(f"/proc/{pid}/smaps") as f:
            smaps = f.read()
        with open(f"/proc/{pid}/stat") as f:
            stat = _parse_stat(f.read())
        return ExecCapture(path, list(argv), list(envp), maps, smaps, stat)
    finally:
        os.close(r)
        _kill_and_reap(pid)
