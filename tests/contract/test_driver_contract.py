"""The driver contract (f_op->mmap_prepare, vm_area_desc, mmap_action, vm_ops->mapped, compat layer) on
the built-in drivers, under every kernel profile that has the feature.

Expectations come from the upstream mmap_prepare/mmap_action design ("spec" below, cited by the section
numbers of its design notes; docs/mmap-prepare.md summarises it per profile)
or, for 6.18, from the live kernel through the recorded scenarios (tests/scenarios/driver_*.json with
recordings, checked by test_corpus).  Model-only scenarios (kernel_profile other than 6.18, or ``dev:``
drivers) are asserted here against the behaviour the spec states, never against copied model output.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

import pytest

from vmalab import MM, Fault
from vmalab import constants as C
from vmalab.compat import vfs_mmap
from vmalab.driver import ProfileFeatureError, VmAreaDesc
from vmalab.drivers import driver_names, open_driver
from vmalab.execute import run_on_model
from vmalab.files import DUMMY_VM_OPS, File, FileOperations, Inode, VmOperations
from vmalab.mm_types import VMA
from vmalab.mmap import mmap_region
from vmalab.pagetable import ANON, Page
from vmalab.profiles import PROFILES
from vmalab.scenario import load_scenario
from vmalab.vma import VmaMerge, vma_merge_existing_range

from ..conftest import SCENARIO_DIR, model_only_paths

B = 0x500000000000
K = 4096
RW = C.PROT_READ | C.PROT_WRITE
SH = C.MAP_SHARED | C.MAP_FIXED
PR = C.MAP_PRIVATE | C.MAP_FIXED
ANONF = C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_FIXED

ALL = list(PROFILES)
ACTIONS = [p for p in ALL if PROFILES[p].has_actions]  # seed-v3, 6.19, 7.0, 7.1, 7.2, finish
HOOKS = [p for p in ALL if PROFILES[p].has_hooks]  # seed-v3, 6.19, 7.0, 7.1
MAPPED = [p for p in ALL if PROFILES[p].has_mapped]  # 7.1, 7.2, finish
V71 = [p for p in ALL if PROFILES[p].prepare_validates]  # 7.1, 7.2, finish
PRE71 = [p for p in ACTIONS if not PROFILES[p].prepare_validates]  # seed-v3, 6.19, 7.0


def mk(kernel: str) -> MM:
    mm = MM(kernel=kernel)
    mm.tracing = True
    return mm


def traced(mm: MM) -> list[str]:
    return [ev.what for ev in mm.trace]


def shape(mm: MM) -> list[tuple[int, int]]:
    return [(v.vm_start - B, v.vm_end - B) for v in mm.vmas() if B <= v.vm_start < B + (1 << 30)]


def flags_of(mm: MM, addr: int) -> str:
    v = mm.vma_at(addr)
    assert v is not None
    return C.vmflags_str(v.vm_flags)


class Drv(FileOperations):
    """A test driver: ``prep`` is its mmap_prepare body."""

    has_mmap_prepare = True

    def __init__(self, prep: Callable[[VmAreaDesc], int]) -> None:
        self.prep = prep
        self.seen: list[VmAreaDesc] = []

    def mmap_prepare(self, desc: VmAreaDesc) -> int:
        self.seen.append(desc)
        return self.prep(desc)


def dev(mm: MM, prep: Callable[[VmAreaDesc], int]) -> tuple[int, Drv]:
    d = Drv(prep)
    return mm.open_device("/dev/t", d), d


class CloseOps(VmOperations):
    has_close = True

    def __init__(self) -> None:
        self.closed = 0
        self.mapped_calls = 0

    def close(self, vma: VMA) -> None:  # noqa: ARG002
        self.closed += 1


class MappedOps(CloseOps):
    def __init__(self, ret: int = 0) -> None:
        super().__init__()
        self.ret = ret
        self.args: list[tuple[int, int, int]] = []

    def mapped(self, start: int, end: int, pgoff: int, file: File | None, priv: object) -> int:  # noqa: ARG002
        self.mapped_calls += 1
        self.args.append((start, end, pgoff))
        if not self.ret:
            priv.value = ("priv", start)  # type: ignore[attr-defined]
        return self.ret


# ---------------------------------------------------------------------------------------------------
# built-in drivers: registry, docstrings, availability per profile
def test_registry_lists_the_builtin_drivers() -> None:
    for name in ("devmem", "iomem", "kpages", "mapped_private", "failing_action", "ovl", "devzero", "secretmem",
                 "filemap"):
        assert name in driver_names()


def test_each_driver_module_names_its_kernel_file() -> None:
    import importlib
    for name in ("devmem", "iomem", "kpages", "mapped_private", "failing_action", "ovl", "devzero", "secretmem",
                 "filemap"):
        doc = importlib.import_module(f"vmalab.drivers.{name}").__doc__ or ""
        assert ".c" in doc, name


NEEDS = {"devmem": ACTIONS, "failing_action": ACTIONS, "iomem": V71, "kpages": V71, "mapped_private": V71,
         "ovl": ALL, "secretmem": ALL, "filemap": ALL}


@pytest.mark.parametrize("kernel", ALL)
@pytest.mark.parametrize("name", sorted(NEEDS))
def test_driver_runs_where_its_features_exist_and_fails_cleanly_elsewhere(name: str, kernel: str) -> None:
    mm = mk(kernel)
    fd = open_driver(mm, name, 0)
    if kernel in NEEDS[name]:
        assert mm.sys_mmap(B, 2 * K, RW, SH, fd, 0) == B
        mm.validate()
    else:
        with pytest.raises(ProfileFeatureError):
            mm.sys_mmap(B, 2 * K, RW, SH, fd, 0)


def test_all_profiles_cli_shows_not_available(tmp_path: object) -> None:
    from click.testing import CliRunner

    from vmalab.cli import main
    path = os.path.join(SCENARIO_DIR, "driver_kpages_rss.json")
    out = CliRunner().invoke(main, ["run", "--all-profiles", path]).output
    assert "== kernel profile 6.18" in out and "not available" in out
    assert "== kernel profile 7.1" in out


# ---------------------------------------------------------------------------------------------------
# model-only scenarios: the spec's statements
def _run(name: str) -> dict:
    return run_on_model(load_scenario(os.path.join(SCENARIO_DIR, name + ".json")), validate=True)


def test_model_only_scenarios_run_valid() -> None:
    paths = model_only_paths()
    assert len(paths) >= 6
    for p in paths:
        run_on_model(load_scenario(p), validate=True)


def test_scenario_devmem_remap() -> None:
    r = _run("driver_devmem_remap")["results"]
    # spec §1.6: REMAP_PFN adds IO|PFNMAP|DONTEXPAND|DONTDUMP; VM_SPECIAL never merges (§1.6)
    snap = r[5]["vmas"]
    assert [v["len"] for v in snap[:2]] == ["0x2000", "0x1000"]
    assert all({"pf", "io", "de", "dd"} <= set(v["vmflags"].split()) for v in snap)
    assert all(v["rss_kb"] == 0 for v in snap)  # PFN PTEs have no struct page: not in Rss
    assert r[2]["errno"] == "EPERM"  # §6: /dev/mem range checks (-EPERM for RAM under STRICT_DEVMEM)
    # §1.4: a CoW remap of the whole VMA sets pgoff = start_pfn (here = the offset's pfn)
    assert snap[2]["perms"] == "rw-p" and snap[2]["pgoff"] == "0xfed00000"
    assert r[4]["ret"] == 0  # the PTEs exist: no fault


def test_scenario_failing_action_hole() -> None:
    r = _run("driver_failing_action_fixed_hole")["results"]
    # spec §2 step 9: failure ⇒ do_munmap the new VMA; old MAP_FIXED mappings already gone ⇒ hole
    assert r[1]["errno"] == "EINVAL"
    assert [(v["start"], v["end"]) for v in r[3]["vmas"]] == [("base+0x0", "base+0x1000"),
                                                               ("base+0x3000", "base+0x4000")]


def test_scenario_kpages() -> None:
    r = _run("driver_kpages_rss")["results"]
    # §1.6: MAP_KERNEL_PAGES adds MIXEDMAP; inserted pages are normal pages (Rss counts them)
    v = r[4]["vmas"][0]
    assert "mm" in v["vmflags"].split() and v["rss_kb"] == 8 and v["pgoff"] == "0x1000"
    assert r[1]["errno"] == "EINVAL"
    assert (r[2]["value"], r[3]["value"]) == (2, 3)  # pgoff 1 ⇒ buffer pages 1 and 2 (filled with index+1)


def test_scenario_devzero_prepare() -> None:
    r = _run("driver_devzero_prepare")["results"]
    snap = r[4]["vmas"]
    # §6: shared ⇒ shmem_zero_setup_desc swaps vm_file (own file: never merges); private ⇒ anonymous
    assert [v["name"] for v in snap] == ["/dev/zero (deleted)", "/dev/zero (deleted)", "/dev/zero"]
    assert snap[2]["len"] == "0x2000"


def test_scenario_ovl() -> None:
    r = _run("driver_ovl_stacked")["results"]
    # §4: the final VMA references the real file; the merge was tried with the overlay file ⇒ 2 VMAs
    assert [v["name"] for v in r[2]["vmas"]] == ["/upper/ovlfile", "/upper/ovlfile"]


# ---------------------------------------------------------------------------------------------------
# descriptor and hook contract (spec §10 "Descriptor and hook contract")
@pytest.mark.parametrize("kernel", ALL)
def test_can_mmap_file_refuses_both_or_neither(kernel: str) -> None:
    mm = mk(kernel)
    both, d = dev(mm, lambda desc: 0)
    d.has_mmap = True
    neither, d2 = dev(mm, lambda desc: 0)
    d2.has_mmap_prepare = False
    assert mm.sys_mmap(B, K, RW, SH, both, 0) == -errno.ENODEV
    assert mm.sys_mmap(B, K, RW, SH, neither, 0) == -errno.ENODEV
    assert not d.seen and not d2.seen


@pytest.mark.parametrize("kernel", ALL)
def test_prepare_sees_final_range_and_input_fields_are_ignored(kernel: str) -> None:
    mm = mk(kernel)

    def prep(desc: VmAreaDesc) -> int:
        desc.start, desc.end = B + 100 * K, B + 200 * K  # input only: never read back (§3)
        return 0
    fd, d = dev(mm, prep)
    assert mm.sys_mmap(None or 0, 2 * K, RW, C.MAP_SHARED, fd, 0) > 0  # placed before the hook runs
    desc = d.seen[0]
    v = mm.vmas()
    assert any(x.vm_end - x.vm_start == 2 * K and x.vm_file is not None and x.vm_file.path == "/dev/t" for x in v)
    assert desc.mm is mm


@pytest.mark.parametrize("kernel", ALL)
def test_copy_back_set(kernel: str) -> None:
    mm = mk(kernel)
    ops = CloseOps()

    def prep(desc: VmAreaDesc) -> int:
        desc.pgoff = 7
        desc.vm_flags |= C.VM_DONTCOPY
        desc.page_prot = 0x10
        desc.vm_ops = ops
        desc.private_data = "p"
        return 0
    fd, _ = dev(mm, prep)
    assert mm.sys_mmap(B, K, RW, SH, fd, 0) == B
    v = mm.vma_at(B)
    assert v is not None
    assert (v.vm_pgoff, v.page_prot, v.vm_ops, v.vm_private_data) == (7, 0x10, ops, "p")
    assert v.vm_flags & C.VM_DONTCOPY


@pytest.mark.parametrize("kernel", ALL)
def test_secretmem_flags_take_part_in_merge(kernel: str) -> None:
    # §10 + §9 fact 5 (also live: driver_secretmem_adjacent_contiguous_merge)
    mm = mk(kernel)
    fd = mm.memfd_secret(16 * K)
    assert mm.sys_mmap(B + K, K, RW, SH, fd, K) == B + K
    assert mm.sys_mmap(B, K, RW, SH, fd, 0) == B
    assert shape(mm) == [(0, 2 * K)]
    assert flags_of(mm, B) == "rd wr sh mr mw ms lo dd"
    assert "merged with next" in traced(mm) and "mmap_prepare" in traced(mm)
    assert mm.sys_mmap(B + 2 * K, K, RW, SH, fd, 2 * K) == B + 2 * K
    assert "merged with prev" in traced(mm)


@pytest.mark.parametrize("kernel", ALL)
def test_accounting_uses_pre_hook_flags(kernel: str) -> None:
    mm = mk(kernel)
    fd, _ = dev(mm, lambda desc: (setattr(desc, "vm_flags", desc.vm_flags & ~C.VM_WRITE), 0)[1])
    before = mm.committed
    assert mm.sys_mmap(B, 2 * K, RW, PR, fd, 0) == B
    assert mm.committed - before == 2  # charged on the pre-hook (writable) flags, not refunded
    v = mm.vma_at(B)
    assert v is not None and not v.vm_flags & C.VM_WRITE and v.vm_flags & C.VM_ACCOUNT


@pytest.mark.parametrize("kernel", ALL)
def test_prepare_error_leaks_charge_except_72(kernel: str) -> None:
    mm = mk(kernel)
    fd = mm.memfd_secret(16 * K)
    assert mm.sys_mmap(B, 4 * K, RW, PR, fd, 0) == -errno.EINVAL
    assert shape(mm) == []
    # §10: 6.18–7.2.0 leak the setup charge on prepare failure (live: Committed_AS + len); 7.3 releases it
    # (6cc27d821963, 7.3-rc4)
    expect = 0 if PROFILES[kernel].prepare_failure_releases_charge else 4
    assert mm.leaked_commit == expect and mm.committed == expect
    assert ("commit charge leaked" in traced(mm)) == bool(expect)
    mm.validate()


@pytest.mark.parametrize("kernel", ALL)
def test_fixed_over_mappings_with_failing_prepare_closes_old_and_leaves_hole(kernel: str) -> None:
    mm = mk(kernel)
    ops = CloseOps()
    old, _ = dev(mm, lambda desc: (setattr(desc, "vm_ops", ops), 0)[1])
    assert mm.sys_mmap(B, 3 * K, RW, SH, old, 0) == B
    fd = mm.memfd_secret(16 * K)
    assert mm.sys_mmap(B + K, K, RW, PR, fd, 0) == -errno.EINVAL
    assert shape(mm) == [(0, K), (2 * K, 3 * K)]  # edge splits remain, the middle is a hole
    assert ops.closed == 1  # the old middle's close ran before the hook
    assert mm.map_count == len(mm.vmas())


@pytest.mark.parametrize("kernel", ALL)
def test_null_vm_ops_keeps_dummy_or_becomes_anonymous(kernel: str) -> None:
    mm = mk(kernel)
    fd, _ = dev(mm, lambda desc: (setattr(desc, "vm_ops", None), 0)[1])
    assert mm.sys_mmap(B, K, RW, SH, fd, 0) == B
    v = mm.vma_at(B)
    assert v is not None
    # §10: 6.18–7.1 keep the default (dummy) ops; later the VMA becomes anonymous
    if PROFILES[kernel].null_vm_ops_makes_anonymous:
        assert v.vm_ops is None
    else:
        assert v.vm_ops is DUMMY_VM_OPS


@pytest.mark.parametrize("kernel", [p for p in ALL if not PROFILES[p].user_fields_only_on_new_vma])
def test_user_fields_applied_on_merge(kernel: str) -> None:
    """6.16-7.3-rc5; 976d5e0ddac8 (7.3-rc6) stops it: tests/contract/test_profiles_as_released.py."""
    mm = mk(kernel)
    a, b = CloseOps(), VmOperations()
    seq = iter([a, b])
    fd, _ = dev(mm, lambda desc: (setattr(desc, "vm_ops", next(seq)), setattr(desc, "private_data", "x"), 0)[2])
    assert mm.sys_mmap(B, K, RW, SH, fd, 0) == B
    assert mm.sys_mmap(B + K, K, RW, SH, fd, 1 * 0 + K) == B + K
    v = mm.vma_at(B)
    assert v is not None and shape(mm) == [(0, 2 * K)]
    assert v.vm_ops is b  # §2 step 7: runs on the merged VMA, overwriting the neighbour's


@pytest.mark.parametrize("kernel", [p for p in ACTIONS if p != "finish"])
def test_devzero_shared_file_swap_refcounts(kernel: str) -> None:
    mm = mk(kernel)
    fd = mm.open_devzero()
    zero = mm.fdtable[fd]
    assert mm.sys_mmap(B, 2 * K, RW, SH, fd, 0) == B
    v = mm.vma_at(B)
    assert v is not None and v.vm_file is not zero and v.vm_file is not None
    shm = v.vm_file
    assert "vm_file swapped to a new shmem file" in traced(mm)
    assert shm.refcount == 1 and zero.refcount == 1  # the VMA owns the only reference (no extra get)
    assert mm.sys_munmap(B, 2 * K) == 0
    assert shm.refcount == 0
    # a failure after the swap drops the new file exactly once (alloc failure, §10)
    mm.fail_plan["vma_alloc"] = (mm.fail_hits.get("vma_alloc", 0) + 1, -errno.ENOMEM)
    before = list(mm.resources.files)  # every file the mm creates is tracked there
    assert mm.sys_mmap(B, 2 * K, RW, SH, fd, 0) == -errno.ENOMEM
    created: list[File] = [f for f in mm.resources.files if not any(f is g for g in before)]
    assert created and created[0].refcount == 0 and zero.refcount == 1
    mm.validate()


@pytest.mark.parametrize("kernel", ALL)
def test_devzero_private_is_anonymous(kernel: str) -> None:
    mm = mk(kernel)
    fd = mm.open_devzero()
    if kernel == "finish":  # finish(err) gets no VMA: private /dev/zero cannot be written
        with pytest.raises(ProfileFeatureError):
            mm.sys_mmap(B, K, RW, PR, fd, 0)
        return
    assert mm.sys_mmap(B, K, RW, PR, fd, 0) == B
    v = mm.vma_at(B)
    assert v is not None and v.vm_ops is None and v.vm_file is mm.fdtable[fd]
    if PROFILES[kernel].has_hooks:
        assert "success_hook" in traced(mm)


# ---------------------------------------------------------------------------------------------------
# actions (spec §10 "Actions")
@pytest.mark.parametrize("kernel", ACTIONS)
def test_default_action_and_remap_captures_page_prot(kernel: str) -> None:
    mm = mk(kernel)
    from vmalab.driver import MmapActionType, mmap_action_remap_full

    def prep(desc: VmAreaDesc) -> int:
        assert desc.action.type is MmapActionType.NOTHING
        desc.page_prot = 0x10
        mmap_action_remap_full(desc, 0x1234)
        desc.page_prot = 0x20  # later changes are not seen by the remap
        return 0
    fd, d = dev(mm, prep)
    assert mm.sys_mmap(B, 2 * K, RW, SH, fd, 0) == B
    pg = mm.pt.get(B >> 12)
    assert pg is not None and pg.pfn == 0x1234 and pg.pgprot == 0x10
    assert "action REMAP_PFN ok" in traced(mm)
    assert flags_of(mm, B) == "rd wr sh mr mw me ms pf io de dd"


@pytest.mark.parametrize("kernel", ACTIONS)
def test_remap_out_of_range_and_partial_cow(kernel: str) -> None:
    from vmalab.driver import mmap_action_remap
    mm = mk(kernel)
    fd, _ = dev(mm, lambda desc: (mmap_action_remap(desc, desc.start, 5, desc.size() + K), 0)[1])
    r = mm.sys_mmap(B, 2 * K, RW, SH, fd, 0)
    # 7.1: -EFAULT at prepare; before: the remap itself refuses at completion (-EINVAL, VMA unmapped)
    assert r == (-errno.EFAULT if kernel in V71 else -errno.EINVAL)
    assert shape(mm) == []
    mm.validate()


@pytest.mark.parametrize("kernel", ACTIONS)
def test_failing_action_partial_cow_where_it_fails(kernel: str) -> None:
    mm = mk(kernel)
    fd = open_driver(mm, "failing_action", 0)
    dev_ops = mm.fdtable[fd].f_op
    assert mm.sys_mmap(B, 2 * K, RW, PR, fd, 0) == -errno.EINVAL
    assert shape(mm) == []
    if kernel in V71:  # refused at prepare: no VMA, no close, charge leaked (until 7.2)
        assert dev_ops.close_calls == 0  # type: ignore[attr-defined]
        assert "unmapped after error -EINVAL" not in traced(mm)
    else:  # at completion: the VMA existed, was unmapped, close ran, the charge was released
        assert dev_ops.close_calls == 1  # type: ignore[attr-defined]
        assert "unmapped after error -EINVAL" in traced(mm)
        assert mm.committed == 0 and mm.leaked_commit == 0
    mm.validate()
    assert mm.sys_mmap(B, 2 * K, RW, SH, fd, 0) == B  # shared: a partial remap is fine
    assert mm.touch(B, False) == 0  # the remapped first page
    with pytest.raises(Fault) as ei:  # the rest has no PTE and a PFN map has no ->fault
        mm.touch(B + K, False)
    assert ei.value.signal == "SIGBUS"


@pytest.mark.parametrize("kernel", V71)
def test_simple_ioremap_geometry(kernel: str) -> None:
    from vmalab.drivers.iomem import IOMEM_BASE
    mm = mk(kernel)
    fd = open_driver(mm, "iomem", 0)  # 16K window
    assert mm.sys_mmap(B, 4 * K, RW, SH, fd, 0) == B
    pg = mm.pt.get(B >> 12)
    assert pg is not None and pg.pfn == IOMEM_BASE >> 12 and pg.pgprot & 0x10  # noncached
    assert mm.sys_mmap(B + 64 * K, 2 * K, RW, SH, fd, 2 * K) == B + 64 * K
    assert mm.pt.get((B + 64 * K) >> 12).pfn == (IOMEM_BASE >> 12) + 2  # type: ignore[union-attr]
    assert mm.sys_mmap(B + 128 * K, 4 * K, RW, SH, fd, K) == -errno.EINVAL  # VMA longer than the rest
    assert mm.sys_mmap(B + 128 * K, K, RW, SH, fd, 5 * K) == -errno.EINVAL  # pgoff > pages
    mm.fdtable[fd].f_op.enabled = False  # type: ignore[attr-defined]
    assert mm.sys_mmap(B + 128 * K, K, RW, SH, fd, 0) == -errno.EACCES


@pytest.mark.parametrize("kernel", V71)
def test_map_kernel_pages_range(kernel: str) -> None:
    from vmalab.driver import mmap_action_map_kernel_pages
    mm = mk(kernel)
    pages = [Page(ANON) for _ in range(4)]
    fd, _ = dev(mm, lambda desc: (mmap_action_map_kernel_pages(desc, desc.start + K, pages, 2), 0)[1])
    assert mm.sys_mmap(B, 2 * K, RW, SH, fd, 0) == -errno.EFAULT  # outside the VMA (§1.4)
    assert mm.sys_mmap(B, 3 * K, RW, SH, fd, 0) == B
    assert mm.pt.get(B >> 12) is None and mm.pt.get((B >> 12) + 1) is pages[0]
    assert "mm" in flags_of(mm, B).split()


@pytest.mark.parametrize("kernel", V71)
def test_unknown_action_type_is_einval(kernel: str) -> None:
    mm = mk(kernel)

    def prep(desc: VmAreaDesc) -> int:
        desc.action.type = "BOGUS"  # type: ignore[assignment]
        return 0
    fd, _ = dev(mm, prep)
    assert mm.sys_mmap(B, K, RW, SH, fd, 0) == -errno.EINVAL


@pytest.mark.parametrize("kernel", MAPPED)
def test_order_on_success_and_mapped_not_on_merge(kernel: str) -> None:
    mm = mk(kernel)
    ops = MappedOps()
    fd, _ = dev(mm, lambda desc: (setattr(desc, "vm_ops", ops), 0)[1])
    assert mm.sys_mmap(B, K, RW, SH, fd, 0) == B
    ev = traced(mm)
    assert ev.index("new vma") < ev.index("action NOTHING ok") < ev.index("mapped")  # mapped for NOTHING too
    v = mm.vma_at(B)
    assert v is not None and v.vm_private_data == ("priv", B) and ops.args == [(B, B + K, 0)]
    assert mm.sys_mmap(B + K, K, RW, SH, fd, K) == B + K  # merges: mapped is not called
    assert ops.mapped_calls == 1 and shape(mm) == [(0, 2 * K)]


@pytest.mark.parametrize("kernel", HOOKS)
def test_hooks_order_and_error_hook_filters(kernel: str) -> None:
    mm = mk(kernel)
    fd = open_driver(mm, "devmem", 0)
    mm.fail_plan["action_complete"] = (1, -errno.ENOMEM)
    assert mm.sys_mmap(B, 2 * K, RW, SH, fd, 0xFED00000) == -errno.EAGAIN  # mmap_filter_error
    assert "unmapped after error -ENOMEM" in traced(mm)
    assert traced(mm).index("unmapped after error -ENOMEM") < traced(mm).index("error_hook")
    assert shape(mm) == []
    mm.validate()


def test_error_override_72() -> None:
    mm = mk("7.2")
    fd = open_driver(mm, "devmem", 0)
    mm.fail_plan["action_complete"] = (1, -errno.ENOMEM)
    assert mm.sys_mmap(B, 2 * K, RW, SH, fd, 0xFED00000) == -errno.EAGAIN
    assert "error_hook" not in traced(mm)
    from vmalab.driver import mmap_action_remap_full
    fd2, _ = dev(mm, lambda d: (mmap_action_remap_full(d, 1), setattr(d.action, "error_override", 5), 0)[2])
    assert mm.sys_mmap(B, K, RW, SH, fd2, 0) == -errno.EINVAL  # check_mmap_action: not an errno


def test_error_hook_returning_zero_returns_unmapped_address() -> None:
    from vmalab.driver import mmap_action_remap_full
    mm = mk("7.1")

    def prep(d: VmAreaDesc) -> int:
        mmap_action_remap_full(d, 1)
        d.action.error_hook = lambda e: 0
        return 0
    fd, _ = dev(mm, prep)
    mm.fail_plan["action_complete"] = (1, -errno.EIO)
    assert mm.sys_mmap(B, K, RW, SH, fd, 0) == B  # literal kernel behaviour (§10): a driver bug
    assert shape(mm) == [] and "unmapped after error -EIO" in traced(mm)


@pytest.mark.parametrize("kernel", V71)
def test_rmap_lock_held_until_complete_and_released_before_unmap(kernel: str) -> None:
    from vmalab.driver import mmap_action_remap_full
    mm = mk(kernel)
    held: list[frozenset[str]] = []
    ops = MappedOps(-errno.EIO)
    orig = ops.mapped

    def mapped(*a: object) -> int:
        held.append(mm.locks.held())
        return orig(*a)  # type: ignore[arg-type]
    ops.mapped = mapped  # type: ignore[method-assign]

    def prep(d: VmAreaDesc) -> int:
        mmap_action_remap_full(d, 1)
        d.action.hide_from_rmap_until_complete = True
        d.vm_ops = ops
        return 0
    fd, _ = dev(mm, prep)
    ino = mm.fdtable[fd].inode.ino
    assert mm.sys_mmap(B, K, RW, SH, fd, 0) == -errno.EIO
    assert f"i_mmap:{ino}" in held[0] and "mmap_lock:write" in held[0] and f"vma:{B:#x}" in held[0]
    ev = traced(mm)
    assert ev.index("rmap lock released") < ev.index("unmapped after error -EIO")
    assert ops.closed == 1  # close runs for the VMA whose mapped failed
    assert not mm.locks.i_mmap


@pytest.mark.parametrize("kernel", ["6.19", "7.0"])
def test_619_unmaps_under_rmap_lock(kernel: str) -> None:
    from vmalab.driver import mmap_action_remap_full
    mm = mk(kernel)

    def prep(d: VmAreaDesc) -> int:
        mmap_action_remap_full(d, 1)
        d.action.hide_from_rmap_until_complete = True
        return 0
    fd, _ = dev(mm, prep)
    mm.fail_plan["action_complete"] = (1, -errno.EIO)
    assert mm.sys_mmap(B, K, RW, SH, fd, 0) == -errno.EIO
    assert ("unmap-under-rmap-lock", kernel) in mm.lock_events


# ---------------------------------------------------------------------------------------------------
# mapped_private (vme_user-like)
@pytest.mark.parametrize("kernel", MAPPED)
def test_mapped_private_alloc_and_free(kernel: str) -> None:
    mm = mk(kernel)
    fd = open_driver(mm, "mapped_private", 0)
    d = mm.fdtable[fd].f_op
    assert mm.sys_mmap(B, 3 * K, RW, SH, fd, 0) == B
    assert (d.mapped_calls, d.allocs, d.users) == (1, 1, 1)  # type: ignore[attr-defined]
    assert not d.mutex.held and d.mutex.acquisitions == 1  # type: ignore[attr-defined]
    assert mm.sys_munmap(B + K, K) == 0  # split: open takes a ref; the middle's close drops one
    assert (d.close_calls, d.frees, d.users) == (1, 0, 1)  # type: ignore[attr-defined]
    assert mm.sys_munmap(B, 3 * K) == 0
    assert (d.close_calls, d.frees, d.users) == (3, 1, 0)  # type: ignore[attr-defined]
    mm.fail_plan["mapped"] = (2, -errno.ENOMEM)
    assert mm.sys_mmap(B, K, RW, SH, fd, 0) == -errno.ENOMEM
    # close tolerated a VMA whose mapped failed (nothing allocated, nothing freed)
    assert (d.close_calls, d.allocs, d.frees, d.users) == (4, 1, 1, 0)  # type: ignore[attr-defined]
    assert shape(mm) == []
    mm.validate()


# ---------------------------------------------------------------------------------------------------
# compat layer (spec §10 "Compat layer")
@pytest.mark.parametrize("kernel", ALL)
def test_ovl_stacking_refcounts(kernel: str) -> None:
    mm = mk(kernel)
    fd = open_driver(mm, "ovl", 64 * K)
    ovl = mm.fdtable[fd]
    real = ovl.f_op.real  # type: ignore[attr-defined]
    assert mm.sys_mmap(B, K, RW, SH, fd, 0) == B
    v = mm.vma_at(B)
    assert v is not None and v.vm_file is real and v.vm_ops is not DUMMY_VM_OPS
    assert ovl.refcount == 1 and real.refcount == 2
    assert PROFILES[kernel].compat_names[0] + "()" in traced(mm)
    assert mm.sys_munmap(B, K) == 0 and real.refcount == 1


@pytest.mark.parametrize("kernel", V71)
def test_compat_failure_returns_raw_error_without_unmap(kernel: str) -> None:
    from vmalab.driver import mmap_action_remap_full
    mm = mk(kernel)

    def prep(d: VmAreaDesc) -> int:
        mmap_action_remap_full(d, 1)
        if PROFILES[kernel].has_hooks:
            d.action.error_hook = lambda e: -errno.EAGAIN  # not called in the compat path
        return 0
    inner = File(Inode(1, (0, 0), size=1 << 20), Drv(prep), "/inner", owner=mm)
    vma = VMA(B, B + K, C.VM_READ | C.VM_SHARED | C.VM_MAYSHARE | C.VM_MAYREAD, 0, inner)
    mm.fail_plan["action_complete"] = (1, -errno.EIO)
    assert vfs_mmap(mm, inner, vma) == -errno.EIO  # raw: no error hook, no unmap (is_compat)
    assert not any(t.startswith("unmapped after error") for t in traced(mm))


def test_legacy_mmap_installing_mapped_is_not_rejected_71() -> None:
    """The -EINVAL refusal (__vma_check_mmap_hook()) was linux-next only and removed before 7.1 shipped
    (3d3544a6c996): the mmap succeeds and the legacy hook's ->mapped is never called."""
    mm = mk("7.1")

    class Legacy(FileOperations):
        has_mmap = True

        def mmap(self, file: File, vma: VMA) -> int:  # noqa: ARG002
            vma.vm_ops = MappedOps()
            return 0
    fd = mm.open_device("/dev/legacy", Legacy())
    assert mm.sys_mmap(B, K, RW, SH, fd, 0) == B
    assert shape(mm) == [(0, K)]
    v = mm.vma_at(B)
    assert v is not None and isinstance(v.vm_ops, MappedOps) and v.vm_ops.mapped_calls == 0
    assert "mapped ignored (legacy hook)" in traced(mm)


