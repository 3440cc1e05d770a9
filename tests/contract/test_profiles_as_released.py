"""The kernel profiles as upstream released them (issue 11).

Expectations come from the upstream reference (/work/shared/reference/upstream-after-7.1.md §2-§4), each
test naming the upstream commit it follows, never from model output:

* mainline 7.2.0 keeps the commit charge after a failed ``mmap_prepare``; ``6cc27d821963`` ("mm/vma:
  correctly unaccount on mmap_prepare() failure", 7.3-rc4) releases it (D1);
* ``976d5e0ddac8`` ("mm/vma: predicate setting mmap_prepare VMA fields on new vma alloc", 7.3-rc6):
  the driver's ``vm_ops``/``vm_private_data`` (and the NULL -> anonymous rule) go only onto a newly
  allocated VMA, no longer onto a VMA the range merged into (D2);
* ``3d3544a6c996`` ("mm/vma: remove __vma_check_mmap_hook()", 7.1 merge window): a legacy ``->mmap``
  that installs ``vm_ops->mapped`` is not refused; the hook is silently never called (D3);
* compat (mm/vma.h set_vma_from_desc() / compat_set_vma_from_desc(), 6.16-7.1): the zeroed desc's
  ``vm_ops`` is written back unconditionally, so an inner hook that sets none leaves NULL ``vm_ops``;
  7.2 (``8876dc0780f2``) starts the compat desc from the VMA's ``vm_ops`` (D4);
* mm/memory.c __simple_ioremap_prep() (7.1 "mm: add mmap_action_simple_ioremap()"): the overflow check
  is ``pfn + pages < pfn`` on an unsigned long, not a 2^52 bound (D8);
* the experimental ``finish`` profile: compat errors behave as 7.1 (docs/mmap-prepare.md §7).
"""

from __future__ import annotations

import errno

import pytest

from vmalab import MM
from vmalab import constants as C
from vmalab.compat import vfs_mmap
from vmalab.driver import VmAreaDesc, mmap_action_remap_full, mmap_action_simple_ioremap
from vmalab.files import DUMMY_VM_OPS, File, FileOperations, Inode, VmOperations, vma_set_file
from vmalab.mm_types import VMA
from vmalab.profiles import PROFILES

from .test_driver_contract import ALL, MAPPED, RW, SH, B, CloseOps, Drv, K, MappedOps, dev, mk, shape, traced

PR = C.MAP_PRIVATE | C.MAP_FIXED
NEW_VMA_ONLY = [p for p in ALL if PROFILES[p].user_fields_only_on_new_vma]  # 7.3
ON_MERGE = [p for p in ALL if not PROFILES[p].user_fields_only_on_new_vma]


def test_73_profile_exists_as_72_plus_the_two_hotfixes() -> None:
    p72, p73 = PROFILES["7.2"], PROFILES["7.3"]
    f72, f73 = p72.features(), p73.features()
    differ = {k for k in f72 if f72[k] != f73[k]}
    assert differ == {"prepare_failure_releases_charge", "user_fields_only_on_new_vma"}
    assert not p72.prepare_failure_releases_charge and p73.prepare_failure_releases_charge
    assert not p72.user_fields_only_on_new_vma and p73.user_fields_only_on_new_vma


@pytest.mark.parametrize("kernel", ["7.2", "7.3"])
def test_failed_prepare_charge_72_kept_73_released_6cc27d821963(kernel: str) -> None:
    """7.2.0: call_mmap_prepare() failure goes to abort_munmap (the charge is kept);
    6cc27d821963 (7.3-rc4) sends it to unacct_error."""
    mm = mk(kernel)
    fd = mm.memfd_secret(16 * K)
    assert mm.sys_mmap(B, 4 * K, RW, PR, fd, 0) == -errno.EINVAL  # secretmem refuses a private mapping
    assert shape(mm) == []
    expect = 4 if kernel == "7.2" else 0
    assert mm.leaked_commit == expect and mm.committed == expect
    assert ("commit charge leaked" in traced(mm)) == (kernel == "7.2")
    mm.validate()


