"""Why two VMAs merge, or why not: every condition Linux 6.18's mm/vma.c checks, and the one that decided.

The merge rules themselves live in :mod:`vmalab.vma` (``can_vma_merge_left()`` / ``can_vma_merge_right()``,
``vma_merge_new_range()``, ``vma_merge_existing_range()``); this module restates each of their conditions as a
named :class:`MergeCheck` with the kernel function that checks it, so a refusal can be explained:

========================  ===============================================================================
name                      condition (kernel function)
========================  ===============================================================================
``adjacent``              the neighbour touches the range (``can_vma_merge_left()`` / ``_right()``)
``vm_special``            no VM_IO, VM_DONTEXPAND, VM_PFNMAP, VM_MIXEDMAP (``vma_merge_new_range()`` /
                          ``vma_merge_existing_range()``)
``mempolicy``             same NUMA policy (``is_mergeable_vma()``: ``mpol_equal()``) -- not modelled
``flags``                 same vm_flags but the ones merges ignore (``is_mergeable_vma()``)
``seal``                  a flags difference that is only VM_SEALED (mseal(): a vm_flag on 64-bit)
``file``                  same ``vm_file`` (``is_mergeable_vma()``)
``userfaultfd``           same userfaultfd context (``is_mergeable_vm_userfaultfd_ctx()``) -- not modelled
``anon_name``             same anon VMA name (``is_mergeable_vma()``: ``anon_vma_name_eq()``)
``anon_vma``              anon_vmas compatible, including the uncowed-parent rule
                          (``is_mergeable_anon_vma()``, ``vma_had_uncowed_parents()``)
``pgoff``                 the file offset continues (``can_vma_merge_after()`` / ``can_vma_merge_before()``)
``anon_vma_prev_next``    merging both sides: prev's and next's anon_vmas agree
                          (``can_vma_merge_right()``: ``are_anon_vmas_compatible()``)
``vm_ops_close``          a VMA the merge removes has no ``vm_ops->close`` (``can_merge_remove_vma()``)
========================  ===============================================================================

The checks are listed in the order the kernel evaluates them (adjacency first); the *deciding* check of a
refusal is the first one that fails.  Conditions of state the model does not keep (NUMA policy,
userfaultfd context) are listed as holding, with a detail saying so.

Three entry points:

* :func:`explain_pair` -- would the kernel merge two existing neighbouring VMAs (when an operation gives the
  upper one the attributes it has, as ``vma_merge_existing_range()`` would see it)?
  ``MM.explain_merge(a, b)`` is the façade's name for it.
* :func:`trace_merge_attempt` -- called by :mod:`vmalab.vma` at every merge attempt when tracing is on
  (``mm.probe.tracing``): one trace event per side (prev, next) with the verdict, so ``vmalab run --trace``
  says why for every attempt.  The event's ``pair`` detail is the :class:`MergeVerdict`.
* :func:`attempt_verdicts` -- the verdicts of one attempt without tracing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import constants as C
from .constants import PAGE_SHIFT
from .mm_types import VMA, MmStruct

if TYPE_CHECKING:
    from .files import File
    from .mm_types import AnonVma
    from .vma import VmaMerge

__all__ = ["CHECK_NAMES", "MergeCheck", "MergeVerdict", "attempt_verdicts", "explain_merge", "explain_pair",
           "merge_events", "trace_merge_attempt"]

#: every check name, in the order the checks are listed (and the kernel evaluates them)
CHECK_NAMES = ("adjacent", "vm_special", "mempolicy", "flags", "seal", "file", "userfaultfd", "anon_name",
               "anon_vma", "pgoff", "anon_vma_prev_next", "vm_ops_close")

_NOT_MODELLED = "not modelled: always equal here"

#: vm_flags bit -> name, for details
_FLAG_NAMES: dict[int, str] = {getattr(C, n): n for n in (
    "VM_READ", "VM_WRITE", "VM_EXEC", "VM_SHARED", "VM_MAYREAD", "VM_MAYWRITE", "VM_MAYEXEC", "VM_MAYSHARE",
    "VM_GROWSDOWN", "VM_UFFD_MISSING", "VM_PFNMAP", "VM_MAYBE_GUARD", "VM_UFFD_WP", "VM_LOCKED", "VM_IO",
    "VM_SEQ_READ", "VM_RAND_READ", "VM_DONTCOPY", "VM_DONTEXPAND", "VM_LOCKONFAULT", "VM_ACCOUNT",
    "VM_NORESERVE", "VM_HUGETLB", "VM_SYNC", "VM_ARCH_1", "VM_WIPEONFORK", "VM_DONTDUMP", "VM_SOFTDIRTY",
    "VM_MIXEDMAP", "VM_HUGEPAGE", "VM_NOHUGEPAGE", "VM_MERGEABLE", "VM_SHADOW_STACK", "VM_UFFD_MINOR",
    "VM_DROPPABLE", "VM_SEALED")}


def flag_names(flags: int) -> str:
    """``VM_READ|VM_EXEC`` for a flag word (unknown bits as hex)."""
    names = []
    bit = 1
    while flags >= bit:
        if flags & bit:
            names.append(_FLAG_NAMES.get(bit, f"{bit:#x}"))
        bit <<= 1
    return "|".join(names) or "0"


@dataclass(frozen=True)
class MergeCheck:
    """One condition of a merge: its stable ``name`` (one of :data:`CHECK_NAMES`), whether it holds, why,
    and the kernel function that checks it."""

    name: str
    ok: bool
    detail: str
    kernel_fn: str


@dataclass
class MergeVerdict:
    """Would ``lower`` ``[start, end)`` and ``upper`` (directly above it) become one VMA, and why not.

    For a merge attempt (:func:`attempt_verdicts`) one of the two is the range being mapped or changed and
    the other the neighbour (``side`` ``"prev"``: the neighbour is ``lower``; ``"next"``: it is ``upper``);
    ``op`` is the operation and ``context`` the kernel function that attempted the merge.  For a pair of
    existing VMAs (:func:`explain_pair`) ``side`` is ``"pair"``.  ``deciding`` is the first check that
    failed (None when the merge happens)."""

    lower: tuple[int, int]
    upper: tuple[int, int]
    merges: bool
    deciding: MergeCheck | None
    checks: list[MergeCheck] = field(default_factory=list)
    side: str = "pair"
    op: str = ""
    context: str = "vma_merge_existing_range()"

    def check(self, name: str) -> MergeCheck:
        """The check called ``name`` (``KeyError`` if this verdict has none)."""
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def summary(self) -> str:
        """One line: the two ranges, merge or not, and the deciding condition with its kernel function."""
        lo, hi = f"{self.lower[0]:#x}-{self.lower[1]:#x}", f"{self.upper[0]:#x}-{self.upper[1]:#x}"
        if self.side == "prev":
            lo, hi = f"prev {lo}", f"range {hi}"
        elif self.side == "next":
            lo, hi = f"range {lo}", f"next {hi}"
        head = f"{self.op + ': ' if self.op else ''}{lo} + {hi}: "
        if self.merges:
            return head + f"merge (all {len(self.checks)} conditions hold; {self.context})"
        d = self.deciding
        assert d is not None
        return head + f"no merge: {d.name}: {d.detail} ({d.kernel_fn})"

    def lines(self) -> list[str]:
        """:meth:`summary`, then one line per check (``ok`` / ``NO``, name, detail, kernel function)."""
        out = [self.summary()]
        for c in self.checks:
            mark = "ok" if c.ok else "NO"
            star = " <- decides" if c is self.deciding else ""
            out.append(f"  {mark:<2} {c.name:<18} {c.detail}  [{c.kernel_fn}]{star}")
        return out

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: ranges as hex strings, ``deciding`` as the check's name (or null)."""
        return {"lower": [f"{self.lower[0]:#x}", f"{self.lower[1]:#x}"],
                "upper": [f"{self.upper[0]:#x}", f"{self.upper[1]:#x}"],
                "merges": self.merges, "deciding": None if self.deciding is None else self.deciding.name,
                "side": self.side, "op": self.op, "context": self.context,
                "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail, "kernel_fn": c.kernel_fn}
                           for c in self.checks]}

    def __str__(self) -> str:  # the ``pair`` detail of a trace event
        return f"{self.lower[0]:x}-{self.lower[1]:x}|{self.upper[0]:x}-{self.upper[1]:x}"


