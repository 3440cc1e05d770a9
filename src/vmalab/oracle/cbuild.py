"""Compiling the small C helpers the live-kernel tools run (``runner.c``, ``tracer.c``, the benchmark's
``replay.c``) at first use.

A helper binary lives in ``$VMALAB_CACHE`` (default ``~/.cache/vmalab``) under a name keyed by a hash of
its source, the compiler and the flags, so an edit recompiles and an unchanged source is reused.  It is
compiled from the hashed bytes themselves (fed on stdin), into a temporary file renamed into place
atomically, so concurrent first uses never see a half-written binary.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

__all__ = ["CBuildError", "cache_dir", "build_c_helper"]


class CBuildError(Exception):
    """The helper could not be built: the message is one line naming the reason."""


def cache_dir() -> Path:
    env = os.environ.get("VMALAB_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "vmalab"


def build_c_helper(source_path: Path, name: str, flags: Sequence[str], *,
                   try_static: bool = False) -> tuple[str, bool | None]:
    """Compile ``source_path`` if needed; returns (the binary's path, whether it was linked statically:
    None when an existing binary was reused).  With ``try_static`` a static link (``-static``) is tried
    first and a dynamic one if that fails.  Raises :class:`CBuildError`."""
    try:
        source = source_path.read_bytes()
    except OSError as e:
        raise CBuildError(f"cannot read {source_path}: {e.strerror or e}") from None
    cc = os.environ.get("CC", "cc")
    digest = hashlib.sha256(b"\0".join([source, cc.encode(), *(f.encode() for f in flags)])).hexdigest()[:16]
    cache = cache_dir()
    target = cache / f"{name}-{digest}"
    if target.exists() and os.access(target, os.X_OK):
        return str(target), None
    try:
        cache.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}-{digest}-", dir=cache)
        os.close(fd)
    except OSError as e:
        raise CBuildError(f"cannot write to the cache directory {cache}: {e.strerror or e}") from None
    try:
        errors: list[str] = []
        for static in ((True, False) if try_static else (False,)):
            cmd = [cc, *flags, *(["-static"] if static else []), "-o", tmp, "-x", "c", "-"]
            try:
                proc = subprocess.run(cmd, input=source, capture_output=True, timeout=300)
            except (OSError, subprocess.SubprocessError) as e:
                raise CBuildError(f"cannot run the C compiler {cc!r}: {e}") from None
            if proc.returncode == 0:
                os.chmod(tmp, 0o755)
                os.replace(tmp, target)
                return str(target), static
            stderr = proc.stderr.decode("utf-8", "replace")
            lines = [ln for ln in stderr.splitlines() if "error" in ln] or stderr.splitlines()
            errors.append(lines[0] if lines else f"exit status {proc.returncode}")
        raise CBuildError(f"cannot compile {source_path.name}: {errors[-1]}")
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
