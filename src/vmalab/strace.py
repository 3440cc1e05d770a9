"""A parser of ``strace -f -X raw -y`` output, into a :class:`~vmalab.programtrace.ProgramTrace`.

The recipe (docs/real-programs.md): ``setarch -R strace -f -X raw -y -o LOG CMD ARGS...`` — a full trace,
no ``-e`` filter.  ``setarch -R`` turns ASLR off (personality(ADDR_NO_RANDOMIZE), inherited by every
child), so the model's placements can match; ``-f`` follows forks and threads (each line starts with the
pid); ``-X raw`` prints flags and constants as numbers; ``-y`` prints the path behind every descriptor
(``3</usr/lib/x86_64-linux-gnu/libc.so.6>``), which is how an mmap of a descriptor names its file.

What the parser understands: one line per call, ``PID NAME(ARGS) = RET``, with an errno return
(``= -1 ENOENT (No such file or directory)``), ``= ?`` for a call that does not return, a call split by
another process's line (``NAME(ARGS <unfinished ...>`` ... ``<... NAME resumed>ARGS) = RET``), signals
(``--- SIGCHLD {...} ---``), exits (``+++ exited with N +++``, ``+++ killed by SIGKILL +++``); optional
``[pid N]`` prefixes, ``-t``/``-tt``/``-ttt`` timestamps and ``-T`` durations.  It keeps the memory calls,
the descriptor calls that decide what an mmap maps (open/openat/openat2/creat, close, dup family, fcntl
F_DUPFD, memfd_create, ftruncate) and the process calls (execve, clone/clone3/fork/vfork, exit_group);
every other call is checked for the line's shape and skipped.  A line that is not strace output raises
:class:`StraceParseError` naming the line.

There is no strace parser worth depending on, so this is a small one of our own.  The argument
tokenizer knows strings (with C escapes and a trailing ``...`` for a truncated one), ``/* comments */``,
nested ``[] {} ()`` and the ``<path>`` decorations of ``-y``.
"""

from __future__ import annotations

import errno as _errno
import re
from dataclasses import dataclass
from pathlib import Path

from .programtrace import (
    CLONE_THREAD,
    CLONE_VFORK,
    CLONE_VM,
    MEMORY_CALLS,
    Event,
    ProcessTrace,
    ProgramTrace,
    Start,
)

__all__ = ["StraceParseError", "parse_strace", "load_strace", "split_args", "parse_int", "parse_string",
           "looks_like_strace"]

SIGCHLD = 17
O_CLOEXEC = 0x80000
F_DUPFD, F_DUPFD_CLOEXEC = 0, 1030
AT_FDCWD = -100
O_CREAT, O_WRONLY, O_TRUNC = 0o100, 0o1, 0o1000


class StraceParseError(ValueError):
    """A line of an strace log that cannot be read (the message names the line)."""


# "12345 ", "[pid 12345] ", then optional -t/-tt/-ttt/-r timestamps
_PREFIX = re.compile(r"^(?:\[pid\s+(\d+)\]\s+|(\d+)\s+)?(?:(?:\d+:\d\d:\d\d(?:\.\d+)?|\d+\.\d+)\s+)?")
_DURATION = re.compile(r"\s+<\d+\.\d+>$")
_CALL = re.compile(r"^([a-z_][a-z0-9_]*|\?\?\?\?)\((.*)$", re.S)
_RESUMED = re.compile(r"^<\.\.\. ([a-z_][a-z0-9_]*|\?\?\?\?) resumed>(.*)$", re.S)
_UNFINISHED = " <unfinished ...>"
_SIGNAL = re.compile(r"^--- (SIG[A-Z0-9+-]+|stopped by SIG[A-Z0-9]+) .*---$|^--- (SIG[A-Z0-9+-]+) ---$")
_EXIT = re.compile(r"^\+\+\+ (?:exited with (\d+)|killed by (SIG[A-Z0-9+-]+)(?: \(core dumped\))?|"
                   r"superseded by execve in pid (\d+)) \+\+\+$")
# the tail of a finished call: ") = RET [ERRNO (text)] [(comment)]"
_RET = re.compile(r"\)\s+= (\?|-?\d+|0x[0-9a-fA-F]+)(?:<(.*?)>)?(?: (E[A-Z0-9]+) \(.*\)| \(.*\)| <unavailable>|"
                  r" [A-Z]+ \(.*\))?$", re.S)

