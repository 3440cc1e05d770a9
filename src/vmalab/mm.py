"""``MM``: the address space as a program uses it — the façade over the model's kernel-named modules.

``MM`` is an :class:`~vmalab.mm_types.MmStruct` (the state) with the operations named as syscalls.  It
adds no state and no logic: every method calls a function of the module named after the kernel file
that implements it (:mod:`vmalab.mmap`, :mod:`vmalab.mprotect`, :mod:`vmalab.mremap`, ...), and the
syscall methods come from the one table in :mod:`vmalab.syscalls`.

Two API levels: methods named after the syscalls (``mmap``, ``munmap``, ``mprotect``, ``touch``) raise
``OSError`` with the kernel's errno; :meth:`MM.syscall` and the ``sys_*`` methods return what the kernel
returns (an address, 0, or ``-errno``).
"""

from __future__ import annotations

import errno
import operator
from collections.abc import Callable, Iterable
from typing import Any, SupportsIndex

from . import access, fdtable, files, gup, vma
from . import constants as C
from .debug import ValidationError, validate_mm
from .explain import MergeVerdict, explain_merge
from .faults import Fault, touch
from .files import File, FileOperations, Inode
from .fork import exit_files, exit_mmap, fork
from .madvise import process_madvise
from .madvise import sys_set_vma_anon_name as _set_vma_anon_name
from .mincore import mincore_vma
from .mm_types import VMA, MmStruct
from .mmu_notifier import MmuNotifier, mmu_notifier_register, mmu_notifier_unregister
from .pagetable import Page
from .procfs import import_maps, pss_bytes, read_process, rss_pages
from .profiles import DEFAULT_PROFILE, get_profile
from .syscalls import RET_VEC, SYSCALLS

__all__ = ["MM", "ValidationError"]


def _err(e: int) -> OSError:
    return OSError(e, f"{C.ERRNO_NAMES.get(e, e)}: {errno.errorcode.get(e, '')}")


def _check(r: int) -> int:
    """The one conversion of a raw return value: -errno raises the OSError it stands for."""
    if r < 0:
        raise _err(-r)
    return r


#: the pseudo-syscalls of :meth:`MM.syscall` (no row of the table: no scenario op routes through them):
#: name -> argument names
PSEUDO_SYSCALLS: dict[str, tuple[str, ...]] = {"touch": ("addr", "write", "value"), "fork": ()}


def syscall_params(name: str) -> tuple[str, ...]:
    """The argument names of syscall or pseudo-syscall ``name`` (``ValueError`` for an unknown name)."""
    if name in SYSCALLS:
        return tuple(p.key for p in SYSCALLS[name].params)
    if name in PSEUDO_SYSCALLS:
        return PSEUDO_SYSCALLS[name]
    known = ", ".join(sorted([*SYSCALLS, *PSEUDO_SYSCALLS]))
    raise ValueError(f"syscall {name!r} is not modelled (known: {known})")


def _register(name: str, key: str, value: SupportsIndex) -> int:
    """An argument as the 64-bit register that carries it; ``TypeError`` for anything but an integer."""
    if isinstance(value, bool) or not hasattr(type(value), "__index__"):
        raise TypeError(f"syscall {name}(): argument {key} must be an int, not {type(value).__name__}")
    return operator.index(value) & C.ULONG_MASK


def _raw(name: str) -> Callable[..., Any]:
    """The table's function for syscall ``name``, as a method (``fn(mm, *args)``), run as syscall ``name``
    of the probe (the label of the driver callbacks it makes)."""
    fn = SYSCALLS[name].fn

    def method(mm: MmStruct, *args: Any) -> Any:
        probe = mm.probe
        if not probe.tracing and probe.observer is None:
            return fn(mm, *args)  # nobody reads the label: the hot path stays one call
        outer, probe.syscall = probe.syscall, name  # Probe.in_syscall(), without a generator
        try:
            return fn(mm, *args)
        finally:
            probe.syscall = outer

    method.__name__ = method.__qualname__ = f"sys_{name}"
    method.__doc__ = fn.__doc__
    return method


