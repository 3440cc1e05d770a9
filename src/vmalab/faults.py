"""Page faults.

Models mm/memory.c (handle_mm_fault, do_anonymous_page, do_read_fault/do_cow_fault/do_shared_fault,
do_fault_around), mm/filemap.c (filemap_fault's read-around), mm/rmap.c (__anon_vma_prepare),
mm/mmap.c (expand_downwards for GROWSDOWN stacks) and arch/x86/mm/fault.c (access_error).  A fault
decides two things the VMA layer can observe: whether a VMA gets an anon_vma (which changes later merges)
and what is resident (Rss, mincore).  Population (mm/gup.c) is :mod:`vmalab.gup`, which faults through
:func:`handle_mm_fault`.
"""

from __future__ import annotations

import errno

from . import constants as C
from .constants import (
    PAGE_SHIFT,
    PAGE_SIZE,
    ULONG_MASK,
    VM_ACCOUNT,
    VM_GROWSDOWN,
    VM_LOCKED,
    VM_MAYSHARE,
    VM_SHARED,
    VM_WRITE,
)
from .files import Inode
from .mm_types import VMA, AnonVma, MmStruct
from .pagetable import ANON, GUARD, LRU_LAZYFREE, ZERO, Page
from .vma import vma_set_start

ZERO_PAGE = Page(ZERO)
FAULT_AROUND_PAGES = 16


class Fault(Exception):
    """A user access that the kernel answers with a signal (``SIGSEGV`` or ``SIGBUS``)."""

    def __init__(self, signal: str, addr: int, code: str = "") -> None:
        super().__init__(f"{signal} at {addr:#x}{' (' + code + ')' if code else ''}")
        self.signal = signal
        self.addr = addr
        self.code = code


READ, WRITE, FETCH = 0, 1, 2


def fault_page(mm: MmStruct, addr: int, kind: int) -> Page:
    """The page a user access of ``kind`` (READ, WRITE, FETCH) at ``addr`` reaches, after the fault it
    takes; raises :class:`Fault`.  Models arch/x86/mm/fault.c: do_user_addr_fault() (access_error(); a
    fetch from a present NX page is X86_PF_PROT | X86_PF_INSTR) and mm/memory.c: handle_mm_fault()."""
    addr &= ULONG_MASK
    vma = mm.tree.find(addr)
    if vma is None:
        raise Fault("SIGSEGV", addr, "MAPERR")
    if vma.vm_start > addr:
        if not vma.vm_flags & VM_GROWSDOWN or expand_downwards(mm, vma, addr):
            raise Fault("SIGSEGV", addr, "MAPERR")
    flags = vma.vm_flags
    write = kind == WRITE
    if write and not flags & VM_WRITE:
        raise Fault("SIGSEGV", addr, "ACCERR")
    if not write and not flags & C.VM_ACCESS_FLAGS:
        raise Fault("SIGSEGV", addr, "ACCERR")
    if kind == FETCH and not flags & C.VM_EXEC:
        pte = mm.pt.get(addr >> PAGE_SHIFT)
        if pte is not None and pte.kind != GUARD:
            raise Fault("SIGSEGV", addr, "ACCERR")  # present and NX: X86_PF_PROT | X86_PF_INSTR
    sig = handle_mm_fault(mm, vma, addr, write)
    while sig == "OOM":  # VM_FAULT_OOM: pagefault_out_of_memory() ran; the access faults again
        sig = handle_mm_fault(mm, vma, addr, write)
    if sig is not None:
        raise Fault(sig, addr, "MAPERR" if sig == "SIGSEGV" else "ADRERR")
    if kind == FETCH and not flags & C.VM_EXEC:
        raise Fault("SIGSEGV", addr, "ACCERR")  # the read fault mapped it; the retried fetch hits NX
    page = mm.pt.get(addr >> PAGE_SHIFT)
    assert page is not None
    return page


def touch(mm: MmStruct, addr: int, write: bool = False, value: int = 1) -> int | None:
    """A user access of one byte: returns the byte read (None for a write), or raises :class:`Fault`
    (:func:`fault_page`, then the byte)."""
    page = fault_page(mm, addr, WRITE if write else READ)
    off = addr & (PAGE_SIZE - 1)
    if write:
        page.write(off, value & 0xFF)
        return None
    v = page.data.get(off)  # Page.read()
    if v is not None:
        return v
    b = page.base
    return 0 if b is None else b[off]