_ERRNO = {name: num for num, name in _errno.errorcode.items()}


@dataclass
class _Raw:
    """A finished call: its pid, name, argument text, return text, and the lines it spans."""

    pid: int
    name: str
    args: str
    ret: str
    ret_path: str | None
    errno: str | None
    line: int
    end_line: int


# -- tokens ----------------------------------------------------------------------------------------------
def _skip_string(text: str, i: int) -> int:
    """Index after the string starting at text[i] == '"' (and a trailing '...')."""
    n = len(text)
    i += 1
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == '"':
            i += 1
            if text.startswith("...", i):
                i += 3
            return i
        i += 1
    raise ValueError("unterminated string")


def _skip_decoration(text: str, i: int) -> int:
    """Index after the ``<...>`` decoration starting at text[i] == '<' (``->`` of -yy is not its end)."""
    j = i + 1
    while True:
        j = text.find(">", j)
        if j < 0:
            raise ValueError("unterminated <...> decoration")
        if text[j - 1] != "-":
            return j + 1
        j += 1


def split_args(text: str) -> list[str]:
    """The top-level comma-separated arguments of an argument list (without its closing parenthesis)."""
    out: list[str] = []
    depth = 0
    start = 0
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == '"':
            i = _skip_string(text, i)
            continue
        if c == "/" and text.startswith("/*", i):
            j = text.find("*/", i + 2)
            if j < 0:
                raise ValueError("unterminated comment")
            i = j + 2
            continue
        if c == "<" and i and (text[i - 1].isdigit() or text[i - 1] == "]"):
            i = _skip_decoration(text, i)
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth < 0:
                raise ValueError("unbalanced brackets")
        elif c == "," and depth == 0:
            out.append(text[start:i].strip())
            start = i + 1
        i += 1
    if depth:
        raise ValueError("unbalanced brackets")
    last = text[start:].strip()
    if last or out:
        out.append(last)
    return out


_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "v": "\v", "f": "\f", "a": "\a", "b": "\b", "e": "\x1b",
                   "\\": "\\", '"': '"', "'": "'"}


def _unescape(body: str) -> str:
    """C escapes (as strace prints them) to text; bytes that are not UTF-8 become surrogates."""
    out = bytearray()
    i = 0
    n = len(body)
    while i < n:
        c = body[i]
        if c != "\\":
            out += c.encode("utf-8", "surrogateescape")
            i += 1
            continue
        if i + 1 >= n:
            raise ValueError("dangling backslash")
        d = body[i + 1]
        if d == "x":
            m = re.match(r"[0-9a-fA-F]{1,2}", body[i + 2:])
            if not m:
                raise ValueError("bad \\x escape")
            out.append(int(m.group(), 16))
            i += 2 + len(m.group())
        elif d in "01234567":
            m = re.match(r"[0-7]{1,3}", body[i + 1:])
            assert m is not None
            out.append(int(m.group(), 8) & 0xFF)
            i += 1 + len(m.group())
        elif d in _SIMPLE_ESCAPES:
            out += _SIMPLE_ESCAPES[d].encode()
            i += 2
        else:
            out += d.encode("utf-8", "surrogateescape")
            i += 2
    return out.decode("utf-8", "surrogateescape")


def parse_string(tok: str) -> str:
    """A quoted strace string (``"a\\nb"``, maybe followed by ``...`` when strace cut it) as text."""
    tok = tok.strip()
    if tok.endswith("...") and not tok.endswith('"'):
        tok = tok[:-3]
    if len(tok) < 2 or tok[0] != '"' or tok[-1] != '"':
        raise ValueError(f"not a string: {tok!r}")
    return _unescape(tok[1:-1])


def _strip_name(tok: str) -> str:
    """``name=value`` (clone's named arguments) -> ``value``."""
    m = re.match(r"^[a-z_][a-z0-9_]*=(.*)$", tok, re.S)
    return m.group(1) if m else tok


def parse_fd(tok: str) -> tuple[int, str | None]:
    """A descriptor argument: its number and the path ``-y`` printed after it (None without one)."""
    tok = _strip_name(tok.strip())
    m = re.match(r"^(-?\d+)<(.*)>$", tok, re.S)
    if m:
        return int(m.group(1)), _unescape(m.group(2))
    return parse_int(tok), None


