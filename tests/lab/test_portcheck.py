"""``vmalab port-check``: a legacy ->mmap driver against its ->mmap_prepare port (vmalab.portcheck).

The porting guide's pairs (examples/drivers/port_*_legacy.py / port_*_prepared.py, the classes of
docs/mmap-prepare.md §2 and §3 verbatim) must show exactly the differences the guide describes, all marked
intended; wrong ports must be reported."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from vmalab.cli import main
from vmalab.explore import load_driver
from vmalab.portcheck import (
    COMMIT_REASON,
    MERGE_FAULT_REASON,
    MERGE_REASON,
    PortReport,
    compare,
    format_report,
    is_merge_of,
)
from vmalab.profiles import PROFILES

from ..conftest import ROOT

EX = os.path.join(ROOT, "examples", "drivers")


def _pair(old: str, new: str) -> PortReport:
    return compare(load_driver(os.path.join(EX, old)), load_driver(os.path.join(EX, new)))


def _charge_kept() -> set[str]:
    """The profiles whose failed mmap_prepare keeps the commit charge (docs/mmap-prepare.md §1.2)."""
    return {p for p, prof in PROFILES.items() if not prof.prepare_failure_releases_charge}


def test_guide_examples_are_the_files() -> None:
    """The guide's §2/§3 classes are the example files' classes, character for character."""
    doc = Path(ROOT, "docs", "mmap-prepare.md").read_text(encoding="utf-8")
    for name in ("port_flags_legacy.py", "port_flags_prepared.py", "port_remap_legacy.py",
                 "port_remap_prepared.py"):
        src = Path(EX, name).read_text(encoding="utf-8")
        classes = re.findall(r"^class \w+\(FileOperations\):\n(?:    .*\n)+", src, flags=re.M)
        assert len(classes) == 1, name
        assert classes[0] in doc, f"{name}: its class is not the guide's block"


def test_flags_pair_reports_the_merge_and_nothing_unintended() -> None:
    """§2: the prepared flags driver's adjacent mappings merge, the legacy ones do not, on every profile;
    the only other difference is §1.2's commit charge kept by a failed mmap_prepare."""
    rep = _pair("port_flags_legacy.py", "port_flags_prepared.py")
    assert rep.unintended == []
    assert not rep.unavailable
    merges = {d.profile for d in rep.differences if d.intended == MERGE_REASON}
    assert merges == set(PROFILES)
    assert all(d.shape == "adjacent" for d in rep.differences if d.intended in (MERGE_REASON, MERGE_FAULT_REASON))
    commit = {d.profile for d in rep.differences if d.intended == COMMIT_REASON}
    assert commit == _charge_kept()
    assert {d.intended for d in rep.differences} == {MERGE_REASON, MERGE_FAULT_REASON, COMMIT_REASON}
    base = [d for d in rep.differences if d.fault == "(no fault)"]
    assert {(d.shape, d.field) for d in base} == {("adjacent", "layout")}


def test_remap_pair_cannot_run_on_618_and_differs_only_in_the_charge() -> None:
    """§3: the port needs actions, so 6.18 cannot run it (reported); elsewhere it never merges and behaves
    as the legacy remap, but for §1.2's commit charge."""
    rep = _pair("port_remap_legacy.py", "port_remap_prepared.py")
    assert set(rep.unavailable) == {"6.18"}
    assert set(rep.unavailable["6.18"]) == {"new"}
    assert rep.unintended == []
    assert {d.intended for d in rep.differences} <= {COMMIT_REASON}
    assert {d.profile for d in rep.differences} == _charge_kept() - {"6.18"}
    assert not any(d.fault == "(no fault)" for d in rep.differences)
    text = format_report(rep)
    assert "6.18: NEW cannot run on this profile" in text


