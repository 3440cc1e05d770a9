"""An overlay-style stacked file: fs/overlayfs/file.c ovl_mmap() -> fs/backing-file.c backing_file_mmap().

The stacked (user-visible) file keeps a legacy ``->mmap``: it points the VMA at the real file
(``vma_set_file()``: get the real file, put the overlay file) and calls ``vfs_mmap()`` on it.  The real
file is a generic page-cache file with only ``mmap_prepare``, so vfs_mmap() goes through the compat
layer (``compat_vma_mmap_prepare()`` in 6.18, ``compat_vma_mmap()`` later): a descriptor built from the
detached VMA, the inner hook, the descriptor applied back, and (6.19+) the action completed at once.
The final VMA references the real file.  Merges are tried before ``->mmap`` with the overlay file, so a
mapping never merges with an earlier one (which references the real file).  ``dev:ovl[:SIZE]`` (default
1M).
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from ..compat import vfs_mmap
from ..fdtable import install
from ..files import File, FileOperations, Inode, vma_set_file
from . import register
from .filemap import RegularFileOps

if TYPE_CHECKING:
    from ..mm_types import VMA, MmStruct


class OvlFileOps(FileOperations):
    """The overlay file's file_operations: legacy ->mmap only."""

    has_mmap = True

    def __init__(self, real: File) -> None:
        self.real = real

    def mmap(self, file: File, vma: VMA) -> int:
        """ovl_mmap() / backing_file_mmap()."""
        if vma.vm_file is not file:
            return -errno.EIO  # WARN_ON_ONCE(vma->vm_file != file)
        mm = file.owner
        assert mm is not None
        vma_set_file(vma, self.real)
        return vfs_mmap(mm, self.real, vma)


@register("ovl")
def open_ovl(mm: MmStruct, size: int) -> int:
    size = size or 1 << 20
    real = File(Inode(mm.alloc_ino(), (0xFE, 0), size=size), RegularFileOps(), "/upper/ovlfile", owner=mm)
    inode = Inode(mm.alloc_ino(), (0, 0x30), size=size)
    return install(mm, File(inode, OvlFileOps(real), "/merged/ovlfile", owner=mm))
