"""Files, inodes and the file operations the mmap path calls.

Models ``struct inode`` (size, page cache, device/inode numbers for ``/proc/pid/maps``), ``struct file``
(open mode, ``f_op``, the path shown in maps, a reference count) and ``struct file_operations`` /
``struct vm_operations_struct`` as Python classes with the kernel's hook names.  Shmem (memfd, tmpfs
files, shared anonymous memory) is core mm and lives here (mm/shmem.c: shmem_kernel_file_setup(),
shmem_zero_setup()); the other built-in kinds (ext4-like page-cache files, ``/dev/zero``, secretmem) are
drivers in :mod:`vmalab.drivers` that register themselves with :mod:`vmalab.fdtable`.  Driver authors
subclass :class:`FileOperations` and :class:`VmOperations`.
"""

from __future__ import annotations

import errno
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .constants import PAGE_SHIFT, PAGE_SIZE, VM_DONTEXPAND, VM_HUGETLB, VM_NORESERVE, VM_WRITE
from .pagetable import FILE, KERNEL, PFN, Page, PfnPage

if TYPE_CHECKING:
    from .driver import VmAreaDesc
    from .mm_types import VMA, MmStruct

FMODE_READ = 0x1
FMODE_WRITE = 0x2

S_IFREG = 0o100000
S_IFCHR = 0o020000

SHMEM_DEV = (0, 1)


@dataclass(eq=False)
class Inode:
    """Models ``struct inode`` plus its ``address_space`` (page cache: pgoff -> Page)."""

    ino: int
    dev: tuple[int, int]
    mode: int = S_IFREG
    size: int = 0
    pages: dict[int, Page] = field(default_factory=dict)
    noexec: bool = False  # lives on a noexec mount (path_noexec())
    #: the content provider: ``content(pgoff)`` gives the file's bytes of page ``pgoff`` (the backing store
    #: ->read_folio() reads from); a page-cache page created for the inode holds them.  None: zeroes.
    content: Callable[[int], bytes] | None = field(default=None, repr=False)

    def npages(self) -> int:
        """Pages inside i_size (a fault at or beyond this page index is SIGBUS)."""
        return (self.size + PAGE_SIZE - 1) >> PAGE_SHIFT

    def cache_page(self, pgoff: int) -> Page:
        """Find or create the page-cache page at ``pgoff``: zero-filled, or holding the content provider's
        bytes (those beyond i_size are zero, as filemap_read_folio() leaves them)."""
        p = self.pages.get(pgoff)
        if p is None:
            p = Page(FILE)
            if self.content is not None:
                p.base = _page_bytes(self.content(pgoff), self.size - (pgoff << PAGE_SHIFT))
            self.pages[pgoff] = p
        return p

    def truncate(self, size: int) -> None:
        """Set i_size; pages wholly beyond the new size leave the page cache."""
        self.size = size
        limit = self.npages()
        for k in [k for k in self.pages if k >= limit]:
            del self.pages[k]
        tail = size & (PAGE_SIZE - 1)
        if tail and (size >> PAGE_SHIFT) in self.pages:
            self.pages[size >> PAGE_SHIFT].zero_from(tail)

    def incore(self, pgoff: int) -> bool:
        """Models mm/mincore.c: mincore_page(): the page is cached and uptodate (a folio that was created
        but never read counts as not resident)."""
        p = self.pages.get(pgoff)
        return p is not None and p.uptodate

    def block_truncate_page(self, pos: int) -> None:
        """Models fs/ext4/inode.c: ext4_block_truncate_page() for a block size of one page: zero the page
        holding ``pos`` from ``pos`` to its end.  The folio is looked up with FGP_CREAT, and over a hole
        nothing is read, so a page that was not cached is now cached but not uptodate: mincore says 0,
        fault-around skips it and the next fault on it reads it alone."""
        off = pos & (PAGE_SIZE - 1)
        if not off:
            return
        p = self.pages.get(pos >> PAGE_SHIFT)
        if p is None:
            self.cache_page(pos >> PAGE_SHIFT).uptodate = False
            return
        p.zero_from(off)


def _page_bytes(raw: bytes, limit: int) -> bytes | None:
    """``raw`` as a page's ``base``: cut at ``limit`` (i_size), padded to a page; None when all zero."""
    raw = bytes(raw[:max(0, min(limit, PAGE_SIZE))])
    if not raw.strip(b"\0"):
        return None
    return raw + bytes(PAGE_SIZE - len(raw))


