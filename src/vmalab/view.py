"""An address space in the browser: one static HTML page of inline SVG lanes (``vmalab view``).

No kernel counterpart: a tool over the model.  Each *lane* is the address space at one moment (after an
op of a scenario, at a snapshot, a real program's process, a live pid): its VMAs in address order, drawn
with log-scaled widths on one x axis shared by all lanes (so a split or a merge lines up with the lane
above it), the gaps between them hatched and labelled with their size, and the marks the kernel keeps:
``mmap_base`` (arch/x86/mm/mmap.c: arch_pick_mmap_layout()), the program break (``start_brk`` and
``brk``, mm/mmap.c: brk()) and the stack guard gap below a ``VM_GROWSDOWN`` VMA (mm/mmap.c:
vm_start_gap(), ``stack_guard_gap``).  Colours are pwndbg's vmmap colours by kind (see
:func:`vmalab.termview.vma_kind`).  A tooltip, and the side panel on a click, give the VMA's maps line
(fs/proc/task_mmu.c: show_map_vma()), VmFlags (show_smap_vma_flags()), its ``VM_MAY*`` bits, anon_vma,
driver and kernel profile, residency and the merge verdict against each neighbour
(:func:`vmalab.explain.explain_pair`, mm/vma.c: is_mergeable_vma() & co.).  A driver lane shows the
``mmap_prepare`` → action → hook steps of each op from the trace.

The page is one file with no external resource and no framework: it works offline.  DOM contract (the
tests query it): every lane is a ``section`` with ``data-lane``; every VMA block is a ``rect.vma`` with
``data-start`` / ``data-end`` (hex as in maps), ``data-kind`` and ``data-perms``.  Large inputs are
bounded and the page says so: at most :data:`MAX_LANES` lanes, a lane other than the last with more than
:data:`GROUP_AT` VMAs is drawn as groups of consecutive VMAs, and so is a last lane of more than
:data:`LAST_LANE_MAX` VMAs.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import constants as C
from .constants import PAGE_SHIFT
from .mm_types import VMA, MmStruct
from .probe import TraceEvent
from .procfs import PAD_COLUMN, maps_line, perms, rss_pages, vma_name
from .termview import KIND_CSS, KINDS, is_wx, vma_kind

__all__ = ["ViewError", "VmaInfo", "Lane", "lane_from_mm", "lanes_from_scenario", "lanes_from_program",
           "lanes_from_pid", "render_html", "view_mm", "write_view", "PALETTE", "KINDS", "MAX_LANES", "GROUP_AT",
           "LAST_LANE_MAX"]

#: the lanes drawn at most; a longer timeline keeps its first lane and the last MAX_LANES - 1
MAX_LANES = 300
#: a lane other than the last with more VMAs than this is drawn as groups of consecutive VMAs
GROUP_AT = 1000
#: a last lane with more VMAs than this is drawn in groups as well
LAST_LANE_MAX = 20000
#: the groups a grouped lane is drawn as, about
GROUPS = 64
#: lanes with more VMAs than this keep only the deciding condition of each merge verdict (not every check)
FULL_VERDICT_MAX = 1000
#: at most this many runs of one VMA's page strip
STRIP_RUNS = 256
#: the page's size bound (bytes): past it, lanes of more than :data:`STRIP_MAX` VMAs lose their page strips and
#: residency bars, then the last lane is drawn in groups too (and the page says so)
SIZE_LIMIT = 4_800_000
STRIP_MAX = 2000
#: the lanes kept at the last size level
LANES_AT_LEVEL3 = 40

#: the kinds, in the legend's order, with pwndbg's vmmap colours (stack yellow, heap blue, code red, writable
#: data purple, read-only plain, guard cyan; W+X is underlined), shared with the terminal view
PALETTE: dict[str, str] = dict(KIND_CSS)
#: the page strip's colours by page kind (vmalab.pagetable kinds, plus "none": no PTE)
PAGE_COLOURS: dict[str, str] = {"anon": "#6b6b6b", "file": "#3a9a4a", "zero": "#f2f2f2", "guard": "#27c4cf",
                                "pfn": "#d98c1c", "kernel": "#8b5a2b", "none": "#ffffff"}

_MAY_BITS = ((C.VM_MAYREAD, "VM_MAYREAD"), (C.VM_MAYWRITE, "VM_MAYWRITE"), (C.VM_MAYEXEC, "VM_MAYEXEC"),
             (C.VM_MAYSHARE, "VM_MAYSHARE"))


class ViewError(ValueError):
    """Input the view cannot draw (a scenario that fails to load or run, a bad program file): one line."""


@dataclass
class VmaInfo:
    """One VMA as a lane shows it (``sig``: what makes it the same VMA in the next lane)."""

    start: int
    end: int
    kind: str
    perms: str
    wx: bool
    sig: tuple[Any, ...]
    maps: str = ""
    maps_mid: str = ""  # the maps line's offset, device and inode columns
    name: str = ""  # the maps line's name column
    vmflags: str = ""
    may: str = ""
    anon_vma: str = ""
    driver: str = ""
    rss_kb: int = 0
    size_kb: int = 0
    merge_prev: str = ""
    merge_next: str = ""
    merge_prev_full: list[str] = field(default_factory=list)
    merge_next_full: list[str] = field(default_factory=list)
    strip: list[tuple[str, int]] = field(default_factory=list)  # (page kind, pages) runs


@dataclass
class Group:
    """Consecutive VMAs drawn as one block: their range, how many, and how many of each kind."""

    start: int
    end: int
    count: int
    kinds: dict[str, int]


@dataclass
class Lane:
    """The address space at one moment: its VMAs in address order and its marks.  A light lane (captured
    with ``detail=False``) has no ``vmas`` but their ``groups`` and ``sigs``."""

    label: str
    vmas: list[VmaInfo]
    profile: str = ""
    mmap_base: int = 0
    start_brk: int = 0
    brk: int = 0
    driver_steps: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    groups: list[Group] | None = None
    sigs: set[tuple[Any, ...]] | None = None
    count: int = -1

    def __post_init__(self) -> None:
        if self.count < 0:
            self.count = len(self.vmas)


# -- building lanes ---------------------------------------------------------------------------------------
def _driver_of(vma: VMA) -> str:
    if vma.vm_file is None and vma.vm_ops is None:
        return "none (anonymous)"
    parts = []
    if vma.vm_file is not None:
        parts.append(f"file_operations {type(vma.vm_file.f_op).__name__}")
    if vma.vm_ops is not None:
        parts.append(f"vm_ops {type(vma.vm_ops).__name__}")
    return ", ".join(parts)


def _strip(mm: MmStruct, vma: VMA) -> list[tuple[str, int]]:
    """Run-length page kinds of ``vma`` (``none`` for pages with no PTE), at most :data:`STRIP_RUNS` runs
    (the rest is one ``none`` run named ``more``)."""
    runs: list[tuple[str, int]] = []
    lo, hi = vma.vm_start >> PAGE_SHIFT, vma.vm_end >> PAGE_SHIFT
    at = lo
    for vpn, page in mm.pt.items(lo, hi):
        if vpn > at:
            runs.append(("none", vpn - at))
        if runs and runs[-1][0] == page.kind:
            runs[-1] = (page.kind, runs[-1][1] + 1)
        else:
            runs.append((page.kind, 1))
        at = vpn + 1
        if len(runs) > STRIP_RUNS:
            runs.append(("more", hi - at))
            return runs
    if at < hi:
        runs.append(("none", hi - at))
    return runs


def _verdict(mm: MmStruct, lower: VMA | None, upper: VMA | None, full: bool) -> tuple[str, list[str]]:
    """The merge verdict of two neighbours, short (one line) and in full (every check)."""
    if lower is None or upper is None:
        return "no neighbour", []
    if lower.vm_end != upper.vm_start:
        return f"not adjacent (a gap of {_size(upper.vm_start - lower.vm_end)})", []
    from .explain import explain_pair
    try:
        v = explain_pair(mm, lower, upper)
    except Exception as e:  # noqa: BLE001 - a view never fails on one verdict; it says so
        return f"no verdict ({type(e).__name__}: {e})", []
    short = "would merge" if v.merges else "no merge"
    if v.deciding is not None:
        short += f": {v.deciding.name} ({v.deciding.detail}; {v.deciding.kernel_fn})"
    return short, (v.lines()[1:] if full else [])


def lane_from_mm(mm: MmStruct, label: str, *, detail: bool = True, pages: bool = False,
                 driver_steps: Iterable[str] = (), notes: Iterable[str] = ()) -> Lane:
    """A lane of ``mm``'s VMAs as they are now.  ``detail`` False keeps only about :data:`GROUPS` groups of
    consecutive VMAs and the VMAs' identities (a light lane: cheap on a long scenario of many VMAs);
    ``pages`` records each VMA's page strip."""
    if not detail:
        return _light_lane(mm, label, driver_steps, notes)
    vmas = list(mm.tree)
    full = len(vmas) <= FULL_VERDICT_MAX
    out: list[VmaInfo] = []
    for i, v in enumerate(vmas):
        name = vma_name(mm, v)
        info = VmaInfo(v.vm_start, v.vm_end, vma_kind(mm, v), perms(v), is_wx(v), _sig(v))
        info.maps = maps_line(mm, v)
        info.maps_mid = " ".join(info.maps.split(None, 5)[2:5])
        info.name = name
        info.vmflags = C.vmflags_str(v.vm_flags)
        info.may = " ".join(n for bit, n in _MAY_BITS if v.vm_flags & bit) or "none"
        info.anon_vma = (f"anon_vma #{v.anon_vma.id}, anon_vma_chain of {v.avc_len}" if v.anon_vma is not None
                         else "none")
        info.driver = _driver_of(v)
        info.rss_kb = rss_pages(mm, v) * 4
        info.size_kb = (v.vm_end - v.vm_start) >> 10
        prev = vmas[i - 1] if i else None
        nxt = vmas[i + 1] if i + 1 < len(vmas) else None
        info.merge_prev, info.merge_prev_full = _verdict(mm, prev, v, full)
        info.merge_next, info.merge_next_full = _verdict(mm, v, nxt, full)
        if pages:
            info.strip = _strip(mm, v)
        out.append(info)
    return Lane(label, out, mm.profile.name, mm.mmap_base, mm.start_brk, mm.brk, list(driver_steps), list(notes))


