"""Built-in drivers, modelled on real in-tree users of the mmap contract.

Each driver module names the kernel file it models.  Scenarios open them with the ``dev:NAME[:SIZE]`` fd
kind (model only: the live kernel runner refuses such scenarios).  :data:`REGISTRY` maps NAME to a
function ``open(mm, size) -> fd``; it is the core's device table (:data:`vmalab.fdtable.DEVICES`), so that
``MM.open_devzero()`` and friends reach a driver without the core importing it.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable

from ..fdtable import DEVICES, open_registered
from ..mm_types import MmStruct

Opener = Callable[[MmStruct, int], int]
REGISTRY: dict[str, Opener] = DEVICES


def register(name: str) -> Callable[[Opener], Opener]:
    """Decorator: make a driver available to scenarios as ``dev:NAME``."""
    def deco(fn: Opener) -> Opener:
        REGISTRY[name] = fn
        return fn
    return deco


def open_driver(mm: MmStruct, name: str, size: int = 0) -> int:
    """Open built-in driver ``name`` in ``mm``; returns the descriptor."""
    _load_all()
    return open_registered(mm, name, size)


def driver_names() -> list[str]:
    _load_all()
    return sorted(REGISTRY)


def _load_all() -> None:
    for m in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{m.name}")


_load_all()
