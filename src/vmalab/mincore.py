"""mincore(2).

Models mm/mincore.c.  Not implemented yet: the scenario executor reports ops that need it as unsupported.
"""

from __future__ import annotations


class MincoreMixin:
    """The mincore part of :class:`vmalab.mm.MM` (see the module docstring)."""
