"""Issue 11: a driver file usable from the command line (``--driver``, ``vmalab drivers``, explore's
reproducers and ``--replay``), and a trace to trust (each callback labelled with its syscall and op, printed
below its op, with the locks the kernel holds and the action's PFN, range and protection)."""

from __future__ import annotations

import glob
import json
import os
import textwrap

from .test_cli import vmalab, write

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "drivers")
ANON = "MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED"

#: A driver that counts its VMAs in vm_ops->open / ->close (the trace shows both).
COUNTING = textwrap.dedent('''
    from vmalab.driver import VmAreaDesc
    from vmalab.files import FileOperations, VmOperations
    from vmalab.mm_types import VMA


    class CountOps(VmOperations):
        has_close = True

        def __init__(self) -> None:
            self.n = 0

        def open(self, vma: VMA) -> None:
            self.n += 1

        def close(self, vma: VMA) -> None:
            self.n -= 1


    class Counting(FileOperations):
        has_mmap_prepare = True

        def __init__(self) -> None:
            self.vm_ops = CountOps()

        def mmap_prepare(self, desc: VmAreaDesc) -> int:
            desc.vm_ops = self.vm_ops
            return 0
''')


def _driver(tmp_path: object, name: str = "counting.py", text: str = COUNTING) -> str:
    p = os.path.join(str(tmp_path), name)
    with open(p, "w", encoding="utf-8") as f:
        f.write(text)
    return p


def _scenario(fd: str, *more: dict[str, object]) -> dict[str, object]:
    return {"name": "own", "kernel_profile": "7.1", "ops": [
        {"op": "mmap", "addr": "base+0", "len": "16K", "prot": "PROT_READ|PROT_WRITE", "flags": "MAP_SHARED|MAP_FIXED",
         "fd": fd}, *more]}


def test_run_loads_a_driver_file_named_on_the_command_line(tmp_path: object) -> None:
    drv = _driver(tmp_path)
    scn = write(tmp_path, _scenario("dev:counting", {"op": "snapshot"}))
    r = vmalab("run", "--driver", drv, scn)
    assert r.returncode == 0, r.stderr
    assert "/dev/counting" in r.stdout
    r = vmalab("maps", "--driver", drv, scn)
    assert r.returncode == 0 and "/dev/counting" in r.stdout, r.stderr
    # without --driver the scenario names an unknown driver: a one-line error, no code loaded
    r = vmalab("run", scn)
    assert r.returncode == 2 and "--driver FILE.py" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    # bad --driver values: one line each
    for bad, needle in (("nosuch.py", "no such driver file"), ("devzero", "a built-in driver")):
        r = vmalab("run", "--driver", bad, scn)
        assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = vmalab("run", "--kernel", "--driver", drv, scn)
    assert r.returncode == 2 and "--kernel cannot be combined with --driver" in r.stderr


def test_two_drivers_by_name(tmp_path: object) -> None:
    a = _driver(tmp_path, "one.py")
    b = _driver(tmp_path, "two.py")
    scn = write(tmp_path, _scenario("dev:one", {"op": "mmap", "addr": "base+64K", "len": "4K", "prot": "PROT_READ",
                                                "flags": "MAP_SHARED|MAP_FIXED", "fd": "dev:two"}))
    r = vmalab("run", "--driver", a, "--driver", b, scn)
    assert r.returncode == 0, r.stderr
    assert "/dev/one" in r.stdout and "/dev/two" in r.stdout
    r = vmalab("run", "--driver", a, "--driver", a, scn)
    assert r.returncode == 2 and "loaded already" in r.stderr


def test_a_scenario_alone_never_imports_a_file(tmp_path: object) -> None:
    marker = os.path.join(str(tmp_path), "imported")
    _driver(tmp_path, "evil.py", f"open({marker!r}, 'w').write('x')\n")
    for fd in ("dev:evil.py", "dev:evil", f"dev:{tmp_path}/evil.py"):
        scn = write(tmp_path, _scenario(fd))
        r = subprocess_in(str(tmp_path), "run", scn)
        assert r.returncode == 2 and "Traceback" not in r.stderr, (fd, r.stderr)
        assert not os.path.exists(marker), fd


def subprocess_in(cwd: str, *args: str) -> object:
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-m", "vmalab", *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})


def test_drivers_lists_the_built_in_ones() -> None:
    r = vmalab("drivers")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    names = [ln.split()[0] for ln in lines]
    assert {"devzero", "devmem", "iomem", "secretmem"} <= set(names) and names == sorted(names)
    assert all(len(ln.split(None, 1)) == 2 and len(ln) <= 100 for ln in lines), lines
    assert any(ln.startswith("devmem") and "drivers/char/mem.c" in ln for ln in lines)


