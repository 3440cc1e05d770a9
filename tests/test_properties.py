"""Property tests: random page-granular op sequences keep every invariant and raise nothing but OSError
(or a modelled Fault for touches)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from vmalab import constants as C
from vmalab.faults import Fault
from vmalab.mm import MM

BASE = 0x500000000000
P = C.PAGE_SIZE
PROTS = [C.PROT_NONE, C.PROT_READ, C.PROT_READ | C.PROT_WRITE, C.PROT_READ | C.PROT_EXEC]
FLAGS = [C.MAP_PRIVATE | C.MAP_ANONYMOUS, C.MAP_SHARED | C.MAP_ANONYMOUS,
         C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_NORESERVE, C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_LOCKED,
         C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_GROWSDOWN]

op = st.one_of(
    st.tuples(st.just("mmap"), st.integers(0, 31), st.integers(1, 6), st.sampled_from(PROTS),
              st.sampled_from(FLAGS), st.booleans()),
    st.tuples(st.just("munmap"), st.integers(0, 31), st.integers(0, 6)),
    st.tuples(st.just("mprotect"), st.integers(0, 31), st.integers(0, 6), st.sampled_from(PROTS)),
    st.tuples(st.just("touch"), st.integers(0, 36), st.booleans()),
    st.tuples(st.just("memfd"), st.integers(0, 31), st.integers(1, 4), st.integers(0, 4), st.booleans()),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(op, max_size=25), st.integers(2, 40))
def test_random_sequences_keep_invariants(ops: list[tuple], max_map_count: int) -> None:
    mm = MM(max_map_count=max_map_count)
    memfd = mm.memfd_create("p", 8 * P)
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
            else:
                _, pg, n, off, shared = o
                mm.mmap(BASE + pg * P, n * P, C.PROT_READ | C.PROT_WRITE,
                        (C.MAP_SHARED if shared else C.MAP_PRIVATE) | C.MAP_FIXED, memfd, off * P)
        except (OSError, Fault):
            pass
        mm.validate()
        assert mm.map_count <= max_map_count + 1
