"""benchmarks/bench_view.py runs at a tiny size in the session's browser: its row is well formed and the page
it measured has every VMA as a block and no console error (times are printed by the benchmark, never
asserted)."""

from __future__ import annotations

import os
import sys
from typing import Any

from ..conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import bench_view  # noqa: E402

sys.path.pop(0)


def test_bench_view_tiny(browser: Any) -> None:
    row = bench_view.measure(200, browser, pages=True, repeats=1)
    assert row["vmas"] == row["blocks_last_lane"] == 200 + 11  # the runner's 11 VMAs and the 200 mapped
    assert row["lanes"] == 3 and row["console_errors"] == []
    assert 0 < row["html_bytes"] < 5_000_000 and row["chromium_ms"] > 0 and row["hover_ms"] > 0
    text = bench_view.render_text([row])
    assert text.startswith("vmalab bench_view: ") and "Chromium ms" in text and f"{row['vmas']:>7}" in text
