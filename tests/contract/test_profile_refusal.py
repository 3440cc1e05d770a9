"""A driver refused by its kernel profile (ProfileFeatureError: it uses a part of the contract that kernel
does not have) leaves the mm as a failing ``mmap_prepare`` would: the mapping is unwound through
__mmap_region()'s error exits (the charge leaked on 6.18-7.2.0 and released on 7.3, the range a MAP_FIXED
mapping replaced left a hole), so ``validate()`` passes, and only then the error reaches the caller.  A
scenario run reports it in one line."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from vmalab import MM
from vmalab import constants as C
from vmalab.compat import vfs_mmap
from vmalab.driver import ProfileFeatureError, VmAreaDesc
from vmalab.drivers import open_driver
from vmalab.fdtable import install
from vmalab.files import File, FileOperations, Inode
from vmalab.mm_types import VMA
from vmalab.profiles import PROFILES

B = 0x500000000000
K = 4096
RW = C.PROT_READ | C.PROT_WRITE
PR = C.MAP_PRIVATE | C.MAP_FIXED
ANONF = C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_FIXED

NO_ACTIONS = [p for p in PROFILES if not PROFILES[p].has_actions]  # 6.18


class Drv(FileOperations):
    has_mmap_prepare = True

    def __init__(self, prep: Callable[[VmAreaDesc], int]) -> None:
        self.prep = prep

    def mmap_prepare(self, desc: VmAreaDesc) -> int:
        return self.prep(desc)


class Stacked(FileOperations):
    """A legacy ->mmap that stacks on ``real`` through vfs_mmap() (the overlayfs pattern)."""

    has_mmap = True

    def __init__(self, real: File) -> None:
        self.real = real

    def mmap(self, file: File, vma: VMA) -> int:
        assert file.owner is not None
        return vfs_mmap(file.owner, self.real, vma)


def _prepared(mm: MM) -> None:
    """Three written private pages at B: the MAP_FIXED below replaces the middle one."""
    mm.mmap(B, 3 * K, RW, ANONF)
    for i in range(3):
        mm.touch(B + i * K, write=True)


def _after_refusal(mm: MM, leaked: int) -> None:
    """The state a failing hook leaves: the replaced middle page is a hole; the charge the new mapping
    inherited from it (a private writable mapping over an accounted one) is lost, as __mmap_region()
    loses it on every error exit."""
    mm.validate()  # total_vm, locked_vm and committed agree with the VMAs (+ the leaked charge)
    assert [(v.vm_start - B, v.vm_end - B) for v in mm.vmas() if v.vm_start >= B] == [(0, K), (2 * K, 3 * K)]
    assert mm.leaked_commit == leaked
    assert mm.committed == 2 + leaked  # the two anonymous pages left, plus the leak
    assert mm.total_vm == 2 and not mm.locks.held()


@pytest.mark.parametrize("kernel", NO_ACTIONS)
def test_builtin_driver_refused_after_fixed_unmap_and_charge(kernel: str) -> None:
    """/dev/mem written for the action API, on a kernel without it: the refusal comes from inside
    mmap_prepare, after MAP_FIXED tore down the old page and the private writable mapping was charged."""
    mm = MM(kernel=kernel)
    _prepared(mm)
    fd = open_driver(mm, "devmem", 0)
    with pytest.raises(ProfileFeatureError):
        mm.sys_mmap(B + K, K, RW, PR, fd, 0)
    _after_refusal(mm, 1)
    assert mm.sys_mmap(B + K, K, RW, ANONF, -1, 0) == B + K  # the mm goes on working
    mm.validate()


@pytest.mark.parametrize("kernel", ["7.2", "7.3", "finish"])
def test_action_prepare_refusal_unwinds(kernel: str) -> None:
    """success_hook on a profile without hooks: the profile's action_prepare refuses it."""
    mm = MM(kernel=kernel)
    _prepared(mm)

    def prep(desc: VmAreaDesc) -> int:
        desc.action.success_hook = lambda vma: 0
        return 0
    fd = mm.open_device("/dev/t", Drv(prep))
    with pytest.raises(ProfileFeatureError):
        mm.sys_mmap(B + K, K, RW, PR, fd, 0)
    _after_refusal(mm, 1)
    # at a free range the new charge is taken: released on 7.3 (unacct_error, 6cc27d821963), leaked before it
    with pytest.raises(ProfileFeatureError):
        mm.sys_mmap(B + 8 * K, 2 * K, RW, PR, fd, 0)
    leaked = 1 + (0 if PROFILES[kernel].prepare_failure_releases_charge else 2)
    assert mm.leaked_commit == leaked and mm.committed == 2 + leaked
    mm.validate()


