"""vmalab as Qiling's address space: ``install(ql)`` (optional extra ``vmalab[qiling]``).

Qiling (1.4.x) keeps its own shadow map (``ql.mem.map_info``) beside Unicorn's regions and serves the
memory syscalls itself, with bottom-up first-fit placement, no ``mremap``, no ``mlock`` family, ``msync``,
``mincore`` or ``mseal``, and a ``/proc/self/maps`` of its own format.  :func:`install` replaces all of
that with the model:

- the image: Qiling's loaded layout is thrown away and the program is loaded by vmalab's exec model
  (:func:`vmalab.binfmt_elf.exec_elf`, the kernel's ``load_elf_binary()``), so the emulated program sees
  the addresses of a native run with ASLR off; the initial stack (strings, argv, envp, auxv) is written
  where ``create_elf_tables()`` puts it;
- the memory syscalls (``mmap``, ``mmap2`` with its page-unit offset, ``munmap``, ``mprotect``,
  ``mremap``, ``brk``, ``madvise``, ``mlock``, ``mlock2``, ``munlock``, ``mlockall``, ``munlockall``,
  ``mseal``, ``msync``, ``mincore``) go to :meth:`vmalab.mm.MM.syscall`; every return is the model's;
- Qiling's regions follow the model: an :class:`vmalab.mmu_notifier.MmuNotifier` notes the ranges whose
  VMAs changed (``vma_changed``) or whose pages were dropped (``invalidate_range``), and after each call
  the Unicorn regions and ``ql.mem.map_info`` over those ranges are made equal to the VMAs there
  (``uc.mem_map`` / ``mem_unmap`` / ``mem_protect``, contents kept where the mapping stays: the page
  bytes live in Unicorn; a new or zapped private range gets zeros or the file's bytes; mremap moves the
  bytes with the pages);
- a Unicorn fault (unmapped or protection) is a user access of the model (:meth:`vmalab.mm.MM.touch`):
  a growing stack expands as in the kernel and the access is retried; a :class:`vmalab.Fault` stops the
  emulation with the signal, recorded in :attr:`QilingAdapter.fault` with the faulting instruction;
- ``/proc/self/maps`` and ``/proc/self/smaps`` are :func:`vmalab.procfs.maps` / ``smaps``.

What is not faithful (see docs/emulators.md): the guest's loads and stores do not go through the model
(Unicorn executes them on its regions), so the model does not see which pages the program touched:
``mincore``, smaps' Rss and an anon_vma given by a first write (which decides some merges) stay as the
syscalls left them; a file mapping beyond EOF reads zeros instead of raising SIGBUS; guard regions
(``MADV_GUARD_INSTALL``) do not fault; ``AT_SYSINFO_EHDR`` is 0 (the ``[vdso]`` VMA exists but holds no
code, so glibc makes real syscalls); Qiling's own ``[GDT]`` page (0x30000) stays mapped outside the model.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import constants as C
from ..binfmt_elf import ExecInfo, exec_elf
from ..elf import PT_LOAD, read_elf
from ..faults import Fault
from ..mm import MM
from ..mmu_notifier import MmuNotifier, mmu_notifier_register
from ..procfs import maps, smaps

if TYPE_CHECKING:
    from ..pagetable import Page

try:
    import qiling as _qiling  # noqa: F401
    from unicorn import UcError
    from unicorn.unicorn_const import (
        UC_MEM_FETCH_PROT,
        UC_MEM_FETCH_UNMAPPED,
        UC_MEM_WRITE_PROT,
        UC_MEM_WRITE_UNMAPPED,
    )
    HAVE_QILING = True
except ImportError:  # pragma: no cover - exercised without the extra
    HAVE_QILING = False

__all__ = ["HAVE_QILING", "MEMORY_SYSCALLS", "MISSING", "FaultInfo", "QilingAdapter", "install"]

MISSING = "vmalab.adapters.qiling needs Qiling: pip install 'vmalab[qiling]'"

#: the syscalls install() takes over (Qiling's handler names without the ``ql_syscall_`` prefix)
MEMORY_SYSCALLS = ("mmap", "mmap2", "munmap", "mprotect", "mremap", "brk", "madvise", "mlock", "mlock2",
                   "munlock", "mlockall", "munlockall", "mseal", "msync", "mincore")

PAGE = C.PAGE_SIZE
#: Qiling's private regions on x86-64 Linux, left mapped in Unicorn and outside the model
QILING_PRIVATE = ((0x30000, 0x31000),)  # [GDT] (qiling.arch.x86_utils.GDTManager)
VSYSCALL = (0xFFFFFFFFFF600000, 0xFFFFFFFFFF601000)
MADV_DONTNEED, MADV_FREE, MADV_REMOVE = 4, 8, 9
MREMAP_DONTUNMAP = 4

# include/uapi/linux/auxvec.h, arch/x86/include/uapi/asm/auxvec.h
AT_NULL, AT_PHDR, AT_PHENT, AT_PHNUM, AT_PAGESZ, AT_BASE, AT_FLAGS, AT_ENTRY = 0, 3, 4, 5, 6, 7, 8, 9
AT_UID, AT_EUID, AT_GID, AT_EGID, AT_PLATFORM, AT_HWCAP, AT_CLKTCK = 11, 12, 13, 14, 15, 16, 17
AT_SECURE, AT_RANDOM, AT_HWCAP2, AT_RSEQ_FEATURE_SIZE, AT_RSEQ_ALIGN = 23, 25, 26, 27, 28
AT_EXECFN, AT_SYSINFO_EHDR, AT_MINSIGSTKSZ = 31, 33, 51


def _require() -> None:
    if not HAVE_QILING:
        raise ImportError(MISSING)


def _uc_prot(vm_flags: int) -> int:
    """VM_READ/WRITE/EXEC are UC_PROT_READ/WRITE/EXEC (1, 2, 4)."""
    return vm_flags & (C.VM_READ | C.VM_WRITE | C.VM_EXEC)


def _host_auxv() -> dict[int, int]:
    try:
        with open("/proc/self/auxv", "rb") as f:
            raw = f.read()
    except OSError:
        return {}
    return {k: v for k, v in struct.iter_unpack("<QQ", raw)}


@dataclass
class FaultInfo:
    """The signal a user access ended in: ``pc`` is the faulting instruction."""

    signal: str  # "SIGSEGV" or "SIGBUS"
    code: str  # the si_code name (SEGV_MAPERR, SEGV_ACCERR, BUS_ADRERR)
    addr: int
    pc: int


class _Tracker(MmuNotifier):
    """Notes what changed; the adapter applies it to Qiling after the call returned."""

    def __init__(self) -> None:
        self.dirty: list[tuple[int, int]] = []
        self.fresh: list[tuple[int, int]] = []

    def vma_changed(self, start: int, end: int) -> None:
        self.dirty.append((start, end))

    def invalidate_range(self, start: int, end: int, event: str) -> None:
        self.dirty.append((start, end))
        if event in ("unmap", "zap", "move"):
            self.fresh.append((start, end))

    def pte_set(self, vpn: int, page: Page) -> None:
        pass


class QilingAdapter:
    """The state :func:`install` leaves on a Qiling instance (``ql.vmalab``)."""

    def __init__(self, ql: Any, mm: MM, info: ExecInfo | None) -> None:
        self.ql = ql
        self.mm = mm
        self.info = info
        self.fault: FaultInfo | None = None
        self.calls: list[tuple[str, tuple[int, ...], int]] = []  # every memory syscall with its return
        self._tracker = _Tracker()
        mmu_notifier_register(mm, self._tracker)

    # -- keeping Unicorn and ql.mem in step ---------------------------------------------------------
    def _uc_regions(self, lo: int, hi: int) -> list[tuple[int, int, int]]:
        out = []
        for s, e, p in self.ql.uc.mem_regions():
            s, e = max(s, lo), min(e + 1, hi)  # Unicorn's region ends are inclusive
            if s < e:
                out.append((s, e, p))
        return out

    def _private(self, s: int, e: int) -> list[tuple[int, int]]:
        """[s, e) minus Qiling's private regions."""
        parts = [(s, e)]
        for ps, pe in QILING_PRIVATE:
            nxt = []
            for a, b in parts:
                if b <= ps or a >= pe:
                    nxt.append((a, b))
                    continue
                if a < ps:
                    nxt.append((a, ps))
                if b > pe:
                    nxt.append((pe, b))
            parts = nxt
        return parts

    def _unmap(self, s: int, e: int) -> None:
        for a, b in self._private(s, e):
            for rs, re_, _ in self._uc_regions(a, b):
                self.ql.uc.mem_unmap(rs, re_ - rs)

    def _contents(self, s: int, e: int) -> bytes | None:
        """What a fresh mapping of [s, e) holds: the file's bytes (None: zeros)."""
        v = self.mm.find_vma(s)
        if v is None or v.vm_file is None or v.vm_start > s:
            return None
        off = (v.vm_pgoff << C.PAGE_SHIFT) + (s - v.vm_start)
        try:
            with open(v.vm_file.path, "rb") as f:
                f.seek(off)
                return f.read(e - s)
        except OSError:
            return None

    def _apply(self) -> None:
        """Make Unicorn's regions and ql.mem.map_info over the noted ranges equal to the model's VMAs."""
        t = self._tracker
        dirty, fresh = t.dirty, t.fresh
        t.dirty, t.fresh = [], []
        if not dirty and not fresh:
            return
        for s, e in fresh:  # contents dropped: unmap, mapped again below with fresh contents
            self._unmap(s & C.PAGE_MASK, min(e, C.TASK_SIZE))
        for s, e in dirty:
            lo, hi = s & C.PAGE_MASK, min(e, C.TASK_SIZE)
            for v in self.mm.tree:
                if v.vm_end > lo and v.vm_start < hi:
                    lo, hi = min(lo, v.vm_start), max(hi, v.vm_end)
            self._sync(lo, hi)

    def _sync(self, lo: int, hi: int) -> None:
        want: list[tuple[int, int, int]] = [(max(v.vm_start, lo), min(v.vm_end, hi), _uc_prot(v.vm_flags))
                                            for v in self.mm.tree if v.vm_end > lo and v.vm_start < hi]
        have = self._uc_regions(lo, hi)
        cuts = sorted({lo, hi, *(x for s, e, _ in want for x in (s, e)), *(x for s, e, _ in have for x in (s, e))})
        uc = self.ql.uc
        for a, b in zip(cuts, cuts[1:], strict=False):
            w = next((p for s, e, p in want if s <= a < e), None)
            h = next((p for s, e, p in have if s <= a < e), None)
            for pa, pb in self._private(a, b):
                if w is None and h is not None:
                    uc.mem_unmap(pa, pb - pa)
                elif w is not None and h is None:
                    uc.mem_map(pa, pb - pa, w)
                    data = self._contents(pa, pb)
                    if data:
                        uc.mem_write(pa, data)
                elif w is not None and w != h:
                    uc.mem_protect(pa, pb - pa, w)
        # Qiling's shadow map: one entry per VMA of the range
        mem = self.ql.mem
        mem.map_info[:] = [m for m in mem.map_info if m[1] <= lo or m[0] >= hi or
                           any(ps <= m[0] and m[1] <= pe for ps, pe in QILING_PRIVATE)]
        for v in self.mm.tree:
            if v.vm_end > lo and v.vm_start < hi:
                name = maps_name(self.mm, v)
                mem.add_mapinfo(v.vm_start, v.vm_end, _uc_prot(v.vm_flags), name or "[anon]")

    # -- the syscalls ------------------------------------------------------------------------------
    def call(self, name: str, *args: int) -> int:
        """One memory syscall through the model, then Qiling brought in step."""
        ret = self.mm.syscall(name, *args)
        self._apply()
        self.calls.append((name, args, ret))
        return ret

    def sys_mmap(self, ql: Any, addr: int, length: int, prot: int, flags: int, fd: int, pgoffset: int) -> int:
        fd &= 0xFFFFFFFF
        if not flags & C.MAP_ANONYMOUS and fd < 0x80000000:
            r = self._file_for(fd)
            if r < 0:
                return self._record("mmap", (addr, length, prot, flags, fd, pgoffset), r)
        return self.call("mmap", addr, length, prot, flags, fd, pgoffset)

    def sys_mmap2(self, ql: Any, addr: int, length: int, prot: int, flags: int, fd: int, pgoffset: int) -> int:
        """mmap2(2) (32-bit ABIs): the offset is in 4096-byte units."""
        return self.sys_mmap(ql, addr, length, prot, flags, fd, (pgoffset & 0xFFFFFFFF) * PAGE)

    def _record(self, name: str, args: tuple[int, ...], ret: int) -> int:
        self.calls.append((name, args, ret))
        return ret

    def _file_for(self, fd: int) -> int:
        """Put Qiling's descriptor ``fd`` in the model's descriptor table (as the real file); -EBADF."""
        from ..realfile import open_real

        qfds = self.ql.os.fd
        f = qfds[fd] if fd < len(qfds) else None
        if f is None:
            return -C.EBADF if hasattr(C, "EBADF") else -9
        old = self.mm.fdtable.get(fd)
        host = getattr(f, "name", None)
        if not isinstance(host, str) or not os.path.exists(host):
            return -19  # ENODEV: not a file the model can map
        if old is not None and old.path == os.path.realpath(host):
            return 0
        try:
            flags = os.O_RDONLY
            hostfd = getattr(f, "fileno", None)
            if callable(hostfd):
                import fcntl
                flags = fcntl.fcntl(hostfd(), fcntl.F_GETFL)
        except OSError:
            pass
        self.mm.fdtable[fd] = open_real(self.mm, host, flags)
        return 0

    def sys_munmap(self, ql: Any, addr: int, length: int) -> int:
        return self.call("munmap", addr, length)

    def sys_mprotect(self, ql: Any, start: int, length: int, prot: int) -> int:
        return self.call("mprotect", start, length, prot)

    def sys_mremap(self, ql: Any, old: int, old_len: int, new_len: int, flags: int, new_addr: int) -> int:
        n = min(old_len, new_len) if new_len else old_len
        saved = b""
        if not old & ~C.PAGE_MASK and 0 < n <= 1 << 32:
            try:
                saved = bytes(self.ql.uc.mem_read(old, n))
            except UcError:
                saved = b""
        ret = self.mm.syscall("mremap", old, old_len, new_len, flags, new_addr)
        moved = 0 <= ret < C.TASK_SIZE and ret != old
        if moved:
            self._tracker.fresh.append((old, old + old_len))  # the pages left (MREMAP_DONTUNMAP: empty)
        self._apply()
        if moved and saved:
            self.ql.uc.mem_write(ret, saved)
        self.calls.append(("mremap", (old, old_len, new_len, flags, new_addr), ret))
        return ret

    def sys_brk(self, ql: Any, brk: int) -> int:
        return self.call("brk", brk)

    def sys_madvise(self, ql: Any, addr: int, length: int, advice: int) -> int:
        ret = self.mm.syscall("madvise", addr, length, advice)
        if ret == 0 and advice in (MADV_DONTNEED, MADV_REMOVE):
            # zap: private pages go back to zeros or the file's bytes; shared ones keep the page cache
            end = addr + ((length + PAGE - 1) & C.PAGE_MASK)
            for v in self.mm.tree:
                if v.vm_end > addr and v.vm_start < end and not v.vm_flags & C.VM_SHARED:
                    self._tracker.fresh.append((max(v.vm_start, addr), min(v.vm_end, end)))
        self._tracker.fresh[:] = [r for r in self._tracker.fresh
                                  if not any(v.vm_flags & C.VM_SHARED for v in self.mm.tree
                                             if v.vm_end > r[0] and v.vm_start < r[1])]
        self._apply()
        self.calls.append(("madvise", (addr, length, advice), ret))
        return ret

    def sys_mlock(self, ql: Any, addr: int, length: int) -> int:
        return self.call("mlock", addr, length)

    def sys_mlock2(self, ql: Any, addr: int, length: int, flags: int) -> int:
        return self.call("mlock2", addr, length, flags)

    def sys_munlock(self, ql: Any, addr: int, length: int) -> int:
        return self.call("munlock", addr, length)

    def sys_mlockall(self, ql: Any, flags: int) -> int:
        return self.call("mlockall", flags)

    def sys_munlockall(self, ql: Any) -> int:
        return self.call("munlockall")

    def sys_mseal(self, ql: Any, addr: int, length: int, flags: int) -> int:
        return self.call("mseal", addr, length, flags)

    def sys_msync(self, ql: Any, addr: int, length: int, flags: int) -> int:
        return self.call("msync", addr, length, flags)

    def sys_mincore(self, ql: Any, addr: int, length: int, vec: int) -> int:
        ret, v = self.mm.sys_mincore(addr, length)
        self._apply()
        if ret == 0 and v:
            try:
                self.ql.uc.mem_write(vec, bytes(1 if c == "1" else 0 for c in v))
            except UcError:
                ret = -14  # EFAULT: copy_to_user() of the vector failed
        self.calls.append(("mincore", (addr, length, vec), ret))
        return ret

    # -- faults ------------------------------------------------------------------------------------
    def _on_invalid(self, ql: Any, access: int, addr: int, size: int, value: int) -> bool:
        write = access in (UC_MEM_WRITE_UNMAPPED, UC_MEM_WRITE_PROT)
        fetch = access in (UC_MEM_FETCH_UNMAPPED, UC_MEM_FETCH_PROT)
        pc = ql.arch.regs.arch_pc
        before = self._uc_regions(addr & C.PAGE_MASK, (addr & C.PAGE_MASK) + PAGE)
        try:
            for page in range(addr & C.PAGE_MASK, addr + max(size, 1), PAGE):
                a = max(addr, page)
                self.mm.touch(a, write=write)
                if fetch:
                    v = self.mm.find_vma(a)
                    if v is None or not v.vm_flags & C.VM_EXEC:
                        raise Fault("SIGSEGV", a, "SEGV_ACCERR")
        except Fault as f:
            self.fault = FaultInfo(f.signal, f.code, f.addr, pc)
            self._apply()
            ql.emu_stop()
            return False
        self._apply()
        if self._uc_regions(addr & C.PAGE_MASK, (addr & C.PAGE_MASK) + PAGE) == before:
            # the model allows the access but Unicorn's region did not change: not ours to retry
            self.fault = FaultInfo("SIGSEGV", "SEGV_ACCERR", addr, pc)
            ql.emu_stop()
            return False
        return True

    # -- running -----------------------------------------------------------------------------------
    def run(self) -> tuple[str, int]:
        """``ql.run()``; returns ``("exit", status)`` or ``("signal", signo)`` (the fault in :attr:`fault`)."""
        try:
            self.ql.run()
        except UcError:
            if self.fault is None:
                raise
        if self.fault is not None:
            return ("signal", 7 if self.fault.signal == "SIGBUS" else 11)
        return ("exit", int(getattr(self.ql.os, "exit_code", 0) or 0))


