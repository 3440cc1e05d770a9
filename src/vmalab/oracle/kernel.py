"""Run a scenario on the live kernel and return its RESULT object (``scenario-format.md``).

The work is split between this module and a small C helper, ``runner.c``, compiled at first use:

* Python resolves the parsed :class:`~vmalab.scenario.Scenario` into a line-based PROGRAM (numbers, plus
  names where needed) and writes it to the helper's stdin.
* The helper (given this process's pid as argv[1]) asks to be killed when this process dies
  (PR_SET_PDEATHSIG) and exits if it already has, turns ASLR off and re-execs itself with a fixed argv and
  an empty environment, reads the whole program into static storage, sets its host limits, creates the
  scenario's files, drops every capability when the program says ``unprivileged 1``, proves the window
  empty, reports the initial layout, and executes the ops, writing line RECORDS to stdout.  Between ops
  it neither allocates nor uses stdio, so the process's own address space stays as unperturbed as
  possible.
* Python parses the records into the result object.

PROGRAM (one item per line; numbers are decimal, unsigned 64-bit unless shown otherwise)::

    vmalab-program 1
    window 0|1
    allow_hwpoison 0|1                    MADV_HWPOISON / MADV_SOFT_OFFLINE may reach the kernel (else fatal)
    unprivileged 0|1                      drop every capability before the first op
    limit as|locked N                     host limits (docs/oracle.md): RLIMIT_AS of the run; most bytes locked
    file IDX KIND HAS_SIZE SIZE NAME      KIND: memfd|disk|tmpfs|secretmem|devzero; NAME: the memfd name
                                          or the real path (the rest of the line)
    slot SLOT IDX rw|ro|wo                a descriptor for file IDX; ro/wo reopen /proc/self/fd/N
    name IDX TEXT                         a maps name used by map:/mapend: addresses (rest of the line)
    premap ADDR LEN                       (test hook) map PROT_NONE there before the window check
    ops N
    <N op lines, a repeat line followed by its body line>
    end

Address tokens: ``aV`` absolute, ``bV`` initial brk + V, ``fV`` the fail_addr of the most recent repeat + V,
``mI:V`` / ``eI:V`` start / end of the first VMA named ``name I``, + V.  Descriptor tokens: ``rN`` a raw
(signed) number, ``sS`` slot S.  Op lines::

    mmap A LEN PROT FLAGS FD OFF        munmap A LEN        munlock A LEN        mprotect A LEN PROT
    mremap A OLD_LEN NEW_LEN FLAGS A    madvise A LEN ADV   mlock A LEN          mlock2 A LEN FLAGS
    mlockall FLAGS    munlockall        mseal A LEN FLAGS   msync A LEN FLAGS    mincore A LEN
    touch A WRITE VALUE                 brk A               ftruncate FD LEN
    setrlimit RES SOFT                  setrlimit2 RES SOFT HARD
    fork ALL NREADS A...                repeat COUNT STEP   vma_count            snapshot 0|1|2 [A A]
    status            capdrop CAP

RECORDS: ``init brk HEX``, ``init caps HEX`` (the effective capabilities), ``init count N``, ``maps LINE``
(initial /proc/self/maps), ``ready``; then per op ``ret HEX ERRNO`` | ``st STATUS_LINE`` (``status``) |
``touch FAULTED VALUE SIG SI_CODE`` | ``vec 0101..`` | ``rep DONE ERRNO FAILED_AT SIG HAS_FAIL_ADDR HEX`` |
``snap_begin`` (``vma SMAPS_HEADER`` / ``kv SMAPS_FIELD``)... ``snap_end`` | ``child_begin`` ... ``read
FAULTED VALUE SIG SI_CODE`` ... ``child_end``, ``fork_status STATUS``; each op ends with ``done``; the run
ends with ``fin VMPEAK_KB VMHWM_KB`` and ``end``.  A fatal problem is one ``err MESSAGE`` record and exit
status 2.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import struct
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmalab import constants as C
from vmalab.oracle.cbuild import CBuildError, build_c_helper
from vmalab.procfs import STATUS_FIELDS
from vmalab.scenario import BASE, WINDOW_SIZE, Addr, FdSpec, Op, Scenario, format_addr
from vmalab.syscalls import ADDR, FD, Param, for_op

__all__ = ["KernelRunnerError", "ensure_runner", "run_on_kernel", "build_program"]

RUNNER_SOURCE = Path(__file__).with_name("runner.c")
DISK_TMP = "/var/tmp"
SHM_TMP = "/dev/shm"
_MASK = C.ULONG_MASK
_SIGNAL_NAMES = {int(s): s.name for s in signal.Signals}
_ADDRESS_OPS = ("mmap", "mremap", "brk")
# -Os and no unwind tables: the helper's segments (program, rodata, RELRO, data, bss, hence [heap]) keep the
# page boundaries the "window": false recordings were made with (tests/scenarios/placement_fresh_*).  A
# change to runner.c must keep them (check with `readelf -lW`), or those recordings no longer match.
CFLAGS = ("-Os", "-Wall", "-fno-asynchronous-unwind-tables")
# limits of the helper's static tables (runner.c)
PROGRAM_MAX = 2 << 20
MAX_FILES = 256
MAX_SLOTS = 1024
MAX_NAMES = 1024
MAX_READS = 4096

_runner_path: str | None = None
_runner_static: bool | None = None

#: the advices that damage the machine's memory when root passes them to the live kernel
HWPOISON_ADVICES = {C.MADV_NAMES[n]: n for n in ("MADV_HWPOISON", "MADV_SOFT_OFFLINE")}
#: the file kinds whose size the scenario sets (created by the runner on this machine)
_SIZED_FILE_KINDS = ("memfd", "disk", "tmpfs", "secretmem")


@dataclass(frozen=True)
class HostLimits:
    """What one live run may take from this machine (``docs/oracle.md``), in bytes.

    ``address_space`` is the runner's RLIMIT_AS (it bounds everything the run maps, populates or locks,
    also as root; the proof that the window is empty needs 1 GiB of it); ``locked`` the most it may lock
    (RLIMIT_MEMLOCK does not bind root); ``file_size`` the most the files a scenario creates may add up to
    (each file counted at the largest size an ``fd`` SIZE or an ``ftruncate`` gives it).  The defaults
    hold every corpus scenario and test (the largest file is a 2 GiB sparse memfd); ``VMALAB_LIMIT_AS``,
    ``VMALAB_LIMIT_LOCKED`` and ``VMALAB_LIMIT_FILE`` (sizes of the scenario format, e.g. ``64G``)
    override them."""

    address_space: int = 4 << 30
    locked: int = 256 << 20
    file_size: int = 4 << 30

    @classmethod
    def from_env(cls) -> HostLimits:
        from vmalab.scenario import ScenarioError, parse_size
        values: dict[str, int] = {}
        for key, env in (("address_space", "VMALAB_LIMIT_AS"), ("locked", "VMALAB_LIMIT_LOCKED"),
                         ("file_size", "VMALAB_LIMIT_FILE")):
            text = os.environ.get(env)
            if text:
                try:
                    n = parse_size(text, env)
                except ScenarioError as e:
                    raise KernelRunnerError(str(e)) from None
                if n <= 0:
                    raise KernelRunnerError(f"{env}: must be a positive size, got {text!r}")
                values[key] = n
        return cls(**values)


class KernelRunnerError(Exception):
    """The live-kernel runner failed: the message is one line naming the reason."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