def _verdict(lower: tuple[int, int], upper: tuple[int, int], checks: list[MergeCheck], side: str, op: str,
             context: str) -> MergeVerdict:
    deciding = next((c for c in checks if not c.ok), None)
    return MergeVerdict(lower, upper, deciding is None, deciding, checks, side, op, context)


# ---------------------------------------------------------------------------------------------------
# the conditions, over copies of the fields they read
class _Range:
    """The fields a merge reads of one VMA, or of the range being mapped or changed, copied when the merge
    is attempted (the VMAs change afterwards).  ``avc`` is the length of the anon_vma chain the
    uncowed-parent rule looks at; ``close``: the VMA has ``vm_ops->close``."""

    __slots__ = ("start", "end", "flags", "pgoff", "file", "anon", "avc", "name", "close")

    def __init__(self, start: int, end: int, flags: int, pgoff: int, file: File | None, anon: AnonVma | None,
                 avc: int, name: str | None, close: bool) -> None:
        self.start = start
        self.end = end
        self.flags = flags
        self.pgoff = pgoff
        self.file = file
        self.anon = anon
        self.avc = avc
        self.name = name
        self.close = close

    @staticmethod
    def of(v: VMA) -> _Range:
        return _Range(v.vm_start, v.vm_end, v.vm_flags, v.vm_pgoff, v.vm_file, v.anon_vma, v.avc_len, v.anon_name,
                      _has_close(v))

    @property
    def pages(self) -> int:
        return (self.end - self.start) >> PAGE_SHIFT

    def uncowed(self) -> bool:
        """vma_had_uncowed_parents(): an anon_vma inherited over fork (its anon_vma_chain is longer than one)."""
        return self.anon is not None and self.avc != 1


