"""CLEAN: a buffer allocated once per open file and freed in ``->release``.

Opening the device allocates a page of per-file state (``file->private_data`` in C); every mapping of the
file uses it, and ``f_op->release`` frees it when the file's last reference is dropped — the descriptor
closed and every VMA that maps the file gone (each VMA holds a file reference: ``get_file()`` in mmap,
``fput()`` in remove_vma()).  ``vmalab explore`` gives zero findings on every profile.  Without ``->release``
(``per_file_buffer_leak.py``) the page is a real leak.
"""

from __future__ import annotations

from vmalab.driver import VmAreaDesc
from vmalab.files import File, FileOperations
from vmalab.mm import MM
from vmalab.resources import PfnAllocator

RELEASE = True


class PerFileBufferOps(FileOperations):
    has_mmap_prepare = True
    fault_style = "filemap"
    has_release = RELEASE

    def __init__(self, mm: MM) -> None:
        self.pool = PfnAllocator(mm, "per-file buffer", 0x1A0000, 4)
        self.buf = self.pool.alloc()  # per open file, like a ->open that sets file->private_data

    def mmap_prepare(self, desc: VmAreaDesc) -> int:
        desc.private_data = self.buf
        return 0

    def release(self, file: File) -> None:  # noqa: ARG002
        self.pool.free(self.buf)


def open(mm: MM, size: int) -> int:  # noqa: A001 - the explorer's driver convention
    return mm.open_device("/dev/perfile", PerFileBufferOps(mm), size or 1 << 20)
