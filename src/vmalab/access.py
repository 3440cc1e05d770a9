"""User memory accesses of many bytes, and a copy-on-write snapshot of a whole mm.

Models what a CPU running the process does to its address space when it reads, writes or fetches
instructions (arch/x86/mm/fault.c: do_user_addr_fault(), access_error(); mm/memory.c:
handle_mm_fault()), page by page, as mm/memory.c: access_remote_vm() / __access_remote_vm() walks a
range: each page touched faults exactly like :func:`vmalab.faults.touch` (``MM.touch``), and a
fault raises :class:`vmalab.Fault` with the bytes of the pages before it already written, as a
``rep movsb`` that faults half way leaves them.

- :func:`read`, :func:`write`, :func:`fetch`: ``mm.read(addr, n)``, ``mm.write(addr, data)``,
  ``mm.fetch(addr, n)``.  A fetch is an instruction fetch: on x86-64 access_error() does not look at
  VM_EXEC; the PTE's NX bit does.  So a fetch from a readable VMA without VM_EXEC faults the page in as a
  read (the zero page, a page-cache page) and then ends in SIGSEGV/ACCERR on the retried fetch, and a
  fetch from an inaccessible VMA is ACCERR at once.
- :func:`page_at`: the page mapped at an address, without faulting (``follow_page()``-like).
- :func:`snapshot`, :func:`restore`: a whole-mm snapshot, not a fork: no accounting, no new pid, no
  driver callbacks, no notifier events.  VMAs are copied (their objects change in place), the page table
  is copied shallowly, and page contents are shared: every mapped page is marked ``frozen`` so that the
  next write copies its ``data`` first (:class:`vmalab.pagetable.Page`); the snapshot keeps the old ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import constants as C
from .constants import PAGE_SHIFT, PAGE_SIZE, ULONG_MASK
from .faults import FETCH, READ, WRITE, fault_page
from .files import File
from .fork import FORK_COPIED, FORK_REBUILT
from .mm_types import MmStruct
from .mmu_notifier import attach
from .pagetable import ANON, Page
from .vma_tree import VmaTree

__all__ = ["COMPACT_AFTER", "MmSnapshot", "fetch", "fault_page", "page_at", "read", "restore", "set_brk_base",
           "snapshot", "write"]

#: an anonymous page whose ``data`` holds more written bytes than this is compacted into its ``base``
COMPACT_AFTER = 512



def _page_bytes(page: Page, lo: int, hi: int) -> bytes:
    """Bytes ``[lo, hi)`` of ``page``."""
    b, data = page.base, page.data
    if not data:
        return bytes(hi - lo) if b is None else b[lo:hi]
    buf = bytearray(hi - lo) if b is None else bytearray(b[lo:hi])
    if len(data) < hi - lo:
        for o, v in data.items():
            if lo <= o < hi:
                buf[o - lo] = v
    else:
        for o in range(lo, hi):
            w = data.get(o)
            if w is not None:
                buf[o - lo] = w
    return bytes(buf)


def _access(mm: MmStruct, addr: int, n: int, kind: int) -> bytes:
    if n < 0:
        raise ValueError("negative length")
    addr &= ULONG_MASK
    out: list[bytes] = []
    end = addr + n
    while addr < end:
        lo = addr & (PAGE_SIZE - 1)
        hi = min(PAGE_SIZE, lo + end - addr)
        out.append(_page_bytes(fault_page(mm, addr, kind), lo, hi))
        addr += hi - lo
    return b"".join(out)


def read(mm: MmStruct, addr: int, n: int) -> bytes:
    """``n`` bytes read at ``addr`` by the process (each page faults like ``MM.touch``)."""
    return _access(mm, addr, n, READ)


def fetch(mm: MmStruct, addr: int, n: int) -> bytes:
    """``n`` bytes fetched as instructions at ``addr``: like :func:`read`, and a page without VM_EXEC is
    SIGSEGV/ACCERR (after its read fault, as the NX bit makes it)."""
    return _access(mm, addr, n, FETCH)


def _write_page(page: Page, lo: int, chunk: bytes) -> None:
    if page.frozen:
        page.data = dict(page.data)
        page.frozen = False
    data = page.data
    b = page.base
    if b is None:
        for i, v in enumerate(chunk, lo):
            if v:
                data[i] = v
            elif data:
                data.pop(i, None)
    else:
        data.update(enumerate(chunk, lo))
    if page.kind == ANON and len(data) > COMPACT_AFTER:
        # many bytes written: fold them into a new base (neither object a snapshot holds is mutated)
        page.base = _page_bytes(page, 0, PAGE_SIZE)
        page.data = {}


def write(mm: MmStruct, addr: int, data: bytes | bytearray | memoryview) -> None:
    """Write ``data`` at ``addr`` as the process would (each page faults like ``MM.touch(write=True)``);
    a fault leaves the pages before the faulting one written and raises :class:`Fault`."""
    buf = bytes(data)
    addr &= ULONG_MASK
    pos = 0
    while pos < len(buf):
        lo = addr & (PAGE_SIZE - 1)
        k = min(PAGE_SIZE - lo, len(buf) - pos)
        _write_page(fault_page(mm, addr, WRITE), lo, buf[pos:pos + k])
        pos += k
        addr += k


def page_at(mm: MmStruct, addr: int) -> Page | None:
    """The page the PTE of ``addr`` maps (a guard marker included), or None; never faults."""
    return mm.pt.get((addr & ULONG_MASK) >> PAGE_SHIFT)


def set_brk_base(mm: MmStruct, start_brk: int, brk: int | None = None) -> None:
    """Set the program break of an image loaded outside ``MM.exec`` (an emulator's loader, an import):
    ``mm->start_brk`` and ``mm->brk`` as load_elf_binary() sets them (``brk`` defaults to ``start_brk``).
    ``ValueError`` for an address that is not page-aligned (start_brk) or below it (brk)."""
    start_brk &= ULONG_MASK
    if start_brk & (PAGE_SIZE - 1):
        raise ValueError(f"start_brk {start_brk:#x} is not page-aligned")
    end = start_brk if brk is None else brk & ULONG_MASK
    if end < start_brk:
        raise ValueError(f"brk {end:#x} is below start_brk {start_brk:#x}")
    mm.start_brk = start_brk
    mm.brk = end


# ----------------------------------------------------------------------------------------------------
# snapshot and restore
#: MmStruct fields a snapshot does not take (rebuilt by restore or outside the mm): the VMA tree and the
#: page table (copied separately), the notifiers (they stay subscribed), the locks, the probe and the
#: resource tracker (observers of the model, not its state), the children (other processes)
SNAPSHOT_SKIPPED = frozenset({"tree", "pt", "notifiers", "locks", "probe", "resources", "children", "profile"})


@dataclass
class MmSnapshot:
    """A snapshot of an mm (:func:`snapshot`): its fields, a copy of its VMA tree, its PTEs and the
    contents every mapped page had."""

    fields: dict[str, Any]
    tree: VmaTree
    ptes: dict[int, dict[int, Page]]
    contents: list[tuple[Page, dict[int, int], bytes | None]]
    pt_state: tuple[int, int, int, set[int]]
    fdtable: dict[int, File]


def snapshot(mm: MmStruct) -> MmSnapshot:
    """A copy-on-write snapshot of ``mm`` (``mm.snapshot()``): O(VMAs + PTEs), no page contents copied."""
    pt = mm.pt
    ptes = pt.copy_ptes()
    contents = []
    for t in ptes.values():
        for p in t.values():
            p.frozen = True
            contents.append((p, p.data, p.base))
    return MmSnapshot(_fields(mm), mm.tree.clone(), ptes, contents,
                      (len(pt), pt.rss, pt.hiwater_rss, set(pt.tables)), dict(mm.fdtable))


def _fields(mm: MmStruct) -> dict[str, Any]:
    """The plain fields of ``mm`` (counters, limits, bases), copied (dicts and sets one level deep)."""
    out: dict[str, Any] = {}
    for name in _field_names(mm):
        if name in SNAPSHOT_SKIPPED or name == "fdtable":
            continue
        v = getattr(mm, name)
        if isinstance(v, (dict, set, list)):
            v = type(v)(v)
        elif name == "rng":
            state = v.getstate()
            v = state
        out[name] = v
    return out


def _field_names(mm: MmStruct) -> list[str]:  # noqa: ARG001
    """Every field of an MmStruct (tests/model/test_fork.py keeps the two sets complete)."""
    return sorted(FORK_COPIED | FORK_REBUILT)


def restore(mm: MmStruct, snap: MmSnapshot) -> None:
    """Give ``mm`` back the state of ``snap`` (``mm.restore(snap)``); the snapshot stays usable.  The
    registered MMU notifiers hear one ``invalidate_range(0, TASK_SIZE, "unmap")`` and one
    ``vma_changed(0, TASK_SIZE)`` (everything may have changed)."""
    # file references: the VMAs and descriptors of the snapshot take theirs, the current ones drop theirs
    # (without ->release: a restore is not a close)
    for v in snap.tree:
        if v.vm_file is not None:
            v.vm_file.refcount += 1
    for f in snap.fdtable.values():
        f.refcount += 1
    for v in mm.tree:
        if v.vm_file is not None:
            v.vm_file.refcount -= 1
    for f in mm.fdtable.values():
        f.refcount -= 1
    for name, v in snap.fields.items():
        if name == "rng":
            mm.rng.setstate(v)
        else:
            setattr(mm, name, type(v)(v) if isinstance(v, (dict, set, list)) else v)
    mm.fdtable = dict(snap.fdtable)
    mm.tree = snap.tree.clone()
    # the page table: the current PTEs drop their mapcounts, the snapshot's take them again.  A page whose
    # contents changed since is given them back: a page-cache page in place (the file's page), an
    # anonymous one as a new page (it may be mapped by a process forked since)
    pt = mm.pt
    for _vpn, p in pt.all_items():
        p.mapcount -= 1
    repl: dict[int, Page] = {}
    for p, data, base in snap.contents:
        if p.data is data and p.base is base:
            p.frozen = True
            continue
        if p.kind == ANON:
            if id(p) not in repl:
                q = Page(ANON, data, base=base)
                q.frozen = True
                repl[id(p)] = q
        else:
            p.data, p.base, p.frozen = data, base, True
    d: dict[int, dict[int, Page]] = {}
    for ti, t in snap.ptes.items():
        nt = dict(t) if not repl else {vpn: repl.get(id(p), p) for vpn, p in t.items()}
        for p in nt.values():
            p.mapcount += 1
        d[ti] = nt
    count, rss, hiwater, tables = snap.pt_state
    pt.load_ptes(d, count, rss, hiwater, set(tables))
    attach(mm)
    if mm.notifiers:
        for n in list(mm.notifiers):
            n.invalidate_range(0, C.TASK_SIZE, "unmap")
            n.vma_changed(0, C.TASK_SIZE)

