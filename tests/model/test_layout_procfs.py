"""Unit tests of the model's building blocks.  Expected values are kernel facts measured on this
machine's kernel (the placement table in docs/architecture.md), not outputs of the model."""

from __future__ import annotations

import pytest

from vmalab import constants as C
from vmalab.execute import default_layout
from vmalab.layout import mmap_base
from vmalab.mm import MM
from vmalab.procfs import MapsFormatError, import_maps, maps, maps_line

from ..conftest import needs_linux

M = 1 << 20
G = 1 << 30
T = 1 << 40


@pytest.mark.parametrize(("rlimit", "expected"), [
    (8 * M, 0x7FFFF7FFF000), (100 * M, 0x7FFFF7FFF000), (127 * M, 0x7FFFF7FFF000),
    (200 * M, 0x7FFFF36FF000), (1 * G, 0x7FFFBFEFF000), (64 * G, 0x7FEFFFEFF000),
    (100 * T, 0x1BFFFFEFF000), (110 * T, 0x155555556000), (C.RLIM_INFINITY, 0x155555556000),
])
def test_mmap_base_matches_measured_table(rlimit: int, expected: int) -> None:
    assert mmap_base(rlimit) == expected


def test_randomized_mmap_base_is_seeded_and_in_range() -> None:
    a = MM(randomize=True, seed=7).mmap_base
    b = MM(randomize=True, seed=7).mmap_base
    c = MM(randomize=True, seed=8).mmap_base
    assert a == b != c
    top = 0x7FFBFF700000  # the formula with the 16 GiB stack pad, before rnd
    assert top - (1 << 40) < a <= top and a % C.PAGE_SIZE == 0


def test_maps_format_is_byte_exact() -> None:
    mm = MM()
    import_maps(mm, default_layout(8 * M))
    lines = maps(mm).splitlines()
    heap = next(line for line in lines if line.endswith("[heap]"))
    assert heap.index("[heap]") == 73
    anon = next(line for line in lines if line.startswith("004cc000"))
    assert anon == "004cc000-00737000 rw-p 00000000 00:00 0 "
    assert lines[-1].startswith("ffffffffff600000-ffffffffff601000 --xp") and lines[-1].endswith("[vsyscall]")


def test_import_maps_round_trips() -> None:
    mm = MM()
    text = default_layout(8 * M)
    import_maps(mm, text)
    assert [maps_line(mm, v).rstrip() for v in mm.tree] == [line.rstrip() for line in text.splitlines()]
    mm.validate()


@pytest.mark.parametrize("bad", [
    "zzzz", "00400000-00300000 r--p 00000000 00:00 0 ",
    "00400001-00401000 r--p 00000000 00:00 0 ",
    "00400000-00402000 r--p 00000000 00:00 0 \n00401000-00403000 r--p 00000000 00:00 0 ",
])
def test_import_maps_rejects_bad_text(bad: str) -> None:
    with pytest.raises(MapsFormatError):
        import_maps(MM(), bad)


def test_vmflags_round_trip() -> None:
    for text in ("rd wr mr mw me ac", "rd mr pf io de dd", "rd wr sh mr mw me ms", "rd wr mr mw me lo lf ac sl"):
        assert C.vmflags_str(C.parse_vmflags(text)) == text
    with pytest.raises(ValueError):
        C.parse_vmflags("rd zz")


def test_unknown_kernel_profile_is_refused() -> None:
    with pytest.raises(ValueError, match="profile"):
        MM(kernel="9.9")


@needs_linux
def test_from_maps_of_this_process_reads_mmap_base_above_vdso() -> None:
    """exec maps the interpreter top-down first, ending at mmap_base, and the vDSO block right below it:
    mmap_base is the end of ld.so, the run of adjacent VMAs that starts at [vdso] (ASLR on or off)."""
    with open("/proc/self/maps", encoding="ascii") as f:
        text = f.read()
    mm = MM.from_maps(text)
    mm.validate()
    lines = text.splitlines()
    i = next(n for n, line in enumerate(lines) if line.endswith("[vdso]"))
    end = int(lines[i].split("-")[1].split()[0], 16)
    while lines[i + 1].split("-")[0] == f"{end:x}" and "ld-linux" in lines[i + 1]:
        i += 1
        end = int(lines[i].split("-")[1].split()[0], 16)
    assert "ld-linux" in lines[i]  # this python is dynamic: ld.so sits right above the vDSO block
    assert mm.mmap_base == end
    assert mm.map_count == len([ln for ln in text.splitlines() if ln.strip() and not ln.endswith("[vsyscall]")])
    # a new non-fixed mapping of this process's shape lands in a free gap below mmap_base
    a = mm.mmap(None, 4096, C.PROT_READ, C.MAP_PRIVATE | C.MAP_ANONYMOUS)
    assert a < mm.mmap_base and mm.vma_at(a) is not None
