"""References a driver takes for its mappings, tracked per MM, and the check that every path drops them.

Models the kernel objects a driver's mmap callbacks typically pin:

* :class:`Kref` — a refcounted driver object (``struct kref`` / ``refcount_t`` with kref_get()/kref_put();
  afs's ``afs_add_open_mmap()`` / ``afs_drop_open_mmap()`` count, vme_user's image users).  A put below
  zero is an underflow (``refcount_t`` saturates and WARNs: "refcount_t: underflow; use-after-free").
* :class:`PfnAllocator` — pages a driver allocates to back a mapping (alloc_pages()/__free_pages() of a
  ring buffer); a double free is reported (the kernel would corrupt the free lists).
* files — ``struct file`` references (``File.refcount``): the MM tracks every file it creates; with no
  mapping left a file holds exactly its descriptor's reference (or none).

Each is registered with the MM's :class:`ResourceTracker` (``mm.resources``) when the driver creates it,
so the state stays in the MM.  :meth:`ResourceTracker.check` lists what is still held when nothing should
be (no VMA of the driver left): the explorer (:mod:`vmalab.explore`) runs it after every run.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .files import File
    from .mm_types import MmStruct


@dataclass
class ResourceProblem:
    """One leak or misuse: ``kind`` is ``ref``, ``pfn`` or ``file``."""

    kind: str
    what: str


class Kref:
    """A refcounted driver object (``struct kref``).  ``base`` is the count at rest (the driver's own
    reference, if any); every reference taken for a mapping must be dropped again."""

    def __init__(self, mm: MmStruct, name: str, base: int = 0) -> None:
        self.name = name
        self.base = base
        self.count = base
        self.gets = 0
        self.puts = 0
        self.underflows = 0
        mm.resources.krefs.append(self)

    def get(self) -> None:
        """kref_get()."""
        self.count += 1
        self.gets += 1

    def put(self) -> bool:
        """kref_put(): returns True when the count reached zero (release).  Below zero: underflow."""
        self.puts += 1
        if self.count <= 0:
            self.underflows += 1
            return False
        self.count -= 1
        return self.count == 0

    def __repr__(self) -> str:
        return f"Kref({self.name}, {self.count})"



class PfnAllocator:
    """A driver's page allocator: ``npages`` frames from ``base_pfn``."""

    def __init__(self, mm: MmStruct, name: str, base_pfn: int, npages: int) -> None:
        self.name = name
        self.base_pfn = base_pfn
        self.free_pfns = list(range(base_pfn + npages - 1, base_pfn - 1, -1))
        self.allocated: set[int] = set()
        self.double_frees = 0
        mm.resources.pools.append(self)

    def alloc(self) -> int:
        """alloc_page(): a pfn, or -ENOMEM."""
        if not self.free_pfns:
            return -errno.ENOMEM
        pfn = self.free_pfns.pop()
        self.allocated.add(pfn)
        return pfn

    def free(self, pfn: int) -> None:
        """__free_page()."""
        if pfn not in self.allocated:
            self.double_frees += 1
            return
        self.allocated.discard(pfn)
        self.free_pfns.append(pfn)


class ResourceTracker:
    """Everything ``mm`` (and the drivers opened in it) handed out."""

    def __init__(self) -> None:
        self.krefs: list[Kref] = []
        self.pools: list[PfnAllocator] = []
        self.files: list[File] = []

    def track_file(self, f: File) -> File:
        if not any(x is f for x in self.files):
            self.files.append(f)
        return f

    def check(self, mm: MmStruct) -> list[ResourceProblem]:
        """What is still held although nothing needs it.  Call it when the driver's mappings are all gone:
        every refcount is back at its base and no PFN is allocated.  A file may hold one reference per
        descriptor and per VMA that maps it, no more and no fewer."""
        out: list[ResourceProblem] = []
        for k in self.krefs:
            if k.underflows:
                out.append(ResourceProblem("ref", f"refcount {k.name}: put without a get (underflow)"))
            elif k.count != k.base:
                out.append(ResourceProblem("ref", f"refcount {k.name}: reference(s) still held with no mapping "
                                                  "left"))
        for p in self.pools:
            if p.double_frees:
                out.append(ResourceProblem("pfn", f"{p.name}: PFN freed twice"))
            if p.allocated:
                out.append(ResourceProblem("pfn", f"{p.name}: PFN(s) still allocated with no mapping left"))
        want = expected_file_refs(mm)
        for f in self.files:
            w = want.get(id(f), 0)
            if f.refcount < w:
                out.append(ResourceProblem("file", f"file {f.display_path}: fput() too often (refcount below "
                                                   "its descriptors and VMAs)"))
            elif f.refcount > w:
                out.append(ResourceProblem("file", f"file {f.display_path}: reference(s) leaked"))
        return out


def expected_file_refs(mm: MmStruct) -> dict[int, int]:
    """The references each file should hold (by ``id``): one per descriptor and one per VMA mapping it."""
    want: dict[int, int] = {}
    for f in mm.fdtable.values():
        want[id(f)] = want.get(id(f), 0) + 1
    for v in mm.tree:
        if v.vm_file is not None:
            want[id(v.vm_file)] = want.get(id(v.vm_file), 0) + 1
    return want