# ---------------------------------------------------------------------------------------------------
# locks
@pytest.mark.parametrize("kernel", ALL)
def test_lock_state_at_callbacks(kernel: str) -> None:
    mm = mk(kernel)
    seen: dict[str, frozenset[str]] = {}

    def prep(d: VmAreaDesc) -> int:
        seen["prepare"] = mm.locks.held()
        return 0
    fd, _ = dev(mm, prep)
    assert mm.sys_mmap(B, K, RW, SH | C.MAP_POPULATE, fd, 0) == B
    assert seen["prepare"] == frozenset({"mmap_lock:write"})  # no VMA exists (§8)
    assert mm.locks.held() == frozenset()


# ---------------------------------------------------------------------------------------------------
# fault injection at every step (spec §10): errno, shape, map_count, leak, refcounts, close/mapped counts
STEPS = ["vm_enough_memory", "gather", "mmap_prepare", "action_prepare", "vma_alloc", "vma_prealloc",
         "action_complete", "mapped"]


@pytest.mark.parametrize("kernel", MAPPED)
@pytest.mark.parametrize("point", STEPS)
def test_fault_injection_each_step(kernel: str, point: str) -> None:
    mm = mk(kernel)
    assert mm.sys_mmap(B, 4 * K, RW, ANONF, -1, 0) == B
    fd = open_driver(mm, "mapped_private", 0)
    d = mm.fdtable[fd].f_op
    mm.fail_plan[point] = (mm.fail_hits.get(point, 0) + 1, -errno.ENOMEM)
    before = mm.committed
    # the setup charge is only asked for pages not already charged: map into empty space for that step
    at = B + 8 * K if point == "vm_enough_memory" else B + K
    r = mm.sys_mmap(at, 2 * K, RW, PR, fd, 0)
    assert r == -errno.ENOMEM
    assert f"injected failure at {point} (hit {mm.fail_hits[point]})" in traced(mm)
    if point == "gather":  # gather failure: VMAs reattached, the edge splits stay (§2 step 2)
        assert shape(mm) == [(0, K), (K, 3 * K), (3 * K, 4 * K)]
        assert mm.committed == before and mm.leaked_commit == 0
    elif point == "vm_enough_memory":  # nothing charged, nothing torn down
        assert shape(mm) == [(0, 4 * K)] and mm.committed == before and mm.leaked_commit == 0
    else:  # the old range was zapped and closed before the failing step: a hole (§2 steps 3, 6, 9)
        assert shape(mm) == [(0, K), (3 * K, 4 * K)]
        # The replaced VMAs' charge was handed to the new mapping at setup (vms->nr_accounted = 0); a
        # failure before the new VMA exists never gives it back (abort_munmap); an unmap of the new VMA
        # (action/mapped failure) releases it with the VMA.
        lost = point in ("mmap_prepare", "action_prepare", "vma_alloc", "vma_prealloc")
        assert mm.leaked_commit == (2 if lost else 0)
        assert ("commit charge leaked" in traced(mm)) == lost
    assert mm.map_count == len(mm.vmas())
    assert mm.fdtable[fd].refcount == 1  # no VMA keeps the device file
    assert d.users == 0 and d.allocs == d.frees  # type: ignore[attr-defined]
    if point in ("action_complete", "mapped"):
        assert d.close_calls == 1  # type: ignore[attr-defined]
        assert "unmapped after error -ENOMEM" in traced(mm)
    assert not mm.locks.held() and not d.mutex.held  # type: ignore[attr-defined]
    mm.validate()


