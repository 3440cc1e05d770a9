"""The named fallible points of the modelled paths (``vmalab faults list``).

Each point is a place where the kernel can fail (an allocation, an LSM hook, the commit-charge check, a
driver callback) and where the model calls :meth:`vmalab.probe.Probe.inject`.  ``mm.fail_plan[point] = (k,
-errno)`` (or a scenario's ``"inject"`` field) fails the k-th hit of a point; the model then takes the
kernel's error path for that point.  ``errno`` is the value the kernel itself returns there (an
allocation failure is -ENOMEM, an LSM denial -EACCES, ``cap_mmap_addr()`` -EPERM); a driver callback can
fail with any errno, -ENOMEM is only the default.  ``outcome`` says what the caller does with the error:

* ``"returned"``: the syscall returns it (possibly filtered by the driver's error hook / error_override /
  finish when the point is in the action-completion phase: ``completion``);
* ``"absorbed"``: the caller recovers and the syscall succeeds (a failed merge falls back to a new VMA,
  a user fault that hit -ENOMEM is retried after the OOM killer ran);
* ``"ignored"``: the kernel ignores the error (the unmap in mmap_action_finish()).

This module holds data only: no state.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass


@dataclass(frozen=True)
class FaultPoint:
    """One named fallible point."""

    name: str
    function: str  # the kernel function that fails
    description: str
    errno: int  # the errno the kernel returns there (positive)
    outcome: str = "returned"  # "returned", "absorbed" or "ignored"
    completion: bool = False  # in mmap_action_complete(): the driver may filter the errno
    driver: bool = False  # a driver callback (any errno is possible; errno is the default)


_POINTS = [
    FaultPoint("security_mmap_file", "security_mmap_file() in vm_mmap_pgoff()",
               "LSM refuses the mapping before the mmap lock is taken", errno.EACCES),
    FaultPoint("security_mmap_addr", "security_mmap_addr() in __get_unmapped_area()",
               "LSM / cap_mmap_addr() refuses the chosen address", errno.EPERM),
    FaultPoint("gather", "vms_gather_munmap_vmas() (detach-tree store)",
               "unmapping the overlapped range fails: VMAs reattached, edge splits stay", errno.ENOMEM),
    FaultPoint("split_vma", "__split_vma(): vm_area_dup() / vma_iter_prealloc()",
               "a split (munmap/mprotect/mmap edge) cannot allocate the new VMA; vm_ops->open not called",
               errno.ENOMEM),
    FaultPoint("vm_enough_memory", "security_vm_enough_memory_mm() in __mmap_setup()",
               "overcommit refuses the commit charge of a private writable mapping", errno.ENOMEM),
    FaultPoint("mmap_prepare", "f_op->mmap_prepare() (vfs_mmap_prepare())",
               "the driver's hook fails: no VMA is created (6.16-7.1 keep the commit charge)", errno.ENOMEM,
               driver=True),
    FaultPoint("action_prepare", "mmap_action_prepare() (7.1+; 6.19/7.0 cannot fail)",
               "the action's prepare step refuses the descriptor", errno.EINVAL),
    FaultPoint("vma_merge", "vma_expand(): vma_iter_prealloc() in vma_merge_new_range()",
               "merging the new range fails: __mmap_region() falls back to a new VMA", errno.ENOMEM,
               outcome="absorbed"),
    FaultPoint("vma_alloc", "vm_area_alloc() in __mmap_new_vma()",
               "no VMA can be allocated", errno.ENOMEM),
    FaultPoint("vma_prealloc", "vma_iter_prealloc() in __mmap_new_vma()",
               "the maple tree cannot preallocate for the new VMA", errno.ENOMEM),
    FaultPoint("mmap", "f_op->mmap() via mmap_file() (legacy hook)",
               "a legacy ->mmap fails: the VMA is freed without ->close", errno.ENOMEM, driver=True),
    FaultPoint("action_complete", "remap_pfn_range_complete() / map_kernel_pages_complete()",
               "the action's page-table work fails: the new VMA is unmapped", errno.ENOMEM, completion=True),
    FaultPoint("mapped", "vm_ops->mapped() via call_vma_mapped() (7.1+)",
               "the driver's mapped hook fails: the new VMA is unmapped (its ->close runs)", errno.ENOMEM,
               completion=True, driver=True),
    FaultPoint("success_hook", "mmap_action.success_hook() (6.19-7.1)",
               "the success hook fails: 7.1 unmaps, 6.19/7.0 return the error with the VMA mapped",
               errno.ENOMEM, completion=True, driver=True),
    FaultPoint("finish", "mmap_action.finish(0) (experimental finish profile)",
               "the single finish hook fails on success: the new VMA is unmapped", errno.ENOMEM,
               completion=True, driver=True),
    FaultPoint("error_unmap", "do_munmap() in mmap_action_finish() (error path)",
               "the unmap of the failed new VMA fails: the kernel ignores it, the VMA stays mapped",
               errno.ENOMEM, outcome="ignored", completion=True),
    FaultPoint("anon_vma_prepare", "__anon_vma_prepare() (fault path)",
               "no anon_vma for a write fault: VM_FAULT_OOM (a user fault is retried; populate stops)",
               errno.ENOMEM, outcome="absorbed"),
]

FAULT_POINTS: dict[str, FaultPoint] = {p.name: p for p in _POINTS}


def fault_point(name: str) -> FaultPoint:
    """The point called ``name`` (``ValueError`` listing the known ones otherwise)."""
    try:
        return FAULT_POINTS[name]
    except KeyError:
        raise ValueError(f"unknown fault point {name!r} (known: {', '.join(FAULT_POINTS)})") from None
