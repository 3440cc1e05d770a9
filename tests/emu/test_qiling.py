"""Qiling + vmalab (vmalab.adapters.qiling) against the native run of the C test programs.

Each program of tests/emu/programs/ is compiled with ``cc -static`` at test time into a root file system
for Qiling, run natively with ASLR off and an empty environment (tests/emu/native_run.c reports every
fault signal with its instruction and the exit), then under Qiling with vmalab installed: the printed
output (every syscall return, the /proc/self/maps dumps) must be byte for byte the native one, and a
SIGSEGV the native run takes must be taken at the same instruction and address with the same si_code.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
PROGRAMS = sorted(os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(HERE, "programs", "*.c")))
HAVE_QILING = importlib.util.find_spec("qiling") is not None
needs_qiling = pytest.mark.skipif(not HAVE_QILING, reason="Qiling is not installed: pip install 'vmalab[qiling]'")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """(rootfs with the static programs, the native_run binary)."""
    if shutil.which("cc") is None:
        pytest.skip("no C compiler (cc)")
    d = tmp_path_factory.mktemp("qiling")
    root = d / "root"
    root.mkdir()
    inc = os.path.join(HERE, "programs")
    for name in PROGRAMS:
        subprocess.run(["cc", "-static", "-O1", "-I", inc, "-o", str(root / name), os.path.join(inc, f"{name}.c")],
                       check=True)
    native = str(d / "native_run")
    subprocess.run(["cc", "-O1", "-o", native, os.path.join(HERE, "native_run.c")], check=True)
    return str(root), native


def _native(native: str, prog: str, tmp: str) -> tuple[str, list[str]]:
    report = os.path.join(tmp, "report")
    out = subprocess.run([native, report, prog], stdout=subprocess.PIPE, timeout=60).stdout.decode()
    with open(report) as f:
        return out, f.read().splitlines()


def _emulated(prog: str) -> tuple[str, list[str]]:
    proc = subprocess.run([sys.executable, "-m", "vmalab.adapters.qiling", prog], capture_output=True,
                          timeout=600)
    lines = [ln for ln in proc.stderr.decode().splitlines() if ln.startswith("signal ")]
    lines.append(f"killed {proc.returncode - 128}" if proc.returncode > 128 else f"exit {proc.returncode}")
    return proc.stdout.decode(), lines


@needs_qiling
@pytest.mark.parametrize("name", PROGRAMS)
def test_program_matches_native(name: str, built: tuple[str, str], tmp_path: os.PathLike[str]) -> None:
    root, native = built
    prog = os.path.join(root, name)
    n_out, n_report = _native(native, prog, str(tmp_path))
    e_out, e_report = _emulated(prog)
    assert "/proc/self/maps" in n_out or " = " in n_out  # the native run printed something to compare
    assert e_out == n_out
    assert e_report == n_report


@needs_qiling
def test_install_replaces_the_memory_syscalls_and_mmap2_scales(built: tuple[str, str]) -> None:
    from qiling.const import QL_INTERCEPT

    from vmalab import constants as C
    from vmalab.adapters import qiling as vq

    root, _ = built
    from qiling import Qiling
    from qiling.const import QL_VERBOSE

    ql = Qiling([os.path.join(root, "maps")], root, env={}, verbose=QL_VERBOSE.DISABLED)
    ad = vq.install(ql)
    hooks = ql.os.posix_syscall_hooks[QL_INTERCEPT.CALL]
    assert {f"ql_syscall_{n}" for n in vq.MEMORY_SYSCALLS} <= set(hooks)
    # Qiling's regions are the model's VMAs (the image came from vmalab's exec model)
    vmas = [(v.vm_start, v.vm_end) for v in ad.mm.tree]
    assert [(s, e) for s, e, *_ in ql.mem.map_info if s not in (0x30000, vq.VSYSCALL[0])] == vmas
    # mmap2: the offset is in pages
    got: list[int] = []

    def fake_mmap(ql_: object, a: int, n: int, p: int, f: int, fd: int, off: int) -> int:
        got.append(off)
        return 0

    ad.sys_mmap = fake_mmap  # type: ignore[method-assign,assignment]
    ad.sys_mmap2(ql, 0, 4096, C.PROT_READ, C.MAP_PRIVATE, 3, 5)
    assert got == [5 * 4096]
    # a memory syscall through the adapter: the model's return, Qiling's map in step
    a = ad.call("mmap", 0, 3 * 4096, C.PROT_READ | C.PROT_WRITE, C.MAP_PRIVATE | C.MAP_ANONYMOUS, -1, 0)
    assert ad.call("mprotect", a + 4096, 4096, C.PROT_NONE) == 0
    def prot_at(x: int) -> int:
        return next(p for s, e, p in ql.uc.mem_regions() if s <= x <= e)

    assert (prot_at(a), prot_at(a + 4096), prot_at(a + 8192)) == (3, 0, 3)
    assert ql.mem.read(a, 1) == b"\0"
    assert ad.call("munmap", a, 3 * 4096) == 0
    assert ad.call("munmap", a, 3 * 4096) == 0  # across nothing: 0, as the kernel (stock Qiling: UC_ERR_NOMEM)
    assert not any(s <= a < e + 1 for s, e, _ in ql.uc.mem_regions())


def test_imports_without_qiling() -> None:
    code = ("import sys; sys.modules['qiling'] = None\n"
            "import vmalab.adapters.qiling as q\n"
            "assert not q.HAVE_QILING\n"
            "try:\n    q.install(None)\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, check=True, text=True).stdout
    assert out.strip() == "vmalab.adapters.qiling needs Qiling: pip install 'vmalab[qiling]'"


@needs_qiling
def test_stock_comparison_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    """benchmarks/qiling_stock.py at a tiny size: one program, a well-formed row (divergences are measured,
    not asserted)."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "benchmarks"))
    import qiling_stock

    rows = qiling_stock.main(["maps"])
    assert [r["program"] for r in rows] == ["maps"]
    r = rows[0]
    assert r["native"] == ["exit 0"] and r["vmalab"] == ["exit 0"] and r["vmalab_same"]
    assert isinstance(r["stock_lines_differing"], int) and r["stock"].startswith(("exit", "crash", "status"))
    assert "| maps | exit 0 |" in capsys.readouterr().out