# --- compiling the helper ----------------------------------------------------------------------------
def ensure_runner() -> str:
    """Compile ``runner.c`` if needed and return the path of the helper binary
    (:func:`vmalab.oracle.cbuild.build_c_helper`: cached in ``$VMALAB_CACHE`` by a hash of the source, the
    compiler and the flags).  It is built statically (``cc -Os -static``) when possible, dynamically
    otherwise."""
    global _runner_path, _runner_static
    try:
        path, static = build_c_helper(RUNNER_SOURCE, "runner", CFLAGS, try_static=True)
    except CBuildError as e:
        raise KernelRunnerError(str(e)) from None
    if path != _runner_path:
        _runner_path, _runner_static = path, static
    return path


def _runner_is_static(path: str) -> bool:
    """Whether the helper binary has no ELF interpreter (``PT_INTERP``); informational, for ``env``."""
    global _runner_static
    if _runner_static is None:
        try:
            with open(path, "rb") as f:
                ehdr = f.read(64)
                if ehdr[:4] != b"\x7fELF" or ehdr[4] != 2:
                    return False
                phoff, = struct.unpack_from("<Q", ehdr, 32)
                phentsize, phnum = struct.unpack_from("<HH", ehdr, 54)
                f.seek(phoff)
                phdrs = f.read(phentsize * phnum)
        except (OSError, struct.error):
            return False
        types = [struct.unpack_from("<I", phdrs, i * phentsize)[0] for i in range(phnum)]
        _runner_static = 3 not in types  # PT_INTERP
    return _runner_static


