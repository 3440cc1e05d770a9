"""When a scenario run validates the model: after every op (tests), once at the end (the CLI's default, so
a run of n ops stays O(n log n)), or never."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from vmalab.cli import main
from vmalab.execute import ModelRunner
from vmalab.mm import MM
from vmalab.scenario import parse_scenario

OPS = [{"op": "mmap", "addr": f"base+{i * 0x2000:#x}", "len": "4K", "prot": "PROT_READ|PROT_WRITE",
        "flags": "MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED", "fd": "none"} for i in range(5)]


@pytest.mark.parametrize(("policy", "calls"), [("each", 5), (True, 5), ("end", 1), ("off", 0), (False, 0)])
def test_policy_decides_how_often_validate_runs(policy: Any, calls: int, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    real = MM.validate

    def counting(self: MM) -> list[str]:
        seen.append(1)
        return real(self)

    monkeypatch.setattr(MM, "validate", counting)
    res = ModelRunner(parse_scenario({"name": "v", "ops": OPS}), validate=policy).run()
    assert [r["errno"] for r in res["results"]] == [None] * 5
    assert len(seen) == calls


def test_end_policy_still_catches_a_broken_model(monkeypatch: pytest.MonkeyPatch) -> None:
    from vmalab import mm_types
    real = mm_types.MmStruct.vm_stat_account

    def skewed(self: mm_types.MmStruct, flags: int, npages: int) -> None:
        real(self, flags, npages + 1)  # a deliberately wrong counter

    monkeypatch.setattr(mm_types.MmStruct, "vm_stat_account", skewed)
    with pytest.raises(AssertionError, match="total_vm"):
        ModelRunner(parse_scenario({"name": "v", "ops": OPS}), validate="end").run()


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="each, end, off"):
        ModelRunner(parse_scenario({"name": "v", "ops": OPS}), validate="sometimes")


def test_cli_validate_option(tmp_path: Any) -> None:
    path = tmp_path / "v.json"
    path.write_text(json.dumps({"name": "v", "ops": OPS}), encoding="utf-8")
    for policy in ("each", "end", "off"):
        r = CliRunner().invoke(main, ["run", "--validate", policy, str(path)])
        assert r.exit_code == 0, r.output
        assert r.output.count("base+") >= 5
    r = CliRunner().invoke(main, ["run", "--validate", "never", str(path)])
    assert r.exit_code == 2 and "never" in r.output
    r = CliRunner().invoke(main, ["run", "--kernel", "--validate", "each", str(path)])
    assert r.exit_code != 0 and "validate" in r.output
