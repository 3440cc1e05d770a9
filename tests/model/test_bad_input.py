"""Bad input never crashes the model or corrupts its state: raw syscalls return -errno, the Pythonic API
raises OSError, and the validator passes afterwards.  Errno expectations are the kernel's (measured on
the live kernel) and are also checked live by the corpus."""

from __future__ import annotations

import errno

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmalab import constants as C
from vmalab.mm import MM
from vmalab.syscalls import SYSCALLS

BASE = 0x500000000000
ANON = C.MAP_PRIVATE | C.MAP_ANONYMOUS
U64 = (1 << 64) - 1


@pytest.mark.parametrize(("args", "want"), [
    ((BASE, 0, 3, ANON | C.MAP_FIXED, -1, 0), -errno.EINVAL),          # len 0
    ((BASE + 1, 4096, 3, ANON | C.MAP_FIXED, -1, 0), -errno.EINVAL),   # unaligned fixed
    ((0, 4096, 3, C.MAP_ANONYMOUS, -1, 0), -errno.EINVAL),             # no map type
    ((0, 4096, 3, C.MAP_SHARED_VALIDATE | C.MAP_ANONYMOUS, -1, 0), -errno.EINVAL),
    ((0, 4096, 3, C.MAP_PRIVATE, 999, 0), -errno.EBADF),
    ((0, 4096, 3, C.MAP_PRIVATE, -1, 0), -errno.EBADF),
    ((0, 4096, 3, ANON, -1, 1), -errno.EINVAL),                        # unaligned offset
    ((0, U64, 3, ANON, -1, 0), -errno.ENOMEM),                         # length wraps
    ((0x7FFFFFFFF000, 8192, 3, ANON | C.MAP_FIXED, -1, 0), -errno.ENOMEM),
    ((-4096, 4096, 3, ANON | C.MAP_FIXED, -1, 0), -errno.ENOMEM),     # negative address
])
def test_mmap_errno(args: tuple[int, ...], want: int) -> None:
    mm = MM()
    assert mm.sys_mmap(*args) == want
    mm.validate()
    assert mm.map_count == 0


def test_syscall_interface_and_oserror() -> None:
    mm = MM()
    assert mm.syscall("munmap", BASE, 0) == -errno.EINVAL
    assert mm.syscall("mprotect", BASE + 1, 4096, 1) == -errno.EINVAL
    assert mm.syscall("mprotect", BASE, 0, 1) == 0
    assert mm.syscall("munmap", BASE, 4096) == 0
    with pytest.raises(OSError) as ei:
        mm.munmap(BASE, 0)
    assert ei.value.errno == errno.EINVAL
    with pytest.raises(ValueError):
        mm.syscall("no_such_call", 1)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["mmap", "munmap", "mprotect", "touch"]),
                          st.integers(min_value=-(1 << 65), max_value=1 << 65),
                          st.integers(min_value=-(1 << 65), max_value=1 << 65),
                          st.integers(min_value=-(1 << 33), max_value=1 << 33),
                          st.integers(min_value=-(1 << 33), max_value=1 << 33)), max_size=12))
def test_garbage_arguments_never_crash(calls: list[tuple[str, int, int, int, int]]) -> None:
    mm = MM()
    for name, a, b, c, d in calls:
        if name == "mmap":
            r = mm.sys_mmap(a, b, c, d, -1, 0)
        elif name == "munmap":
            r = mm.sys_munmap(a, b)
        elif name == "mprotect":
            r = mm.sys_mprotect(a, b, c)
        else:
            try:
                mm.touch(a, bool(c & 1))
            except Exception as e:  # only the modelled signal may escape
                assert type(e).__name__ == "Fault"
            r = 0
        assert isinstance(r, int)
        mm.validate()


def test_syscall_glue_errors_are_type_errors_not_errno() -> None:
    """A wrong number or type of arguments is a bug in the caller's glue: ``TypeError``, never an errno the
    kernel would not give, and nothing changes."""
    mm = MM()
    mm.mmap(BASE, 4096, 3, ANON | C.MAP_FIXED)
    with pytest.raises(TypeError, match=r"munmap\(\) takes 2 arguments"):
        mm.syscall("munmap", BASE)
    with pytest.raises(TypeError, match=r"munmap\(\) takes 2 arguments"):
        mm.syscall("munmap", BASE, 4096, 0)
    with pytest.raises(TypeError, match="argument len must be an int"):
        mm.syscall("munmap", BASE, "4096")  # type: ignore[arg-type]
    assert mm.map_count == 1
    mm.validate()
    assert mm.syscall("munlockall") == 0
    assert mm.syscall("brk", 0) == mm.brk  # brk returns the break, never -errno
    assert mm.syscall("mincore", BASE, 4096) == 0  # the return value; mm.mincore() gives the vector
    assert mm.mincore(BASE, 4096) == "0"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(sorted(SYSCALLS)),
                          st.lists(st.integers(min_value=-(1 << 65), max_value=1 << 65), min_size=6, max_size=6)),
                max_size=10))
def test_every_syscall_survives_garbage(calls: list[tuple[str, list[int]]]) -> None:
    """Every row of the syscall table, with arbitrary integers, returns an int (an address, 0 or -errno)
    and leaves a valid model."""
    mm = MM()
    mm.mmap(BASE, 16 * 4096, 3, ANON | C.MAP_FIXED)
    for name, ints in calls:
        r = mm.syscall(name, *ints[: SYSCALLS[name].nargs])
        assert isinstance(r, int)
        mm.validate()