def maps_name(mm: MM, v: Any) -> str:
    from ..procfs import vma_name
    return vma_name(mm, v)


def _write_stack(ql: Any, mm: MM, info: ExecInfo, argv: list[str], envp: list[str]) -> None:
    """fs/exec.c copy_strings() and fs/binfmt_elf.c create_elf_tables() at the model's addresses."""
    uc = ql.uc
    p = info.arg_start
    strings = b"".join(os.fsencode(s) + b"\0" for s in (*argv, *envp))
    execfn = p + len(strings)
    strings += os.fsencode(info.path) + b"\0"
    uc.mem_write(p, strings + b"\0" * 8)
    top = p & ~0xF
    platform = top - len("x86_64") - 1
    uc.mem_write(platform, b"x86_64\0")
    rand = platform - 16
    uc.mem_write(rand, os.urandom(16))
    host = _host_auxv()
    auxv = [(AT_SYSINFO_EHDR, 0), (AT_MINSIGSTKSZ, host.get(AT_MINSIGSTKSZ, 2048)),
            (AT_HWCAP, host.get(AT_HWCAP, 0)), (AT_PAGESZ, PAGE), (AT_CLKTCK, host.get(AT_CLKTCK, 100)),
            (AT_PHDR, info.phdr), (AT_PHENT, 56), (AT_PHNUM, info.phnum), (AT_BASE, info.interp_base),
            (AT_FLAGS, 0), (AT_ENTRY, info.program_entry), (AT_UID, os.getuid()), (AT_EUID, os.geteuid()),
            (AT_GID, os.getgid()), (AT_EGID, os.getegid()), (AT_SECURE, 0), (AT_RANDOM, rand),
            (AT_HWCAP2, host.get(AT_HWCAP2, 0)), (AT_EXECFN, execfn), (AT_PLATFORM, platform),
            (AT_RSEQ_FEATURE_SIZE, host.get(AT_RSEQ_FEATURE_SIZE, 32)), (AT_RSEQ_ALIGN, host.get(AT_RSEQ_ALIGN, 32)),
            (AT_NULL, 0)]
    words = [len(argv)]
    q = p
    for s in argv:
        words.append(q)
        q += len(os.fsencode(s)) + 1
    words.append(0)
    for s in envp:
        words.append(q)
        q += len(os.fsencode(s)) + 1
    words.append(0)
    for k, v in auxv:
        words += [k, v]
    uc.mem_write(info.start_stack, struct.pack(f"<{len(words)}Q", *words))


