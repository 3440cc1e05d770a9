"""Built-in drivers, modelled on real in-tree users of the mmap contract.

Each driver module names the kernel file it models.  Scenarios open them with the ``dev:NAME[:SIZE]`` fd
kind (model only: the live kernel runner refuses such scenarios).  :data:`REGISTRY` maps NAME to a
function ``open(mm, size) -> fd``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..mm import MM

Opener = Callable[["MM", int], int]
REGISTRY: dict[str, Opener] = {}


def register(name: str) -> Callable[[Opener], Opener]:
    """Decorator: make a driver available to scenarios as ``dev:NAME``."""
    def deco(fn: Opener) -> Opener:
        REGISTRY[name] = fn
        return fn
    return deco


def open_driver(mm: MM, name: str, size: int = 0) -> int:
    """Open built-in driver ``name`` in ``mm``; returns the descriptor."""
    _load_all()
    try:
        opener = REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown built-in driver {name!r} (known: {', '.join(sorted(REGISTRY))})") from None
    return opener(mm, size)


def driver_names() -> list[str]:
    _load_all()
    return sorted(REGISTRY)


def _load_all() -> None:
    import importlib
    import pkgutil
    for m in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{m.name}")
