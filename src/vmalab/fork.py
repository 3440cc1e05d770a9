"""fork (a copy of the address space) and teardown.

Models kernel/fork.c / mm/mmap.c: dup_mmap() and exit_mmap().
Not implemented yet: the scenario executor reports ops that need it as unsupported.
"""

from __future__ import annotations


class ForkMixin:
    """The fork part of :class:`vmalab.mm.MM` (see the module docstring)."""