@pytest.mark.parametrize("kernel", HOOKS)
def test_fault_injection_success_hook(kernel: str) -> None:
    mm = mk(kernel)
    fd = mm.open_devzero()
    mm.fail_plan["success_hook"] = (1, -errno.ENOMEM)
    assert mm.sys_mmap(B, K, RW, PR, fd, 0) == -errno.ENOMEM
    if kernel in V71:  # 7.1: success-hook failure unmaps
        assert shape(mm) == [] and "unmapped after error -ENOMEM" in traced(mm)
    else:  # 6.19/7.0/seed: the error is returned, the VMA stays
        assert shape(mm) == [(0, K)]
    mm.validate()


# ---------------------------------------------------------------------------------------------------
# tools/testing/vma scenarios of spec §7, in our own words, run on the model
def _anon(mm: MM, off: int, n: int, prot: int = RW) -> int:
    return mm.sys_mmap(B + off * K, n * K, prot, ANONF, -1, 0)


def test_vma_simple_merge() -> None:
    mm = mk("6.18")
    _anon(mm, 0, 1)
    _anon(mm, 2, 1)
    _anon(mm, 1, 1)  # a new range between two compatible VMAs
    assert shape(mm) == [(0, 3 * K)]
    assert mm.vma_at(B).vm_pgoff == B >> 12  # type: ignore[union-attr]


