"""The limits of a model run (``ModelRunner``: ``max_resident``, ``max_iterations``): a small scenario cannot
make the model populate gigabytes or run forever; going past a limit is a one-line error naming the op."""

from __future__ import annotations

from typing import Any

import pytest

from vmalab.execute import (
    DEFAULT_MAX_ITERATIONS,
    DEFAULT_MAX_RESIDENT,
    ModelLimitExceeded,
    ResidentLimitExceeded,
    run_on_model,
)
from vmalab.scenario import parse_scenario

RW = "PROT_READ|PROT_WRITE"
ANON = "MAP_PRIVATE|MAP_ANONYMOUS"


def run(ops: list[dict[str, Any]], **limits: int) -> dict[str, Any]:
    return run_on_model(parse_scenario({"name": "limits", "ops": ops}), validate=True, **limits)


@pytest.mark.parametrize(("ops", "op"), [
    ([{"op": "mmap", "addr": None, "len": "64G", "prot": RW, "flags": ANON + "|MAP_NORESERVE|MAP_POPULATE"}],
     "op 0 (mmap)"),
    ([{"op": "mmap", "addr": None, "len": "64G", "prot": "PROT_READ", "flags": ANON + "|MAP_NORESERVE"},
      {"op": "mlockall", "flags": "MCL_CURRENT"}], "op 1 (mlockall)"),
    ([{"op": "mmap", "addr": "base+0", "len": "1G", "prot": RW, "flags": ANON + "|MAP_FIXED|MAP_NORESERVE"},
      {"op": "madvise", "addr": "base+0", "len": "1G", "advice": "MADV_POPULATE_READ"}], "op 1 (madvise)"),
    ([{"op": "mmap", "addr": "base+0", "len": "1G", "prot": RW, "flags": ANON + "|MAP_FIXED|MAP_NORESERVE"},
      {"op": "madvise", "addr": "base+0", "len": "1G", "advice": "MADV_GUARD_INSTALL"}], "op 1 (madvise)"),
    ([{"op": "mmap", "addr": "base+0", "len": "1G", "prot": RW, "flags": ANON + "|MAP_FIXED|MAP_NORESERVE"},
      {"op": "repeat", "count": 1 << 20, "step": "4K", "body": {"op": "touch", "addr": "base+0", "write": True}}],
     "op 1 (repeat)"),
])
def test_mapping_more_than_max_resident_pages_stops_the_run(ops: list[dict[str, Any]], op: str) -> None:
    with pytest.raises(ResidentLimitExceeded, match=rf"^{op.replace('(', '[(]').replace(')', '[)]')}: .*more than "
                       r"1000 pages \(--max-resident\)$"):
        run(ops, max_resident=1000)


def test_page_cache_and_mincore_are_bounded_too() -> None:
    willneed = [{"op": "mmap", "addr": "base+0", "len": "1G", "prot": "PROT_READ", "flags": "MAP_SHARED",
                 "fd": "disk:f:1T"},
                {"op": "repeat", "count": 1000, "step": "128K",
                 "body": {"op": "madvise", "addr": "base+0", "len": "128K", "advice": "MADV_WILLNEED"}}]
    with pytest.raises(ResidentLimitExceeded, match=r"op 1 \(repeat\): .*cache more than 100 pages of "
                       r"\$FILES/disk/f"):
        run(willneed, max_resident=100)
    mincore = [{"op": "mmap", "addr": "base+0", "len": "64G", "prot": "PROT_NONE",
                "flags": ANON + "|MAP_FIXED|MAP_NORESERVE"},
               {"op": "mincore", "addr": "base+0", "len": "64G"}]
    with pytest.raises(ResidentLimitExceeded, match=r"op 1 \(mincore\): .*mincore vector of more than"):
        run(mincore)
    # a mincore the kernel refuses before building a vector is not the model's limit: the errno stays
    res = run([*mincore[:1], {"op": "mincore", "addr": "base+4K", "len": "128T"}], max_resident=10)
    assert res["results"][1]["errno"] == "ENOMEM"
    res = run([*mincore[:1], {"op": "mincore", "addr": "base+0", "len": "40K"}], max_resident=10)
    assert res["results"][1]["vec"] == "0" * 10


def test_a_repeat_that_never_fails_stops_at_max_iterations() -> None:
    ops = [{"op": "mmap", "addr": "base+0", "len": "4K", "prot": "PROT_READ", "flags": ANON + "|MAP_FIXED"},
           {"op": "repeat", "count": (1 << 64) - 1, "step": 0,
            "body": {"op": "mprotect", "addr": "base+0", "len": "4K", "prot": "PROT_READ"}}]
    with pytest.raises(ModelLimitExceeded, match=r"^op 1 \(repeat\): more than 500 repeat iterations"):
        run(ops, max_iterations=500)
    ok = run([ops[0], {**ops[1], "count": 500}], max_iterations=500)  # exactly the limit is allowed
    assert ok["results"][1]["ret"] == 500


def test_defaults() -> None:
    assert DEFAULT_MAX_RESIDENT == 1 << 18 and DEFAULT_MAX_ITERATIONS == 1_000_000