def _merge_two(kernel: str, second_ops: VmOperations | None) -> tuple[MM, CloseOps]:
    mm = mk(kernel)
    first = CloseOps()
    seq = iter([(first, "p1"), (second_ops, "p2")])

    def prep(desc: VmAreaDesc) -> int:
        desc.vm_ops, desc.private_data = next(seq)
        return 0
    fd, _ = dev(mm, prep)
    assert mm.sys_mmap(B, K, RW, SH, fd, 0) == B
    assert mm.sys_mmap(B + K, K, RW, SH, fd, K) == B + K
    assert shape(mm) == [(0, 2 * K)]  # the second range merged into the first VMA
    return mm, first


@pytest.mark.parametrize("kernel", ALL)
def test_user_fields_on_merged_vma_976d5e0ddac8(kernel: str) -> None:
    """Up to 7.3-rc5 set_vma_user_defined_fields() writes the driver's vm_ops/private data onto the VMA the
    range merged into; 976d5e0ddac8 (7.3-rc6) writes them only onto a newly allocated VMA."""
    mm, first = _merge_two(kernel, VmOperations())
    v = mm.vma_at(B)
    assert v is not None
    if kernel in NEW_VMA_ONLY:
        assert v.vm_ops is first and v.vm_private_data == "p1"
    else:
        assert v.vm_ops is not first and v.vm_private_data == "p2"
    mm.validate()


@pytest.mark.parametrize("kernel", ["7.2", "7.3"])
def test_null_vm_ops_on_merge_anonymous_only_before_976d5e0ddac8(kernel: str) -> None:
    """7.2: a NULL vm_ops after prepare runs vma_set_anonymous() on the merged VMA too (the neighbour
    loses its ops); 976d5e0ddac8 (7.3-rc6) leaves a merged VMA alone."""
    mm, first = _merge_two(kernel, None)
    v = mm.vma_at(B)
    assert v is not None
    assert v.vm_ops is (first if kernel == "7.3" else None)


@pytest.mark.parametrize("kernel", ["7.2", "7.3"])
def test_new_vma_still_gets_user_fields_976d5e0ddac8(kernel: str) -> None:
    """976d5e0ddac8 keeps set_vma_user_defined_fields() for a newly allocated VMA (vm_ops, private data,
    NULL -> anonymous)."""
    mm = mk(kernel)
    ops = CloseOps()
    fd, _ = dev(mm, lambda d: (setattr(d, "vm_ops", ops), setattr(d, "private_data", "p"), 0)[2])
    assert mm.sys_mmap(B, K, RW, SH, fd, 0) == B
    v = mm.vma_at(B)
    assert v is not None and v.vm_ops is ops and v.vm_private_data == "p"
    fd2, _ = dev(mm, lambda d: (setattr(d, "vm_ops", None), 0)[1])
    assert mm.sys_mmap(B + 64 * K, K, RW, SH, fd2, 0) == B + 64 * K
    v2 = mm.vma_at(B + 64 * K)
    assert v2 is not None and v2.vm_ops is None


class _LegacyMapped(FileOperations):
    """A legacy ->mmap that installs vm_ops with a ->mapped hook."""

    has_mmap = True

    def __init__(self) -> None:
        self.ops = MappedOps()

    def mmap(self, file: File, vma: VMA) -> int:  # noqa: ARG002
        vma.vm_ops = self.ops
        return 0


@pytest.mark.parametrize("kernel", ALL)
def test_legacy_mmap_installing_mapped_not_refused_3d3544a6c996(kernel: str) -> None:
    """3d3544a6c996 removed __vma_check_mmap_hook() before 7.1 shipped: the mmap succeeds and the legacy
    hook's ->mapped is silently never called, on every profile."""
    mm = mk(kernel)
    drv = _LegacyMapped()
    fd = mm.open_device("/dev/legacy", drv)
    assert mm.sys_mmap(B, K, RW, SH, fd, 0) == B
    v = mm.vma_at(B)
    assert v is not None and v.vm_ops is drv.ops
    assert drv.ops.mapped_calls == 0
    assert mm.sys_munmap(B, K) == 0 and drv.ops.closed == 1
    mm.validate()


