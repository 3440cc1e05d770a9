"""fork (a copy of the address space) and teardown.

Models kernel/fork.c: copy_mm() / dup_mm() / mm_init(), mm/mmap.c: dup_mmap() (moved there from
kernel/fork.c in 6.18), mm/memory.c: copy_page_range() / vma_needs_copy(), mm/rmap.c: anon_vma_fork(),
kernel/fork.c: dup_fd() (the descriptor table) and mm/mmap.c: exit_mmap().

What fork does to each VMA of the parent, in address order:

* ``VM_DONTCOPY``: skipped; the child has a hole there and its counters are reduced (vm_stat_account).
* otherwise vm_area_dup(): same range, flags, pgoff, file (one more reference), name, seal;
  ``VM_LOCKED``/``VM_LOCKONFAULT`` are cleared (mlock is not inherited);
* ``VM_WIPEONFORK``: the copy gets no anon_vma and no pages (the child reads zeroes);
* a VMA with an anon_vma gets a NEW anon_vma whose chain also links the parent's (``avc_len`` one longer,
  so it no longer merges with anon_vma-less neighbours); one without stays without;
* PTEs are copied only where a fault could not rebuild them (vma_needs_copy(): an anon_vma, or a flag of
  ``VM_COPY_ON_FORK`` such as PFN maps and guard regions).  Private pages then map the same
  :class:`~vmalab.pagetable.Page` in both mms; ``Page.mapcount`` counts PTEs across mms, and a write
  fault on a page mapped more than once copies it (copy-on-write, see
  :func:`vmalab.faults.handle_mm_fault`).

Shared and file-backed VMAs without an anon_vma keep their data in the page cache: the child's Rss is 0
until it faults.  ``File`` objects (like ``struct file``) are shared between parent and child; ``VMA``
objects and page tables never are.
"""

from __future__ import annotations

import errno
import functools
import random
from typing import TypeVar

from . import constants as C
from .constants import PAGE_SHIFT, VM_ACCOUNT, VM_LOCKED_MASK
from .files import fput
from .mm_types import VMA, MmStruct
from .mmu_notifier import invalidate_range, mmu_notifier_release
from .probe import Probe
from .vma import release_vma, vma_dup_references

__all__ = ["FORK_COPIED", "FORK_REBUILT", "VM_COPY_ON_FORK", "VM_INIT_DEF_MASK", "copy_page_range", "exit_files",
           "exit_mmap", "fork", "vma_needs_copy"]

#: Flags that make fork copy a VMA's PTEs even without an anon_vma (include/linux/mm.h in 6.18.y:
#: VM_COPY_ON_FORK).  Guard regions are markers in the page table, which a fault cannot recreate.
VM_COPY_ON_FORK = C.VM_PFNMAP | C.VM_MIXEDMAP | C.VM_UFFD_WP | C.VM_MAYBE_GUARD

#: mm_init(): the only def_flags a child inherits (VM_INIT_DEF_MASK = VM_NOHUGEPAGE, set by
#: PR_SET_THP_DISABLE).  mlockall(MCL_FUTURE)'s VM_LOCKED is not inherited.
VM_INIT_DEF_MASK = C.VM_NOHUGEPAGE

#: MmStruct fields fork copies from the parent as they are (values, or objects shared like ``profile``).
FORK_COPIED = frozenset({
    "profile", "randomize", "mmap_base", "mmap_legacy_base", "topdown", "mmap_min_addr", "dac_mmap_min_addr",
    "max_map_count", "cap_sys_rawio", "cap_ipc_lock", "cap_sys_resource", "cap_sys_admin",  # the task's creds
    "overcommit_memory", "admin_reserve_kbytes", "user_reserve_kbytes", "totalram_pages", "total_vm",
    "data_vm", "exec_vm", "stack_vm", "start_brk", "brk", "start_stack", "start_data", "end_data",
    "next_anon_vma_id", "next_ino", "ra_pages", "anon_vma_name_enabled",
})
#: MmStruct fields fork builds anew for the child (see :func:`fork`).
FORK_REBUILT = frozenset({
    "tree", "pt", "rng", "rlimits", "fdtable", "locked_vm", "committed", "leaked_commit", "leaked_locked", "def_flags",
    "hiwater_vm",  # dup_mm(): the child's total_vm after dup_mmap()
    "locks",  # a new mm: no locks held
    "probe",  # a new probe (tracing as the parent's): no events, no fault-injection plan, no observer
    "resources",  # the child's own references are tracked afresh
    "children", "next_pid",  # a new process: no children of its own yet
    "notifiers",  # MMU notifiers subscribe to one mm: the child has none (vmalab.mmu_notifier)
})

