"""mremap(2): shrink, expand in place, move (MREMAP_MAYMOVE, MREMAP_FIXED, MREMAP_DONTUNMAP).

Models mm/mremap.c.  Not implemented yet: the scenario executor reports ops that need it as unsupported.
"""

from __future__ import annotations


class MremapMixin:
    """The mremap part of :class:`vmalab.mm.MM` (see the module docstring)."""
