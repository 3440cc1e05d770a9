"""The address space: ``MM`` and the VMA-layer syscalls.

Models ``struct mm_struct`` and the paths of mm/mmap.c (do_mmap, brk), mm/vma.c (mmap_region, merging,
splitting, munmap gather/complete), mm/mprotect.c and the fault handling of mm/memory.c that decides
anon_vma and residency.  Every piece of state lives in an ``MM`` instance (plus shared ``File``/``Inode``
objects), so models can be forked, snapshotted and compared.

Two API levels: methods named after the syscalls (``mmap``, ``munmap``, ``mprotect``, ``touch``) raise
``OSError`` with the kernel's errno; :meth:`MM.syscall` returns what the kernel returns (an address, 0,
or ``-errno``).
"""

from __future__ import annotations

import errno
import functools
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import constants as C
from .brk import BrkMixin
from .constants import (
    PAGE_SHIFT,
    PAGE_SIZE,
    TASK_SIZE,
    ULONG_MASK,
    VM_ACCOUNT,
    VM_GROWSDOWN,
    VM_LOCKED,
    VM_MAYSHARE,
    VM_SHARED,
    VM_SPECIAL,
    VM_WRITE,
    page_align,
)
from .driver import MmapAction
from .drivers.filemap import RegularFileOps
from .faults import FaultMixin
from .files import (
    DUMMY_VM_OPS,
    FMODE_READ,
    FMODE_WRITE,
    S_IFCHR,
    SHMEM_DEV,
    SHMEM_VM_OPS,
    File,
    FileOperations,
    Inode,
    ShmemFileOps,
    VmOperations,
)
from .fork import ForkMixin
from .layout import TASK_UNMAPPED_BASE, get_unmapped_area, mmap_base, round_hint_to_min
from .locking import LockState, mmap_write_locked
from .madvise import MadviseMixin
from .mincore import MincoreMixin
from .mlock import MlockMixin
from .mremap import MremapMixin
from .mseal import MsealMixin
from .msync import MsyncMixin
from .pagetable import GUARD, PFN, ZERO, PageTable
from .profiles import DEFAULT_PROFILE, get_profile
from .resources import ResourceTracker
from .vma import VMA, AnonVma, VmaTree

if TYPE_CHECKING:
    from .lockcheck import LockChecker

VM_STACK = VM_GROWSDOWN
# smaps counts the pages vm_normal_page() returns: not the zero page, guard markers or raw PFNs
NOT_IN_RSS = (ZERO, GUARD, PFN)


class ValidationError(AssertionError):
    """``MM.validate()`` found a broken invariant."""


def _err(e: int) -> OSError:
    return OSError(e, f"{C.ERRNO_NAMES.get(e, e)}: {errno.errorcode.get(e, '')}")


def _check(r: int) -> None:
    """Raise the OSError a raw syscall return value stands for."""
    if r < 0:
        raise _err(-r)


@dataclass
class TraceEvent:
    """One step of an operation, for ``--trace`` and for tests."""

    op: str
    what: str
    detail: dict[str, Any]

    def __str__(self) -> str:
        extra = " ".join(f"{k}={v:#x}" if isinstance(v, int) and k in ("start", "end", "addr") else f"{k}={v}"
                         for k, v in self.detail.items())
        return f"{self.op}: {self.what}" + (f" ({extra})" if extra else "")


def is_exec_mapping(flags: int) -> bool:
    return (flags & (C.VM_EXEC | VM_WRITE | VM_STACK)) == C.VM_EXEC


def is_stack_mapping(flags: int) -> bool:
    return (flags & VM_STACK) == VM_STACK


def is_data_mapping(flags: int) -> bool:
    return (flags & (VM_WRITE | VM_SHARED | VM_STACK)) == VM_WRITE


class _Gather:
    """Models struct vma_munmap_struct: the VMAs detached from a range by vms_gather_munmap_vmas()."""

    __slots__ = ("start", "end", "detached", "prev", "next", "nr_pages", "nr_accounted", "cleared")

    def __init__(self, start: int, end: int) -> None:
        self.start = start
        self.end = end
        self.detached: list[VMA] = []
        self.prev: VMA | None = None
        self.next: VMA | None = None
        self.nr_pages = 0
        self.nr_accounted = 0
        self.cleared = False