def _has_close(v: VMA) -> bool:
    return v.vm_ops is not None and v.vm_ops.has_close


#: one condition: (whether it holds, how to describe it); the description is built only when asked for
_Item = tuple[bool, Callable[[bool], MergeCheck]]


def _pages(n: int) -> str:
    return f"{n} page" if n == 1 else f"{n} pages"


def _file_name(f: File | None) -> str:
    return "no file" if f is None else (f.display_path or "a file")


def _special(flags: int, who: str, fn: str) -> _Item:
    """VM_SPECIAL: vma_merge_new_range() / vma_merge_existing_range() give up before looking at a side."""
    bits = flags & C.VM_SPECIAL

    def make(ok: bool) -> MergeCheck:
        if not ok:
            return MergeCheck("vm_special", False, f"{who} has {flag_names(bits)} (VM_SPECIAL: never merged)", fn)
        return MergeCheck("vm_special", True, "no VM_IO/VM_DONTEXPAND/VM_PFNMAP/VM_MIXEDMAP", fn)
    return not bits, make


def _side_items(side: str, tgt: _Range, rng: _Range, tgt_who: str, who: str, special: _Item,
                names_enabled: bool) -> list[_Item]:
    """The conditions of can_vma_merge_left() (``side`` "prev": ``tgt`` below ``rng``) or
    can_vma_merge_right() (``side`` "next": ``tgt`` above ``rng``), in the kernel's order, up to pgoff.
    ``tgt_who`` and ``who`` name the two in details."""
    if side == "prev":
        adjacent_ok = tgt.end == rng.start
        gap, pair, adj_fn = rng.start - tgt.end, f"{tgt_who} and {who}", "can_vma_merge_left()"
        pgoff_ok = tgt.pgoff + tgt.pages == rng.pgoff
    else:
        adjacent_ok = tgt.start == rng.end
        gap, pair, adj_fn = tgt.start - rng.end, f"{who} and {tgt_who}", "can_vma_merge_right()"
        pgoff_ok = tgt.pgoff == rng.pgoff + rng.pages

    def adjacent(ok: bool) -> MergeCheck:
        if ok:
            return MergeCheck("adjacent", True, f"{tgt_who} {tgt.start:#x}-{tgt.end:#x} touches {who}", adj_fn)
        what = f"a gap of {gap:#x} bytes lies between {pair}" if gap > 0 else f"{tgt_who} does not touch {who}"
        return MergeCheck("adjacent", False, what, adj_fn)

    def mempolicy(ok: bool) -> MergeCheck:
        return MergeCheck("mempolicy", ok, f"NUMA policy {_NOT_MODELLED}", "mpol_equal()")

    diff = (tgt.flags ^ rng.flags) & ~C.VM_IGNORE_MERGE

    def differ(bits: int) -> str:
        parts = []
        if tgt.flags & bits:
            parts.append(f"{flag_names(tgt.flags & bits)} only on {tgt_who}")
        if rng.flags & bits:
            parts.append(f"{flag_names(rng.flags & bits)} only on {who}")
        return "; ".join(parts)

    def flags(ok: bool) -> MergeCheck:
        if not ok:
            return MergeCheck("flags", False, differ(diff & ~C.VM_SEALED), "is_mergeable_vma()")
        ignored = (tgt.flags ^ rng.flags) & C.VM_IGNORE_MERGE
        note = f" (ignored: {flag_names(ignored)} differ, VM_IGNORE_MERGE)" if ignored else ""
        return MergeCheck("flags", True, "same vm_flags" + note, "is_mergeable_vma()")

    def seal(ok: bool) -> MergeCheck:
        if not ok:
            return MergeCheck("seal", False, f"mseal(): {differ(C.VM_SEALED)}", "is_mergeable_vma()")
        return MergeCheck("seal", True, "both sealed" if rng.flags & C.VM_SEALED else "neither sealed",
                          "is_mergeable_vma()")

    def file(ok: bool) -> MergeCheck:
        if ok:
            what = "both anonymous" if rng.file is None else f"same file {_file_name(rng.file)}"
            return MergeCheck("file", True, what, "is_mergeable_vma()")
        if tgt.file is not None and rng.file is not None and tgt.file.inode is rng.file.inode:
            why = f"two opens of {_file_name(rng.file)}: different struct file"
        else:
            why = f"{tgt_who}: {_file_name(tgt.file)}, {who}: {_file_name(rng.file)}"
        return MergeCheck("file", False, why, "is_mergeable_vma()")

    def userfaultfd(ok: bool) -> MergeCheck:
        return MergeCheck("userfaultfd", ok, f"userfaultfd context {_NOT_MODELLED} (VM_UFFD_* bits are compared "
                                             "with the flags)", "is_mergeable_vm_userfaultfd_ctx()")

    def anon_name(ok: bool) -> MergeCheck:
        if not ok:
            return MergeCheck("anon_name", False, f"{tgt_who} named {tgt.name!r}, {who} named {rng.name!r}",
                              "anon_vma_name_eq()")
        what = f"both named {rng.name!r}" if rng.name else "both unnamed"
        if not names_enabled and not rng.name:
            what += " (CONFIG_ANON_VMA_NAME is off on the live 6.18 kernel)"
        return MergeCheck("anon_name", True, what, "anon_vma_name_eq()")

    # is_mergeable_anon_vma(): the anon_vma of the one that has one must be shareable
    lone = None if (tgt.anon is None) == (rng.anon is None) else (rng if tgt.anon is None else tgt)
    if lone is not None:
        anon_ok = not lone.uncowed()
    else:
        anon_ok = tgt.anon is rng.anon

    def anon_vma(ok: bool) -> MergeCheck:
        fn = "is_mergeable_anon_vma()"
        if lone is not None:
            has = who if lone is rng else tgt_who
            if not ok:
                return MergeCheck("anon_vma", False, f"{has}'s anon_vma was inherited over fork (anon_vma_chain "
                                                     f"of {lone.avc}: uncowed parents), the other has none",
                                  "vma_had_uncowed_parents()")
            assert lone.anon is not None
            return MergeCheck("anon_vma", True, f"only {has} has an anon_vma (#{lone.anon.id}); the merged VMA "
                                                "takes it", fn)
        if tgt.anon is None or rng.anon is None:
            return MergeCheck("anon_vma", True, "neither has an anon_vma", fn)
        if ok:
            return MergeCheck("anon_vma", True, f"same anon_vma #{rng.anon.id}", fn)
        return MergeCheck("anon_vma", False, f"different anon_vmas: {tgt_who} #{tgt.anon.id}, {who} #{rng.anon.id}",
                          fn)

    def pgoff(ok: bool) -> MergeCheck:
        if side == "prev":
            fn = "can_vma_merge_after()"
            detail = (f"{tgt_who} pgoff {tgt.pgoff:#x} + {_pages(tgt.pages)} = {tgt.pgoff + tgt.pages:#x}, "
                      f"{who} pgoff {rng.pgoff:#x}")
        else:
            fn = "can_vma_merge_before()"
            detail = (f"{who} pgoff {rng.pgoff:#x} + {_pages(rng.pages)} = {rng.pgoff + rng.pages:#x}, "
                      f"{tgt_who} pgoff {tgt.pgoff:#x}")
        return MergeCheck("pgoff", ok, ("continues: " if ok else "does not continue: ") + detail, fn)

    return [(adjacent_ok, adjacent), special, (True, mempolicy), (not diff & ~C.VM_SEALED, flags),
            (not diff & C.VM_SEALED, seal), (tgt.file is rng.file, file), (True, userfaultfd),
            (tgt.name == rng.name, anon_name), (anon_ok, anon_vma), (pgoff_ok, pgoff)]