def parse_int(tok: str) -> int:
    """An integer argument as strace -X raw prints it: decimal, ``0x`` hex, octal, ``NULL``, an OR of
    those (``0x1200000|17``), with a ``-y`` decoration or a ``name=`` prefix left out."""
    tok = _strip_name(tok.strip())
    m = re.match(r"^(-?\d+)<.*>$", tok, re.S)
    if m:
        return int(m.group(1))
    value = 0
    for part in tok.split("|"):
        part = part.strip()
        if part == "NULL":
            v = 0
        elif re.fullmatch(r"-?0x[0-9a-fA-F]+", part):
            v = int(part, 16)
        elif re.fullmatch(r"0[0-7]+", part):
            v = int(part, 8)
        elif re.fullmatch(r"-?\d+", part):
            v = int(part)
        else:
            raise ValueError(f"not an integer: {tok!r}")
        value |= v
    return value


def _string_list(tok: str) -> list[str] | None:
    """An argv/envp array (None when strace printed a pointer and a count instead)."""
    tok = tok.strip()
    if not tok.startswith("["):
        return None
    if not tok.endswith("]"):
        raise ValueError(f"not an array: {tok!r}")
    return [parse_string(t) for t in split_args(tok[1:-1]) if t != "..."]


# -- lines -------------------------------------------------------------------------------------------------
def _finish(pid: int, name: str, text: str, line: int, end_line: int, where: str) -> _Raw:
    """A whole call from ``ARGS) = RET``."""
    if text.endswith(_UNFINISHED + ")") or re.search(r" <unfinished \.\.\.>\)\s+= \?$", text):
        # a call cut by the process's death: "exit_group(0 <unfinished ...>) = ?"
        args = text[: text.rfind(_UNFINISHED)]
        return _Raw(pid, name, args, "?", None, None, line, end_line)
    m = _RET.search(text)
    if not m:
        raise StraceParseError(f"{where}: no '= RETURN' at the end of {name}(...)")
    return _Raw(pid, name, text[: m.start()], m.group(1), _unescape(m.group(2)) if m.group(2) is not None else None,
                m.group(3), line, end_line)


def _parse_lines(text: str, default_pid: int) -> tuple[list[_Raw], dict[int, dict[str, object]]]:
    calls: list[_Raw] = []
    exits: dict[int, dict[str, object]] = {}
    pending: dict[int, tuple[str, str, int]] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if not line.strip():
            continue
        where = f"line {n}"
        m = _PREFIX.match(line)
        assert m is not None
        pid = int(m.group(1) or m.group(2) or default_pid)
        body = _DURATION.sub("", line[m.end():])
        if body.startswith("---"):
            if not _SIGNAL.match(body):
                raise StraceParseError(f"{where}: cannot parse the signal line {line[:100]!r}")
            continue
        if body.startswith("+++"):
            em = _EXIT.match(body)
            if not em:
                raise StraceParseError(f"{where}: cannot parse the exit line {line[:100]!r}")
            if em.group(1) is not None:
                exits[pid] = {"code": int(em.group(1))}
            elif em.group(2) is not None:
                exits[pid] = {"signal": em.group(2)}
            pending.pop(pid, None)
            continue
        rm = _RESUMED.match(body)
        if rm:
            name, rest = rm.group(1), rm.group(2)
            started = pending.pop(pid, None)
            if started is None or started[0] != name:
                raise StraceParseError(f"{where}: '<... {name} resumed>' without an unfinished {name}() of pid {pid}")
            if rest.endswith(_UNFINISHED):  # resumed and cut again (rare)
                pending[pid] = (name, started[1] + rest[: -len(_UNFINISHED)], started[2])
                continue
            calls.append(_finish(pid, name, started[1] + rest, started[2], n, where))
            continue
        cm = _CALL.match(body)
        if not cm:
            raise StraceParseError(f"{where}: not strace -f output: {line[:100]!r}")
        name, rest = cm.group(1), cm.group(2)
        if rest.endswith(_UNFINISHED):
            if pid in pending:
                raise StraceParseError(f"{where}: pid {pid} starts {name}() while {pending[pid][0]}() is unfinished")
            pending[pid] = (name, rest[: -len(_UNFINISHED)], n)
            continue
        calls.append(_finish(pid, name, rest, n, n, where))
    return calls, exits