class MM(FaultMixin, MremapMixin, MadviseMixin, MincoreMixin, MsyncMixin, MlockMixin, MsealMixin, BrkMixin,
         ForkMixin):
    """Models ``struct mm_struct`` of one x86-64 process under Linux 6.18.

    Parameters set the environment the kernel would take from the process and the machine: the stack
    rlimit (which fixes ``mmap_base``), address randomisation (off by default, like ADDR_NO_RANDOMIZE;
    ``seed`` makes the random mode reproducible), ``vm.max_map_count`` and ``mmap_min_addr``.
    """

    def __init__(self, *, rlimit_stack: int = 8 << 20, randomize: bool = False, seed: int | None = None,
                 max_map_count: int = C.DEFAULT_MAX_MAP_COUNT, mmap_min_addr: int = C.MMAP_MIN_ADDR,
                 kernel: str = DEFAULT_PROFILE) -> None:
        self.profile = get_profile(kernel)
        self.kernel = kernel
        self.locks = LockState()
        self.lock_events: list[tuple[str, str]] = []
        self.fail_plan: dict[str, tuple[int, int]] = {}  # fault point -> (hit number to fail, -errno)
        self.fail_hits: dict[str, int] = {}
        self.lockcheck: LockChecker | None = None  # set by the explorer (vmalab.lockcheck)
        self.resources = ResourceTracker()  # driver references, PFNs and files (vmalab.resources)
        self.tree = VmaTree()
        self.pt = PageTable()
        self.rng = random.Random(seed)
        self.randomize = randomize
        rnd = (self.rng.getrandbits(28) << PAGE_SHIFT) if randomize else 0
        self.rlimits: dict[int, tuple[int, int]] = {
            C.RLIMIT_NAMES["RLIMIT_STACK"]: (rlimit_stack, C.RLIM_INFINITY),
            C.RLIMIT_NAMES["RLIMIT_AS"]: (C.RLIM_INFINITY, C.RLIM_INFINITY),
            C.RLIMIT_NAMES["RLIMIT_DATA"]: (C.RLIM_INFINITY, C.RLIM_INFINITY),
            C.RLIMIT_NAMES["RLIMIT_MEMLOCK"]: (8 << 20, 8 << 20),
        }
        self.mmap_base = mmap_base(rlimit_stack, rnd, randomize)
        self.mmap_legacy_base = TASK_UNMAPPED_BASE + rnd
        self.topdown = True
        self.mmap_min_addr = mmap_min_addr
        self.dac_mmap_min_addr = C.DAC_MMAP_MIN_ADDR
        self.max_map_count = max_map_count
        self.cap_sys_rawio = True
        self.cap_ipc_lock = True
        self.overcommit_memory = 0
        # CONFIG_ANON_VMA_NAME: off on the live 6.18 kernel here (prctl(PR_SET_VMA) answers EINVAL).
        self.anon_vma_name_enabled = False
        self.totalram_pages = (24 << 30) >> PAGE_SHIFT
        # The backing device's read_ahead_kb / 4: 8192 KiB on this machine's disk (/dev/vda), measured;
        # mmap read-around of a cache miss reads up to this many pages (mm/filemap.c, ra->ra_pages).
        self.ra_pages = 2048
        self.total_vm = 0
        self.locked_vm = 0
        self.data_vm = 0
        self.exec_vm = 0
        self.stack_vm = 0
        self.committed = 0  # pages charged through security_vm_enough_memory_mm()
        self.leaked_commit = 0  # charges the kernel never releases (reported as kernel behaviour)
        self.def_flags = 0
        self.start_brk = 0
        self.brk = 0
        self.start_stack = 0
        self._next_anon_vma = 1
        self._next_ino = 1000
        self.fdtable: dict[int, File] = {}
        self.trace: list[TraceEvent] = []
        self.tracing = False

    @classmethod
    def from_maps(cls, text: str, *, rlimit_stack: int = 8 << 20, **kwargs: Any) -> MM:
        """An MM holding the VMAs of a real process's ``/proc/PID/maps`` text.  ``mmap_base`` is read from
        the end of ``[vdso]`` when the text has one (the vDSO block is the first top-down allocation, so
        it ends at mmap_base even with ASLR on), else derived from ``rlimit_stack``."""
        from .procfs import import_maps
        mm = cls(rlimit_stack=rlimit_stack, **kwargs)
        import_maps(mm, text)
        for v in mm.tree:
            if v.vm_ops is not None and v.vm_ops.name(v) == "[vdso]":
                mm.mmap_base = v.vm_end
        return mm

    # ------------------------------------------------------------------------------------------------
    # small helpers
    @property
    def map_count(self) -> int:
        return len(self.tree)

    def rlimit(self, resource: str) -> int:
        return self.rlimits.get(C.RLIMIT_NAMES[resource], (C.RLIM_INFINITY, C.RLIM_INFINITY))[0]

    def _trace(self, op: str, what: str, **detail: Any) -> None:
        if self.tracing:
            self.trace.append(TraceEvent(op, what, detail))

    def callback(self, name: str, fn: Callable[[], Any], vma: VMA | None = None) -> Any:
        """Call a driver callback (``mmap_prepare``, ``mapped``, ``success_hook`` ...), tracing it with
        the locks held at that moment, as the kernel would hold them."""
        self._trace("mmap", name, locks=" ".join(sorted(self.locks.held())) or "-")
        if self.lockcheck is not None:
            return self.lockcheck.call(name, fn, vma)
        return fn()

    def inject(self, point: str) -> int:
        """A fallible point of the modelled paths: returns -errno when the fault plan fails this hit."""
        n = self.fail_hits.get(point, 0) + 1
        self.fail_hits[point] = n
        plan = self.fail_plan.get(point)
        if plan is not None and plan[0] == n:
            self._trace("fault", f"injected failure at {point} (hit {n})", errno=C.ERRNO_NAMES.get(-plan[1]))
            return plan[1]
        return 0

    def _new_anon_vma(self) -> AnonVma:
        a = AnonVma(self._next_anon_vma)
        self._next_anon_vma += 1
        return a

    def vmas(self) -> list[VMA]:
        return list(self.tree)

    def find_vma(self, addr: int) -> VMA | None:
        return self.tree.find(addr)

    def vma_at(self, addr: int) -> VMA | None:
        return self.tree.lookup(addr)

    # ------------------------------------------------------------------------------------------------
    # files and descriptors
    def _alloc_ino(self) -> int:
        self._next_ino += 1
        return self._next_ino

    def _install_fd(self, f: File) -> int:
        fd = 3
        while fd in self.fdtable:
            fd += 1
        self.fdtable[fd] = f
        self.resources.track_file(f)
        return fd

    def open_device(self, path: str, f_op: FileOperations, size: int = 0, *, mode: str = "rw") -> int:
        """Open a character device driven by ``f_op`` (a driver written for vmalab); returns the fd."""
        inode = Inode(self._alloc_ino(), (0, 0x0F), mode=S_IFCHR, size=size or (1 << 40))
        fmode = {"rw": FMODE_READ | FMODE_WRITE, "ro": FMODE_READ, "wo": FMODE_WRITE}[mode]
        return self._install_fd(File(inode, f_op, path, f_mode=fmode, owner=self))

    def new_shmem_file(self, name: str, size: int, deleted: bool = True) -> File:
        """shmem_kernel_file_setup(): an unlinked shmem file (shared anonymous memory, /dev/zero)."""
        inode = Inode(self._alloc_ino(), SHMEM_DEV, size=size)
        f = File(inode, ShmemFileOps(), name, deleted=deleted, owner=self)
        f.anon_shmem = name == "/dev/zero"  # shmem_zero_setup(): shared anonymous memory
        return self.resources.track_file(f)

    def memfd_create(self, name: str, size: int = 0) -> int:
        """memfd_create(2) + ftruncate: returns a descriptor; maps show ``/memfd:NAME (deleted)``."""
        f = self.new_shmem_file(f"/memfd:{name}", size)
        return self._install_fd(f)

    def open_file(self, path: str, size: int = 0, *, kind: str = "disk", mode: str = "rw",
                  inode: Inode | None = None, dev: tuple[int, int] = (0xFE, 0)) -> int:
        """Open (creating if ``inode`` is None) a regular file: ``kind`` is ``disk`` (ext4-like page cache,
        THP-aligned placement, readahead) or ``tmpfs`` (shmem).  ``mode`` is ``rw``, ``ro`` or ``wo``."""
        if inode is None:
            inode = Inode(self._alloc_ino(), dev if kind == "disk" else (0, 0x1A), size=size)
        ops: FileOperations = RegularFileOps() if kind == "disk" else ShmemFileOps()
        fmode = {"rw": FMODE_READ | FMODE_WRITE, "ro": FMODE_READ, "wo": FMODE_WRITE}[mode]
        return self._install_fd(File(inode, ops, path, f_mode=fmode, owner=self))

    def reopen(self, fd: int, mode: str) -> int:
        """Open another descriptor to the file behind ``fd`` (like opening /proc/self/fd/N)."""
        f = self.fdtable[fd]
        fmode = {"rw": FMODE_READ | FMODE_WRITE, "ro": FMODE_READ, "wo": FMODE_WRITE}[mode]
        return self._install_fd(File(f.inode, type(f.f_op)(), f.path, f_mode=fmode, deleted=f.deleted,
                                     owner=self))

    def open_devzero(self) -> int:
        """open("/dev/zero"): the built-in driver vmalab.drivers.devzero (its hook depends on the profile)."""
        from .drivers.devzero import open_devzero
        return open_devzero(self, 0)

    def memfd_secret(self, size: int = 0) -> int:
        """memfd_secret(2) + ftruncate: the built-in driver vmalab.drivers.secretmem."""
        from .drivers.secretmem import open_secretmem
        return open_secretmem(self, size)

    def ftruncate(self, fd: int, length: int) -> None:
        f = self.fdtable.get(fd)
        if f is None:
            raise _err(errno.EBADF)
        if length < 0 or length > (1 << 63) - 1:
            raise _err(errno.EINVAL)
        if not f.f_mode & FMODE_WRITE or f.inode.mode != C_S_IFREG:
            raise _err(errno.EINVAL)
        old = f.inode.size
        f.inode.truncate(length)
        if length < old and length & (PAGE_SIZE - 1) and f.f_op.fault_style == "filemap":
            # ext4_truncate() -> ext4_block_truncate_page(): the folio of the new last, partial block is
            # looked up with FGP_CREAT; over a hole nothing is read, so a new folio stays !uptodate.
            last = length >> PAGE_SHIFT
            if last not in f.inode.pages:
                f.inode.cache_page(last).uptodate = False
        if length < old:
            # truncate_pagecache() -> unmap_mapping_range(even_cows=1): zap the PTEs of every mapping
            # beyond the new EOF, the private COW copies too; guard markers stay.
            limit = f.inode.npages()
            for v in self.tree:
                if v.vm_file is not None and v.vm_file.inode is f.inode:
                    first = max(limit - v.vm_pgoff, 0)
                    if first < v.pages:
                        s = (v.vm_start >> PAGE_SHIFT) + first
                        for vpn, pg in self.pt.items(s, v.vm_end >> PAGE_SHIFT):
                            if pg.kind != GUARD:
                                self.pt.zap(vpn, vpn + 1)

    def close(self, fd: int) -> None:
        if self.fdtable.pop(fd, None) is None:
            raise _err(errno.EBADF)

    # ------------------------------------------------------------------------------------------------
    # accounting
    def vm_stat_account(self, flags: int, npages: int) -> None:
        """Models mm/mmap.c: vm_stat_account()."""
        self.total_vm += npages
        if is_exec_mapping(flags):
            self.exec_vm += npages
        elif is_stack_mapping(flags):
            self.stack_vm += npages
        elif is_data_mapping(flags):
            self.data_vm += npages

    def may_expand_vm(self, flags: int, npages: int) -> bool:
        """Models mm/mmap.c: may_expand_vm() (RLIMIT_AS, and RLIMIT_DATA for data mappings)."""
        if self.total_vm + npages > self.rlimit("RLIMIT_AS") >> PAGE_SHIFT:
            return False
        if is_data_mapping(flags) and self.data_vm + npages > self.rlimit("RLIMIT_DATA") >> PAGE_SHIFT:
            return False
        return True

    def vm_enough_memory(self, pages: int) -> bool:
        """Models mm/util.c: __vm_enough_memory() for the heuristic (0) and always (1) policies;
        policy 2 uses the commit limit (overcommit_ratio 50, no swap)."""
        if self.overcommit_memory == 1:
            ok = True
        elif self.overcommit_memory == 2:
            ok = self.committed + pages <= self.totalram_pages // 2
        else:
            ok = pages <= self.totalram_pages
        if ok:
            self.committed += pages
        return ok

    def vm_unacct_memory(self, pages: int) -> None:
        self.committed -= pages

    def mlock_future_ok(self, flags: int, length: int) -> bool:
        """Models mm/mmap.c: mlock_future_ok()."""
        if not flags & VM_LOCKED or self.cap_ipc_lock:
            return True
        return (length >> PAGE_SHIFT) + self.locked_vm <= self.rlimit("RLIMIT_MEMLOCK") >> PAGE_SHIFT

    def can_do_mlock(self) -> bool:
        return self.rlimit("RLIMIT_MEMLOCK") != 0 or self.cap_ipc_lock

    # ------------------------------------------------------------------------------------------------
    # merge rules (mm/vma.c)
    @staticmethod
    def _uncowed(v: VMA | None) -> bool:
        """vma_had_uncowed_parents()."""
        return v is not None and v.anon_vma is not None and v.avc_len != 1

    def _mergeable_anon(self, tgt: VMA, src: VMA | None, src_anon: AnonVma | None) -> bool:
        """Models mm/vma.c: is_mergeable_anon_vma()."""
        tgt_anon = tgt.anon_vma
        if tgt_anon is None and src_anon is not None:
            return not self._uncowed(src)
        if tgt_anon is not None and src_anon is None:
            return not self._uncowed(tgt)
        return src_anon is tgt_anon

    @staticmethod
    def _mergeable_vma(tgt: VMA, flags: int, file: File | None, anon_name: str | None) -> bool:
        """Models mm/vma.c: is_mergeable_vma()."""
        return (not ((tgt.vm_flags ^ flags) & ~C.VM_IGNORE_MERGE) and tgt.vm_file is file
                and tgt.anon_name == anon_name)

    @staticmethod
    def _can_remove(v: VMA) -> bool:
        """can_merge_remove_vma(): a VMA with vm_ops->close cannot be removed by a merge."""
        return v.vm_ops is None or not v.vm_ops.has_close

    def _erase(self, v: VMA) -> None:
        self.tree.erase(v)

    def _set_start(self, v: VMA, start: int, pgoff: int) -> None:
        old = v.vm_start
        v.vm_start = start
        v.vm_pgoff = pgoff
        self.tree.rekey(v, old)

    def merge_new_range(self, start: int, end: int, flags: int, file: File | None, pgoff: int,
                        prev: VMA | None, nxt: VMA | None, anon_name: str | None = None,
                        anon_vma: AnonVma | None = None, src: VMA | None = None, op: str = "mmap") -> VMA | None:
        """Models mm/vma.c: vma_merge_new_range(): extend ``prev`` and/or ``nxt`` over a new range."""
        if flags & VM_SPECIAL or (prev is None and nxt is None):
            return None
        pglen = (end - start) >> PAGE_SHIFT
        left = (prev is not None and prev.vm_end == start and self._mergeable_vma(prev, flags, file, anon_name)
                and self._mergeable_anon(prev, src, anon_vma) and prev.vm_pgoff + prev.pages == pgoff)
        right = (nxt is not None and nxt.vm_start == end and self._mergeable_vma(nxt, flags, file, anon_name)
                 and self._mergeable_anon(nxt, src, anon_vma) and nxt.vm_pgoff == pgoff + pglen)
        if right and left:
            assert prev is not None and nxt is not None
            right = prev.anon_vma is None or nxt.anon_vma is None or prev.anon_vma is nxt.anon_vma
        if (left or right) and op == "mmap" and self.inject("vma_merge"):
            return None  # vma_expand() could not preallocate: __mmap_region() allocates a new VMA instead
        if left:
            assert prev is not None
            sticky = flags & C.VM_STICKY
            if right and nxt is not None and self._can_remove(nxt):
                prev.vm_end = nxt.vm_end
                sticky |= nxt.vm_flags & C.VM_STICKY
                if prev.anon_vma is None and nxt.anon_vma is not None:
                    prev.anon_vma, prev.avc_len = nxt.anon_vma, nxt.avc_len
                self._erase(nxt)
                self._trace(op, "merged with prev and next", start=prev.vm_start, end=prev.vm_end)
            else:
                prev.vm_end = end
                self._trace(op, "merged with prev", start=prev.vm_start, end=prev.vm_end)
            prev.vm_flags |= sticky
            if prev.anon_vma is None and anon_vma is not None:
                prev.anon_vma, prev.avc_len = anon_vma, 1
            return prev
        if right:
            assert nxt is not None
            self._set_start(nxt, start, pgoff)
            nxt.vm_flags |= flags & C.VM_STICKY
            if nxt.anon_vma is None and anon_vma is not None:
                nxt.anon_vma, nxt.avc_len = anon_vma, 1
            self._trace(op, "merged with next", start=nxt.vm_start, end=nxt.vm_end)
            return nxt
        return None

    def split_vma(self, vma: VMA, addr: int, new_below: bool, check_count: bool = True) -> int:
        """Models mm/vma.c: split_vma() (``check_count``) / __split_vma(): returns 0 or -errno.

        Afterwards ``vma`` is the part above ``addr`` when ``new_below``, else the part below."""
        if check_count and self.map_count >= self.max_map_count:
            return -errno.ENOMEM
        if vma.vm_ops is not None:
            e = vma.vm_ops.may_split(vma, addr)
            if e:
                return e
        e = self.inject("split_vma")  # vm_area_dup() / vma_iter_prealloc(): before ->open
        if e:
            return e
        new = vma.copy()
        if new_below:
            new.vm_end = addr
            self._set_start(vma, addr, vma.vm_pgoff + ((addr - vma.vm_start) >> PAGE_SHIFT))
        else:
            new.vm_start = addr
            new.vm_pgoff += (addr - vma.vm_start) >> PAGE_SHIFT
            vma.vm_end = addr
        if new.vm_file is not None:
            new.vm_file.refcount += 1
        if new.vm_ops is not None:
            ops = new.vm_ops
            self.callback("open", lambda: ops.open(new), vma=new)
        self.tree.insert(new)
        self._trace("split", "split", addr=addr)
        return 0

    def vma_modify(self, vma: VMA, prev: VMA | None, start: int, end: int, new_flags: int,
                   anon_name: str | None = None, op: str = "modify") -> VMA | int:
        """Models mm/vma.c: vma_modify() with vma_merge_existing_range(): change [start, end) of ``vma``
        (merging with neighbours where Linux would, else splitting).  Returns the VMA now covering the
        range, or -errno (after a first split that already happened, as in the kernel)."""
        name = vma.anon_name if anon_name is None else (anon_name or None)  # "" clears the name
        merged = self._merge_existing(vma, prev, start, end, new_flags, name, op)
        if merged is not None:
            return merged
        if vma.vm_start < start:
            e = self.split_vma(vma, start, True)
            if e:
                return e
        if vma.vm_end > end:
            e = self.split_vma(vma, end, False)
            if e:
                return e
        vma.vm_flags = new_flags | (vma.vm_flags & C.VM_STICKY)
        vma.anon_name = name
        return vma

    def _merge_existing(self, mid: VMA, prev: VMA | None, start: int, end: int, flags: int,
                        name: str | None, op: str) -> VMA | None:
        """Models mm/vma.c: vma_merge_existing_range()."""
        if flags & VM_SPECIAL:
            return None
        nxt = self.tree.next(mid)
        left_side = start == mid.vm_start
        right_side = end == mid.vm_end
        pgoff = mid.vm_pgoff + ((start - mid.vm_start) >> PAGE_SHIFT)
        pglen = (end - start) >> PAGE_SHIFT
        f = mid.vm_file
        merge_left = (left_side and prev is not None and prev.vm_end == start
                      and self._mergeable_vma(prev, flags, f, name)
                      and self._mergeable_anon(prev, mid, mid.anon_vma) and prev.vm_pgoff + prev.pages == pgoff)
        merge_right = (right_side and nxt is not None and nxt.vm_start == end
                       and self._mergeable_vma(nxt, flags, f, name)
                       and self._mergeable_anon(nxt, mid, mid.anon_vma) and nxt.vm_pgoff == pgoff + pglen)
        if not merge_left and not merge_right:
            return None
        delete_mid = left_side and right_side
        if delete_mid and not self._can_remove(mid):
            return None
        if merge_left and merge_right:
            assert prev is not None and nxt is not None
            if not (prev.anon_vma is None or nxt.anon_vma is None or prev.anon_vma is nxt.anon_vma):
                merge_right = False
            elif not self._can_remove(nxt):
                merge_right = False
        sticky = mid.vm_flags & C.VM_STICKY
        if merge_left:
            assert prev is not None
            if prev.anon_vma is None and mid.anon_vma is not None:
                prev.anon_vma, prev.avc_len = mid.anon_vma, mid.avc_len
            if merge_right:
                assert nxt is not None
                if prev.anon_vma is None and nxt.anon_vma is not None:
                    prev.anon_vma, prev.avc_len = nxt.anon_vma, nxt.avc_len
                prev.vm_end = nxt.vm_end
                sticky |= nxt.vm_flags & C.VM_STICKY
                self._erase(mid)
                self._erase(nxt)
                self._trace(op, "merged with prev and next", start=prev.vm_start, end=prev.vm_end)
            else:
                prev.vm_end = end
                if delete_mid:
                    self._erase(mid)
                else:
                    self._set_start(mid, end, mid.vm_pgoff + ((end - mid.vm_start) >> PAGE_SHIFT))
                self._trace(op, "merged with prev", start=prev.vm_start, end=prev.vm_end)
            prev.vm_flags |= sticky
            return prev
        assert nxt is not None
        if nxt.anon_vma is None and mid.anon_vma is not None:
            nxt.anon_vma, nxt.avc_len = mid.anon_vma, mid.avc_len
        if delete_mid:
            self._erase(mid)
        else:
            mid.vm_end = start
        self._set_start(nxt, start, pgoff)
        nxt.vm_flags |= sticky
        self._trace(op, "merged with next", start=nxt.vm_start, end=nxt.vm_end)
        return nxt

    # ------------------------------------------------------------------------------------------------
    # munmap machinery (mm/vma.c: vms_gather_munmap_vmas, vms_complete_munmap_vmas)
    def _gather(self, g: _Gather, first: VMA) -> int:
        """Models vms_gather_munmap_vmas(): split at the edges and detach the VMAs of [start, end).
        On failure the detached VMAs are put back (splits stay) and -errno is returned."""
        vma = first
        if g.start > vma.vm_start:
            if g.end < vma.vm_end and self.map_count >= self.max_map_count:
                return -errno.ENOMEM
            if vma.vm_flags & C.VM_SEALED:
                return -errno.EPERM
            e = self.split_vma(vma, g.start, True, check_count=False)
            if e:
                return e
        g.prev = self.tree.prev(g.start)
        for v in self.tree.range(g.start, g.end):
            if v.vm_flags & C.VM_SEALED:
                self._reattach(g)
                return -errno.EPERM
            if v.vm_end > g.end:
                e = self.split_vma(v, g.end, False, check_count=False)
                if e:
                    self._reattach(g)
                    return e
            g.detached.append(v)
            g.nr_pages += v.pages
            if v.vm_flags & VM_ACCOUNT:
                g.nr_accounted += v.pages
        e = self.inject("gather")  # the detach-tree store can fail: -ENOMEM, splits stay
        if e:
            self._reattach(g)
            return e
        for v in g.detached:
            self.tree.erase(v)
        g.next = self.tree.next(g.end)
        return 0

    def _reattach(self, g: _Gather) -> None:
        for v in g.detached:
            if self.tree.lookup(v.vm_start) is not v:
                self.tree.insert(v)
        g.detached = []
        g.nr_pages = 0
        g.nr_accounted = 0

    def _clean_up_area(self, g: _Gather) -> None:
        """Models vms_clean_up_area(): zap the PTEs of the detached VMAs and call their ->close."""
        for v in g.detached:
            self._zap(v.vm_start, v.vm_end)
            if v.vm_ops is not None:
                self.callback("close", functools.partial(v.vm_ops.close, v), vma=v)
        g.cleared = True

    def _complete(self, g: _Gather) -> None:
        """Models vms_complete_munmap_vmas(): the point of no return of an unmap."""
        if not g.cleared:
            self._clean_up_area(g)
        for v in g.detached:
            self.release_vma(v)

    def release_vma(self, v: VMA) -> None:
        """The accounting half of removing a VMA (vms_complete_munmap_vmas()'s stats and remove_vma()):
        total_vm and friends, locked_vm, the commit charge and the file reference."""
        self.vm_stat_account(v.vm_flags, -v.pages)
        if v.vm_flags & VM_LOCKED:
            self.locked_vm -= v.pages
        if v.vm_flags & VM_ACCOUNT:
            self.vm_unacct_memory(v.pages)
        if v.vm_file is not None:
            v.vm_file.refcount -= 1

    def _abort_gather(self, g: _Gather) -> None:
        """Models vms_abort_munmap_vmas(): reattach if nothing was torn down yet, else leave a hole."""
        if not g.detached:
            return
        if not g.cleared:
            for v in g.detached:
                self.tree.insert(v)
            g.detached = []
            return
        self._trace("mmap", "MAP_FIXED failed after the old mappings were torn down: hole left",
                    start=g.start, end=g.end)
        self._complete(g)

    def _zap(self, start: int, end: int) -> None:
        self.pt.zap(start >> PAGE_SHIFT, end >> PAGE_SHIFT)

    # ------------------------------------------------------------------------------------------------
    # mmap
    def sys_mmap(self, addr: int, length: int, prot: int, flags: int, fd: int, offset: int) -> int:
        """Models arch/x86/kernel/sys_x86_64.c: sys_mmap -> ksys_mmap_pgoff -> vm_mmap_pgoff -> do_mmap.
        Arguments are taken as the unsigned longs the kernel sees; returns the address or -errno."""
        addr &= ULONG_MASK
        length &= ULONG_MASK
        offset &= ULONG_MASK
        prot &= 0xFFFFFFFF
        flags &= 0xFFFFFFFF
        if offset & (PAGE_SIZE - 1):
            return -errno.EINVAL
        file: File | None = None
        if not flags & C.MAP_ANONYMOUS:
            file = self.fdtable.get(fd if fd < (1 << 31) else -1)
            if file is None:
                return -errno.EBADF
            if flags & C.MAP_HUGETLB:
                return -errno.EINVAL
        elif flags & C.MAP_HUGETLB:
            return -errno.ENOMEM  # hugetlb_file_setup() with no huge pages reserved
        e = self.inject("security_mmap_file")
        if e:
            return e
        populate: list[int] = []
        with self.locks.mmap_write():
            ret = self.do_mmap(file, addr, length, prot, flags, offset >> PAGE_SHIFT, populate)
        if populate:
            with self.locks.mmap_read():
                self.mm_populate(ret, populate[0])
        return ret

    def do_mmap(self, file: File | None, addr: int, length: int, prot: int, flags: int, pgoff: int,
                populate: list[int] | None = None) -> int:
        """Models mm/mmap.c: do_mmap(); a length to populate (after the mmap lock is dropped, as
        vm_mmap_pgoff() does) is appended to ``populate``."""
        if not length:
            return -errno.EINVAL
        if flags & C.MAP_FIXED_NOREPLACE:
            flags |= C.MAP_FIXED  # before the hint rounding: an unaligned NOREPLACE address is EINVAL
        if not flags & C.MAP_FIXED:
            addr = round_hint_to_min(addr, self.mmap_min_addr)
        length = page_align(length)
        if not length:
            return -errno.ENOMEM
        if (pgoff + (length >> PAGE_SHIFT)) & ULONG_MASK < pgoff:
            return -errno.EOVERFLOW
        if self.map_count > self.max_map_count:
            return -errno.ENOMEM
        vm_flags = (C.calc_vm_prot_bits(prot) | C.calc_vm_flag_bits(flags) | self.def_flags
                    | C.VM_MAYREAD | C.VM_MAYWRITE | C.VM_MAYEXEC)
        addr = get_unmapped_area(self, file, addr, length, pgoff, flags, vm_flags)
        if addr < 0:
            return addr
        e = self.inject("security_mmap_addr")  # the last step of __get_unmapped_area()
        if e:
            return e
        if flags & C.MAP_FIXED_NOREPLACE and self.tree.find_intersection(addr, addr + length):
            return -errno.EEXIST
        if flags & C.MAP_LOCKED and not self.can_do_mlock():
            return -errno.EPERM
        if not self.mlock_future_ok(vm_flags, length):
            return -errno.EAGAIN
        if file is not None:
            inode = file.inode
            maxsize = (1 << 63) - 1 if inode.mode == C_S_IFREG else ULONG_MASK
            if length > maxsize or pgoff > (maxsize - length) >> PAGE_SHIFT:
                return -errno.EOVERFLOW
            flags_mask = C.LEGACY_MAP_MASK | file.f_op.mmap_supported_flags
            mtype = flags & C.MAP_TYPE
            if mtype in (C.MAP_SHARED, C.MAP_SHARED_VALIDATE):
                if mtype == C.MAP_SHARED:
                    flags &= flags_mask
                if flags & ~flags_mask:
                    return -errno.EOPNOTSUPP
                if prot & C.PROT_WRITE and not file.f_mode & FMODE_WRITE:
                    return -errno.EACCES
                vm_flags |= VM_SHARED | VM_MAYSHARE
                if not file.f_mode & FMODE_WRITE:
                    vm_flags &= ~(C.VM_MAYWRITE | VM_SHARED)
            elif mtype != C.MAP_PRIVATE:
                return -errno.EINVAL
            if not file.f_mode & FMODE_READ:
                return -errno.EACCES
            if inode.noexec:
                if vm_flags & C.VM_EXEC:
                    return -errno.EPERM
                vm_flags &= ~C.VM_MAYEXEC
            if file.f_op.has_mmap == file.f_op.has_mmap_prepare:
                return -errno.ENODEV  # can_mmap_file()
            if vm_flags & VM_GROWSDOWN:
                return -errno.EINVAL
        else:
            mtype = flags & C.MAP_TYPE
            if mtype == C.MAP_SHARED:
                if vm_flags & VM_GROWSDOWN:
                    return -errno.EINVAL
                pgoff = 0
                vm_flags |= VM_SHARED | VM_MAYSHARE
            elif mtype in (C.MAP_PRIVATE, C.MAP_DROPPABLE):
                if mtype == C.MAP_DROPPABLE:
                    if flags & (C.MAP_LOCKED | C.MAP_HUGETLB) or vm_flags & VM_GROWSDOWN:
                        return -errno.EINVAL
                    vm_flags |= C.VM_DROPPABLE | C.VM_NORESERVE | C.VM_WIPEONFORK | C.VM_DONTDUMP
                pgoff = addr >> PAGE_SHIFT
            else:
                return -errno.EINVAL
        if flags & C.MAP_NORESERVE and self.overcommit_memory != 2:
            vm_flags |= C.VM_NORESERVE
        ret = self.mmap_region(file, addr, length, vm_flags, pgoff)
        if ret >= 0 and (vm_flags & VM_LOCKED or flags & (C.MAP_POPULATE | C.MAP_NONBLOCK) == C.MAP_POPULATE):
            if populate is not None:
                populate.append(length)
            else:
                self.mm_populate(ret, length)
        return ret

    def mmap_region(self, file: File | None, addr: int, length: int, vm_flags: int, pgoff: int) -> int:
        """Models mm/vma.c: __mmap_region() — setup (gather the overlapped VMAs, may_expand_vm, the commit
        charge, clean-up of the old range), ``f_op->mmap_prepare`` and the profile's action prepare, the
        merge attempt with the post-hook flags, a new VMA (legacy ``->mmap``, shared-anon shmem setup),
        the driver's vm_ops/private data, __mmap_complete() and, for a new VMA of an mmap_prepare file,
        the profile's action completion — including every error path and what it leaves behind."""
        prof = self.profile
        end = addr + length
        pglen = length >> PAGE_SHIFT
        g = _Gather(addr, end)
        first = self.tree.find_intersection(addr, end)
        if first is not None:
            e = self._gather(g, first)
            if e:
                return e
            prev, nxt = g.prev, g.next
        else:
            prev, nxt = self.tree.prev(addr), self.tree.next(addr)
        if not self.may_expand_vm(vm_flags, pglen - g.nr_pages):
            self._abort_gather(g)
            return -errno.ENOMEM
        charged = 0
        transferred = 0  # VM_ACCOUNT pages of replaced VMAs whose charge the new mapping inherits
        if (vm_flags & (C.VM_NORESERVE | VM_SHARED | VM_WRITE)) == VM_WRITE:  # accountable_mapping()
            charged = pglen - g.nr_accounted
            if charged and (self.inject("vm_enough_memory") or not self.vm_enough_memory(charged)):
                self._abort_gather(g)
                return -errno.ENOMEM
            transferred = g.nr_accounted
            g.nr_accounted = 0
            for v in g.detached:
                v.vm_flags &= ~VM_ACCOUNT  # vms->nr_accounted = 0: their charge is not released
            vm_flags |= VM_ACCOUNT
        if g.detached:
            self._clean_up_area(g)

        def unwind(e: int, what: str, release_charge: bool) -> int:
            if charged and release_charge:
                self.vm_unacct_memory(charged)
            lost = (0 if release_charge else charged) + transferred
            if lost:
                self.leaked_commit += lost
                self._trace("mmap", "commit charge leaked", pages=lost)
            self._abort_gather(g)
            self._trace("mmap", f"{what} failed -{C.ERRNO_NAMES.get(-e, e)}")
            return e

        vm_file = file
        vm_ops: VmOperations | None = None
        private = None
        page_prot = 0
        action: MmapAction | None = None
        have_prepare = file is not None and file.f_op.has_mmap_prepare
        if have_prepare:
            assert file is not None
            desc = prof.new_desc(self, file, addr, end, pgoff, vm_flags)
            e = self.inject("mmap_prepare") or int(self.callback("mmap_prepare",
                                                                 lambda: file.f_op.mmap_prepare(desc)))
            if not e:
                e = (self.inject("action_prepare") if prof.prepare_validates else 0) or prof.action_prepare(self, desc)
            if e:
                if desc.vm_file is not file and desc.vm_file is not None:
                    desc.vm_file.refcount -= 1  # abort_munmap fput()s a swapped-in file
                return unwind(e, "mmap_prepare", prof.prepare_failure_releases_charge)
            pgoff, vm_file, vm_flags, page_prot = desc.pgoff, desc.vm_file, desc.vm_flags, desc.page_prot
            vm_ops, private = desc.vm_ops, desc.private_data
            if prof.has_actions:
                action = desc.action
        vma: VMA | None = None
        if prev is not None or nxt is not None:
            vma = self.merge_new_range(addr, end, vm_flags, vm_file, pgoff, prev, nxt)
        allocated_new = False
        if vma is None:
            e = self.inject("vma_alloc") or self.inject("vma_prealloc")
            if e:
                if vm_file is not file and vm_file is not None:
                    vm_file.refcount -= 1  # abort_munmap fput()s a file mmap_prepare swapped in
                return unwind(e, "VMA allocation", True)
            vma = VMA(addr, end, vm_flags, pgoff, vm_file)
            vma.page_prot = page_prot
            if vm_file is not None:
                if vm_file is file:
                    vm_file.refcount += 1  # get_file(); a swapped-in file's reference is already owned
                vma.vm_ops = DUMMY_VM_OPS
                if vm_file.f_op.has_mmap and not have_prepare:
                    legacy = vm_file
                    e = self.inject("mmap") or int(self.callback("mmap", lambda: legacy.f_op.mmap(legacy, vma),
                                                                 vma=vma))
                    if not e and prof.legacy_mapped_rejected and getattr(vma.vm_ops, "mapped", None):
                        self._trace("mmap", "WARN: legacy ->mmap installed vm_ops->mapped")
                        e = -errno.EINVAL
                    if e:
                        if vma.vm_file is not None:
                            vma.vm_file.refcount -= 1  # fput(vma->vm_file)
                        self.pt.zap(addr >> PAGE_SHIFT, end >> PAGE_SHIFT)  # unmap_region(): undo partial PTEs
                        return unwind(e, "->mmap", True)
                    vm_flags = vma.vm_flags
            elif vm_flags & VM_SHARED:
                vma.vm_file = self.new_shmem_file("/dev/zero", length)
                vma.vm_ops = SHMEM_VM_OPS
            self.tree.insert(vma)
            self.locks.vma_locks.add(vma.vm_start)
            allocated_new = True
            self._trace("mmap", "new vma", start=addr, end=end)
            if (action is not None and action.hide_from_rmap_until_complete and vma.vm_file is not None
                    and prof.has_rmap_hide):
                self.locks.lock_i_mmap(vma.vm_file.inode.ino)
                self._trace("mmap", "rmap lock held until the action completes", ino=vma.vm_file.inode.ino)
        if have_prepare:
            prof.user_vm_ops(vma, vm_ops, DUMMY_VM_OPS)
            vma.vm_private_data = private
        # __mmap_complete()
        if g.detached:
            self._complete(g)
        self.vm_stat_account(vm_flags, pglen)
        if vm_flags & VM_LOCKED:
            if vma.vm_flags & VM_SPECIAL:
                vma.vm_flags &= ~C.VM_LOCKED_MASK
            else:
                self.locked_vm += pglen
        if have_prepare and allocated_new and action is not None:
            e = prof.action_complete(self, vma, action, is_compat=False)
            if e:
                return e
        if allocated_new:
            self._trace("mmap", "established", start=addr, end=end)
        return addr

    # ------------------------------------------------------------------------------------------------
    # munmap
    @mmap_write_locked
    def sys_munmap(self, addr: int, length: int) -> int:
        """Models mm/vma.c: do_vmi_munmap() / do_vmi_align_munmap()."""
        start = addr & ULONG_MASK
        length &= ULONG_MASK
        if start & (PAGE_SIZE - 1) or start > TASK_SIZE or length > TASK_SIZE - start:
            return -errno.EINVAL
        end = start + page_align(length)
        if end == start:
            return -errno.EINVAL
        return self.do_munmap(start, end)

    def do_munmap(self, start: int, end: int) -> int:
        first = self.tree.find_intersection(start, end)
        if first is None:
            return 0
        g = _Gather(start, end)
        e = self._gather(g, first)
        if e:
            return e
        self._complete(g)
        self._trace("munmap", "unmapped", start=start, end=end)
        return 0

    # ------------------------------------------------------------------------------------------------
    # mprotect
    @mmap_write_locked
    def sys_mprotect(self, start: int, length: int, prot: int) -> int:
        """Models mm/mprotect.c: do_mprotect_pkey() with mprotect_fixup()."""
        start &= ULONG_MASK
        length &= ULONG_MASK
        prot &= 0xFFFFFFFF
        grows = prot & (C.PROT_GROWSDOWN | C.PROT_GROWSUP)
        if grows == (C.PROT_GROWSDOWN | C.PROT_GROWSUP):
            return -errno.EINVAL
        prot &= ~grows
        if start & (PAGE_SIZE - 1):
            return -errno.EINVAL
        if not length:
            return 0
        length = page_align(length)
        end = (start + length) & ULONG_MASK
        if end <= start:
            return -errno.ENOMEM
        if prot & ~(C.PROT_READ | C.PROT_WRITE | C.PROT_EXEC | C.PROT_SEM):
            return -errno.EINVAL
        vma = self.tree.find_intersection(start, end)
        if vma is None:
            return -errno.ENOMEM
        if grows & C.PROT_GROWSDOWN:
            start = vma.vm_start
            if not vma.vm_flags & VM_GROWSDOWN:
                return -errno.EINVAL
        else:
            if vma.vm_start > start:
                return -errno.ENOMEM
            if grows & C.PROT_GROWSUP:
                return -errno.EINVAL  # no VM_GROWSUP on x86
        prev = self.tree.prev(vma)
        if start > vma.vm_start:
            prev = vma
        tmp = vma.vm_start
        nstart = start
        error = 0
        cur: VMA | None = vma
        while cur is not None and cur.vm_start < end:
            if cur.vm_start != tmp:
                error = -errno.ENOMEM
                break
            newflags = C.calc_vm_prot_bits(prot) | (cur.vm_flags & ~C.VM_ACCESS_FLAGS)
            if (newflags & ~(newflags >> 4)) & C.VM_ACCESS_FLAGS:
                error = -errno.EACCES
                break
            tmp = min(cur.vm_end, end)
            r = self.mprotect_fixup(cur, prev, nstart, tmp, newflags)
            if isinstance(r, int):
                error = r
                break
            prev = r
            tmp = r.vm_end if r.vm_end <= end else end
            tmp = r.vm_end
            nstart = tmp
            cur = self.tree.next(r)
        if not error and tmp < end:
            error = -errno.ENOMEM
        return error

    def mprotect_fixup(self, vma: VMA, prev: VMA | None, start: int, end: int, newflags: int) -> VMA | int:
        """Models mm/mprotect.c: mprotect_fixup(): returns the VMA covering [start, end) or -errno."""
        if vma.vm_flags & C.VM_SEALED:
            return -errno.EPERM
        oldflags = vma.vm_flags
        if newflags == oldflags:
            return vma
        nrpages = (end - start) >> PAGE_SHIFT
        charged = 0
        if newflags & VM_WRITE:
            if not self.may_expand_vm(newflags, nrpages) and self.may_expand_vm(oldflags, nrpages):
                return -errno.ENOMEM
            if not oldflags & (VM_ACCOUNT | VM_WRITE | C.VM_HUGETLB | VM_SHARED | C.VM_NORESERVE):
                charged = nrpages
                if not self.vm_enough_memory(charged):
                    return -errno.ENOMEM
                newflags |= VM_ACCOUNT
        elif oldflags & VM_ACCOUNT and vma.is_anonymous() and vma.anon_vma is None:
            newflags &= ~VM_ACCOUNT
        r = self.vma_modify(vma, prev, start, end, newflags, op="mprotect")
        if isinstance(r, int):
            if charged:
                self.vm_unacct_memory(charged)
            return r
        if oldflags & VM_ACCOUNT and not newflags & VM_ACCOUNT:
            self.vm_unacct_memory(nrpages)
        self.vm_stat_account(oldflags, -nrpages)
        self.vm_stat_account(newflags, nrpages)
        # change_protection(): a PTE that no longer permits access stays, permissions are per VMA here.
        # A private VM_LOCKED VMA becoming writable: populate_vma_page_range() breaks COW now (not for
        # VM_LOCKONFAULT, which populate_vma_page_range() leaves alone).
        if ((oldflags & (VM_WRITE | VM_SHARED | VM_LOCKED)) == VM_LOCKED and newflags & VM_WRITE
                and not newflags & C.VM_LOCKONFAULT):
            self.mm_populate(start, end - start)
        return r

    # ------------------------------------------------------------------------------------------------
    # Pythonic syscall wrappers
    def mmap(self, addr: int | None, length: int, prot: int, flags: int, fd: int = -1, offset: int = 0) -> int:
        """mmap(2): returns the address or raises OSError."""
        r = self.sys_mmap(addr or 0, length, prot, flags, fd, offset)
        if r < 0:
            raise _err(-r)
        return r

    def munmap(self, addr: int, length: int) -> None:
        r = self.sys_munmap(addr, length)
        if r < 0:
            raise _err(-r)

    def mprotect(self, addr: int, length: int, prot: int) -> None:
        r = self.sys_mprotect(addr, length, prot)
        if r < 0:
            raise _err(-r)

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

    SYSCALLS: dict[str, str] = {"mmap": "sys_mmap", "munmap": "sys_munmap", "mprotect": "sys_mprotect",
                                "mremap": "sys_mremap", "mlock": "sys_mlock", "mlock2": "sys_mlock2",
                                "munlock": "sys_munlock", "mlockall": "sys_mlockall",
                                "munlockall": "sys_munlockall", "mseal": "sys_mseal", "brk": "sys_brk",
                                "madvise": "sys_madvise", "msync": "sys_msync"}

    def syscall(self, name: str, *args: int) -> int:
        """Raw syscall interface for emulators: returns what the kernel returns (an address, 0 or
        -errno).  Unknown names raise ``ValueError`` (ENOSYS is returned for known-but-unmodelled)."""
        meth = self.SYSCALLS.get(name)
        if meth is None:
            raise ValueError(f"syscall {name!r} is not modelled")
        fn: Callable[..., int] = getattr(self, meth)
        try:
            return fn(*[int(a) for a in args])
        except TypeError:
            return -errno.EINVAL

    # ------------------------------------------------------------------------------------------------
    # residency queries
    def rss_pages(self, vma: VMA) -> int:
        """Rss of a VMA in pages: mapped PTEs other than the zero page (and guard markers)."""
        return sum(1 for _, p in self.pt.items(vma.vm_start >> PAGE_SHIFT, vma.vm_end >> PAGE_SHIFT)
                   if p.kind not in NOT_IN_RSS)

    def pss_bytes(self, vma: VMA) -> int:
        """Pss of a VMA in bytes (PAGE_SIZE divided by each page's mapcount, as smaps rounds)."""
        total = 0
        for _, p in self.pt.items(vma.vm_start >> PAGE_SHIFT, vma.vm_end >> PAGE_SHIFT):
            if p.kind not in NOT_IN_RSS:
                total += (PAGE_SIZE << 12) // max(p.mapcount, 1)
        return total >> 12

    def mincore_vma(self, vma: VMA, start: int, end: int) -> str:
        """Models mm/mincore.c: can_do_mincore() + mincore_pte_range() for one VMA: a present PTE is 1;
        an empty PTE or a guard marker looks up the page cache when the VMA has a file (also private
        /dev/zero, whose cache is empty), else 0; a VMA without file that is not anonymous ([vvar])
        reports every page resident."""
        if vma.vm_file is None and not vma.is_anonymous():
            return "1" * ((end - start) >> PAGE_SHIFT)
        out = []
        for a in range(start, end, PAGE_SIZE):
            p = self.pt.get(a >> PAGE_SHIFT)
            if p is not None and p.kind != GUARD:
                out.append("1")
            elif vma.vm_file is not None:
                out.append("1" if vma.pgoff_at(a) in vma.vm_file.inode.pages else "0")
            else:
                out.append("0")
        return "".join(out)

    # ------------------------------------------------------------------------------------------------
    # invariants
    def validate(self) -> list[str]:
        """Models mm/vma.c: validate_mm(): raise :class:`ValidationError` on a broken invariant; returns
        informational notes (adjacent VMAs that Linux could have merged but has not, which is legal)."""
        notes: list[str] = []
        problems: list[str] = []
        prev: VMA | None = None
        total = locked = accounted = 0
        for v in self.tree:
            if self.tree.lookup(v.vm_start) is not v:
                problems.append(f"tree key does not match vm_start of {v}")
            if v.vm_start >= v.vm_end:
                problems.append(f"empty or inverted VMA {v}")
            if v.vm_start & (PAGE_SIZE - 1) or v.vm_end & (PAGE_SIZE - 1):
                problems.append(f"unaligned VMA {v}")
            if v.vm_end > TASK_SIZE:
                problems.append(f"VMA beyond TASK_SIZE {v}")
            if prev is not None and prev.vm_end > v.vm_start:
                problems.append(f"overlap: {prev} and {v}")
            if v.anon_vma is not None and v.avc_len < 1:
                problems.append(f"anon_vma without a chain: {v}")
            if v.vm_flags & VM_SHARED and not v.vm_flags & VM_MAYSHARE:
                problems.append(f"VM_SHARED without VM_MAYSHARE: {v}")
            if v.vm_flags & C.VM_LOCKONFAULT and not v.vm_flags & VM_LOCKED:
                problems.append(f"VM_LOCKONFAULT without VM_LOCKED: {v}")
            if prev is not None and prev.vm_end == v.vm_start and self._could_merge(prev, v):
                notes.append(f"mergeable neighbours left apart: {prev.vm_start:#x}-{v.vm_end:#x}")
            total += v.pages
            if v.vm_flags & VM_LOCKED:
                locked += v.pages
            if v.vm_flags & VM_ACCOUNT:
                accounted += v.pages
            prev = v
        if self.def_flags & ~(C.VM_LOCKED_MASK | C.VM_NOHUGEPAGE) or (self.def_flags & C.VM_LOCKONFAULT
                                                                     and not self.def_flags & VM_LOCKED):
            problems.append(f"def_flags {self.def_flags:#x}: only VM_LOCKED[|VM_LOCKONFAULT] (mlockall) "
                            "and VM_NOHUGEPAGE (VM_INIT_DEF_MASK)")
        if self.brk < self.start_brk:
            problems.append(f"brk {self.brk:#x} below start_brk {self.start_brk:#x}")
        if total != self.total_vm:
            problems.append(f"total_vm {self.total_vm} != sum of VMA pages {total}")
        if locked != self.locked_vm:
            problems.append(f"locked_vm {self.locked_vm} != pages of VM_LOCKED VMAs {locked}")
        if accounted + self.leaked_commit != self.committed:
            problems.append(f"committed {self.committed} != VM_ACCOUNT pages {accounted} + leaked "
                            f"{self.leaked_commit}")
        for vpn, _p in self.pt.all_items():
            owner = self.tree.lookup(vpn << PAGE_SHIFT)
            if owner is None:
                problems.append(f"PTE at {vpn << PAGE_SHIFT:#x} outside any VMA")
                break
            if _p.kind == "anon" and owner.anon_vma is None:
                # an anonymous page is always reachable through its VMA's anon_vma (rmap); page tables
                # moved by mremap must land in a VMA that has one
                problems.append(f"anonymous page at {vpn << PAGE_SHIFT:#x} in a VMA without anon_vma")
                break
            if _p.kind == GUARD and not owner.vm_flags & C.VM_MAYBE_GUARD:
                # MADV_GUARD_INSTALL sets the sticky VM_MAYBE_GUARD on every VMA it puts markers in
                problems.append(f"guard marker at {vpn << PAGE_SHIFT:#x} in a VMA without VM_MAYBE_GUARD")
                break
        if problems:
            raise ValidationError("; ".join(problems))
        return notes

    def _could_merge(self, a: VMA, b: VMA) -> bool:
        if (a.vm_flags | b.vm_flags) & VM_SPECIAL:
            return False
        return (self._mergeable_vma(a, b.vm_flags, b.vm_file, b.anon_name)
                and self._mergeable_anon(a, b, b.anon_vma) and a.vm_pgoff + a.pages == b.vm_pgoff)


C_S_IFREG = 0o100000
