"""WRONG (on purpose): an error hook that returns a positive errno.

6.19-7.1 let a driver filter the error of a failed action with ``action.error_hook(err)``, which must return
a negative errno.  This device wants to tell user space to retry and returns ``EAGAIN`` — positive, 11 —
so the failed mmap() "succeeds" with the address 0xb after its VMA was unmapped.  ``vmalab explore`` says
what the syscall returned (``mmap() returned 0xb ...``).  The fix, ``errhook_positive_fixed.py``, returns
``-EAGAIN``.  Needs the 6.19-7.1 hooks.
"""

from __future__ import annotations

import errno

from vmalab.driver import ProfileFeatureError, VmAreaDesc, mmap_action_remap_full
from vmalab.files import FileOperations

DEV_PFN = 0x170000


class ErrHookOps(FileOperations):
    has_mmap_prepare = True
    device_ranges = [(DEV_PFN, 256)]

    def mmap_prepare(self, desc: VmAreaDesc) -> int:
        if not desc.profile.has_hooks:
            raise ProfileFeatureError(f"kernel {desc.profile.name} has no action.error_hook")
        mmap_action_remap_full(desc, DEV_PFN + desc.pgoff)
        desc.action.error_hook = self.error
        return 0

    def error(self, err: int) -> int:  # noqa: ARG002
        return errno.EAGAIN  # BUG: a positive errno; the hook must return -EAGAIN