# -- calls -> events ---------------------------------------------------------------------------------------
def _ret(r: _Raw) -> int | None:
    if r.ret == "?":
        return None
    v = int(r.ret, 16) if r.ret.startswith("0x") else int(r.ret)
    if r.errno is not None and v == -1:
        code = _ERRNO.get(r.errno)
        if code is None:
            if r.errno.startswith("ERESTART") or r.errno == "ENOIOCTLCMD":
                return None  # interrupted; restarted later
            raise ValueError(f"unknown errno {r.errno}")
        return -code
    return v


def _clone_flags(r: _Raw, args: list[str]) -> int:
    if r.name == "fork":
        return SIGCHLD
    if r.name == "vfork":
        return CLONE_VM | CLONE_VFORK | SIGCHLD
    if r.name == "clone3":
        m = re.search(r"flags=([^,}]+)", r.args)
        flags = parse_int(m.group(1)) if m else 0
        s = re.search(r"exit_signal=([^,}]+)", r.args)
        return flags | (parse_int(s.group(1)) if s else 0)
    for a in args:
        if a.startswith("flags="):
            return parse_int(a)
    return parse_int(args[1]) if len(args) > 1 else 0  # clone(flags, stack, ...) without names


def _event(r: _Raw) -> Event | None:
    """The event of one finished call, or None for a call the replay does not need."""
    name = r.name
    if name not in MEMORY_CALLS and name not in _FOLLOWED:
        return None
    args = split_args(r.args)
    ret = _ret(r)
    ev = Event(call=name, ret=ret, line=r.line)
    if name in MEMORY_CALLS:
        ev.args = [parse_int(a) for a in args]
        if name == "mmap" and len(args) == 6:
            fd, path = parse_fd(args[4])
            ev.path = path if fd >= 0 else None
        if ret is None:
            return None  # did not return (the process died in it): nothing to compare
        return ev
    if name in ("openat", "open", "creat", "openat2"):
        if name == "openat":
            dirfd, path_arg, flags = parse_fd(args[0])[0], parse_string(args[1]), parse_int(args[2])
            mode = parse_int(args[3]) if len(args) > 3 else 0
        elif name == "openat2":
            dirfd, path_arg = parse_fd(args[0])[0], parse_string(args[1])
            fm = re.search(r"flags=([^,}]+)", args[2])
            mm = re.search(r"mode=([^,}]+)", args[2])
            flags = parse_int(fm.group(1)) if fm else 0
            mode = parse_int(mm.group(1)) if mm else 0
        elif name == "open":
            dirfd, path_arg, flags = AT_FDCWD, parse_string(args[0]), parse_int(args[1])
            mode = parse_int(args[2]) if len(args) > 2 else 0
        else:
            dirfd, path_arg, flags, mode = AT_FDCWD, parse_string(args[0]), O_CREAT | O_WRONLY | O_TRUNC, \
                parse_int(args[1])
        ev.call = "openat"
        ev.args = [dirfd, flags, mode]
        ev.path = r.ret_path if r.ret_path is not None else path_arg
        return ev
    if name == "close":
        fd, path = parse_fd(args[0])
        ev.args, ev.path = [fd], path
        return ev
    if name == "close_range":  # first, last (~0U for "every descriptor"), flags
        ev.args = [0xFFFFFFFF if a.strip() == "~0U" else parse_int(a) for a in args[:3]]
        return ev
    if name in ("dup", "dup2", "dup3"):
        fd, path = parse_fd(args[0])
        ev.args, ev.path = [fd, *(parse_int(a) for a in args[1:])], path
        return ev
    if name == "fcntl":
        fd, path = parse_fd(args[0])
        cmd = parse_int(args[1])
        if cmd not in (F_DUPFD, F_DUPFD_CLOEXEC):
            return None
        ev.call = "fcntl_dupfd"
        ev.args, ev.path = [fd, cmd, parse_int(args[2]) if len(args) > 2 else 0], path
        return ev
    if name == "memfd_create":
        ev.args = [parse_int(args[1])]
        ev.path = r.ret_path if r.ret_path is not None else f"/memfd:{parse_string(args[0])} (deleted)"
        return ev
    if name == "ftruncate":
        fd, path = parse_fd(args[0])
        ev.args, ev.path = [fd, parse_int(args[1])], path
        return ev
    if name in ("execve", "execveat"):
        if ret != 0:
            return None  # a failed execve changes nothing
        off = 1 if name == "execveat" else 0
        ev.call = "execve"
        ev.path = parse_string(args[off])
        ev.argv = _string_list(args[off + 1]) or []
        ev.envp = _string_list(args[off + 2]) if len(args) > off + 2 else None
        return ev
    if name in ("clone", "clone3", "fork", "vfork"):
        if ret is None or ret <= 0:
            return None
        flags = _clone_flags(r, args)
        ev.args = [flags]
        ev.thread = bool(flags & CLONE_THREAD)
        return ev
    if name == "exit_group":
        ev.args = [parse_int(args[0])]
        return ev
    return None


