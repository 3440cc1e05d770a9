"""hugetlb mappings in the model (fs/hugetlbfs, mm/hugetlb.c).  The expected values were measured on
this machine's kernel (6.18.44, empty huge page pools): the scenarios tests/scenarios/hugetlb_*.json and,
for a hugetlbfs descriptor (which scenarios cannot open), a memfd_create(MFD_HUGETLB) program whose
results are quoted below."""

from __future__ import annotations

import errno

import pytest

from vmalab import constants as C
from vmalab.faults import Fault
from vmalab.fdtable import install
from vmalab.files import HSTATES, hugetlb_file_setup
from vmalab.mm import MM
from vmalab.procfs import maps_line, smaps

BASE = 0x500000000000
M = 1 << 20
RW = C.PROT_READ | C.PROT_WRITE
HUGE = C.MAP_ANONYMOUS | C.MAP_HUGETLB | C.MAP_NORESERVE


def _smaps_of(mm: MM, addr: int) -> dict[str, str]:
    """The smaps block of the VMA at ``addr``: key -> value text."""
    lines = smaps(mm).splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith(f"{addr:x}-"))
    out: dict[str, str] = {}
    for line in lines[i + 1:]:
        if ":" not in line or line[0] in "0123456789abcdef" and "-" in line.split()[0]:
            break
        key, _, value = line.partition(":")
        out[key] = value.strip()
        if key == "VmFlags":
            break
    return out


def test_anonymous_hugetlb_noreserve_maps_with_an_empty_pool() -> None:
    mm = MM()
    assert mm.sys_mmap(BASE, 4096, RW, C.MAP_PRIVATE | C.MAP_FIXED | HUGE, -1, 0) == BASE
    v = mm.tree.lookup(BASE)
    assert v is not None and v.vm_end == BASE + 2 * M  # the length is rounded up to the huge page size
    assert C.vmflags_str(v.vm_flags) == "rd wr mr mw me de nr ht"
    assert maps_line(mm, v).endswith("/anon_hugepage (deleted)")
    mm.validate()


def test_smaps_reports_the_huge_page_size() -> None:
    mm = MM()
    mm.mmap(BASE, 2 * M, RW, C.MAP_PRIVATE | C.MAP_FIXED | HUGE)
    mm.mmap(BASE + (1 << 30), 2 * M, RW, C.MAP_SHARED | C.MAP_FIXED | HUGE | C.MAP_HUGE_1GB)
    mm.mmap(BASE + 4 * M, 4096, RW, C.MAP_PRIVATE | C.MAP_FIXED | C.MAP_ANONYMOUS)
    two, one_g, small = _smaps_of(mm, BASE), _smaps_of(mm, BASE + (1 << 30)), _smaps_of(mm, BASE + 4 * M)
    assert two["KernelPageSize"] == two["MMUPageSize"] == "2048 kB"
    assert one_g["KernelPageSize"] == one_g["MMUPageSize"] == "1048576 kB"
    assert one_g["Size"] == "1048576 kB"
    assert small["KernelPageSize"] == small["MMUPageSize"] == "4 kB"


def test_without_noreserve_the_reservation_fails() -> None:
    mm = MM()
    flags = C.MAP_PRIVATE | C.MAP_FIXED | C.MAP_ANONYMOUS | C.MAP_HUGETLB
    assert mm.sys_mmap(BASE, 2 * M, RW, flags, -1, 0) == -errno.ENOMEM
    assert mm.resources.check(mm) == []
    mm.validate()


@pytest.mark.parametrize(("log", "expected"), [(0, 2 * M), (21, 2 * M), (30, 1 << 30), (22, None), (12, None),
                                               (63, None), (1, None)])
def test_map_huge_size_encodings(log: int, expected: int | None) -> None:
    mm = MM()
    ret = mm.sys_mmap(BASE, 4096, RW, C.MAP_PRIVATE | C.MAP_FIXED | HUGE | (log << C.MAP_HUGE_SHIFT), -1, 0)
    if expected is None:
        assert ret == -errno.EINVAL
        return
    v = mm.tree.lookup(BASE)
    assert ret == BASE and v is not None and v.vm_end - v.vm_start == expected


def test_unaligned_fixed_address_is_einval_and_a_hint_is_rounded_up() -> None:
    mm = MM()
    assert mm.sys_mmap(BASE + 4096, 2 * M, RW, C.MAP_PRIVATE | C.MAP_FIXED | HUGE, -1, 0) == -errno.EINVAL
    assert mm.sys_mmap(BASE + 4096, 2 * M, RW, C.MAP_PRIVATE | C.MAP_FIXED_NOREPLACE | HUGE, -1, 0) == -errno.EINVAL
    assert mm.sys_mmap(BASE + 4096, 2 * M, RW, C.MAP_PRIVATE | HUGE, -1, 0) == BASE + 2 * M


