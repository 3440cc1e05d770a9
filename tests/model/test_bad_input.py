"""Bad input never crashes the model or corrupts its state: raw syscalls return -errno, the Pythonic API
raises OSError, and the validator passes afterwards.  Errno expectations are the kernel's (measured on
the live kernel) and are also checked live by the corpus."""

from __future__ import annotations

import errno

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmalab import constants as C
from vmalab.mm import MM, PSEUDO_SYSCALLS, syscall_params
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


# --- the MM.syscall contract (README "Using the model", MM.syscall's docstring) ---------------------------
class Register:
    """An integer-like object that is not an int (as numpy integers are): accepted through __index__."""

    def __init__(self, v: int) -> None:
        self.v = v

    def __index__(self) -> int:
        return self.v


@pytest.mark.parametrize("bad", [True, False, 4096.0, "4096", b"\x00\x10", None, [4096], 4096 + 0j])
def test_syscall_refuses_every_non_integer_with_type_error(bad: object) -> None:
    mm = MM()
    mm.mmap(BASE, 4096, 3, ANON | C.MAP_FIXED)
    for name in [*SYSCALLS, *PSEUDO_SYSCALLS]:
        nargs = len(syscall_params(name))
        for i in range(nargs):
            args: list[object] = [0] * nargs
            args[i] = bad
            with pytest.raises(TypeError, match=f"syscall {name}\\(\\): argument .* must be an int"):
                mm.syscall(name, *args)  # type: ignore[arg-type]
    assert mm.map_count == 1
    mm.validate()


def test_syscall_takes_index_objects_and_reduces_them_to_64_bits() -> None:
    mm = MM()
    assert mm.syscall("mmap", Register(BASE), Register(4096), 3, ANON | C.MAP_FIXED, Register(-1), 0) == BASE  # type: ignore[arg-type]
    assert mm.syscall("munmap", BASE + (1 << 64), 4096 - (1 << 64)) == 0  # both reduce to BASE, 4096
    assert mm.map_count == 0


def test_syscall_narrows_like_the_kernel() -> None:
    """The cases of tests/scenarios/syscall_args_wrap_like_the_kernel.json (measured on Linux 6.18.44)."""
    mm = MM()
    mm.mmap(BASE, 16 * 4096, 3, ANON | C.MAP_FIXED)
    fd = mm.memfd_create("m", 16 * 4096)
    assert mm.syscall("mprotect", BASE, 4096, C.PROT_READ | 1 << 32) == -errno.EINVAL  # unsigned long prot
    assert mm.syscall("mprotect", BASE, 0, C.PROT_READ | 1 << 32) == 0
    assert mm.syscall("mmap", 0, 8192, 1, C.MAP_SHARED_VALIDATE | 1 << 32, fd, 0) == -errno.EOPNOTSUPP
    assert mm.syscall("mmap", 0, 8192, 1, C.MAP_SHARED | 1 << 32, fd, 0) > 0
    assert mm.syscall("mmap", 0, 8192, 1, C.MAP_SHARED, fd + (1 << 32), 0) > 0  # fget(unsigned int fd)
    assert mm.syscall("mmap", 0, 8192, 1, C.MAP_SHARED, -1, 0) == -errno.EBADF
    assert mm.syscall("mremap", BASE, 1 << 63 | 4096, 4096, 0, 0) == -errno.EINVAL  # do_vmi_munmap()'s check
    mm.validate()


def test_touch_pseudo_syscall() -> None:
    """``touch`` (addr, write, value): the byte read, 0 for a write, -EFAULT where the kernel would send a
    signal (``MM.touch`` raises :class:`vmalab.Fault` with the signal instead)."""
    mm = MM()
    mm.mmap(BASE, 4096, 3, ANON | C.MAP_FIXED)
    assert mm.syscall("touch", BASE, 0, 0) == 0
    assert mm.syscall("touch", BASE + 5, 1, 0x1FF) == 0  # a byte store keeps the low 8 bits
    assert mm.syscall("touch", BASE + 5, 0, 0) == 0xFF
    assert mm.syscall("touch", BASE + 4096, 0, 0) == -errno.EFAULT
    assert mm.syscall("touch", BASE - (1 << 64), 0, 0) == 0  # a 64-bit address
    mm.mprotect(BASE, 4096, C.PROT_READ)
    assert mm.syscall("touch", BASE, 1, 7) == -errno.EFAULT
    mm.validate()


def test_fork_pseudo_syscall() -> None:
    """``fork`` (): the child's pid (> 0); the child's MM is ``mm.children[pid]``; -ENOMEM when the child
    cannot be charged."""
    mm = MM()
    mm.mmap(BASE, 4096, 3, ANON | C.MAP_FIXED)
    mm.touch(BASE, write=True, value=9)
    pid = mm.syscall("fork")
    assert pid > 0 and mm.syscall("fork") not in (pid, 0)
    child = mm.children.pop(pid)
    assert child.touch(BASE) == 9 and child.syscall("touch", BASE, 1, 3) == 0 and mm.touch(BASE) == 9
    child.exit_mmap()
    mm.validate()


def test_mincore_through_syscall() -> None:
    mm = MM()
    mm.mmap(BASE, 2 * 4096, 3, ANON | C.MAP_FIXED)
    mm.touch(BASE + 4096, write=True)
    assert mm.syscall("mincore", BASE, 2 * 4096) == 0
    assert mm.syscall("mincore", BASE, 3 * 4096) == -errno.ENOMEM
    assert mm.sys_mincore(BASE, 2 * 4096) == (0, "01")


_EDGES = [0, 1, -1, 4095, 4096, BASE, BASE + 4096, 1 << 31, 1 << 32, (1 << 32) - 1, 1 << 47, (1 << 47) - 4096,
          1 << 63, (1 << 64) - 1, (1 << 64) - 4096, 1 << 64, -(1 << 63), 1 << 100, -(1 << 100), 10 ** 40]
_ARG = st.one_of(st.sampled_from(_EDGES), st.integers(), st.integers(min_value=-(1 << 66), max_value=1 << 66),
                 st.integers(min_value=0, max_value=1 << 20), st.builds(Register, st.integers(-(1 << 65), 1 << 65)))
_NAMES = sorted([*SYSCALLS, *PSEUDO_SYSCALLS])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_NAMES), st.lists(_ARG, min_size=6, max_size=6)), max_size=8))
def test_every_integer_gives_a_result_or_errno(calls: list[tuple[str, list[object]]]) -> None:
    """The contract over every row of the table and the pseudo-syscalls: any integer in any position gives
    the kernel's kind of answer (an address, 0, a byte, a pid, or -errno), never an exception, and the
    model stays valid."""
    mm = MM()
    mm.mmap(BASE, 16 * 4096, 3, ANON | C.MAP_FIXED)
    mm.memfd_create("m", 16 * 4096)
    for name, ints in calls:
        r = mm.syscall(name, *ints[: len(syscall_params(name))])  # type: ignore[arg-type]
        assert isinstance(r, int) and not isinstance(r, bool)
        if name in ("mmap", "mremap"):
            assert -4095 <= r < 0 or r & 0xFFF == 0 and 0 < r < 1 << 47
        elif name == "brk":
            assert 0 <= r < 1 << 47
        elif name == "touch":
            assert r == -errno.EFAULT or 0 <= r <= 255
        elif name == "fork":
            assert r > 0 or r == -errno.ENOMEM
            if r > 0:
                mm.children.pop(r).exit_mmap()
        else:
            assert r == 0 or -4095 <= r < 0
        mm.validate()