def test_vma_simple_modify() -> None:
    mm = mk("6.18")
    _anon(mm, 0, 3)
    v = mm.vma_at(B)
    assert v is not None
    r = mm.vma_modify(v, None, B + K, B + 2 * K, v.vm_flags & ~C.VM_WRITE)
    assert isinstance(r, VMA)
    assert shape(mm) == [(0, K), (K, 2 * K), (2 * K, 3 * K)]
    assert [x.vm_pgoff - (B >> 12) for x in mm.vmas() if x.vm_start >= B] == [0, 1, 2]


@pytest.mark.parametrize("sticky", [0, C.VM_SOFTDIRTY, C.VM_MAYBE_GUARD, C.VM_SOFTDIRTY | C.VM_MAYBE_GUARD])
def test_vma_merge_new_shapes_and_sticky(sticky: int) -> None:
    mm = mk("6.18")
    _anon(mm, 0, 1)
    _anon(mm, 4, 1)
    prev, nxt = mm.vma_at(B), mm.vma_at(B + 4 * K)
    assert prev is not None and nxt is not None
    nxt.vm_flags |= sticky
    base = prev.vm_flags & ~C.VM_STICKY
    # merge with prev only
    r = mm.merge_new_range(B + K, B + 2 * K, base, None, (B >> 12) + 1, prev, None)
    assert r is prev and shape(mm) == [(0, 2 * K), (4 * K, 5 * K)]
    # merge with next only, carrying the new range's sticky flags
    r = mm.merge_new_range(B + 3 * K, B + 4 * K, base | sticky, None, (B >> 12) + 3, None, nxt)
    assert r is nxt and nxt.vm_flags & sticky == sticky
    # fill the gap: three-way, sticky flags survive
    r = mm.merge_new_range(B + 2 * K, B + 3 * K, base, None, (B >> 12) + 2, prev, nxt)
    assert r is prev and shape(mm) == [(0, 5 * K)] and prev.vm_flags & sticky == sticky
    mm.total_vm = sum(v.pages for v in mm.vmas())
    mm.committed = sum(v.pages for v in mm.vmas() if v.vm_flags & C.VM_ACCOUNT)
    mm.validate()


