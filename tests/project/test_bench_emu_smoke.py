"""benchmarks/bench_emu.py runs at a tiny size: its rows are well formed and the emulated runs compute what
the native one does; speed is measured, never asserted."""

from __future__ import annotations

import json
import os
import shutil
import sys
from typing import Any

import pytest

from ..conftest import ON_LINUX, ROOT

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import bench_emu  # noqa: E402

PAGES, ROUNDS, PAIRS = 3, 2, 20
M = (1 << 64) - 1

pytestmark = [
    pytest.mark.skipif(not ON_LINUX, reason="the guest is a Linux x86-64 program"),
    pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None, reason="no C compiler for the guest"),
]


def expected_checksum(pages: int, rounds: int) -> int:
    """What the guest's memory loop computes, in Python."""
    words = pages * 512
    mem = [0] * words
    k, s = 0x9E3779B97F4A7C15, 0
    for _ in range(rounds):
        for i in range(words):
            mem[i] = (mem[i] + k) & M
            s = (s + mem[i]) & M
        k = (k + words) & M
    return s


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    adapter = pytest.importorskip("vmalab.adapters.unicorn")
    if not adapter.available():
        pytest.skip("unicorn is not installed (pip install 'vmalab[unicorn]')")
    try:
        bench_emu.build_guest()
    except bench_emu.Unavailable as e:
        pytest.skip(f"cannot build the guest: {e}")
    return bench_emu.measure(PAGES, ROUNDS, PAIRS, 1, 1)


def test_rows_well_formed(rows: list[dict[str, Any]]) -> None:
    assert [r["kind"] for r in rows] == ["count", "mem", "syscalls", "meta"]
    json.dumps(rows)  # --json can print them


def test_count_row(rows: list[dict[str, Any]]) -> None:
    count = rows[0]
    assert count["loop"] == bench_emu.loop_instructions(2, 3) == 3 * (2 * 512 * 7 + 5)
    # the UC_HOOK_CODE counter saw the loop's instructions and a few hundred more (start-up, output, exit)
    assert isinstance(count["outside_loop"], int) and 0 < count["outside_loop"] < 2000
    assert count["output"] == f"mem {2 * 512 * 3:016x} {expected_checksum(2, 3):016x}"


def test_memory_row(rows: list[dict[str, Any]]) -> None:
    mem = rows[1]
    want = f"mem {PAGES * 512 * ROUNDS:016x} {expected_checksum(PAGES, ROUNDS):016x}"
    assert mem["outputs"] == {"native": want, "unicorn": want, "vmalab": want}
    assert mem["same"] is True
    assert mem["instructions"] == bench_emu.loop_instructions(PAGES, ROUNDS)
    assert isinstance(mem["unicorn"], float) and mem["unicorn"] > 0
    assert isinstance(mem["vmalab"], float) and mem["vmalab"] > 0
    assert mem["vmalab_unicorn"] == pytest.approx(mem["vmalab"] / mem["unicorn"])
    native = mem["native"]
    assert native is None or (isinstance(native, float) and native > 0)  # a tiny run may drown in exec time


def test_syscall_row(rows: list[dict[str, Any]]) -> None:
    sc = rows[2]
    want = f"sys {PAIRS:016x} {0:016x}"  # every mmap and munmap succeeded
    assert sc["outputs"] == {"native": want, "unicorn": want, "vmalab": want, "dispatcher": want}
    assert sc["syscalls"] == 2 * PAIRS and sc["same"] is True
    for col in ("unicorn", "vmalab", "dispatcher"):
        assert isinstance(sc[col], float) and sc[col] > 0


def test_text(rows: list[dict[str, Any]]) -> None:
    text = bench_emu.render_text(rows)
    assert text.startswith("vmalab bench_emu: ") and "memory loop:" in text and "syscalls:" in text
    assert "outputs differ" not in text
    assert max(map(len, text.splitlines())) <= 96
