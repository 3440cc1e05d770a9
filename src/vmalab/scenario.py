"""The vmalab scenario format, version 1 (``docs/scenario-format.md``).

This module parses and validates a scenario (sizes, address expressions, flag words, ``fd`` specs, ops and
their fields) into plain data that both back ends consume: the model executor (:mod:`vmalab.execute`) and
the live-kernel runner (:mod:`vmalab.oracle.kernel`).  It also formats results (addresses relative to the
window) and compares two results field by field.
"""

from __future__ import annotations

import json
import re
import reprlib
from dataclasses import dataclass, field
from typing import Any

from . import constants as C

BASE = 0x500000000000
WINDOW_SIZE = 1 << 30

SIZE_SUFFIX = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": C.PAGE_SIZE}


class ScenarioError(ValueError):
    """A scenario file is malformed: the message names the op and the field."""


#: the range of a size or address offset: what fits in the unsigned long the kernel receives (or its negation)
VALUE_LIMIT = 1 << 64

_SHOW = reprlib.Repr()
_SHOW.maxlevel, _SHOW.maxstring, _SHOW.maxother, _SHOW.maxlong, _SHOW.maxlist, _SHOW.maxdict = 2, 40, 40, 40, 4, 4


def show(value: Any) -> str:
    """A short ``repr`` of a scenario value for an error message: long strings, numbers and deep or long
    lists are abbreviated (a message stays one short line)."""
    try:
        return _SHOW.repr(value)
    except (ValueError, RecursionError):  # an int too long to convert to decimal
        return f"<{type(value).__name__}>"


# --- sizes -------------------------------------------------------------------------------------------
_TERM = re.compile(r"\s*(0[xX][0-9a-fA-F]+|\d+)\s*([KMGTP]?)\s*")


def parse_size(value: Any, what: str = "size") -> int:
    """Parse a size/offset: an integer, ``"0x1000"``, ``"8K"``, ``"3P"`` (pages), or sums/differences
    of those (``"1M+8K"``, ``"1M-4K"``).  The result may be negative only if written as an integer or a
    difference (the kernel receives it as an unsigned long)."""
    if isinstance(value, bool):
        raise ScenarioError(f"{what}: expected a size, got {show(value)}")
    if isinstance(value, int):
        return _in_range(value, value, what)
    if not isinstance(value, str) or not value.strip():
        raise ScenarioError(f"{what}: expected a size, got {show(value)}")
    text = value.strip()
    total = 0
    sign = 1
    pos = 0
    if text[0] in "+-":
        sign = -1 if text[0] == "-" else 1
        pos = 1
    while True:
        m = _TERM.match(text, pos)
        if not m or not m.group(1):
            raise ScenarioError(f"{what}: cannot parse size {show(value)}")
        digits = m.group(1)
        if len(digits) > 24:  # more than 64 bits in any notation: also keeps int() within its digit limit
            raise ScenarioError(f"{what}: size {show(value)} does not fit in 64 bits")
        if len(digits) > 1 and digits[0] == "0" and digits[1] not in "xX" and digits.strip("0"):
            raise ScenarioError(f"{what}: cannot parse size {show(value)}: a leading zero "
                                f"(write {int(digits)} or {int(digits):#x})")
        n = int(digits, 0) * SIZE_SUFFIX.get(m.group(2), 1)
        total = _in_range(total + sign * n, value, what)
        pos = m.end()
        if pos == len(text):
            return total
        if text[pos] not in "+-":
            raise ScenarioError(f"{what}: cannot parse size {show(value)}")
        sign = -1 if text[pos] == "-" else 1
        pos += 1


def _in_range(n: int, value: Any, what: str) -> int:
    if not -VALUE_LIMIT < n < VALUE_LIMIT:
        raise ScenarioError(f"{what}: size {show(value)} does not fit in 64 bits")
    return n


# --- addresses ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Addr:
    """An address expression. ``kind`` is ``abs``, ``base``, ``null``, ``brk``, ``fail`` (format 1.1: the
    ``fail_addr`` of the most recent repeat), ``map`` or ``mapend``."""

    kind: str
    offset: int = 0
    name: str | None = None

    def to_json(self) -> Any:
        if self.kind == "null":
            return None
        if self.kind == "abs":
            return f"abs:{self.offset:#x}"
        sign = "-" if self.offset < 0 else "+"
        if self.kind in ("base", "brk", "fail"):
            return f"{self.kind}{sign}{abs(self.offset):#x}"
        return f"{self.kind}:{self.name}{sign}{abs(self.offset):#x}"