def test_port_that_forgets_a_flag_is_reported() -> None:
    rep = _pair("port_flags_legacy.py", "port_flags_wrong.py")
    wrong = rep.unintended
    assert wrong
    fork = [d for d in wrong if d.shape == "fork" and d.fault == "(no fault)" and d.field == "child layout"]
    assert {d.profile for d in fork} == set(PROFILES)
    assert fork[0].old == [] and fork[0].new and " dc " not in fork[0].new[0] + " "
    assert any(d.field == "layout" and d.shape == "new" and d.fault == "(no fault)" for d in wrong)


def test_port_that_forgets_vm_dontexpand_is_reported(tmp_path: Path) -> None:
    (tmp_path / "old.py").write_text(
        "from vmalab import constants as C\nfrom vmalab.files import FileOperations\n\n\n"
        "class Old(FileOperations):\n    has_mmap = True\n\n    def mmap(self, file, vma):\n"
        "        vma.vm_flags |= C.VM_DONTEXPAND\n        return 0\n")
    (tmp_path / "new.py").write_text(
        "from vmalab.files import FileOperations\n\n\n"
        "class New(FileOperations):\n    has_mmap_prepare = True\n\n    def mmap_prepare(self, desc):\n"
        "        return 0\n")
    rep = compare(load_driver(str(tmp_path / "old.py")), load_driver(str(tmp_path / "new.py")),
                  profiles=["6.18"], faults=False)
    grow = [d for d in rep.unintended if d.shape == "mremap" and d.field == "returns"]
    assert len(grow) == 1
    assert grow[0].old[-1] == "mremap 4p->8p: -EFAULT"
    assert grow[0].new[-1] == "mremap 4p->8p: +0x10000"


def test_port_that_takes_a_reference_in_prepare_is_reported() -> None:
    """The afs lesson: the reference taken in mmap_prepare leaks when the range merges (the legacy ->mmap
    never runs for a merged range) and when the mapping fails after the hook."""
    rep = _pair("port_ref_legacy.py", "port_ref_wrong.py")
    leaks = [d for d in rep.unintended if d.field == "after munmap"]
    assert any(d.shape == "adjacent" and d.fault == "(no fault)" for d in leaks)
    assert any(d.fault.startswith("vma_alloc") for d in leaks)
    assert all(d.old == [] and "still held" in d.new[0] for d in leaks)


def test_is_merge_of() -> None:
    a = ["+0x10000-+0x12000 pgoff=0x0 rd sh", "+0x12000-+0x14000 pgoff=0x2 rd sh"]
    assert is_merge_of(a, ["+0x10000-+0x14000 pgoff=0x0 rd sh"])
    assert not is_merge_of(a, ["+0x10000-+0x14000 pgoff=0x0 rd sh dc"])
    assert not is_merge_of(a, ["+0x10000-+0x12000 pgoff=0x0 rd sh"])
    assert not is_merge_of(a, a)


@pytest.mark.parametrize(("new", "code"), [("port_flags_prepared.py", 0), ("port_flags_wrong.py", 1)])
def test_cli_exit_status_and_width(new: str, code: int) -> None:
    r = CliRunner().invoke(main, ["port-check", os.path.join(EX, "port_flags_legacy.py"), os.path.join(EX, new)])
    assert r.exit_code == code, r.output
    assert all(len(line) <= 100 for line in r.output.splitlines())
    assert re.search(r"^\d+ difference\(s\), \d+ intended, \d+ unintended$", r.output, flags=re.M)


def test_cli_json_and_bad_driver() -> None:
    r = CliRunner().invoke(main, ["port-check", "--json", "--kernel-profile", "7.1",
                                  os.path.join(EX, "port_ref_legacy.py"), os.path.join(EX, "port_ref_wrong.py")])
    assert r.exit_code == 1
    data = json.loads(r.output)
    assert data["profiles"] == ["7.1"] and data["unintended"] > 0
    assert {"profile", "shape", "fault", "field", "old", "new", "intended"} <= set(data["differences"][0])
    r = CliRunner().invoke(main, ["port-check", "nope.py", os.path.join(EX, "port_ref_wrong.py")])
    assert r.exit_code == 2
    assert len(r.output.strip().splitlines()) == 1 and "nope.py" in r.output