def install(ql: Any, mm: MM | None = None) -> QilingAdapter:
    """Make vmalab the address space of the Qiling instance ``ql`` (an x86-64 Linux program, constructed
    but not yet run).  With ``mm`` None the program is loaded again by vmalab's exec model (argv and
    environment from ``ql``); a given ``mm`` is used as it is (its VMAs are mirrored; the registers are
    left to the caller).  Returns the adapter, also set as ``ql.vmalab``."""
    _require()
    from qiling.const import QL_ARCH, QL_INTERCEPT, QL_OS
    from qiling.os.linux.procfs import FsMappedStream

    if ql.arch.type != QL_ARCH.X8664 or ql.os.type != QL_OS.LINUX:
        raise ValueError("vmalab.adapters.qiling models x86-64 Linux only")
    info = None
    argv = [str(a) for a in ql.argv]
    envp = [f"{k}={v}" for k, v in ql.env.items()]
    if mm is None:
        mm = MM()
        info = exec_elf(mm, ql.path, argv, envp)
    ad = QilingAdapter(ql, mm, info)
    # throw Qiling's layout away (but its private pages and the vsyscall page)
    for s, e, _ in list(ql.uc.mem_regions()):
        for a, b in ad._private(s, e + 1):
            if not (VSYSCALL[0] <= a < VSYSCALL[1]):
                ql.uc.mem_unmap(a, b - a)
    ql.mem.map_info[:] = [m for m in ql.mem.map_info
                          if any(ps <= m[0] and m[1] <= pe for ps, pe in (*QILING_PRIVATE, VSYSCALL))]
    ad._tracker.dirty.append((0, C.TASK_SIZE))
    ad._apply()
    if info is not None:
        # the bss: padzero() of the page after p_filesz (elf_load())
        with open(ql.path, "rb") as fh:
            img = read_elf(fh.read(), ql.path)
        for ph in img.phdrs:
            if ph.p_type == PT_LOAD and ph.p_memsz > ph.p_filesz:
                z = info.load_bias + ph.p_vaddr + ph.p_filesz
                n = (-z) % PAGE
                if n:
                    ql.uc.mem_write(z, b"\0" * n)
        _write_stack(ql, mm, info, argv, envp)
        ql.loader.elf_entry = ql.loader.entry_point = ql.os.entry_point = info.entry
        ql.loader.skip_exit_check = False
        ql.arch.regs.arch_sp = info.start_stack
        ql.loader.brk_address = mm.brk
    for name in MEMORY_SYSCALLS:
        ql.os.set_syscall(name, getattr(ad, f"sys_{name}"), QL_INTERCEPT.CALL)
    ql.add_fs_mapper("/proc/self/maps", lambda: FsMappedStream("/proc/self/maps", maps(mm).encode()))
    ql.add_fs_mapper("/proc/self/smaps", lambda: FsMappedStream("/proc/self/smaps", smaps(mm).encode()))
    ql.hook_mem_invalid(ad._on_invalid)
    ql.vmalab = ad
    return ad


