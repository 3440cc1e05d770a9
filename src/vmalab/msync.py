"""msync(2).

Models mm/msync.c.  Not implemented yet: the scenario executor reports ops that need it as unsupported.
"""

from __future__ import annotations


class MsyncMixin:
    """The msync part of :class:`vmalab.mm.MM` (see the module docstring)."""
