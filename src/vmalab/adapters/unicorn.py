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
only after the translated-block cache is flushed.

``mode="mirror"`` is the fallback for a Unicorn without the virtual TLB (older than 2.1): Unicorn's own
regions mirror vmalab's VMAs (``mem_map`` / ``mem_unmap`` / ``mem_protect``, applied after each syscall
and each fault from what an :class:`vmalab.mmu_notifier.MmuNotifier` noted), and Unicorn's permissions
mirror vmalab's PTEs: a page without a PTE is mapped with no permission, so its first touch takes a
``UC_HOOK_MEM_*_PROT`` hook (``*_UNMAPPED`` outside every VMA) that runs vmalab's fault and retries.
Page bytes are copied between vmalab's pages and Unicorn's memory (see :class:`_Mirror`), and two
Unicorn defects are worked around there: unicorn#2368 (a store retried after the write-protect hook is
dropped) and the inclusive region ends of ``mem_regions()``.

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
from ..pagetable import ANON, GUARD
from .syscalls import Dispatcher, ProcessExit

try:  # the optional extra
    import unicorn as _uc
    from unicorn import x86_const as _x86
except ImportError:  # pragma: no cover - exercised by a subprocess test
    _uc = None  # type: ignore[assignment]
    _x86 = None  # type: ignore[assignment]

__all__ = ["INSTALL_HINT", "MODES", "Machine", "Result", "UnicornUnavailable", "available", "run"]

