"""The one mypyc annotation the package uses, for the optional compiled build (``tools/build_mypyc.py``).

``mypyc_attr`` is ``mypy_extensions.mypyc_attr`` to the type checker and to mypyc, which reads it at compile
time (``native_class=False`` keeps a class an interpreted class, as mypyc cannot compile subclasses of most
built-in types such as ``RuntimeError``; ``allow_interpreted_subclasses=True`` lets uncompiled modules
subclass a compiled class).  At run time it is a do-nothing decorator, so the package does not depend on
mypy_extensions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mypy_extensions import mypyc_attr
else:
    def mypyc_attr(*args, **kwargs):
        return lambda cls: cls

__all__ = ["mypyc_attr"]
