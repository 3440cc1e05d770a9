"""Generic page-cache files: mm/filemap.c generic_file_mmap_prepare() and
generic_file_readonly_mmap_prepare(), as ext4 (fs/ext4/file.c ext4_file_mmap_prepare()) and ~50 other
file systems use them since 6.16/6.17.

The scenario kind ``disk:NAME`` opens a :class:`RegularFileOps` file (ext4-like: THP-aligned placement,
readahead and fault-around); ``dev:filemap[:SIZE]`` and ``dev:rofile[:SIZE]`` open a fresh one of each
variant.  The hook sets nothing but ``vm_ops`` (``file_accessed()`` has no visible effect here), so the
action is always MMAP_NOTHING and mappings merge by the ordinary rules.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from ..constants import MAP_SYNC, VM_MAYWRITE, VM_SHARED, VM_SYNC
from ..fdtable import open_file, register_file_kind
from ..files import GENERIC_FILE_VM_OPS, FileOperations, GenericFileVmOps
from . import register

if TYPE_CHECKING:
    from ..driver import VmAreaDesc
    from ..mm_types import MmStruct

__all__ = ["GENERIC_FILE_VM_OPS", "GenericFileVmOps", "ReadonlyFileOps", "RegularFileOps",
           "generic_file_mmap_prepare", "generic_file_readonly_mmap_prepare"]


def generic_file_mmap_prepare(desc: VmAreaDesc) -> int:
    """Models mm/filemap.c: generic_file_mmap_prepare()."""
    desc.vm_ops = GENERIC_FILE_VM_OPS
    return 0


def generic_file_readonly_mmap_prepare(desc: VmAreaDesc) -> int:
    """Models mm/filemap.c: generic_file_readonly_mmap_prepare(): a shared mapping that may become
    writable is refused."""
    if (desc.vm_flags & (VM_SHARED | VM_MAYWRITE)) == (VM_SHARED | VM_MAYWRITE):
        return -errno.EINVAL
    return generic_file_mmap_prepare(desc)


class RegularFileOps(FileOperations):
    """Models an ext4 regular file: ext4_file_mmap_prepare() (the generic hook for a non-DAX file, after
    refusing VM_SYNC), thp_get_unmapped_area(), FOP_MMAP_SYNC, ext4_sync_file() and ext4_fallocate()."""

    get_unmapped_area = "thp"
    has_mmap_prepare = True
    fault_style = "filemap"
    mmap_supported_flags = MAP_SYNC  # FOP_MMAP_SYNC: MAP_SHARED_VALIDATE|MAP_SYNC reaches the hook
    has_fsync = True
    has_fallocate = True

    def mmap_prepare(self, desc: VmAreaDesc) -> int:
        """Models ext4_file_mmap_prepare(): daxdev_mapping_supported() refuses VM_SYNC on a file that is
        not DAX (none is here) -- also for plain MAP_SHARED or MAP_PRIVATE, whose MAP_SYNC do_mmap()
        turned into VM_SYNC before it masked the flags."""
        if desc.vm_flags & VM_SYNC:
            return -errno.EOPNOTSUPP
        return generic_file_mmap_prepare(desc)


class ReadonlyFileOps(RegularFileOps):
    """A file system that only supports read-only shared mappings (generic_file_readonly_mmap_prepare)."""

    mmap_supported_flags = 0

    def mmap_prepare(self, desc: VmAreaDesc) -> int:
        return generic_file_readonly_mmap_prepare(desc)


register_file_kind("disk", RegularFileOps)


@register("filemap")
def open_filemap(mm: MmStruct, size: int) -> int:
    return open_file(mm, "/vmalab/filemap", size or 1 << 20)


@register("rofile")
def open_rofile(mm: MmStruct, size: int) -> int:
    fd = open_file(mm, "/vmalab/rofile", size or 1 << 20)
    mm.fdtable[fd].f_op = ReadonlyFileOps()
    return fd