def _sig(v: VMA) -> tuple[Any, ...]:
    """What makes a VMA the same one in the next lane: its range, flags, pgoff, file path and whether it
    has an anon_vma (lanes of a recorded program come from different mms: no object identities)."""
    return (v.vm_start, v.vm_end, v.vm_flags, v.vm_pgoff, v.vm_file.path if v.vm_file is not None else "",
            v.anon_vma is not None)


def _light_lane(mm: MmStruct, label: str, driver_steps: Iterable[str], notes: Iterable[str]) -> Lane:
    n = len(mm.tree)
    per = max(1, math.ceil(n / GROUPS))
    groups: list[Group] = []
    sigs: set[tuple[Any, ...]] = set()
    for i, v in enumerate(mm.tree):
        sigs.add(_sig(v))
        kind = vma_kind(mm, v)
        if i % per == 0:
            groups.append(Group(v.vm_start, v.vm_end, 0, {}))
        g = groups[-1]
        g.end = v.vm_end
        g.count += 1
        g.kinds[kind] = g.kinds.get(kind, 0) + 1
    return Lane(label, [], mm.profile.name, mm.mmap_base, mm.start_brk, mm.brk, list(driver_steps), list(notes),
                groups=groups, sigs=sigs, count=n)


def _is_driver_step(ev: TraceEvent) -> bool:
    """A step of the driver lane: a driver callback (traced with the locks held), an mmap action, a hook,
    a compat call or the unmap after a failure."""
    w = ev.what
    return ("locks" in ev.detail or w.startswith("action ") or "hook" in w or "mmap_prepare" in w
            or w.startswith("unmapped after") or w.endswith("()") or w == "established")


