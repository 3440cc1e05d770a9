"""A driver whose action fails at completion, to show what the core does then: the new VMA is unmapped
(its ``close`` runs), MAP_FIXED victims stay gone (a hole), the errno comes back to mmap().

It is a /dev/mem-like remapper (drivers/char/mem.c pattern) with a bug: it remaps only the **first page**
of the VMA.  For a shared mapping that is allowed (the rest stays unpopulated; a touch there is SIGBUS).
For a private writable mapping it is a partial CoW remap, which mm/memory.c refuses with -EINVAL:

* 6.19, 7.0, seed-v3: remap_pfn_range_prepare() does not validate, so the failure happens at completion
  (remap_pfn_range_internal()), after the VMA was established: the VMA is unmapped, mmap() = -EINVAL.
* 7.1+: remap_pfn_range_prepare() refuses it (-EINVAL) before any VMA exists (and the commit charge
  taken at setup is leaked, like every prepare failure up to 7.1).

Fault injection (``mm.fail_plan["action_complete"]``) makes any of its remaps fail at completion on
every profile.  ``dev:failing_action`` counts ``close_calls``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..constants import PAGE_SIZE
from ..driver import mmap_action_remap
from ..fdtable import open_device
from ..files import FileOperations, VmOperations
from . import register

if TYPE_CHECKING:
    from ..driver import VmAreaDesc
    from ..mm_types import VMA, MmStruct

FAILING_PFN = 0xE0000


class FailingVmOps(VmOperations):
    has_close = True

    def __init__(self, dev: FailingActionOps) -> None:
        self.dev = dev

    def close(self, vma: VMA) -> None:  # noqa: ARG002
        self.dev.close_calls += 1


class FailingActionOps(FileOperations):
    has_mmap_prepare = True

    def __init__(self) -> None:
        self.close_calls = 0
        self.vm_ops = FailingVmOps(self)

    def mmap_prepare(self, desc: VmAreaDesc) -> int:
        desc.vm_ops = self.vm_ops
        mmap_action_remap(desc, desc.start, FAILING_PFN, PAGE_SIZE)
        return 0


@register("failing_action")
def open_failing_action(mm: MmStruct, size: int) -> int:  # noqa: ARG001
    return open_device(mm, "/dev/failing_action", FailingActionOps())
