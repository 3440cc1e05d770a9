"""mlock(2), mlock2(2), munlock(2), mlockall(2), munlockall(2).

Models mm/mlock.c.  Not implemented yet: the scenario executor reports ops that need it as unsupported.
"""

from __future__ import annotations


class MlockMixin:
    """The mlock part of :class:`vmalab.mm.MM` (see the module docstring)."""
