"""vmalab: an executable, Linux-faithful model of a process address space."""

__version__ = "0.1.0"

from .faults import Fault  # noqa: E402
from .mm import MM, ValidationError  # noqa: E402

__all__ = ["MM", "Fault", "ValidationError", "__version__"]