# --- building the program ----------------------------------------------------------------------------
@dataclass
class _Build:
    """What the program refers to: the per-run directories and the tables the records are decoded with."""

    scn: Scenario
    disk_dir: str | None = None
    shm_dir: str | None = None
    lines: list[str] = field(default_factory=list)
    files: dict[tuple[str, str], int] = field(default_factory=dict)
    slots: dict[tuple[str, str, str], int] = field(default_factory=dict)
    names: dict[str, int] = field(default_factory=dict)
    header: list[str] = field(default_factory=list)
    runner: str | None = None  # the helper's own path, shown in results as ``$RUNNER``
    unprivileged: bool = False
    allow_hwpoison: bool = False
    limits: HostLimits = field(default_factory=HostLimits)

    def real_name(self, name: str) -> str:
        """Translate a ``$FILES/disk/NAME`` / ``$FILES/tmpfs/NAME`` / ``$RUNNER`` maps name into the real
        path."""
        if name == RUNNER_NAME:
            return self.runner or ensure_runner()
        if name.startswith("$FILES/disk/") and self.disk_dir:
            return f"{self.disk_dir}/{name[len('$FILES/disk/'):]}"
        if name.startswith("$FILES/tmpfs/") and self.shm_dir:
            return f"{self.shm_dir}/{name[len('$FILES/tmpfs/'):]}"
        return name

    def scenario_name(self, name: str) -> str:
        """The inverse of :meth:`real_name`, for names read from /proc/self/maps.  The runner binary's
        path depends on the cache directory and the compiler, so results name it ``$RUNNER``."""
        if self.runner and name == self.runner:
            return RUNNER_NAME
        for d, label in ((self.disk_dir, "$FILES/disk/"), (self.shm_dir, "$FILES/tmpfs/")):
            if d and name.startswith(d + "/"):
                return label + name[len(d) + 1:]
        return name

    def addr(self, a: Addr) -> str:
        if a.kind == "null":
            return "a0"
        if a.kind == "abs":
            return f"a{a.offset & _MASK}"
        if a.kind == "base":
            return f"a{(BASE + a.offset) & _MASK}"
        if a.kind == "brk":
            return f"b{a.offset & _MASK}"
        if a.kind == "fail":
            return f"f{a.offset & _MASK}"
        if a.kind in ("map", "mapend"):
            name = self.real_name(a.name or "")
            if "\n" in name or "\0" in name:
                raise KernelRunnerError(f"map name {a.name!r} contains a newline or NUL")
            if name not in self.names:
                if len(self.names) >= MAX_NAMES:
                    raise KernelRunnerError(f"too many distinct map names (at most {MAX_NAMES})")
                self.names[name] = len(self.names)
                self.header.append(f"name {self.names[name]} {name}")
            return f"{'m' if a.kind == 'map' else 'e'}{self.names[name]}:{a.offset & _MASK}"
        raise KernelRunnerError(f"unknown address kind {a.kind!r}")

    def fd(self, spec: FdSpec | None) -> str:
        if spec is None or spec.kind == "none":
            return "r-1"
        if spec.kind == "raw":
            return f"r{spec.raw}"
        key = (spec.kind, spec.name)
        if key not in self.files:
            if len(self.files) >= MAX_FILES:
                raise KernelRunnerError(f"too many files (at most {MAX_FILES})")
            idx = len(self.files)
            self.files[key] = idx
            has_size = 0 if spec.size is None else 1
            size = (spec.size or 0) & _MASK
            if spec.kind == "devzero":
                self.header.append(f"file {idx} devzero 0 0 /dev/zero")
            elif spec.kind in ("memfd", "secretmem"):
                self.header.append(f"file {idx} {spec.kind} {has_size} {size} {spec.name}")
            elif spec.kind == "disk":
                if self.disk_dir is None:
                    self.disk_dir = tempfile.mkdtemp(prefix="vmalab-", dir=DISK_TMP)
                self.header.append(f"file {idx} disk {has_size} {size} {self.disk_dir}/{spec.name}")
            elif spec.kind == "tmpfs":
                if self.shm_dir is None:
                    self.shm_dir = tempfile.mkdtemp(prefix="vmalab-", dir=SHM_TMP)
                self.header.append(f"file {idx} tmpfs {has_size} {size} {self.shm_dir}/{spec.name}")
            elif spec.kind == "dev":
                raise KernelRunnerError(f"fd kind dev:{spec.name} is a model-only driver: the live kernel "
                                        "cannot run this scenario")
            else:
                raise KernelRunnerError(f"unknown fd kind {spec.kind!r}")
        skey = (spec.kind, spec.name, spec.mode)
        if skey not in self.slots:
            if len(self.slots) >= MAX_SLOTS:
                raise KernelRunnerError(f"too many descriptors (at most {MAX_SLOTS})")
            self.slots[skey] = len(self.slots)
            self.header.append(f"slot {self.slots[skey]} {self.files[key]} {spec.mode}")
        return f"s{self.slots[skey]}"

    def arg(self, prm: Param, p: dict[str, Any]) -> str:
        """One argument of a syscall-table row as the runner reads it."""
        if prm.kind == ADDR:
            return self.addr(p.get(prm.key, Addr(prm.default)))
        if prm.kind == FD:
            return self.fd(p.get(prm.key))
        return str(int(p.get(prm.key, prm.default)) & _MASK)

    def op_line(self, op: Op) -> str:
        p = op.p

        def n(key: str, default: int = 0) -> int:
            value = p.get(key, default)
            return int(value) & _MASK

        o = op.op
        sc = for_op(o, p)
        if sc is not None:
            return " ".join([sc.name, *(self.arg(prm, p) for prm in sc.params)])
        if o == "touch":
            return f"touch {self.addr(p['addr'])} {1 if p['write'] else 0} {n('value', 1) & 0xFF}"
        if o == "brk":
            return f"brk {self.addr(p['addr'])}"
        if o == "ftruncate":
            return f"ftruncate {self.fd(p['fd'])} {n('len')}"
        if o == "setrlimit":
            if "max" in p:
                return f"setrlimit2 {n('resource')} {n('value')} {n('max')}"
            return f"setrlimit {n('resource')} {n('value')}"
        if o == "fork":
            reads = p.get("read", [])
            if len(reads) > MAX_READS:
                raise KernelRunnerError(f"fork: too many reads (at most {MAX_READS})")
            toks = " ".join(self.addr(a) for a in reads)
            return f"fork {0 if self.scn.window else 1} {len(reads)}" + (f" {toks}" if toks else "")
        if o == "repeat":
            return f"repeat {n('count')} {n('step')}\n{self.op_line(p['body'])}"
        if o == "vma_count":
            return "vma_count"
        if o == "status":
            return "status"
        if o == "capdrop":
            return f"capdrop {C.CAP_NAMES[p['cap']]}"
        if o == "snapshot":
            if "range" in p:
                lo, hi = p["range"]
                return f"snapshot 2 {self.addr(lo)} {self.addr(hi)}"
            return f"snapshot {0 if self.scn.window else 1}"
        raise KernelRunnerError(f"op {o!r} is not supported by the kernel runner")

    def cleanup(self) -> None:
        for d in (self.disk_dir, self.shm_dir):
            if d:
                shutil.rmtree(d, ignore_errors=True)


