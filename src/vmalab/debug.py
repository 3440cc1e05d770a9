"""The invariant checker: mm/vma.c validate_mm() and mm/debug.c, for the model.

:func:`validate_mm` checks what must hold after every operation (the tree, each VMA's geometry and flag
rules, the counters against the VMAs, page-table entries against their VMAs) and raises
:class:`ValidationError` with every broken invariant.  It also returns notes on legal but noteworthy
states: adjacent VMAs Linux could have merged but has not.
"""

from __future__ import annotations

from . import constants as C
from ._mypyc import mypyc_attr
from .constants import PAGE_SHIFT, PAGE_SIZE, TASK_SIZE, VM_ACCOUNT, VM_LOCKED, VM_MAYSHARE, VM_SHARED
from .mm_types import VMA, MmStruct
from .pagetable import ANON, GUARD
from .vma import could_merge


@mypyc_attr(native_class=False)
class ValidationError(AssertionError):
    """``validate_mm()`` found a broken invariant."""


def validate_mm(mm: MmStruct) -> list[str]:
    """Models mm/vma.c: validate_mm(): raise :class:`ValidationError` on a broken invariant; returns
    informational notes (adjacent VMAs that Linux could have merged but has not, which is legal)."""
    notes: list[str] = []
    problems: list[str] = []
    prev: VMA | None = None
    total = locked = accounted = 0
    for v in mm.tree:
        if mm.tree.lookup(v.vm_start) is not v:
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
        if prev is not None and prev.vm_end == v.vm_start and could_merge(prev, v):
            notes.append(f"mergeable neighbours left apart: {prev.vm_start:#x}-{v.vm_end:#x}")
        total += v.pages
        if v.vm_flags & VM_LOCKED:
            locked += v.pages
        if v.vm_flags & VM_ACCOUNT:
            accounted += v.pages
        prev = v
    if mm.def_flags & ~(C.VM_LOCKED_MASK | C.VM_NOHUGEPAGE) or (mm.def_flags & C.VM_LOCKONFAULT
                                                               and not mm.def_flags & VM_LOCKED):
        problems.append(f"def_flags {mm.def_flags:#x}: only VM_LOCKED[|VM_LOCKONFAULT] (mlockall) "
                        "and VM_NOHUGEPAGE (VM_INIT_DEF_MASK)")
    if mm.brk < mm.start_brk:
        problems.append(f"brk {mm.brk:#x} below start_brk {mm.start_brk:#x}")
    if total != mm.total_vm:
        problems.append(f"total_vm {mm.total_vm} != sum of VMA pages {total}")
    if locked + mm.leaked_locked != mm.locked_vm:
        problems.append(f"locked_vm {mm.locked_vm} != pages of VM_LOCKED VMAs {locked} + leaked {mm.leaked_locked}")
    if accounted + mm.leaked_commit != mm.committed:
        problems.append(f"committed {mm.committed} != VM_ACCOUNT pages {accounted} + leaked {mm.leaked_commit}")
    for vpn, page in mm.pt.all_items():
        owner = mm.tree.lookup(vpn << PAGE_SHIFT)
        if owner is None:
            problems.append(f"PTE at {vpn << PAGE_SHIFT:#x} outside any VMA")
            break
        if page.kind == ANON and owner.anon_vma is None:
            # an anonymous page is always reachable through its VMA's anon_vma (rmap); page tables
            # moved by mremap must land in a VMA that has one
            problems.append(f"anonymous page at {vpn << PAGE_SHIFT:#x} in a VMA without anon_vma")
            break
        if page.kind == GUARD and not owner.vm_flags & C.VM_MAYBE_GUARD:
            # MADV_GUARD_INSTALL sets the sticky VM_MAYBE_GUARD on every VMA it puts markers in
            problems.append(f"guard marker at {vpn << PAGE_SHIFT:#x} in a VMA without VM_MAYBE_GUARD")
            break
    problems.extend(mm.tree.check_gaps())  # the gap search's summaries are never stale
    if problems:
        raise ValidationError("; ".join(problems))
    return notes