def test_explore_help_states_the_profile_it_runs() -> None:
    from vmalab.cli import EXPLORE_DEFAULT_PROFILE
    r = vmalab("explore", "--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    assert f"default: {EXPLORE_DEFAULT_PROFILE};" in text and EXPLORE_DEFAULT_PROFILE == "7.1"
    assert "6.18)" not in text.split("--kernel-profile")[1].split("--all-profiles")[0].replace("else 6.18)", "")


def test_reproducer_runs_with_run_driver_and_replays_with_trace(tmp_path: object) -> None:
    drv = os.path.join(EXAMPLES, "afs_ref.py")
    out = os.path.join(str(tmp_path), "out")
    r = vmalab("explore", drv, "--no-pairs", "--out", out)
    assert r.returncode == 1, r.stderr  # afs_ref has a planted bug
    repros = sorted(glob.glob(os.path.join(out, "*.json")))
    assert repros
    for p in repros:
        r = vmalab("run", "--driver", drv, "--trace", p)
        assert r.returncode == 0, (p, r.stderr)
        assert "mmap_prepare" in r.stdout and "# final /proc/self/maps (model)" in r.stdout
    # --replay of the fixed driver finds nothing, and still prints the trace and the maps
    r = vmalab("explore", os.path.join(EXAMPLES, "afs_ref_fixed.py"), "--replay", repros[0])
    assert r.returncode == 0, r.stderr
    assert "trace: #0 mmap: mmap_prepare" in r.stdout and "# final /proc/self/maps (model)" in r.stdout
    assert r.stdout.rstrip().endswith("no findings")


def test_trace_is_interleaved_and_labelled_with_the_syscall(tmp_path: object) -> None:
    drv = _driver(tmp_path)
    scn = write(tmp_path, _scenario(
        "dev:counting",
        {"op": "mprotect", "addr": "base+4K", "len": "4K", "prot": "PROT_READ"},
        {"op": "mlock", "addr": "base+12K", "len": "4K"},
        {"op": "madvise", "addr": "base+16K", "len": "4K", "advice": "MADV_DONTFORK"},
        {"op": "mseal", "addr": "base+20K", "len": "4K"},
        {"op": "mremap", "old": "base+12K", "old_len": "4K", "new_len": "4K",
         "flags": "MREMAP_MAYMOVE|MREMAP_FIXED", "new_addr": "base+1M"},
        {"op": "munmap", "addr": "base+4K", "len": "4K"}))
    raw = json.loads(open(scn, encoding="utf-8").read())
    raw["ops"][0]["len"] = "32K"
    scn = write(tmp_path, raw)
    r = vmalab("run", "--driver", drv, "--trace", scn)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split("# final /proc/self/maps")[0].splitlines()
    op_rows = {int(ln.split()[0]): k for k, ln in enumerate(lines) if ln[:3].strip().isdigit()}

    def trace_of(i: int) -> list[str]:
        start = op_rows[i] + 1
        end = op_rows.get(i + 1, len(lines))
        return [ln.strip() for ln in lines[start:end] if ln.strip().startswith("trace:")]

    W = "(locks=mmap_lock:write)"
    assert f"trace: #0 mmap: mmap_prepare {W}" in trace_of(0)
    assert f"trace: #1 mprotect: open {W}" in trace_of(1)
    assert f"trace: #2 mlock: open {W}" in trace_of(2)
    assert f"trace: #3 madvise: open {W}" in trace_of(3)
    assert f"trace: #4 mseal: open {W}" in trace_of(4)
    # move_vma() write-locks the source VMA (base+12K) before copy_vma() calls ->open on the copy
    assert "trace: #5 mremap: open (locks=mmap_lock:write vma:0x500000003000)" in trace_of(5), trace_of(5)
    assert f"trace: #6 munmap: close {W}" in trace_of(6)
    assert not any("locks=-" in ln or ": mmap: open" in ln or ": mmap: close" in ln for ln in lines)
    assert "# trace" not in r.stdout  # no trailing block: each line is below its op


def test_action_lines_carry_pfn_range_and_protection(tmp_path: object) -> None:
    scn = write(tmp_path, {"name": "act", "kernel_profile": "7.1", "ops": [
        {"op": "mmap", "addr": "base+0", "len": "8K", "prot": "PROT_READ", "flags": "MAP_SHARED|MAP_FIXED",
         "fd": "dev:iomem"}]})
    r = vmalab("run", "--trace", scn)
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if "action REMAP_PFN ok" in ln)
    assert "pfn=0x" in line and "start=0x500000000000 end=0x500000002000" in line and "pgprot=0x" in line