def check_host_safety(scn: Scenario, limits: HostLimits, allow_hwpoison: bool = False) -> None:
    """Refuse, before the runner starts, what a scenario must not do to this machine: MADV_HWPOISON and
    MADV_SOFT_OFFLINE (unless ``allow_hwpoison``), a file larger than ``limits.file_size``, and an
    RLIMIT_AS above the runner's own (its result would depend on the host limit).  Raises
    :class:`KernelRunnerError` naming the op."""
    rlimit_as = C.RLIMIT_NAMES["RLIMIT_AS"]
    file_sizes: dict[tuple[str, str], int] = {}
    for i, top in enumerate(scn.ops):
        for op in (top, top.p["body"]) if top.op == "repeat" else (top,):
            where = f"scenario {scn.name!r}: op {i} ({op.op})"
            p = op.p
            if op.op == "madvise" and p["advice"] in HWPOISON_ADVICES and not allow_hwpoison:
                raise KernelRunnerError(f"{where}: {HWPOISON_ADVICES[p['advice']]} would poison or offline real "
                                        "pages of this machine until reboot: refused (pass --allow-hwpoison "
                                        "to run it anyway)")
            spec = p.get("fd")
            if isinstance(spec, FdSpec) and spec.kind in _SIZED_FILE_KINDS:
                sizes = [spec.size or 0] + ([p["len"] & _MASK] if op.op == "ftruncate" else [])
                # a length the kernel refuses (negative as off_t: EINVAL, too large: EFBIG) takes nothing
                size = max(n for n in sizes if n < 1 << 62) if any(n < 1 << 62 for n in sizes) else 0
                file_sizes[spec.key] = max(file_sizes.get(spec.key, 0), size)
                total = sum(file_sizes.values())
                if total > limits.file_size:
                    raise KernelRunnerError(f"{where}: the scenario's files would add up to {total >> 20} MiB, "
                                            f"more than the runner allows (VMALAB_LIMIT_FILE = "
                                            f"{limits.file_size >> 20} MiB)")
            if op.op == "setrlimit" and p["resource"] == rlimit_as:
                for key in ("value", "max"):
                    if key in p and p[key] > limits.address_space:
                        raise KernelRunnerError(f"{where}: RLIMIT_AS {key} above the runner's own limit "
                                                f"(VMALAB_LIMIT_AS = {limits.address_space >> 20} MiB): the "
                                                "result would depend on the host limit")