class ProfileFeatureError(AttributeError):
    """A driver used a part of the contract its kernel profile does not have (e.g. an action on 6.18): no
    such driver can be built for that kernel.  The mmap path unwinds as after a failing ``mmap_prepare``
    (or ``->mmap``) before it lets this through (:func:`vmalab.mmap.mmap_region`).  Also importable from
    :mod:`vmalab.driver`."""


class VmOperations:
    """Models ``struct vm_operations_struct``.  ``None``-valued hooks are absent, as NULL in C."""

    #: vm_ops->close: present means merges may not remove such a VMA.
    has_close: bool = False
    #: the VMA maps secret memory (mm/secretmem.c: vma_is_secretmem()): GUP refuses it, mlock skips it.
    secretmem: bool = False
    #: vm_ops->map_pages (filemap_map_pages()): a read fault maps the cached pages around the faulting one
    #: (do_fault_around()); without it only the faulting page is mapped (secretmem_vm_ops)
    has_map_pages: bool = False
    #: the VMA has no file and its ->fault provides the pages itself (special mappings: [vdso], [vvar]):
    #: the fault path maps what :meth:`fault` returns
    provides_pages: bool = False

    def name(self, vma: VMA) -> str | None:  # noqa: ARG002
        """vm_ops->name(): the maps name of special mappings, or None."""
        return None

    def may_split(self, vma: VMA, addr: int) -> int:  # noqa: ARG002
        """vm_ops->may_split(): 0 or -errno."""
        return 0

    def pagesize(self, vma: VMA) -> int:  # noqa: ARG002
        """vm_ops->pagesize() as vma_kernel_pagesize() uses it: the page size smaps reports."""
        return PAGE_SIZE

    def fault(self, vma: VMA, pgoff: int) -> Page | None:  # noqa: ARG002
        """vm_ops->fault() of a VMA that ``provides_pages``: the page to map at page offset ``pgoff`` of
        the mapping, or None for VM_FAULT_SIGBUS."""
        return None

    def close(self, vma: VMA) -> None:
        """vm_ops->close()."""

    def open(self, vma: VMA) -> None:
        """vm_ops->open(): called for the new VMA of a split or a fork."""


class DummyVmOps(VmOperations):
    """Models mm/vma_init.c: vma_dummy_vm_ops — what a file VMA has when its driver sets no vm_ops
    (it is not anonymous memory: vma_is_anonymous() is false)."""


DUMMY_VM_OPS = DummyVmOps()


class GenericFileVmOps(VmOperations):
    """Models mm/filemap.c: generic_file_vm_ops (page-cache faults with fault-around; no close)."""

    has_map_pages = True


GENERIC_FILE_VM_OPS = GenericFileVmOps()


class ShmemVmOps(VmOperations):
    """Models mm/shmem.c: shmem_vm_ops / shmem_anon_vm_ops (both have .map_pages = filemap_map_pages)."""

    has_map_pages = True


#: The vDSO image's ELF header as every x86-64 build has it (e_ident: ELFMAG, ELFCLASS64, ELFDATA2LSB,
#: EV_CURRENT; e_type ET_DYN, e_machine EM_X86_64, e_version 1).  The rest of the image is build-specific
#: and is not modelled (it reads as 0).
VDSO_ELF_HEADER = bytes((0x7F, 0x45, 0x4C, 0x46, 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0x3E, 0, 1, 0, 0, 0))
#: The page offsets whose raw PFN the data mappings' fault handlers insert (vmf_insert_pfn(): no struct
#: page, not in Rss); every other offset is SIGBUS.  [vvar] (lib/vdso/datastore.c: vvar_fault()): the time
#: data (0) and the getrandom data (2); the time-namespace page (1) only inside a time namespace, and x86
#: has no arch data page (3).  [vvar_vclock] (arch/x86/entry/vdso/vma.c: vvar_vclock_fault()): the
#: kvm-clock page (0), as on the KVM guest the recordings were made on; the Hyper-V page (1) is absent.
#: The data itself changes with time and is read as 0.
SPECIAL_PFN_PAGES: dict[str, frozenset[int]] = {"[vvar]": frozenset({0, 2}), "[vvar_vclock]": frozenset({0})}