def _close_item(removed: list[tuple[str, bool]], nothing: str) -> _Item:
    """can_merge_remove_vma() of every VMA the merge would remove (``removed``: who, has ->close)."""
    fn = "can_merge_remove_vma()"
    blocker = next((who for who, close in removed if close), None)

    def make(ok: bool) -> MergeCheck:
        if not ok:
            return MergeCheck("vm_ops_close", False, f"the merge would remove {blocker}, whose vm_ops has ->close",
                              fn)
        if not removed:
            return MergeCheck("vm_ops_close", True, nothing, fn)
        names = " and ".join(who for who, _ in removed)
        verb = "have" if len(removed) > 1 else "has"
        return MergeCheck("vm_ops_close", True, f"{names} (removed by the merge) {verb} no ->close", fn)
    return blocker is None, make


def _anon_pair_item(prev: AnonVma | None, nxt: AnonVma | None) -> _Item:
    """can_vma_merge_right() when the left merge also holds: are_anon_vmas_compatible(prev, next)."""
    fn = "are_anon_vmas_compatible()"

    def make(ok: bool) -> MergeCheck:
        if ok:
            return MergeCheck("anon_vma_prev_next", True, "prev's and next's anon_vmas agree", fn)
        assert prev is not None and nxt is not None
        return MergeCheck("anon_vma_prev_next", False, f"merging both sides would join prev's anon_vma #{prev.id} "
                                                       f"and next's #{nxt.id}: only prev merges", fn)
    return prev is None or nxt is None or prev is nxt, make


