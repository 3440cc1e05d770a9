"""The port checker (``vmalab port-check OLD.py NEW.py``): a legacy ``->mmap`` driver against its
``->mmap_prepare`` port.

Both drivers (loaded with :func:`vmalab.explore.load_driver`) run through the same shapes — a fresh range
(shared and private), MAP_FIXED over an anonymous mapping with pages, two adjacent mappings of contiguous
offsets (the merge path), and mprotect / mremap / fork after the mapping — on a fresh ``MM(kernel=P)`` for
every kernel profile, first without a fault and then with each injected failure (every point of
:data:`vmalab.faultpoints.FAULT_POINTS` that both drivers reach, at each hit; the driver's own hook,
``mmap`` for the legacy driver and ``mmap_prepare`` for the port, counts as one point ``hook``).  A driver
that raises :class:`~vmalab.driver.ProfileFeatureError` cannot run on that profile: reported, not compared.

Each run is observed as: every syscall's return (offsets from the window, errno names), the VMA layout of
the window with its VmFlags, ``committed`` and ``leaked_commit``, file references beyond the descriptors
and VMAs that hold them, the PTEs and Rss of the window, a fork child's layout, and — after an uninjected
munmap of the window — what :meth:`vmalab.resources.ResourceTracker.check` still finds.  Every field that
differs is a :class:`Difference`; those that upstream documents as the intended effect of the port are
marked ``intended`` with the reason (docs/mmap-prepare.md):

* ``merge``: the port's layout is the legacy one with adjacent VMAs merged — ``mmap_prepare`` sets the
  flags before the merge attempt, so a prepared mapping can merge where the legacy one could not (§2);
* ``commit``: a failed ``mmap_prepare`` keeps the commit charge on the profiles whose kernel does (6.16–7.1,
  §1.2), where a failed legacy ``->mmap`` releases it.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import constants as C
from .driver import ProfileFeatureError
from .explore import DriverSpec
from .faultpoints import FAULT_POINTS
from .mm import MM
from .profiles import PROFILES, get_profile
from .resources import expected_file_refs

K = C.PAGE_SIZE
BASE = 0x500000000000
WINDOW = 1 << 20
HOOK = "hook"  # the driver's own hook: ->mmap (legacy) or ->mmap_prepare (port)
RW = C.PROT_READ | C.PROT_WRITE
SHARED = C.MAP_SHARED | C.MAP_FIXED
PRIVATE = C.MAP_PRIVATE | C.MAP_FIXED
ANON = C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_FIXED

MERGE_REASON = ("mmap_prepare sets the flags before the merge attempt, so the prepared mapping merges where "
                "the legacy one cannot (docs/mmap-prepare.md §2)")
MERGE_FAULT_REASON = ("the prepared mapping merged (docs/mmap-prepare.md §2): it allocates no VMA, so it never "
                      "reaches this failure, which the legacy mapping does")
COMMIT_REASON = ("a failed mmap_prepare keeps the commit charge on this profile (6.16-7.1), a failed legacy "
                 "->mmap releases it (docs/mmap-prepare.md §1)")


class PortCheckError(ValueError):
    """The drivers cannot be compared (one-line message)."""


# ---------------------------------------------------------------------------------------------------------
# shapes: each is a list of steps (name, fn(mm, fd) -> return value); the driver's mmaps are "mmap"
Step = tuple[str, Callable[[MM, int], int]]


def _mmap(off: int, size: int, flags: int, fd_off: int = 0) -> Step:
    return (f"mmap +{off:#x} {size // K}p", lambda mm, fd: mm.syscall("mmap", BASE + off, size, RW, flags, fd, fd_off))


def _anon(off: int, size: int) -> Step:
    return (f"anon +{off:#x}", lambda mm, fd: mm.syscall("mmap", BASE + off, size, RW, ANON, -1, 0))


def _touch(off: int) -> Step:
    return (f"touch +{off:#x}", lambda mm, fd: mm.syscall("touch", BASE + off, 1, 1))


SHAPES: dict[str, tuple[str, list[Step]]] = {
    "new": ("a fresh shared range", [_mmap(0x10000, 4 * K, SHARED), _touch(0x10000)]),
    "new-private": ("a fresh private writable range (commit charge)", [_mmap(0x10000, 4 * K, PRIVATE)]),
    "fixed": ("MAP_FIXED over an anonymous mapping with pages",
              [_anon(0x10000, 8 * K), _touch(0x11000), _mmap(0x11000, 4 * K, SHARED)]),
    "adjacent": ("two adjacent mappings of contiguous offsets (a merge opportunity)",
                 [_mmap(0x10000, 2 * K, SHARED), _mmap(0x12000, 2 * K, SHARED, 2 * K)]),
    "mprotect": ("mprotect of part of the mapping afterwards (a split: ->open)",
                 [_mmap(0x10000, 4 * K, SHARED),
                  ("mprotect +0x11000 1p", lambda mm, fd: mm.syscall("mprotect", BASE + 0x11000, K, C.PROT_READ))]),
    "mremap": ("mremap growing the mapping afterwards (VM_DONTEXPAND)",
               [_mmap(0x10000, 4 * K, SHARED),
                ("mremap 4p->8p", lambda mm, fd: mm.syscall("mremap", BASE + 0x10000, 4 * K, 8 * K, 0, 0))]),
    "fork": ("fork afterwards (VM_DONTCOPY, ->open in the child)",
             [_mmap(0x10000, 4 * K, SHARED), _touch(0x10000), ("fork", lambda mm, fd: mm.syscall("fork"))]),
}


# ---------------------------------------------------------------------------------------------------------
# one run
@dataclass
class Observation:
    """What one driver did in one shape under one profile and fault (``unavailable``: it cannot run)."""

    unavailable: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)
    fired: bool = False  # the injected fault was reached


def _layout(mm: MM) -> list[str]:
    return [f"+{v.vm_start - BASE:#x}-+{v.vm_end - BASE:#x} pgoff={v.vm_pgoff:#x} {C.vmflags_str(v.vm_flags)}"
            for v in mm.tree.range(BASE, BASE + WINDOW)]


def _ret(name: str, r: int) -> str:
    if r < 0:
        return "-" + C.errname(r)
    if name.startswith(("mmap", "anon", "mremap")):
        return f"+{r - BASE:#x}" if BASE <= r < BASE + WINDOW else f"{r:#x}"
    return "child" if name == "fork" else str(r)


def _excess_file_refs(mm: MM) -> int:
    want = expected_file_refs(mm)
    return sum(f.refcount - want.get(id(f), 0) for f in mm.resources.files)


def observe(driver: DriverSpec, profile: str, shape: str, fault: tuple[str, int] | None = None) -> Observation:
    """Run ``driver`` through ``shape`` on a fresh ``MM(kernel=profile)``, failing the k-th hit of the
    fault point (``hook``: the driver's own hook) when ``fault`` is given."""
    out = Observation()
    mm = MM(kernel=profile)
    try:
        fd = driver.opener(mm, 1 << 20)
    except ProfileFeatureError as e:
        out.unavailable = str(e)
        return out
    fops = mm.fdtable[fd].f_op
    hook = "mmap" if fops.has_mmap else "mmap_prepare"
    if fault is not None:
        point, k = fault
        real = hook if point == HOOK else point
        mm.fail_plan[real] = (k, -FAULT_POINTS[real].errno)
    else:
        real, k = "", 0
    rets: list[str] = []
    child: MM | None = None
    f = out.fields
    for name, fn in SHAPES[shape][1]:
        try:
            r = fn(mm, fd)
        except ProfileFeatureError as e:
            out.unavailable = str(e)
            return out
        except Exception as e:  # the driver (or the core) raised: the kernel would oops
            rets.append(f"{name}: raised {type(e).__name__}: {e}")
            break
        rets.append(f"{name}: {_ret(name, r)}")
        if name == "fork" and r > 0:
            c = mm.children.pop(r)
            child = c if isinstance(c, MM) else None
    hits = dict(mm.fail_hits)
    out.fired = fault is not None and hits.get(real, 0) >= k
    out.hits = {(HOOK if p == hook else p): n for p, n in hits.items() if p not in ("mmap", "mmap_prepare")
                or p == hook}
    f["returns"] = rets
    if child is not None:
        f["child layout"] = _layout(child)
        try:
            child.exit_mmap()
            child.exit_files()
        except Exception as e:
            f["child exit"] = f"raised {type(e).__name__}: {e}"
    f["layout"] = _layout(mm)
    f["committed"] = mm.committed
    f["leaked_commit"] = mm.leaked_commit
    f["file refs (excess)"] = _excess_file_refs(mm)
    f["ptes"] = sum(1 for _ in mm.pt.items(BASE >> C.PAGE_SHIFT, (BASE + WINDOW) >> C.PAGE_SHIFT))
    f["rss pages"] = sum(mm.rss_pages(v) for v in mm.tree.range(BASE, BASE + WINDOW))
    mm.fail_plan.clear()
    try:
        mm.sys_munmap(BASE, WINDOW)
        mm.validate()
        f["after munmap"] = sorted(f"{p.kind}: {p.what}" for p in mm.resources.check(mm))
    except Exception as e:
        f["after munmap"] = [f"raised {type(e).__name__}: {e}"]
    _neutral(out.fields, driver.name)
    return out


def _neutral(fields: dict[str, Any], name: str) -> None:
    """Write the driver's own name (its device path) as ``DRIVER``, so two drivers' texts compare."""
    for key, v in fields.items():
        if isinstance(v, str):
            fields[key] = v.replace(name, "DRIVER")
        elif isinstance(v, list):
            fields[key] = [x.replace(name, "DRIVER") if isinstance(x, str) else x for x in v]


# ---------------------------------------------------------------------------------------------------------
# comparing
@dataclass
class Difference:
    profile: str
    shape: str
    fault: str
    field: str
    old: Any
    new: Any
    intended: str | None = None  # the documented reason, when upstream documents it

    def to_json(self) -> dict[str, Any]:
        return {"profile": self.profile, "shape": self.shape, "fault": self.fault, "field": self.field,
                "old": self.old, "new": self.new, "intended": self.intended}


@dataclass
class PortReport:
    old: str
    new: str
    profiles: list[str]
    differences: list[Difference] = field(default_factory=list)
    unavailable: dict[str, dict[str, str]] = field(default_factory=dict)  # profile -> "old"/"new" -> why
    one_sided: dict[str, list[str]] = field(default_factory=dict)  # "old"/"new" -> points only it reaches
    runs: int = 0

    @property
    def unintended(self) -> list[Difference]:
        return [d for d in self.differences if d.intended is None]

    def to_json(self) -> dict[str, Any]:
        return {"old": self.old, "new": self.new, "profiles": self.profiles, "runs": self.runs,
                "differences": [d.to_json() for d in self.differences],
                "unintended": len(self.unintended), "unavailable": self.unavailable,
                "one_sided_fault_points": self.one_sided}


def _ranges(lines: list[str]) -> list[tuple[int, int, str]]:
    out = []
    for ln in lines:
        rng, _, rest = ln.partition(" ")
        a, b = rng.split("-")
        flags = rest.partition(" ")[2]
        out.append((int(a[1:], 16), int(b[1:], 16), flags))
    return out


def is_merge_of(old: list[str], new: list[str]) -> bool:
    """``new`` is ``old`` with some adjacent VMAs (same VmFlags, contiguous) merged, and nothing else."""
    o, n = _ranges(old), _ranges(new)
    if len(n) >= len(o):
        return False
    i = 0
    for start, end, flags in n:
        if i >= len(o) or o[i][0] != start or o[i][2] != flags:
            return False
        cur = o[i][1]
        i += 1
        while cur < end and i < len(o) and o[i][0] == cur and o[i][2] == flags:
            cur = o[i][1]
            i += 1
        if cur != end:
            return False
    return i == len(o)


def _classify(profile: str, fault: str, name: str, old: Any, new: Any, merged: bool,
              only_old_fails: bool) -> str | None:
    if name == "layout" and is_merge_of(old, new):
        return MERGE_REASON
    if merged and only_old_fails:
        return MERGE_FAULT_REASON
    if name in ("committed", "leaked_commit") and fault.startswith(HOOK) and new > old \
            and not get_profile(profile).prepare_failure_releases_charge:
        return COMMIT_REASON
    return None


def compare(old: DriverSpec, new: DriverSpec, profiles: list[str] | None = None,
            shapes: list[str] | None = None, faults: bool = True) -> PortReport:
    """Run both drivers through every shape and fault on every profile and list the differences."""
    profiles = profiles or list(PROFILES)
    rep = PortReport(old.source if old.source != "built-in" else old.name,
                     new.source if new.source != "built-in" else new.name, profiles)
    one: dict[str, set[str]] = {"old": set(), "new": set()}
    for prof in profiles:
        for shape in shapes or list(SHAPES):
            bo, bn = observe(old, prof, shape), observe(new, prof, shape)
            rep.runs += 2
            if bo.unavailable or bn.unavailable:
                for side, ob in (("old", bo), ("new", bn)):
                    if ob.unavailable:
                        rep.unavailable.setdefault(prof, {})[side] = ob.unavailable
                continue
            runs: list[tuple[str, Observation, Observation]] = [("(no fault)", bo, bn)]
            base_merge = is_merge_of(bo.fields["layout"], bn.fields["layout"])
            if faults:
                one["old"] |= set(bo.hits) - set(bn.hits)
                one["new"] |= set(bn.hits) - set(bo.hits)
                for p in sorted(set(bo.hits) & set(bn.hits)):
                    for k in range(1, max(bo.hits[p], bn.hits[p]) + 1):
                        fo = observe(old, prof, shape, (p, k))
                        fn = observe(new, prof, shape, (p, k))
                        rep.runs += 2
                        runs.append((f"{p}#{k}", fo, fn))
            for label, o, n in runs:
                if o.unavailable or n.unavailable:
                    continue
                merged = base_merge or is_merge_of(o.fields.get("layout", []), n.fields.get("layout", []))
                only_old = o.fired and not n.fired
                for name in dict.fromkeys([*o.fields, *n.fields]):
                    a, b = o.fields.get(name), n.fields.get(name)
                    if a != b:
                        rep.differences.append(Difference(prof, shape, label, name, a, b,
                                                          _classify(prof, label, name, a, b, merged,
                                                                    only_old)))
    rep.one_sided = {k: sorted(v) for k, v in one.items() if v}
    return rep


# ---------------------------------------------------------------------------------------------------------
# the report
def _fmt(v: Any) -> list[str]:
    if isinstance(v, list):
        return [str(x) for x in v] or ["(none)"]
    return ["(absent)" if v is None else str(v)]


def _wrap(text: str, width: int) -> list[str]:
    return [text[i:i + width] for i in range(0, len(text), width)] or [""]


def _prose(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width, subsequent_indent="    ", break_on_hyphens=False) or [""]


def format_report(rep: PortReport, width: int = 100) -> str:
    """The plain-text report: each difference with OLD and NEW side by side, at most ``width`` columns."""
    col = (width - 3) // 2
    lines = [f"# vmalab port-check {rep.old} -> {rep.new}"[:width],
             f"# {rep.runs} runs, profiles {', '.join(rep.profiles)}"[:width]]
    for prof in rep.profiles:
        for side, why in sorted(rep.unavailable.get(prof, {}).items()):
            lines.extend(_prose(f"- {prof}: {side.upper()} cannot run on this profile: {why}", width))
    for side, pts in rep.one_sided.items():
        lines.extend(_prose(f"- only {side.upper()} reaches (not compared): {', '.join(pts)}", width))
    groups: dict[tuple[str, str, str, str], list[Difference]] = {}
    for d in rep.differences:
        groups.setdefault((d.shape, d.fault, d.field, repr((d.old, d.new, d.intended))), []).append(d)
    for (shape, fault, name, _), ds in groups.items():
        ds0 = ds[0]
        tag = "INTENDED" if ds0.intended else "DIFFERENT"
        profs = ", ".join(d.profile for d in ds)
        lines.append("")
        lines.extend(_prose(f"{tag}: {shape} / {fault} / {name}  [{profs}]", width))
        if ds0.intended:
            lines.extend(_prose(f"  why: {ds0.intended}", width))
        lines.append(f"{'OLD':<{col}} | NEW")
        a, b = _fmt(ds0.old), _fmt(ds0.new)
        wa = [w for x in a for w in _wrap(x, col)]
        wb = [w for x in b for w in _wrap(x, col)]
        for i in range(max(len(wa), len(wb))):
            left = wa[i] if i < len(wa) else ""
            right = wb[i] if i < len(wb) else ""
            lines.append(f"{left:<{col}} | {right}".rstrip())
    n, u = len(rep.differences), len(rep.unintended)
    lines.append("")
    lines.append(f"{n} difference(s), {n - u} intended, {u} unintended")
    return "\n".join(lines) + "\n"
