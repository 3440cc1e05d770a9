"""madvise(2) and process_madvise(2).

Models mm/madvise.c.  Not implemented yet: the scenario executor reports ops that need it as unsupported.
"""

from __future__ import annotations


class MadviseMixin:
    """The madvise part of :class:`vmalab.mm.MM` (see the module docstring)."""
