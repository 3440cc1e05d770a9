"""Run a static x86-64 Linux ELF under Unicorn 2.1 with vmalab as its address space.

``run(path, argv)`` loads the program with vmalab's exec model (:meth:`vmalab.mm.MM.exec`: the kernel's
placement, so the emulated program sees the addresses a native run with ASLR off sees), writes the
initial stack as fs/binfmt_elf.c: create_elf_tables() does, and runs it under Unicorn.  Syscalls go to
:class:`vmalab.adapters.syscalls.Dispatcher`.  A fault vmalab answers with a signal
(:class:`vmalab.Fault`) ends the program as the kernel kills a process that has no handler:
``Result.signal`` (a shell would report ``128 + signo``).  Signal handlers are not delivered.

The MMU is Unicorn's virtual TLB (``UC_TLB_VIRTUAL``).  Every TLB miss calls ``UC_HOOK_TLB_FILL``,
which makes the access through vmalab's fault path (:func:`vmalab.access.fault_page`: MAPERR/ACCERR,
stack growth, COW, the zero page, fault-around) and answers the physical frame of the resulting
:class:`vmalab.pagetable.Page`.  Frames are host buffers mapped into Unicorn's physical address space
with ``mem_map_ptr``, one per vmalab page (a page mapped twice has one frame).  A read miss gets a
read-only entry (plus execute where the VMA allows it), so the first store to the page misses again as a
write and goes through vmalab's write fault, the dirty-bit discipline of x86.  Translations are dropped
through an :class:`vmalab.mmu_notifier.MmuNotifier`: an ``invalidate_range`` or a replaced PTE of a page
Unicorn may hold flushes Unicorn's TLB (``UC_CTL_TLB_FLUSH``: the binding has no per-page flush), the
frames of anonymous pages no PTE maps any more are freed, and a freed frame that held code is reused
only after the translated-block cache is flushed.  Not done: the region-mirror mode for a Unicorn
without the virtual TLB (Unicorn < 2.1 is refused with the install hint).

While the emulation runs, the frames hold the page contents: vmalab's own copies are the contents a
page had when its frame was made (what the exec model and a fault gave), so use :meth:`Machine.read`,
not ``mm.read``, to look at guest memory during or after a run.  Without fork (not served) a COW fault
never copies a page the guest has written, so this is exact for the served syscalls.
"""

from __future__ import annotations

import ctypes
import os
import struct
import sys
from dataclasses import dataclass, field
from typing import IO, Any

from .. import access
from .. import constants as C
from ..faults import Fault
from ..mmu_notifier import MmuNotifier, mmu_notifier_register, mmu_notifier_unregister
from .syscalls import Dispatcher, ProcessExit

try:  # the optional extra
    import unicorn as _uc
    from unicorn import x86_const as _x86
except ImportError:  # pragma: no cover - exercised by a subprocess test
    _uc = None  # type: ignore[assignment]
    _x86 = None  # type: ignore[assignment]

__all__ = ["INSTALL_HINT", "Machine", "Result", "UnicornUnavailable", "available", "run"]

INSTALL_HINT = "the Unicorn adapter needs unicorn>=2.1.4: pip install 'vmalab[unicorn]'"
SIGNALS = {"SIGSEGV": 11, "SIGBUS": 7, "SIGILL": 4}
PAGE = C.PAGE_SIZE
#: physical address where the frame pool starts, and frames per host chunk (one mem_map_ptr each)
PHYS_BASE = 1 << 32
CHUNK_FRAMES = 256
#: auxv types (include/uapi/linux/auxvec.h)
AT_NULL, AT_IGNORE, AT_PHDR, AT_PHENT, AT_PHNUM, AT_PAGESZ, AT_BASE, AT_FLAGS, AT_ENTRY = 0, 1, 3, 4, 5, 6, 7, 8, 9
AT_UID, AT_EUID, AT_GID, AT_EGID, AT_PLATFORM, AT_HWCAP, AT_CLKTCK, AT_SECURE = 11, 12, 13, 14, 15, 16, 17, 23
AT_RANDOM, AT_HWCAP2, AT_RSEQ_FEATURE_SIZE, AT_RSEQ_ALIGN, AT_EXECFN = 25, 26, 27, 28, 31
AT_SYSINFO_EHDR, AT_MINSIGSTKSZ = 33, 51


