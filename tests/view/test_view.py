"""``vmalab view`` in a real headless browser: the page's VMA blocks, their order, colours and tooltips are
what the model's ``maps()`` / ``smaps()`` say (and, for recorded programs and live processes, what the
kernel said), the marks sit where the mm's fields put them, and no page logs a console error."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Any

import pytest

from vmalab import MM
from vmalab import constants as C
from vmalab.execute import ModelRunner
from vmalab.procfs import maps, smaps
from vmalab.scenario import load_scenario, parse_scenario
from vmalab.view import PALETTE, lanes_from_pid, lanes_from_program, lanes_from_scenario, render_html, view_mm

from ..conftest import ROOT, SCENARIO_DIR
from .conftest import open_html

#: scenarios whose last lane is checked block by block: every kind (stack, heap, code, data, rodata, guard,
#: io) and W+X, splits, merges, guard regions, fork, mremap, mseal, drivers under two profiles
DOM_SCENARIOS = ["split_mprotect_middle", "merge_anon_fill_gap_3way", "merge_anon_distinct_anon_vmas_block_3way",
                 "madvise_guard_merge_split", "brk_growsdown_gap", "brk_split_heap_names", "file_prot_exec_memfd_tmpfs",
                 "fork_guard_inherited_anon", "mremap_move_middle_splits_source", "mseal_middle_split",
                 "driver_devmem_remap", "driver_kpages_rss", "mprotect_growsdown_on_plain", "fork_layout_preserved",
                 "special_vdso_vvar_faults"]

_MAPS = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S{4}) (\S+) (\S+) (\d+)\s*(.*)$")


def parse_maps(text: str) -> list[dict[str, Any]]:
    """The maps lines (the [vsyscall] gate area, which is no VMA, left out)."""
    out = []
    for line in text.splitlines():
        m = _MAPS.match(line)
        assert m, line
        if m.group(7) == "[vsyscall]":
            continue
        out.append({"start": m.group(1), "end": m.group(2), "perms": m.group(3), "ino": int(m.group(6)),
                    "name": m.group(7), "line": line})
    return out


def smaps_fields(text: str) -> list[dict[str, str]]:
    """Per VMA of an smaps text: its Rss (kB) and VmFlags."""
    out: list[dict[str, str]] = []
    for line in text.splitlines():
        if _MAPS.match(line):
            out.append({})
        elif line.startswith("Rss:"):
            out[-1]["Rss"] = line.split()[1]
        elif line.startswith("VmFlags:"):
            out[-1]["VmFlags"] = line.split(":", 1)[1].strip()
    return out


def expected_kind(v: dict[str, Any], vmflags: str) -> str:
    """The kind from what maps and smaps show, by pwndbg's rules (guard: no access; [stack] or a
    growsdown VMA; [heap]; a file mapping of device memory (io, pf or mm flag); executable; writable; the
    rest read-only)."""
    flags = set(vmflags.split())
    if v["perms"][:3] == "---":
        return "guard"
    if v["name"] == "[stack]" or "gd" in flags:
        return "stack"
    if v["name"] == "[heap]":
        return "heap"
    if v["ino"] and flags & {"io", "pf", "mm"}:
        return "io"
    if v["perms"][2] == "x":
        return "code"
    if v["perms"][1] == "w":
        return "data"
    return "rodata"


def rgb(hex_colour: str) -> str:
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


def final_mm(path: str) -> MM:
    runner = ModelRunner(load_scenario(path))
    runner.run()
    return runner.mm


def blocks(page: Any, lane: int = -1) -> list[dict[str, Any]]:
    return page.evaluate("""(lane) => {
        const s = document.querySelectorAll('section.lane'); const sec = s[lane < 0 ? s.length + lane : lane];
        return Array.from(sec.querySelectorAll('rect.vma')).map(r => ({start: r.dataset.start, end: r.dataset.end,
            kind: r.dataset.kind, perms: r.dataset.perms, fill: getComputedStyle(r).fill,
            x: +r.getAttribute('x'), w: +r.getAttribute('width'), chg: r.classList.contains('chg')}));
    }""", lane)


def tooltip(page: Any, lane: int, i: int) -> list[str]:
    el = page.locator("section.lane").nth(lane).locator("rect.vma").nth(i)
    el.hover()
    page.wait_for_function("!document.getElementById('tip').hidden")
    return str(page.locator("#tip").text_content()).split("\n")


@pytest.mark.parametrize("name", DOM_SCENARIOS)
def test_last_lane_is_maps_and_smaps(name: str, page: Any, tmp_path: Any) -> None:
    path = os.path.join(SCENARIO_DIR, name + ".json")
    lanes = lanes_from_scenario(path)
    open_html(page, render_html(lanes, title=name), tmp_path / "view.html")
    mm = final_mm(path)
    want = parse_maps(maps(mm))
    sm = smaps_fields(smaps(mm))
    assert len(sm) == len(want)
    nlanes = page.locator("section.lane").count()
    assert nlanes == len(load_scenario(path).ops) + 1  # the initial state and one lane per op
    assert page.evaluate("Array.from(document.querySelectorAll('section.lane')).map(s => +s.dataset.lane)") == list(
        range(nlanes))
    got = blocks(page)
    # the number of blocks and their order
    assert [(b["start"], b["end"], b["perms"]) for b in got] == [(v["start"], v["end"], v["perms"]) for v in want]
    assert [b["x"] for b in got] == sorted(b["x"] for b in got)
    # colour by kind
    for b, v, s in zip(got, want, sm, strict=True):
        kind = expected_kind(v, s["VmFlags"])
        assert b["kind"] == kind, v["line"]
        assert b["fill"] == rgb(PALETTE[kind]), (v["line"], b["fill"])
    # W+X VMAs are underlined (one underline each, under its block)
    wx = [b for b, v in zip(got, want, strict=True) if v["perms"][1:3] == "wx"]
    under = page.evaluate("Array.from(document.querySelectorAll('section.lane:last-of-type rect.wx')).map("
                          "r => +r.getAttribute('x'))")
    assert sorted(under) == sorted(b["x"] for b in wx)
    # the tooltip of every block: the maps line, VmFlags, the VM_MAY* bits, Rss, the profile
    for i, (v, s) in enumerate(zip(want, sm, strict=True)):
        tip = tooltip(page, -1, i)
        assert tip[0] == v["line"]
        assert tip[1] == f"VmFlags: {s['VmFlags']}"
        may = {"mr": "VM_MAYREAD", "mw": "VM_MAYWRITE", "me": "VM_MAYEXEC", "ms": "VM_MAYSHARE"}
        assert tip[2] == "VM_MAY*: " + (" ".join(n for f, n in may.items() if f in s["VmFlags"].split()) or "none")
        assert tip[5].startswith(f"Rss: {s['Rss']} kB of ")
        assert tip[4].endswith(f"; profile {mm.profile.name}")
        assert tip[6].startswith("merge with prev: ") and tip[7].startswith("merge with next: ")
        if i + 1 < len(want) and want[i + 1]["start"] != v["end"]:
            gap = int(want[i + 1]["start"], 16) - int(v["end"], 16)
            assert tip[7].startswith("merge with next: not adjacent (a gap of "), tip[7]
            assert gap > 0
    assert page.errors == []


def test_verdicts_are_explain_pairs(page: Any, tmp_path: Any) -> None:
    """The tooltip's verdict for two adjacent VMAs is vmalab.explain's (would merge / no merge and the
    deciding condition), and the side panel lists every check."""
    from vmalab.explain import explain_pair
    path = os.path.join(SCENARIO_DIR, "merge_anon_distinct_anon_vmas_block_3way.json")
    open_html(page, render_html(lanes_from_scenario(path)), tmp_path / "v.html")
    mm = final_mm(path)
    vmas = list(mm.tree)
    checked = 0
    for i in range(len(vmas) - 1):
        a, b = vmas[i], vmas[i + 1]
        if a.vm_end != b.vm_start:
            continue
        v = explain_pair(mm, a, b)
        tip = tooltip(page, -1, i)
        assert tip[7].startswith("merge with next: " + ("would merge" if v.merges else "no merge")), tip[7]
        if v.deciding is not None:
            assert v.deciding.name in tip[7]
        page.locator("section.lane").last.locator("rect.vma").nth(i).click()
        panel = str(page.locator("#panel").text_content())
        if v.checks:
            assert "checks against next:" in panel
            assert all(c.name in panel for c in v.checks)
        checked += 1
    assert checked >= 2
    assert page.errors == []


def test_changed_blocks_are_outlined(page: Any, tmp_path: Any) -> None:
    """A block is outlined when its VMA is new or changed since the lane above: after an mprotect of the
    middle page, the three pieces (and nothing else); after mprotect back, the one merged VMA."""
    raw = {"name": "split_and_merge", "ops": [
        {"op": "mmap", "addr": "base+0", "len": "12K", "prot": "PROT_READ|PROT_WRITE",
         "flags": "MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED", "fd": "none", "offset": 0},
        {"op": "mprotect", "addr": "base+4K", "len": "4K", "prot": "PROT_READ"},
        {"op": "mprotect", "addr": "base+4K", "len": "4K", "prot": "PROT_READ|PROT_WRITE"}]}
    open_html(page, render_html(lanes_from_scenario(raw)), tmp_path / "v.html")
    base = 0x500000000000
    # the truth, op by op, from the model's maps
    runner = ModelRunner(parse_scenario(raw))
    states = [{(v["start"], v["end"]) for v in parse_maps(maps(runner.mm))}]
    for op in runner.scn.ops:
        runner.do(op)
        states.append({(v["start"], v["end"]) for v in parse_maps(maps(runner.mm))})
    for lane in (1, 2, 3):
        outlined = {(b["start"], b["end"]) for b in blocks(page, lane) if b["chg"]}
        assert outlined == states[lane] - states[lane - 1]
    assert {(b["start"], b["end"]) for b in blocks(page, 2) if b["chg"]} == {
        (f"{base:x}", f"{base + 0x1000:x}"), (f"{base + 0x1000:x}", f"{base + 0x2000:x}"),
        (f"{base + 0x2000:x}", f"{base + 0x3000:x}")}
    assert {(b["start"], b["end"]) for b in blocks(page, 3) if b["chg"]} == {(f"{base:x}", f"{base + 0x3000:x}")}
    assert not any(b["chg"] for b in blocks(page, 0))
    assert page.errors == []


def test_marks_gaps_and_stack_guard_gap(page: Any, tmp_path: Any) -> None:
    """mmap_base, start_brk and brk are drawn at the x of the addresses the mm holds, the stack guard gap
    ends at the stack, and the gaps are labelled with their sizes."""
    mm = MM()
    mm.mmap(0x500000000000, 4 * 4096, C.PROT_READ | C.PROT_WRITE, C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_FIXED)
    from vmalab.execute import default_layout
    from vmalab.procfs import import_maps
    mm2 = MM()
    import_maps(mm2, default_layout(8 << 20))
    open_html(page, view_mm(mm2), tmp_path / "v.html")
    got = blocks(page)
    by_end = {b["end"]: b for b in got}
    by_start = {b["start"]: b for b in got}
    marks = page.evaluate("Object.fromEntries(Array.from(document.querySelectorAll('line.mark')).map("
                          "l => [l.dataset.mark, +l.getAttribute('x1')]))")
    vdso = by_end[f"{mm2.mmap_base:08x}"]
    assert marks["mmap_base"] == pytest.approx(vdso["x"] + vdso["w"], abs=0.2)
    heap = next(b for b in got if b["kind"] == "heap")
    assert marks["brk"] == pytest.approx(heap["x"] + heap["w"], abs=0.2)
    assert f"{mm2.brk:08x}" == heap["end"]
    stack = next(b for b in got if b["kind"] == "stack")
    sgg = page.evaluate("(() => {const r = document.querySelector('rect.sgg'); return [+r.getAttribute('x'), "
                        "+r.getAttribute('width')]})()")
    assert sgg[0] + sgg[1] == pytest.approx(stack["x"], abs=0.2)
    labels = page.evaluate("Array.from(document.querySelectorAll('text.gl')).map(t => t.textContent)")
    gap = int(by_start["7ffff7ff7000"]["start"], 16) - int(heap["end"], 16)  # heap to [vvar]
    assert gap >> 40 == 127 and "128 TiB" in labels
    assert page.errors == []


def test_driver_lane(page: Any, tmp_path: Any) -> None:
    """The driver lane of each op is the mmap_prepare -> action -> hook sequence of its trace: present for
    the driver's mmaps, naming a failed prepare, absent for a touch."""
    path = os.path.join(SCENARIO_DIR, "driver_devmem_remap.json")
    open_html(page, render_html(lanes_from_scenario(path)), tmp_path / "v.html")
    runner = ModelRunner(load_scenario(path), trace=True)
    runner.run()
    texts = page.evaluate("Array.from(document.querySelectorAll('section.lane')).map(s => "
                          "{const d = s.querySelector('.driver'); return d ? d.textContent : null})")
    assert texts[0] is None  # the initial state
    for i, events in enumerate(runner.op_traces):
        names = [e.what for e in events]
        if any("mmap_prepare" in n for n in names):
            assert texts[i + 1] is not None and "mmap_prepare" in texts[i + 1]
            for n in names:
                if n.startswith("action "):
                    assert n in texts[i + 1]
        else:
            assert texts[i + 1] is None
    assert "action REMAP_PFN ok" in texts[1] and "mmap_prepare failed -EPERM" in texts[3]
    assert page.errors == []