class SpecialMappingOps(VmOperations):
    """Models mm/vma.c: special_mapping_vmops ([vvar], [vdso], ...): named, cannot be split, and its pages
    come from the mapping's own fault handler (:meth:`fault`)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.pages: dict[int, Page] = {}  # the pages handed out so far (shared by the VMAs of a fork)

    has_close = True
    provides_pages = True

    def name(self, vma: VMA) -> str | None:  # noqa: ARG002
        return self.label

    def may_split(self, vma: VMA, addr: int) -> int:  # noqa: ARG002
        return -errno.EINVAL

    def fault(self, vma: VMA, pgoff: int) -> Page | None:
        """Models special_mapping_fault() -> the mapping's ->fault: [vdso] (vdso_fault()) gives the pages
        of the vDSO image (kernel pages, counted in Rss; page 0 starts with :data:`VDSO_ELF_HEADER`) for
        every offset inside the image, which is the VMA; [vvar] and [vvar_vclock] give raw PFNs of their
        data pages (:data:`SPECIAL_PFN_PAGES`).  None is VM_FAULT_SIGBUS."""
        page = self.pages.get(pgoff)
        if page is not None:
            return page
        if self.label == "[vdso]":
            if pgoff >= vma.pages:
                return None
            header = {i: b for i, b in enumerate(VDSO_ELF_HEADER) if b} if pgoff == 0 else None
            page = Page(KERNEL, header)
        elif pgoff in SPECIAL_PFN_PAGES.get(self.label, frozenset()):
            page = PfnPage(PFN)
        else:
            return None
        self.pages[pgoff] = page
        return page


class FileOperations:
    """Models ``struct file_operations``: the hooks the mmap path consults.

    ``get_unmapped_area`` is one of ``None`` (the mm's default), ``"thp"`` (thp_get_unmapped_area),
    ``"shmem"`` (shmem_get_unmapped_area), ``"zero"`` (/dev/zero's) or ``"hugetlb"``
    (hugetlb_get_unmapped_area).  Exactly one of :meth:`mmap`
    (legacy) or :meth:`mmap_prepare` should be implemented, as ``can_mmap_file()`` requires.
    """

    get_unmapped_area: str | None = None
    mmap_supported_flags: int = 0
    has_mmap: bool = False
    has_mmap_prepare: bool = False
    #: how page faults on this file behave: "shmem" (allocate on fault, no readahead) or "filemap"
    fault_style: str = "filemap"
    #: FOP_HUGE_PAGES: the huge page size of a hugetlbfs file (is_file_hugepages(), hstate_file()), else 0
    huge_page_size: int = 0
    #: f_op->fsync: without it vfs_fsync_range() is EINVAL (msync(MS_SYNC) of a shared mapping)
    has_fsync: bool = False
    #: f_op->fallocate: without it vfs_fallocate() is EOPNOTSUPP (madvise(MADV_REMOVE) of a regular file)
    has_fallocate: bool = False
    #: f_op->release: called by :func:`fput` when the last reference to a file is dropped (per-open-file
    #: state is freed there)
    has_release: bool = False
    #: the device memory the driver owns, as ``(base_pfn, npages)`` ranges; None: not declared.  Model-only
    #: (the kernel has no such field): ``vmalab explore`` reports a PFN remapped outside these ranges.
    device_ranges: list[tuple[int, int]] | None = None

    def mmap(self, file: File, vma: VMA) -> int:  # noqa: ARG002
        """Legacy f_op->mmap(): returns 0 or -errno; may change the VMA."""
        return -errno.ENODEV

    def setattr(self, file: File, size: int) -> int:  # noqa: ARG002
        """The inode's ``i_op->setattr()`` for an ATTR_SIZE change (ftruncate(2), after the generic
        checks): 0 to let the size change, or -errno.  (The model has no inode_operations: the hook lives
        with the file's operations.)"""
        return 0

    def mmap_prepare(self, desc: VmAreaDesc) -> int:  # noqa: ARG002
        """f_op->mmap_prepare(): returns 0 or -errno; may change the mutable desc fields."""
        return -errno.ENODEV

    def release(self, file: File) -> None:  # noqa: ARG002
        """f_op->release() (with ``has_release``): the last reference to ``file`` is gone."""


class ShmemFileOps(FileOperations):
    """Models mm/shmem.c: shmem_file_operations (legacy ->mmap in 6.18)."""

    get_unmapped_area = "shmem"
    has_mmap = True
    fault_style = "shmem"
    has_fsync = True  # noop_fsync
    has_fallocate = True  # shmem_fallocate()

    def mmap(self, file: File, vma: VMA) -> int:
        vma.vm_ops = SHMEM_VM_OPS
        return 0


SHMEM_VM_OPS = ShmemVmOps()


class File:
    """Models ``struct file``: an open description of an inode."""

    def __init__(self, inode: Inode, f_op: FileOperations, path: str, f_mode: int = FMODE_READ | FMODE_WRITE,
                 deleted: bool = False, owner: MmStruct | None = None) -> None:
        self.inode = inode
        self.f_op = f_op
        self.path = path
        self.f_mode = f_mode
        self.deleted = deleted
        self.refcount = 1
        self.owner = owner
        self.anon_shmem = False  # the shmem file behind shared anonymous memory (vma_is_anon_shmem())

    @property
    def display_path(self) -> str:
        return self.path + (" (deleted)" if self.deleted else "")

    def __repr__(self) -> str:
        return f"File({self.display_path!r}, ino={self.inode.ino})"


def fput(mm: MmStruct, file: File) -> None:
    """Models fs/file_table.c: fput(): drop one reference; the last one calls ``f_op->release`` (__fput()).

    The kernel defers __fput() to task work that runs on the return to user space, so ->release never
    runs under the mmap lock: while ``mm``'s mmap lock is held the release waits until its outermost
    holder drops it (:meth:`vmalab.locking.LockState.defer`).  The release goes through
    ``mm.callback("release", ...)`` like every driver callback."""
    file.refcount -= 1
    if file.refcount or not file.f_op.has_release:
        return
    f_op = file.f_op
    mm.locks.defer(lambda: mm.callback("release", functools.partial(f_op.release, file)))


def vma_set_file(vma: VMA, file: File) -> None:
    """Models mm/util.c: vma_set_file(): take a reference on ``file``, install it, drop the old one."""
    file.refcount += 1
    old = vma.vm_file
    vma.vm_file = file
    if old is not None:
        old.refcount -= 1


def vma_is_secretmem(vma: VMA) -> bool:
    """Models include/linux/secretmem.h: vma_is_secretmem()."""
    return vma.vm_ops is not None and vma.vm_ops.secretmem


def shmem_kernel_file_setup(mm: MmStruct, name: str, size: int, deleted: bool = True) -> File:
    """Models mm/shmem.c: shmem_kernel_file_setup(): an unlinked shmem file (memfd, shared anonymous
    memory, shared /dev/zero); the caller owns its only reference."""
    inode = Inode(mm.alloc_ino(), SHMEM_DEV, size=size)
    f = File(inode, ShmemFileOps(), name, deleted=deleted, owner=mm)
    f.anon_shmem = name == "/dev/zero"  # shmem_zero_setup(): shared anonymous memory
    return mm.resources.track_file(f)


def shmem_zero_setup(mm: MmStruct, vma: VMA) -> None:
    """Models mm/shmem.c: shmem_zero_setup(): shared anonymous memory (and a shared /dev/zero mapping)
    gets a new shmem file of its own; a file reference the VMA held is dropped."""
    shm = shmem_kernel_file_setup(mm, "/dev/zero", vma.vm_end - vma.vm_start)
    if vma.vm_file is not None:
        fput(mm, vma.vm_file)
    vma.vm_file = shm
    vma.vm_ops = SHMEM_VM_OPS


def shmem_zero_setup_desc(desc: VmAreaDesc) -> int:
    """Models mm/shmem.c: shmem_zero_setup_desc() (6.19): a new unlinked shmem file for the mapping
    becomes ``desc->vm_file`` (the descriptor owns its only reference)."""
    shm = shmem_kernel_file_setup(desc.mm, "/dev/zero", desc.end - desc.start)
    desc.vm_file = shm
    desc.vm_ops = SHMEM_VM_OPS
    desc.mm.probe.trace("mmap", "vm_file swapped to a new shmem file", ino=shm.inode.ino)
    return 0


# ---------------------------------------------------------------------------------------------------
# hugetlbfs: fs/hugetlbfs/inode.c and the mapping half of mm/hugetlb.c
@dataclass(frozen=True)
class Hstate:
    """Models ``struct hstate`` (include/linux/hugetlb.h): one huge page size and its hugetlbfs mount
    (``dev``: the anonymous device of the internal mount, as the measured host numbers them).

    The pools are empty, as on the host the recordings were made on (``nr_hugepages`` 0 for both
    sizes): every reservation fails (:func:`hugetlb_reserve_pages`) and every fault is SIGBUS
    (:func:`vmalab.faults.hugetlb_fault`).  A non-empty pool is not modelled."""

    shift: int
    dev: tuple[int, int]

    @property
    def size(self) -> int:
        return 1 << self.shift


#: the hstates of x86-64 with 1 GiB pages (hugepages-2048kB, hugepages-1048576kB)
HSTATES: dict[int, Hstate] = {21: Hstate(21, (0, 0x11)), 30: Hstate(30, (0, 0x12))}
DEFAULT_HSTATE = HSTATES[21]  # default_hstate: Hugepagesize 2048 kB
#: fs/hugetlbfs/inode.c: PGOFF_LOFFT_MAX, the top PAGE_SHIFT + 1 bits of a pgoff
PGOFF_LOFFT_MAX = ((1 << (PAGE_SHIFT + 1)) - 1) << (64 - (PAGE_SHIFT + 1))


def hstate_sizelog(page_size_log: int) -> Hstate | None:
    """Models include/linux/hugetlb.h: hstate_sizelog(): the hstate a MAP_HUGE_* encoding names (0: the
    default size), or None."""
    if not page_size_log:
        return DEFAULT_HSTATE
    return HSTATES.get(page_size_log)


def hugetlb_reserve_pages(vm_flags: int, pages: int) -> bool:  # noqa: ARG001
    """Models mm/hugetlb.c: hugetlb_reserve_pages(): VM_NORESERVE reserves nothing; otherwise every huge
    page of the range must be reserved from the pool, which is empty (see :class:`Hstate`)."""
    return bool(vm_flags & VM_NORESERVE)


class HugetlbVmOps(VmOperations):
    """Models mm/hugetlb.c: hugetlb_vm_ops: splits only at a huge page boundary, smaps reports the huge
    page size; it has a ->close (hugetlb_vm_op_close())."""

    has_close = True

    def __init__(self, hstate: Hstate) -> None:
        self.hstate = hstate

    def may_split(self, vma: VMA, addr: int) -> int:  # noqa: ARG002
        """hugetlb_vm_op_split()."""
        return -errno.EINVAL if addr & (self.hstate.size - 1) else 0

    def pagesize(self, vma: VMA) -> int:  # noqa: ARG002
        """hugetlb_vm_op_pagesize()."""
        return self.hstate.size


class HugetlbfsFileOps(FileOperations):
    """Models fs/hugetlbfs/inode.c: hugetlbfs_file_operations (a legacy ->mmap in 6.18; FOP_HUGE_PAGES;
    placement by hugetlb_get_unmapped_area(), :func:`vmalab.layout.hugetlb_get_unmapped_area`)."""

    get_unmapped_area = "hugetlb"
    has_mmap = True
    has_fsync = True  # noop_fsync
    has_fallocate = True  # hugetlbfs_fallocate()

    def __init__(self, hstate: Hstate = DEFAULT_HSTATE) -> None:
        self.hstate = hstate
        self.huge_page_size = hstate.size

    def mmap(self, file: File, vma: VMA) -> int:
        """hugetlbfs_file_mmap(): VM_HUGETLB | VM_DONTEXPAND and hugetlb_vm_ops first (the error paths
        keep them), then the offset checks (EINVAL) and the reservation (ENOMEM); a writable mapping
        extends i_size to its end."""
        h = self.hstate
        vma.vm_flags |= VM_HUGETLB | VM_DONTEXPAND
        vma.vm_ops = HugetlbVmOps(h)
        if vma.vm_pgoff & PGOFF_LOFFT_MAX or vma.vm_pgoff & ((h.size >> PAGE_SHIFT) - 1):
            return -errno.EINVAL
        vma_len = vma.vm_end - vma.vm_start
        length = vma_len + (vma.vm_pgoff << PAGE_SHIFT)
        if length >= 1 << 63:  # the loff_t sum overflowed
            return -errno.EINVAL
        if not hugetlb_reserve_pages(vma.vm_flags, vma_len >> h.shift):
            return -errno.ENOMEM
        if vma.vm_flags & VM_WRITE and file.inode.size < length:
            file.inode.size = length
        return 0


def hugetlb_file_setup(mm: MmStruct, size: int, hstate: Hstate) -> File:
    """Models fs/hugetlbfs/inode.c: hugetlb_file_setup() for anonymous MAP_HUGETLB
    (HUGETLB_ANONHUGE_INODE, acctflag VM_NORESERVE, so nothing is reserved here): an unlinked file
    ``/anon_hugepage`` of ``size`` bytes on the internal mount of ``hstate``; the caller owns its only
    reference."""
    inode = Inode(mm.alloc_ino(), hstate.dev, size=size)
    f = File(inode, HugetlbfsFileOps(hstate), "/anon_hugepage", deleted=True, owner=mm)
    return mm.resources.track_file(f)


def vma_kernel_pagesize(vma: VMA) -> int:
    """Models mm/hugetlb.c: vma_kernel_pagesize(): ``vm_ops->pagesize``, else PAGE_SIZE (on x86
    vma_mmu_pagesize() is the same)."""
    return vma.vm_ops.pagesize(vma) if vma.vm_ops is not None else PAGE_SIZE
