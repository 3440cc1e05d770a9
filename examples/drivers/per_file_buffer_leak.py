"""WRONG (on purpose): ``per_file_buffer.py`` without ``f_op->release``: the per-file page is never freed.

Nothing frees the buffer when the file goes away; ``vmalab explore`` reports it once the runs have closed the
descriptor and unmapped everything (``PFN(s) still allocated``).
"""

from __future__ import annotations

from vmalab.driver import VmAreaDesc
from vmalab.files import File, FileOperations
from vmalab.mm import MM
from vmalab.resources import PfnAllocator

RELEASE = False  # BUG: no ->release


class PerFileBufferLeakOps(FileOperations):
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
    return mm.open_device("/dev/perfile", PerFileBufferLeakOps(mm), size or 1 << 20)