#: how to rebuild the conditions of one side of an attempt from the copies taken when it was made: (side,
#: neighbour, range, names of the two, flags whose VM_SPECIAL bits count, who has them, the attempting
#: function, CONFIG_ANON_VMA_NAME, extra conditions: ("pair", prev's anon_vma, next's) / ("close", removed,
#: what to say when nothing is removed))
_Build = tuple[str, _Range, _Range, str, str, int, str, str, bool, tuple[tuple[Any, ...], ...]]


def _build(b: _Build) -> list[_Item]:
    side, tgt, rng, tgt_who, who, special_flags, special_who, context, names, extras = b
    items = _side_items(side, tgt, rng, tgt_who, who, _special(special_flags, special_who, context), names)
    items.extend(_extra_item(extra) for extra in extras)
    return items


def _extra_item(extra: tuple[Any, ...]) -> _Item:
    return _anon_pair_item(extra[1], extra[2]) if extra[0] == "pair" else _close_item(extra[1], extra[2])


class _LazyVerdict(MergeVerdict):
    """The verdict of one side of a merge attempt, as the trace keeps it: whether it merges (and the index of
    the deciding condition) is known at once; ``deciding`` and ``checks`` are described from the copies of
    the fields on first use (a traced run keeps a few small objects per attempt and builds no text nobody
    reads)."""

    def __init__(self, lower: tuple[int, int], upper: tuple[int, int], build: _Build, items: list[_Item],
                 side: str, op: str, context: str) -> None:
        self.lower, self.upper, self.side, self.op, self.context = lower, upper, side, op, context
        self._build = build
        self._at = next((i for i, (ok, _) in enumerate(items) if not ok), -1)
        self.merges = self._at < 0

    def __getattr__(self, name: str) -> Any:
        if "_build" not in self.__dict__:
            raise AttributeError(name)
        if name == "deciding":
            deciding = _build(self._build)[self._at][1](False) if self._at >= 0 else None
            self.deciding = deciding
            return deciding
        if name == "checks":
            deciding = self.deciding
            checks = [deciding if i == self._at and deciding is not None else make(ok)
                      for i, (ok, make) in enumerate(_build(self._build))]
            self.checks = checks
            return checks
        raise AttributeError(name)


