"""brk(2).

Models mm/mmap.c: SYSCALL_DEFINE1(brk) and mm/vma.c: do_brk_flags().
Not implemented yet: the scenario executor reports ops that need it as unsupported.
"""

from __future__ import annotations


class BrkMixin:
    """The brk part of :class:`vmalab.mm.MM` (see the module docstring)."""
