"""Build the optional compiled build of vmalab: ``build/mypyc/``, a complete importable copy of the package in
which the hot core modules are extension modules compiled by mypyc.

    python tools/build_mypyc.py            # build, or reuse the build when nothing it compiled changed
    PYTHONPATH=build/mypyc python ...      # use it

The pure-Python package in ``src/vmalab`` stays the reference.  The build writes
``vmalab/_build_manifest.json``: the interpreter and mypy it was built with, the compiled modules, the
sha256 of every file it compiled or copied, and the absolute source directory.  ``vmalab/__init__.py``
compares those hashes with the source directory at every import and refuses to import a build whose
sources changed (see the README, "Compiled build").  Rerunning this tool is cheap when only uncompiled files
changed (they are copied again) and does nothing when nothing changed.  It prints the build directory.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import sysconfig
import tempfile
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "src", "vmalab")
OUT = os.path.join(ROOT, "build", "mypyc")
MANIFEST = "_build_manifest.json"
FORMAT = 1

#: the modules compiled by default: the model's core, which every syscall and fault runs through
COMPILED = [
    "vma_tree", "vma", "mmap", "mprotect", "mm_types", "pagetable", "faults", "locking", "probe", "layout",
    "gup", "mremap", "madvise", "mlock", "brk", "fork", "procfs", "debug",
]

#: the build options that change the compiled code (a change rebuilds)
OPTIONS: dict[str, Any] = {"opt_level": "3", "multi_file": True, "separate": False}

#: files of the package that are never copied into the build
_SKIP_DIRS = {"__pycache__"}
_SKIP_SUFFIXES = (".pyc", ".pyo", ".so", ".pyd")


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def package_files(src: str) -> list[str]:
    """The package's files (sources and package data), relative to ``src``, sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        for name in filenames:
            if name.endswith(_SKIP_SUFFIXES) or name == MANIFEST or name.startswith("."):
                continue
            out.append(os.path.relpath(os.path.join(dirpath, name), src).replace(os.sep, "/"))
    return sorted(out)


def module_path(module: str) -> str:
    """``vmalab.x.y`` or ``x.y`` -> ``x/y.py`` (relative to the package directory)."""
    return module.removeprefix("vmalab.").replace(".", "/") + ".py"


def environment() -> dict[str, Any]:
    import mypy.version

    return {
        "python": sys.version.split()[0],
        "implementation": sys.implementation.cache_tag,
        "ext_suffix": sysconfig.get_config_var("EXT_SUFFIX"),
        "mypy": mypy.version.__version__,
    }


def wanted_manifest(src: str, modules: list[str]) -> dict[str, Any]:
    compiled = {module_path(m) for m in modules}
    files = package_files(src)
    missing = compiled - set(files)
    if missing:
        raise SystemExit(f"build_mypyc: no such module in {src}: {', '.join(sorted(missing))}")
    return {
        "format": FORMAT,
        **environment(),
        "options": OPTIONS,
        "source_dir": os.path.abspath(src),
        "compiled_modules": ["vmalab." + m for m in modules],
        "compiled": {p: sha256(os.path.join(src, p)) for p in files if p in compiled},
        "copied": {p: sha256(os.path.join(src, p)) for p in files if p not in compiled},
    }


def read_manifest(out: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(out, "vmalab", MANIFEST), encoding="utf-8") as f:
            data: dict[str, Any] = json.load(f)
            return data
    except (OSError, ValueError):
        return None


def write_manifest(out: str, manifest: dict[str, Any]) -> None:
    path = os.path.join(out, "vmalab", MANIFEST)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(path + ".tmp", path)


def extensions_present(out: str, manifest: dict[str, Any]) -> bool:
    suffix = manifest["ext_suffix"]
    return all(os.path.exists(os.path.join(out, "vmalab", p[:-3] + suffix)) for p in manifest["compiled"])