@pytest.mark.parametrize("kernel", MAPPED)
def test_vfs_mmap_of_legacy_mapped_not_refused_3d3544a6c996(kernel: str) -> None:
    """vfs_mmap() on a legacy file (a stacked caller) returns the legacy hook's own result (3d3544a6c996)."""
    mm = mk(kernel)
    drv = _LegacyMapped()
    f = File(Inode(1, (0, 0), size=1 << 20), drv, "/lower", owner=mm)
    vma = VMA(B, B + K, C.VM_READ | C.VM_SHARED | C.VM_MAYSHARE | C.VM_MAYREAD, 0, f)
    assert vfs_mmap(mm, f, vma) == 0
    assert vma.vm_ops is drv.ops and drv.ops.mapped_calls == 0


@pytest.mark.parametrize("kernel", ALL)
def test_compat_inner_hook_without_vm_ops(kernel: str) -> None:
    """set_vma_from_desc()/compat_set_vma_from_desc() assign vma->vm_ops = desc->vm_ops unconditionally:
    6.16-7.1 start the compat desc zeroed (vm_ops NULL), so an inner hook that sets none leaves the
    stacked VMA with NULL vm_ops; 7.2 (8876dc0780f2) starts it from vma->vm_ops, which stays."""
    mm = mk(kernel)
    inner = File(Inode(1, (0, 0), size=1 << 20), Drv(lambda d: 0), "/inner", owner=mm)
    vma = VMA(B, B + K, C.VM_READ | C.VM_SHARED | C.VM_MAYSHARE | C.VM_MAYREAD, 0, inner)
    vma.vm_ops = DUMMY_VM_OPS  # as __mmap_new_vma() leaves it before the legacy ->mmap
    assert vfs_mmap(mm, inner, vma) == 0
    if PROFILES[kernel].compat_desc_copies_vm_ops:
        assert vma.vm_ops is DUMMY_VM_OPS
    else:
        assert vma.vm_ops is None


class _Outer(FileOperations):
    """An overlay-style stacked file: legacy ->mmap that points the VMA at ``inner`` and calls vfs_mmap()."""

    has_mmap = True

    def __init__(self, mm: MM, inner: File) -> None:
        self.mm, self.inner = mm, inner

    def mmap(self, file: File, vma: VMA) -> int:  # noqa: ARG002
        vma_set_file(vma, self.inner)
        return vfs_mmap(self.mm, self.inner, vma)


@pytest.mark.parametrize("kernel", ["7.1", "7.2"])
def test_compat_inner_hook_without_vm_ops_through_mmap(kernel: str) -> None:
    """The same through mmap(2): an overlay-style legacy ->mmap over an inner mmap_prepare file that sets
    no vm_ops gives a stacked VMA with NULL vm_ops on 7.1 and keeps the dummy ops on 7.2 (8876dc0780f2)."""
    mm = mk(kernel)
    inner = File(Inode(mm.alloc_ino(), (0, 0), size=1 << 20), Drv(lambda d: 0), "/inner", owner=mm)
    fd = mm.open_device("/dev/outer", _Outer(mm, inner))
    assert mm.sys_mmap(B, K, RW, SH, fd, 0) == B
    v = mm.vma_at(B)
    assert v is not None and v.vm_file is inner
    assert v.vm_ops is (None if kernel == "7.1" else DUMMY_VM_OPS)
    assert mm.sys_munmap(B, K) == 0
    mm.validate()


V71 = [p for p in ALL if PROFILES[p].prepare_validates]


