"""VMAs, anon_vmas and the ordered VMA tree.

Models ``struct vm_area_struct`` (the fields the VMA layer reads), ``struct anon_vma`` (identity and the
length of a VMA's anon_vma chain, which is what merging looks at) and the mm's maple tree, here a sorted
map keyed by ``vm_start`` with O(log n) lookup, insert, erase and range iteration.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from sortedcontainers import SortedDict

from .constants import PAGE_SHIFT, VM_GROWSDOWN, STACK_GUARD_GAP

if TYPE_CHECKING:
    from .files import File, VmOperations


class AnonVma:
    """Models ``struct anon_vma``: only its identity matters to the VMA layer (two VMAs with different
    anon_vmas never merge)."""

    __slots__ = ("id",)

    def __init__(self, ident: int) -> None:
        self.id = ident

    def __repr__(self) -> str:
        return f"AnonVma#{self.id}"


class VMA:
    """Models ``struct vm_area_struct``.

    ``avc_len`` is the length of the VMA's ``anon_vma_chain``: 1 for an anon_vma created or reused in
    this mm, more for a VMA whose anon_vma was inherited over fork ("uncowed parents"), which changes the
    merge rules (mm/vma.c: ``vma_had_uncowed_parents()``).
    """

    __slots__ = ("vm_start", "vm_end", "vm_flags", "vm_pgoff", "vm_file", "anon_vma", "avc_len", "vm_ops",
                 "vm_private_data", "anon_name", "special_name", "page_prot")

    def __init__(self, vm_start: int, vm_end: int, vm_flags: int, vm_pgoff: int,
                 vm_file: File | None = None, vm_ops: VmOperations | None = None) -> None:
        self.vm_start = vm_start
        self.vm_end = vm_end
        self.vm_flags = vm_flags
        self.vm_pgoff = vm_pgoff
        self.vm_file = vm_file
        self.anon_vma: AnonVma | None = None
        self.avc_len = 0
        self.vm_ops = vm_ops
        self.vm_private_data: Any = None
        self.anon_name: str | None = None
        self.special_name: str | None = None  # names from vm_ops->name / arch_vma_name ([vdso], ...)
        self.page_prot: int = 0

    # -- geometry -------------------------------------------------------------------------------------
    @property
    def pages(self) -> int:
        return (self.vm_end - self.vm_start) >> PAGE_SHIFT

    def pgoff_at(self, addr: int) -> int:
        """linear_page_index(): the file page offset mapped at ``addr``."""
        return self.vm_pgoff + ((addr - self.vm_start) >> PAGE_SHIFT)

    def start_gap(self) -> int:
        """vm_start_gap(): the start of the VMA including the stack guard gap below a GROWSDOWN VMA."""
        if self.vm_flags & VM_GROWSDOWN:
            gap = self.vm_start - STACK_GUARD_GAP
            return gap if gap < self.vm_start else 0
        return self.vm_start

    def is_anonymous(self) -> bool:
        """vma_is_anonymous(): no vm_ops."""
        return self.vm_ops is None

    def copy(self) -> VMA:
        """vm_area_dup(): a copy sharing the file, ops, anon_vma and private data."""
        n = VMA(self.vm_start, self.vm_end, self.vm_flags, self.vm_pgoff, self.vm_file, self.vm_ops)
        n.anon_vma = self.anon_vma
        n.avc_len = self.avc_len
        n.vm_private_data = self.vm_private_data
        n.anon_name = self.anon_name
        n.special_name = self.special_name
        n.page_prot = self.page_prot
        return n

    def __repr__(self) -> str:
        from .constants import vmflags_str
        f = f" file={self.vm_file.path}" if self.vm_file else ""
        a = f" {self.anon_vma}" if self.anon_vma else ""
        return (f"VMA({self.vm_start:#x}-{self.vm_end:#x} pgoff={self.vm_pgoff:#x} "
                f"[{vmflags_str(self.vm_flags)}]{f}{a})")


class VmaTree:
    """The mm's VMA tree (models the maple tree ``mm->mm_mt``): VMAs ordered by ``vm_start``.

    All lookups are O(log n) (a ``SortedDict`` keyed by ``vm_start``).  The tree does not check overlap on
    insert; :meth:`vmalab.mm.MM.validate` does.
    """

    __slots__ = ("_d", "_keys")

    def __init__(self) -> None:
        self._d: SortedDict = SortedDict()
        self._keys = self._d.keys()

    def __len__(self) -> int:
        return len(self._d)

    def __iter__(self) -> Iterator[VMA]:
        return iter(self._d.values())

    def insert(self, vma: VMA) -> None:
        self._d[vma.vm_start] = vma

    def erase(self, vma: VMA) -> None:
        del self._d[vma.vm_start]

    def rekey(self, vma: VMA, old_start: int) -> None:
        """Call after changing ``vma.vm_start`` of a VMA that is in the tree."""
        if old_start != vma.vm_start:
            del self._d[old_start]
            self._d[vma.vm_start] = vma

    def find(self, addr: int) -> VMA | None:
        """find_vma(): the first VMA with ``vm_end > addr``."""
        i = self._d.bisect_right(addr)
        if i:
            v: VMA = self._d[self._keys[i - 1]]
            if v.vm_end > addr:
                return v
        if i < len(self._keys):
            return self._d[self._keys[i]]  # type: ignore[no-any-return]
        return None

    def lookup(self, addr: int) -> VMA | None:
        """vma_lookup(): the VMA containing ``addr``."""
        i = self._d.bisect_right(addr)
        if i:
            v: VMA = self._d[self._keys[i - 1]]
            if v.vm_end > addr:
                return v
        return None

    def find_intersection(self, start: int, end: int) -> VMA | None:
        """find_vma_intersection(): the first VMA intersecting ``[start, end)``."""
        v = self.find(start)
        if v is not None and v.vm_start < end:
            return v
        return None

    def prev(self, vma_or_addr: VMA | int) -> VMA | None:
        """The VMA ending at or before the given VMA's start (or address)."""
        addr = vma_or_addr.vm_start if isinstance(vma_or_addr, VMA) else vma_or_addr
        i = self._d.bisect_left(addr)
        if i:
            v: VMA = self._d[self._keys[i - 1]]
            if v.vm_end <= addr:
                return v
            # addr inside a VMA: the previous one is before it
            if i >= 2:
                return self._d[self._keys[i - 2]]  # type: ignore[no-any-return]
        return None

    def next(self, vma_or_addr: VMA | int) -> VMA | None:
        """The first VMA starting at or after the given VMA's end (or address)."""
        addr = vma_or_addr.vm_end if isinstance(vma_or_addr, VMA) else vma_or_addr
        i = self._d.bisect_left(addr)
        if i < len(self._keys):
            return self._d[self._keys[i]]  # type: ignore[no-any-return]
        return None

    def range(self, start: int, end: int) -> list[VMA]:
        """All VMAs intersecting ``[start, end)``, in order."""
        out: list[VMA] = []
        i = self._d.bisect_right(start)
        if i:
            v: VMA = self._d[self._keys[i - 1]]
            if v.vm_end > start:
                out.append(v)
        keys = self._keys
        d = self._d
        n = len(keys)
        while i < n:
            k = keys[i]
            if k >= end:
                break
            out.append(d[k])
            i += 1
        return out

    def iter_from_top(self, below: int) -> Iterator[VMA]:
        """VMAs with ``vm_start < below``, highest first (for the top-down gap search)."""
        i = self._d.bisect_left(below)
        keys = self._keys
        d = self._d
        while i > 0:
            i -= 1
            yield d[keys[i]]

    def iter_from(self, addr: int) -> Iterator[VMA]:
        """VMAs with ``vm_end > addr``, lowest first."""
        v = self.find(addr)
        if v is None:
            return
        i = self._d.bisect_left(v.vm_start)
        keys = self._keys
        d = self._d
        n = len(keys)
        while i < n:
            yield d[keys[i]]
            i += 1

    def first(self) -> VMA | None:
        return self._d.peekitem(0)[1] if self._d else None  # type: ignore[no-any-return]

    def last(self) -> VMA | None:
        return self._d.peekitem(-1)[1] if self._d else None  # type: ignore[no-any-return]