def same_compiled(old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    """Whether the compiled part of build ``old`` is what ``new`` asks for."""
    if old is None:
        return False
    keys = ("format", "python", "implementation", "ext_suffix", "mypy", "options", "source_dir",
            "compiled_modules", "compiled")
    return all(old.get(k) == new[k] for k in keys)


def sync_copies(src: str, out: str, manifest: dict[str, Any], old: dict[str, Any] | None) -> int:
    """Copy the uncompiled package files whose hash changed into the build and drop the ones the source no
    longer has; returns how many files changed."""
    pkg = os.path.join(out, "vmalab")
    before = dict(old.get("copied", {})) if old else {}
    changed = 0
    for rel, digest in manifest["copied"].items():
        dst = os.path.join(pkg, rel)
        if before.get(rel) != digest or not os.path.exists(dst):
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copyfile(os.path.join(src, rel), dst)
            changed += 1
    for rel in set(before) - set(manifest["copied"]):
        if rel not in manifest["compiled"]:
            try:
                os.remove(os.path.join(pkg, rel))
            except FileNotFoundError:
                pass
            changed += 1
    return changed


def parallel_compile(compiler: Any, jobs: int) -> None:
    """Make ``compiler`` compile the C files of one extension ``jobs`` at a time (setuptools' own
    ``--parallel`` only runs separate extensions side by side, and mypyc puts all modules in one)."""
    serial = compiler.compile

    def compile(sources: list[str], *args: Any, **kwargs: Any) -> list[str]:
        if jobs < 2 or len(sources) < 2:
            return list(serial(sources, *args, **kwargs))
        from concurrent.futures import ThreadPoolExecutor

        # largest first, so the long ones do not start last
        order = sorted(sources, key=lambda p: -os.path.getsize(p) if os.path.exists(p) else 0)
        with ThreadPoolExecutor(jobs) as ex:
            done = dict(zip(order, ex.map(lambda src: serial([src], *args, **kwargs), order), strict=True))
        return [obj for src in sources for obj in done[src]]

    compiler.compile = compile


def compile_build(src: str, out: str, manifest: dict[str, Any], jobs: int, tmp: str | None, verbose: bool) -> None:
    """Compile the modules of ``manifest`` with mypyc into a fresh ``out``: the whole package is copied into a
    staging directory outside the source tree, compiled there, and moved into place at the end."""
    from mypyc.build import mypycify
    from setuptools import Distribution
    from setuptools.command.build_ext import build_ext

    class ParallelBuildExt(build_ext):
        def build_extensions(self) -> None:
            parallel_compile(self.compiler, jobs)
            super().build_extensions()

    work = tempfile.mkdtemp(prefix="vmalab-mypyc-", dir=tmp)
    cwd = os.getcwd()
    try:
        stage = os.path.join(work, "stage")
        for rel in list(manifest["compiled"]) + list(manifest["copied"]):
            dst = os.path.join(stage, "vmalab", rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copyfile(os.path.join(src, rel), dst)
        os.chdir(stage)
        paths = [os.path.join("vmalab", rel) for rel in manifest["compiled"]]
        # the package's mypy settings (pyproject.toml) that matter for compiling; no config file is read
        flags = ["--config-file=", "--ignore-missing-imports", "--python-version",
                 f"{sys.version_info.major}.{sys.version_info.minor}"]
        exts = mypycify(flags + paths, opt_level=OPTIONS["opt_level"], multi_file=OPTIONS["multi_file"],
                        separate=OPTIONS["separate"], target_dir=os.path.join(work, "c"),
                        verbose=verbose)
        lib = os.path.join(work, "lib")
        dist = Distribution({"name": "vmalab-mypyc", "ext_modules": exts, "script_name": "build_mypyc.py",
                             "cmdclass": {"build_ext": ParallelBuildExt}})
        dist.verbose = 1 if verbose else 0
        cmd: Any = dist.get_command_obj("build_ext")
        cmd.build_lib = lib
        cmd.build_temp = os.path.join(work, "obj")
        cmd.inplace = False
        dist.run_command("build_ext")
        # the complete package beside the extensions: every source (compiled ones too, for tracebacks and
        # inspect) and the package data
        for rel in list(manifest["compiled"]) + list(manifest["copied"]):
            dst = os.path.join(lib, "vmalab", rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copyfile(os.path.join(stage, "vmalab", rel), dst)
        write_manifest(lib, manifest)
        os.chdir(cwd)
        if os.path.exists(out):
            shutil.rmtree(out)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        shutil.move(lib, out)
    finally:
        os.chdir(cwd)
        shutil.rmtree(work, ignore_errors=True)


def build(out: str = OUT, src: str = SRC, modules: list[str] | None = None, force: bool = False,
          jobs: int | None = None, tmp: str | None = None, verbose: bool = False) -> str:
    """Build (or reuse) the compiled build in ``out``; returns ``out``."""
    out = os.path.abspath(out)
    manifest = wanted_manifest(src, COMPILED if modules is None else modules)
    old = read_manifest(out)
    t0 = time.monotonic()
    if not force and same_compiled(old, manifest) and old is not None and extensions_present(out, old):
        changed = sync_copies(src, out, manifest, old)
        if changed:
            manifest["build_seconds"] = old.get("build_seconds")
            write_manifest(out, manifest)
            print(f"build_mypyc: reused the compiled modules, copied {changed} changed file(s)", file=sys.stderr)
        else:
            print("build_mypyc: up to date", file=sys.stderr)
        return out
    print(f"build_mypyc: compiling {len(manifest['compiled'])} modules with mypyc "
          f"{manifest['mypy']} ({jobs or os.cpu_count() or 1} jobs)...", file=sys.stderr)
    manifest["build_seconds"] = None
    compile_build(src, out, manifest, jobs or os.cpu_count() or 1, tmp, verbose)
    manifest["build_seconds"] = round(time.monotonic() - t0, 1)
    write_manifest(out, manifest)
    print(f"build_mypyc: built in {manifest['build_seconds']} s", file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=OUT, help="the build directory (default: build/mypyc)")
    ap.add_argument("--force", action="store_true", help="recompile even when the build is up to date")
    ap.add_argument("-j", "--jobs", type=int, default=None, help="parallel compiler jobs (default: all cores)")
    ap.add_argument("--modules", default=None,
                    help="comma-separated modules to compile (default: " + ",".join(COMPILED) + ")")
    ap.add_argument("--tmp", default=None, help="where the temporary build directory goes (default: $TMPDIR)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    modules = None if args.modules is None else [m for m in args.modules.split(",") if m]
    print(build(args.out, modules=modules, force=args.force, jobs=args.jobs, tmp=args.tmp, verbose=args.verbose))
    return 0


if __name__ == "__main__":
    sys.exit(main())
