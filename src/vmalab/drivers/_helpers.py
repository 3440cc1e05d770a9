"""Pieces several built-in drivers share: x86 page-protection cache modes and the per-profile way a
driver filters the errno of a failed action.

Models arch/x86/include/asm/pgtable_types.h (_PAGE_PWT, _PAGE_PCD, _PAGE_PAT and the cache-mode mask),
pgprot_noncached() / pgprot_writecombine() of arch/x86/include/asm/pgtable.h, and the driver side of
include/linux/mm_types.h: struct mmap_action error filtering (``error_hook`` 6.19–7.1, ``error_override``
~7.2, the experimental single ``finish`` hook).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..driver import ProfileFeatureError

if TYPE_CHECKING:
    from ..driver import VmAreaDesc

_PAGE_PWT = 1 << 3
_PAGE_PCD = 1 << 4
_PAGE_PAT = 1 << 7
_PAGE_CACHE_MASK = _PAGE_PWT | _PAGE_PCD | _PAGE_PAT


def pgprot_noncached(prot: int) -> int:
    """pgprot_noncached(): cache mode UC- (PCD set)."""
    return (prot & ~_PAGE_CACHE_MASK) | _PAGE_PCD


def pgprot_writecombine(prot: int) -> int:
    """pgprot_writecombine(): cache mode WC (PWT set with the default PAT layout)."""
    return (prot & ~_PAGE_CACHE_MASK) | _PAGE_PWT


def filter_action_error(desc: VmAreaDesc, err: int) -> None:
    """Report ``err`` instead of whatever error the action hits, in the way the profile offers:
    ``error_hook`` (6.19–7.1, seed-v3), ``error_override`` (~7.2) or ``finish`` (experimental)."""
    prof = desc.profile
    action = desc.action  # ProfileFeatureError on a kernel without actions
    if prof.has_error_override:
        action.error_override = err
    elif prof.has_hooks:
        action.error_hook = lambda _e: err
    elif prof.has_finish_hook:
        action.finish = lambda e: err if e else 0
    else:
        raise ProfileFeatureError(f"kernel {prof.name} has no way to filter an action's error")
