"""The state of an address space: ``struct mm_struct``, ``struct vm_area_struct`` and ``struct anon_vma``.

Models include/linux/mm_types.h.  :class:`MmStruct` is one record of the mm's fields and counters, with
the accounting helpers that read only them (mm/mmap.c: vm_stat_account(), may_expand_vm(),
mlock_future_ok(); mm/util.c: __vm_enough_memory()).  Every operation of the model is a function over an
``MmStruct`` in the module named after its kernel file (:mod:`vmalab.vma`, :mod:`vmalab.mmap`,
:mod:`vmalab.mprotect`, ...); :class:`vmalab.mm.MM` is the façade that names them as syscalls.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from . import constants as C
from ._mypyc import mypyc_attr
from .constants import PAGE_SHIFT, STACK_GUARD_GAP, VM_GROWSDOWN, VM_LOCKED, VM_SHARED, VM_WRITE
from .layout import TASK_UNMAPPED_BASE, mmap_base
from .locking import LockState
from .pagetable import PageTable
from .probe import Probe, TraceEvent
from .resources import ResourceTracker
from .vma_tree import VmaTree

if TYPE_CHECKING:
    from .files import File, VmOperations
    from .mmu_notifier import MmuNotifier
    from .profiles import KernelProfile

VM_STACK = VM_GROWSDOWN


class AnonVma:
    """Models ``struct anon_vma``: only its identity matters to the VMA layer (two VMAs with different
    anon_vmas never merge)."""

    __slots__ = ("id",)

    def __init__(self, ident: int) -> None:
        self.id = ident

    def __repr__(self) -> str:
        return f"AnonVma#{self.id}"


class VMA:
    """Models ``struct vm_area_struct``.

    ``avc_len`` is the length of the VMA's ``anon_vma_chain``: 1 for an anon_vma created or reused in
    this mm, more for a VMA whose anon_vma was inherited over fork ("uncowed parents"), which changes the
    merge rules (mm/vma.c: ``vma_had_uncowed_parents()``).
    """

    __slots__ = ("vm_start", "vm_end", "vm_flags", "vm_pgoff", "vm_file", "anon_vma", "avc_len", "vm_ops",
                 "vm_private_data", "anon_name", "special_name", "page_prot")

    def __init__(self, vm_start: int, vm_end: int, vm_flags: int, vm_pgoff: int,
                 vm_file: File | None = None, vm_ops: VmOperations | None = None) -> None:
        self.vm_start = vm_start
        self.vm_end = vm_end
        self.vm_flags = vm_flags
        self.vm_pgoff = vm_pgoff
        self.vm_file = vm_file
        self.anon_vma: AnonVma | None = None
        self.avc_len = 0
        self.vm_ops = vm_ops
        self.vm_private_data: Any = None
        self.anon_name: str | None = None
        self.special_name: str | None = None  # names from vm_ops->name / arch_vma_name ([vdso], ...)
        self.page_prot: int = 0

    # -- geometry -------------------------------------------------------------------------------------
    @property
    def pages(self) -> int:
        return (self.vm_end - self.vm_start) >> PAGE_SHIFT

    def pgoff_at(self, addr: int) -> int:
        """linear_page_index(): the file page offset mapped at ``addr``."""
        return self.vm_pgoff + ((addr - self.vm_start) >> PAGE_SHIFT)

    def start_gap(self) -> int:
        """vm_start_gap(): the start of the VMA including the stack guard gap below a GROWSDOWN VMA."""
        if self.vm_flags & VM_GROWSDOWN:
            gap = self.vm_start - STACK_GUARD_GAP
            return gap if gap < self.vm_start else 0
        return self.vm_start

    def is_anonymous(self) -> bool:
        """vma_is_anonymous(): no vm_ops."""
        return self.vm_ops is None

    def copy(self) -> VMA:
        """vm_area_dup(): a copy sharing the file, ops, anon_vma and private data."""
        n = VMA(self.vm_start, self.vm_end, self.vm_flags, self.vm_pgoff, self.vm_file, self.vm_ops)
        n.anon_vma = self.anon_vma
        n.avc_len = self.avc_len
        n.vm_private_data = self.vm_private_data
        n.anon_name = self.anon_name
        n.special_name = self.special_name
        n.page_prot = self.page_prot
        return n

    def __repr__(self) -> str:
        f = f" file={self.vm_file.path}" if self.vm_file else ""
        a = f" {self.anon_vma}" if self.anon_vma else ""
        return (f"VMA({self.vm_start:#x}-{self.vm_end:#x} pgoff={self.vm_pgoff:#x} "
                f"[{C.vmflags_str(self.vm_flags)}]{f}{a})")


#: include/linux/mm.h (mm/internal.h): is_exec_mapping() is ``flags & _EXEC_MASK == VM_EXEC``,
#: is_stack_mapping() ``flags & VM_STACK == VM_STACK``, is_data_mapping() ``flags & _DATA_MASK == VM_WRITE``
#: (tested inline on the accounting paths, which every mmap, munmap and mprotect takes)
_EXEC_MASK = C.VM_EXEC | VM_WRITE | VM_STACK
_DATA_MASK = VM_WRITE | VM_SHARED | VM_STACK
_RLIMIT_AS, _RLIMIT_DATA = C.RLIMIT_NAMES["RLIMIT_AS"], C.RLIMIT_NAMES["RLIMIT_DATA"]
_NO_LIMIT = (C.RLIM_INFINITY, C.RLIM_INFINITY)


@mypyc_attr(allow_interpreted_subclasses=True)  # vmalab.mm.MM
class MmStruct:
    """Models ``struct mm_struct`` of one x86-64 process: the VMA tree, the page table, the counters,
    the limits, the descriptor table the model's syscalls take fds from, and the :class:`Probe` tools
    observe it through.

    ``profile`` is the kernel profile (:mod:`vmalab.profiles`) whose driver contract the mmap path
    follows; the façade :class:`vmalab.mm.MM` looks it up by name."""

    def __init__(self, profile: KernelProfile, *, rlimit_stack: int = 8 << 20, randomize: bool = False,
                 seed: int | None = None, max_map_count: int = C.DEFAULT_MAX_MAP_COUNT,
                 mmap_min_addr: int = C.MMAP_MIN_ADDR, caps: Iterable[str] | None = None) -> None:
        self.profile = profile
        self.locks = LockState()
        self.probe = Probe()
        self.resources = ResourceTracker()  # driver references, PFNs and files (vmalab.resources)
        self.tree = VmaTree()
        self.locks.attached = lambda v: self.tree.lookup(v.vm_start) is v  # held() names attached VMAs
        self.pt = PageTable()
        # MMU notifiers (vmalab.mmu_notifier): one list, shared with the page table and the VMA tree
        self.notifiers: list[MmuNotifier] = []
        self.pt.notifiers = self.tree.notifiers = self.notifiers
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
        # The capabilities the mm's checks ask for (capable() of the task; the model keeps them here).  A bare
        # MM is root with every capability; ``caps`` names the ones it has (see set_caps()).
        self.cap_sys_rawio = True  # cap_mmap_addr(): mappings below dac_mmap_min_addr
        self.cap_ipc_lock = True  # RLIMIT_MEMLOCK: mlock, mlockall, MAP_LOCKED, secretmem, locked growth
        self.cap_sys_resource = True  # do_prlimit(): raising a hard limit
        self.cap_sys_admin = True  # __vm_enough_memory(): the admin reserve; MADV_HWPOISON / SOFT_OFFLINE
        if caps is not None:
            self.set_caps(caps)
        self.overcommit_memory = 0
        # sysctls of __vm_enough_memory() under OVERCOMMIT_NEVER (the values measured here)
        self.admin_reserve_kbytes = 8192
        self.user_reserve_kbytes = 100403
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
        self.hiwater_vm = 0  # the peak total_vm, updated before an unmap lowers it (VmPeak)
        self.leaked_commit = 0  # charges the kernel never releases (reported as kernel behaviour)
        self.leaked_locked = 0  # locked_vm pages the kernel never uncounts (mremap DONTUNMAP of a locked VMA)
        self.def_flags = 0
        self.start_brk = 0  # 0: no program break (no exec set one); brk() refuses (vmalab.brk)
        self.brk = 0
        self.start_stack = 0
        self.start_data = 0
        self.end_data = 0
        self.next_anon_vma_id = 1
        self.next_ino = 1000
        self.fdtable: dict[int, File] = {}
        # the process around the mm, for the ``fork`` pseudo-syscall of MM.syscall: children forked and not
        # yet taken out, by pid, and the next pid to hand out (1 is init)
        self.children: dict[int, MmStruct] = {}
        self.next_pid = 2

    # -- identity and lookups -------------------------------------------------------------------------
    @property
    def kernel(self) -> str:
        """The kernel profile's name (``6.18``, ``7.1``, ...)."""
        return self.profile.name

    @property
    def map_count(self) -> int:
        return len(self.tree)

    def vmas(self) -> list[VMA]:
        return list(self.tree)

    def find_vma(self, addr: int) -> VMA | None:
        return self.tree.find(addr)

    def vma_at(self, addr: int) -> VMA | None:
        return self.tree.lookup(addr)

    def rlimit(self, resource: str) -> int:
        return self.rlimits.get(C.RLIMIT_NAMES[resource], (C.RLIM_INFINITY, C.RLIM_INFINITY))[0]

    # -- capabilities ---------------------------------------------------------------------------------
    @property
    def caps(self) -> frozenset[str]:
        """The modelled capabilities (``C.MODELLED_CAPS``) the mm's task has."""
        return frozenset(name for name in C.MODELLED_CAPS if getattr(self, name.lower()))

    def set_caps(self, caps: Iterable[str]) -> None:
        """Give the task exactly the modelled capabilities named in ``caps`` (other names in ``C.CAP_NAMES``
        are accepted and change nothing the model checks).  ``ValueError`` for an unknown name."""
        names = set(caps) if not isinstance(caps, str) else {caps}
        unknown = sorted(n for n in names if n not in C.CAP_NAMES)
        if unknown:
            raise ValueError(f"unknown capability {unknown[0]!r} (known: CAP_IPC_LOCK, CAP_SYS_RAWIO, ...)")
        for name in C.MODELLED_CAPS:
            setattr(self, name.lower(), name in names)

    def drop_cap(self, name: str) -> None:
        """capset() without ``name`` in the effective, permitted and inheritable sets (the scenario op
        ``capdrop``).  ``ValueError`` for an unknown name."""
        if name not in C.CAP_NAMES:
            raise ValueError(f"unknown capability {name!r}")
        if name in C.MODELLED_CAPS:
            setattr(self, name.lower(), False)

    # -- high-water marks (include/linux/mm.h) ---------------------------------------------------------
    def update_hiwater_vm(self) -> None:
        """Models update_hiwater_vm(): called before an unmap lowers total_vm."""
        if self.total_vm > self.hiwater_vm:
            self.hiwater_vm = self.total_vm

    @property
    def hiwater_rss(self) -> int:
        """mm->hiwater_rss: raised by update_hiwater_rss() before a zap lowers the Rss counters (the page
        table keeps it, as it keeps the counters)."""
        return self.pt.hiwater_rss

    def new_anon_vma(self) -> AnonVma:
        """anon_vma_alloc(): a new anon_vma identity."""
        a = AnonVma(self.next_anon_vma_id)
        self.next_anon_vma_id += 1
        return a

    def alloc_ino(self) -> int:
        """get_next_ino(): a new inode number."""
        self.next_ino += 1
        return self.next_ino

    # -- the probe --------------------------------------------------------------------------------------
    def inject(self, point: str) -> int:
        """A fallible point of the modelled paths: -errno when the probe's fault plan fails this hit."""
        return self.probe.inject(point)

    def callback(self, name: str, fn: Callable[[], Any], vma: VMA | None = None, desc: Any = None) -> Any:
        """Call a driver callback (``mmap_prepare``, ``->open``, ``->close``, hooks ...), tracing it with
        the locks held at that moment, as the kernel would hold them, and handing it to the observer.  The
        trace line is labelled with the syscall that caused the call (``mprotect: open``)."""
        p = self.probe
        if p.tracing:
            p.trace(p.syscall or "-", name, locks=" ".join(sorted(self.locks.held())) or "-")
        if p.observer is not None:
            return p.observer.call(name, fn, vma, desc)
        return fn()

    # Names of the probe's fields from before it was one object (kept for this release).
    @property
    def trace(self) -> list[TraceEvent]:
        return self.probe.events

    @trace.setter
    def trace(self, events: list[TraceEvent]) -> None:
        self.probe.events = events

    @property
    def tracing(self) -> bool:
        return self.probe.tracing

    @tracing.setter
    def tracing(self, on: bool) -> None:
        self.probe.tracing = on

    @property
    def fail_plan(self) -> dict[str, tuple[int, int]]:
        return self.probe.fail_plan

    @fail_plan.setter
    def fail_plan(self, plan: dict[str, tuple[int, int]]) -> None:
        self.probe.fail_plan = plan

    @property
    def fail_hits(self) -> dict[str, int]:
        return self.probe.fail_hits

    @fail_hits.setter
    def fail_hits(self, hits: dict[str, int]) -> None:
        self.probe.fail_hits = hits

    @property
    def lock_events(self) -> list[tuple[str, str]]:
        return self.probe.lock_events

    # -- accounting (mm/mmap.c, mm/util.c) ---------------------------------------------------------------
    def vm_stat_account(self, flags: int, npages: int) -> None:
        """Models mm/mmap.c: vm_stat_account()."""
        self.total_vm += npages
        if flags & _EXEC_MASK == C.VM_EXEC:  # is_exec_mapping(), is_stack_mapping(), is_data_mapping()
            self.exec_vm += npages
        elif flags & VM_STACK == VM_STACK:
            self.stack_vm += npages
        elif flags & _DATA_MASK == VM_WRITE:
            self.data_vm += npages

    def may_expand_vm(self, flags: int, npages: int) -> bool:
        """Models mm/mmap.c: may_expand_vm() (RLIMIT_AS, and RLIMIT_DATA for data mappings)."""
        limits = self.rlimits
        if self.total_vm + npages > limits.get(_RLIMIT_AS, _NO_LIMIT)[0] >> PAGE_SHIFT:
            return False
        if flags & _DATA_MASK == VM_WRITE:  # is_data_mapping()
            if self.data_vm + npages > limits.get(_RLIMIT_DATA, _NO_LIMIT)[0] >> PAGE_SHIFT:
                return False
        return True

    def vm_enough_memory(self, pages: int) -> bool:
        """Models mm/util.c: __vm_enough_memory() (with security/commoncap.c: cap_vm_enough_memory(), which
        asks for CAP_SYS_ADMIN): the heuristic (0) and always (1) policies; under never (2) the charge
        must stay below the commit limit (overcommit_ratio 50, no swap), less the admin reserve for a
        task without CAP_SYS_ADMIN and the user reserve (total_vm / 32, at most user_reserve_kbytes).
        ``committed`` stands for the system's vm_committed_as."""
        if self.overcommit_memory == 1:
            ok = True
        elif self.overcommit_memory == 2:
            allowed = self.totalram_pages * 50 // 100
            if not self.cap_sys_admin:
                allowed -= self.admin_reserve_kbytes >> (PAGE_SHIFT - 10)
            allowed -= min(self.total_vm // 32, self.user_reserve_kbytes >> (PAGE_SHIFT - 10))
            ok = self.committed + pages < allowed
        else:
            ok = pages <= self.totalram_pages
        if ok:
            self.committed += pages
        return ok

    def vm_unacct_memory(self, pages: int) -> None:
        """Models mm/util.c: vm_unacct_memory()."""
        self.committed -= pages

    def mlock_future_ok(self, flags: int, length: int) -> bool:
        """Models mm/mmap.c: mlock_future_ok()."""
        if not flags & VM_LOCKED or self.cap_ipc_lock:
            return True
        return (length >> PAGE_SHIFT) + self.locked_vm <= self.rlimit("RLIMIT_MEMLOCK") >> PAGE_SHIFT

    def can_do_mlock(self) -> bool:
        """Models mm/mlock.c: can_do_mlock()."""
        return self.rlimit("RLIMIT_MEMLOCK") != 0 or self.cap_ipc_lock