@pytest.mark.parametrize("kernel", V71)
def test_simple_ioremap_top_pfn_accepted(kernel: str) -> None:
    """__simple_ioremap_prep() (7.1, "mm: add mmap_action_simple_ioremap()") refuses only a wrap of
    ``start + len`` (phys_addr_t) and of ``pfn + pages`` (unsigned long), never a range ending at pfn 2^52."""
    mm = mk(kernel)
    phys = (1 << 64) - K  # the last 4 KiB page of the 64-bit physical space: pfn 2^52 - 1
    fd, _ = dev(mm, lambda d: (mmap_action_simple_ioremap(d, phys, K - 1), 0)[1])
    assert mm.sys_mmap(B, K, RW, SH, fd, 0) == B
    pg = mm.pt.get(B >> 12)
    assert pg is not None and pg.pfn == (1 << 52) - 1
    mm.validate()


@pytest.mark.parametrize("kernel", V71)
def test_simple_ioremap_wrap_refused(kernel: str) -> None:
    """``start + len < start`` (a phys_addr_t wrap) is -EINVAL, so is a VMA longer than the range."""
    mm = mk(kernel)
    fd, _ = dev(mm, lambda d: (mmap_action_simple_ioremap(d, (1 << 64) - K, K), 0)[1])
    assert mm.sys_mmap(B, K, RW, SH, fd, 0) == -errno.EINVAL
    fd2, _ = dev(mm, lambda d: (mmap_action_simple_ioremap(d, (1 << 64) - K, K - 1), 0)[1])
    assert mm.sys_mmap(B, 2 * K, RW, SH, fd2, 0) == -errno.EINVAL
    assert shape(mm) == []
    mm.validate()


def test_finish_compat_error_is_raw_as_71() -> None:
    """docs/mmap-prepare.md §7: the finish profile's compat path on error behaves as 7.1 — the raw error,
    no unmap, and the completion hook is not asked (7.1 skips error_hook when is_compat)."""
    mm = mk("finish")
    calls: list[int] = []

    def prep(d: VmAreaDesc) -> int:
        mmap_action_remap_full(d, 1)
        d.action.finish = lambda e: (calls.append(e), -errno.EAGAIN)[1]
        return 0
    inner = File(Inode(1, (0, 0), size=1 << 20), Drv(prep), "/inner", owner=mm)
    vma = VMA(B, B + K, C.VM_READ | C.VM_SHARED | C.VM_MAYSHARE | C.VM_MAYREAD, 0, inner)
    mm.fail_plan["action_complete"] = (1, -errno.EIO)
    assert vfs_mmap(mm, inner, vma) == -errno.EIO
    assert calls == []
    assert not any(t.startswith("unmapped after error") for t in traced(mm))


def test_finish_core_error_still_uses_finish() -> None:
    """The core path keeps the finish profile's own rule: finish(err) may replace the error."""
    mm = mk("finish")

    def prep(d: VmAreaDesc) -> int:
        mmap_action_remap_full(d, 1)
        d.action.finish = lambda e: -errno.EAGAIN if e else 0
        return 0
    fd, _ = dev(mm, prep)
    mm.fail_plan["action_complete"] = (1, -errno.EIO)
    assert mm.sys_mmap(B, K, RW, SH, fd, 0) == -errno.EAGAIN


def test_profiles_command_lists_73() -> None:
    from click.testing import CliRunner

    from vmalab.cli import main
    r = CliRunner().invoke(main, ["profiles"])
    assert r.exit_code == 0, r.output
    names = [line.split()[0] for line in r.output.splitlines() if line and not line.startswith(" ")]
    assert names == list(PROFILES) and "7.3" in names
    line73 = next(line for line in r.output.splitlines() if line.startswith("7.3 "))
    assert "6cc27d821963" in line73 and "976d5e0ddac8" in line73
    feats = r.output.split("7.3 ", 1)[1].splitlines()[1]
    assert "prepare_failure_releases_charge" in feats and "user_fields_only_on_new_vma" in feats