def parse_addr(value: Any, what: str = "addr") -> Addr:
    """Parse an address expression of the scenario format."""
    if value is None:
        return Addr("null")
    if isinstance(value, bool):
        raise ScenarioError(f"{what}: expected an address, got {show(value)}")
    if isinstance(value, int):
        return Addr("abs", _in_range(value, value, what))
    if not isinstance(value, str):
        raise ScenarioError(f"{what}: expected an address, got {show(value)}")
    text = value.strip()
    if text.startswith("abs:"):
        return Addr("abs", parse_size(text[4:], what))
    for kind in ("base", "brk", "fail"):
        if text == kind:
            return Addr(kind, 0)
        if text.startswith(kind) and text[len(kind)] in "+-":
            return Addr(kind, parse_size(text[len(kind):], what))
    for kind in ("mapend", "map"):
        if text.startswith(kind + ":"):
            rest = text[len(kind) + 1:]
            for i in range(1, len(rest)):
                if rest[i] in "+-":
                    try:
                        off = parse_size(rest[i:], what)
                    except ScenarioError:
                        continue
                    return Addr(kind, off, rest[:i])
            if not rest:
                raise ScenarioError(f"{what}: {kind}: needs a name")
            return Addr(kind, 0, rest)
    try:
        return Addr("abs", parse_size(text, what))
    except ScenarioError:
        raise ScenarioError(f"{what}: cannot parse address {show(value)}") from None


# --- fd specs ----------------------------------------------------------------------------------------
FILE_KINDS = ("memfd", "disk", "tmpfs", "secretmem")
# model drivers: "dev:NAME[:SIZE]", a built-in one (see vmalab.drivers) or one the command line loaded from a file
# (--driver FILE.py: vmalab.execute.ModelRunner.loaded_driver); NAME is a plain name, never a path: a scenario
# alone never imports code
MODEL_ONLY_KINDS = ("dev",)


@dataclass(frozen=True)
class FdSpec:
    """``kind`` is ``none``, ``devzero``, ``raw`` (``fd:N``) or a file kind; ``mode`` is ``rw``/``ro``/``wo``."""

    kind: str
    name: str = ""
    size: int | None = None
    mode: str = "rw"
    raw: int = -1

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.name)


def parse_fd(value: Any, what: str = "fd") -> FdSpec:
    if value is None or value == "none":
        return FdSpec("none")
    if value == "devzero":
        return FdSpec("devzero")
    if isinstance(value, int) and not isinstance(value, bool):
        return FdSpec("raw", raw=_in_range(value, value, what))
    if not isinstance(value, str):
        raise ScenarioError(f"{what}: expected an fd spec, got {show(value)}")
    if value.startswith("fd:"):
        try:
            return FdSpec("raw", raw=_in_range(int(value[3:], 0), value, what))
        except ValueError:  # not a number, or more digits than int() converts
            raise ScenarioError(f"{what}: bad raw descriptor {show(value)}") from None
    kind, _, rest = value.partition(":")
    if kind == "dev":
        name, _, size_s = rest.partition(":")
        if not name or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ScenarioError(f"{what}: bad driver name in {show(value)}")
        return FdSpec("dev", name, parse_size(size_s, what) if size_s else None)
    if kind not in FILE_KINDS:
        raise ScenarioError(f"{what}: unknown fd kind {show(kind)} in {show(value)}")
    parts = rest.split(":")
    name = parts[0]
    if not name or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ScenarioError(f"{what}: bad file name in {show(value)}")
    size = None
    mode = "rw"
    if len(parts) > 3:
        raise ScenarioError(f"{what}: too many fields in {show(value)}")
    if len(parts) == 2 and parts[1] in ("ro", "wo"):
        parts = [name, "", parts[1]]  # "memfd:NAME:ro" — a bare mode in the size position
    if len(parts) >= 2 and parts[1] != "":
        size = parse_size(parts[1], what)
        if size < 0:
            raise ScenarioError(f"{what}: negative file size in {show(value)}")
    if len(parts) == 3:
        if parts[2] not in ("ro", "wo"):
            raise ScenarioError(f"{what}: mode must be ro or wo in {show(value)}")
        if kind == "secretmem":
            raise ScenarioError(f"{what}: secretmem takes no mode")
        mode = parts[2]
    return FdSpec(kind, name, size, mode)