def driver_steps(events: Iterable[TraceEvent]) -> list[str]:
    """The driver lane's steps among one op's trace events (empty when no driver took part)."""
    steps = [ev.what for ev in events if _is_driver_step(ev)]
    if not any(s != "established" for s in steps):
        return []
    return steps


def _op_label(i: int, op: Any, res: Mapping[str, Any]) -> str:
    args = " ".join(f"{k}={v}" for k, v in op.args.items())
    if "vmas" in res:
        ret = f"{len(res['vmas'])} VMAs"
    elif res.get("errno"):
        ret = f"-1 {res['errno']}"
    elif res.get("signal"):
        ret = f"-1 {res['signal']}"
    else:
        ret = str(res.get("ret"))
    return f"#{i} {op.op} {args} -> {ret}"


def lanes_from_scenario(path_or_raw: str | os.PathLike[str] | Mapping[str, Any], per_op: bool = True, *,
                        pages: bool = False, kernel: str | None = None) -> list[Lane]:
    """Run a scenario on the model and return its lanes: the initial state and one lane after every op
    (``per_op``), or one per ``snapshot`` op and the final state.  Raises :class:`ViewError` (one line)
    when the scenario cannot be loaded or run."""
    from .execute import ModelRunner, ModelUnsupported, check_supported
    from .scenario import ScenarioError, load_scenario, parse_scenario
    try:
        if isinstance(path_or_raw, Mapping):
            scn = parse_scenario(dict(path_or_raw))
        else:
            scn = load_scenario(os.fspath(path_or_raw))
    except ScenarioError as e:
        raise ViewError(str(e)) from None
    try:
        check_supported(scn)
        runner = ModelRunner(scn, trace=True, kernel=kernel)
    except ModelUnsupported as e:
        raise ViewError(f"{scn.name}: {e}") from None
    mm = runner.mm
    nops = len(scn.ops)
    first_kept = max(1, nops - (MAX_LANES - 2))  # per-op lanes kept: 0 (initial) and ops first_kept-1 ..
    lanes: list[Lane] = [lane_from_mm(mm, "initial state", detail=len(mm.tree) <= GROUP_AT or nops == 0,
                                      pages=pages)]
    notes: list[str] = []
    probe = mm.probe
    for i, op in enumerate(scn.ops):
        tstart = len(probe.events)
        probe.op_index = i
        try:
            with probe.in_syscall(op.op):
                res: dict[str, Any] = {"op": op.op, **runner.do(op)}
        except ModelUnsupported as e:
            raise ViewError(f"{scn.name}: op {i} ({op.op}): {e}") from None
        except Exception as e:  # noqa: BLE001 - the model's own refusals (ProfileFeatureError, ...)
            raise ViewError(f"{scn.name}: op {i} ({op.op}): {type(e).__name__}: {e}") from None
        steps = driver_steps(probe.events[tstart:])
        del probe.events[tstart:]  # keep the trace buffer small on long scenarios
        last = i == nops - 1
        if per_op:
            if i + 1 < first_kept and not last:
                continue
            detail = len(mm.tree) <= (LAST_LANE_MAX if last else GROUP_AT)
            lanes.append(lane_from_mm(mm, _op_label(i, op, res), detail=detail, pages=pages, driver_steps=steps))
        elif op.op == "snapshot" or last:
            detail = len(mm.tree) <= (LAST_LANE_MAX if last else GROUP_AT)
            lanes.append(lane_from_mm(mm, _op_label(i, op, res) if op.op == "snapshot" else f"final (after #{i})",
                                      detail=detail, pages=pages, driver_steps=steps))
    probe.op_index = None
    if per_op and first_kept > 1:
        notes.append(f"ops #0 to #{first_kept - 2} are not drawn (a timeline of at most {MAX_LANES} lanes)")
    if notes:
        lanes[0].notes.extend(notes)
    return lanes