def test_page_strip(page: Any, tmp_path: Any) -> None:
    """--pages: a written page is anon, a read one the zero page, a guard marker, an untouched page none."""
    raw = {"name": "strip", "ops": [
        {"op": "mmap", "addr": "base+0", "len": "16K", "prot": "PROT_READ|PROT_WRITE",
         "flags": "MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED", "fd": "none", "offset": 0},
        {"op": "touch", "addr": "base+0", "write": True},
        {"op": "touch", "addr": "base+4K", "write": False},
        {"op": "madvise", "addr": "base+8K", "len": "4K", "advice": "MADV_GUARD_INSTALL"}]}
    open_html(page, render_html(lanes_from_scenario(raw, pages=True)), tmp_path / "v.html")
    i = next(i for i, b in enumerate(blocks(page)) if b["start"] == "500000000000")
    page.locator("section.lane").last.locator("rect.vma").nth(i).click()
    assert "pages: anonx1 zerox1 guardx1 nonex1" in str(page.locator("#panel").text_content())
    assert page.locator("section.lane").last.locator("rect.pg").count() > 0
    assert page.errors == []


def test_recorded_program_lanes_are_the_kernels_maps(page: Any, tmp_path: Any) -> None:
    """A recorded program: the first lane is the maps the kernel showed after execve, the last the model's
    replay at exit, which equals the maps the kernel showed at exit."""
    path = os.path.join(ROOT, "tests", "programs", "ls.program.json")
    with open(path, encoding="utf-8") as f:
        rec = json.load(f)
    proc = rec["processes"][0]
    open_html(page, render_html(lanes_from_program(path)), tmp_path / "v.html")
    for lane, key in ((0, "exec_maps"), (-1, "final_maps")):
        want = parse_maps(proc[key])
        assert [(b["start"], b["end"], b["perms"]) for b in blocks(page, lane)] == [
            (v["start"], v["end"], v["perms"]) for v in want]
    assert page.errors == []


