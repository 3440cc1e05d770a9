"""vmalab: an executable, Linux-faithful model of a process address space."""

__version__ = "0.1.0"

from .mm import MM, Fault, ValidationError  # noqa: E402

__all__ = ["MM", "Fault", "ValidationError", "__version__"]