def lanes_from_program(path: str | os.PathLike[str]) -> list[Lane]:
    """The lanes of a recorded real program (``vmalab record-program``): for each process, its recorded
    maps right after execve and the model's maps after replaying every memory call (imported with their
    smaps).  Raises :class:`ViewError` for a file that is no ProgramTrace."""
    from .mm import MM
    from .procfs import MapsFormatError
    from .programtrace import ProgramTraceError, loads
    from .replay import replay
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            trace = loads(f.read())
    except (OSError, ProgramTraceError) as e:
        raise ViewError(f"{os.fspath(path)}: {e}") from None
    result = replay(trace)
    lanes: list[Lane] = []
    try:
        for proc in trace.processes:
            if proc.exec_maps:
                mm = MM.from_maps(proc.exec_maps, proc.exec_smaps, start_brk=proc.start.start_brk)
                lanes.append(lane_from_mm(mm, f"pid {proc.pid} after execve (recorded)"))
            try:
                res = result.process(proc.pid)
            except KeyError:
                continue
            if res.replayed and res.maps:
                mm = MM.from_maps(res.maps, res.smaps or None, start_brk=proc.start.start_brk)
                note = [] if not res.divergences else [f"pid {proc.pid}: {len(res.divergences)} divergent calls"]
                lanes.append(lane_from_mm(mm, f"pid {proc.pid} at its end (model replay, "
                                              f"{res.memory_calls} memory calls)", notes=note))
    except (MapsFormatError, ValueError) as e:
        raise ViewError(f"{os.fspath(path)}: {e}") from None
    if not lanes:
        raise ViewError(f"{os.fspath(path)}: no process with maps to draw")
    return lanes


def lanes_from_pid(pid: int) -> list[Lane]:
    """One lane: the model's import of the live process ``pid`` (``MM.from_pid``)."""
    from .mm import MM
    try:
        mm = MM.from_pid_or_error(pid)
    except ValueError as e:
        raise ViewError(str(e)) from None
    return [lane_from_mm(mm, f"pid {pid} (live, imported)")]


def view_mm(mm: MmStruct, title: str = "vmalab view", pages: bool = False) -> str:
    """The page of one mm as it is now."""
    return render_html([lane_from_mm(mm, "now", pages=pages)], title=title)


# -- drawing ------------------------------------------------------------------------------------------------
def _size(n: int) -> str:
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            v = n / (1 << shift)
            return f"{v:.0f} {unit}" if v == int(v) or v >= 100 else f"{v:.1f} {unit}"
    return f"{n} B"


def _groups(ln: Lane) -> list[Group]:
    """The groups a lane is drawn as: its own (a light lane), or about :data:`GROUPS` of its VMAs."""
    if ln.groups is not None:
        return ln.groups
    per = max(1, math.ceil(len(ln.vmas) / GROUPS))
    out = []
    for i in range(0, len(ln.vmas), per):
        chunk = ln.vmas[i:i + per]
        kinds: dict[str, int] = {}
        for v in chunk:
            kinds[v.kind] = kinds.get(v.kind, 0) + 1
        out.append(Group(chunk[0].start, chunk[-1].end, len(chunk), kinds))
    return out


