"""prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME): anon names split and merge VMAs and show in maps.

The live kernel here is built without CONFIG_ANON_VMA_NAME (prctl answers EINVAL, measured by
hand with a small C probe), so only that refusal is observable live; the rest follows
mm/madvise.c: madvise_set_anon_name() and fs/proc/task_mmu.c: get_vma_name() as documented there:
a name is compared by is_mergeable_vma(), and named anonymous VMAs print as [anon:NAME] (anonymous shmem
as [anon_shmem:NAME]).
"""

from __future__ import annotations

import errno

import pytest

from vmalab import MM
from vmalab import constants as C
from vmalab.procfs import maps_line

B = 0x500000000000
P = C.PAGE_SIZE
RW = C.PROT_READ | C.PROT_WRITE
ANON = C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_FIXED


def named() -> MM:
    mm = MM()
    mm.anon_vma_name_enabled = True
    return mm


def shape(mm: MM) -> list[tuple[int, int, str | None]]:
    return [((v.vm_start - B) // P, (v.vm_end - B) // P, v.anon_name) for v in mm.tree.range(B, B + (1 << 30))]


def test_live_kernel_config_refuses() -> None:
    mm = MM()
    mm.mmap(B, 4 * P, RW, ANON)
    assert mm.sys_set_vma_anon_name(B, 4 * P, "x") == -errno.EINVAL
    assert shape(mm) == [(0, 4, None)]


def test_naming_splits_and_unnaming_merges_back() -> None:
    mm = named()
    mm.mmap(B, 6 * P, RW, ANON)
    assert mm.sys_set_vma_anon_name(B + 2 * P, 2 * P, "heap2") == 0
    assert shape(mm) == [(0, 2, None), (2, 4, "heap2"), (4, 6, None)]
    assert maps_line(mm, mm.vma_at(B + 2 * P)).endswith(" [anon:heap2]")
    mm.validate()
    assert mm.sys_set_vma_anon_name(B + 2 * P, 2 * P, None) == 0
    assert shape(mm) == [(0, 6, None)]


def test_names_decide_merging_of_new_mappings() -> None:
    mm = named()
    mm.mmap(B, 2 * P, RW, ANON)
    assert mm.sys_set_vma_anon_name(B, 2 * P, "a") == 0
    mm.mmap(B + 2 * P, 2 * P, RW, ANON)  # a new range has no name: no merge with "a"
    assert shape(mm) == [(0, 2, "a"), (2, 4, None)]
    assert mm.sys_set_vma_anon_name(B + 2 * P, 2 * P, "a") == 0  # same name: merges
    assert shape(mm) == [(0, 4, "a")]


@pytest.mark.parametrize("bad", ["x" * 80, "a[b", "tab\there", "dollar$"])
def test_bad_names(bad: str) -> None:
    mm = named()
    mm.mmap(B, P, RW, ANON)
    assert mm.sys_set_vma_anon_name(B, P, bad) == -errno.EINVAL
    mm.validate()


def test_holes_files_and_shmem() -> None:
    mm = named()
    mm.mmap(B, P, RW, ANON)
    mm.mmap(B + 2 * P, P, RW, ANON)
    assert mm.sys_set_vma_anon_name(B, 3 * P, "h") == -errno.ENOMEM  # the part before the hole is named
    assert shape(mm)[0] == (0, 1, "h")
    fd = mm.memfd_create("m", 4 * P)
    mm.mmap(B + 8 * P, P, RW, C.MAP_SHARED | C.MAP_FIXED, fd)
    assert mm.sys_set_vma_anon_name(B + 8 * P, P, "f") == -errno.EBADF
    mm.mmap(B + 16 * P, P, RW, C.MAP_SHARED | C.MAP_ANONYMOUS | C.MAP_FIXED)
    assert mm.sys_set_vma_anon_name(B + 16 * P, P, "s") == 0
    assert maps_line(mm, mm.vma_at(B + 16 * P)).endswith(" [anon_shmem:s]")
    assert mm.sys_set_vma_anon_name(B + 1, P, "u") == -errno.EINVAL
    mm.validate()