M = TypeVar("M", bound=MmStruct)


def fork(mm: M) -> M | int:
    """fork(2) as seen by the address space: returns the child's new, independent mm, of the same class
    as ``mm``, or -errno.

    Models kernel/fork.c: dup_mm() (the mm_struct copied, then mm_init() resets) and
    mm/mmap.c: dup_mmap().  -ENOMEM when the commit charge of an accountable VMA fails (the partly built
    child is torn down, the parent is unchanged)."""
    child = _dup_mm_struct(mm)
    # dup_mmap() holds the parent's mmap lock for write, and the child's (nested)
    with mm.locks.mmap_write(), child.locks.mmap_write():
        for vma in mm.tree:
            if vma.vm_flags & C.VM_DONTCOPY:
                # the child's counters came from the parent: take the skipped VMA back out
                child.vm_stat_account(vma.vm_flags, -vma.pages)
                continue
            if vma.vm_flags & VM_ACCOUNT and not child.vm_enough_memory(vma.pages):
                _abort_fork(child, vma)
                mm.probe.trace("fork", "dup_mmap failed: cannot charge an accountable VMA", start=vma.vm_start)
                return -errno.ENOMEM
            mm.locks.vma_start_write(vma)  # dup_mmap() write-locks each parent VMA it copies
            tmp = _vm_area_dup_for_fork(child, vma)
            child.tree.insert(tmp)
            if not tmp.vm_flags & C.VM_WIPEONFORK:
                copy_page_range(mm, child, tmp, vma)
    mm.probe.trace("fork", "dup_mmap", vmas=child.map_count)
    child.hiwater_vm = child.total_vm  # dup_mm(); hiwater_rss: the new page table's own peak
    return child


def _dup_mm_struct(mm: M) -> M:
    """Models dup_mm(): a new mm_struct holding the parent's values, then mm_init()'s resets
    (no VMAs, locked_vm 0, def_flags masked) and dup_fd() for the descriptor table."""
    cls = type(mm)
    child = cls.__new__(cls)
    MmStruct.__init__(child, mm.profile, rlimit_stack=mm.rlimit("RLIMIT_STACK"), max_map_count=mm.max_map_count,
                      mmap_min_addr=mm.mmap_min_addr)
    for name in FORK_COPIED:
        setattr(child, name, getattr(mm, name))
    child.rng = random.Random()
    child.rng.setstate(mm.rng.getstate())
    child.rlimits = dict(mm.rlimits)  # signal->rlim is copied by copy_signal()
    child.locked_vm = 0
    child.committed = 0  # charged VMA by VMA in fork()
    child.leaked_commit = 0
    child.leaked_locked = 0
    child.def_flags = mm.def_flags & VM_INIT_DEF_MASK
    child.probe = Probe(tracing=mm.probe.tracing)
    child.fdtable = dict(mm.fdtable)  # dup_fd(): the same struct files, one more reference each
    for f in child.fdtable.values():
        f.refcount += 1
    return child