# --- ops ---------------------------------------------------------------------------------------------
# op -> (required fields, optional fields)
OP_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "mmap": (("addr", "len", "prot", "flags"), ("fd", "offset")),
    "munmap": (("addr", "len"), ()),
    "munlock": (("addr", "len"), ()),
    "mprotect": (("addr", "len", "prot"), ()),
    "mremap": (("old", "old_len", "new_len"), ("flags", "new_addr")),
    "madvise": (("addr", "len", "advice"), ()),
    "mlock": (("addr", "len"), ("flags",)),
    "mlockall": (("flags",), ()),
    "munlockall": ((), ()),
    "mseal": (("addr", "len"), ("flags",)),
    "msync": (("addr", "len", "flags"), ()),
    "mincore": (("addr", "len"), ()),
    "touch": (("addr", "write"), ("value",)),
    "brk": (("addr",), ()),
    "ftruncate": (("fd", "len"), ()),
    "setrlimit": (("resource", "value"), ("max",)),
    "fork": ((), ("read",)),
    "repeat": (("count", "step", "body"), ()),
    "vma_count": ((), ()),
    "snapshot": ((), ("range",)),
    "status": ((), ()),  # format 1.1: the memory lines of /proc/self/status
    "capdrop": (("cap",), ()),  # format 1.1: drop one capability for the rest of the scenario
}
ADDR_FIELDS = {"addr", "old", "new_addr"}
SIZE_FIELDS = {"len", "offset", "old_len", "new_len", "step"}
FLAG_TABLES: dict[tuple[str, str], tuple[dict[str, int], str]] = {
    ("mmap", "prot"): (C.PROT_NAMES, "prot"), ("mprotect", "prot"): (C.PROT_NAMES, "prot"),
    ("mmap", "flags"): (C.MAP_NAMES, "flags"), ("mremap", "flags"): (C.MREMAP_NAMES, "flags"),
    ("madvise", "advice"): (C.MADV_NAMES, "advice"), ("mlock", "flags"): (C.MLOCK_NAMES, "flags"),
    ("mlockall", "flags"): (C.MLOCK_NAMES, "flags"), ("mseal", "flags"): ({}, "flags"),
    ("msync", "flags"): (C.MSYNC_NAMES, "flags"), ("setrlimit", "resource"): (C.RLIMIT_NAMES, "resource"),
}


@dataclass
class Op:
    """One parsed op: ``args`` holds the scenario's own JSON values (copied to the result), ``p`` the parsed
    values (``Addr``, ``int``, ``FdSpec``, ``bool``, ``Op`` for a repeat body, lists)."""

    op: str
    args: dict[str, Any]
    p: dict[str, Any]
    note: str | None = None


@dataclass
class Scenario:
    name: str
    description: str = ""
    window: bool = True
    rlimit_stack: int | None = None  # bytes; C.RLIM_INFINITY for "unlimited"; None: inherit
    ops: list[Op] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    timeout: float | None = None  # seconds (format 1.1): the limit of a run, live or on the model

    def files(self) -> dict[tuple[str, str], FdSpec]:
        """Every file the scenario names, keyed by (kind, name), with the size of its first use."""
        out: dict[tuple[str, str], FdSpec] = {}
        for op in self.iter_ops():
            fd = op.p.get("fd")
            if isinstance(fd, FdSpec) and fd.kind in FILE_KINDS + MODEL_ONLY_KINDS and fd.key not in out:
                out[fd.key] = fd
        return out

    def iter_ops(self) -> list[Op]:
        out: list[Op] = []
        for op in self.ops:
            out.append(op)
            if op.op == "repeat":
                out.append(op.p["body"])
        return out


def parse_rlimit_value(value: Any, what: str) -> int:
    if value == "unlimited" or value == "RLIM_INFINITY":
        return C.RLIM_INFINITY
    n = parse_size(value, what)
    if n < 0:
        raise ScenarioError(f"{what}: negative limit")
    return n


