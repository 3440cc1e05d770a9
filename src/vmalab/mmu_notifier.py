"""MMU notifiers: listeners that keep a secondary MMU (an emulator's TLB or region mirror) in step with the mm.

Models include/linux/mmu_notifier.h and mm/mmu_notifier.c.  A KVM guest, an IOMMU with shared virtual
addressing or an emulator keeps its own translations of the mm's page tables; the kernel tells it, through
``mmu_notifier_invalidate_range_start()``/``_end()``, whenever translations of a range may have become
stale, so it never has to diff the address space.  vmalab does the same for its adapters
(:mod:`vmalab.adapters`):

- ``invalidate_range(start, end, event)``: translations of ``[start, end)`` may be stale; drop them.
  ``event`` says why, as ``enum mmu_notifier_event`` does: ``"unmap"`` (MMU_NOTIFY_UNMAP: munmap,
  MAP_FIXED over mappings, brk shrink, mremap's unmap of the destination or shrink; one call for the
  whole requested range, holes included, as unmap_vmas() makes it), ``"zap"`` (MMU_NOTIFY_CLEAR:
  zap_page_range_single() of MADV_DONTNEED/MADV_FREE/MADV_REMOVE, guard-region installs, truncation),
  ``"protect"`` (MMU_NOTIFY_PROTECTION_VMA: mprotect's change_protection() of each VMA part whose flags
  changed; MMU_NOTIFY_PROTECTION_PAGE: fork's copy_page_range() write-protecting the parent's COW
  mappings), ``"move"`` (move_page_tables() of mremap: the source range).  The call is made after the
  model's state changed (where the kernel's ``_end`` runs), so reading the mm in the callback sees the
  new state.
- ``pte_set(vpn, page)``: a PTE was installed or replaced (a fault, fault-around, COW, population, a
  driver's remap, a moved PTE at its new place, a guard marker).  The kernel has no such callback any
  more (``change_pte()``, called by ``set_pte_at_notify()`` for COW and KSM replacements, was removed in
  Linux 6.9, commit 997308f9ae65): secondary MMUs fault translations in on demand.  vmalab keeps it so
  that a region mirror can track residency per page; a replaced PTE (COW) is reported by ``pte_set``
  alone: drop the old translation of ``vpn``.
- ``vma_changed(start, end)`` (vmalab extension, no kernel counterpart): VMAs over ``[start, end)`` were
  created, removed, split, merged, moved or re-flagged.  It is called as each change is made, so the
  tree may be in the middle of an operation: note the range and read ``mm.tree.range(start, end)`` after
  the call that caused it returned.
- ``release()``: ``__mmu_notifier_release()``, the first thing exit_mmap() does: the mm is being torn
  down.  As in the kernel, the notifiers are unhooked then, so the teardown itself sends nothing more.

With no notifier registered the hot paths pay one falsy check (``if mm.notifiers:``).  A notifier may be
registered on several mms; a fork child starts with none (the kernel's subscriptions are per mm, and
dup_mmap() copies none).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .mm_types import MmStruct
    from .pagetable import Page

EVENTS = ("unmap", "zap", "protect", "move")


class MmuNotifier:
    """Models ``struct mmu_notifier`` with its ``struct mmu_notifier_ops``: override what you need; every
    method is a no-op here."""

    def invalidate_range(self, start: int, end: int, event: str) -> None:
        """Translations of ``[start, end)`` may be stale (``event``: ``unmap``, ``zap``, ``protect``,
        ``move``): drop them (``invalidate_range_start()``/``_end()``)."""

    def pte_set(self, vpn: int, page: Page) -> None:
        """The PTE of virtual page number ``vpn`` now maps ``page`` (installed or replaced)."""

    def vma_changed(self, start: int, end: int) -> None:
        """VMAs over ``[start, end)`` were created, removed, split, merged, moved or re-flagged."""

    def release(self) -> None:
        """``ops->release()``: the mm is torn down (exit_mmap())."""


def mmu_notifier_register(mm: MmStruct, n: MmuNotifier) -> None:
    """Models mm/mmu_notifier.c: mmu_notifier_register(): subscribe ``n`` to ``mm``'s events (once; a second
    registration of the same notifier is ignored)."""
    if any(x is n for x in mm.notifiers):
        return
    mm.notifiers.append(n)
    attach(mm)


def mmu_notifier_unregister(mm: MmStruct, n: MmuNotifier) -> None:
    """Models mmu_notifier_unregister(): ``n`` gets no more events from ``mm`` (no ``release()`` call: the
    kernel calls ->release() from unregister only if the mm is not yet torn down, to let the user flush;
    vmalab's notifiers have nothing in flight)."""
    mm.notifiers[:] = [x for x in mm.notifiers if x is not n]


def attach(mm: MmStruct) -> None:
    """Point the page table and the VMA tree at the mm's notifier list (after either was replaced)."""
    mm.pt.notifiers = mm.notifiers
    mm.tree.notifiers = mm.notifiers


def invalidate_range(mm: MmStruct, start: int, end: int, event: str) -> None:
    """``mmu_notifier_invalidate_range_start()``/``_end()`` of ``[start, end)``; call only when
    ``mm.notifiers`` is not empty."""
    if start < end:
        for n in list(mm.notifiers):
            n.invalidate_range(start, end, event)


def vma_changed(mm: MmStruct, start: int, end: int) -> None:
    """Tell the notifiers that the VMAs over ``[start, end)`` changed in place (re-flagged: the tree
    reports insertions, removals and resizes itself); call only when ``mm.notifiers`` is not empty."""
    for n in list(mm.notifiers):
        n.vma_changed(start, end)


def mmu_notifier_release(mm: MmStruct) -> None:
    """Models ``__mmu_notifier_release()``: every notifier's ``release()``, then unhook them all
    (hlist_del_init_rcu()): the teardown that follows sends nothing."""
    subs = list(mm.notifiers)
    mm.notifiers.clear()
    for n in subs:
        n.release()