@pytest.mark.parametrize("kernel", NO_ACTIONS)
def test_refusal_inside_a_stacked_legacy_mmap_unwinds(kernel: str) -> None:
    """The refusal comes from the inner file's mmap_prepare, run by the compat layer under the outer
    driver's legacy ->mmap (after the VMA was allocated): the ->mmap error path cleans up."""
    mm = MM(kernel=kernel)
    _prepared(mm)

    def prep(desc: VmAreaDesc) -> int:
        desc.action  # noqa: B018 -- 6.18 has no mmap_action: ProfileFeatureError
        return 0
    real = File(Inode(mm.alloc_ino(), (0, 0x30), size=1 << 20), Drv(prep), "/real", owner=mm)
    outer = File(Inode(mm.alloc_ino(), (0, 0x31), size=1 << 20), Stacked(real), "/outer", owner=mm)
    fd = install(mm, outer)
    with pytest.raises(ProfileFeatureError):
        mm.sys_mmap(B + K, K, RW, PR, fd, 0)
    _after_refusal(mm, 1)
    assert outer.refcount == 1 and real.refcount == 1  # the VMA's references were dropped


def test_shared_refusal_takes_no_charge() -> None:
    mm = MM()
    _prepared(mm)
    fd = open_driver(mm, "devmem", 0)
    with pytest.raises(ProfileFeatureError):
        mm.sys_mmap(B + K, K, RW, C.MAP_SHARED | C.MAP_FIXED, fd, 0)
    _after_refusal(mm, 0)


def test_refusal_is_not_an_errno_the_kernel_gives() -> None:
    """The refusal is an exception, not -errno: a driver that needs a missing feature cannot be built
    for that kernel, so no mmap(2) return value describes it."""
    mm = MM()
    fd = open_driver(mm, "devmem", 0)
    with pytest.raises(ProfileFeatureError, match="6.18"):
        mm.mmap(B, K, RW, PR, fd, 0)
    assert mm.sys_mmap(B, K, RW, ANONF, -1, 0) == B


def test_scenario_run_reports_refusal_in_one_line(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from vmalab.cli import main
    scn = {"name": "devmem_on_618", "description": "devmem needs mmap_action; 6.18 has none",
           "kernel_profile": "6.18",
           "ops": [{"op": "mmap", "addr": "base+0", "len": "12K", "prot": "PROT_READ|PROT_WRITE",
                    "flags": "MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED", "fd": "none", "offset": 0},
                   {"op": "touch", "addr": "base+4K", "write": True},
                   {"op": "mmap", "addr": "base+4K", "len": "4K", "prot": "PROT_READ|PROT_WRITE",
                    "flags": "MAP_PRIVATE|MAP_FIXED", "fd": "dev:devmem", "offset": 0},
                   {"op": "snapshot"}]}
    path = tmp_path / "devmem_on_618.json"
    path.write_text(json.dumps(scn))
    for args in (["run", str(path)], ["run", "--json", str(path)], ["maps", str(path)]):
        res = CliRunner().invoke(main, args)
        assert res.exit_code != 0, (args, res.output)
        assert res.exception is None or isinstance(res.exception, SystemExit), (args, res.exception)
        lines = [ln for ln in res.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and "6.18" in lines[0] and "op 2" in lines[0], (args, res.output)
        assert "Traceback" not in res.output
    # under a profile that has the feature the same file runs
    res = CliRunner().invoke(main, ["run", "--kernel-profile", "7.1", str(path)])
    assert res.exit_code == 0, res.output
