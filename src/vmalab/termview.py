"""The terminal view of an address space: ``vmalab maps --color [--gaps]`` and ``vmalab run --step``.

The region-kind classification here (:func:`vma_kind`) is shared with the browser view (``vmalab.view``):
both colour a VMA by what it is, in pwndbg's ``vmmap`` palette (stack yellow, heap blue, code red,
writable data purple, read-only plain, guard cyan, W+X underlined), plus one kind pwndbg does not have,
``io``, for the VM_IO / VM_PFNMAP / VM_MIXEDMAP device mappings a driver inserts raw pages into.

The kind is read off what ``/proc/PID/maps`` shows (fs/proc/task_mmu.c: show_map_vma(): the permissions
and get_vma_name()'s ``[heap]`` / ``[stack]``) and the VMA's flags, so the same VMA gets the same kind in the
terminal, in the browser and for a live process imported with ``MM.from_pid``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from . import constants as C
from .execute import ModelRunner, check_supported
from .mm_types import VMA, MmStruct
from .procfs import maps, vma_name
from .scenario import Op, Scenario

#: the region kinds, in the legend's order (pwndbg's order, then guard and io)
KINDS: tuple[str, ...] = ("stack", "heap", "code", "data", "rodata", "guard", "io")

#: ANSI SGR parameters per kind (pwndbg's vmmap colours; rodata is the terminal's normal colour)
KIND_SGR: dict[str, str] = {"stack": "33", "heap": "34", "code": "31", "data": "35", "rodata": "",
                            "guard": "36", "io": "32"}

#: CSS colours per kind for the browser view (the same hues as KIND_SGR)
KIND_CSS: dict[str, str] = {"stack": "#d4a017", "heap": "#3b6fd8", "code": "#d2362f", "data": "#9b4fc4",
                            "rodata": "#9a9a9a", "guard": "#17a9b8", "io": "#2e9d4f"}

#: the SGR parameter added for a writable and executable VMA (pwndbg underlines W+X memory)
WX_SGR = "4"

_IO_FLAGS = C.VM_IO | C.VM_PFNMAP | C.VM_MIXEDMAP


def vma_kind(mm: MmStruct, vma: VMA) -> str:
    """The region kind of ``vma`` in ``mm``: one of :data:`KINDS`.

    In this order: ``guard`` for a VMA with no access (``---p``/``---s``: PROT_NONE guard pages, reserved
    ranges); ``stack`` for ``[stack]`` or a VM_GROWSDOWN VMA; ``heap`` for ``[heap]`` (get_vma_name(): the VMA
    overlapping [start_brk, brk)); ``io`` for a file (device) mapping with VM_IO / VM_PFNMAP / VM_MIXEDMAP
    (driver memory of raw PFNs; the kernel's own ``[vvar]`` keeps pwndbg's kind, rodata);
    ``code`` for an executable VMA; ``data`` for a writable one; ``rodata`` for the rest (read-only).
    A W+X VMA keeps its kind; :func:`is_wx` says to underline it."""
    f = vma.vm_flags
    if not f & C.VM_ACCESS_FLAGS:
        return "guard"
    name = vma_name(mm, vma)
    if name == "[stack]" or f & C.VM_GROWSDOWN:
        return "stack"
    if name == "[heap]":
        return "heap"
    if f & _IO_FLAGS and vma.vm_file is not None:
        return "io"
    if f & C.VM_EXEC:
        return "code"
    if f & C.VM_WRITE:
        return "data"
    return "rodata"


def is_wx(vma: VMA) -> bool:
    """A VMA both writable and executable (pwndbg's "WX", drawn underlined)."""
    return vma.vm_flags & (C.VM_WRITE | C.VM_EXEC) == C.VM_WRITE | C.VM_EXEC


# -------------------------------------------------------------------------------------------------------
# colour
#: what ``--color`` accepts: colour when stdout is a terminal (and NO_COLOR is not set), always, never
COLOR_MODES = ("auto", "always", "never")


def use_color(mode: str, stream: TextIO) -> bool:
    """Whether to colour output to ``stream`` under ``--color=MODE``: ``always``, ``never``, or ``auto``
    (only a terminal, and not when the ``NO_COLOR`` environment variable is set: no-color.org)."""
    if mode not in COLOR_MODES:
        raise ValueError(f"--color must be one of {', '.join(COLOR_MODES)}, not {mode!r}")
    if mode != "auto":
        return mode == "always"
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


def sgr(text: str, params: str) -> str:
    """``text`` between the ANSI select-graphic-rendition ``params`` and a reset ("" leaves it plain)."""
    return f"\x1b[{params}m{text}\x1b[0m" if params else text


def kind_sgr(kind: str, wx: bool = False) -> str:
    """The SGR parameters of a row of ``kind`` (underlined when W+X)."""
    parts = [p for p in (KIND_SGR[kind], WX_SGR if wx else "") if p]
    return ";".join(parts)


def legend(color: bool = True) -> str:
    """The legend line, each kind in its colour (pwndbg's ``LEGEND: STACK | HEAP | ...``, with WX, GUARD
    and IO)."""
    names = [("STACK", "stack", False), ("HEAP", "heap", False), ("CODE", "code", False), ("DATA", "data", False),
             ("WX", "code", True), ("RODATA", "rodata", False), ("GUARD", "guard", False), ("IO", "io", False)]
    return "LEGEND: " + " | ".join(sgr(n, kind_sgr(k, wx)) if color else n for n, k, wx in names)


# -------------------------------------------------------------------------------------------------------
# gaps
def human_size(n: int) -> str:
    """A byte count as people read it: ``4 KiB``, ``1 MiB``, ``1.5 GiB`` (one decimal unless exact)."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            q = n / (1 << shift)
            return f"{q:.0f} {unit}" if n % (1 << shift) == 0 else f"{q:.1f} {unit}"
    return f"{n} B"


@dataclass(frozen=True)
class Gap:
    """An unmapped hole between two neighbouring VMAs, and what lies in it."""

    start: int
    end: int
    notes: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        return self.end - self.start

    def line(self) -> str:
        notes = "".join(f"; {n}" for n in self.notes)
        return f"    ~~ gap {self.start:x}-{self.end:x} {self.size:#x} ({human_size(self.size)}){notes}"


def gaps(mm: MmStruct) -> list[Gap]:
    """The holes between neighbouring VMAs of ``mm``, lowest first, noting the stack guard gap
    (mm/mmap.c: stack_guard_gap, vm_start_gap()) below a VM_GROWSDOWN VMA, ``mmap_base`` (where top-down
    placement starts, mm/util.c: mmap_base()) and the program break."""
    out: list[Gap] = []
    prev: VMA | None = None
    for vma in mm.tree:
        if prev is not None and vma.vm_start > prev.vm_end:
            notes: list[str] = []
            if vma.vm_flags & C.VM_GROWSDOWN:
                guard = vma.vm_start - max(vma.start_gap(), prev.vm_end)
                notes.append(f"stack guard gap {human_size(guard)} below {vma_name(mm, vma) or 'the growsdown VMA'}")
            if prev.vm_end <= mm.mmap_base < vma.vm_start:
                notes.append(f"mmap_base {mm.mmap_base:x}")
            if mm.start_brk and prev.vm_end <= mm.brk < vma.vm_start and mm.brk != prev.vm_end:
                notes.append(f"brk {mm.brk:x}")
            out.append(Gap(prev.vm_end, vma.vm_start, tuple(notes)))
        prev = vma
    return out


# -------------------------------------------------------------------------------------------------------
# vmalab maps --color / --gaps
#: the [vsyscall] gate line procfs.maps() appends (an x86-64 gate area, not a VMA of the tree): code
_VSYSCALL_KIND = "code"


def render_maps(mm: MmStruct, color: bool = False, show_gaps: bool = False, legend_line: bool | None = None,
                clean: Callable[[str], str] = str) -> str:
    """``/proc/PID/maps`` of ``mm`` as ``vmalab maps --color --gaps`` prints it: each line coloured by
    :func:`vma_kind` when ``color`` (then a legend line first, unless ``legend_line`` is False), and with
    ``show_gaps`` a line for every hole between neighbouring VMAs giving its range and size.  ``clean``
    makes a maps line safe for a terminal (the CLI's ``printable``); escapes are added after it.  With
    neither option this is exactly :func:`vmalab.procfs.maps`."""
    lines = maps(mm).splitlines()
    holes = {g.start: g for g in gaps(mm)} if show_gaps else {}
    out: list[str] = []
    if color if legend_line is None else legend_line:
        out.append(legend(color))
    vmas = list(mm.tree)
    for i, text in enumerate(lines):
        text = clean(text)
        if i < len(vmas):
            vma = vmas[i]
            params = kind_sgr(vma_kind(mm, vma), is_wx(vma))
        else:
            vma = None
            params = kind_sgr(_VSYSCALL_KIND)
        out.append(sgr(text, params) if color else text)
        if vma is not None and vma.vm_end in holes:
            g = holes[vma.vm_end].line()
            out.append(sgr(g, "2") if color else g)
    return "\n".join(out) + "\n"


# -------------------------------------------------------------------------------------------------------
# vmalab run --step
@dataclass
class Step:
    """One op of a stepped run: its index, name and arguments, its result, and the maps lines it removed
    and added (the difference of ``/proc/PID/maps`` before and after it)."""

    index: int
    op: str
    args: dict[str, Any]
    result: dict[str, Any]
    removed: list[str]
    added: list[str]
    trace: list[str]


def maps_difference(before: str, after: str) -> tuple[list[str], list[str]]:
    """The lines of maps text ``before`` that ``after`` lacks, and those it adds, each in address order."""
    old, new = before.splitlines(), after.splitlines()
    old_set, new_set = set(old), set(new)
    return [ln for ln in old if ln not in new_set], [ln for ln in new if ln not in old_set]


class StepRunner(ModelRunner):
    """A :class:`ModelRunner` that calls ``on_step`` with a :class:`Step` after each op of the scenario
    (a ``repeat`` is one step), before the next op runs."""

    def __init__(self, scn: Scenario, on_step: Callable[[Step], None], **kwargs: Any) -> None:
        super().__init__(scn, **kwargs)
        self.on_step = on_step
        self._depth = 0
        self._maps = maps(self.mm)
        self._events = 0

    def do(self, op: Op, first_addr_shift: int = 0, first_addr: int | None = None) -> dict[str, Any]:
        self._depth += 1
        try:
            res = super().do(op, first_addr_shift, first_addr)
        finally:
            self._depth -= 1
        if self._depth == 0:
            now = maps(self.mm)
            removed, added = maps_difference(self._maps, now)
            self._maps = now
            events = self.mm.probe.events
            trace = [str(e) for e in events[self._events:]]
            self._events = len(events)
            index = self.mm.probe.op_index
            self.on_step(Step(index if index is not None else 0, op.op, dict(op.args), dict(res), removed, added,
                              trace))
        return res


def _ret_text(res: dict[str, Any]) -> str:
    if res.get("errno"):
        return f"-1 {res['errno']}"
    if res.get("signal"):
        return f"-1 {res['signal']}"
    if "vmas" in res and "ret" not in res:
        return f"{len(res['vmas'])} VMA{'s' * (len(res['vmas']) != 1)}"
    return str(res.get("ret"))


def step_lines(step: Step, color: bool = False, clean: Callable[[str], str] = str) -> list[str]:
    """How ``vmalab run --step`` prints one step: the op and what it returned, then its maps difference
    (``-`` a line that went, ``+`` one that came; red and green when ``color``), or ``(maps unchanged)``."""
    args = " ".join(f"{k}={v}" for k, v in step.args.items() if k != "body")
    head = clean(f"#{step.index} {step.op} {args} -> {_ret_text(step.result)}")
    out = [sgr(head, "1") if color else head]
    out += [f"    trace: {clean(t)}" for t in step.trace]
    for sign, lines, params in (("-", step.removed, "31"), ("+", step.added, "32")):
        for ln in lines:
            text = f"  {sign} {clean(ln)}"
            out.append(sgr(text, params) if color else text)
    if not step.removed and not step.added:
        out.append("    (maps unchanged)")
    return out


def color_option(color: str | None, scenario: str | None) -> tuple[str | None, str | None]:
    """Resolve ``vmalab maps --color[=WHEN] [SCENARIO]``: the option takes an optional value, so in
    ``--color s.json`` the parser hands the scenario to ``--color``; that is ``--color=auto`` and the
    scenario.  Returns (mode or None for no --color, scenario); ValueError for a bad WHEN."""
    if color is None or color in COLOR_MODES:
        return color, scenario
    if scenario is None and not color.startswith("-"):
        return "auto", color
    raise ValueError(f"--color must be one of {', '.join(COLOR_MODES)}, not {color!r}")


def run_steps(scn: Scenario, out: Callable[[str], None], color: bool = False, clean: Callable[[str], str] = str,
              **runner_args: Any) -> dict[str, Any]:
    """``vmalab run --step``: run ``scn`` on the model, handing ``out`` a title line, then each op's
    :func:`step_lines` as soon as the op has run; returns the result object.  ``runner_args`` go to
    :class:`ModelRunner` (``trace``, ``kernel``, ``caps``, limits); ModelUnsupported as the run raises it."""
    check_supported(scn)

    def show(step: Step) -> None:
        out("\n".join(step_lines(step, color=color, clean=clean)))

    runner = StepRunner(scn, show, **runner_args)
    title = clean(f"# {scn.name}  (model-{runner.mm.profile.name}): each op, then the maps lines it removed (-) "
                  "and added (+)")
    out(sgr(title, "1") if color else title)
    return runner.run()