def parse_op(raw: Any, where: str) -> Op:
    if not isinstance(raw, dict):
        raise ScenarioError(f"{where}: an op must be a JSON object")
    name = raw.get("op")
    if not isinstance(name, str) or name not in OP_FIELDS:
        raise ScenarioError(f"{where}: unknown op {show(name)}")
    required, optional = OP_FIELDS[name]
    allowed = set(required) | set(optional) | {"op", "note"}
    for key in raw:
        if key not in allowed:
            raise ScenarioError(f"{where}: op {show(name)} has no field {show(key)}")
    for key in required:
        if key not in raw:
            raise ScenarioError(f"{where}: op {show(name)} needs field {show(key)}")
    note = raw.get("note")
    if note is not None and not isinstance(note, str):
        raise ScenarioError(f"{where}: note must be a string")
    args = {k: v for k, v in raw.items() if k not in ("op", "note")}
    p: dict[str, Any] = {}
    for key, value in args.items():
        w = f"{where}: {name}.{key}"
        if key in ADDR_FIELDS:
            p[key] = parse_addr(value, w)
        elif key in SIZE_FIELDS:
            p[key] = parse_size(value, w)
        elif (name, key) in FLAG_TABLES:
            table, label = FLAG_TABLES[(name, key)]
            try:
                p[key] = C.parse_flag_word(value, table, w)
            except C.FlagWordError as e:
                raise ScenarioError(str(e)) from None
        elif key == "fd":
            p[key] = parse_fd(value, w)
        elif key == "write":
            if not isinstance(value, bool):
                raise ScenarioError(f"{w}: must be true or false")
            p[key] = value
        elif name == "setrlimit" and key in ("value", "max"):
            p[key] = parse_rlimit_value(value, w)
        elif key == "value":
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
                raise ScenarioError(f"{w}: must be a byte value 0..255")
            p[key] = value
        elif key == "count":  # the live runner reads it as an unsigned 64-bit number
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < VALUE_LIMIT:
                raise ScenarioError(f"{w}: must be an integer from 0 to 2**64-1")
            p[key] = value
        elif key == "body":
            body = parse_op(value, f"{w}")
            if body.op in ("repeat", "fork", "snapshot", "status"):
                raise ScenarioError(f"{w}: a repeat body cannot be {body.op!r}")
            p[key] = body
        elif key == "read":
            if not isinstance(value, list):
                raise ScenarioError(f"{w}: must be a list of addresses")
            p[key] = [parse_addr(a, f"{w}[{i}]") for i, a in enumerate(value)]
        elif key == "range":
            if not isinstance(value, list) or len(value) != 2:
                raise ScenarioError(f"{w}: must be [lo, hi]")
            p[key] = (parse_addr(value[0], w), parse_addr(value[1], w))
        elif key == "cap":
            p[key] = parse_cap(value, w)
        else:  # pragma: no cover - every declared field is handled above
            raise ScenarioError(f"{w}: unhandled field")
    return Op(name, args, p, note)


def parse_cap(value: Any, what: str) -> str:
    """A capability of ``capdrop``: its name (``CAP_IPC_LOCK``) or number; returns the name."""
    if isinstance(value, int) and not isinstance(value, bool):
        names = {n: name for name, n in C.CAP_NAMES.items()}
        if value in names:
            return names[value]
    elif isinstance(value, str) and value in C.CAP_NAMES:
        return value
    raise ScenarioError(f"{what}: unknown capability {show(value)} (CAP_IPC_LOCK, CAP_SYS_RAWIO, "
                        "CAP_SYS_RESOURCE, CAP_SYS_ADMIN, ...)")