@pytest.mark.parametrize("special", [C.VM_IO, C.VM_DONTEXPAND, C.VM_PFNMAP, C.VM_MIXEDMAP])
def test_vma_merge_special_flags(special: int) -> None:
    assert C.VM_SPECIAL == C.VM_IO | C.VM_DONTEXPAND | C.VM_PFNMAP | C.VM_MIXEDMAP
    mm = mk("6.18")
    _anon(mm, 0, 1)
    prev = mm.vma_at(B)
    assert prev is not None
    f = prev.vm_flags
    assert mm.merge_new_range(B + K, B + 2 * K, f | special, None, (B >> 12) + 1, prev, None) is None
    prev.vm_flags |= special
    assert mm.merge_new_range(B + K, B + 2 * K, f, None, (B >> 12) + 1, prev, None) is None
    _anon(mm, 1, 1)
    mid = mm.vma_at(B + K)
    assert mid is not None
    vmg = VmaMerge(B + K, B + 2 * K, f, None, mid.vm_pgoff, prev=prev, middle=mid, anon_vma=mid.anon_vma, src=mid)
    assert vma_merge_existing_range(mm, vmg) is None


def _with_close(mm: MM, off: int, n: int) -> CloseOps:
    ops = CloseOps()
    fd, _ = dev(mm, lambda d: (setattr(d, "vm_ops", ops), 0)[1])
    assert mm.sys_mmap(B + off * K, n * K, RW, SH, fd, off * K) == B + off * K
    return ops