def expand_downwards(mm: MmStruct, vma: VMA, addr: int) -> int:
    """Models mm/mmap.c: expand_downwards() for a stack touch below a GROWSDOWN VMA: 0 or -errno."""
    addr &= C.PAGE_MASK
    if addr < mm.mmap_min_addr:
        return -errno.EPERM
    prev = mm.tree.prev(vma)
    if prev is not None and not prev.vm_flags & VM_GROWSDOWN and prev.vm_flags & C.VM_ACCESS_FLAGS:
        if addr - prev.vm_end < C.STACK_GUARD_GAP:
            return -errno.ENOMEM
    # The kernel makes sure of the anon_vma before it checks the growth (even if that then fails).
    if anon_vma_prepare(mm, vma):
        return -errno.ENOMEM
    grow = (vma.vm_start - addr) >> PAGE_SHIFT
    size = vma.vm_end - addr
    if size > mm.rlimit("RLIMIT_STACK"):
        return -errno.ENOMEM
    if not mm.may_expand_vm(vma.vm_flags, grow):
        return -errno.ENOMEM
    if vma.vm_flags & VM_LOCKED and not mm.mlock_future_ok(vma.vm_flags, grow << PAGE_SHIFT):
        return -errno.ENOMEM
    if vma.vm_flags & VM_ACCOUNT:
        if not mm.vm_enough_memory(grow):
            return -errno.ENOMEM
    # vma->vm_start = address; vma->vm_pgoff -= grow; vma_iter_store_overwrite()
    vma_set_start(mm, vma, addr, vma.vm_pgoff - grow)
    if vma.vm_flags & VM_LOCKED:
        mm.locked_vm += grow
    mm.vm_stat_account(vma.vm_flags, grow)
    return 0


def anon_vma_prepare(mm: MmStruct, vma: VMA) -> int:
    """Models mm/rmap.c: __anon_vma_prepare() with find_mergeable_anon_vma(): reuse an adjacent,
    compatible VMA's anon_vma (next first, then prev) or make a new one.  Returns 0 or -ENOMEM (the
    allocation failed: the fault path answers VM_FAULT_OOM)."""
    if vma.anon_vma is not None:
        return 0
    e = mm.probe.inject("anon_vma_prepare")
    if e:
        return e
    ignore = C.VM_ACCESS_FLAGS | C.VM_IGNORE_MERGE  # anon_vma_compatible(): soft-dirty and the guard marker

    def compatible(a: VMA, b: VMA) -> bool:
        return (a.vm_end == b.vm_start and a.vm_file is b.vm_file and a.anon_name == b.anon_name
                and not ((a.vm_flags ^ b.vm_flags) & ~ignore)
                and b.vm_pgoff == a.vm_pgoff + a.pages)

    found: AnonVma | None = None
    nxt = mm.tree.next(vma)
    if nxt is not None and nxt.anon_vma is not None and nxt.avc_len == 1 and compatible(vma, nxt):
        found = nxt.anon_vma
    if found is None:
        prv = mm.tree.prev(vma)
        if prv is not None and prv.anon_vma is not None and prv.avc_len == 1 and compatible(prv, vma):
            found = prv.anon_vma
    vma.anon_vma = found if found is not None else mm.new_anon_vma()
    vma.avc_len = 1
    return 0