def parse_timeout(value: Any) -> float | None:
    """The optional top-level ``timeout`` (format 1.1): positive seconds, at most a day."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 86400:
        raise ScenarioError(f"'timeout' must be a positive number of seconds (at most 86400), got {show(value)}")
    return float(value)


def parse_inject(value: Any) -> list[tuple[str, int, int]]:
    """The model-only ``"inject"`` field: ``[{"point": P, "hit": K, "errno": "ENOMEM"}, ...]`` (fail the K-th
    hit of fault point P, ``vmalab faults list``) as (point, hit, -errno) triples."""
    from .faultpoints import FAULT_POINTS
    if not isinstance(value, list):
        raise ScenarioError("'inject' must be a list of {point, hit, errno} objects")
    out: list[tuple[str, int, int]] = []
    for i, item in enumerate(value):
        w = f"inject[{i}]"
        if not isinstance(item, dict) or set(item) - {"point", "hit", "errno"} or "point" not in item:
            raise ScenarioError(f"{w}: must be an object with point, hit and errno")
        point, hit, err = item["point"], item.get("hit", 1), item.get("errno")
        if not isinstance(point, str) or point not in FAULT_POINTS:
            raise ScenarioError(f"{w}: unknown fault point {show(point)} (see 'vmalab faults list')")
        if isinstance(hit, bool) or not isinstance(hit, int) or hit < 1:
            raise ScenarioError(f"{w}: hit must be a positive integer")
        if err is None:
            num = FAULT_POINTS[point].errno
        elif isinstance(err, str) and err in C.ERRNO_NUMBERS:
            num = C.ERRNO_NUMBERS[err]
        elif isinstance(err, int) and not isinstance(err, bool) and 0 < err < 4096:
            num = err
        else:
            raise ScenarioError(f"{w}: bad errno {show(err)}")
        if any(p == point for p, _, _ in out):
            raise ScenarioError(f"{w}: point {show(point)} is injected twice (one hit per point)")
        out.append((point, hit, -num))
    return out


def parse_scenario(raw: Any) -> Scenario:
    """Validate and parse a scenario object (already decoded from JSON)."""
    if not isinstance(raw, dict):
        raise ScenarioError("a scenario must be a JSON object")
    allowed = {"name", "description", "window", "rlimit_stack", "ops", "format", "expect", "reason", "kernel_profile",
               "inject", "timeout"}
    for key in raw:
        if key not in allowed:
            raise ScenarioError(f"unknown scenario field {show(key)}")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ScenarioError("scenario needs a non-empty string 'name'")
    window = raw.get("window", True)
    if not isinstance(window, bool):
        raise ScenarioError("'window' must be true or false")
    rl = raw.get("rlimit_stack")
    rlimit_stack = None if rl is None else parse_rlimit_value(rl, "rlimit_stack")
    ops_raw = raw.get("ops")
    if not isinstance(ops_raw, list):
        raise ScenarioError("scenario needs a list 'ops'")
    ops = [parse_op(o, f"op {i}") for i, o in enumerate(ops_raw)]
    desc = raw.get("description", "")
    if not isinstance(desc, str):
        raise ScenarioError("'description' must be a string")
    parse_inject(raw.get("inject", []))
    timeout = parse_timeout(raw.get("timeout"))
    return Scenario(name, desc, window, rlimit_stack, ops, raw, timeout)


class OversizedInteger:
    """A JSON integer with more digits than Python's ``int()`` converts (4300): the decoder keeps this
    stand-in, so that the parser can refuse it naming the op and the field."""

    def __init__(self, digits: str) -> None:
        self.ndigits = len(digits.lstrip("-"))

    def __repr__(self) -> str:
        return f"<an integer of {self.ndigits} digits>"


def _json_int(text: str) -> int | OversizedInteger:
    try:
        return int(text)
    except ValueError:
        return OversizedInteger(text)


def load_json_file(path: str) -> Any:
    """Read a JSON file (a scenario or a recorded result); every failure is a :class:`ScenarioError` with
    one line naming the file: unreadable, not UTF-8, not JSON, or nesting too deep for the decoder.  An
    integer of more digits than Python converts (4300) is decoded as an :class:`OversizedInteger`, which
    every field of the format refuses."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f, parse_int=_json_int)
    except OSError as e:
        raise ScenarioError(f"{path}: {e.strerror or e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ScenarioError(f"{path}: not valid JSON: {e}") from None
    except RecursionError:
        raise ScenarioError(f"{path}: not valid JSON: nested too deeply") from None


def load_scenario(path: str) -> Scenario:
    """Read and parse a scenario file; every failure is a :class:`ScenarioError` with one line that
    starts with the file's path (and names the op and field where there is one)."""
    raw = load_json_file(path)
    try:
        return parse_scenario(raw)
    except ScenarioError as e:
        raise ScenarioError(f"{path}: {e}") from None


# --- results -----------------------------------------------------------------------------------------
def format_addr(addr: int, window: bool) -> str:
    """Format an address for a result: ``base+0x..`` inside ``[BASE-1G, BASE+2G)`` of a windowed
    scenario, else absolute hex."""
    if window and BASE - WINDOW_SIZE <= addr < BASE + 2 * WINDOW_SIZE:
        d = addr - BASE
        return f"base+{d:#x}" if d >= 0 else f"base-{-d:#x}"
    return f"{addr:#x}"


COMPARED_OP_FIELDS = ("ret", "errno", "signal", "value", "vec", "failed_at")
#: format 1.1: compared when both results have them (recordings made before 1.1 have no ``fail_addr``)
COMPARED_IF_BOTH_FIELDS = ("fail_addr",)
#: format 1.1: the lines of a ``status`` result that take part in agreement (the others are informational)
COMPARED_STATUS_FIELDS = ("VmSize", "VmLck", "VmPin", "VmData", "VmStk")
COMPARED_VMA_FIELDS = ("start", "end", "perms", "pgoff", "name", "rss_kb", "vmflags", "locked_kb")


# Fields of a snapshot VMA that are not compared when the VMA overlaps one of the process's initial VMAs.
MASKED_INITIAL_VMA_FIELDS = ("rss_kb", "locked_kb")


def _result_addr(text: Any) -> int | None:
    """An address of a result (``base+0x..``, ``base-0x..`` or ``0x..``) as a number."""
    if not isinstance(text, str):
        return None
    try:
        if text.startswith("base+"):
            return BASE + int(text[5:], 16)
        if text.startswith("base-"):
            return BASE - int(text[5:], 16)
        return int(text, 16)
    except (ValueError, IndexError):
        return None


def initial_ranges(result: dict[str, Any]) -> list[tuple[int, int]]:
    """The ranges of the initial VMAs a result records (``env.initial_maps``; empty if it has none)."""
    text = result.get("env", {}).get("initial_maps") or ""
    out: list[tuple[int, int]] = []
    for line in text.splitlines():
        head = line.split(" ", 1)[0]
        lo, sep, hi = head.partition("-")
        try:
            if sep:
                out.append((int(lo, 16), int(hi, 16)))
        except ValueError:
            continue
    return out


def check_result(raw: Any) -> dict[str, Any]:
    """Check that ``raw`` has the shape of a result object (a recording read back from a file): a JSON
    object with a list ``results`` of op results, each naming a known op, with ``args``, ``vmas`` and
    ``child`` of the right types, and an ``env`` whose ``initial_maps`` is a text.  Returns ``raw``;
    raises :class:`ScenarioError` with one line otherwise (the caller adds the file)."""
    if not isinstance(raw, dict):
        raise ScenarioError(f"not a recorded result: a JSON {type(raw).__name__}, not an object")
    if "results" not in raw:
        hint = " (this is a scenario; its recording is NAME.kernel.json)" if "ops" in raw else ""
        raise ScenarioError(f"not a recorded result: no 'results'{hint}")
    results, env = raw["results"], raw.get("env", {})
    if not isinstance(results, list):
        raise ScenarioError("'results' must be a list")
    if not isinstance(env, dict) or not isinstance(env.get("initial_maps", ""), str):
        raise ScenarioError("'env' must be an object whose 'initial_maps' is a text")

    def vmas(value: Any, where: str) -> None:
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise ScenarioError(f"{where}: must be a list of VMA objects")

    for i, r in enumerate(results):
        where = f"results[{i}]"
        if not isinstance(r, dict):
            raise ScenarioError(f"{where}: must be an object")
        op = r.get("op")
        if not isinstance(op, str) or op not in OP_FIELDS:
            raise ScenarioError(f"{where}: unknown op {show(op)}")
        if not isinstance(r.get("args", {}), dict):
            raise ScenarioError(f"{where}: 'args' must be an object")
        if "vmas" in r:
            vmas(r["vmas"], f"{where}.vmas")
        if "child" in r:
            child = r["child"]
            if not isinstance(child, dict) or not isinstance(child.get("reads", []), list):
                raise ScenarioError(f"{where}.child: must be an object with a list 'reads'")
            vmas(child.get("vmas", []), f"{where}.child.vmas")
    return raw


def compare_results(expected: dict[str, Any], got: dict[str, Any]) -> list[str]:
    """Field-by-field comparison of two result objects, as the format defines agreement.  Returns a list
    of human-readable differences (empty when the results agree).

    Masking rule (``docs/oracle.md``): the runner's own VMAs — program, bss, ``[heap]``, vDSO, ``[stack]``,
    everything in ``env.initial_maps`` of either result — hold pages the runner itself touched before and
    between ops, which the model cannot know.  So for a snapshot VMA (also a fork child's) whose range
    overlaps an initial VMA, ``rss_kb`` and ``locked_kb`` are not compared; start, end, perms, pgoff, name
    and vmflags still are.  Windowed snapshots never contain such VMAs (the window is proven empty), so the
    rule only matters for ``"window": false`` and range snapshots."""
    diffs: list[str] = []
    ranges = initial_ranges(expected) or initial_ranges(got)
    er, gr = expected.get("results", []), got.get("results", [])
    if len(er) != len(gr):
        diffs.append(f"number of results: expected {len(er)}, got {len(gr)}")
    for i, (e, g) in enumerate(zip(er, gr, strict=False)):
        where = f"op {i} ({e.get('op')})"
        if e.get("op") != g.get("op"):
            diffs.append(f"{where}: op expected {e.get('op')!r}, got {g.get('op')!r}")
            continue
        for k in COMPARED_OP_FIELDS:
            if e.get(k) != g.get(k):
                diffs.append(f"{where}: {k} expected {e.get(k)!r}, got {g.get(k)!r}")
        for k in COMPARED_IF_BOTH_FIELDS:
            if k in e and k in g and e[k] != g[k]:
                diffs.append(f"{where}: {k} expected {e[k]!r}, got {g[k]!r}")
        if "status" in e or "status" in g:
            es, gs = e.get("status") or {}, g.get("status") or {}
            for k in COMPARED_STATUS_FIELDS:
                if es.get(k) != gs.get(k):
                    diffs.append(f"{where}: status {k} expected {es.get(k)!r} kB, got {gs.get(k)!r} kB")
        if "child" in e or "child" in g:
            ec, gc = e.get("child") or {}, g.get("child") or {}
            if ec.get("reads") != gc.get("reads"):
                diffs.append(f"{where}: child reads expected {ec.get('reads')!r}, got {gc.get('reads')!r}")
            diffs += [f"{where}: child {d}"
                      for d in _compare_vmas(ec.get("vmas") or [], gc.get("vmas") or [], ranges)]
        if "vmas" in e or "vmas" in g:
            diffs += [f"{where}: {d}" for d in _compare_vmas(e.get("vmas") or [], g.get("vmas") or [], ranges)]
    return diffs


def _vma_key(v: dict[str, Any], fields: tuple[str, ...] = COMPARED_VMA_FIELDS) -> tuple[Any, ...]:
    return tuple(v.get(k) if k != "locked_kb" else (v.get(k) or 0) for k in fields)


def _overlaps_initial(v: dict[str, Any], ranges: list[tuple[int, int]]) -> bool:
    lo, hi = _result_addr(v.get("start")), _result_addr(v.get("end"))
    return lo is not None and hi is not None and any(s < hi and lo < e for s, e in ranges)


def _compare_vmas(ev: list[dict[str, Any]], gv: list[dict[str, Any]],
                  ranges: list[tuple[int, int]] | None = None) -> list[str]:
    out: list[str] = []
    if len(ev) != len(gv):
        out.append(f"{len(ev)} VMA{'s' * (len(ev) != 1)} expected, got {len(gv)}")
    for j, (a, b) in enumerate(zip(ev, gv, strict=False)):
        cmp: tuple[str, ...] = COMPARED_VMA_FIELDS
        if ranges and (_overlaps_initial(a, ranges) or _overlaps_initial(b, ranges)):
            cmp = tuple(k for k in COMPARED_VMA_FIELDS if k not in MASKED_INITIAL_VMA_FIELDS)
        if _vma_key(a, cmp) != _vma_key(b, cmp):
            fields = [k for k in cmp if (a.get(k) or (0 if k == "locked_kb" else None))
                      != (b.get(k) or (0 if k == "locked_kb" else None))]
            out.append(f"vma {j}: {', '.join(fields)} differ: expected {vma_line(a)} | got {vma_line(b)}")
    if len(ev) != len(gv):
        for j in range(min(len(ev), len(gv)), max(len(ev), len(gv))):
            side, v = ("expected", ev[j]) if j < len(ev) else ("got", gv[j])
            out.append(f"vma {j} only {side}: {vma_line(v)}")
    return out


def vma_line(v: dict[str, Any]) -> str:
    """One snapshot VMA as a short human-readable line."""
    locked = f" locked={v['locked_kb']}K" if v.get("locked_kb") else ""
    return (f"{v.get('start')}-{v.get('end')} {v.get('perms')} {v.get('pgoff')} {v.get('name') or '-'} "
            f"rss={v.get('rss_kb')}K [{v.get('vmflags')}]{locked}")
