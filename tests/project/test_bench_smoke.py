"""The benchmark script runs at a tiny size and its rows are well formed; speed is measured, never asserted."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from ..conftest import ON_LINUX, ROOT

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import bench_ops  # noqa: E402

SIZES = (100, 200)
PAGES = 64


def check_model_rows(rows: list[dict[str, Any]], kernel: bool) -> None:
    ops = [r for r in rows if r["kind"] == "ops"]
    assert sorted((r["workload"], r["n"]) for r in ops) == sorted(
        (w, n) for w in ("fixed", "nonfixed") for n in SIZES)
    for r in ops:
        assert r["ops"] == r["n"] and r["pure"] > 0
        assert r["compiled"] is None and r["na"]["compiled"] == "--no-compiled"
        assert r["valid"]["pure"] is True  # mm.validate() passed after the replay
        assert r["unexpected"]["pure"] == 0, r["fails"]["pure"]
        # about N VMAs stay live: the fixed region holds at most 2N, the non-fixed ops add at most N/2
        assert 0 < r["vmas_end"]["pure"] <= 2 * r["n"]
        assert r["pure_rel"] is not None and r["pure_rel"] > 0
        if kernel:
            assert r["kernel"] is not None and r["kernel"] > 0, r["na"]
            assert r["unexpected"]["kernel"] == 0, r["fails"]["kernel"]
            assert r["pure_kernel"] == pytest.approx(r["pure"] / r["kernel"])
            if r["workload"] == "fixed":  # the region is the replayer's alone: the same outcome, op for op
                assert r["vmas_end"]["kernel"] == r["vmas_end"]["pure"]
                assert r["enomem"]["kernel"] == r["enomem"]["pure"] > 0
        else:
            assert r["kernel"] is None and r["na"]["kernel"] == "--no-kernel"
    faults = {r["fault"]: r for r in rows if r["kind"] == "faults"}
    assert set(faults) == {"write", "read"}
    for r in faults.values():
        assert r["pages"] == PAGES and r["pure"] > 0 and r["bad"]["pure"] == 0
        if kernel:
            assert r["kernel"] is not None and r["kernel"] > 0 and r["bad"]["kernel"] == 0, r["na"]
    mem = [r for r in rows if r["kind"] == "memory"]
    assert [(r["what"], r["n"]) for r in mem] == [("vma", n) for n in SIZES] + [("page", PAGES)]
    assert all(50 < r["pure"] < 10_000 for r in mem)
    meta = rows[-1]
    assert meta["kind"] == "meta" and meta["compiled_build"] is None and meta["pure_build"]["vmalab"]


def test_bench_model_only(capsys: pytest.CaptureFixture[str]) -> None:
    rows = bench_ops.main([*map(str, SIZES), "--pages", str(PAGES), "--no-compiled", "--no-kernel"])
    check_model_rows(rows, kernel=False)
    text = capsys.readouterr().out
    assert "fixed:" in text and "nonfixed:" in text and "n/a (--no-compiled)" in text
    assert max(map(len, text.splitlines())) <= 96


@pytest.mark.skipif(not ON_LINUX, reason="the live-kernel replayer (benchmarks/replay.c) needs Linux")
@pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None, reason="no C compiler to build replay.c")
def test_bench_with_kernel(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rows = bench_ops.main([*map(str, SIZES), "--pages", str(PAGES), "--no-compiled", "--markdown"])
    check_model_rows(rows, kernel=True)
    text = capsys.readouterr().out
    assert text.startswith("Measured ") and "| N VMAs | pure | compiled | kernel |" in text
    # the saved rows render again
    saved = tmp_path / "rows.json"
    bench_ops.main([*map(str, SIZES), "--pages", str(PAGES), "--no-compiled", "--json"])
    saved.write_text(capsys.readouterr().out)
    again = bench_ops.main(["--load", str(saved)])
    assert [r["kind"] for r in again] == [r["kind"] for r in rows]


def test_op_files_round_trip(tmp_path: Path) -> None:
    """The op file the kernel replays holds exactly the ops the generator made."""
    for make in (bench_ops.make_fixed, bench_ops.make_nonfixed):
        setup, ops = make(50, 80, 3)
        path = tmp_path / "w.ops"
        bench_ops.write_opfile(path, "w", setup, ops)
        assert bench_ops.read_opfile(path) == ("w", setup, ops)
    _, ops = bench_ops.make_nonfixed(50, 80, 3)
    # every munmap names a mapping made earlier and not yet unmapped
    made, gone = 50, set()
    for kind, a, _length, _prot in ops:
        if kind == "n":
            made += 1
        else:
            assert kind == "x" and a < made and a not in gone
            gone.add(a)
