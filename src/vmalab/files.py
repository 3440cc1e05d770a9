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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .constants import PAGE_SHIFT, PAGE_SIZE
from .pagetable import FILE, Page

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

    def npages(self) -> int:
        """Pages inside i_size (a fault at or beyond this page index is SIGBUS)."""
        return (self.size + PAGE_SIZE - 1) >> PAGE_SHIFT

    def cache_page(self, pgoff: int) -> Page:
        """Find or create the page-cache page at ``pgoff`` (zero-filled)."""
        p = self.pages.get(pgoff)
        if p is None:
            p = Page(FILE)
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
            pg = self.pages[size >> PAGE_SHIFT]
            for off in [o for o in pg.data if o >= tail]:
                del pg.data[off]


class VmOperations:
    """Models ``struct vm_operations_struct``.  ``None``-valued hooks are absent, as NULL in C."""

    #: vm_ops->close: present means merges may not remove such a VMA.
    has_close: bool = False
    #: the VMA maps secret memory (mm/secretmem.c: vma_is_secretmem()): GUP refuses it, mlock skips it.
    secretmem: bool = False

    def name(self, vma: VMA) -> str | None:  # noqa: ARG002
        """vm_ops->name(): the maps name of special mappings, or None."""
        return None

    def may_split(self, vma: VMA, addr: int) -> int:  # noqa: ARG002
        """vm_ops->may_split(): 0 or -errno."""
        return 0

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


GENERIC_FILE_VM_OPS = GenericFileVmOps()


class ShmemVmOps(VmOperations):
    """Models mm/shmem.c: shmem_vm_ops / shmem_anon_vm_ops."""


class SpecialMappingOps(VmOperations):
    """Models mm/vma.c: special_mapping_vmops ([vvar], [vdso], ...): named, cannot be split."""

    def __init__(self, label: str) -> None:
        self.label = label

    has_close = True

    def name(self, vma: VMA) -> str | None:  # noqa: ARG002
        return self.label

    def may_split(self, vma: VMA, addr: int) -> int:  # noqa: ARG002
        return -errno.EINVAL


class FileOperations:
    """Models ``struct file_operations``: the hooks the mmap path consults.

    ``get_unmapped_area`` is one of ``None`` (the mm's default), ``"thp"`` (thp_get_unmapped_area),
    ``"shmem"`` (shmem_get_unmapped_area) or ``"zero"`` (/dev/zero's).  Exactly one of :meth:`mmap`
    (legacy) or :meth:`mmap_prepare` should be implemented, as ``can_mmap_file()`` requires.
    """

    get_unmapped_area: str | None = None
    mmap_supported_flags: int = 0
    has_mmap: bool = False
    has_mmap_prepare: bool = False
    #: how page faults on this file behave: "shmem" (allocate on fault, no readahead) or "filemap"
    fault_style: str = "filemap"

    def mmap(self, file: File, vma: VMA) -> int:  # noqa: ARG002
        """Legacy f_op->mmap(): returns 0 or -errno; may change the VMA."""
        return -errno.ENODEV

    def mmap_prepare(self, desc: VmAreaDesc) -> int:  # noqa: ARG002
        """f_op->mmap_prepare(): returns 0 or -errno; may change the mutable desc fields."""
        return -errno.ENODEV


class ShmemFileOps(FileOperations):
    """Models mm/shmem.c: shmem_file_operations (legacy ->mmap in 6.18)."""

    get_unmapped_area = "shmem"
    has_mmap = True
    fault_style = "shmem"

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
        vma.vm_file.refcount -= 1
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