def run_program(path: str, argv: list[str] | None = None, rootfs: str | None = None,
                env: dict[str, str] | None = None) -> tuple[tuple[str, int], QilingAdapter]:
    """Run the static x86-64 ELF ``path`` under Qiling with vmalab as its address space.  Qiling needs
    the program inside its root file system: ``rootfs`` defaults to the program's directory.  Returns
    the adapter's :meth:`QilingAdapter.run` result and the adapter."""
    _require()
    from qiling import Qiling
    from qiling.const import QL_VERBOSE

    path = os.path.abspath(path)
    ql = Qiling([path, *(argv or [])[1:]] if argv else [path], rootfs or os.path.dirname(path),
                env=dict(env or {}), verbose=QL_VERBOSE.DISABLED)
    if argv:
        ql._argv = list(argv)  # argv[0] as given (Qiling takes it as the program's path)
    ad = install(ql)
    return ad.run(), ad


#: si_code values of include/uapi/asm-generic/siginfo.h, by vmalab's code names
SI_CODES = {"MAPERR": 1, "ACCERR": 2, "SEGV_MAPERR": 1, "SEGV_ACCERR": 2, "ADRERR": 2, "BUS_ADRERR": 2}


def main(args: list[str] | None = None) -> int:
    """``python -m vmalab.adapters.qiling PROGRAM [ARGS...]``: run PROGRAM (empty environment) and exit
    with its status, or 128 + the signal it died of; the fault goes to stderr as
    ``signal 11 code 2 addr 0x... rip 0x...``."""
    import sys

    args = sys.argv[1:] if args is None else args
    if not args:
        print("usage: python -m vmalab.adapters.qiling PROGRAM [ARGS...]", file=sys.stderr)
        return 2
    try:
        (kind, value), ad = run_program(args[0], [os.path.abspath(args[0]), *args[1:]])
    except ImportError as e:
        print(f"vmalab: error: {e}", file=sys.stderr)
        return 2
    sys.stdout.flush()
    if kind == "signal" and ad.fault is not None:
        f = ad.fault
        print(f"signal {value} code {SI_CODES.get(f.code, 0)} addr {f.addr:#x} rip {f.pc:#x}", file=sys.stderr)
        return 128 + value
    return value


if __name__ == "__main__":
    raise SystemExit(main())
