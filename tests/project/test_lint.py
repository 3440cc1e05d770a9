"""ruff and mypy stay clean (run as part of the suite so CI checks them)."""

from __future__ import annotations

import subprocess
import sys

from ..conftest import ROOT


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_clean() -> None:
    r = _run(sys.executable, "-m", "ruff", "check", "src", "tests", "benchmarks", "examples", "tools")
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_clean() -> None:
    r = _run(sys.executable, "-m", "mypy")
    assert r.returncode == 0, r.stdout + r.stderr