def test_vma_merge_with_close_existing() -> None:
    # an existing-range merge never deletes a VMA whose vm_ops->close is set
    mm = mk("6.18")
    fd, _ = dev(mm, lambda d: (setattr(d, "vm_ops", CloseOps()), 0)[1])
    for off in (0, 1, 2):
        assert mm.sys_mmap(B + off * K, K, C.PROT_READ if off == 1 else RW, SH, fd, off * K) == B + off * K
    assert len(shape(mm)) == 3
    assert mm.sys_mprotect(B + K, K, RW) == 0  # would delete mid (and next): refused ⇒ stays 3
    assert len(shape(mm)) == 3


def test_vma_merge_new_with_close() -> None:
    # a 3-way new-range merge degrades to extending prev when next has close
    mm = mk("6.18")
    fd, _ = dev(mm, lambda d: (setattr(d, "vm_ops", CloseOps()), 0)[1])
    assert mm.sys_mmap(B, K, RW, SH, fd, 0) == B
    assert mm.sys_mmap(B + 2 * K, K, RW, SH, fd, 2 * K) == B + 2 * K
    assert mm.sys_mmap(B + K, K, RW, SH, fd, K) == B + K
    assert shape(mm) == [(0, 2 * K), (2 * K, 3 * K)]


def test_vma_merge_existing_shapes() -> None:
    mm = mk("6.18")
    _anon(mm, 0, 2)
    _anon(mm, 2, 2, C.PROT_READ)
    assert mm.sys_mprotect(B + 2 * K, K, RW) == 0  # part of next merges into prev
    assert shape(mm) == [(0, 3 * K), (3 * K, 4 * K)]
    assert mm.sys_mprotect(B + 2 * K, K, C.PROT_READ) == 0  # part of prev merges into next
    assert shape(mm) == [(0, 2 * K), (2 * K, 4 * K)]
    assert mm.sys_mprotect(B + 2 * K, 2 * K, RW) == 0  # whole of next merges into prev
    assert shape(mm) == [(0, 4 * K)]