class _Why:
    """The ``why`` detail of a refused merge attempt's trace event: the deciding condition, described when the
    event is printed."""

    __slots__ = ("verdict",)

    def __init__(self, verdict: MergeVerdict) -> None:
        self.verdict = verdict

    def __str__(self) -> str:
        d = self.verdict.deciding
        return "all conditions hold" if d is None else f"{d.name} ({d.detail}; {d.kernel_fn})"


def _all(items: list[_Item]) -> list[MergeCheck]:
    return [make(ok) for ok, make in items]


# ---------------------------------------------------------------------------------------------------
# two existing VMAs
def explain_pair(mm: MmStruct, lower: VMA, upper: VMA) -> MergeVerdict:
    """Would the kernel merge the existing VMAs ``lower`` and ``upper`` (``upper`` above ``lower``), as
    vma_merge_existing_range() does when an operation gives one of them the attributes it already has?

    Both VMAs' attributes are compared; a merge removes one of the two (either may be the one whose range
    changed), so ``vm_ops_close`` fails only if both have ``->close``.  Two VMAs that are not adjacent
    fail ``adjacent``.  ``ValueError`` if ``upper`` does not start above ``lower``."""
    if upper.vm_start < lower.vm_end or upper is lower:
        raise ValueError(f"{upper.vm_start:#x}-{upper.vm_end:#x} does not lie above {lower.vm_start:#x}-"
                         f"{lower.vm_end:#x}")
    lo, hi = _Range.of(lower), _Range.of(upper)
    who = "lower" if lower.vm_flags & C.VM_SPECIAL else "upper"
    items = _side_items("prev", lo, hi, "lower", "upper",
                        _special(lower.vm_flags | upper.vm_flags, who, "vma_merge_existing_range()"),
                        mm.anon_vma_name_enabled)
    fn = "can_merge_remove_vma()"
    if lo.close and hi.close:
        close = MergeCheck("vm_ops_close", False, "both have vm_ops->close: a merge would remove one of them", fn)
    else:
        close = MergeCheck("vm_ops_close", True, f"a merge may remove {'upper' if lo.close else 'lower'} "
                                                 "(no ->close)", fn)
    return _verdict((lower.vm_start, lower.vm_end), (upper.vm_start, upper.vm_end), [*_all(items), close], "pair",
                    "", "vma_merge_existing_range()")


