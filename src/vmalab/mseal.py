"""mseal(2).

Models mm/mseal.c.  Not implemented yet: the scenario executor reports ops that need it as unsupported.
"""

from __future__ import annotations


class MsealMixin:
    """The mseal part of :class:`vmalab.mm.MM` (see the module docstring)."""