def handle_mm_fault(mm: MmStruct, vma: VMA, addr: int, write: bool, gup: bool = False) -> str | None:
    """Models mm/memory.c: handle_mm_fault() for a permitted access: fill the PTE; returns a signal name,
    "OOM" (VM_FAULT_OOM: no anon_vma could be allocated) or None.  ``gup`` marks a fault taken by
    mm/gup.c (:mod:`vmalab.gup`) rather than by a user access; it changes nothing modelled."""
    if vma.vm_flags & C.VM_HUGETLB:
        return hugetlb_fault(mm, vma, addr, write)
    vpn = addr >> PAGE_SHIFT
    pte = mm.pt.get(vpn)
    if pte is not None and pte.kind == GUARD:
        return "SIGSEGV"  # a guard-region marker: handle_pte_marker() -> VM_FAULT_SIGSEGV
    if vma.vm_ops is None and not (vma.vm_flags & VM_SHARED):  # vma_is_anonymous(), private
        if pte is not None and (not write or pte.kind == ANON and pte.mapcount == 1):
            if write and pte.lru == LRU_LAZYFREE:
                pte.lru = ""  # the write dirties the PTE: reclaim keeps the folio again
            return None
        if not write:
            mm.pt.set(vpn, ZERO_PAGE)
            return None
        if anon_vma_prepare(mm, vma):
            return "OOM"
        new = pte.copy_data(ANON) if pte is not None and pte.kind == ANON else Page(ANON)
        mm.pt.set(vpn, new)
        return None
    if vma.vm_ops is not None and vma.vm_ops.provides_pages:
        return _special_mapping_fault(mm, vma, vpn, pte, write)
    if vma.vm_flags & (C.VM_PFNMAP | C.VM_MIXEDMAP):
        # remap_pfn_range()/vm_insert_pages() filled the PTEs when the driver's action completed and
        # these VMAs have no ->fault: a missing PTE is SIGBUS; a write to a private one copies (do_wp_page)
        if pte is None:
            return "SIGBUS"
        if write and not vma.vm_flags & VM_SHARED:
            if anon_vma_prepare(mm, vma):
                return "OOM"
            mm.pt.set(vpn, pte.copy_data(ANON))
        return None
    f = vma.vm_file
    assert f is not None
    inode = f.inode
    pgoff = vma.pgoff_at(addr)
    shared = bool(vma.vm_flags & VM_SHARED) or bool(vma.vm_flags & VM_MAYSHARE)
    if write and not shared and pte is None:
        # do_cow_fault() prepares the anon_vma before ->fault() runs, so a COW fault beyond EOF leaves
        # the VMA with an anon_vma although it ends in SIGBUS (fuzz finding, see
        # tests/scenarios/fault_cow_beyond_eof_prepares_anon_vma.json)
        if anon_vma_prepare(mm, vma):
            return "OOM"
    if pgoff >= inode.npages():
        if not write and pte is None:
            # do_read_fault(): do_fault_around() maps the cached pages around the address (clipped to
            # EOF) before ->fault() finds the page beyond EOF and reports SIGBUS.
            _fault_around(mm, vma, addr, inode)
        return "SIGBUS"
    if pte is not None:
        if not write or shared or pte.kind == ANON and pte.mapcount == 1:
            return None
        # do_wp_page(): a write to a page-cache page of a private mapping, or to an anonymous page
        # still shared with another mm after fork (wp_can_reuse_anon_folio() fails): COW
        if anon_vma_prepare(mm, vma):
            return "OOM"
        mm.pt.set(vpn, pte.copy_data(ANON))
        return None
    style = f.f_op.fault_style
    if style == "filemap" and pgoff not in inode.pages:
        _readahead(mm, vma, inode, pgoff)
    cache = inode.cache_page(pgoff)
    cache.uptodate = True  # filemap_fault() reads a !uptodate folio before mapping it
    if write and not shared:
        if anon_vma_prepare(mm, vma):
            return "OOM"
        mm.pt.set(vpn, cache.copy_data(ANON))
        return None
    mm.pt.set(vpn, cache)
    if not write:
        _fault_around(mm, vma, addr, inode)
    return None


def _special_mapping_fault(mm: MmStruct, vma: VMA, vpn: int, pte: Page | None, write: bool) -> str | None:
    """Models do_fault() on a VMA whose ->fault provides its pages (mm/vma.c: special_mapping_fault():
    [vdso], [vvar], [vvar_vclock]; :meth:`vmalab.files.VmOperations.fault`): map the page it gives, SIGBUS
    where it gives none.  A write to a private one (the vDSO after mprotect(PROT_WRITE)) maps a private
    anonymous copy (do_cow_fault(), do_wp_page()).  (tests/scenarios/special_vdso_vvar_faults.json)"""
    assert vma.vm_ops is not None
    private = not vma.vm_flags & VM_SHARED
    if pte is None:
        page = vma.vm_ops.fault(vma, vma.pgoff_at(vpn << PAGE_SHIFT))
        if page is None:
            return "SIGBUS"
        if write and private:
            if anon_vma_prepare(mm, vma):
                return "OOM"
            page = page.copy_data(ANON)
        mm.pt.set(vpn, page)
        return None
    if write and private and not (pte.kind == ANON and pte.mapcount == 1):
        if anon_vma_prepare(mm, vma):
            return "OOM"
        mm.pt.set(vpn, pte.copy_data(ANON))
    return None


def hugetlb_fault(mm: MmStruct, vma: VMA, addr: int, write: bool) -> str | None:  # noqa: ARG001
    """Models mm/hugetlb.c: hugetlb_fault() -> hugetlb_no_page(): a fault on a hugetlb VMA allocates a
    huge page from the pool (a read fault too: there is no huge zero page).  The model's pools are
    empty (:class:`vmalab.files.Hstate`), so alloc_hugetlb_folio() fails with -ENOSPC, which
    vmf_error() turns into VM_FAULT_SIGBUS, with or without a reservation and for private and shared
    mappings alike (measured: tests/scenarios/hugetlb_faults_empty_pool.json)."""
    return "SIGBUS"