class _Axis:
    """The x axis shared by every lane: each elementary segment between two boundaries (of any lane, or
    a mark) gets a width growing with the log of its size."""

    def __init__(self, points: set[int], unit: float) -> None:
        self.points = sorted(points)
        self.x: dict[int, float] = {}
        x = 0.0
        self.unmapped: list[tuple[int, int]] = []
        prev: int | None = None
        for p in self.points:
            if prev is not None:
                pages = max(1, (p - prev) >> PAGE_SHIFT)
                x += unit * (1 + math.log2(pages) / 3)
            self.x[p] = round(x, 1)
            prev = p
        self.width = x

    def at(self, a: int) -> float:
        return self.x[a]


_CSS = """
body{font:13px/1.35 system-ui,sans-serif;margin:12px;color:#222;background:#fff}
h1{font-size:17px;margin:0 0 6px}
.legend span.sw{display:inline-block;width:12px;height:12px;border:1px solid #555;vertical-align:-2px;
margin:0 3px 0 8px}
.notes{color:#8a4b00}
.lanes{overflow-x:auto;border:1px solid #ccc;padding:4px 0}
section.lane{margin:0 0 2px;width:max-content;min-width:100%}
section.lane h2{font:12px monospace;margin:4px 6px 1px;white-space:pre;color:#333;position:sticky;left:6px;
display:inline-block}
svg.lanesvg{display:block}
svg.lanesvg *{pointer-events:none}svg.lanesvg rect.vma,svg.lanesvg rect.grp{pointer-events:auto;cursor:pointer}
rect.vma{y:14px;height:30px;stroke:#333;stroke-width:.6}
rect.vma.chg{stroke:#000;stroke-width:2.6}
rect.grp{y:14px;height:30px;stroke:#333;stroke-width:.6;fill-opacity:.75}
rect.wx{y:45px;height:3px;fill:#000}
rect.gap{y:14px;height:30px;fill:url(#hatch);stroke:#bbb;stroke-width:.5}
rect.res{y:49px;height:4px;fill:#2a2a2a}
rect.resbg{y:49px;height:4px;fill:#e8e8e8}
rect.pg{y:55px;height:6px}
rect.sgg{y:10px;height:38px;fill:url(#hatchred);stroke:#c00;stroke-width:.5}
line.mark{stroke-width:1.4}
line.mmap_base{stroke:#0a7d00}
line.brk{stroke:#c06000}
text{font:10px monospace;fill:#111}
text.gl{fill:#666}
text.mk{font-size:9px}
.driver{font:11px monospace;margin:0 6px 4px;color:#444;position:sticky;left:6px;display:inline-block}
.driver b{color:#333}.step{display:inline-block;border:1px solid #999;border-radius:3px;padding:0 4px;
margin:1px 2px;background:#f6f6f6}
#tip{position:fixed;pointer-events:none;background:#fffff4;border:1px solid #777;padding:5px 7px;font:11px monospace;
white-space:pre;max-width:90vw;z-index:10;box-shadow:2px 2px 4px #0003}
#panel{border-top:1px solid #aaa;margin-top:10px;font:12px monospace;white-space:pre-wrap}
"""

_JS = r"""
(function(){
var D=JSON.parse(document.getElementById('vdata').textContent);
var tip=document.getElementById('tip'),panel=document.getElementById('panel'),idx=new WeakMap(),PAD=D.pad;
function text(el,full){
  var L=D.lanes[+el.closest('section').dataset.lane];
  if(el.classList.contains('grp')){var g=L.g[+el.dataset.g];
    return g[0]+' VMAs elided in one group: '+g[1]+'-'+g[2]+'\nkinds: '+g[3];}
  var i=idx.get(el);
  if(i===undefined){var all=el.parentNode.querySelectorAll('rect.vma');
    for(var k=0;k<all.length;k++)idx.set(all[k],k);i=idx.get(el);}
  var v=L.v[i];if(!v)return '';
  var head=el.dataset.start+'-'+el.dataset.end+' '+el.dataset.perms+' '+v[0]+' ',name=D.s[v[1]];
  if(name){while(head.length<PAD)head+=' ';head+=' '+name;}
  var s=[head,'VmFlags: '+D.s[v[2]],'VM_MAY*: '+D.s[v[3]],'anon_vma: '+v[4],
    'driver: '+D.s[v[5]]+'; profile '+L.p,'Rss: '+v[6]+' kB of '+v[7]+' kB',
    'merge with prev: '+D.s[v[8]],'merge with next: '+D.s[v[9]]];
  if(full){
    if(v[10]&&v[10].length)s.push('checks against prev:\n'+v[10].map(function(i){return D.s[i]}).join('\n'));
    if(v[11]&&v[11].length)s.push('checks against next:\n'+v[11].map(function(i){return D.s[i]}).join('\n'));
    if(v[12])s.push('pages: '+v[12]);
  }
  return s.join('\n');
}
document.addEventListener('mouseover',function(e){
  var el=e.target.closest&&e.target.closest('rect.vma,rect.grp');if(!el){tip.hidden=true;return;}
  tip.textContent=text(el,false);tip.hidden=false;
  var x=Math.min(e.clientX+14,window.innerWidth-tip.offsetWidth-4);
  var y=e.clientY+16;if(y+tip.offsetHeight>window.innerHeight)y=Math.max(0,e.clientY-tip.offsetHeight-8);
  tip.style.left=x+'px';tip.style.top=y+'px';
});
document.addEventListener('click',function(e){
  var el=e.target.closest&&e.target.closest('rect.vma,rect.grp');if(!el)return;
  panel.textContent=text(el,true);
});
})();
"""