def _build(scn: Scenario) -> _Build:
    b = _Build(scn)
    try:
        # Files are created in the order of first use, so resolve every fd before anything else.
        for op in scn.iter_ops():
            spec = op.p.get("fd")
            if isinstance(spec, FdSpec):
                b.fd(spec)
        b.lines = [b.op_line(op) for op in scn.ops]
    except BaseException:
        b.cleanup()
        raise
    return b


def build_program(scn: Scenario, *, unprivileged: bool = False, allow_hwpoison: bool = False,
                  limits: HostLimits | None = None) -> str:
    """The program text for ``scn`` (for inspection; per-run directories are named but not kept), after the
    checks :func:`run_on_kernel` makes before it starts the runner."""
    limits = limits or HostLimits.from_env()
    check_host_safety(scn, limits, allow_hwpoison)
    b = _build(scn)
    b.cleanup()
    b.unprivileged, b.allow_hwpoison, b.limits = unprivileged, allow_hwpoison, limits
    return _program_text(b)


def _program_text(b: _Build) -> str:
    return "\n".join(["vmalab-program 1", f"window {1 if b.scn.window else 0}",
                      f"allow_hwpoison {1 if b.allow_hwpoison else 0}", f"unprivileged {1 if b.unprivileged else 0}",
                      f"limit as {b.limits.address_space}", f"limit locked {b.limits.locked}", *b.header,
                      f"ops {len(b.scn.ops)}", *b.lines, "end", ""])


# --- running -----------------------------------------------------------------------------------------
def _preexec(rlimit_stack: int | None) -> Any:
    def setup() -> None:
        if rlimit_stack is None:
            return
        soft = resource.RLIM_INFINITY if rlimit_stack == C.RLIM_INFINITY else rlimit_stack
        _, hard = resource.getrlimit(resource.RLIMIT_STACK)
        if hard != resource.RLIM_INFINITY and (soft == resource.RLIM_INFINITY or soft > hard):
            hard = soft
        resource.setrlimit(resource.RLIMIT_STACK, (soft, hard))

    return setup


DEFAULT_TIMEOUT = 120.0


