"""Where stock Qiling diverges from the native run, and Qiling + vmalab does not (measured, not asserted).

Compiles the C test programs of tests/emu/programs/ with ``cc -static`` into a Qiling root file system,
runs each natively (tests/emu/native_run.c: ASLR off, empty environment, fault signals reported with
their instruction), under stock Qiling, and under Qiling with :func:`vmalab.adapters.qiling.install`,
and prints one row per program: how each emulated run ended and its first output line that differs from
the native run's.  ``python benchmarks/qiling_stock.py [--json] [PROGRAM ...]`` (default: all).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EMU = os.path.join(ROOT, "tests", "emu")
PROGRAMS = sorted(os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(EMU, "programs", "*.c")))

#: stock Qiling: the program's output on stdout; how it ended on stderr (an exception is a crash)
STOCK = """
import sys
from qiling import Qiling
from qiling.const import QL_VERBOSE
ql = Qiling([sys.argv[1]], sys.argv[2], env={}, verbose=QL_VERBOSE.DISABLED)
try:
    ql.run()
except BaseException as e:
    sys.stdout.flush()
    print(f"crash {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", file=sys.stderr)
    sys.exit(3)
sys.stdout.flush()
print(f"exit {ql.os.exit_code}", file=sys.stderr)
"""


def build(names: list[str], d: str) -> tuple[str, str]:
    root = os.path.join(d, "root")
    os.makedirs(root, exist_ok=True)
    inc = os.path.join(EMU, "programs")
    for n in names:
        subprocess.run(["cc", "-static", "-O1", "-I", inc, "-o", os.path.join(root, n), os.path.join(inc, f"{n}.c")],
                       check=True)
    native = os.path.join(d, "native_run")
    subprocess.run(["cc", "-O1", "-o", native, os.path.join(EMU, "native_run.c")], check=True)
    return root, native


def first_diff(want: str, got: str) -> tuple[int, str, str] | None:
    """(line number, native line, emulated line) of the first difference, or None."""
    a, b = want.splitlines(), got.splitlines()
    for i in range(max(len(a), len(b))):
        x = a[i] if i < len(a) else "<no line>"
        y = b[i] if i < len(b) else "<no line>"
        if x != y:
            return i + 1, x, y
    return None


def run_one(name: str, root: str, native: str, d: str) -> dict[str, Any]:
    prog = os.path.join(root, name)
    report = os.path.join(d, f"{name}.report")
    n_out = subprocess.run([native, report, prog], stdout=subprocess.PIPE, timeout=60).stdout.decode()
    with open(report) as f:
        n_end = f.read().splitlines()
    s = subprocess.run([sys.executable, "-c", STOCK, prog, root], capture_output=True, timeout=600)
    s_out = s.stdout.decode(errors="replace")
    s_end = [ln for ln in s.stderr.decode(errors="replace").splitlines() if ln.startswith(("exit ", "crash "))]
    v = subprocess.run([sys.executable, "-m", "vmalab.adapters.qiling", prog], capture_output=True, timeout=600)
    v_out = v.stdout.decode(errors="replace")
    v_end = [ln for ln in v.stderr.decode(errors="replace").splitlines() if ln.startswith("signal ")]
    v_end.append(f"killed {v.returncode - 128}" if v.returncode > 128 else f"exit {v.returncode}")
    sd, vd = first_diff(n_out, s_out), first_diff(n_out, v_out)
    nl, sl = n_out.splitlines(), s_out.splitlines()
    return {"program": name, "native": n_end, "native_lines": len(n_out.splitlines()),
            "stock": s_end[-1] if s_end else f"status {s.returncode}", "stock_first_diff": sd,
            "stock_lines_differing": sum(a != b for a, b in zip(nl, sl, strict=False)) + abs(len(nl) - len(sl)),
            "vmalab": v_end, "vmalab_same": vd is None and v_end == n_end, "vmalab_first_diff": vd}


def table(rows: list[dict[str, Any]]) -> str:
    out = ["| program | native | stock Qiling | stock: lines differing | stock: first difference (native / stock) "
           "| Qiling + vmalab |", "|---|---|---|---|---|---|"]
    for r in rows:
        d = r["stock_first_diff"]
        diff = "none" if d is None else f"line {d[0]}: `{d[1].strip()[:60]}` / `{d[2].strip()[:60]}`"
        out.append(f"| {r['program']} | {r['native'][-1]} | {r['stock']} | {r['stock_lines_differing']} of "
                   f"{r['native_lines']} | {diff} | {'identical' if r['vmalab_same'] else 'differs'} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("programs", nargs="*", help=f"default: all ({', '.join(PROGRAMS)})")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    names = a.programs or PROGRAMS
    with tempfile.TemporaryDirectory(prefix="vmalab-qiling-") as d:
        root, native = build(names, d)
        rows = [run_one(n, root, native, d) for n in names]
    print(json.dumps(rows, indent=1) if a.json else table(rows))
    return rows


if __name__ == "__main__":
    main()