def test_live_pid(page: Any, tmp_path: Any) -> None:
    """--pid: the blocks are the live process's /proc/PID/maps."""
    import time
    child = subprocess.Popen(["sleep", "60"])
    try:
        last = ""
        for _ in range(100):  # until sleep is asleep, its start-up done (the maps stay as they are)
            time.sleep(0.05)
            with open(f"/proc/{child.pid}/maps", encoding="utf-8") as f:
                now = f.read()
            with open(f"/proc/{child.pid}/stat", encoding="utf-8") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            if now == last and state == "S":
                break
            last = now
        lanes = lanes_from_pid(child.pid)
        with open(f"/proc/{child.pid}/maps", encoding="utf-8") as f:
            want = parse_maps(f.read())
    finally:
        child.kill()
        child.wait()
    open_html(page, render_html(lanes), tmp_path / "v.html")
    assert [(b["start"], b["end"], b["perms"]) for b in blocks(page)] == [
        (v["start"], v["end"], v["perms"]) for v in want]
    assert page.errors == []


def test_ten_thousand_vmas(page: Any, tmp_path: Any) -> None:
    """10,000 VMAs: under 5 MB, every VMA of the last lane a block, the busy earlier lane drawn in groups
    and the page saying so (the render time is measured by benchmarks/bench_view.py, not asserted)."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        import bench_view
    finally:
        sys.path.pop(0)
    lanes = lanes_from_scenario(bench_view.scenario(10000))
    text = render_html(lanes)
    assert len(text.encode()) < 5_000_000
    open_html(page, text, tmp_path / "v.html")
    mm = final_mm_raw(bench_view.scenario(10000))
    assert page.locator("section.lane").last.locator("rect.vma").count() == len(parse_maps(maps(mm))) == 10011
    assert page.locator("section.lane").nth(1).locator("rect.grp").count() > 0
    assert "drawn as about" in str(page.locator(".notes").text_content())
    assert page.errors == []


def final_mm_raw(raw: dict[str, Any]) -> MM:
    runner = ModelRunner(parse_scenario(raw))
    runner.run()
    return runner.mm


def test_size_bound_elides_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the size bound the page drops the strips of big lanes, then groups the lanes, then drops
    lanes, and says so each time."""
    import vmalab.view as view
    body = {"op": "mmap", "addr": "base+0", "len": "4K", "prot": "PROT_READ|PROT_WRITE",
            "flags": "MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED|MAP_POPULATE", "fd": "none", "offset": 0}
    raw = {"name": "many", "ops": [{"op": "repeat", "count": 150, "step": "8K", "body": body}]
           + [{"op": "touch", "addr": f"base+{8 * i}K", "write": True} for i in range(45)]}
    lanes = lanes_from_scenario(raw, pages=True)
    full = render_html(lanes)
    has_strips, noted = 'class="pg"' in full, "are not drawn" in full
    assert has_strips and not noted
    monkeypatch.setattr(view, "STRIP_MAX", 100)
    monkeypatch.setattr(view, "SIZE_LIMIT", len(full) - 1)
    lean = render_html(lanes)
    big = [sec for sec in lean.split("<section")[1:] if sec.count('class="vma') > 100]
    assert len(big) == 46 and not any('class="pg"' in sec for sec in big)
    assert "page strips and residency bars are not drawn" in lean and len(lean) <= len(full) - 1
    monkeypatch.setattr(view, "SIZE_LIMIT", len(lean) // 2)
    grouped = render_html(lanes)
    sections = grouped.split("<section")[1:]
    noted = "the last one too, is drawn in groups" in grouped
    assert noted and len(sections) == 47 and len(grouped) < len(lean)
    assert all(('class="vma' in sec) == (i == 0) and ('class="grp' in sec) == (i > 0) for i, sec in enumerate(sections))
    monkeypatch.setattr(view, "SIZE_LIMIT", 1000)
    fewer = render_html(lanes)
    noted = "only the first and the last 39 lanes are drawn" in fewer
    assert noted and fewer.count('data-lane="') == view.LANES_AT_LEVEL3


def test_view_cli(tmp_path: Any) -> None:
    path = os.path.join(SCENARIO_DIR, "split_mprotect_middle.json")
    out = tmp_path / "o.html"
    r = subprocess.run([sys.executable, "-m", "vmalab", "view", path, "-o", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"wrote {out}: ") and out.read_text().count('data-lane="') == len(
        load_scenario(path).ops) + 1


def test_view_cli_snapshots(tmp_path: Any) -> None:
    """--snapshots: the initial state, one lane per snapshot op, and the end when the last op is none."""
    path = os.path.join(SCENARIO_DIR, "merge_anon_distinct_anon_vmas_block_3way.json")
    ops = load_scenario(path).ops
    out = tmp_path / "o.html"
    r = subprocess.run([sys.executable, "-m", "vmalab", "view", path, "--snapshots", "-o", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    snaps = sum(op.op == "snapshot" for op in ops)
    assert snaps >= 1 and out.read_text().count('data-lane="') == 1 + snaps + (ops[-1].op != "snapshot")


@pytest.mark.parametrize("args, message", [
    (["/nonexistent/x.json"], "no such file"),
    (["BAD"], "needs field 'addr'"),
    (["--pid", "999999999"], "no such process"),
    ([], "give a SCENARIO or PROGRAM file, or --pid PID"),
    (["GOOD", "-o", "/nonexistent/dir/x.html"], "cannot write"),
    (["PROGRAM", "--pages"], "do not apply to a recorded program"),
])
def test_view_cli_errors(args: list[str], message: str, tmp_path: Any) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "bad", "ops": [{"op": "mmap"}]}')
    subst = {"BAD": str(bad), "GOOD": os.path.join(SCENARIO_DIR, "split_mprotect_middle.json"),
             "PROGRAM": os.path.join(ROOT, "tests", "programs", "ls.program.json")}
    r = subprocess.run([sys.executable, "-m", "vmalab", "view", *[subst.get(a, a) for a in args]],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