def run_on_kernel(scn: Scenario, *, timeout: float | None = None, unprivileged: bool = False,
                  allow_hwpoison: bool = False, limits: HostLimits | None = None) -> dict[str, Any]:
    """Run ``scn`` in a fresh child process on this machine's kernel and return the RESULT object
    (``name``, ``description``, ``env``, ``results``).  Every failure raises :class:`KernelRunnerError`.

    ``timeout``: seconds (default: the scenario's ``timeout``, else 120).  ``unprivileged``: the runner
    drops every capability before the first op (``env.caps`` lists the modelled ones it has).
    ``allow_hwpoison``: let MADV_HWPOISON / MADV_SOFT_OFFLINE reach the kernel (as root they damage real
    pages until reboot; refused otherwise).  ``limits``: what the run may take from the machine
    (:class:`HostLimits`, default from the environment)."""
    if timeout is None:
        timeout = scn.timeout if scn.timeout is not None else DEFAULT_TIMEOUT
    limits = limits or HostLimits.from_env()
    profile = scn.raw.get("kernel_profile")
    if profile not in (None, "6.18"):
        raise KernelRunnerError(f"scenario {scn.name!r} asks for kernel profile {profile!r}; the live kernel is "
                                "6.18: run it on the model")
    if scn.raw.get("inject"):
        raise KernelRunnerError(f"scenario {scn.name!r} injects faults ('inject'), which only the model can do: "
                                "run it on the model")
    check_host_safety(scn, limits, allow_hwpoison)
    runner = ensure_runner()
    b = _build(scn)
    b.runner = os.path.realpath(runner)
    b.unprivileged, b.allow_hwpoison, b.limits = unprivileged, allow_hwpoison, limits
    try:
        return _execute(b, runner, timeout)
    finally:
        b.cleanup()


