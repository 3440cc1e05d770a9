"""Unit tests of the VMA algebra of :mod:`vmalab.vma` (mm/vma.c), case by case in the manner of the
kernel's userland VMA tests (tools/testing/vma: merge.c, vma.c, mmap.c).

Each case draws its address space as a picture, one character per page::

    0123456789abc
    AA*B   DD  CC

The first row is the column ruler (column ``c`` is the page at ``BASE + c * PAGE``).  Upper-case letters
are existing VMAs (one letter, one VMA, one contiguous run), ``*`` marks the range being mapped or
changed: on the VMA row for a new range, on a row of its own below it for a range of existing VMAs.  An
anonymous VMA's pgoff is its page number (``addr >> PAGE_SHIFT``), as for an anonymous mmap.

:class:`Layout` builds a picture into an :class:`~vmalab.MM` (tree, accounting and all, so that
``mm.validate()`` holds) and checks the mm against later pictures: the same runs, the same VMA objects
under the same letters, the linear pgoffs and ``map_count``.  The merge entry points are called directly.
"""

from __future__ import annotations

import errno
import itertools
from collections.abc import Mapping

import pytest

from vmalab import MM, vma
from vmalab import constants as C
from vmalab.files import File, FileOperations, Inode, VmOperations
from vmalab.mm_types import VMA, AnonVma
from vmalab.vma import VmaMerge

PAGE = C.PAGE_SIZE
BASE = 0x500000000000
BASE_PFN = BASE >> C.PAGE_SHIFT
RULER = "0123456789abcdefghijklmnopqrstuvwxyz"

RW = C.VM_READ | C.VM_WRITE | C.VM_MAYREAD | C.VM_MAYWRITE
RO = C.VM_READ | C.VM_MAYREAD | C.VM_MAYWRITE
STICKY = C.VM_STICKY
SPECIAL_FLAGS = {"VM_IO": C.VM_IO, "VM_PFNMAP": C.VM_PFNMAP, "VM_MIXEDMAP": C.VM_MIXEDMAP,
                 "VM_DONTEXPAND": C.VM_DONTEXPAND}


def at(col: int) -> int:
    """The address of picture column ``col``."""
    return BASE + col * PAGE


def pfn(col: int) -> int:
    """The page number of picture column ``col``: an anonymous VMA's linear pgoff there."""
    return BASE_PFN + col


class CloseOps(VmOperations):
    """A driver's vm_ops with a ``->close`` hook: a merge may extend such a VMA but never remove it."""

    has_close = True


CLOSE_OPS = CloseOps()


def new_file(mm: MM, path: str) -> File:
    return File(Inode(mm.alloc_ino(), (0xFE, 0)), FileOperations(), path)


# ---------------------------------------------------------------------------------------------------
# pictures
def parse(picture: str) -> tuple[dict[str, tuple[int, int]], tuple[int, int] | None]:
    """The letter runs (letter -> [first column, end column)) and the ``*`` range of a picture."""
    lines = [ln for ln in picture.splitlines() if ln.strip()]
    indent = len(lines[0]) - len(lines[0].lstrip())
    ruler = lines[0].strip()
    assert RULER.startswith(ruler), f"the first row must be the column ruler, not {ruler!r}"
    owner: dict[int, str] = {}
    cols: dict[str, list[int]] = {}
    stars: list[int] = []
    for ln in lines[1:]:
        assert not ln[:indent].strip(), f"row {ln!r} starts left of the ruler"
        row = ln[indent:].rstrip()
        assert len(row) <= len(ruler), f"row {row!r} is wider than the ruler"
        for col, ch in enumerate(row):
            if ch == " ":
                continue
            if ch == "*":
                stars.append(col)
            elif ch.isupper():
                assert col not in owner, f"column {col} drawn twice"
                owner[col] = ch
                cols.setdefault(ch, []).append(col)
            else:
                raise AssertionError(f"unexpected {ch!r} in picture row {row!r}")
    runs: dict[str, tuple[int, int]] = {}
    for ch, cs in cols.items():
        assert cs == list(range(cs[0], cs[-1] + 1)), f"{ch} is not one contiguous run"
        runs[ch] = (cs[0], cs[-1] + 1)
    star = None
    if stars:
        stars.sort()
        assert stars == list(range(stars[0], stars[-1] + 1)), "the '*' range is not contiguous"
        star = (stars[0], stars[-1] + 1)
    return runs, star


