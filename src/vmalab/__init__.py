"""vmalab: an executable, Linux-faithful model of a process address space."""

__version__ = "0.1.0"

from . import drivers  # noqa: E402,F401  (the built-in drivers register their file kinds and devices)
from .faults import Fault  # noqa: E402
from .mm import MM, ValidationError  # noqa: E402

__all__ = ["MM", "Fault", "ValidationError", "__version__"]
