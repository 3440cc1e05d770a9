"""Property tests: random page-granular op sequences keep every invariant and raise nothing but OSError
(or a modelled Fault for touches)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from vmalab import constants as C
from vmalab.faultpoints import FAULT_POINTS
from vmalab.faults import Fault
from vmalab.mm import MM

BASE = 0x500000000000
P = C.PAGE_SIZE
PROTS = [C.PROT_NONE, C.PROT_READ, C.PROT_READ | C.PROT_WRITE, C.PROT_READ | C.PROT_EXEC]
FLAGS = [C.MAP_PRIVATE | C.MAP_ANONYMOUS, C.MAP_SHARED | C.MAP_ANONYMOUS,
         C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_NORESERVE, C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_LOCKED,
         C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_GROWSDOWN]
MREMAP_FLAGS = [0, 1, 3, 5, 7, 2, 4]  # none, MAYMOVE, MAYMOVE|FIXED, MAYMOVE|DONTUNMAP, all three, bad
ADVICES = sorted(set(C.MADV_NAMES.values()) - {C.MADV_NAMES["MADV_HWPOISON"], C.MADV_NAMES["MADV_SOFT_OFFLINE"]}) + [
    5, 999, -1]
MSYNC_FLAGS = [0, 1, 2, 3, 4, 5, 6, 7, 8]

op = st.one_of(
    st.tuples(st.just("mmap"), st.integers(0, 31), st.integers(1, 6), st.sampled_from(PROTS),
              st.sampled_from(FLAGS), st.booleans()),
    st.tuples(st.just("munmap"), st.integers(0, 31), st.integers(0, 6)),
    st.tuples(st.just("mprotect"), st.integers(0, 31), st.integers(0, 6), st.sampled_from(PROTS)),
    st.tuples(st.just("touch"), st.integers(0, 36), st.booleans()),
    st.tuples(st.just("memfd"), st.integers(0, 31), st.integers(1, 4), st.integers(0, 4), st.booleans()),
    st.tuples(st.just("fork"), st.integers(0, 36)),
    st.tuples(st.just("madvise"), st.integers(0, 31), st.integers(0, 6), st.sampled_from(ADVICES)),
    st.tuples(st.just("mincore"), st.integers(0, 31), st.integers(0, 6)),
    st.tuples(st.just("msync"), st.integers(0, 31), st.integers(0, 6), st.sampled_from(MSYNC_FLAGS)),
    st.tuples(st.just("mremap"), st.integers(0, 31), st.integers(0, 6), st.integers(1, 6),
              st.sampled_from(MREMAP_FLAGS), st.integers(0, 40)),
    st.tuples(st.just("mlock"), st.integers(0, 31), st.integers(0, 6), st.sampled_from([None, 0, 1, 2])),
    st.tuples(st.just("munlock"), st.integers(0, 31), st.integers(0, 6)),
    st.tuples(st.just("mlockall"), st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 8])),
    st.tuples(st.just("munlockall")),
    st.tuples(st.just("mseal"), st.integers(0, 31), st.integers(0, 6), st.sampled_from([0, 0, 1])),
    st.tuples(st.just("brk"), st.integers(-2, 12), st.booleans()),
    st.tuples(st.just("nocap"), st.integers(0, 8)),
    st.tuples(st.just("inject"), st.sampled_from(sorted(FAULT_POINTS)), st.integers(1, 3)),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(op, max_size=25), st.integers(2, 40))
def test_random_sequences_keep_invariants(ops: list[tuple], max_map_count: int) -> None:
    mm = MM(max_map_count=max_map_count)
    memfd = mm.memfd_create("p", 8 * P)
    mm.start_brk = mm.brk = BASE + 48 * P  # a heap above the pages the other ops use
    for o in ops:
        try:
            if o[0] == "mmap":
                _, pg, n, prot, flags, fixed = o
                mm.mmap(BASE + pg * P if fixed else None, n * P, prot, flags | (C.MAP_FIXED if fixed else 0))
            elif o[0] == "munmap":
                mm.munmap(BASE + o[1] * P, o[2] * P)
            elif o[0] == "mprotect":
                mm.mprotect(BASE + o[1] * P, o[2] * P, o[3])
            elif o[0] == "touch":
                mm.touch(BASE + o[1] * P, o[2])
            elif o[0] == "madvise":
                assert mm.sys_madvise(BASE + o[1] * P, o[2] * P, o[3]) <= 0
            elif o[0] == "mincore":
                rc, vec = mm.sys_mincore(BASE + o[1] * P, o[2] * P)
                assert (rc == 0 and vec is not None and len(vec) == o[2]) or (rc < 0 and vec is None)
            elif o[0] == "msync":
                assert mm.sys_msync(BASE + o[1] * P, o[2] * P, o[3]) <= 0
            elif o[0] == "mremap":
                _, pg, old, new, fl, dst = o
                mm.mremap(BASE + pg * P, old * P, new * P, fl, BASE + dst * P)
            elif o[0] == "mlock":
                _, pg, n, fl = o
                r = (mm.sys_mlock(BASE + pg * P, n * P) if fl is None
                     else mm.sys_mlock2(BASE + pg * P, n * P, fl))
                assert r <= 0
            elif o[0] == "munlock":
                assert mm.sys_munlock(BASE + o[1] * P, o[2] * P) <= 0
            elif o[0] == "mlockall":
                assert mm.sys_mlockall(o[1]) <= 0
            elif o[0] == "munlockall":
                assert mm.sys_munlockall() == 0
            elif o[0] == "mseal":
                assert mm.sys_mseal(BASE + o[1] * P, o[2] * P, o[3]) <= 0
            elif o[0] == "brk":
                want = mm.start_brk + o[1] * P + (5 if o[2] else 0)
                old_brk = mm.brk
                got = mm.sys_brk(want)
                assert got == mm.brk and got in (want, old_brk), (got, want, old_brk)
            elif o[0] == "inject":
                # fail a later hit of a fault point (vmalab faults list): every error path stays valid
                mm.fail_plan[o[1]] = (mm.fail_hits.get(o[1], 0) + o[2], -FAULT_POINTS[o[1]].errno)
            elif o[0] == "nocap":
                # drop CAP_IPC_LOCK with a small RLIMIT_MEMLOCK (scenarios cannot, the model can)
                mm.cap_ipc_lock = False
                mm.rlimits[C.RLIMIT_NAMES["RLIMIT_MEMLOCK"]] = (o[1] * P, C.RLIM_INFINITY)
            elif o[0] == "fork":
                # the child writes one page, is checked, and exits; the parent must be unaffected
                addr = BASE + o[1] * P
                child = mm.fork()
                child.validate()
                vma = mm.vma_at(addr)
                private = vma is not None and vma.vm_flags & C.VM_READ and not vma.vm_flags & C.VM_SHARED
                before = mm.touch(addr) if private else None
                try:
                    child.touch(addr, True, 0x5A)
                except Fault:
                    pass
                child.validate()
                child.exit_mmap()
                child.exit_files()
                child.validate()
                assert child.map_count == 0 and child.total_vm == 0 and child.locked_vm == 0
                if private:
                    assert mm.touch(addr) == before
            else:
                _, pg, n, off, shared = o
                mm.mmap(BASE + pg * P, n * P, C.PROT_READ | C.PROT_WRITE,
                        (C.MAP_SHARED if shared else C.MAP_PRIVATE) | C.MAP_FIXED, memfd, off * P)
        except (OSError, Fault):
            pass
        mm.validate()
        assert mm.map_count <= max_map_count + 1