INSTALL_HINT = "the Unicorn adapter needs unicorn>=2.1.4: pip install 'vmalab[unicorn]'"
SIGNALS = {"SIGSEGV": 11, "SIGBUS": 7, "SIGILL": 4}
#: "mmu": vmalab's page tables are the MMU (UC_TLB_VIRTUAL, Unicorn >= 2.1); "mirror": Unicorn's regions
#: mirror vmalab's VMAs (the fallback for an older Unicorn)
MODES = ("mmu", "mirror")
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
    MMU is vmalab, and the syscall dispatcher.  ``run()`` is the one-call form.  ``mode`` is ``"mmu"`` (the
    virtual TLB) or ``"mirror"`` (region mirror, :class:`_Mirror`)."""

    def __init__(self, path: str, argv: list[str], envp: list[str] | None = None, *,
                 stdout: IO[bytes] | None = None, stderr: IO[bytes] | None = None,
                 stdin: IO[bytes] | None = None, mode: str = "mmu", **mm_kwargs: Any) -> None:
        uc = _need_unicorn()
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}: one of {', '.join(MODES)}")
        if mode == "mmu" and not hasattr(uc, "UC_TLB_VIRTUAL"):
            raise UnicornUnavailable("this Unicorn has no virtual TLB (UC_TLB_VIRTUAL; mode='mirror' runs "
                                     "without it): " + INSTALL_HINT)
        self.mode = mode
        from ..binfmt_elf import exec_elf
        from ..mm import MM

        self.mm = MM(**mm_kwargs)
        self.info = exec_elf(self.mm, path, list(argv), list(envp or []))
        self.path = path
        self.uc = uc.Uc(uc.UC_ARCH_X86, uc.UC_MODE_64)
        if mode == "mmu":
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
        self.mirror: _Mirror | None = None
        self.notifier: MmuNotifier
        if mode == "mirror":
            self.notifier = self.mirror = _Mirror(self)
            mmu_notifier_register(self.mm, self.notifier)
            self.uc.hook_add(uc.UC_HOOK_MEM_PROT | uc.UC_HOOK_MEM_UNMAPPED, self.mirror.on_invalid)
            self.mirror.changed.append((0, C.TASK_SIZE))
            self.mirror.apply()  # every VMA a region; the pages exec_elf() made present, resident
        else:
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
        if self.mirror is not None:
            return self.mirror.read(addr, n)
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
        if self.mirror is not None:
            self.mirror.write(addr, data)
            return
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
        if self.mirror is not None:
            self.mirror.apply()  # the syscall's changes, in Unicorn before the guest runs on
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

    def run(self, count: int = 0, begin: int | None = None) -> Result:
        """Run from ``begin`` (default: the entry point) until exit, a fatal fault or ``count`` instructions
        (0: no limit; in mirror mode counted again from each restart after a fault)."""
        begin = self.info.entry if begin is None else begin
        last = None
        try:
            while True:
                try:
                    self.uc.emu_start(begin, 0xFFFFFFFFFFFFFFFF, 0, count)
                except _uc.UcError as e:
                    if self.mirror is None or self.mirror.pending is None:
                        if self.fault is None and self.exit is None:
                            pc = int(self.uc.reg_read(_x86.UC_X86_REG_RIP))
                            if e.errno == _uc.UC_ERR_INSN_INVALID:
                                return self._result(signal=SIGNALS["SIGILL"], pc=pc)
                            raise RuntimeError(f"unicorn stopped at {pc:#x}: {e}") from None
                if self.mirror is None or self.mirror.pending is None or self.exit is not None:
                    break
                # mirror mode: a first touch stopped the emulation; fault it through vmalab and restart
                pending = self.mirror.pending
                if pending == last:
                    raise RuntimeError(f"unicorn faults again at {pending[0]:#x} (rip {pending[3]:#x}) "
                                       "after vmalab granted the access")
                last = pending
                try:
                    self.mirror.take_fault()
                except Fault as f:
                    self.fault, self.fault_pc = f, pending[3]
                    self.mirror.apply()
                    break
                begin = int(self.uc.reg_read(_x86.UC_X86_REG_RIP))
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


# ----------------------------------------------------------------------------------------------------
# the region-mirror mode (mode="mirror"): for a Unicorn without the virtual TLB
def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Page-aligned, clipped to the user address space, sorted and merged."""
    out: list[tuple[int, int]] = []
    for s, e in sorted((s & C.PAGE_MASK, min((e + PAGE - 1) & C.PAGE_MASK, C.TASK_SIZE)) for s, e in ranges):
        if s >= e:
            continue
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def _fresh_bytes(vma: Any, vpn: int) -> bytes | None:
    """What page ``vpn`` of ``vma`` holds before any fault (None: zeros): the page cache's page, or the file's
    bytes, for a file-backed VMA (shmem included)."""
    f = vma.vm_file
    if f is None:
        return None
    inode = f.inode
    pgoff = vma.vm_pgoff + vpn - (vma.vm_start >> C.PAGE_SHIFT)
    page = inode.pages.get(pgoff)
    if page is not None:
        return access._page_bytes(page, 0, PAGE)
    if inode.content is None or pgoff >= inode.npages():
        return None
    data = inode.content(pgoff)[:max(0, inode.size - (pgoff << C.PAGE_SHIFT))]
    return data.ljust(PAGE, b"\0")[:PAGE]


