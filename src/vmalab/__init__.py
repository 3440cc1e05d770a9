"""vmalab: an executable, Linux-faithful model of a process address space."""

__version__ = "0.1.0"


def _check_compiled_build() -> None:
    """Never let a compiled module shadow an edited source (README, "Compiled build"): a compiled build
    (``tools/build_mypyc.py``) records the sha256 of every file it compiled or copied; it refuses to import
    when one of them changed in the source directory since.  Without a build manifest, a compiled extension
    beside a module's ``.py`` (say, left over by an in-place mypyc build) refuses to import too."""
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    manifest = os.path.join(here, "_build_manifest.json")
    if os.path.exists(manifest):
        import hashlib
        import json
        import sys

        with open(manifest, encoding="utf-8") as f:
            m = json.load(f)
        src = m.get("source_dir") or ""
        tool = os.path.join(os.path.dirname(os.path.dirname(src)), "tools", "build_mypyc.py")
        rebuild = f"rebuild it with: python {tool}"
        if m.get("implementation") != sys.implementation.cache_tag:
            raise ImportError(f"vmalab: the compiled build in {here} was built for {m.get('implementation')}, "
                              f"this is {sys.implementation.cache_tag}; {rebuild}")
        if not os.path.isdir(src):
            return  # a build moved away from its sources: nothing to compare with
        for rel, digest in {**m.get("compiled", {}), **m.get("copied", {})}.items():
            path = os.path.join(src, rel)
            try:
                with open(path, "rb") as f:
                    same = hashlib.sha256(f.read()).hexdigest() == digest
            except FileNotFoundError:
                same = False
            if not same:
                raise ImportError(f"vmalab: the compiled build in {here} is stale: {path} changed since it was "
                                  f"built; {rebuild}")
        return
    for d in [here] + [e.path for e in os.scandir(here) if e.is_dir() and not e.name.startswith(("_", "."))]:
        for e in os.scandir(d):
            if e.name.endswith((".so", ".pyd")) and os.path.exists(os.path.join(d, e.name.split(".")[0] + ".py")):
                raise ImportError(f"vmalab: the compiled module {e.path} shadows its source "
                                  f"{e.name.split('.')[0]}.py and no build manifest says it matches it: delete "
                                  "it (the compiled build is built apart, by tools/build_mypyc.py)")


_check_compiled_build()
del _check_compiled_build

from . import drivers  # noqa: E402,F401  (the built-in drivers register their file kinds and devices)
from .faults import Fault  # noqa: E402
from .mm import MM, ValidationError  # noqa: E402

__all__ = ["MM", "Fault", "ValidationError", "__version__"]