def _execute(b: _Build, runner: str, timeout: float) -> dict[str, Any]:
    """Start the helper on the program of ``b``, wait at most ``timeout`` seconds, parse its output."""
    scn = b.scn
    program = _program_text(b).encode()
    if len(program) >= PROGRAM_MAX:
        raise KernelRunnerError(f"scenario {scn.name!r}: the program is too large ({len(program)} bytes)")
    try:
        # argv[1]: this process's pid; the runner dies with it (PR_SET_PDEATHSIG, runner.c: stage1())
        proc = subprocess.Popen(["vmalab-runner", str(os.getpid())], executable=runner, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={}, cwd="/",
                                close_fds=True, start_new_session=True,
                                preexec_fn=_preexec(scn.rlimit_stack))
    except (OSError, subprocess.SubprocessError) as e:
        raise KernelRunnerError(f"cannot start the runner {runner}: {e}") from None
    try:
        out, err = proc.communicate(program, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(proc)
        raise KernelRunnerError(f"scenario {scn.name!r}: the runner timed out after {timeout:g} s") from None
    except BaseException:
        _kill(proc)
        raise
    return _parse_output(b, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"),
                         proc.returncode, runner)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """Kill the runner's process group (it was started in its own session) and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        pass


# --- parsing the records -----------------------------------------------------------------------------
class _Lines:
    def __init__(self, text: str) -> None:
        self.lines = text.split("\n")
        if self.lines and self.lines[-1] == "":
            self.lines.pop()
        self.pos = 0

    def peek(self) -> str | None:
        return self.lines[self.pos] if self.pos < len(self.lines) else None

    def take(self) -> str:
        line = self.peek()
        if line is None:
            raise _Truncated()
        self.pos += 1
        return line


class _Truncated(Exception):
    pass


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _errno_name(e: int) -> str:
    return C.ERRNO_NAMES.get(e, f"E{e}")


def _sig_name(s: int) -> str:
    return _SIGNAL_NAMES.get(s, f"SIG{s}")


def _kv_int(value: str) -> int:
    return int(value.split()[0])


def _parse_vmas(b: _Build, lines: _Lines) -> list[dict[str, Any]]:
    """Parse a ``snap_begin`` ... ``snap_end`` block (the ``snap_begin`` line already taken)."""
    vmas: list[dict[str, Any]] = []
    cur: dict[str, Any] | None = None
    while True:
        line = lines.take()
        if line == "snap_end":
            break
        tag, _, rest = line.partition(" ")
        if tag == "vma":
            parts = rest.split(None, 5)
            if len(parts) < 5 or "-" not in parts[0]:
                raise KernelRunnerError(f"malformed smaps header: {rest!r}")
            lo, hi = (int(x, 16) for x in parts[0].split("-", 1))
            name = parts[5].strip() if len(parts) > 5 else ""
            cur = {"start": format_addr(lo, b.scn.window), "end": format_addr(hi, b.scn.window),
                   "len": f"{hi - lo:#x}", "perms": parts[1], "pgoff": f"{int(parts[2], 16):#x}",
                   "name": b.scenario_name(name), "rss_kb": 0, "vmflags": "", "maps": _symbolic_maps_line(b, rest)}
            vmas.append(cur)
        elif tag == "kv" and cur is not None:
            key, _, value = rest.partition(":")
            if key == "Rss":
                cur["rss_kb"] = _kv_int(value)
            elif key == "Anonymous":
                cur["anon_kb"] = _kv_int(value)
            elif key == "Locked":
                locked = _kv_int(value)
                if locked:
                    cur["locked_kb"] = locked
            elif key == "VmFlags":
                cur["vmflags"] = " ".join(value.split())
        else:
            raise KernelRunnerError(f"malformed snapshot record: {line!r}")
    # keep the documented field order, with the informational fields last
    order = ("start", "end", "len", "perms", "pgoff", "name", "rss_kb", "vmflags", "locked_kb")
    return [{**{k: v[k] for k in order if k in v}, **{k: v[k] for k in v if k not in order}} for v in vmas]


def _parse_touch(rest: str) -> tuple[int, int, int, int]:
    faulted, value, sig, code = (int(x) for x in rest.split())
    return faulted, value, sig, code


def _parse_op(b: _Build, op: Op, lines: _Lines) -> dict[str, Any]:
    """Parse the records of one op (up to and including ``done``) into its result."""
    window = b.scn.window
    res: dict[str, Any] = {"op": op.op, "args": op.args}
    if op.note is not None:
        res["note"] = op.note
    vec: list[str] = []
    ret_seen = False
    while True:
        line = lines.take()
        if line == "done":
            break
        tag, _, rest = line.partition(" ")
        if tag == "ret":
            hexv, errno = rest.split()
            value, err = int(hexv, 16), int(errno)
            ret_seen = True
            if err:
                res["ret"], res["errno"] = -1, _errno_name(err)
            elif op.op in _ADDRESS_OPS:
                res["ret"], res["errno"] = format_addr(value, window), None
            else:
                res["ret"], res["errno"] = _signed(value), None
        elif tag == "touch":
            faulted, value, sig, code = _parse_touch(rest)
            ret_seen = True
            if faulted:
                res.update(ret=-1, errno=None, signal=_sig_name(sig), si_code=code)
            else:
                res.update(ret=0, errno=None)
                if not op.p["write"]:
                    res["value"] = value
        elif tag == "vec":
            vec.append(rest)
        elif tag == "rep":
            done_s, err_s, failed_s, sig_s, has_fail_s, fail_s = rest.split()
            failed, err, sig = int(failed_s), int(err_s), int(sig_s)
            ret_seen = True
            res.update(ret=int(done_s), errno=_errno_name(err) if err else None,
                       failed_at=failed if failed >= 0 else None)
            if sig:
                res["signal"] = _sig_name(sig)
            if int(has_fail_s):
                res["fail_addr"] = format_addr(int(fail_s, 16), window)
        elif tag == "st":
            key, _, kb = rest.partition(":")
            if key in STATUS_FIELDS:
                res.setdefault("status", {})[key] = _kv_int(kb)
        elif tag == "snap_begin":
            res["vmas"] = _parse_vmas(b, lines)
            ret_seen = True
        elif tag == "child_begin":
            res["child"] = _parse_child(b, op, lines)
        elif tag == "fork_status":
            status = int(rest)
            if status != 0:
                if os.WIFSIGNALED(status):
                    why = f"was killed by {_sig_name(os.WTERMSIG(status))}"
                else:
                    why = f"exited with status {os.WEXITSTATUS(status)}"
                raise KernelRunnerError(f"the fork child {why}")
        else:
            raise KernelRunnerError(f"malformed runner output for op {op.op!r}: {line!r}")
    if not ret_seen:
        raise KernelRunnerError(f"malformed runner output: no result for op {op.op!r}")
    if op.op == "mincore" and res.get("ret") == 0:
        res["vec"] = "".join(vec)
    if op.op == "fork" and res.get("ret") == 0 and "child" not in res:
        raise KernelRunnerError("the fork child wrote no records")
    # documented key order: op, args, ret, errno, ..., note last
    order = ("op", "args", "ret", "errno")
    return {**{k: res[k] for k in order if k in res},
            **{k: res[k] for k in res if k not in order and k != "note"},
            **({"note": res["note"]} if "note" in res else {})}


def _parse_child(b: _Build, op: Op, lines: _Lines) -> dict[str, Any]:
    vmas: list[dict[str, Any]] = []
    reads: list[dict[str, Any]] = []
    raw_reads = op.args.get("read", [])
    while True:
        line = lines.take()
        if line == "child_end":
            break
        tag, _, rest = line.partition(" ")
        if tag == "snap_begin":
            vmas = _parse_vmas(b, lines)
        elif tag == "read":
            faulted, value, sig, _code = _parse_touch(rest)
            i = len(reads)
            addr = raw_reads[i] if i < len(raw_reads) else None
            if faulted:
                reads.append({"addr": addr, "ret": -1, "signal": _sig_name(sig)})
            else:
                reads.append({"addr": addr, "ret": 0, "value": value})
        else:
            raise KernelRunnerError(f"malformed fork child output: {line!r}")
    return {"vmas": vmas, "reads": reads}


def _parse_output(b: _Build, out: str, err: str, returncode: int, runner: str) -> dict[str, Any]:
    scn = b.scn
    lines = _Lines(out)
    err_line = next((ln[4:] for ln in lines.lines if ln.startswith("err ")), None)
    if err_line is not None:
        if err_line.startswith("op "):
            num, _, msg = err_line[3:].partition(":")
            if num.isdigit() and int(num) < len(scn.ops):
                err_line = f"op {num} ({scn.ops[int(num)].op}):{msg}"
        raise KernelRunnerError(f"scenario {scn.name!r}: {err_line}")
    done = sum(1 for ln in lines.lines if ln == "done")
    if returncode != 0:
        where = f" during op {done} ({scn.ops[done].op})" if done < len(scn.ops) else ""
        if returncode < 0:
            why = f"was killed by {_sig_name(-returncode)}"
        else:
            why = f"exited with status {returncode}"
        detail = err.strip().splitlines()
        raise KernelRunnerError(f"scenario {scn.name!r}: the runner {why}{where}"
                                + (f": {detail[0]}" if detail else ""))
    env: dict[str, Any] = {"kernel": os.uname().release, "machine": os.uname().machine, "base": f"{BASE:#x}",
                           "window": scn.window, "rlimit_stack": scn.raw.get("rlimit_stack")}
    if b.unprivileged:
        env["unprivileged"] = True
    maps: list[str] = []
    results: list[dict[str, Any]] = []
    try:
        while True:
            line = lines.take()
            if line == "ready":
                break
            tag, _, rest = line.partition(" ")
            if tag == "init" and rest.startswith("brk "):
                env["initial_brk"] = f"{int(rest[4:], 16):#x}"
            elif tag == "init" and rest.startswith("caps "):
                held = int(rest[5:], 16)
                env["caps"] = [name for name in C.MODELLED_CAPS if held >> C.CAP_NAMES[name] & 1]
            elif tag == "init" and rest.startswith("count "):
                env["initial_map_count"] = int(rest[6:])
            elif tag == "maps":
                maps.append(rest)
            else:
                raise KernelRunnerError(f"malformed runner output before the first op: {line!r}")
        env["initial_maps"] = "".join(_symbolic_maps_line(b, m) + "\n" for m in maps)
        env["runner_static"] = _runner_is_static(runner)
        env["window_size"] = f"{WINDOW_SIZE:#x}"
        for op in scn.ops:
            results.append(_parse_op(b, op, lines))
        last = lines.take()
        if last.startswith("fin "):  # the run's peaks (informational)
            env["vm_peak_kb"], env["rss_peak_kb"] = (int(x) for x in last[4:].split())
            last = lines.take()
        if last != "end" or lines.peek() is not None:
            raise KernelRunnerError("malformed runner output: trailing records")
    except _Truncated:
        raise KernelRunnerError(f"scenario {scn.name!r}: the runner output ended early "
                                f"(after {len(results)} of {len(scn.ops)} ops)") from None
    except ValueError as e:
        raise KernelRunnerError(f"scenario {scn.name!r}: malformed runner output: {e}") from None
    return {"name": scn.name, "description": scn.description, "env": env, "results": results}


RUNNER_NAME = "$RUNNER"


def _symbolic_maps_line(b: _Build, line: str) -> str:
    """A raw maps line with the runner's path replaced by ``$RUNNER`` (the name column starts at 73)."""
    if b.runner and line.endswith(" " + b.runner):
        return line[: len(line) - len(b.runner)] + RUNNER_NAME
    return line