class _Mirror(MmuNotifier):
    """Unicorn's regions mirror vmalab's VMAs; Unicorn's permissions mirror vmalab's PTEs.

    Every VMA is a Unicorn region (``mem_map``).  A page with a present PTE in vmalab is *resident*: Unicorn
    holds its bytes (copied from the :class:`vmalab.pagetable.Page` when it became resident) and may read it
    (and execute it, with VM_EXEC); it may write it only after a write fault went through vmalab (``wr``: the
    dirty-bit discipline of x86, as the MMU mode's read-only TLB entries).  A page without a PTE has no
    permission in Unicorn, so its first touch takes a ``UC_HOOK_MEM_*_PROT`` hook (an address outside every
    region: ``*_UNMAPPED``), which runs vmalab's fault (:func:`vmalab.access.fault_page`), brings the result
    in and retries.  The notifier notes what a syscall or a fault changed; :meth:`apply` brings Unicorn in
    step afterwards.  vmalab's Page holds the bytes whenever Unicorn cannot have changed them: a page
    Unicorn could write is written back into its Page before it stops being writable or resident there
    (mprotect, mremap's move, munmap, a replaced PTE), so contents follow the pages."""

    def __init__(self, machine: Machine) -> None:
        self.m = machine
        self.uc = machine.uc
        self.mm = machine.mm
        self.res: dict[int, Any] = {}  # vpn -> the Page whose bytes Unicorn holds there
        self.wr: set[int] = set()  # resident vpns Unicorn may write
        self.xs: set[int] = set()  # vpns given UC_PROT_EXEC since the last flush of the translated blocks
        self.changed: list[tuple[int, int]] = []  # VMAs or PTEs changed
        self.inval: list[tuple[int, int]] = []  # translations dropped: write access is taken back
        self.pending: tuple[int, int, int, int] | None = None  # the access a hook stopped at: addr, n, kind, pc

    # -- MmuNotifier ----------------------------------------------------------------------------------
    def invalidate_range(self, start: int, end: int, event: str) -> None:
        self.changed.append((start, end))
        self.inval.append((start, end))

    def pte_set(self, vpn: int, page: Any) -> None:
        self.changed.append((vpn << C.PAGE_SHIFT, (vpn + 1) << C.PAGE_SHIFT))

    def vma_changed(self, start: int, end: int) -> None:
        self.changed.append((start, end))

    def release(self) -> None:
        self.changed.append((0, C.TASK_SIZE))

    # -- Unicorn's state --------------------------------------------------------------------------------
    def _regions(self, lo: int, hi: int) -> list[tuple[int, int, int]]:
        """Unicorn's regions over [lo, hi), clipped.  mem_regions() gives each region's *inclusive* last
        byte (``end``), not its end: a Unicorn quirk the mirror turns into a half-open range here."""
        out = []
        for s, e, p in self.uc.mem_regions():
            s, e = max(s, lo), min(e + 1, hi)
            if s < e:
                out.append((s, e, p))
        return out

    def _perms(self, vma: Any, vpn: int) -> int:
        flags = vma.vm_flags
        p = _uc.UC_PROT_READ if flags & C.VM_ACCESS_FLAGS else 0  # x86: write-only and exec-only read too
        if flags & C.VM_EXEC:
            p |= _uc.UC_PROT_EXEC
        if vpn in self.wr and flags & C.VM_WRITE:
            p |= _uc.UC_PROT_WRITE
        return p

    def _write_back(self, vpn: int) -> None:
        """Unicorn's bytes of the resident page at ``vpn`` into its Page (what the guest stored)."""
        page = self.res[vpn]
        data = bytes(self.uc.mem_read(vpn << C.PAGE_SHIFT, PAGE))
        if data == access._page_bytes(page, 0, PAGE):
            return
        if page.kind == ANON:
            page.base, page.data, page.frozen = data, {}, False  # new objects: a snapshot keeps the old ones
        else:
            access._write_page(page, 0, data)

    def _put(self, vpn: int, data: bytes) -> None:
        """Unicorn's bytes of page ``vpn`` made ``data``, written only where they differ: a ``mem_write``
        from a fetch hook over the code being translated makes Unicorn leave the hook by a longjmp (its
        translated-block invalidation), which a Python callback does not survive.  Code pages need no
        write: a file's bytes are put in when the region is mapped."""
        addr = vpn << C.PAGE_SHIFT
        if bytes(self.uc.mem_read(addr, PAGE)) != data:
            self.uc.mem_write(addr, data)

    def apply(self) -> None:
        """Bring Unicorn's regions, bytes and permissions over the noted ranges in step with the mm."""
        if not self.changed:
            return
        ranges, inval = _merge(self.changed), _merge(self.inval)
        self.changed, self.inval = [], []
        uc, mm, pt = self.uc, self.mm, self.mm.pt
        flush_tb = False
        # 1. before any region changes: pages leaving Unicorn, or losing write access, give their bytes back
        evicted: set[int] = set()
        for lo, hi in ranges:
            vlo, vhi = lo >> C.PAGE_SHIFT, hi >> C.PAGE_SHIFT
            vpns = [v for v in self.res if vlo <= v < vhi] if len(self.res) < vhi - vlo else \
                [v for v in range(vlo, vhi) if v in self.res]
            for vpn in vpns:
                vma = mm.tree.find(vpn << C.PAGE_SHIFT)
                covered = vma is not None and vma.vm_start <= vpn << C.PAGE_SHIFT
                keep = covered and pt.get(vpn) is self.res[vpn]
                revoke = not keep or any(s <= vpn << C.PAGE_SHIFT < e for s, e in inval) or \
                    not (vma is not None and vma.vm_flags & C.VM_WRITE)
                if vpn in self.wr and revoke:
                    self._write_back(vpn)
                    self.wr.discard(vpn)
                if not keep:
                    del self.res[vpn]
                    evicted.add(vpn)
                    flush_tb |= vpn in self.xs
        # 2. regions: one per VMA piece; pieces no VMA covers any more are unmapped
        for lo, hi in ranges:
            want = [(max(v.vm_start, lo), min(v.vm_end, hi)) for v in mm.tree.range(lo, hi)]
            have = self._regions(lo, hi)
            cuts = sorted({lo, hi, *(x for s, e in want for x in (s, e)), *(x for s, e, _ in have for x in (s, e))})
            for a, b in zip(cuts, cuts[1:], strict=False):
                w = any(s <= a < e for s, e in want)
                h = any(s <= a < e for s, e, _ in have)
                if h and not w:
                    uc.mem_unmap(a, b - a)
                    flush_tb |= any(a >> C.PAGE_SHIFT <= x < b >> C.PAGE_SHIFT for x in self.xs)
                elif w and not h:
                    uc.mem_map(a, b - a, _uc.UC_PROT_NONE)  # zero-filled by Unicorn
                    v = mm.tree.find(a)
                    if v is not None and v.vm_file is not None:
                        for vpn in range(a >> C.PAGE_SHIFT, b >> C.PAGE_SHIFT):
                            data = _fresh_bytes(v, vpn)
                            if data is not None:
                                uc.mem_write(vpn << C.PAGE_SHIFT, data)
        # 3. bytes and permissions, VMA piece by VMA piece
        for lo, hi in ranges:
            for v in mm.tree.range(lo, hi):
                s, e = max(v.vm_start, lo), min(v.vm_end, hi)
                present = {vpn: p for vpn, p in pt.items(s >> C.PAGE_SHIFT, e >> C.PAGE_SHIFT) if p.kind != GUARD}
                svpn, evpn = s >> C.PAGE_SHIFT, e >> C.PAGE_SHIFT
                for vpn in [x for x in evicted if svpn <= x < evpn and x not in present]:
                    # no longer resident: the bytes a fault would find, for Unicorn's unchecked cross-page reads
                    self._put(vpn, _fresh_bytes(v, vpn) or bytes(PAGE))
                for vpn, page in present.items():
                    if self.res.get(vpn) is not page:
                        self._put(vpn, access._page_bytes(page, 0, PAGE))
                        self.res[vpn] = page
                if v.vm_flags & C.VM_EXEC:
                    self.xs.update(present)
                self._protect(self._want(s, e, v, sorted(present)), self._regions(s, e))
        if flush_tb:
            self.xs.clear()
            uc.ctl_flush_tb()

    def _want(self, s: int, e: int, vma: Any, vpns: list[int]) -> list[tuple[int, int, int]]:
        """The permission runs that cover [s, e): the resident pages' (sorted ``vpns``), none elsewhere."""
        out: list[tuple[int, int, int]] = []
        pos = s
        for vpn in vpns:
            a, p = vpn << C.PAGE_SHIFT, self._perms(vma, vpn)
            if a > pos:
                out.append((pos, a, _uc.UC_PROT_NONE))
            if out and out[-1][1] == a and out[-1][2] == p:
                out[-1] = (out[-1][0], a + PAGE, p)
            else:
                out.append((a, a + PAGE, p))
            pos = a + PAGE
        if pos < e:
            out.append((pos, e, _uc.UC_PROT_NONE))
        return out

    def _protect(self, want: list[tuple[int, int, int]], have: list[tuple[int, int, int]]) -> None:
        """mem_protect where the wanted runs differ from Unicorn's regions (both sorted, over one range)."""
        i = j = 0
        while i < len(want) and j < len(have):
            a, b = max(want[i][0], have[j][0]), min(want[i][1], have[j][1])
            if a < b and want[i][2] != have[j][2]:
                self.uc.mem_protect(a, b - a, want[i][2])
            if want[i][1] <= have[j][1]:
                i += 1
            else:
                j += 1

    # -- faults ---------------------------------------------------------------------------------------------
    def bring_in(self, addr: int, kind: int) -> None:
        """A user access of ``kind`` at ``addr`` through vmalab's fault path (raises :class:`Fault`), then
        the page made resident in Unicorn with the access granted."""
        access.fault_page(self.mm, addr, kind)
        vpn = addr >> C.PAGE_SHIFT
        self.changed.append((vpn << C.PAGE_SHIFT, (vpn + 1) << C.PAGE_SHIFT))
        self.apply()
        if kind == access.WRITE and vpn not in self.wr:
            self.wr.add(vpn)  # the write fault went through vmalab: Unicorn may write the page now
            vma = self.mm.tree.find(addr)
            assert vma is not None
            self.uc.mem_protect(vpn << C.PAGE_SHIFT, PAGE, self._perms(vma, vpn))

    def on_invalid(self, uc: Any, acc: int, addr: int, size: int, value: int, _data: Any) -> bool:
        """``UC_HOOK_MEM_*_PROT`` / ``*_UNMAPPED``: note the access and stop; :meth:`Machine.run` takes the
        fault through vmalab outside the emulation and restarts the instruction.

        The hook never grants the access and returns true, because two Unicorn defects make that unsafe:
        unicorn#2368, a store retried after the ``UC_HOOK_MEM_WRITE_PROT`` hook returned true is silently
        dropped (the TLB entry keeps TLB_DISCARD_WRITE from the read-only page); and a ``mem_protect`` that
        splits the region being accessed, made from the hook, leaves Unicorn checking the freed region (a
        fetch then fails with UC_ERR_FETCH_PROT, or the process crashes).  A stopped access leaves the CPU
        state at the start of the faulting instruction (checked: push, a read-modify-write, movsq), so the
        restart executes it whole, as a CPU retries after a page fault, and the store lands."""
        m = self.m
        if m.exit is None and m.fault is None:
            kind = access.WRITE if acc in (_uc.UC_MEM_WRITE_PROT, _uc.UC_MEM_WRITE_UNMAPPED) else \
                access.FETCH if acc in (_uc.UC_MEM_FETCH_PROT, _uc.UC_MEM_FETCH_UNMAPPED) else access.READ
            self.pending = (addr, 1 if kind == access.FETCH else max(size, 1), kind,
                            int(uc.reg_read(_x86.UC_X86_REG_RIP)))
        uc.emu_stop()
        return False

    def take_fault(self) -> bool:
        """Run the noted access through vmalab, every page it touches (the first one that faults raises
        :class:`Fault`); False when nothing was noted."""
        if self.pending is None:
            return False
        addr, n, kind, _pc = self.pending
        self.pending = None
        for p in range(addr & C.PAGE_MASK, addr + n, PAGE):
            self.bring_in(max(addr, p), kind)
        return True

    # -- guest memory for the dispatcher (Machine.read / write) ---------------------------------------------
    def read(self, addr: int, n: int) -> bytes:
        out = bytearray()
        while n > 0:
            k = min(n, PAGE - (addr & (PAGE - 1)))
            self.bring_in(addr, access.READ)
            out += self.uc.mem_read(addr, k)
            addr += k
            n -= k
        return bytes(out)

    def write(self, addr: int, data: bytes) -> None:
        i = 0
        while i < len(data):
            k = min(len(data) - i, PAGE - (addr & (PAGE - 1)))
            self.bring_in(addr, access.WRITE)
            self.uc.mem_write(addr, data[i:i + k])
            if addr >> C.PAGE_SHIFT in self.xs:
                self.uc.ctl_flush_tb()
            addr += k
            i += k


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
    keyword arguments, and ``mode`` ("mmu", the default, or "mirror")."""
    return Machine(path, argv if argv is not None else [path], envp, **kwargs).run()