def _defs() -> str:
    return ('<svg width="0" height="0" style="position:absolute"><defs>'
            '<pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
            '<rect width="6" height="6" fill="#fafafa"/><line x1="0" y1="0" x2="0" y2="6" stroke="#c8c8c8" '
            'stroke-width="2"/></pattern>'
            '<pattern id="hatchred" width="5" height="5" patternUnits="userSpaceOnUse" '
            'patternTransform="rotate(-45)"><line x1="0" y1="0" x2="0" y2="5" stroke="#e07070" stroke-width="1.5"/>'
            '</pattern></defs></svg>')


def render_html(lanes: list[Lane], title: str = "vmalab view") -> str:
    """The page of ``lanes`` (oldest first): one self-contained HTML document of at most about
    :data:`SIZE_LIMIT` bytes (see :data:`STRIP_MAX`)."""
    if not lanes:
        raise ViewError("nothing to draw: no lanes")
    for level in range(4):
        text = _render(lanes, title, level)
        if len(text) <= SIZE_LIMIT:
            break
    return text


def _render(lanes: list[Lane], title: str, level: int) -> str:
    """The page at size ``level``: 0 all of it; 1 no page strips and residency bars in lanes of more than
    :data:`STRIP_MAX` VMAs; 2 also every lane of more than :data:`GROUPS` VMAs in groups, the last one too;
    3 also only the first and the last :data:`LANES_AT_LEVEL3` - 1 lanes."""
    page_notes: list[str] = [n for ln in lanes for n in ln.notes]
    lean, group_last = level >= 1, level >= 2
    bound = f"(the page stays under {SIZE_LIMIT / 1e6:g} MB)"
    if lean:
        page_notes.append(f"page strips and residency bars are not drawn for lanes of more than {STRIP_MAX} VMAs "
                          f"{bound}; the tooltips still give Rss")
    if group_last:
        page_notes.append(f"every lane of more than {GROUPS} VMAs, the last one too, is drawn in groups {bound}")
    if level >= 3 and len(lanes) > LANES_AT_LEVEL3:
        page_notes.append(f"only the first and the last {LANES_AT_LEVEL3 - 1} lanes are drawn {bound}")
        lanes = lanes[:1] + lanes[-(LANES_AT_LEVEL3 - 1):]
    if len(lanes) > MAX_LANES:
        page_notes.append(f"{len(lanes) - MAX_LANES} lanes after the first are not drawn "
                          f"(at most {MAX_LANES} lanes)")
        lanes = lanes[:1] + lanes[-(MAX_LANES - 1):]
    last = len(lanes) - 1
    grouped: list[bool] = []
    for i, ln in enumerate(lanes):
        g = (ln.count > (GROUPS if group_last else LAST_LANE_MAX if i == last else GROUP_AT)
             or ln.groups is not None)
        grouped.append(g)
        if g:
            page_notes.append(f"lane {i} ({ln.label[:60]}): {ln.count} VMAs drawn as about {GROUPS} groups "
                              "of consecutive VMAs (elided; hover a group for its range)")
    strings: dict[str, int] = {}

    def sid(s: str) -> int:
        n = strings.get(s)
        if n is None:
            n = strings[s] = len(strings)
        return n

    # the shared axis: every boundary and mark of every lane
    points: set[int] = set()
    for i, ln in enumerate(lanes):
        if grouped[i]:
            for grp in _groups(ln):
                points.add(grp.start)
                points.add(grp.end)
        else:
            for v in ln.vmas:
                points.add(v.start)
                points.add(v.end)
                if "gd" in v.vmflags.split():
                    points.add(max(0, v.start - C.STACK_GUARD_GAP))
        for m in (ln.mmap_base, ln.start_brk, ln.brk):
            if m:
                points.add(m)
    nseg = max(1, len(points))
    unit = max(6.0, min(40.0, 60000.0 / nseg))
    axis = _Axis(points, unit)
    width = int(axis.width) + 80
    pages = any(v.strip for ln in lanes for v in ln.vmas)
    height = 64 if pages else 56

    out: list[str] = []
    w = out.append
    w("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">")
    kind_css = "".join(f".k-{k}{{fill:{c}}}.sw.k-{k}{{background:{c}}}" for k, c in PALETTE.items())
    w(f"<title>{html.escape(title)}</title><style>{_CSS}{kind_css}</style></head><body>")
    w(f"<h1>{html.escape(title)}</h1>")
    legend = "".join(f'<span class="sw k-{k}"></span>{k.upper()}' for k in KINDS)
    w(f'<p class="legend">LEGEND:{legend}<span class="sw" style="background:#fafafa"></span>gap (unmapped, '
      'size shown; widths are log-scaled) <span class="sw" style="border:2.6px solid #000"></span>new or changed '
      'since the lane above <span class="sw" style="background:#000;height:3px"></span>W+X '
      '<span class="sw" style="background:#2a2a2a;height:4px"></span>resident (Rss) '
      '<span style="color:#0a7d00">| mmap_base</span> <span style="color:#c06000">| brk</span> '
      '<span style="color:#c00">▨ stack guard gap</span></p>')
    if pages:
        w('<p class="legend">pages:' + "".join(f'<span class="sw" style="background:{c}"></span>{k}'
                                             for k, c in PAGE_COLOURS.items()) + '</p>')
    w('<p class="notes">The [vsyscall] gate area of maps is not a VMA and is not drawn.'
      + "".join(f"<br>{html.escape(n)}" for n in page_notes) + "</p>")
    w(_defs())
    w('<div class="lanes">')
    data_lanes: list[dict[str, Any]] = []
    prev_sigs: set[tuple[Any, ...]] | None = None
    for li, ln in enumerate(lanes):
        w(f'<section class="lane" data-lane="{li}" data-label="{html.escape(ln.label, quote=True)}">'
          f'<h2>{html.escape(ln.label)}</h2>')
        w(f'<svg class="lanesvg" width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">')
        sigs = ln.sigs if ln.sigs is not None else {v.sig for v in ln.vmas}
        dl: dict[str, Any] = {"p": ln.profile}
        # gaps of this lane
        bounds = ([(g.start, g.end) for g in _groups(ln)] if grouped[li]
                  else [(v.start, v.end) for v in ln.vmas])
        lo_edge, hi_edge = axis.points[0], axis.points[-1]
        cur = lo_edge
        for s, e in bounds + [(hi_edge, hi_edge)]:
            if s > cur:
                x0, x1 = axis.at(cur), axis.at(s)
                w(f'<rect class="gap" x="{x0:g}" width="{x1 - x0:g}"/>')
                if x1 - x0 >= 44:
                    w(f'<text class="gl" x="{(x0 + x1) / 2:g}" y="33" text-anchor="middle">{_size(s - cur)}</text>')
            cur = max(cur, e)
        if grouped[li]:
            groups = []
            for gi, grp in enumerate(_groups(ln)):
                kinds = grp.kinds
                top = max(kinds, key=lambda k: kinds[k])
                x0, x1 = axis.at(grp.start), axis.at(grp.end)
                w(f'<rect class="grp k-{top}" x="{x0:g}" width="{max(x1 - x0, 1):g}" data-g="{gi}" '
                  f'data-count="{grp.count}"/>')
                groups.append([grp.count, f"{grp.start:08x}", f"{grp.end:08x}",
                               ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))])
            dl["g"] = groups
        else:
            recs = []
            bare = lean and ln.count > STRIP_MAX
            for v in ln.vmas:
                x0, x1 = axis.at(v.start), axis.at(v.end)
                bw = max(x1 - x0, 1)
                chg = " chg" if prev_sigs is not None and v.sig not in prev_sigs else ""
                w(f'<rect class="vma k-{v.kind}{chg}" x="{x0:g}" width="{bw:g}" '
                  f'data-start="{v.start:08x}" data-end="{v.end:08x}" data-kind="{v.kind}" data-perms="{v.perms}"/>')
                if v.wx:
                    w(f'<rect class="wx" x="{x0:g}" width="{bw:g}"/>')
                if v.size_kb and v.rss_kb and not bare:
                    w(f'<rect class="resbg" x="{x0:g}" width="{bw:g}"/><rect class="res" x="{x0:g}" '
                      f'width="{bw * min(1.0, v.rss_kb / v.size_kb):.1f}"/>')
                if bw >= 56:
                    lab = v.maps.split(None, 5)[5].strip() if len(v.maps.split(None, 5)) > 5 else ""
                    lab = (lab.rsplit("/", 1)[-1] or "[anon]")[: max(3, int(bw / 6.2) - 1)]
                    w(f'<text x="{x0 + 3:g}" y="26">{html.escape(v.perms)}</text>'
                      f'<text x="{x0 + 3:g}" y="39">{html.escape(lab)}</text>')
                if "gd" in v.vmflags.split():
                    g0 = max(0, v.start - C.STACK_GUARD_GAP)
                    if g0 in axis.x:
                        gx = axis.at(g0)
                        w(f'<rect class="sgg" x="{gx:g}" width="{x0 - gx:g}"/>')
                        w(f'<text class="mk" x="{gx:g}" y="8" fill="#c00">stack guard gap</text>')
                if v.strip and not bare:
                    npages = max(1, (v.end - v.start) >> PAGE_SHIFT)
                    px = x0
                    for kind, n in v.strip:
                        cw = bw * n / npages
                        colour = PAGE_COLOURS.get(kind, "#fff")
                        w(f'<rect class="pg" x="{px:.1f}" width="{cw:.2f}" fill="{colour}"/>')
                        px += cw
                strip = " ".join(f"{k}x{n}" for k, n in v.strip)
                rec: list[Any] = [v.maps_mid, sid(v.name), sid(v.vmflags), sid(v.may), v.anon_vma, sid(v.driver),
                                  v.rss_kb, v.size_kb, sid(v.merge_prev), sid(v.merge_next),
                                  [sid(s) for s in v.merge_prev_full], [sid(s) for s in v.merge_next_full], strip]
                while rec and rec[-1] in ("", []):
                    rec.pop()
                recs.append(rec)
            dl["v"] = recs
        for m, cls, name in ((ln.mmap_base, "mmap_base", "mmap_base"), (ln.start_brk, "brk", "start_brk"),
                             (ln.brk, "brk", "brk")):
            if m and m in axis.x:
                mx = axis.at(m)
                dy = 8 if name != "brk" else 62 if pages else 55
                w(f'<line class="mark {cls}" data-mark="{name}" x1="{mx:g}" x2="{mx:g}" y1="10" y2="{height - 4}"/>'
                  f'<text class="mk" x="{mx + 2:g}" y="{dy}">{name}</text>')
        w("</svg>")
        if ln.driver_steps:
            steps = "".join(f'<span class="step">{html.escape(s)}</span>→' for s in ln.driver_steps)
            w(f'<div class="driver" data-driver="1"><b>driver:</b> {steps.rstrip("→")}</div>')
        w("</section>")
        data_lanes.append(dl)
        prev_sigs = sigs
    w("</div>")
    w('<div id="tip" hidden></div><div id="panel">Click a block for every merge check and its page strip.</div>')
    data = {"lanes": data_lanes, "s": list(strings), "pad": PAD_COLUMN}
    w('<script type="application/json" id="vdata">' + json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
      + "</script>")
    w(f"<script>{_JS}</script></body></html>\n")
    return "".join(out)


