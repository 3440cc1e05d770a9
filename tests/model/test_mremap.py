"""mremap unit checks: bad input, the syscall interface, accounting across moves.  Behaviour is checked
against the live kernel by the mremap_* scenarios of the corpus; these tests cover what procfs cannot
show (commit accounting, locked_vm) and arguments the runner would not send."""

from __future__ import annotations

import errno

from hypothesis import given, settings
from hypothesis import strategies as st

from vmalab import constants as C
from vmalab.mm import MM

BASE = 0x500000000000
P = C.PAGE_SIZE
RW = C.PROT_READ | C.PROT_WRITE
ANON_FIXED = C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_FIXED
MAYMOVE, FIXED, DONTUNMAP = 1, 2, 4

WORD = st.integers(min_value=-(1 << 65), max_value=1 << 65)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(WORD, WORD, WORD, st.integers(-8, 16), WORD), max_size=10))
def test_garbage_arguments_return_errno(calls: list[tuple[int, int, int, int, int]]) -> None:
    mm = MM()
    mm.mmap(BASE, 8 * P, RW, ANON_FIXED)
    for addr, old, new, flags, dst in calls:
        r = mm.sys_mremap(addr, old, new, flags, dst)
        assert isinstance(r, int)
        assert r >= 0 or -r in (errno.EINVAL, errno.EFAULT, errno.ENOMEM, errno.EAGAIN, errno.EPERM)
        mm.validate()


def test_syscall_interface() -> None:
    mm = MM()
    mm.mmap(BASE, 2 * P, RW, ANON_FIXED)
    assert mm.syscall("mremap", BASE, 2 * P, 4 * P, 0, 0) == BASE
    assert mm.syscall("mremap", BASE + 1, P, P, 0, 0) == -errno.EINVAL
    assert mm.mremap(BASE, 4 * P, 4 * P, MAYMOVE | FIXED, BASE + 64 * P) == BASE + 64 * P
    mm.validate()


def test_move_keeps_commit_charge() -> None:
    """A move transfers the charge of the moved pages (unmap_source_vma() does not uncharge them) and
    the pieces left behind keep VM_ACCOUNT."""
    mm = MM()
    mm.mmap(BASE, 3 * P, RW, ANON_FIXED)
    mm.touch(BASE + P, True)
    before = mm.committed
    assert mm.sys_mremap(BASE + P, P, P, MAYMOVE | FIXED, BASE + 100 * P) == BASE + 100 * P
    assert mm.committed == before
    assert all(v.vm_flags & C.VM_ACCOUNT for v in mm.vmas())
    assert mm.map_count == 3
    mm.validate()


def test_grow_charges_delta_and_dontunmap_charges_all() -> None:
    mm = MM()
    mm.mmap(BASE, 2 * P, RW, ANON_FIXED)
    c0 = mm.committed
    assert mm.sys_mremap(BASE, 2 * P, 4 * P, 0, 0) == BASE
    assert mm.committed == c0 + 2
    assert mm.sys_mremap(BASE, 4 * P, 4 * P, MAYMOVE | DONTUNMAP, BASE + 64 * P) == BASE + 64 * P
    assert mm.committed == c0 + 6
    mm.validate()


def test_fixed_shrink_move_leaks_the_delta() -> None:
    """mremap_to() shrinks first and then charges the (stale) delta for the move: the kernel keeps that
    charge; the model books it as leaked."""
    mm = MM()
    mm.mmap(BASE, 4 * P, RW, ANON_FIXED)
    assert mm.sys_mremap(BASE, 4 * P, P, MAYMOVE | FIXED, BASE + 64 * P) == BASE + 64 * P
    assert mm.leaked_commit == 3
    mm.validate()


def test_dontunmap_of_locked_vma_unlocks_the_old_vma() -> None:
    mm = MM()
    mm.mmap(BASE, 3 * P, RW, ANON_FIXED | C.MAP_LOCKED)
    assert mm.sys_mremap(BASE + P, P, P, MAYMOVE | FIXED | DONTUNMAP, BASE + 64 * P) == BASE + 64 * P
    old = mm.vma_at(BASE)
    new = mm.vma_at(BASE + 64 * P)
    assert old is not None and new is not None
    assert old.vm_end == BASE + 3 * P and not old.vm_flags & C.VM_LOCKED
    assert new.vm_flags & C.VM_LOCKED and mm.rss_pages(new) == 1
    mm.validate()


def test_old_len_zero_duplicates_shared_mapping() -> None:
    mm = MM()
    fd = mm.memfd_create("x", 2 * P)
    mm.mmap(BASE, 2 * P, RW, C.MAP_SHARED | C.MAP_FIXED, fd)
    mm.touch(BASE, True, 7)
    assert mm.sys_mremap(BASE, 0, 2 * P, MAYMOVE | FIXED, BASE + 64 * P) == BASE + 64 * P
    assert mm.touch(BASE + 64 * P) == 7
    assert mm.map_count == 2
    mm.validate()


def test_map_count_headroom() -> None:
    """check_mremap_params(): map_count + 2 >= max - 3 refuses FIXED; prep_move_vma(): >= max - 3."""
    mm = MM(max_map_count=10)
    for i in range(5):
        mm.mmap(BASE + 2 * i * P, P, RW, ANON_FIXED)
    assert mm.sys_mremap(BASE, P, P, MAYMOVE | FIXED, BASE + 100 * P) == -errno.ENOMEM  # 5 + 2 >= 7
    mm.munmap(BASE + 8 * P, P)
    assert mm.sys_mremap(BASE, P, P, MAYMOVE | FIXED, BASE + 100 * P) == BASE + 100 * P  # 4 + 2 < 7
    mm.validate()
