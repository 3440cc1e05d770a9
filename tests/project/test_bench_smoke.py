"""The benchmark script runs (tiny size) and leaves a valid model; speed is measured, never asserted."""

from __future__ import annotations

import os
import sys

from ..conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import bench_ops  # noqa: E402


def test_bench_ops_smoke(capsys: object) -> None:
    rows = bench_ops.main(["100"])
    assert len(rows) == 1
    row = rows[0]
    assert row["n"] == 100 and row["ops"] == 100 and row["vmas_before"] == 100
    assert row["ops_per_s"] > 0 and 0 < row["vmas_after"] <= 200