# -- the command ------------------------------------------------------------------------------------------
def _is_program(path: str) -> bool:
    from .programtrace import is_program_trace
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return is_program_trace(f.read())
    except OSError:
        return False


def write_view(target: str | None, output: str | None = None, *, pid: int | None = None, pages: bool = False,
               per_op: bool = True, kernel: str | None = None) -> tuple[str, list[Lane]]:
    """``vmalab view``: draw ``target`` (a scenario or a recorded program) or the live process ``pid``,
    write the page to ``output`` (default: the target's name with ``.html``, in the current directory;
    ``-`` is stdout) and return where it went and the lanes.  :class:`ViewError` for bad input (one line)."""
    if (target is None) == (pid is None):
        raise ViewError("give a SCENARIO or PROGRAM file, or --pid PID (one of them)")
    if pid is not None:
        lanes = lanes_from_pid(pid)
        title = f"vmalab view: pid {pid}"
        stem = f"pid{pid}"
    else:
        assert target is not None
        if not os.path.isfile(target):
            raise ViewError(f"{target}: no such file")
        stem = os.path.basename(target).removesuffix(".json").removesuffix(".program")
        if _is_program(target):
            if pages or not per_op or kernel:
                raise ViewError(f"{target}: --pages, --snapshots and --kernel-profile do not apply to a recorded "
                                "program")
            lanes = lanes_from_program(target)
        else:
            lanes = lanes_from_scenario(target, per_op, pages=pages, kernel=kernel)
        title = f"vmalab view: {stem}"
    text = render_html(lanes, title=title)
    out = output or f"{stem}.html"
    if out == "-":
        return text, lanes
    try:
        with open(out, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise ViewError(f"{out}: cannot write: {e.strerror or e}") from None
    return out, lanes