class UnicornUnavailable(ImportError):
    """Unicorn is not installed, or too old for the requested mode."""


def available() -> bool:
    return _uc is not None


def _need_unicorn() -> Any:
    if _uc is None:
        raise UnicornUnavailable(INSTALL_HINT)
    return _uc


@dataclass
class Result:
    """How the emulated program ended: ``exit_status`` (exit or exit_group), or ``signal`` (the number of
    the signal that killed it) with ``fault`` (vmalab's :class:`Fault`) and ``pc`` (the faulting
    instruction).  ``status`` is what a shell reports: the exit status, or 128 + the signal number."""

    exit_status: int | None = None
    signal: int | None = None
    fault: Fault | None = None
    pc: int | None = None
    instructions: int | None = None
    syscalls: int = 0
    unsupported: str = ""

    @property
    def status(self) -> int:
        if self.signal is not None:
            return 128 + self.signal
        return self.exit_status or 0


@dataclass
class _Frames:
    """Physical frames: one 4 KiB host buffer per vmalab Page, mapped into Unicorn's physical memory."""

    uc: Any
    chunks: list[bytearray] = field(default_factory=list)
    _keep: list[Any] = field(default_factory=list)  # the ctypes views that pin the chunks
    free: list[int] = field(default_factory=list)  # free frame numbers
    used: int = 0  # frames handed out from the chunks so far
    by_page: dict[int, tuple[Any, int]] = field(default_factory=dict)  # id(Page) -> (Page, frame number)
    exec_seen: set[int] = field(default_factory=set)  # frames that were ever executable

    def frame_of(self, page: Any) -> int | None:
        got = self.by_page.get(id(page))
        return None if got is None else got[1]

    def new(self, page: Any, data: bytes) -> int:
        if self.free:
            fn = self.free.pop()
            if fn in self.exec_seen:  # a translated block may still name this physical page
                self.exec_seen.discard(fn)
                self.uc.ctl_flush_tb()
        else:
            fn = self.used
            self.used += 1
            if fn // CHUNK_FRAMES >= len(self.chunks):
                buf = bytearray(CHUNK_FRAMES * PAGE)
                view = (ctypes.c_char * len(buf)).from_buffer(buf)
                self.uc.mem_map_ptr(PHYS_BASE + len(self.chunks) * CHUNK_FRAMES * PAGE, len(buf),
                                    _uc.UC_PROT_ALL, ctypes.addressof(view))
                self.chunks.append(buf)
                self._keep.append(view)
        self.by_page[id(page)] = (page, fn)
        self.store(fn, 0, data.ljust(PAGE, b"\0"))
        return fn

    def release_dead(self) -> None:
        """Free the frames of anonymous pages that no PTE maps any more (zapped, unmapped)."""
        for key, (page, fn) in list(self.by_page.items()):
            if page.mapcount == 0 and page.kind == "anon":
                del self.by_page[key]
                self.free.append(fn)

    def view(self, fn: int) -> memoryview:
        chunk = self.chunks[fn // CHUNK_FRAMES]
        off = (fn % CHUNK_FRAMES) * PAGE
        return memoryview(chunk)[off:off + PAGE]

    def store(self, fn: int, off: int, data: bytes) -> None:
        chunk = self.chunks[fn // CHUNK_FRAMES]
        base = (fn % CHUNK_FRAMES) * PAGE + off
        chunk[base:base + len(data)] = data

    @staticmethod
    def paddr(fn: int) -> int:
        return PHYS_BASE + fn * PAGE


class _Notifier(MmuNotifier):
    def __init__(self, machine: Machine) -> None:
        self.machine = machine

    def invalidate_range(self, start: int, end: int, event: str) -> None:
        self.machine._invalidate()

    def pte_set(self, vpn: int, page: Any) -> None:
        m = self.machine
        if vpn in m._handed and vpn != m._filling:
            m._invalidate()

    def release(self) -> None:
        self.machine._invalidate()


class Machine:
    """One emulated process: an :class:`vmalab.mm.MM` (from the exec model), a Unicorn x86-64 CPU whose
    MMU is vmalab, and the syscall dispatcher.  ``run()`` is the one-call form."""

    def __init__(self, path: str, argv: list[str], envp: list[str] | None = None, *,
                 stdout: IO[bytes] | None = None, stderr: IO[bytes] | None = None,
                 stdin: IO[bytes] | None = None, **mm_kwargs: Any) -> None:
        uc = _need_unicorn()
        if not hasattr(uc, "UC_TLB_VIRTUAL"):
            raise UnicornUnavailable("this Unicorn has no virtual TLB (UC_TLB_VIRTUAL): " + INSTALL_HINT)
        from ..binfmt_elf import exec_elf
        from ..mm import MM

        self.mm = MM(**mm_kwargs)
        self.info = exec_elf(self.mm, path, list(argv), list(envp or []))
        self.path = path
        self.uc = uc.Uc(uc.UC_ARCH_X86, uc.UC_MODE_64)
        self.uc.ctl_set_tlb_mode(uc.UC_TLB_VIRTUAL)
        self.frames = _Frames(self.uc)
        self._handed: set[int] = set()  # vpns with a translation in Unicorn's TLB since the last flush
        self._filling = -1
        self.fault: Fault | None = None
        self.fault_pc: int | None = None
        self.exit: ProcessExit | None = None
        self.error: Exception | None = None
        self.dispatcher = Dispatcher(self.mm, self, path, stdout or sys.stdout.buffer, stderr or sys.stderr.buffer,
                                     stdin, memory=self)
        self.notifier = _Notifier(self)
        mmu_notifier_register(self.mm, self.notifier)
        self.uc.hook_add(uc.UC_HOOK_TLB_FILL, self._tlb_fill)
        self.uc.hook_add(uc.UC_HOOK_INSN, self._syscall, None, 1, 0, _x86.UC_X86_INS_SYSCALL)
        self._setup_stack(argv, envp or [])

    # -- the Cpu protocol of the dispatcher ---------------------------------------------------------
    def set_fs_base(self, value: int) -> None:
        self.uc.reg_write(_x86.UC_X86_REG_FS_BASE, value)

    def get_fs_base(self) -> int:
        return int(self.uc.reg_read(_x86.UC_X86_REG_FS_BASE))

    # -- guest memory through the frames (the Memory protocol of the dispatcher) ---------------------
    def _frame(self, addr: int, kind: int) -> int:
        """Fault ``addr`` in through vmalab (``kind``: access.READ, WRITE or FETCH; raises Fault, as
        :func:`vmalab.access.fault_page`) and return the frame of the page it maps (made from the page's
        contents the first time)."""
        page = access.fault_page(self.mm, addr, kind)
        fn = self.frames.frame_of(page)
        if fn is None:
            fn = self.frames.new(page, access.read(self.mm, addr & C.PAGE_MASK, PAGE))
        return fn

    def read(self, addr: int, n: int) -> bytes:
        """``n`` bytes of guest memory (user reads: raises :class:`vmalab.Fault`)."""
        out = bytearray()
        while n > 0:
            off = addr & (PAGE - 1)
            k = min(n, PAGE - off)
            fn = self._frame(addr, access.READ)
            out += self.frames.view(fn)[off:off + k]
            addr += k
            n -= k
        return bytes(out)

    def write(self, addr: int, data: bytes) -> None:
        """Store ``data`` in guest memory (user writes: raises :class:`vmalab.Fault`; the pages before the
        faulting one are written)."""
        i = 0
        while i < len(data):
            off = addr & (PAGE - 1)
            k = min(len(data) - i, PAGE - off)
            fn = self._frame(addr, access.WRITE)
            self.frames.store(fn, off, data[i:i + k])
            if fn in self.frames.exec_seen:
                self.uc.ctl_flush_tb()
            addr += k
            i += k

    # -- hooks ------------------------------------------------------------------------------------------
    def _invalidate(self) -> None:
        if self._handed:
            self._handed.clear()
            self.uc.ctl(_uc.UC_CTL_TLB_FLUSH, _uc.UC_CTL_IO_WRITE)
        self.frames.release_dead()

    def _tlb_fill(self, uc: Any, vaddr: int, acc: int, entry: Any, _data: Any) -> bool:
        kind = access.WRITE if acc == _uc.UC_MEM_WRITE else access.FETCH if acc == _uc.UC_MEM_FETCH else access.READ
        if self.exit is not None or self.fault is not None:
            return False  # stopping: Unicorn may still look up the next instruction after emu_stop()
        vpn = vaddr >> C.PAGE_SHIFT
        self._filling = vpn
        try:
            fn = self._frame(vaddr, kind)
        except Fault as f:
            self.fault = f
            self.fault_pc = int(uc.reg_read(_x86.UC_X86_REG_RIP))
            uc.emu_stop()
            return False
        finally:
            self._filling = -1
        v = self.mm.tree.find(vaddr)
        assert v is not None
        perms = _uc.UC_PROT_READ
        if kind == access.WRITE:
            perms |= _uc.UC_PROT_WRITE
        if v.vm_flags & C.VM_EXEC:
            perms |= _uc.UC_PROT_EXEC
            self.frames.exec_seen.add(fn)
        entry.paddr = self.frames.paddr(fn)
        entry.perms = perms
        self._handed.add(vpn)
        return True

    def _syscall(self, uc: Any, _data: Any) -> None:
        r = _x86
        nr = uc.reg_read(r.UC_X86_REG_RAX)
        args = [uc.reg_read(x) for x in (r.UC_X86_REG_RDI, r.UC_X86_REG_RSI, r.UC_X86_REG_RDX,
                                          r.UC_X86_REG_R10, r.UC_X86_REG_R8, r.UC_X86_REG_R9)]
        try:
            ret = self.dispatcher.syscall(nr, *args)
        except ProcessExit as e:
            self.exit = e
            uc.emu_stop()
            return
        except Exception as e:  # a bug of the dispatcher: stop, and raise it from run()
            self.error = e
            uc.emu_stop()
            return
        uc.reg_write(r.UC_X86_REG_RAX, ret)
        # the syscall instruction clobbers rcx (the return rip) and r11 (rflags)
        uc.reg_write(r.UC_X86_REG_RCX, uc.reg_read(r.UC_X86_REG_RIP))
        uc.reg_write(r.UC_X86_REG_R11, uc.reg_read(r.UC_X86_REG_EFLAGS))

    # -- start ------------------------------------------------------------------------------------------
    def _setup_stack(self, argv: list[str], envp: list[str]) -> None:
        """The stack of fs/binfmt_elf.c: create_elf_tables() (with fs/exec.c's strings above it), at the
        addresses the exec model computed."""
        info = self.info
        strings = b"".join(os.fsencode(s) + b"\0" for s in (*argv, *envp))
        filename = os.fsencode(self.path) + b"\0"
        p = info.arg_start
        self.write(p, strings + filename + bytes(8))
        argv_ptrs, envp_ptrs = [], []
        q = p
        for s in argv:
            argv_ptrs.append(q)
            q += len(os.fsencode(s)) + 1
        for s in envp:
            envp_ptrs.append(q)
            q += len(os.fsencode(s)) + 1
        execfn = q
        p &= ~0xF
        p -= len(b"x86_64") + 1
        u_platform = p
        self.write(p, b"x86_64\0")
        p -= 16
        u_rand = p
        self.write(p, os.urandom(16))
        auxv = [
            # AT_SYSINFO_EHDR: the vDSO is mapped (the maps show it) but its contents are not the kernel's,
            # so the program is told to ignore the entry: glibc then makes real syscalls
            (AT_IGNORE, 0), (AT_MINSIGSTKSZ, _getauxval(AT_MINSIGSTKSZ)),
            (AT_HWCAP, _getauxval(AT_HWCAP)), (AT_PAGESZ, PAGE), (AT_CLKTCK, 100), (AT_PHDR, info.phdr),
            (AT_PHENT, 56), (AT_PHNUM, info.phnum), (AT_BASE, info.interp_base), (AT_FLAGS, 0),
            (AT_ENTRY, info.program_entry), (AT_UID, os.getuid()), (AT_EUID, os.geteuid()), (AT_GID, os.getgid()),
            (AT_EGID, os.getegid()), (AT_SECURE, 0), (AT_RANDOM, u_rand), (AT_HWCAP2, _getauxval(AT_HWCAP2)),
            (AT_EXECFN, execfn), (AT_PLATFORM, u_platform),
            (AT_RSEQ_FEATURE_SIZE, _getauxval(AT_RSEQ_FEATURE_SIZE)), (AT_RSEQ_ALIGN, _getauxval(AT_RSEQ_ALIGN)),
            (AT_NULL, 0),
        ]
        words = [len(argv), *argv_ptrs, 0, *envp_ptrs, 0, *(x for pair in auxv for x in pair)]
        sp = info.start_stack
        self.write(sp, struct.pack(f"<{len(words)}Q", *words))
        self.uc.reg_write(_x86.UC_X86_REG_RSP, sp)

    def run(self, count: int = 0) -> Result:
        """Run from the entry point until exit, a fatal fault or ``count`` instructions (0: no limit)."""
        try:
            self.uc.emu_start(self.info.entry, 0xFFFFFFFFFFFFFFFF, 0, count)
        except _uc.UcError as e:
            if self.fault is None and self.exit is None:
                pc = int(self.uc.reg_read(_x86.UC_X86_REG_RIP))
                if e.errno == _uc.UC_ERR_INSN_INVALID:
                    return self._result(signal=SIGNALS["SIGILL"], pc=pc)
                raise RuntimeError(f"unicorn stopped at {pc:#x}: {e}") from None
        finally:
            mmu_notifier_unregister(self.mm, self.notifier)
        if self.error is not None:
            raise self.error
        if self.exit is not None:
            return self._result(exit_status=self.exit.status)
        if self.fault is not None:
            return self._result(signal=SIGNALS.get(self.fault.signal, 11), pc=self.fault_pc)
        return self._result()

    def _result(self, **kw: Any) -> Result:
        d = self.dispatcher
        return Result(fault=self.fault, syscalls=d.count, unsupported=d.unsupported_report(), **kw)


def _getauxval(t: int) -> int:
    """This process's auxv entry ``t`` (what the kernel gives a native program on this machine), or 0."""
    try:
        libc = ctypes.CDLL(None)
        libc.getauxval.restype = ctypes.c_ulong
        libc.getauxval.argtypes = [ctypes.c_ulong]
        return int(libc.getauxval(t))
    except (OSError, AttributeError):
        return 0


def run(path: str, argv: list[str] | None = None, envp: list[str] | None = None, **kwargs: Any) -> Result:
    """Run the static x86-64 ELF ``path`` (argv defaults to ``[path]``, envp to empty) under Unicorn with
    vmalab as its address space; see :class:`Machine` for ``stdout``, ``stderr``, ``stdin`` and the MM's
    keyword arguments."""
    return Machine(path, argv if argv is not None else [path], envp, **kwargs).run()
