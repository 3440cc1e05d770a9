"""Replay random page-granular mmap/mprotect/munmap ops against an MM holding about N VMAs.

Usage: python benchmarks/bench_ops.py [N ...] [--ops K] [--seed S]

For each N, the address space is first given N one-page VMAs, one on every other page of a 2N-page
region, then N random ops are replayed (``--ops`` changes the count): MAP_FIXED mmap, mprotect and munmap
of 1-2 pages at random page-aligned addresses inside the region, so that about N VMAs stay live.  Small
sizes are replayed several times on fresh copies and the best time is kept.  Prints a table of ops/s;
compare rates within one run (the absolute numbers depend on the machine).
"""

from __future__ import annotations

import argparse
import random
import time

from vmalab import constants as C
from vmalab.mm import MM

BASE = 0x500000000000
RW = C.PROT_READ | C.PROT_WRITE
FLAGS = C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_FIXED


def build(n: int) -> MM:
    mm = MM(max_map_count=1 << 22)
    for i in range(n):
        mm.sys_mmap(BASE + 2 * i * C.PAGE_SIZE, C.PAGE_SIZE, RW, FLAGS, -1, 0)
    return mm


def make_ops(n: int, k: int, seed: int) -> list[tuple[int, int, int, int]]:
    rng = random.Random(seed)
    pages = 2 * n
    ops = []
    for _ in range(k):
        kind = rng.randrange(3)
        npg = rng.randint(1, 2)
        addr = BASE + rng.randrange(pages - npg) * C.PAGE_SIZE
        prot = rng.choice((C.PROT_READ, RW, C.PROT_NONE))
        ops.append((kind, addr, npg * C.PAGE_SIZE, prot))
    return ops


def replay(mm: MM, ops: list[tuple[int, int, int, int]]) -> float:
    mmap, mprotect, munmap = mm.sys_mmap, mm.sys_mprotect, mm.sys_munmap
    t0 = time.perf_counter()
    for kind, addr, length, prot in ops:
        if kind == 0:
            mmap(addr, length, prot, FLAGS, -1, 0)
        elif kind == 1:
            mprotect(addr, length, prot)
        else:
            munmap(addr, length)
    return time.perf_counter() - t0


def run(sizes: list[int], nops: int, seed: int) -> list[dict[str, float]]:
    rows = []
    for n in sizes:
        k = nops or n
        ops = make_ops(n, k, seed)
        best = float("inf")
        for _ in range(max(1, min(10, 20000 // k))):
            mm = build(n)
            before = mm.map_count
            best = min(best, replay(mm, ops))
        mm.validate()
        rows.append({"n": n, "vmas_before": before, "vmas_after": mm.map_count, "ops": k, "seconds": best,
                     "ops_per_s": k / best if best else float("inf")})
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sizes", nargs="*", type=int, default=[1000, 10000, 100000])
    ap.add_argument("--ops", type=int, default=0, help="ops replayed per size (default: N)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    rows = run(args.sizes, args.ops, args.seed)
    print(f"{'N':>8} {'VMAs before':>12} {'VMAs after':>11} {'ops':>7} {'seconds':>8} {'ops/s':>9} {'vs first':>8}")
    for r in rows:
        print(f"{r['n']:>8} {r['vmas_before']:>12} {r['vmas_after']:>11} {r['ops']:>7} {r['seconds']:>8.3f} "
              f"{r['ops_per_s']:>9.0f} {r['ops_per_s'] / rows[0]['ops_per_s']:>8.2f}")
    return rows


if __name__ == "__main__":
    main()
