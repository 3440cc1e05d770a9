"""``vmalab explain``: the merge verdicts of a scenario run on the model (:mod:`vmalab.explain`).

Two questions, both answered from a run of the scenario on the model:

* ``--at ADDR``: after the last op, the VMA containing ADDR against its prev and its next neighbour
  (:func:`vmalab.explain.explain_pair`): would the kernel merge them, and which condition says no;
* no address: the merge attempts of the last op that attempted one (vma_merge_new_range() /
  vma_merge_existing_range()), side by side, as ``vmalab run --trace`` shows them, with every condition.

Errors (a scenario that cannot be loaded or run, a bad address, no VMA at the address, no merge attempt)
are :class:`ExplainError` with a one-line message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .debug import ValidationError
from .execute import ModelRunner, ModelUnsupported, check_supported
from .explain import MergeVerdict, explain_pair, merge_events
from .procfs import vma_name
from .scenario import Scenario, ScenarioError, parse_addr

__all__ = ["ExplainError", "ExplainReport", "explain_scenario"]


class ExplainError(Exception):
    """A one-line reason ``vmalab explain`` cannot answer."""


@dataclass
class ExplainReport:
    """What ``vmalab explain`` prints: for ``--at``, the VMA at ``at`` and its ``verdicts`` with prev and
    next (None where there is no neighbour); otherwise the op (``op_index``, ``op``) whose merge attempts
    the ``verdicts`` are."""

    scenario: str
    at: int | None = None
    vma: tuple[int, int, str] | None = None  # start, end, maps name
    op_index: int | None = None
    op: str = ""
    verdicts: dict[str, MergeVerdict | None] = field(default_factory=dict)
    attempts: list[MergeVerdict] = field(default_factory=list)

    def lines(self) -> list[str]:
        out: list[str] = []
        if self.at is not None:
            assert self.vma is not None
            s, e, name = self.vma
            out.append(f"# {self.scenario}: the VMA at {self.at:#x} is {s:#x}-{e:#x}" + (f" {name}" if name else ""))
            for side in ("prev", "next"):
                v = self.verdicts.get(side)
                if v is None:
                    out.append(f"with {side}: no VMA {'below' if side == 'prev' else 'above'}")
                else:
                    out.append(f"with {side}: " + v.lines()[0])
                    out.extend(v.lines()[1:])
            return out
        out.append(f"# {self.scenario}: op #{self.op_index} ({self.op}) attempted {len(self.attempts)} merge(s)")
        for v in self.attempts:
            out.append(v.lines()[0])
            out.extend(v.lines()[1:])
        return out

    def to_json(self) -> dict[str, Any]:
        if self.at is not None:
            assert self.vma is not None
            return {"scenario": self.scenario, "at": f"{self.at:#x}",
                    "vma": {"start": f"{self.vma[0]:#x}", "end": f"{self.vma[1]:#x}", "name": self.vma[2]},
                    **{side: (None if v is None else v.to_json()) for side, v in self.verdicts.items()}}
        return {"scenario": self.scenario, "op_index": self.op_index, "op": self.op,
                "attempts": [v.to_json() for v in self.attempts]}


def _run(scn: Scenario, trace: bool, profile: str | None, drivers: dict[str, Any] | None) -> ModelRunner:
    try:
        check_supported(scn)
        runner = ModelRunner(scn, trace=trace, kernel=profile, validate="end", drivers=drivers)
    except ModelUnsupported as e:
        raise ExplainError(str(e)) from None
    try:
        runner.run()
    except ModelUnsupported as e:
        raise ExplainError(str(e)) from None
    except ValidationError as e:
        raise ExplainError(f"the model's state is invalid after the run: {e}") from None
    except Exception as e:  # a --driver's callback raised (the kernel would oops): say where, in one line
        raise ExplainError(f"the run stopped at op {len(runner.op_traces)}: {type(e).__name__}: {e}") from None
    return runner


def explain_scenario(scn: Scenario, at: str | int | None = None, profile: str | None = None,
                     drivers: dict[str, Any] | None = None) -> ExplainReport:
    """Run ``scn`` on the model and explain the merges at ``at`` (an address of the scenario format:
    ``base+8K``, ``0x500000002000``, ``map:[heap]``, ...) or, with ``at`` None, the merge attempts of the
    last op that attempted one.  ``ExplainError`` (one line) when that cannot be done."""
    where: int | None = None
    if at is not None:
        try:
            addr = parse_addr(at, "--at")
        except ScenarioError as e:
            raise ExplainError(f"bad address: {e}") from None
        if addr.kind in ("null", "fail"):
            raise ExplainError(f"bad address: --at {at}: give an address (base+X, 0x..., map:NAME+X)")
    runner = _run(scn, at is None, profile, drivers)
    mm = runner.mm
    if at is None:
        for i in range(len(runner.op_traces) - 1, -1, -1):
            verdicts = merge_events(runner.op_traces[i])
            if verdicts:
                return ExplainReport(scn.name, op_index=i, op=scn.ops[i].op, attempts=verdicts)
        raise ExplainError(f"{scn.name}: no op attempted a merge (give --at ADDR to explain two neighbours)")
    try:
        where = runner.addr(addr)
    except ModelUnsupported as e:
        raise ExplainError(f"bad address: --at {at}: {e}") from None
    v = mm.tree.lookup(where)
    if v is None:
        raise ExplainError(f"no VMA at {where:#x} after the last op of {scn.name}")
    prev, nxt = mm.tree.prev(v), mm.tree.next(v)
    return ExplainReport(scn.name, at=where, vma=(v.vm_start, v.vm_end, vma_name(mm, v)),
                         verdicts={"prev": None if prev is None else explain_pair(mm, prev, v),
                                   "next": None if nxt is None else explain_pair(mm, v, nxt)})