def _vm_area_dup_for_fork(child: MmStruct, vma: VMA) -> VMA:
    """Models the per-VMA part of dup_mmap(): vm_area_dup(), clearing VM_LOCKED_MASK,
    anon_vma_fork() (or no anon_vma for VM_WIPEONFORK), then get_file() and vm_ops->open() on the
    child's copy (:func:`vmalab.vma.vma_dup_references` with the child, whose VMA it is)."""
    tmp = vma.copy()
    tmp.vm_flags &= ~VM_LOCKED_MASK
    if tmp.vm_flags & C.VM_WIPEONFORK:
        tmp.anon_vma = None
        tmp.avc_len = 0
    elif vma.anon_vma is not None:
        # anon_vma_fork(): the child's chain holds the parent's chain plus its own new anon_vma.
        tmp.anon_vma = child.new_anon_vma()
        tmp.avc_len = vma.avc_len + 1
    vma_dup_references(child, tmp)
    return tmp


def vma_needs_copy(dst: VMA, src: VMA) -> bool:
    """Models mm/memory.c: vma_needs_copy(): copy the PTEs only where a fault could not rebuild
    them (anonymous pages, PFN maps, guard markers)."""
    return bool(dst.vm_flags & VM_COPY_ON_FORK) or src.anon_vma is not None


def copy_page_range(mm: MmStruct, child: MmStruct, dst: VMA, src: VMA) -> None:
    """Models mm/memory.c: copy_page_range(): the child's PTEs (of ``dst``) map the parent's pages (of
    ``src`` in ``mm``).  For a COW mapping both PTEs become read-only, which the model expresses through
    ``Page.mapcount`` > 1 (a write fault then copies the page).  For a COW mapping (is_cow_mapping():
    private, may write) the parent's range is invalidated for its MMU notifiers
    (MMU_NOTIFY_PROTECTION_PAGE): a writable translation an emulator holds must fault again."""
    if not vma_needs_copy(dst, src):
        return
    if mm.notifiers and src.vm_flags & (C.VM_SHARED | C.VM_MAYWRITE) == C.VM_MAYWRITE:
        invalidate_range(mm, src.vm_start, src.vm_end, "protect")
    for vpn, page in mm.pt.items(src.vm_start >> PAGE_SHIFT, src.vm_end >> PAGE_SHIFT):
        child.pt.set(vpn, page)


def _abort_fork(child: MmStruct, failed_at: VMA) -> None:
    """dup_mmap()'s fail_nomem path for the child: tear down what was copied.  The kernel then
    frees the whole half-built mm; the model releases everything it took."""
    child.probe.trace("fork", "dup_mmap failed: commit charge", start=failed_at.vm_start)
    exit_mmap(child)
    exit_files(child)


def exit_mmap(mm: MmStruct) -> None:
    """Models mm/mmap.c: exit_mmap(): unmap every VMA (unmap_vmas() drops each PTE's page
    reference), call vm_ops->close, drop the file references and release the commit charge
    (vm_unacct_memory()).  The counters (total_vm, locked_vm, ...) go back to zero; charges the
    kernel leaked earlier (``leaked_commit``) stay.  The MMU notifiers are released first
    (mmu_notifier_release()) and hear nothing of the teardown."""
    if mm.notifiers:
        mmu_notifier_release(mm)
    with mm.locks.mmap_write():  # remove_vma() runs under mmap_write_lock()
        for vma in list(mm.tree):
            mm.pt.zap(vma.vm_start >> PAGE_SHIFT, vma.vm_end >> PAGE_SHIFT)
            if vma.vm_ops is not None:
                mm.callback("close", functools.partial(vma.vm_ops.close, vma), vma=vma)
            release_vma(mm, vma)
            mm.tree.erase(vma)
    # PTEs outside any VMA cannot exist (validate() checks it); free_pgtables() leaves none.
    for vpn, _page in mm.pt.all_items():
        mm.pt.zap(vpn, vpn + 1)
    mm.probe.trace("exit", "exit_mmap")


def exit_files(mm: MmStruct) -> None:
    """Models kernel/exit.c: exit_files() -> put_files_struct(): close every descriptor (drop the
    reference ``dup_fd()`` took)."""
    files = list(mm.fdtable.values())
    mm.fdtable.clear()
    for f in files:
        fput(mm, f)
