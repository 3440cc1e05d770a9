"""Merge explanation (vmalab.explain, ``vmalab explain``, the merge verdicts of ``--trace``).

* Every corpus scenario whose name contains "merge": each verdict explain gives agrees with what the
  kernel recorded (a boundary the kernel kept is a refusal, a boundary it removed is a merge).
* The verdicts of every merge attempt agree with what the model then did (the whole corpus).
* A planted refusal per condition: an API sequence built to fail exactly that condition, and explain
  names it as the deciding one (and the model indeed keeps the VMAs apart).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from vmalab import constants as C
from vmalab.execute import ModelRunner
from vmalab.explain import CHECK_NAMES, MergeVerdict, explain_pair, merge_events
from vmalab.files import FileOperations
from vmalab.mm import MM
from vmalab.mm_types import VMA
from vmalab.scenario import load_scenario, parse_addr

from ..conftest import corpus_paths, load_json

B = 0x500000000000
K = 4096
RW = C.PROT_READ | C.PROT_WRITE
PRIV = C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_FIXED

ALL = corpus_paths()


def _long(path: str) -> bool:
    """A scenario that repeats an op thousands of times (the limit_* ones: a traced run takes seconds)."""
    return any(op.get("op") == "repeat" and isinstance(op.get("count"), int) and op["count"] > 1000
               for op in load_json(path).get("ops", []))


#: the corpus without its few long-running scenarios (each repeats an op up to 65,530 times)
SHORT = [p for p in ALL if not _long(p)]
MERGE = [p for p in ALL if "merge" in os.path.basename(p)[:-5]]
#: ops that never move a VMA boundary of the mm they run in
STILL = {"snapshot", "vma_count", "status", "mincore", "touch", "fork", "setrlimit", "capdrop", "ftruncate",
         "msync"}


def _ids(paths: list[str]) -> list[str]:
    return [os.path.basename(p)[:-5] for p in paths]


def _runner(path: str, trace: bool = True) -> tuple[ModelRunner, dict[str, Any]]:
    rec = load_json(path[:-5] + ".kernel.json")
    runner = ModelRunner(load_scenario(path), initial_maps=rec["env"].get("initial_maps"), trace=trace,
                         caps=rec["env"].get("caps"))
    return runner, rec


def _steps(runner: ModelRunner) -> Iterator[tuple[int, Any, list[Any]]]:
    """Run the scenario op by op: (index, op, the op's trace events)."""
    probe = runner.mm.probe
    for i, op in enumerate(runner.scn.ops):
        start = len(probe.events)
        probe.op_index = i
        with probe.in_syscall(op.op):
            runner.do(op)
        yield i, op, probe.events[start:]


def _kernel_vmas(runner: ModelRunner, result: dict[str, Any]) -> list[tuple[int, int]]:
    return [(runner.addr(parse_addr(v["start"])), runner.addr(parse_addr(v["end"]))) for v in result["vmas"]]


def _covering(vmas: list[tuple[int, int]], addr: int) -> tuple[int, int] | None:
    return next((v for v in vmas if v[0] <= addr < v[1]), None)


def test_there_are_merge_scenarios() -> None:
    assert len(MERGE) >= 40


@pytest.mark.parametrize("path", MERGE, ids=_ids(MERGE))
def test_verdicts_agree_with_the_kernel_recording(path: str) -> None:
    """Each merge attempt of an op that the recording snapshots right after (only non-moving ops between):
    where explain says "merges", the kernel shows one VMA across the boundary; where it says "no", the
    kernel keeps the boundary.  And at every kernel snapshot, explain_pair refuses every pair of adjacent
    VMAs the kernel kept apart, naming a condition."""
    runner, rec = _runner(path)
    results = rec["results"]
    ops = runner.scn.ops
    checked = 0
    pending: dict[int, tuple[int, MergeVerdict]] = {}  # boundary -> (op index, the last verdict on it)
    for i, op, events in _steps(runner):
        if op.op not in STILL:
            pending = {}
        for v in merge_events(events):
            if v.lower[1] == v.upper[0]:  # adjacent: a boundary the kernel either kept or removed
                pending[v.lower[1]] = (i, v)
        if op.op != "snapshot" or "vmas" not in results[i]:
            continue
        kvmas = _kernel_vmas(runner, results[i])
        lo_w = min((s for s, _ in kvmas), default=0)
        hi_w = max((e for _, e in kvmas), default=0)
        for b, (j, v) in pending.items():
            if not lo_w <= b <= hi_w:
                continue  # outside what the snapshot shows
            below, above = _covering(kvmas, b - 1), _covering(kvmas, b)
            kernel_merged = below is not None and below == above
            assert v.merges == kernel_merged, (
                f"op #{j} ({ops[j].op}): explain says {'merge' if v.merges else 'no merge'} at {b:#x}, the kernel "
                f"{'merged' if kernel_merged else 'kept the boundary'}:\n" + "\n".join(v.lines()))
            checked += 1
        pending = {}
        mm = runner.mm
        for (s1, e1), (s2, _) in zip(kvmas, kvmas[1:], strict=False):
            if e1 != s2:
                continue
            lower, upper = mm.vma_at(s1), mm.vma_at(s2)
            assert lower is not None and upper is not None and lower is not upper, (s1, s2)
            pv = explain_pair(mm, lower, upper)
            assert not pv.merges and pv.deciding is not None, "\n".join(pv.lines())
            checked += 1
    assert checked or not any(r.get("vmas") for r in results), "nothing was checked"


#: the refusal each "no merge" scenario is about, from its description (not from the model): the deciding
#: condition of a pair of adjacent VMAs the kernel kept apart in the last snapshot, and a word its detail
#: must name; a scenario with more than one kind of refusal lists each (every pair matches one of them, and
#: each is seen)
REFUSALS: dict[str, tuple[str, str] | list[tuple[str, str]]] = {
    "driver_disk_shared_adjacent_contiguous_merge": ("pgoff", "does not continue"),
    "driver_secretmem_noncontiguous_no_merge": ("pgoff", "does not continue"),
    "hugetlb_no_merge": [("vm_special", "VM_DONTEXPAND"), ("flags", "VM_NORESERVE")],  # anon nr vs plain
    "merge_ac_mismatch_blocks_merge": ("flags", "VM_ACCOUNT"),
    "merge_anon_distinct_anon_vmas_block_3way": ("anon_vma", "different anon_vmas"),
    "merge_devzero_private": ("file", "/dev/zero"),
    "merge_devzero_shared_never": ("file", "/dev/zero (deleted)"),
    "merge_growsdown_next_to_plain": ("flags", "VM_GROWSDOWN"),
    "merge_locked_vs_plain": ("flags", "VM_LOCKED"),
    "merge_memfd_shared_different_files": ("file", "memfd"),
    "merge_memfd_shared_noncontiguous": ("pgoff", "does not continue"),
    "merge_noreserve_vs_normal": ("flags", "VM_NORESERVE"),
    "merge_shared_anon_two_adjacent": ("file", "/dev/zero (deleted)"),
    "merge_stack_flag_vs_plain": ("flags", "VM_NOHUGEPAGE"),
    "mlock_merge_three_way": ("anon_vma", "different anon_vmas"),
    "selftest_merge_separately_faulted_no_merge": ("anon_vma", "different anon_vmas"),
}


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_the_deciding_condition_of_each_refusal_scenario(name: str) -> None:
    path = next(p for p in MERGE if os.path.basename(p) == name + ".json")
    runner, rec = _runner(path, trace=False)
    runner.run()
    last = [r for r in rec["results"] if r["op"] == "snapshot" and r.get("vmas")][-1]
    kvmas = _kernel_vmas(runner, last)
    mm = runner.mm
    spec = REFUSALS[name]
    wanted = spec if isinstance(spec, list) else [spec]
    seen = set()
    pairs = 0
    for (s1, e1), (s2, _) in zip(kvmas, kvmas[1:], strict=False):
        if e1 == s2:
            lower, upper = mm.vma_at(s1), mm.vma_at(s2)
            assert lower is not None and upper is not None
            v = explain_pair(mm, lower, upper)
            d = v.deciding
            hit = next((w for w in wanted if d is not None and d.name == w[0] and w[1] in d.detail), None)
            assert hit is not None, f"expected one of {wanted}:\n" + "\n".join(v.lines())
            seen.add(hit)
            pairs += 1
    assert seen == set(wanted), f"never decided by {set(wanted) - seen}"
    assert pairs, f"the kernel kept no adjacent pair apart in the last snapshot of {name}"


def _attempts(events: list[Any]) -> list[tuple[dict[str, MergeVerdict | None], str | None]]:
    """Split an op's trace into merge attempts: (verdict per side, the model's "merged with ..." event)."""
    out: list[tuple[dict[str, MergeVerdict | None], str | None]] = []
    cur: dict[str, MergeVerdict | None] | None = None
    for ev in events:
        w = ev.what
        if w.startswith("merge with "):
            side = w.split()[2].rstrip(":")
            if cur is None or side in cur:
                cur = {}
                out.append((cur, None))
            cur[side] = ev.detail.get("pair")
        elif w.startswith("merged with") and out:
            out[-1] = (out[-1][0], w)
            cur = None
        elif w.startswith("injected failure"):
            out = [(c, "failed") if m is None else (c, m) for c, m in out]
    return out


@pytest.mark.parametrize("path", SHORT, ids=_ids(SHORT))
def test_attempt_verdicts_agree_with_what_the_model_does(path: str) -> None:
    """Every merge attempt of the corpus (but the few scenarios that repeat an op thousands of times): the
    sides explain says merge are exactly the ones the model merges."""
    runner, _ = _runner(path)
    for i, op, events in _steps(runner):
        for sides, merged in _attempts(events):
            if merged == "failed":
                continue
            want = [s for s in ("prev", "next") if (v := sides.get(s)) is not None and v.merges]
            expect = {(): None, ("prev",): "merged with prev", ("next",): "merged with next",
                      ("prev", "next"): "merged with prev and next"}[tuple(want)]
            detail = "\n".join(line for v in sides.values() if v is not None for line in v.lines())
            assert merged == expect, f"op #{i} ({op.op}): explain: {want}, model: {merged}\n{detail}"


# ---------------------------------------------------------------------------------------------------
# planted refusals: one per condition
def _mm() -> MM:
    mm = MM()
    mm.tracing = True
    return mm


def _two(mm: MM) -> tuple[VMA, VMA]:
    lo, hi = mm.vma_at(B), mm.vma_at(B + 2 * K)
    assert lo is not None and hi is not None
    assert lo is not hi, "the model merged the planted pair"
    return lo, hi


def _refused(mm: MM, name: str) -> MergeVerdict:
    lo, hi = _two(mm)
    v = mm.explain_merge(B, B + 2 * K)
    assert not v.merges and v.deciding is not None, "\n".join(v.lines())
    assert v.deciding.name == name, "\n".join(v.lines())
    assert v.deciding is v.check(name) and not v.check(name).ok
    assert v.deciding.kernel_fn.endswith("()")
    return v


def test_planted_adjacent() -> None:
    mm = _mm()
    mm.mmap(B, 2 * K, RW, PRIV)
    mm.mmap(B + 3 * K, 2 * K, RW, PRIV)
    lo, hi = mm.vma_at(B), mm.vma_at(B + 3 * K)
    assert lo is not None and hi is not None and lo is not hi
    v = mm.explain_merge(lo, hi)
    assert v.deciding is not None and v.deciding.name == "adjacent" and "0x1000" in v.deciding.detail
    # the attempt of the second mmap says the same
    att = merge_events(mm.trace)
    assert att and att[-1].side == "prev" and att[-1].deciding is not None and att[-1].deciding.name == "adjacent"


def test_planted_flags() -> None:
    mm = _mm()
    mm.mmap(B, 2 * K, C.PROT_READ, PRIV)
    mm.mmap(B + 2 * K, 2 * K, C.PROT_READ | C.PROT_EXEC, PRIV)
    v = _refused(mm, "flags")
    assert "VM_EXEC" in v.deciding.detail if v.deciding else False
    assert v.check("seal").ok


def test_planted_vm_special() -> None:
    """Two adjacent VM_PFNMAP mappings of /dev/mem-like memory: same flags, file and offsets, never merged."""
    mm = _mm()
    fd = mm.open_device("/dev/pfnpair", PfnDriver(), 1 << 20)
    mm.mmap(B, 2 * K, RW, C.MAP_SHARED | C.MAP_FIXED, fd, 0)
    mm.mmap(B + 2 * K, 2 * K, RW, C.MAP_SHARED | C.MAP_FIXED, fd, 2 * K)
    v = _refused(mm, "vm_special")
    assert "VM_PFNMAP" in v.check("vm_special").detail
    for check in ("flags", "file", "pgoff"):
        assert v.check(check).ok, "\n".join(v.lines())


def test_planted_seal() -> None:
    mm = _mm()
    mm.mmap(B, 4 * K, C.PROT_READ, PRIV)
    mm.mseal(B + 2 * K, 2 * K)
    v = _refused(mm, "seal")
    assert v.check("flags").ok and "VM_SEALED" in v.check("seal").detail


def test_planted_file() -> None:
    mm = _mm()
    a, b = mm.memfd_create("a", 1 << 20), mm.memfd_create("b", 1 << 20)
    mm.mmap(B, 2 * K, RW, C.MAP_SHARED | C.MAP_FIXED, a, 0)
    mm.mmap(B + 2 * K, 2 * K, RW, C.MAP_SHARED | C.MAP_FIXED, b, 2 * K)
    v = _refused(mm, "file")
    assert "memfd:a" in v.check("file").detail and "memfd:b" in v.check("file").detail
    assert v.check("pgoff").ok


def test_planted_pgoff() -> None:
    mm = _mm()
    fd = mm.memfd_create("p", 1 << 20)
    mm.mmap(B, 2 * K, RW, C.MAP_SHARED | C.MAP_FIXED, fd, 0)
    mm.mmap(B + 2 * K, 2 * K, RW, C.MAP_SHARED | C.MAP_FIXED, fd, 8 * K)
    v = _refused(mm, "pgoff")
    assert v.check("file").ok and "= 0x2" in v.check("pgoff").detail and "upper pgoff 0x8" in v.check("pgoff").detail
    att = merge_events(mm.trace)[-1]  # the second mmap's prev side (nothing above it)
    assert att.side == "prev" and att.deciding is not None and att.deciding.name == "pgoff"


def test_planted_anon_vma_distinct() -> None:
    """Two written neighbours that were never one VMA: each has its own anon_vma (the second was faulted
    while VM_LOCKED kept them incompatible); munlock makes the flags agree, the anon_vmas still differ."""
    mm = _mm()
    mm.mmap(B, 2 * K, RW, PRIV)
    mm.touch(B, True)
    mm.mmap(B + 2 * K, 2 * K, RW, PRIV | C.MAP_LOCKED)
    mm.touch(B + 2 * K, True)
    mm.munlock(B + 2 * K, 2 * K)  # the attempt: flags agree now, the anon_vmas do not
    v = _refused(mm, "anon_vma")
    assert "different anon_vmas" in v.check("anon_vma").detail
    att = [a for a in merge_events(mm.trace) if a.side == "prev"][-1]
    assert att.deciding is not None and att.deciding.name == "anon_vma"


def test_planted_anon_vma_uncowed_parent() -> None:
    """A fork child's VMA with an inherited anon_vma next to one without: vma_had_uncowed_parents()."""
    parent = _mm()
    parent.mmap(B, 2 * K, RW, PRIV)
    parent.touch(B, True)
    mm = parent.fork()
    mm.tracing = True
    mm.mmap(B + 2 * K, 2 * K, C.PROT_READ, PRIV)
    mm.mprotect(B + 2 * K, 2 * K, RW)
    v = _refused(mm, "anon_vma")
    assert "inherited over fork" in v.check("anon_vma").detail
    assert v.check("anon_vma").kernel_fn == "vma_had_uncowed_parents()"
    # in the parent, the same sequence merges (its anon_vma chain is its own)
    parent.mmap(B + 2 * K, 2 * K, C.PROT_READ, PRIV)
    parent.mprotect(B + 2 * K, 2 * K, RW)
    assert parent.vma_at(B) is parent.vma_at(B + 2 * K)


def test_planted_anon_vma_prev_next() -> None:
    """Filling the gap between two VMAs with different anon_vmas: prev merges, next cannot join too."""
    mm = _mm()
    mm.mmap(B, K, RW, PRIV)
    mm.touch(B, True)
    mm.mmap(B + 2 * K, K, RW, PRIV)
    mm.touch(B + 2 * K, True)
    mm.mmap(B + K, K, RW, PRIV)
    prev, nxt = merge_events(mm.trace)[-2:]
    assert prev.side == "prev" and prev.merges
    assert nxt.side == "next" and nxt.deciding is not None and nxt.deciding.name == "anon_vma_prev_next"
    assert mm.vma_at(B) is mm.vma_at(B + K) and mm.vma_at(B + K) is not mm.vma_at(B + 2 * K)


def test_planted_anon_name() -> None:
    mm = _mm()
    mm.anon_vma_name_enabled = True  # CONFIG_ANON_VMA_NAME (off on the live kernel)
    mm.mmap(B, 4 * K, RW, PRIV)
    assert mm.sys_set_vma_anon_name(B + 2 * K, 2 * K, "x") == 0
    v = _refused(mm, "anon_name")
    assert "'x'" in v.check("anon_name").detail and v.check("flags").ok


def test_planted_vm_ops_close() -> None:
    """A driver VMA with ->close split by mprotect and given its flags back: the merge would remove it."""
    mm = _mm()
    fd = mm.open_device("/dev/closing", ClosingDriver(), 1 << 20)
    mm.mmap(B, 4 * K, RW, C.MAP_SHARED | C.MAP_FIXED, fd, 0)
    mm.mprotect(B + 2 * K, 2 * K, C.PROT_READ)
    mm.mprotect(B + 2 * K, 2 * K, RW)
    _refused(mm, "vm_ops_close")
    att = [a for a in merge_events(mm.trace) if a.side == "prev"][-1]
    assert att.deciding is not None and att.deciding.name == "vm_ops_close"


def test_unmodelled_conditions_are_listed_as_holding() -> None:
    mm = _mm()
    mm.mmap(B, 2 * K, C.PROT_READ, PRIV)
    mm.mmap(B + 2 * K, 2 * K, C.PROT_READ | C.PROT_EXEC, PRIV)
    v = mm.explain_merge(B, B + 2 * K)
    assert [c.name for c in v.checks] == [n for n in CHECK_NAMES if n != "anon_vma_prev_next"]
    for name in ("mempolicy", "userfaultfd"):
        assert v.check(name).ok and "not modelled: always equal here" in v.check(name).detail


def test_a_merge_names_no_condition() -> None:
    mm = _mm()
    mm.mmap(B, 2 * K, C.PROT_READ, PRIV)
    mm.mmap(B + 2 * K, 2 * K, C.PROT_READ | C.PROT_EXEC, PRIV)
    mm.mprotect(B + 2 * K, 2 * K, C.PROT_READ)
    att = [a for a in merge_events(mm.trace) if a.op == "mprotect" and a.side == "prev"]
    assert att and att[-1].merges and att[-1].deciding is None and all(c.ok for c in att[-1].checks)
    assert "merge (all" in att[-1].lines()[0]
    j = att[-1].to_json()
    assert j["merges"] is True and j["deciding"] is None and j["lower"] == [f"{B:#x}", f"{B + 2 * K:#x}"]
    json.dumps(j)


def test_explain_merge_errors() -> None:
    mm = MM()
    mm.mmap(B, 2 * K, RW, PRIV)
    mm.mmap(B + 4 * K, 2 * K, C.PROT_READ, PRIV)
    mm.mmap(B + 8 * K, 2 * K, RW, PRIV)
    with pytest.raises(ValueError, match="no VMA at 0x500000002000"):
        mm.explain_merge(B, B + 2 * K)
    with pytest.raises(ValueError, match="same VMA"):
        mm.explain_merge(B, B + K)
    with pytest.raises(ValueError, match="not neighbours"):
        mm.explain_merge(B, B + 8 * K)
    v = mm.explain_merge(B + 4 * K, B)  # either order
    assert v.lower == (B, B + 2 * K) and v.deciding is not None and v.deciding.name == "adjacent"


def test_the_trace_says_why_for_every_attempt() -> None:
    mm = _mm()
    mm.mmap(B, 2 * K, C.PROT_READ, PRIV)
    mm.mmap(B + 2 * K, 2 * K, C.PROT_READ | C.PROT_EXEC, PRIV)
    mm.mprotect(B + 2 * K, 2 * K, C.PROT_READ)
    lines = [str(ev) for ev in mm.trace]
    assert any(ln.startswith("mmap: merge with prev: no (why=flags (VM_EXEC only on the range; is_mergeable_vma()) "
                             "pair=500000000000-500000002000|500000002000-500000004000)") for ln in lines), lines
    assert any(ln.startswith("mprotect: merge with prev: yes") for ln in lines), lines
    assert "mprotect: merged with prev" in "\n".join(lines)


@pytest.mark.pure_only(reason="monkeypatches vmalab.vma.trace_merge_attempt, which compiled callers bind at "
                        "compile time")
def test_no_explanation_work_when_tracing_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    import vmalab.vma

    def boom(*args: Any) -> None:
        raise AssertionError("trace_merge_attempt called with tracing off")

    monkeypatch.setattr(vmalab.vma, "trace_merge_attempt", boom)
    mm = MM()
    mm.mmap(B, 2 * K, C.PROT_READ, PRIV)
    mm.mmap(B + 2 * K, 2 * K, C.PROT_READ | C.PROT_EXEC, PRIV)
    mm.mprotect(B + 2 * K, 2 * K, C.PROT_READ)
    assert mm.vma_at(B) is mm.vma_at(B + 2 * K)
    mm.tracing = True
    with pytest.raises(AssertionError, match="tracing off"):
        mm.mprotect(B, 2 * K, RW)


# ---------------------------------------------------------------------------------------------------
# drivers for the planted refusals
class PfnDriver(FileOperations):
    """A /dev/mem-like device: mmap_prepare asks for VM_PFNMAP|VM_IO|VM_DONTEXPAND (remap_pfn_range())."""

    has_mmap_prepare = True

    def mmap_prepare(self, desc: Any) -> int:
        desc.vm_flags |= C.VM_PFNMAP | C.VM_IO | C.VM_DONTEXPAND | C.VM_DONTDUMP
        return 0


class ClosingDriver(FileOperations):
    """A device whose VMAs have vm_ops->close."""

    has_mmap_prepare = True

    def mmap_prepare(self, desc: Any) -> int:
        from vmalab.files import VmOperations

        class Ops(VmOperations):
            has_close = True

            def close(self, vma: VMA) -> None:
                pass

        desc.vm_ops = Ops()
        return 0


# ---------------------------------------------------------------------------------------------------
# the command
def vmalab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vmalab", *args], capture_output=True, text=True, timeout=120)


SCN = os.path.join(os.path.dirname(os.path.dirname(__file__)), "scenarios")


def test_cli_explain_at() -> None:
    r = vmalab("explain", os.path.join(SCN, "merge_rx_vs_r.json"), "--at", "base+0")
    assert r.returncode == 0, r.stderr
    assert "the VMA at 0x500000000000 is 0x500000000000-0x500000004000" in r.stdout
    assert "with prev:" in r.stdout and "with next:" in r.stdout and "<- decides" in r.stdout


def test_cli_explain_last_attempt_json() -> None:
    r = vmalab("explain", "--json", os.path.join(SCN, "merge_anon_distinct_anon_vmas_block_3way.json"))
    assert r.returncode == 0, r.stderr
    j = json.loads(r.stdout)
    sides = {a["side"]: a for a in j["attempts"]}
    assert sides["prev"]["merges"] is True and sides["next"]["deciding"] == "anon_vma_prev_next"
    assert j["op"] == "mmap"


def test_cli_explain_names_the_refusal_of_a_scenario(tmp_path: Any) -> None:
    scn = {"name": "flags_refusal", "ops": [
        {"op": "mmap", "addr": "base+0", "len": "8K", "prot": "PROT_READ",
         "flags": "MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED"},
        {"op": "mmap", "addr": "base+8K", "len": "8K", "prot": "PROT_READ|PROT_EXEC",
         "flags": "MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED"}]}
    p = os.path.join(str(tmp_path), "s.json")
    with open(p, "w", encoding="utf-8") as f:
        json.dump(scn, f)
    r = vmalab("explain", p, "--at", "base+8K", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["prev"]["deciding"] == "flags"
    r = vmalab("explain", p)
    assert r.returncode == 0 and "no merge: flags: VM_EXEC only on the range" in r.stdout, r.stdout


@pytest.mark.parametrize("args, message", [
    (["--at", "base+800M"], "no VMA at 0x500032000000"),
    (["--at", "zzz"], "bad address"),
    (["--at", "fail+0"], "bad address"),
])
def test_cli_explain_errors(args: list[str], message: str) -> None:
    r = vmalab("explain", os.path.join(SCN, "merge_rx_vs_r.json"), *args)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and message in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_cli_explain_bad_scenarios(tmp_path: Any) -> None:
    bad = os.path.join(str(tmp_path), "bad.json")
    with open(bad, "w", encoding="utf-8") as f:
        f.write("{")
    for path in (bad, os.path.join(str(tmp_path), "missing.json")):
        r = vmalab("explain", path)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    quiet = os.path.join(str(tmp_path), "quiet.json")
    with open(quiet, "w", encoding="utf-8") as f:
        json.dump({"name": "quiet", "ops": [{"op": "snapshot"}]}, f)
    r = vmalab("explain", quiet)
    assert r.returncode == 2 and "no op attempted a merge" in r.stderr and r.stderr.count("\n") == 1


def test_docs_examples_are_true() -> None:
    """docs/explain.md: its Python example runs, and the output lines it quotes are what the tool prints."""
    import re

    root = os.path.dirname(SCN)
    with open(os.path.join(os.path.dirname(root), "docs", "explain.md"), encoding="utf-8") as f:
        text = f.read()
    for block in re.findall(r"```python\n(.*?)```", text, flags=re.S):
        exec(compile(block, "docs/explain.md", "exec"), {})  # noqa: S102
    for cmd, quoted in re.findall(r"```\n\$ vmalab (.*?)\n(.*?)```", text, flags=re.S):
        args = [a.replace("tests/scenarios/", SCN + "/") for a in cmd.split()]
        r = vmalab(*args)
        assert r.returncode == 0, r.stderr
        out = r.stdout.splitlines()
        for line in quoted.splitlines():
            if not line.strip() or line.strip() == "...":
                continue
            if line.endswith("..."):  # an elided line: its start
                ok = any(o.startswith(line[:-3]) for o in out)
            else:
                ok = line.rstrip() in [o.rstrip() for o in out]
            assert ok, f"docs/explain.md quotes {line!r}; {cmd} prints:\n" + r.stdout


def test_cli_explain_under_another_profile_and_a_raising_driver(tmp_path: Any) -> None:
    r = vmalab("explain", "--kernel-profile", "7.1", "--json", os.path.join(SCN, "merge_rx_vs_r.json"))
    assert r.returncode == 0, r.stderr
    assert [a["merges"] for a in json.loads(r.stdout)["attempts"] if a["side"] == "prev"] == [True]
    drv = os.path.join(str(tmp_path), "oops.py")
    with open(drv, "w", encoding="utf-8") as f:
        f.write("from vmalab.files import FileOperations\n"
                "class Oops(FileOperations):\n"
                "    has_mmap_prepare = True\n"
                "    def mmap_prepare(self, desc):\n"
                "        raise RuntimeError('driver bug')\n")
    scn = os.path.join(str(tmp_path), "s.json")
    with open(scn, "w", encoding="utf-8") as f:
        json.dump({"name": "oops", "ops": [{"op": "mmap", "addr": "base+0", "len": "4K", "prot": "PROT_READ",
                                            "flags": "MAP_SHARED|MAP_FIXED", "fd": "dev:oops", "offset": 0}]}, f)
    r = vmalab("explain", "--driver", drv + ":Oops", scn)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert "the run stopped at op 0: RuntimeError: driver bug" in r.stderr, r.stderr


def test_a_traced_verdict_describes_the_state_of_its_attempt() -> None:
    """The trace keeps copies of what each attempt read: reading a verdict after the VMAs changed (or went)
    still describes the attempt, not the mm as it is now."""
    mm = _mm()
    mm.mmap(B, 2 * K, C.PROT_READ, PRIV)
    mm.mmap(B + 2 * K, 2 * K, C.PROT_READ | C.PROT_EXEC, PRIV)
    ev = next(e for e in mm.trace if e.what == "merge with prev: no")
    mm.mprotect(B + 2 * K, 2 * K, C.PROT_READ)  # now they merge ...
    mm.munmap(B, 4 * K)  # ... and are gone
    v = ev.detail["pair"]
    assert (v.lower, v.upper) == ((B, B + 2 * K), (B + 2 * K, B + 4 * K))
    assert v.deciding is not None and v.deciding.name == "flags" and v.deciding is v.check("flags")
    assert "VM_EXEC only on the range" in v.deciding.detail and v.check("adjacent").ok
    assert str(ev) == ("mmap: merge with prev: no (why=flags (VM_EXEC only on the range; is_mergeable_vma()) "
                       "pair=500000000000-500000002000|500000002000-500000004000)")
    assert v.to_json()["deciding"] == "flags" and [c.name for c in v.checks] == [n for n in CHECK_NAMES
                                                                               if n != "anon_vma_prev_next"]
