"""The optional compiled build (tools/build_mypyc.py, README "Compiled build"): the suite tests the build it
says it tests, and a compiled module never silently shadows an edited source."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from types import ModuleType

import pytest

from ..conftest import BUILD, ROOT

SRC = os.path.join(ROOT, "src", "vmalab")
EXT_SUFFIX = sysconfig.get_config_var("EXT_SUFFIX")


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_mypyc", os.path.join(ROOT, "tools", "build_mypyc.py"))
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


TOOL = _tool()


def test_the_suite_tests_the_build_it_names() -> None:
    import vmalab

    pkg = os.path.dirname(vmalab.__file__)
    for name in TOOL.COMPILED:
        f = importlib.import_module(f"vmalab.{name}").__file__ or ""
        if BUILD == "mypyc":
            assert f.endswith(EXT_SUFFIX), f"vmalab.{name} is not compiled: {f}"
        else:
            assert f == os.path.join(SRC, f"{name}.py"), f
    assert (importlib.import_module("vmalab.mm").__file__ or "").endswith("mm.py")  # never compiled
    if BUILD == "mypyc":
        assert pkg == os.path.join(TOOL.OUT, "vmalab")
        assert os.environ["PYTHONPATH"].split(os.pathsep)[0] == TOOL.OUT  # the CLI the tests start too
        with open(os.path.join(pkg, TOOL.MANIFEST), encoding="utf-8") as f:
            manifest = json.load(f)
        assert manifest["compiled_modules"] == [f"vmalab.{m}" for m in TOOL.COMPILED]
        assert manifest["source_dir"] == SRC
    else:
        assert pkg == SRC


@pytest.mark.skipif(BUILD != "mypyc", reason="checks the compiled build the suite runs on")
def test_tool_reuses_an_up_to_date_build() -> None:
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "build_mypyc.py")], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == TOOL.OUT and "up to date" in r.stderr


def _import_from(path: Path) -> subprocess.CompletedProcess[str]:
    """``import vmalab`` with ``path`` first on sys.path, in a fresh interpreter."""
    env = {**os.environ, "PYTHONPATH": str(path)}
    return subprocess.run([sys.executable, "-c", "import vmalab, vmalab.mmap; print(vmalab.mmap.__file__)"],
                          cwd=path, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def build_copy(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the source package and a build of it: the real compiled build in mypyc mode, else a
    build-shaped copy of the sources with the manifest the tool would write (nothing compiled).  Returns
    (the copy's source package, the build's directory on sys.path)."""
    src = tmp_path / "src" / "vmalab"
    shutil.copytree(SRC, src, ignore=shutil.ignore_patterns("__pycache__"))
    build = tmp_path / "build"
    if BUILD == "mypyc":
        shutil.copytree(TOOL.OUT, build, ignore=shutil.ignore_patterns("__pycache__"))
        with open(build / "vmalab" / TOOL.MANIFEST, encoding="utf-8") as f:
            manifest = json.load(f)
    else:
        shutil.copytree(src, build / "vmalab")
        manifest = TOOL.wanted_manifest(str(src), TOOL.COMPILED)
    manifest["source_dir"] = str(src)
    with open(build / "vmalab" / TOOL.MANIFEST, "w", encoding="utf-8") as f:
        json.dump(manifest, f)
    return src, build


def test_an_intact_build_imports(build_copy: tuple[Path, Path]) -> None:
    _, build = build_copy
    r = _import_from(build)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().startswith(str(build / "vmalab" / "mmap."))
    assert r.stdout.strip().endswith(EXT_SUFFIX if BUILD == "mypyc" else ".py")


@pytest.mark.parametrize("name", ["vma_tree.py", "cli.py", "oracle/runner.c"])
def test_an_edited_source_refuses_the_stale_build(build_copy: tuple[Path, Path], name: str) -> None:
    """A compiled module's source (vma_tree.py), an uncompiled module (cli.py) or package data changed since
    the build: importing the build fails, naming the file and the rebuild command."""
    src, build = build_copy
    with open(src / name, "a", encoding="utf-8") as f:
        f.write("\n")
    r = _import_from(build)
    assert r.returncode != 0
    assert "ImportError" in r.stderr and "is stale" in r.stderr, r.stderr
    assert str(src / name) in r.stderr and "tools/build_mypyc.py" in r.stderr, r.stderr


def test_a_recorded_hash_that_does_not_match_refuses(build_copy: tuple[Path, Path]) -> None:
    _, build = build_copy
    path = build / "vmalab" / TOOL.MANIFEST
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest["compiled"]["mprotect.py"] = "0" * 64
    path.write_text(json.dumps(manifest), encoding="utf-8")
    r = _import_from(build)
    assert r.returncode != 0 and "mprotect.py changed since it was built" in r.stderr, r.stderr


def test_a_build_for_another_interpreter_refuses(build_copy: tuple[Path, Path]) -> None:
    _, build = build_copy
    path = build / "vmalab" / TOOL.MANIFEST
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest["implementation"] = "cpython-29"
    path.write_text(json.dumps(manifest), encoding="utf-8")
    r = _import_from(build)
    assert r.returncode != 0 and "was built for cpython-29" in r.stderr, r.stderr


@pytest.mark.parametrize("where", ["vma_tree", "drivers/devzero"])
def test_an_extension_beside_its_source_without_manifest_refuses(tmp_path: Path, where: str) -> None:
    """The editable-install case: a compiled module left in the source package (an in-place mypyc build)
    would shadow its edited .py; without a build manifest vouching for it, importing fails."""
    pkg = tmp_path / "vmalab"
    shutil.copytree(SRC, pkg, ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.pyd", TOOL.MANIFEST))
    r = _import_from(tmp_path)
    assert r.returncode == 0, r.stderr
    (pkg / f"{where}{EXT_SUFFIX}").write_bytes(b"")
    r = _import_from(tmp_path)
    assert r.returncode != 0
    assert "ImportError" in r.stderr and f"{where}{EXT_SUFFIX} shadows its source" in r.stderr, r.stderr