class MM(MmStruct):
    """Models ``struct mm_struct`` of one x86-64 process under Linux 6.18 (or another kernel profile).

    Parameters set the environment the kernel would take from the process and the machine: the stack
    rlimit (which fixes ``mmap_base``), address randomisation (off by default, like ADDR_NO_RANDOMIZE;
    ``seed`` makes the random mode reproducible), ``vm.max_map_count``, ``mmap_min_addr`` and the kernel
    profile (``kernel``: ``6.18``, ``6.19``, ``7.1``, ...; see ``vmalab profiles``).  ``caps`` names the
    capabilities the process has (default: root with all of them; ``caps=()`` is an unprivileged user;
    the model checks CAP_IPC_LOCK, CAP_SYS_RAWIO, CAP_SYS_RESOURCE and CAP_SYS_ADMIN).
    """

    def __init__(self, *, rlimit_stack: int = 8 << 20, randomize: bool = False, seed: int | None = None,
                 max_map_count: int = C.DEFAULT_MAX_MAP_COUNT, mmap_min_addr: int = C.MMAP_MIN_ADDR,
                 kernel: str = DEFAULT_PROFILE, caps: Iterable[str] | None = None) -> None:
        super().__init__(get_profile(kernel), rlimit_stack=rlimit_stack, randomize=randomize, seed=seed,
                         max_map_count=max_map_count, mmap_min_addr=mmap_min_addr, caps=caps)

    @classmethod
    def from_maps(cls, text: str, smaps: str | None = None, start_brk: int | None = None, *,
                  rlimit_stack: int = 8 << 20, **kwargs: Any) -> MM:
        """An MM holding the VMAs of a real process's ``/proc/PID/maps`` text: the import that gives the
        kernel's placement.  ``smaps`` (the same process's ``/proc/PID/smaps``) gives every VMA its
        VmFlags and anon_vma; ``start_brk`` sets the program break where maps has no ``[heap]`` (see
        :func:`vmalab.procfs.import_maps`).  ``mmap_base`` is where the first top-down allocations of
        exec end, even with ASLR on: load_elf_binary() maps the interpreter top-down first and the vDSO
        block right below it, so mmap_base is the end of the run of adjacent VMAs that starts at
        ``[vdso]`` (a static program has no interpreter: the end of the vDSO block).  Without ``[vdso]``
        it is derived from ``rlimit_stack``."""
        mm = cls(rlimit_stack=rlimit_stack, **kwargs)
        import_maps(mm, text, smaps_text=smaps, start_brk=start_brk)
        vdso = next((v for v in mm.tree if v.vm_ops is not None and v.vm_ops.name(v) == "[vdso]"), None)
        if vdso is not None:
            top = vdso
            while (nxt := mm.tree.next(top.vm_end)) is not None and nxt.vm_start == top.vm_end \
                    and nxt.vm_flags & C.VM_GROWSDOWN == 0:
                top = nxt
            mm.mmap_base = top.vm_end
        return mm

    @classmethod
    def from_pid(cls, pid: int, **kwargs: Any) -> MM:
        """An MM holding a live process's address space: :meth:`from_maps` of its ``/proc/PID/maps`` and
        ``smaps``, with ``start_brk``, ``start_stack`` and the data segment bounds from
        ``/proc/PID/stat`` and its stack, address-space, data and memlock rlimits from
        ``/proc/PID/limits``.  The break is the end of the last ``[heap]`` VMA (the kernel shows no
        finer value), or ``start_brk`` without a heap.  Raises ``ProcessLookupError`` (no such pid),
        ``PermissionError`` (not readable) or ``ValueError`` (no user address space)."""
        snap = read_process(pid)
        stack = snap.rlimits.get("RLIMIT_STACK")
        if stack is not None and "rlimit_stack" not in kwargs:
            kwargs["rlimit_stack"] = stack[0]
        mm = cls.from_maps(snap.maps, snap.smaps, start_brk=snap.stat["start_brk"] or None, **kwargs)
        for name, limit in snap.rlimits.items():
            mm.rlimits[C.RLIMIT_NAMES[name]] = limit
        mm.start_stack = snap.stat["start_stack"]
        mm.start_data, mm.end_data = snap.stat["start_data"], snap.stat["end_data"]
        return mm

    @classmethod
    def from_pid_or_error(cls, pid: int) -> MM:
        """:meth:`from_pid`, with every way it can fail as a ``ValueError`` of one line naming the pid
        (for the command line and the viewer)."""
        try:
            return cls.from_pid(pid)
        except ProcessLookupError:
            raise ValueError(f"pid {pid}: no such process") from None
        except PermissionError:
            raise ValueError(f"pid {pid}: its memory maps cannot be read (permission denied)") from None
        except (OSError, ValueError) as e:  # no user address space, maps that kept changing, bad text
            raise ValueError(str(e) if str(e).startswith(f"pid {pid}") else f"pid {pid}: {e}") from None

    @classmethod
    def exec(cls, path: str, argv: list[str], envp: list[str] | None = None, **kwargs: Any) -> MM:
        """A fresh MM (``kwargs``: ``randomize``, ``seed``, ``rlimit_stack``, ...) holding what
        ``execve(path, argv, envp)`` leaves right after it returns to user space (before ld.so runs):
        :func:`vmalab.binfmt_elf.exec_elf`.  ``envp`` defaults to empty.  Raises
        :class:`vmalab.binfmt_elf.ExecError` for a file the kernel would refuse."""
        from .binfmt_elf import exec_elf

        mm = cls(**kwargs)
        exec_elf(mm, path, list(argv), list(envp or []))
        return mm

    # -- raw syscalls (vmalab.syscalls): an address, 0 or -errno ------------------------------------
    sys_mmap = _raw("mmap")
    sys_munmap = _raw("munmap")
    sys_mprotect = _raw("mprotect")
    sys_mremap = _raw("mremap")
    sys_madvise = _raw("madvise")
    sys_mlock = _raw("mlock")
    sys_mlock2 = _raw("mlock2")
    sys_munlock = _raw("munlock")
    sys_mlockall = _raw("mlockall")
    sys_munlockall = _raw("munlockall")
    sys_mseal = _raw("mseal")
    sys_msync = _raw("msync")
    sys_mincore = _raw("mincore")
    sys_brk = _raw("brk")

    def sys_set_vma_anon_name(self, start: int, length: int, name: str | None) -> int:
        return _set_vma_anon_name(self, start, length, name)  # a method (a compiled function does not bind)

    def syscall(self, name: str, *args: SupportsIndex) -> int:
        """Raw syscall interface for emulators: ``name`` is a row of :data:`vmalab.syscalls.SYSCALLS` or a
        pseudo-syscall of :data:`PSEUDO_SYSCALLS`, with its arguments in the kernel's order.

        The contract: every argument is an integer — an ``int`` or an object with ``__index__`` (numpy
        integers), not ``bool`` — and is taken as the 64-bit register that carries it (modulo 2**64:
        ``-1`` is ``0xffffffffffffffff``), then narrowed to the syscall's C type as the kernel does (an
        ``int`` flag word keeps its low 32 bits, mmap's fd is fget()'s ``unsigned int``).  Every integer
        gives what the kernel returns: an address (mmap, mremap, brk), 0, or ``-errno``; never an
        exception.  A non-integer (``bool``, ``float``, ``str``, ``bytes``, ``None``) or a wrong number of
        arguments raises ``TypeError`` (a bug in the caller's glue, not an errno the kernel would give);
        an unknown name raises ``ValueError``.  Nothing changes when an exception is raised.

        ``mincore`` returns its return value only (:meth:`mincore` or :meth:`sys_mincore` give the
        vector).  The pseudo-syscalls: ``touch(addr, write, value)`` is one user access of a byte (a
        write when ``write`` is not 0, storing ``value & 0xff``): the byte read, 0 for a write, or
        ``-EFAULT`` where the kernel would send a signal (:meth:`touch` raises :class:`vmalab.Fault` with
        the signal instead); ``fork()`` returns the child's pid (> 0), its MM being ``children[pid]``
        (take it out with ``children.pop(pid)``, tear it down with ``exit_mmap()``), or ``-ENOMEM``."""
        params = syscall_params(name)
        if len(args) != len(params):
            raise TypeError(f"syscall {name}() takes {len(params)} argument{'s' * (len(params) != 1)} "
                            f"({', '.join(params)}), {len(args)} given")
        regs = [_register(name, key, a) for key, a in zip(params, args, strict=True)]
        if name == "touch":
            return self.sys_touch(*regs)
        if name == "fork":
            return self.sys_fork()
        sc = SYSCALLS[name]
        r = sc.fn(self, *regs)
        return int(r[0]) if sc.ret == RET_VEC else int(r)

    def sys_touch(self, addr: int, write: int, value: int) -> int:
        """The ``touch`` pseudo-syscall (see :meth:`syscall`): the byte read, 0 for a write, or -EFAULT."""
        try:
            v = touch(self, addr, bool(write), value & 0xFF)
        except Fault:
            return -errno.EFAULT
        return 0 if v is None else v

    def sys_fork(self) -> int:
        """The ``fork`` pseudo-syscall (see :meth:`syscall`): the child's pid, its MM in ``children``."""
        child = fork(self)
        if isinstance(child, int):
            return child
        pid = self.next_pid
        self.next_pid += 1
        self.children[pid] = child
        return pid

    # -- Pythonic syscalls: raise OSError ------------------------------------------------------------
    def mmap(self, addr: int | None, length: int, prot: int, flags: int, fd: int = -1, offset: int = 0) -> int:
        """mmap(2): returns the address or raises OSError."""
        return _check(self.sys_mmap(addr or 0, length, prot, flags, fd, offset))

    def munmap(self, addr: int, length: int) -> None:
        _check(self.sys_munmap(addr, length))

    def mprotect(self, addr: int, length: int, prot: int) -> None:
        _check(self.sys_mprotect(addr, length, prot))

    def mremap(self, addr: int, old_len: int, new_len: int, flags: int = 0, new_addr: int = 0) -> int:
        """mremap(2): returns the new address or raises OSError."""
        return _check(self.sys_mremap(addr, old_len, new_len, flags, new_addr))

    def madvise(self, addr: int, length: int, advice: int) -> None:
        """madvise(2): raises OSError on failure."""
        _check(self.sys_madvise(addr, length, advice))

    def mlock(self, addr: int, length: int, flags: int | None = None) -> None:
        """mlock(2), or mlock2(2) when ``flags`` is given."""
        _check(self.sys_mlock(addr, length) if flags is None else self.sys_mlock2(addr, length, flags))

    def munlock(self, addr: int, length: int) -> None:
        _check(self.sys_munlock(addr, length))

    def mlockall(self, flags: int) -> None:
        _check(self.sys_mlockall(flags))

    def munlockall(self) -> None:
        _check(self.sys_munlockall())

    def mseal(self, addr: int, length: int, flags: int = 0) -> None:
        _check(self.sys_mseal(addr, length, flags))

    def msync(self, addr: int, length: int, flags: int) -> None:
        _check(self.sys_msync(addr, length, flags))

    def mincore(self, addr: int, length: int) -> str:
        """mincore(2): one character per page, ``"1"`` resident, ``"0"`` not."""
        r, vec = self.sys_mincore(addr, length)
        _check(r)
        return vec or ""

    def process_madvise(self, iovecs: list[tuple[int, int]], advice: int, flags: int = 0, remote: bool = False,
                        cap_sys_nice: bool = True) -> int:
        """process_madvise(2) on this mm (:func:`vmalab.madvise.process_madvise`): raw return value."""
        return process_madvise(self, iovecs, advice, flags, remote, cap_sys_nice)

    # -- user accesses, fork, teardown ----------------------------------------------------------------
    def touch(self, addr: int, write: bool = False, value: int = 1) -> int | None:
        """A user access of one byte (:func:`vmalab.faults.touch`): the byte read (None for a write), or
        raises :class:`vmalab.Fault`."""
        return touch(self, addr, write, value)

    def read(self, addr: int, n: int) -> bytes:
        """``n`` bytes read by the process at ``addr`` (:func:`vmalab.access.read`): every page faults like
        :meth:`touch`; raises :class:`vmalab.Fault`."""
        return access.read(self, addr, n)

    def write(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` at ``addr`` as the process (:func:`vmalab.access.write`); a fault leaves the
        pages before the faulting one written and raises :class:`vmalab.Fault`."""
        access.write(self, addr, data)

    def fetch(self, addr: int, n: int) -> bytes:
        """``n`` bytes fetched as instructions at ``addr`` (:func:`vmalab.access.fetch`): needs VM_EXEC."""
        return access.fetch(self, addr, n)

    def page_at(self, addr: int) -> Page | None:
        """The page mapped at ``addr`` or None, without a fault (:func:`vmalab.access.page_at`)."""
        return access.page_at(self, addr)

    def snapshot(self) -> access.MmSnapshot:
        """A copy-on-write snapshot of the whole mm (:func:`vmalab.access.snapshot`); not a fork."""
        return access.snapshot(self)

    def restore(self, snap: access.MmSnapshot) -> None:
        """Put back the state of ``snap`` (:func:`vmalab.access.restore`); ``snap`` stays usable."""
        access.restore(self, snap)

    def set_brk_base(self, start_brk: int, brk: int | None = None) -> None:
        """Set ``start_brk`` and ``brk`` for an image loaded outside :meth:`exec`
        (:func:`vmalab.access.set_brk_base`)."""
        access.set_brk_base(self, start_brk, brk)

    def mmu_notifier_register(self, n: MmuNotifier) -> None:
        """Subscribe ``n`` to this mm's events (:func:`vmalab.mmu_notifier.mmu_notifier_register`)."""
        mmu_notifier_register(self, n)

    def mmu_notifier_unregister(self, n: MmuNotifier) -> None:
        """Unsubscribe ``n`` (:func:`vmalab.mmu_notifier.mmu_notifier_unregister`)."""
        mmu_notifier_unregister(self, n)

    def fork(self) -> MM:
        """fork(2) as the address space sees it (:func:`vmalab.fork.fork`): the child's new ``MM``;
        raises OSError (ENOMEM) when an accountable VMA cannot be charged."""
        child = fork(self)
        if isinstance(child, int):
            raise _err(-child)
        return child

    def exit_mmap(self) -> None:
        exit_mmap(self)

    def exit_files(self) -> None:
        exit_files(self)

    def mm_populate(self, start: int, length: int) -> None:
        gup.mm_populate(self, start, length)

    # -- descriptors (vmalab.fdtable) ---------------------------------------------------------------------
    def open_device(self, path: str, f_op: FileOperations, size: int = 0, *, mode: str = "rw") -> int:
        """Open a character device driven by ``f_op`` (a driver written for vmalab); returns the fd."""
        return fdtable.open_device(self, path, f_op, size, mode=mode)

    def open_file(self, path: str, size: int = 0, *, kind: str = "disk", mode: str = "rw",
                  inode: Inode | None = None, dev: tuple[int, int] = (0xFE, 0)) -> int:
        """Open (creating if ``inode`` is None) a regular file: ``kind`` is ``disk`` (ext4-like page cache,
        THP-aligned placement, readahead) or ``tmpfs`` (shmem).  ``mode`` is ``rw``, ``ro`` or ``wo``."""
        return fdtable.open_file(self, path, size, kind=kind, mode=mode, inode=inode, dev=dev)

    def memfd_create(self, name: str, size: int = 0) -> int:
        """memfd_create(2) + ftruncate: returns a descriptor; maps show ``/memfd:NAME (deleted)``."""
        return fdtable.memfd_create(self, name, size)

    def open_devzero(self) -> int:
        """open("/dev/zero"): the built-in driver ``devzero`` (its hook depends on the profile)."""
        return fdtable.open_registered(self, "devzero")

    def memfd_secret(self, size: int = 0) -> int:
        """memfd_secret(2) + ftruncate: the built-in driver ``secretmem``."""
        return fdtable.open_registered(self, "secretmem", size)

    def reopen(self, fd: int, mode: str) -> int:
        """Open another descriptor to the file behind ``fd`` (like opening /proc/self/fd/N)."""
        return fdtable.reopen(self, fd, mode)

    def new_shmem_file(self, name: str, size: int, deleted: bool = True) -> File:
        """shmem_kernel_file_setup() (:func:`vmalab.files.shmem_kernel_file_setup`)."""
        return files.shmem_kernel_file_setup(self, name, size, deleted)

    def ftruncate(self, fd: int, length: int) -> None:
        _check(fdtable.ftruncate(self, fd, length))

    def close(self, fd: int) -> None:
        _check(fdtable.close(self, fd))

    # -- the VMA layer, for tests and teaching (vmalab.vma) ----------------------------------------------
    def merge_new_range(self, start: int, end: int, flags: int, file: File | None, pgoff: int,
                        prev: VMA | None, nxt: VMA | None, **kwargs: Any) -> VMA | None:
        """:func:`vmalab.vma.merge_new_range` on this mm."""
        return vma.merge_new_range(self, start, end, flags, file, pgoff, prev, nxt, **kwargs)

    def vma_modify(self, v: VMA, prev: VMA | None, start: int, end: int, new_flags: int,
                   anon_name: str | None = None, op: str = "modify") -> VMA | int:
        """:func:`vmalab.vma.vma_modify` on this mm."""
        return vma.vma_modify(self, v, prev, start, end, new_flags, anon_name, op)

    def split_vma(self, v: VMA, addr: int, new_below: bool, check_count: bool = True) -> int:
        """:func:`vmalab.vma.split_vma` on this mm."""
        return vma.split_vma(self, v, addr, new_below, check_count)

    def do_munmap(self, start: int, end: int) -> int:
        """:func:`vmalab.vma.do_vmi_munmap` on this mm (a page-aligned range)."""
        return vma.do_vmi_munmap(self, start, end)

    def explain_merge(self, a: VMA | int, b: VMA | int) -> MergeVerdict:
        """Why the neighbouring VMAs ``a`` and ``b`` (VMAs or addresses inside them, either order) would or
        would not merge: :func:`vmalab.explain.explain_merge`.  ``ValueError`` (one line) for an address
        with no VMA or two VMAs that are not neighbours."""
        return explain_merge(self, a, b)

    # -- procfs and invariants --------------------------------------------------------------------------
    def rss_pages(self, v: VMA) -> int:
        """Rss of a VMA in pages (:func:`vmalab.procfs.rss_pages`)."""
        return rss_pages(self, v)

    def pss_bytes(self, v: VMA) -> int:
        """Pss of a VMA in bytes (:func:`vmalab.procfs.pss_bytes`)."""
        return pss_bytes(self, v)

    def mincore_vma(self, v: VMA, start: int, end: int) -> str:
        return mincore_vma(self, v, start, end)

    def validate(self) -> list[str]:
        """:func:`vmalab.debug.validate_mm`: raise :class:`ValidationError` on a broken invariant; returns
        notes on legal but noteworthy states."""
        return validate_mm(self)