class Layout:
    """An mm built from a picture, with its VMAs by letter."""

    def __init__(self, picture: str, flags: int | Mapping[str, int] = RW, *, pgoff: Mapping[str, int] | None = None,
                 files: Mapping[str, File] | None = None, mm: MM | None = None) -> None:
        self.mm = MM() if mm is None else mm
        self.vmas: dict[str, VMA] = {}
        runs, _ = parse(picture)
        for letter, (s, e) in sorted(runs.items(), key=lambda kv: kv[1]):
            f = flags if isinstance(flags, int) else flags.get(letter, RW)
            off = (pgoff or {}).get(letter, pfn(s))
            self.link(letter, s, e, f, off, file=(files or {}).get(letter))
        self.mm.validate()

    def link(self, letter: str, s: int, e: int, flags: int, pgoff: int, file: File | None = None) -> VMA:
        """A VMA over columns [s, e) put in the tree with its accounting (vma_link() + vm_stat_account())."""
        v = VMA(at(s), at(e), flags, pgoff, file)
        self.mm.tree.insert(v)
        self.mm.vm_stat_account(v.vm_flags, v.pages)
        self.vmas[letter] = v
        return v

    def __getitem__(self, letter: str) -> VMA:
        return self.vmas[letter]

    def anon(self, *letters: str, avc_len: int = 1) -> AnonVma:
        """Give the lettered VMAs one new anon_vma (``avc_len`` > 1: inherited over fork)."""
        av = self.mm.new_anon_vma()
        for letter in letters:
            self.vmas[letter].anon_vma = av
            self.vmas[letter].avc_len = avc_len
        return av

    def expect(self, picture: str, linear: bool = True) -> tuple[int, int] | None:
        """Assert the mm is exactly the picture's VMAs (a known letter must still be the same VMA object;
        a new letter is learnt), that each VMA's pgoff is linear (its page number) when ``linear``, and that
        validate_mm() holds.  Returns the ``*`` range as addresses."""
        runs, star = parse(picture)
        mm = self.mm
        assert mm.map_count == len(runs), f"map_count {mm.map_count}, picture has {len(runs)}: {mm.vmas()}"
        for letter, (s, e) in runs.items():
            v = mm.tree.lookup(at(s))
            assert v is not None, f"no VMA at column {s} ({letter})"
            assert (v.vm_start, v.vm_end) == (at(s), at(e)), f"{letter}: {v} is not columns {s}..{e}"
            if letter in self.vmas:
                assert v is self.vmas[letter], f"{letter} at column {s} is another VMA: {v}"
            else:
                self.vmas[letter] = v
            if linear:
                assert v.vm_pgoff == pfn(s), f"{letter}: pgoff {v.vm_pgoff:#x}, want {pfn(s):#x}"
        mm.validate()
        return None if star is None else (at(star[0]), at(star[1]))

    # -- the merge entry points, on the picture's '*' range ---------------------------------------------
    def merge_new(self, picture: str, flags: int = RW, *, pgoff: int | None = None, file: File | None = None,
                  anon_vma: AnonVma | None = None, op: str = "mmap", linear: bool = True) -> VMA | None:
        """vma_merge_new_range() over the picture's new range (checked against the mm first), with the VMAs
        before and after it as prev and next; on success the new pages are accounted, as the caller does."""
        star = self.expect(picture, linear)
        assert star is not None
        start, end = star
        mm = self.mm
        vmg = VmaMerge(start, end, flags, file, pfn((start - BASE) // PAGE) if pgoff is None else pgoff,
                       prev=mm.tree.prev(start), next=mm.tree.next(end), anon_vma=anon_vma, op=op)
        merged = vma.vma_merge_new_range(mm, vmg)
        if merged is not None:
            mm.vm_stat_account(flags, (end - start) // PAGE)
        mm.validate()
        return merged

    def merge_existing(self, picture: str, flags: int | None = None, linear: bool = True) -> VMA | None:
        """vma_merge_existing_range() over the picture's range of one existing VMA (the middle), to get
        ``flags`` (default: its own), with the VMA before it as prev."""
        star = self.expect(picture, linear)
        assert star is not None
        start, end = star
        mm = self.mm
        mid = mm.tree.lookup(start)
        assert mid is not None and mid.vm_end >= end
        vmg = VmaMerge(start, end, mid.vm_flags if flags is None else flags, mid.vm_file, mid.pgoff_at(start),
                       prev=mm.tree.prev(mid), middle=mid, anon_vma=mid.anon_vma, anon_name=mid.anon_name, src=mid,
                       op="mprotect")
        merged = vma.vma_merge_existing_range(mm, vmg)
        mm.validate()
        return merged

    def modify(self, picture: str, flags: int) -> VMA | int:
        """vma_modify() (vma_modify_flags()) of the picture's range of one existing VMA."""
        star = self.expect(picture)
        assert star is not None
        start, end = star
        mid = self.mm.tree.lookup(start)
        assert mid is not None
        got = vma.vma_modify(self.mm, mid, self.mm.tree.prev(mid), start, end, flags)
        self.mm.validate()
        return got


def mark(picture: str, s: int, e: int) -> str:
    """The picture with a ``*`` row under columns [s, e)."""
    ruler = next(ln for ln in picture.splitlines() if ln.strip())
    indent = len(ruler) - len(ruler.lstrip())
    return picture.rstrip() + "\n" + " " * (indent + s) + "*" * (e - s) + "\n"


def sticky(v: VMA) -> bool:
    return bool(v.vm_flags & STICKY)


# ---------------------------------------------------------------------------------------------------
# the picture helper itself
def test_picture_parser_rejects_malformed_pictures() -> None:
    runs, star = parse("""
        0123456789abc
        AA*B   DD  CC
    """)
    assert runs == {"A": (0, 2), "B": (3, 4), "D": (7, 9), "C": (11, 13)}
    assert star == (2, 3)
    for bad in ("0123\nA A", "0123\nA*B*", "0123\nAAAAA", "x123\nAA", "0123\nAa"):
        with pytest.raises(AssertionError):
            parse(bad)


# ---------------------------------------------------------------------------------------------------
# new ranges (vma_merge_new_range)
@pytest.mark.parametrize(("is_sticky", "a_sticky", "b_sticky", "c_sticky"), list(itertools.product((0, 1), repeat=4)))
def test_merge_new(is_sticky: int, a_sticky: int, b_sticky: int, c_sticky: int) -> None:
    """New ranges merging with nothing, prev, next and both, walking one mm from AA B CC to one VMA.
    ``is_sticky`` puts the sticky bits on the new ranges (and on D, mapped as one of them), the others on
    A, B or C: every merge keeps the sticky bits of all it joins, and adds none."""
    base = RW | (STICKY if is_sticky else 0)
    lay = Layout("""
        0123456789abc
        AA B       CC
    """, {"A": base | (STICKY if a_sticky else 0), "B": base | (STICKY if b_sticky else 0),
          "C": base | (STICKY if c_sticky else 0)})
    mm = lay.mm

    # No merge: neither neighbour is adjacent; the caller maps D instead.
    assert lay.merge_new("""
        0123456789abc
        AA B   **  CC
    """, base) is None
    lay.link("D", 7, 9, base, pfn(7))
    assert mm.map_count == 4

    # Both sides: A (with a ->close, which does not matter, A is not removed) grows over B, taking B's
    # anon_vma.
    lay["A"].vm_ops = CLOSE_OPS
    av = lay.anon("B")
    got = lay.merge_new("""
        0123456789abc
        AA*B   DD  CC
    """, base)
    assert got is lay["A"]
    assert (got.vm_start, got.vm_end, got.vm_pgoff) == (at(0), at(4), pfn(0))
    assert got.anon_vma is av
    assert mm.map_count == 3
    assert sticky(got) == bool(is_sticky or a_sticky or b_sticky)
    a_is_sticky = sticky(got)

    # Prev: A grows.
    got = lay.merge_new("""
        0123456789abc
        AAAA*  DD  CC
    """, base)
    assert got is lay["A"]
    assert (got.vm_start, got.vm_end, got.vm_pgoff) == (at(0), at(5), pfn(0))
    assert got.anon_vma is av
    assert mm.map_count == 3
    assert sticky(got) == a_is_sticky

    # Next: D grows down (its ->close does not matter, D is not removed) and takes the range's pgoff.
    lay["D"].anon_vma, lay["D"].avc_len = av, 1
    lay["D"].vm_ops = CLOSE_OPS
    got = lay.merge_new("""
        0123456789abc
        AAAAA *DD  CC
    """, base)
    assert got is lay["D"]
    assert (got.vm_start, got.vm_end, got.vm_pgoff) == (at(6), at(9), pfn(6))
    assert got.anon_vma is av
    assert mm.map_count == 3
    assert sticky(got) == bool(is_sticky)

    # Both sides again, now that D has no ->close: A absorbs D.
    lay["D"].vm_ops = None
    got = lay.merge_new("""
        0123456789abc
        AAAAA*DDD  CC
    """, base)
    assert got is lay["A"]
    assert (got.vm_start, got.vm_end, got.vm_pgoff) == (at(0), at(9), pfn(0))
    assert got.anon_vma is av
    assert mm.map_count == 2
    assert sticky(got) == a_is_sticky

    # Next: C grows down.
    lay["C"].anon_vma, lay["C"].avc_len = av, 1
    got = lay.merge_new("""
        0123456789abc
        AAAAAAAAA *CC
    """, base)
    assert got is lay["C"]
    assert (got.vm_start, got.vm_end, got.vm_pgoff) == (at(10), at(13), pfn(10))
    assert got.anon_vma is av
    assert mm.map_count == 2
    assert sticky(got) == bool(is_sticky or c_sticky)

    # Both sides: one VMA left.
    got = lay.merge_new("""
        0123456789abc
        AAAAAAAAA*CCC
    """, base)
    assert got is lay["A"]
    assert (got.vm_start, got.vm_end, got.vm_pgoff) == (at(0), at(13), pfn(0))
    assert got.anon_vma is av
    assert sticky(got) == bool(is_sticky or a_sticky or b_sticky or c_sticky)
    lay.expect("""
        0123456789abc
        AAAAAAAAAAAAA
    """)
    assert mm.map_count == 1


def test_merge_new_simple() -> None:
    """The smallest 3-way merge: prev absorbs the range and next, keeping prev's pgoff and flags."""
    lay = Layout("""
        0123
        L R
    """)
    got = lay.merge_new("""
        0123
        L*R
    """)
    assert got is lay["L"]
    assert (got.vm_start, got.vm_end, got.vm_pgoff, got.vm_flags) == (at(0), at(3), pfn(0), RW)
    lay.expect("""
        0123
        LLL
    """)


NO_MERGE_CASES = {
    # name: (flags, pgoff, another file)
    "incompatible flags": (RO, 3, False),
    "pgoff gap": (RW, 4, False),
    "different file": (RW, 3, True),
}


@pytest.mark.parametrize("case", list(NO_MERGE_CASES))
def test_merge_new_none(case: str) -> None:
    """A new range between two VMAs of one file, with one thing different from them, merges with neither;
    the caller then maps a VMA of its own.  (The same range with nothing different merges with both: the
    positive control.)"""
    flags, pgoff, other = NO_MERGE_CASES[case]
    mm = MM()
    f = new_file(mm, "/tmp/f")
    picture = """
        0123456
        PPP  NN
    """
    # A file mapping: pgoffs are file offsets, P at page 0, N at page 5.
    lay = Layout(picture, pgoff={"P": 0, "N": 5}, files={"P": f, "N": f}, mm=mm)
    file = new_file(mm, "/tmp/g") if other else f
    vmg = VmaMerge(at(3), at(5), flags, file, pgoff, prev=lay["P"], next=lay["N"])
    assert not vma.can_vma_merge_left(vmg)
    assert not vma.can_vma_merge_right(vmg)
    assert vma.vma_merge_new_range(mm, vmg) is None
    lay.expect("""
        0123456
        PPP**NN
    """, linear=False)
    assert (lay["P"].vm_pgoff, lay["N"].vm_pgoff) == (0, 5)
    lay.link("X", 3, 5, flags, pgoff, file)
    lay.expect("""
        0123456
        PPPXXNN
    """, linear=False)

    control = Layout(picture, pgoff={"P": 0, "N": 5}, files={"P": f, "N": f})
    got = control.merge_new("""
        0123456
        PPP**NN
    """, pgoff=3, file=f, linear=False)
    assert got is control["P"]
    assert (got.vm_start, got.vm_end, got.vm_pgoff) == (at(0), at(7), 0)
    assert control.mm.map_count == 1


def test_merge_new_pgoff_gap_on_one_side_merges_the_other() -> None:
    """The range's pgoff continues prev's but not next's: prev alone grows."""
    mm = MM()
    f = new_file(mm, "/tmp/f")
    lay = Layout("""
        0123456
        PPP  NN
    """, pgoff={"P": 0, "N": 9}, files={"P": f, "N": f}, mm=mm)
    got = lay.merge_new("""
        0123456
        PPP**NN
    """, pgoff=3, file=f, linear=False)
    assert got is lay["P"]
    assert (got.vm_start, got.vm_end, got.vm_pgoff) == (at(0), at(5), 0)
    assert lay["N"].vm_pgoff == 9
    assert mm.map_count == 2


def test_merge_new_expand_only() -> None:
    """Extending a VMA upwards into free space (vma_merge_new_range() with prev only, as an mremap
    expansion does): prev grows from its own pgoff; the VMA before it is left alone."""
    lay = Layout("""
        0123456789
        AA VV
    """)
    got = lay.merge_new("""
        0123456789
        AA VV****
    """, op="mremap")
    assert got is lay["V"]
    assert (got.vm_start, got.vm_end, got.vm_pgoff) == (at(3), at(9), pfn(3))
    lay.expect("""
        0123456789
        AA VVVVVV
    """)


def test_merge_extend() -> None:
    """vma_merge_extend(): grow a VMA into the gap up to the next VMA; the two become one."""
    lay = Layout("""
        01234
        A  B
    """)
    got = lay.merge_new("""
        01234
        A**B
    """, op="mremap")
    assert got is lay["A"]
    assert (got.vm_start, got.vm_end, got.vm_pgoff) == (at(0), at(4), pfn(0))
    assert lay.mm.map_count == 1


# ---------------------------------------------------------------------------------------------------
# VM_SPECIAL
def test_special_flags_are_vm_special() -> None:
    """The four flags below are all of VM_SPECIAL: a new special flag needs a case here."""
    union = 0
    for flag in SPECIAL_FLAGS.values():
        union |= flag
    assert union == C.VM_SPECIAL


@pytest.mark.parametrize("name", list(SPECIAL_FLAGS))
def test_special_flags_prevent_merge(name: str) -> None:
    """A VM_SPECIAL VMA merges with nothing, new range or existing, even with an identical neighbour."""
    flags = RW | SPECIAL_FLAGS[name]
    lay = Layout("""
        01234
        AAA
    """, flags)
    assert lay.merge_new("""
        01234
        AAA*
    """, flags) is None
    assert lay["A"].vm_end == at(3)

    lay.link("B", 3, 4, flags, pfn(3))
    assert lay.merge_existing("""
        01234
        AAAB
           *
    """) is None
    lay.expect("""
        01234
        AAAB
    """)

    # The control: the same without the special flag merges both ways.
    plain = Layout("""
        01234
        AAA
    """)
    assert plain.merge_new("""
        01234
        AAA*
    """) is plain["A"]
    plain.link("B", 4, 5, RW, pfn(4))
    assert plain.merge_existing("""
        01234
        AAAAB
            *
    """) is plain["A"]
    plain.expect("""
        01234
        AAAAA
    """)


# ---------------------------------------------------------------------------------------------------
# vm_ops->close
def test_merge_new_next_with_close_degrades_to_prev() -> None:
    """A 3-way merge of a new range would remove next, which has a ->close: prev alone grows."""
    lay = Layout("""
        0123456789
        PPP  NNNN
    """)
    lay["N"].vm_ops = CLOSE_OPS
    got = lay.merge_new("""
        0123456789
        PPP**NNNN
    """)
    assert got is lay["P"]
    assert (got.vm_start, got.vm_end, got.vm_pgoff) == (at(0), at(5), pfn(0))
    lay.expect("""
        0123456789
        PPPPPNNNN
    """)
    assert lay.mm.map_count == 2


def test_merge_new_with_close_on_both_neighbours() -> None:
    """Both neighbours have a ->close: the new range may still extend prev (nothing is removed); next is
    left intact."""
    lay = Layout("""
        01234567
        PP   NN
    """)
    lay["P"].vm_ops = lay["N"].vm_ops = CLOSE_OPS
    got = lay.merge_new("""
        01234567
        PP***NN
    """)
    assert got is lay["P"]
    assert (got.vm_start, got.vm_end, got.vm_pgoff) == (at(0), at(5), pfn(0))
    assert got.vm_ops is CLOSE_OPS
    assert lay.mm.map_count == 2


def test_merge_new_into_next_with_close() -> None:
    """Growing next down over a new range removes nothing, so next's ->close does not matter."""
    lay = Layout("""
        01234
          NN
    """)
    lay["N"].vm_ops = CLOSE_OPS
    got = lay.merge_new("""
        01234
         *NN
    """)
    assert got is lay["N"]
    assert (got.vm_start, got.vm_end, got.vm_pgoff) == (at(1), at(4), pfn(1))


EXISTING_CLOSE_REFUSED = {
    # The whole middle would be removed: a middle with ->close refuses every merge.
    "into prev": """
        0123456789
        PPPVV
           **
    """,
    "into next": """
        0123456789
           VVNNNN
           **
    """,
    "into both": """
        0123456789
        PPPVVNNNN
           **
    """,
}


@pytest.mark.parametrize("case", list(EXISTING_CLOSE_REFUSED))
def test_merge_existing_middle_with_close_refused(case: str) -> None:
    """Changing all of a VMA with a ->close that would otherwise merge: no merge, nothing changes;
    vma_modify() then changes it in place."""
    picture = EXISTING_CLOSE_REFUSED[case]
    lay = Layout(picture)
    lay["V"].vm_ops = CLOSE_OPS
    count = lay.mm.map_count
    assert lay.merge_existing(picture) is None
    lay.expect(picture)
    got = lay.modify(picture, RW)
    assert got is lay["V"]
    assert lay.mm.map_count == count
    lay.expect(picture)


def test_merge_existing_next_with_close_degrades_to_prev() -> None:
    """Changing all of V would join P, V and N, but N has a ->close: V merges into P only."""
    lay = Layout("""
        0123456789
        PPPVVNNNN
    """)
    lay["N"].vm_ops = CLOSE_OPS
    got = lay.merge_existing("""
        0123456789
        PPPVVNNNN
           **
    """)
    assert got is lay["P"]
    assert (got.vm_start, got.vm_end, got.vm_pgoff) == (at(0), at(5), pfn(0))
    lay.expect("""
        0123456789
        PPPPPNNNN
    """)
    assert lay.mm.map_count == 2


# ---------------------------------------------------------------------------------------------------
# existing ranges (vma_merge_existing_range)
@pytest.mark.parametrize(("p_sticky", "m_sticky", "n_sticky"), list(itertools.product((0, 1), repeat=3)))
def test_merge_existing(p_sticky: int, m_sticky: int, n_sticky: int) -> None:
    """An existing range merging right (part and all of V), left (part and all) and both ways; the
    middle's anon_vma moves to the VMA it merges into, sticky bits of all joined VMAs are kept, and ranges
    inside V merge with nothing.  ->close on a VMA that is not removed changes nothing."""
    pf = RW | (STICKY if p_sticky else 0)
    vf = RW | (STICKY if m_sticky else 0)
    nf = RW | (STICKY if n_sticky else 0)

    # Right, part of V: N grows down over V's top.
    lay = Layout("""
        0123456789
          VVVVNNN
    """, {"V": vf, "N": nf})
    lay["V"].vm_ops = lay["N"].vm_ops = CLOSE_OPS
    av = lay.anon("V")
    got = lay.merge_existing("""
        0123456789
          VVVVNNN
           ***
    """)
    v, n = lay["V"], lay["N"]
    assert got is n
    assert (n.vm_start, n.vm_end, n.vm_pgoff, n.anon_vma) == (at(3), at(9), pfn(3), av)
    assert (v.vm_start, v.vm_end, v.vm_pgoff) == (at(2), at(3), pfn(2))
    assert lay.mm.map_count == 2
    assert sticky(n) == bool(m_sticky or n_sticky)
    assert sticky(v) == bool(m_sticky)

    # Right, all of V: N absorbs V.
    lay = Layout("""
        0123456789
          VVVVNNN
    """, {"V": vf, "N": nf})
    lay["N"].vm_ops = CLOSE_OPS
    av = lay.anon("V")
    got = lay.merge_existing("""
        0123456789
          VVVVNNN
          ****
    """)
    n = lay["N"]
    assert got is n
    assert (n.vm_start, n.vm_end, n.vm_pgoff, n.anon_vma) == (at(2), at(9), pfn(2), av)
    assert lay.mm.map_count == 1
    assert sticky(n) == bool(m_sticky or n_sticky)

    # Left, part of V: P grows over V's bottom; V keeps the rest with the pgoff there.
    lay = Layout("""
        0123456789
        PPPVVVV
    """, {"P": pf, "V": vf})
    lay["P"].vm_ops = lay["V"].vm_ops = CLOSE_OPS
    av = lay.anon("V")
    got = lay.merge_existing("""
        0123456789
        PPPVVVV
           ***
    """)
    p, v = lay["P"], lay["V"]
    assert got is p
    assert (p.vm_start, p.vm_end, p.vm_pgoff, p.anon_vma) == (at(0), at(6), pfn(0), av)
    assert (v.vm_start, v.vm_end, v.vm_pgoff, v.anon_vma) == (at(6), at(7), pfn(6), av)
    assert lay.mm.map_count == 2
    assert sticky(p) == bool(p_sticky or m_sticky)

    # Left, all of V: P absorbs V.
    lay = Layout("""
        0123456789
        PPPVVVV
    """, {"P": pf, "V": vf})
    lay["P"].vm_ops = CLOSE_OPS
    av = lay.anon("V")
    got = lay.merge_existing("""
        0123456789
        PPPVVVV
           ****
    """)
    p = lay["P"]
    assert got is p
    assert (p.vm_start, p.vm_end, p.vm_pgoff, p.anon_vma) == (at(0), at(7), pfn(0), av)
    assert lay.mm.map_count == 1
    assert sticky(p) == bool(p_sticky or m_sticky)

    # Both: P absorbs V and N.
    lay = Layout("""
        0123456789
        PPPVVVVNN
    """, {"P": pf, "V": vf, "N": nf})
    lay["P"].vm_ops = CLOSE_OPS
    av = lay.anon("V")
    got = lay.merge_existing("""
        0123456789
        PPPVVVVNN
           ****
    """)
    p = lay["P"]
    assert got is p
    assert (p.vm_start, p.vm_end, p.vm_pgoff, p.anon_vma) == (at(0), at(9), pfn(0), av)
    assert lay.mm.map_count == 1
    assert sticky(p) == bool(p_sticky or m_sticky or n_sticky)
    lay.expect("""
        0123456789
        PPPPPPPPP
    """)

    # Ranges that touch neither end of V merge with nothing:
    #
    #     0123456789a
    #     PPPVVVVVNNN
    #         *
    #          *
    #           *
    #         ***
    #         **
    before = """
        0123456789a
        PPPVVVVVNNN
    """
    lay = Layout(before, {"P": pf, "V": vf, "N": nf})
    for s, e in ((4, 5), (5, 6), (6, 7), (4, 7), (4, 6)):
        assert lay.merge_existing(mark(before, s, e)) is None, (s, e)
        lay.expect(before)


MODIFY_CASES = {
    # name: (before, after, the letter vma_modify() returns)
    "all into prev": ("""
        0123456789
        PPPVV
           **
    """, """
        0123456789
        PPPPP
    """, "P"),
    "all into next": ("""
        0123456789
           VVNNNN
           **
    """, """
        0123456789
           NNNNNN
    """, "N"),
    "all, both sides": ("""
        0123456789
        PPPVVNNNN
           **
    """, """
        0123456789
        PPPPPPPPP
    """, "P"),
    "left part into prev": ("""
        0123456789
        PPPVVVV
           **
    """, """
        0123456789
        PPPPPVV
    """, "P"),
    "right part into next": ("""
        0123456789
          VVVVNNN
            **
    """, """
        0123456789
          VVNNNNN
    """, "N"),
    "middle part: split into three": ("""
        0123456789a
        PPPVVVVVNNN
            **
    """, """
        0123456789a
        PPPLVVRRNNN
    """, "V"),
}


@pytest.mark.parametrize("case", list(MODIFY_CASES))
def test_vma_modify_positions(case: str) -> None:
    """vma_modify() giving part or all of V the flags of its read-only neighbours: it merges where the
    range touches a compatible neighbour, else splits V so that V itself is the changed range."""
    before, after, want = MODIFY_CASES[case]
    lay = Layout(before, {"P": RO, "V": RW, "N": RO})
    got = lay.modify(before, RO)
    assert isinstance(got, VMA)
    lay.expect(after)  # V, where it is still drawn, is still the same VMA (the part left unchanged)
    assert got is lay[want]
    assert got.vm_flags == RO
    for letter in parse(after)[0]:
        assert lay[letter].vm_flags == (RO if letter in ("P", "N", want) else RW), letter


def test_vma_modify_split_keeps_the_vma_as_the_middle() -> None:
    """Changing the middle page of a lone VMA: three VMAs, the original one in the middle, pgoffs
    following the addresses; only the middle has the new flags."""
    lay = Layout("""
        0123
        VVV
    """)
    got = lay.modify("""
        0123
        VVV
         *
    """, RO)
    assert got is lay["V"]
    assert (got.vm_start, got.vm_end, got.vm_pgoff, got.vm_flags) == (at(1), at(2), pfn(1), RO)
    lay.expect("""
        0123
        LVR
    """)
    assert (lay["L"].vm_flags, lay["R"].vm_flags) == (RW, RW)
    assert lay.mm.map_count == 3


# ---------------------------------------------------------------------------------------------------
# anon_vma compatibility
def test_anon_vma_non_mergeable_existing() -> None:
    """prev and next have different anon_vmas and the middle none: each side alone could merge, both
    together cannot, so V merges into prev only."""
    lay = Layout("""
        0123456789
        PPPVVVVNN
    """)
    a1 = lay.anon("P")
    a2 = lay.anon("N")
    got = lay.merge_existing("""
        0123456789
        PPPVVVVNN
           ****
    """)
    assert got is lay["P"]
    assert (got.vm_start, got.vm_end, got.vm_pgoff, got.anon_vma) == (at(0), at(7), pfn(0), a1)
    assert (lay["N"].vm_start, lay["N"].vm_end, lay["N"].anon_vma) == (at(7), at(9), a2)
    assert lay.mm.map_count == 2


def test_anon_vma_non_mergeable_new() -> None:
    """The same for a new range in the gap: prev grows, next stays."""
    lay = Layout("""
        0123456789
        PPP    NN
    """)
    a1 = lay.anon("P")
    a2 = lay.anon("N")
    got = lay.merge_new("""
        0123456789
        PPP****NN
    """)
    assert got is lay["P"]
    assert (got.vm_start, got.vm_end, got.vm_pgoff, got.anon_vma) == (at(0), at(7), pfn(0), a1)
    assert (lay["N"].vm_start, lay["N"].anon_vma) == (at(7), a2)
    lay.expect("""
        0123456789
        PPPPPPPNN
    """)


def test_anon_vma_from_next_when_new_range_joins_both() -> None:
    """A new range joining an anon_vma-less prev to next: prev takes next's anon_vma (the kernel's
    vma_expand() duplicating next's anon_vma into the target)."""
    lay = Layout("""
        012345678
        PPP  NNN
    """)
    av = lay.anon("N")
    got = lay.merge_new("""
        012345678
        PPP**NNN
    """)
    assert got is lay["P"]
    assert (got.vm_start, got.vm_end, got.anon_vma, got.avc_len) == (at(0), at(8), av, 1)


def test_anon_vma_kept_by_the_vma_merged_into() -> None:
    """A new range without an anon_vma merging into a VMA with one: the VMA keeps its anon_vma."""
    lay = Layout("""
        012345
        PP  NN
    """)
    a1 = lay.anon("P")
    a2 = lay.anon("N")
    assert lay.merge_new("""
        012345
        PP* NN
    """) is lay["P"]
    assert lay.merge_new("""
        012345
        PPP*NN
    """) is lay["P"]  # 3-way refused: a1 is not a2
    assert (lay["P"].vm_end, lay["P"].anon_vma, lay["N"].anon_vma) == (at(4), a1, a2)


DUP_CASES = {
    # name: (picture, the letter with the anon_vma, the letter merged into, its columns after)
    "next's, all of V into both": ("""
        012345678
        PPPVVNNN
           **
    """, "N", "P", (0, 8)),
    "V's, all of V into both": ("""
        012345678
        PPPVVNNN
           **
    """, "V", "P", (0, 8)),
    "V's, part of V into prev": ("""
        012345678
        PPPVVVVV
           **
    """, "V", "P", (0, 5)),
    "V's, part of V into next": ("""
        012345678
        VVVVVNNN
           **
    """, "V", "N", (3, 8)),
}


@pytest.mark.parametrize("case", list(DUP_CASES))
def test_dup_anon_vma(case: str) -> None:
    """The VMA an existing range merges into takes the anon_vma of the VMAs it absorbs or grows over."""
    picture, owner, into, (s, e) = DUP_CASES[case]
    lay = Layout(picture)
    av = lay.anon(owner)
    got = lay.merge_existing(picture)
    assert got is lay[into]
    assert (got.vm_start, got.vm_end, got.vm_pgoff, got.anon_vma) == (at(s), at(e), pfn(s), av)


def test_uncowed_parents_new_range() -> None:
    """prev's anon_vma was inherited over fork (a chain longer than one): a new range without an
    anon_vma does not merge into it.  With a chain of one it does."""
    lay = Layout("""
        0123
        PP
    """)
    lay.anon("P", avc_len=2)
    assert lay.merge_new("""
        0123
        PP*
    """) is None
    assert lay["P"].vm_end == at(2)
    lay["P"].avc_len = 1
    assert lay.merge_new("""
        0123
        PP*
    """) is lay["P"]
    assert lay["P"].vm_end == at(3)


def test_uncowed_parents_existing_range() -> None:
    """V's anon_vma was inherited over fork: V does not merge into an anon_vma-less prev, nor into a prev
    with another anon_vma; it does into a prev sharing its anon_vma (two pieces of one inherited VMA)."""
    picture = """
        012345
        PPPVV
           **
    """
    lay = Layout(picture)
    lay.anon("V", avc_len=2)
    assert lay.merge_existing(picture) is None
    lay.expect(picture)

    lay = Layout(picture)
    lay.anon("P")
    lay.anon("V", avc_len=2)
    assert lay.merge_existing(picture) is None

    lay = Layout(picture)
    av = lay.anon("P", "V", avc_len=2)
    got = lay.merge_existing(picture)
    assert got is lay["P"]
    assert (got.vm_start, got.vm_end, got.anon_vma) == (at(0), at(5), av)

    lay = Layout(picture)
    av = lay.anon("V")  # the control: a chain of one merges into the anon_vma-less prev
    got = lay.merge_existing(picture)
    assert got is lay["P"]
    assert (got.vm_end, got.anon_vma) == (at(5), av)


# ---------------------------------------------------------------------------------------------------
# failures: the injected merge failure and max_map_count
def test_vmi_prealloc_fail_new_range() -> None:
    """The mmap path's merge fails to preallocate (fault point ``vma_merge``): no merge, and nothing
    changed, not even the anon_vma prev would have taken from next.  The next attempt merges."""
    lay = Layout("""
        012345
        PPP NN
    """)
    av = lay.anon("N")
    lay.mm.fail_plan["vma_merge"] = (1, -errno.ENOMEM)
    picture = """
        012345
        PPP*NN
    """
    assert lay.merge_new(picture) is None
    assert lay.mm.fail_hits["vma_merge"] == 1
    lay.expect("""
        012345
        PPP NN
    """)
    assert (lay["P"].anon_vma, lay["N"].anon_vma) == (None, av)
    got = lay.merge_new(picture)
    assert got is lay["P"]
    assert (got.vm_start, got.vm_end, got.anon_vma) == (at(0), at(6), av)


def test_vma_merge_fault_point_not_hit_without_a_merge() -> None:
    """The fault point is the merge's preallocation: a range that merges with nothing never reaches it."""
    lay = Layout("""
        012345
        PP   N
    """)
    lay.mm.fail_plan["vma_merge"] = (1, -errno.ENOMEM)
    assert lay.merge_new("""
        012345
        PP * N
    """) is None
    assert lay.mm.fail_hits.get("vma_merge", 0) == 0


def test_split_vma_at_max_map_count() -> None:
    """split_vma() at max_map_count fails with ENOMEM and changes nothing; one below, it splits."""
    lay = Layout("""
        01234
        AAAA
    """)
    mm = lay.mm
    mm.max_map_count = 1
    assert vma.split_vma(mm, lay["A"], at(2), True) == -errno.ENOMEM
    lay.expect("""
        01234
        AAAA
    """)
    mm.max_map_count = 2
    assert vma.split_vma(mm, lay["A"], at(2), True) == 0
    lay.expect("""
        01234
        BBAA
    """)
    assert (lay["B"].vm_pgoff, lay["A"].vm_pgoff) == (pfn(0), pfn(2))


def test_vma_modify_at_max_map_count() -> None:
    """vma_modify() of a middle range needs two splits: at the limit it fails at once; one below it, the
    first split stays and the second fails."""
    picture = """
        01234
        VVVV
         **
    """
    lay = Layout(picture)
    lay.mm.max_map_count = 1
    assert lay.modify(picture, RO) == -errno.ENOMEM
    lay.expect("""
        01234
        VVVV
    """)
    assert lay["V"].vm_flags == RW
    lay.mm.max_map_count = 2
    assert lay.modify(picture, RO) == -errno.ENOMEM
    lay.expect("""
        01234
        LVVV
    """)
    assert lay["V"].vm_flags == RW


# ---------------------------------------------------------------------------------------------------
# copy_vma
def copy(lay: Layout, letter: str, col: int, pgoff: int) -> VMA:
    """copy_vma() of the lettered VMA to column ``col``, with the new pages accounted (as mremap does
    before it unmaps the source)."""
    v = lay[letter]
    got = vma.copy_vma(lay.mm, v, at(col), v.vm_end - v.vm_start, pgoff)
    lay.mm.vm_stat_account(v.vm_flags, v.pages)
    lay.mm.validate()
    return got


def test_copy_vma_backwards_no_merge() -> None:
    """Copying an anonymous VMA that never had an anon_vma below itself: a new VMA, whose pgoff follows
    its new address."""
    lay = Layout("""
        012345
           VV
    """)
    got = copy(lay, "V", 0, pfn(0))
    assert got is not lay["V"]
    assert (got.vm_start, got.vm_end, got.vm_pgoff) == (at(0), at(2), pfn(0))
    lay.expect("""
        012345
        CC VV
    """)


def test_copy_vma_merges_into_next() -> None:
    """Copying a VMA to just below a compatible one: the copy merges into it."""
    lay = Layout("""
        012345678
        VV    NN
    """)
    got = copy(lay, "V", 4, pfn(4))
    assert got is lay["N"]
    assert (got.vm_start, got.vm_end, got.vm_pgoff) == (at(4), at(8), pfn(4))
    lay.expect("""
        012345678
        VV  NNNN
    """)


def test_copy_vma_with_anon_vma_keeps_pgoff() -> None:
    """A VMA with an anon_vma keeps its pgoff when copied: it merges into a VMA that shares its anon_vma
    and continues that pgoff (a piece moved away earlier), and not into one with another anon_vma."""
    lay = Layout("""
        01234567
        VV  NN
    """, pgoff={"N": pfn(2)})
    av = lay.anon("V", "N")
    got = copy(lay, "V", 2, pfn(0))
    assert got is lay["N"]
    assert (got.vm_start, got.vm_end, got.vm_pgoff, got.anon_vma) == (at(2), at(6), pfn(0), av)
    lay.expect("""
        01234567
        VVNNNN
    """, linear=False)

    lay = Layout("""
        01234567
        VV  NN
    """, pgoff={"N": pfn(2)})
    av = lay.anon("V")
    lay.anon("N")
    got = copy(lay, "V", 2, pfn(0))
    assert got is not lay["V"] and got is not lay["N"]
    assert (got.vm_start, got.vm_end, got.vm_pgoff, got.anon_vma) == (at(2), at(4), pfn(0), av)
    lay.expect("""
        01234567
        VVCCNN
    """, linear=False)


# ---------------------------------------------------------------------------------------------------
# through mmap
def test_mmap_region_basic() -> None:
    """Four anonymous MAP_FIXED mappings, each next to an earlier one, end as two VMAs with linear
    pgoffs."""
    lay = Layout("""
        0123456789abcdef
    """)
    rw = C.PROT_READ | C.PROT_WRITE
    fixed = C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_FIXED
    for col in (8, 3, 11, 0):
        assert lay.mm.mmap(at(col), 3 * PAGE, rw, fixed) == at(col)
    lay.expect("""
        0123456789abcdef
        AAAAAA  BBBBBB
    """)
    assert lay.mm.map_count == 2