def test_vma_anon_vma_non_mergeable_and_dup() -> None:
    mm = mk("6.18")
    _anon(mm, 0, 1)
    _anon(mm, 2, 1)
    mm.touch(B, True)
    mm.touch(B + 2 * K, True)
    a, c = mm.vma_at(B), mm.vma_at(B + 2 * K)
    assert a is not None and c is not None and a.anon_vma is not c.anon_vma
    _anon(mm, 1, 1)  # different anon_vmas on both sides: only the 2-way merge with prev happens
    assert shape(mm) == [(0, 2 * K), (2 * K, 3 * K)]
    mm2 = mk("6.18")
    _anon(mm2, 0, 1)
    _anon(mm2, 1, 1, C.PROT_READ)
    mm2.touch(B, True)
    src = mm2.vma_at(B)
    assert src is not None and mm2.sys_mprotect(B + K, K, RW) == 0
    assert shape(mm2) == [(0, 2 * K)] and mm2.vma_at(B).anon_vma is src.anon_vma  # type: ignore[union-attr]


def test_mmap_region_basic_and_fill_hole() -> None:
    mm = mk("6.18")
    for off in (0x300, 0x24, 0x301, 0x25):  # four mmap_region calls ⇒ two merged VMAs
        assert mmap_region(mm, None, B + off * K, K, C.VM_READ | C.VM_MAYREAD | C.VM_WRITE | C.VM_MAYWRITE,
                              (B >> 12) + off) == B + off * K
    assert shape(mm) == [(0x24 * K, 0x26 * K), (0x300 * K, 0x302 * K)]
    assert mm.vma_at(B + 0x24 * K).vm_pgoff == (B >> 12) + 0x24  # type: ignore[union-attr]
    mm.validate()
    # fill hole: 3-way merge only when the flags match
    _anon(mm, 0x400, 1)
    _anon(mm, 0x402, 1)
    _anon(mm, 0x401, 1)
    assert (0x400 * K, 0x403 * K) in shape(mm)
    _anon(mm, 0x500, 1)
    _anon(mm, 0x502, 1)
    assert mm.sys_mmap(B + 0x501 * K, K, C.PROT_READ, ANONF, -1, 0) == B + 0x501 * K
    assert [s for s in shape(mm) if s[0] >= 0x500 * K] == [(0x500 * K, 0x501 * K), (0x501 * K, 0x502 * K),
                                                            (0x502 * K, 0x503 * K)]


def test_copy_vma_via_mremap() -> None:
    mm = mk("6.18")
    _anon(mm, 0, 2)
    mm.touch(B, True)
    _anon(mm, 10, 1)
    mm.touch(B + 10 * K, True)
    # move next to a VMA it cannot merge with (different anon_vma): copied as its own VMA
    r = mm.sys_mremap(B, 2 * K, 2 * K, C.MREMAP_NAMES["MREMAP_MAYMOVE"] | C.MREMAP_NAMES["MREMAP_FIXED"],
                      B + 8 * K)
    assert r == B + 8 * K
    assert shape(mm) == [(8 * K, 10 * K), (10 * K, 11 * K)]
    mm.validate()