def _readahead(mm: MmStruct, vma: VMA, inode: Inode, pgoff: int) -> None:
    """Models mm/filemap.c: do_sync_mmap_readahead()'s read-around for a cache miss.  VM_HUGEPAGE reads
    from the PMD-aligned index (the THP path comes first).  MADV_RANDOM
    (VM_RAND_READ) reads only the faulting page, except on an executable mapping: the VM_EXEC path is
    meant for random access already and still reads from the fault to the end of the VMA
    (tests/scenarios/fault_exec_random_still_reads_ahead.json)."""
    if vma.vm_flags & C.VM_HUGEPAGE:
        # "use the readahead code, even if readahead is disabled": from the PMD-aligned index, two PMDs'
        # worth of pages (one under MADV_RANDOM), capped at EOF.  The large folios it allocates are not
        # modelled (tests/known_divergences/madvise_hugepage_file_large_folio.json); the pages it reads
        # are (tests/scenarios/fault_hugepage_file_reads_from_pmd_start.json).
        start = pgoff & ~(C.PMD_SIZE // PAGE_SIZE - 1)
        size = (1 if vma.vm_flags & C.VM_RAND_READ else 2) * (C.PMD_SIZE // PAGE_SIZE)
        for i in range(start, min(start + size, inode.npages())):
            inode.cache_page(i)
        return
    if vma.vm_flags & (C.VM_RAND_READ | C.VM_EXEC) == C.VM_RAND_READ:
        inode.cache_page(pgoff)
        return
    if vma.vm_flags & C.VM_SEQ_READ:
        start = pgoff
    elif vma.vm_flags & C.VM_EXEC:
        # Executable mappings (6.16+): no read-around; read from the faulting page (exec_folio_order()
        # is 0 on x86) up to the end of the VMA.
        stop = min(pgoff + mm.ra_pages, vma.vm_pgoff + vma.pages, inode.npages())
        for i in range(max(pgoff, vma.vm_pgoff), stop):
            inode.cache_page(i)
        return
    else:
        start = max(0, pgoff - mm.ra_pages // 2)
    stop = min(start + mm.ra_pages, inode.npages())
    for i in range(start, stop):
        inode.cache_page(i)


def _fault_around(mm: MmStruct, vma: VMA, addr: int, inode: Inode) -> None:
    """Models mm/memory.c: do_fault_around() + filemap_map_pages(): map the cached pages of the
    16-page aligned block around a read fault, clipped to the VMA, the page table and EOF.

    The 6.18-stable change 74207de2ba10 ("do not populate page table entries beyond i_size") skips
    filemap_map_pmd(), and with it the install of a new page table, when the first uptodate page of the
    block reaches end of file (shmem excepted); with no page table yet for the 2 MiB region, nothing is
    mapped.  Only a fault beyond EOF can see it: inside EOF ->fault() maps the page anyway
    (tests/scenarios/fault_sigbus_fault_around_needs_page_table.json)."""
    if vma.vm_ops is None or not vma.vm_ops.has_map_pages:
        return  # should_fault_around(): no vm_ops->map_pages (secretmem): only the faulting page
    vpn = addr >> PAGE_SHIFT
    pte_off = vpn & 511
    vma_off = vpn - (vma.vm_start >> PAGE_SHIFT)
    from_pte = max(pte_off & ~(FAULT_AROUND_PAGES - 1), pte_off - min(pte_off, vma_off))
    to_pte = min(from_pte + FAULT_AROUND_PAGES, 512, pte_off + vma.pages - vma_off)
    base = vpn - pte_off
    limit = inode.npages()
    first_pgoff = vma.vm_pgoff + (base + from_pte - (vma.vm_start >> PAGE_SHIFT))
    first = next((i for i in range(first_pgoff, min(first_pgoff + to_pte - from_pte, limit))
                  if (pg := inode.pages.get(i)) is not None and pg.uptodate), None)  # next_uptodate_folio()
    if first is None:
        return
    shmem = vma.vm_file is not None and vma.vm_file.f_op.fault_style == "shmem"
    if first == limit - 1 and not shmem and not mm.pt.has_table(vpn):
        return  # !can_map_large: no filemap_map_pmd(), so no page table to map into
    for p in range(from_pte, to_pte):
        v = base + p
        pg_off = vma.vm_pgoff + (v - (vma.vm_start >> PAGE_SHIFT))
        if pg_off >= limit or mm.pt.get(v) is not None:
            continue
        page = inode.pages.get(pg_off)
        if page is not None and page.uptodate:  # next_uptodate_folio() skips !uptodate folios
            mm.pt.set(v, page)