_FOLLOWED = {"openat", "open", "creat", "openat2", "close", "close_range", "dup", "dup2", "dup3", "fcntl",
             "memfd_create", "ftruncate", "execve", "execveat", "clone", "clone3", "fork", "vfork", "exit_group"}


def looks_like_strace(text: str) -> bool:
    """Whether ``text`` is to be read as strace output: anything that is not a JSON object (so that a
    malformed log gets the parser's error naming its line, not a JSON error)."""
    return not text.lstrip().startswith("{")


def parse_strace(text: str, *, kernel: str | None = None, pid: int = 1) -> ProgramTrace:
    """The ProgramTrace of an ``strace -f -X raw -y`` log (``pid`` names the process of a log without
    pids).  Raises :class:`StraceParseError` naming the line for anything it cannot read."""
    calls, exits = _parse_lines(text, pid)
    events: list[tuple[_Raw, Event]] = []
    for r in sorted(calls, key=lambda c: c.end_line):
        try:
            ev = _event(r)
        except (ValueError, IndexError) as e:
            raise StraceParseError(f"line {r.line}: {r.name}(): {e}") from None
        if ev is not None:
            events.append((r, ev))
    if not calls:
        raise StraceParseError("line 1: no system call in the log")
    root = calls[0].pid if calls else pid
    root = min(calls, key=lambda c: c.line).pid
    # who created whom: child -> (creating tid, thread?)
    created: dict[int, tuple[int, bool]] = {}
    for r, ev in events:
        if ev.call in ("clone", "clone3", "fork", "vfork") and ev.ret is not None:
            created[ev.ret] = (r.pid, bool(ev.thread))

    def tgid(tid: int, depth: int = 0) -> int:
        c = created.get(tid)
        if c is None or not c[1] or depth > 1000:
            return tid
        return tgid(c[0], depth + 1)

    per: dict[int, list[Event]] = {}
    starts: dict[int, Start] = {}
    forks: dict[int, tuple[int, int]] = {}  # child tgid -> (parent tgid, event index)
    for r, ev in events:
        g = tgid(r.pid)
        lst = per.setdefault(g, [])
        if r.pid != g:
            ev.tid = r.pid
        if ev.call == "execve" and g not in starts and g not in created:
            starts[g] = Start("exec", path=ev.path, argv=ev.argv, envp=ev.envp)  # the first image
            continue
        if ev.call in ("clone", "clone3", "fork", "vfork") and not ev.thread and ev.ret is not None:
            forks[ev.ret] = (g, len(lst))
        lst.append(ev)
    processes: dict[int, ProcessTrace] = {}
    order: list[int] = []

    def add(g: int) -> None:
        if g in processes:
            return
        if g in forks:
            parent, index = forks[g]
            start = Start("fork", parent=parent, event=index)
        else:
            parent = None
            start = starts.get(g) or Start("maps")
        processes[g] = ProcessTrace(pid=g, parent=parent, start=start, events=per.get(g, []), exit=exits.get(g))
        order.append(g)
        kids = sorted((idx, c) for c, (p, idx) in forks.items() if p == g)
        for _, c in kids:
            add(c)

    add(root)
    for g in sorted(set(per) | set(forks), key=lambda x: (x != root, x)):
        if g not in processes:
            if g in forks and forks[g][0] not in processes:
                add(forks[g][0])
            add(g)
    trace = ProgramTrace(processes=[processes[g] for g in order], source="strace", kernel=kernel,
                         command=list(starts[root].argv or []) if root in starts else [])
    trace.validate()
    return trace


def load_strace(path: str | Path, **kwargs: object) -> ProgramTrace:
    """:func:`parse_strace` of a file."""
    return parse_strace(Path(path).read_text(encoding="utf-8", errors="surrogateescape"), **kwargs)  # type: ignore[arg-type]