# ---------------------------------------------------------------------------------------------------
# merge attempts (vma_merge_new_range / vma_merge_existing_range)
def _inside(side: str, mid: VMA, start: int, end: int, op: str, context: str) -> MergeVerdict:
    """The range starts (ends) inside its VMA: that side is split off, never merged."""
    if side == "prev":
        lower, upper = (mid.vm_start, start), (start, end)
        detail = "the range starts inside its VMA: the part below is split off, not merged"
    else:
        lower, upper = (start, end), (end, mid.vm_end)
        detail = "the range ends inside its VMA: the part above is split off, not merged"
    return _verdict(lower, upper, [MergeCheck("adjacent", False, detail, context)], side, op, context)


def attempt_verdicts(mm: MmStruct, vmg: VmaMerge, existing: bool) -> dict[str, MergeVerdict | None]:
    """The verdict for each side (``"prev"``, ``"next"``; None where there is no VMA) of the merge
    attempt ``vmg``, before the model carries it out: vma_merge_existing_range() when ``existing``
    (``vmg.middle`` is the VMA being changed), else vma_merge_new_range()."""
    start, end, op = vmg.start, vmg.end, vmg.op
    context = "vma_merge_existing_range()" if existing else "vma_merge_new_range()"
    prev = vmg.prev
    mid = vmg.middle if existing else None
    nxt = mm.tree.next(mid) if mid is not None else vmg.next
    src = vmg.src
    src_avc = src.avc_len if src is not None and src.anon_vma is not None else 1
    rng = _Range(start, end, vmg.vm_flags, vmg.pgoff, vmg.file, vmg.anon_vma, src_avc, vmg.anon_name,
                 mid is not None and _has_close(mid))
    names = mm.anon_vma_name_enabled
    out: dict[str, MergeVerdict | None] = {"prev": None, "next": None}
    left_inside = mid is not None and start > mid.vm_start
    right_inside = mid is not None and end < mid.vm_end
    lb: _Build | None = None
    rb: _Build | None = None
    if prev is not None and not left_inside:
        lb = ("prev", _Range.of(prev), rng, "prev", "the range", vmg.vm_flags, "the range", context, names, ())
    if nxt is not None and not right_inside:
        rb = ("next", _Range.of(nxt), rng, "next", "the range", vmg.vm_flags, "the range", context, names, ())
    left = _build(lb) if lb is not None else None
    right = _build(rb) if rb is not None else None
    left_can = left is not None and all(ok for ok, _ in left)
    right_can = right is not None and all(ok for ok, _ in right)
    right_extras: list[tuple[Any, ...]] = []
    if right is not None and left_can:
        assert prev is not None and nxt is not None
        pair = ("pair", prev.anon_vma, nxt.anon_vma)
        right_extras.append(pair)
        right_can = right_can and _anon_pair_item(prev.anon_vma, nxt.anon_vma)[0]
    removed_mid = [("the VMA being changed", rng.close)] if mid is not None and not (left_inside or right_inside) \
        else []
    if left_inside:
        assert mid is not None
        out["prev"] = _inside("prev", mid, start, end, op, context)
    elif lb is not None and left is not None:
        assert prev is not None
        close = ("close", removed_mid, "nothing removed: prev grows over the range")
        lb = (*lb[:9], (close,))
        out["prev"] = _LazyVerdict((prev.vm_start, prev.vm_end), (start, end), lb, [*left, _extra_item(close)],
                                   "prev", op, context)
    if right_inside:
        assert mid is not None
        out["next"] = _inside("next", mid, start, end, op, context)
    elif rb is not None and right is not None:
        assert nxt is not None
        removed = list(removed_mid)
        if left_can and right_can:
            removed.append(("next", _has_close(nxt)))
        right_extras.append(("close", removed, "nothing removed: next grows down over the range"))
        rb = (*rb[:9], tuple(right_extras))
        out["next"] = _LazyVerdict((start, end), (nxt.vm_start, nxt.vm_end), rb,
                                   [*right, *map(_extra_item, right_extras)], "next", op, context)
    return out