def test_faults_are_sigbus_and_population_fails() -> None:
    mm = MM()
    mm.mmap(BASE, 2 * M, RW, C.MAP_PRIVATE | C.MAP_FIXED | HUGE)
    for write in (False, True):
        with pytest.raises(Fault) as info:
            mm.touch(BASE + 4096, write=write)
        assert info.value.signal == "SIGBUS"
    assert mm.sys_madvise(BASE, 2 * M, C.MADV_NAMES["MADV_POPULATE_WRITE"]) == -errno.EFAULT
    assert mm.sys_mlock(BASE, 2 * M) == -errno.ENOMEM
    v = mm.tree.lookup(BASE)
    assert v is not None and not v.vm_flags & C.VM_LOCKED  # mlock_fixup() skips hugetlb VMAs
    mm.validate()


def test_splits_only_at_huge_page_boundaries_and_never_merge() -> None:
    mm = MM()
    mm.mmap(BASE, 4 * M, RW, C.MAP_PRIVATE | C.MAP_FIXED | HUGE)
    assert mm.sys_munmap(BASE, 4096) == -errno.EINVAL
    assert mm.sys_mprotect(BASE + M, 4096, C.PROT_READ) == -errno.EINVAL
    assert mm.sys_mprotect(BASE, 2 * M, C.PROT_READ) == 0
    assert mm.sys_mprotect(BASE, 2 * M, RW) == 0
    assert len(mm.tree.range(BASE, BASE + 4 * M)) == 2  # VM_DONTEXPAND is VM_SPECIAL: no merge back
    mm.validate()


def test_the_anonymous_file_reference_is_dropped_on_every_path() -> None:
    mm = MM()
    mm.mmap(BASE, 2 * M, RW, C.MAP_PRIVATE | C.MAP_FIXED | HUGE)
    v = mm.tree.lookup(BASE)
    assert v is not None and v.vm_file is not None and v.vm_file.refcount == 1  # the VMA's own
    mm.probe.fail_plan["security_mmap_file"] = (2, -errno.EACCES)  # the second mmap
    assert mm.sys_mmap(BASE + 2 * M, 2 * M, RW, C.MAP_PRIVATE | C.MAP_FIXED | HUGE, -1, 0) == -errno.EACCES
    assert mm.sys_mmap(BASE + 2 * M, 2 * M, RW, C.MAP_PRIVATE | C.MAP_FIXED | HUGE, -1, 4096) == -errno.EINVAL
    assert mm.resources.check(mm) == []
    child = mm.fork()
    child.exit_mmap()
    mm.munmap(BASE, 2 * M)
    assert mm.resources.check(mm) == []
    mm.validate()


def test_map_hugetlb_with_a_descriptor() -> None:
    """Measured with memfd_create("x", MFD_HUGETLB): mmap(NULL, 4096, RW, MAP_SHARED|MAP_NORESERVE, fd, 0)
    maps 2 MiB, also with MAP_HUGETLB (and MAP_HUGE_1GB, ignored: the file's size counts); without
    MAP_NORESERVE ENOMEM; an unaligned MAP_FIXED address or offset EINVAL; two adjacent mappings of
    contiguous parts of the file do not merge.  MAP_HUGETLB on a file that is not hugetlbfs is EINVAL
    (tests/scenarios/hugetlb_mmap_errno_order.json)."""
    mm = MM()
    fd = install(mm, hugetlb_file_setup(mm, 0, HSTATES[21]))
    shared = C.MAP_SHARED | C.MAP_NORESERVE
    for extra in (0, C.MAP_HUGETLB, C.MAP_HUGETLB | C.MAP_HUGE_1GB):
        a = mm.sys_mmap(0, 4096, RW, shared | extra, fd, 0)
        assert a > 0 and a % (2 * M) == 0
        v = mm.tree.lookup(a)
        assert v is not None and v.vm_end - v.vm_start == 2 * M and v.vm_flags & C.VM_HUGETLB
    assert mm.sys_mmap(0, 4096, RW, C.MAP_SHARED, fd, 0) == -errno.ENOMEM
    assert mm.sys_mmap(BASE + 4096, 4096, RW, shared | C.MAP_FIXED, fd, 0) == -errno.EINVAL
    assert mm.sys_mmap(0, 4096, RW, C.MAP_PRIVATE | C.MAP_NORESERVE, fd, 4096) == -errno.EINVAL
    assert mm.sys_mmap(BASE + 2 * M, 2 * M, RW, shared | C.MAP_FIXED, fd, 2 * M) == BASE + 2 * M
    assert mm.sys_mmap(BASE, 2 * M, RW, shared | C.MAP_FIXED, fd, 0) == BASE
    assert len(mm.tree.range(BASE, BASE + 4 * M)) == 2
    disk = mm.open_file("/tmp/f", 2 * M)
    assert mm.sys_mmap(0, 2 * M, RW, C.MAP_SHARED | C.MAP_HUGETLB, disk, 0) == -errno.EINVAL
    mm.validate()
    assert mm.resources.check(mm) == []
