"""A reference taken "on success" — written for each completion design, to measure the reviewer's second
question ("Do we need two hooks? ... ``int (*finish)(int err)``").

The device counts the VMAs that use it (a :class:`~vmalab.resources.Kref`, dropped in ``->close``) and
takes the reference once the mapping is known to exist:

* 6.19, 7.0, seed-v3: in ``success_hook``.  Called only on success — but when the action fails the VMA is
  unmapped and ``->close`` runs, and a success hook gets a ``const`` VMA, so it cannot mark the VMA for
  ``->close`` to tell the two cases apart (WRONG: close drops a reference that was never taken);
* 7.1, ~7.2: in ``vm_ops->mapped``, which stores a marker in the VMA's private data; ``->close`` drops the
  reference only for a marked VMA (the vme_user pattern): right;
* the experimental ``finish`` profile: in ``finish(err)``, written the way Lorenzo predicted a driver that
  "intends only to do something on success" would write it with an ``err`` parameter — without looking
  at ``err`` (WRONG).

It remaps device memory (an action), so it never merges.  ``vmalab explore examples/drivers/success_ref.py
--all-profiles`` measures each design.
"""

from __future__ import annotations

from vmalab.driver import PrivateRef, ProfileFeatureError, VmAreaDesc, mmap_action_remap_full
from vmalab.files import File, FileOperations, VmOperations
from vmalab.mm import MM
from vmalab.mm_types import VMA
from vmalab.resources import Kref

DEV_PFN = 0x160000
MAPPED = object()  # the per-VMA marker mapped() leaves for ->open/->close


class CountingVmOps(VmOperations):
    has_close = True

    def __init__(self, users: Kref, in_mapped: bool) -> None:
        self.users = users
        self.in_mapped = in_mapped
        if in_mapped:
            self.mapped = self._mapped

    def _mapped(self, start: int, end: int, pgoff: int, file: File | None, priv: PrivateRef) -> int:  # noqa: ARG002
        self.users.get()
        priv.value = MAPPED
        return 0

    def open(self, vma: VMA) -> None:
        if not self.in_mapped or vma.vm_private_data is MAPPED:
            self.users.get()

    def close(self, vma: VMA) -> None:
        if not self.in_mapped or vma.vm_private_data is MAPPED:
            self.users.put()


class SuccessRefOps(FileOperations):
    has_mmap_prepare = True

    def __init__(self, mm: MM) -> None:
        prof = mm.profile
        if not prof.has_actions:
            raise ProfileFeatureError(f"kernel {prof.name} has no actions")
        self.users = Kref(mm, "success_ref users")
        self.vm_ops = CountingVmOps(self.users, in_mapped=prof.has_mapped and not prof.has_finish_hook)

    def mmap_prepare(self, desc: VmAreaDesc) -> int:
        desc.vm_ops = self.vm_ops
        mmap_action_remap_full(desc, DEV_PFN)
        prof = desc.profile
        if prof.has_finish_hook:
            desc.action.finish = self.finish
        elif not prof.has_mapped:
            desc.action.success_hook = self.success
        return 0

    def success(self, vma: VMA) -> int:  # noqa: ARG002
        self.users.get()
        return 0

    def finish(self, err: int) -> int:
        self.users.get()  # BUG (finish design): "on success" — but finish also runs after a failure
        return err


def open(mm: MM, size: int) -> int:  # noqa: A001 - the explorer's driver convention
    return mm.open_device("/dev/success_ref", SuccessRefOps(mm), size)