def trace_merge_attempt(mm: MmStruct, vmg: VmaMerge, existing: bool) -> None:
    """Trace the verdicts of a merge attempt, one event per side (called by :mod:`vmalab.vma` only when
    ``mm.probe.tracing``): ``merge with prev: yes (pair=...)`` or ``merge with prev: no (why=flags: ...;
    is_mergeable_vma(), pair=...)``.  The ``pair`` detail is the :class:`MergeVerdict` (its text is the two
    ranges); the descriptions are built when the event is printed or the verdict read."""
    verdicts = attempt_verdicts(mm, vmg, existing)
    probe = mm.probe
    for side in ("prev", "next"):
        v = verdicts[side]
        if v is None:
            probe.trace(vmg.op, _NONE[side])
        elif v.merges:
            probe.trace(vmg.op, _YES[side], pair=v)
        else:
            probe.trace(vmg.op, _NO[side], why=_Why(v), pair=v)


_NONE = {"prev": "merge with prev: none (no VMA below)", "next": "merge with next: none (no VMA above)"}
_YES = {"prev": "merge with prev: yes", "next": "merge with next: yes"}
_NO = {"prev": "merge with prev: no", "next": "merge with next: no"}


def merge_events(events: list[Any]) -> list[MergeVerdict]:
    """The verdicts carried by the merge-attempt trace events among ``events`` (``TraceEvent``), in order."""
    return [ev.detail["pair"] for ev in events if isinstance(ev.detail.get("pair"), MergeVerdict)]


def _resolve(mm: MmStruct, x: VMA | int, which: str) -> VMA:
    if isinstance(x, VMA):
        if mm.tree.lookup(x.vm_start) is not x:
            raise ValueError(f"{which}: {x.vm_start:#x}-{x.vm_end:#x} is not a VMA of this mm")
        return x
    if isinstance(x, bool) or not isinstance(x, int):
        raise ValueError(f"{which}: expected a VMA or an address, not {type(x).__name__}")
    v = mm.tree.lookup(x) if 0 <= x < 1 << 64 else None
    if v is None:
        raise ValueError(f"{which}: no VMA at {x:#x}")
    return v


def explain_merge(mm: MmStruct, a: VMA | int, b: VMA | int) -> MergeVerdict:
    """:func:`explain_pair` of two neighbouring VMAs given as VMAs or addresses inside them, in either
    order (``MM.explain_merge``).  ``ValueError`` with a one-line message for an address with no VMA, the
    same VMA twice, or two VMAs with another VMA between them."""
    va, vb = _resolve(mm, a, "first"), _resolve(mm, b, "second")
    if va is vb:
        raise ValueError(f"both addresses lie in the same VMA {va.vm_start:#x}-{va.vm_end:#x}")
    lower, upper = (va, vb) if va.vm_start < vb.vm_start else (vb, va)
    if mm.tree.next(lower) is not upper:
        raise ValueError(f"{lower.vm_start:#x}-{lower.vm_end:#x} and {upper.vm_start:#x}-{upper.vm_end:#x} are not "
                         "neighbours (another VMA lies between them)")
    return explain_pair(mm, lower, upper)
