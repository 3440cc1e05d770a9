"""Kernel profiles: the driver contract as each kernel release has it.

The ``mmap_prepare`` contract kept changing after Linux 6.18 (the live kernel here): actions with
success/error hooks arrived in 6.19, ``vm_ops->mapped`` and new action types in 7.1, ``error_override``
replaced the hooks in 7.2, and 7.3 brought two ``__mmap_region()`` hotfixes.  An :class:`~vmalab.mm.MM`
runs under one profile (``MM(kernel="7.1")``) and every difference between releases lives in the profile
classes below — attributes for what exists, methods for the steps that behave differently — not in
scattered ``if``s in the mmap path.

Profiles: ``6.18`` (default; checkable against the live kernel), ``seed-v3`` (the design exactly as the
seed patch describes it), ``6.19`` and ``7.0`` (actions, success/error hooks, unmap before the rmap
unlock), ``7.1`` (``vm_ops->mapped``, SIMPLE_IO_REMAP, MAP_KERNEL_PAGES, ``is_compat``, rmap handling in
mmap_action_complete), ``7.2`` (mainline 7.2.0: ``error_override`` instead of hooks), ``7.3`` (7.2 plus the
hotfixes 6cc27d821963 and 976d5e0ddac8) and ``finish`` (experimental: the seed reviewer's single
``finish(err)`` hook on top of 7.1).
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any

from . import driver as D
from .constants import errname
from .driver import MmapAction, MmapActionType, PrivateRef, VmAreaDesc
from .vma import do_vmi_munmap

if TYPE_CHECKING:
    from .files import File, VmOperations
    from .mm_types import VMA, MmStruct

T = MmapActionType



def action_detail(vma: VMA, action: MmapAction) -> dict[str, Any]:
    """The trace details of an action line: the PFN or physical address, the virtual range and the page
    protection it maps with (``pgprot`` as the x86 PTE bits), or the kernel pages it inserts."""
    T = D.MmapActionType
    if action.type in (T.REMAP_PFN, T.IO_REMAP_PFN):
        return {"pfn": f"{action.start_pfn:#x}", "start": action.start, "end": action.start + action.size,
                "pgprot": f"{action.pgprot:#x}"}
    if action.type is T.SIMPLE_IO_REMAP:
        return {"phys": f"{action.start_phys_addr:#x}", "start": vma.vm_start,
                "end": vma.vm_start + min(action.size, vma.vm_end - vma.vm_start), "pgprot": f"{vma.page_prot:#x}"}
    if action.type is T.MAP_KERNEL_PAGES:
        return {"pages": action.nr_pages, "pgoff": action.pgoff, "start": action.start or vma.vm_start,
                "end": (action.start or vma.vm_start) + (action.nr_pages << 12)}
    return {}

class KernelProfile:
    """Linux 6.18: ``f_op->mmap_prepare`` and ``vm_area_desc`` without actions."""

    name = "6.18"
    summary = "mmap_prepare + vm_area_desc, no actions (the live kernel)"
    has_actions = False
    action_types: frozenset[MmapActionType] = frozenset()
    has_vma_flags = False  # desc->vma_flags (6.19 union, 7.0 only)
    has_hooks = False  # action.success_hook / error_hook
    has_error_override = False
    has_mapped = False  # vm_ops->mapped
    has_finish_hook = False
    has_rmap_hide = False  # action.hide_from_rmap_until_complete
    ioremap_is_flag = False  # seed-v3: remap.is_io_remap instead of a type
    prepare_validates = False  # 7.1: mmap_action_prepare() returns errors (range, CoW, geometry)
    prepare_failure_releases_charge = False  # 7.3 (6cc27d821963) jumps to unacct_error; 6.16-7.2.0 leak it
    user_fields_only_on_new_vma = False  # 7.3 (976d5e0ddac8): driver vm_ops/private data not on a merged VMA
    null_vm_ops_makes_anonymous = False  # 7.2: desc starts with dummy ops; NULL means anonymous
    # refuse a legacy ->mmap that installs ->mapped (-EINVAL): only linux-next of March 2026 did; the check
    # was removed before 7.1 shipped (3d3544a6c996), so no released profile sets it
    legacy_mapped_rejected = False
    compat_desc_copies_vm_ops = False  # 7.2
    compat_names: tuple[str, ...] = ("compat_vma_mmap_prepare", "__compat_vma_mmap_prepare")

    def features(self) -> dict[str, Any]:
        """The profile's switches, for documentation and ``vmalab profiles``."""
        keys = [k for k in dir(KernelProfile) if k.startswith(("has_", "prepare_", "null_", "legacy_", "compat_",
                                                                "ioremap_", "user_"))]
        out: dict[str, Any] = {k: getattr(self, k) for k in sorted(keys) if not callable(getattr(self, k))}
        out["action_types"] = sorted(t.value for t in self.action_types)
        return out

    # -- descriptor ----------------------------------------------------------------------------------
    def new_desc(self, mm: MmStruct, file: File, start: int, end: int, pgoff: int, vm_flags: int,
                 page_prot: int = 0) -> VmAreaDesc:
        """The descriptor __mmap_region()/call_mmap_prepare() hands to the driver."""
        return VmAreaDesc(self, mm, file, start, end, pgoff, file, vm_flags, page_prot, self.initial_desc_vm_ops())

    def initial_desc_vm_ops(self) -> VmOperations | None:
        return None

    def user_vm_ops(self, vma: VMA, vm_ops: VmOperations | None, default: VmOperations | None) -> None:
        """set_vma_user_defined_fields(): 6.16–7.1 install the driver's vm_ops only if it set any."""
        if vm_ops is not None:
            vma.vm_ops = vm_ops

    # -- actions -------------------------------------------------------------------------------------
    def action_prepare(self, mm: MmStruct, desc: VmAreaDesc) -> int:
        """mmap_action_prepare() right after the driver's hook; 6.18 has none."""
        return 0

    def action_complete(self, mm: MmStruct, vma: VMA, action: MmapAction, is_compat: bool) -> int:
        """mmap_action_complete() + mmap_action_finish(); 6.18 has none."""
        return 0

    # shared pieces for the profiles with actions
    def _unmap_new(self, mm: MmStruct, vma: VMA, err: int, is_compat: bool) -> None:
        """The unmap of a new VMA whose action failed.  In the compat path the VMA is still detached:
        only 6.19/7.0 get here with ``is_compat`` (their compat_vma_mmap() called do_munmap(), which
        finds nothing in the tree and WARNs in vma_mark_detached())."""
        start, end = vma.vm_start, vma.vm_end
        if is_compat:
            mm.probe.trace("mmap", "WARN: do_munmap() on a detached VMA (compat path)", start=start, end=end)
            return
        if mm.probe.inject("error_unmap"):  # mmap_action_finish() ignores do_munmap()'s return value
            mm.probe.trace("mmap", "do_munmap() of the failed VMA failed (ignored): the VMA stays mapped",
                      start=start, end=end)
            return
        do_vmi_munmap(mm, start, end)
        mm.probe.trace("mmap", f"unmapped after error -{errname(err)}", start=start, end=end)

    def _rmap_unlock(self, mm: MmStruct, vma: VMA, action: MmapAction) -> None:
        if action.hide_from_rmap_until_complete and vma.vm_file is not None:
            ino = vma.vm_file.inode.ino
            if ino in mm.locks.i_mmap:
                mm.locks.unlock_i_mmap(ino)
                mm.probe.trace("mmap", "rmap lock released", ino=ino)
            action.hide_from_rmap_until_complete = False

    def _call_mapped(self, mm: MmStruct, vma: VMA) -> int:
        """call_vma_mapped() (7.1+): ``vm_ops->mapped(start, end, pgoff, file, &private)``."""
        ops = vma.vm_ops
        mapped = getattr(ops, "mapped", None) if ops is not None else None
        if mapped is None:
            return 0
        ref = PrivateRef(vma.vm_private_data)
        e = mm.probe.inject("mapped") or mm.callback(
            "mapped", lambda: mapped(vma.vm_start, vma.vm_end, vma.vm_pgoff, vma.vm_file, ref), vma=vma)
        if e:
            return int(e)
        vma.vm_private_data = ref.value
        return 0


class Profile619(KernelProfile):
    """Linux 6.19: actions (REMAP_PFN, IO_REMAP_PFN) with success/error hooks; prepare cannot fail;
    mmap_action_finish() unmaps on error while the caller still holds the rmap lock (the deadlock later
    fixed in 7.0.y); compat_vma_mmap() unmaps the detached VMA on error."""

    name = "6.19"
    summary = "actions + success/error hooks; unmap before rmap unlock"
    has_actions = True
    action_types = frozenset({T.NOTHING, T.REMAP_PFN, T.IO_REMAP_PFN})
    has_vma_flags = True
    has_hooks = True
    has_rmap_hide = True
    compat_names = ("compat_vma_mmap", "__compat_vma_mmap")

    def action_prepare(self, mm: MmStruct, desc: VmAreaDesc) -> int:
        a = desc.action
        if a.type in (T.REMAP_PFN, T.IO_REMAP_PFN):
            D.remap_pfn_range_prepare(desc, checked=False)
        return 0

    def _run(self, mm: MmStruct, vma: VMA, action: MmapAction) -> int:
        if action.type is T.IO_REMAP_PFN:
            io = MmapAction(**{**action.__dict__, "type": T.REMAP_PFN})
            return D.do_action(mm, vma, io)
        return D.do_action(mm, vma, action)

    def action_complete(self, mm: MmStruct, vma: VMA, action: MmapAction, is_compat: bool) -> int:
        err = self._run(mm, vma, action)
        mm.probe.trace("mmap", f"action {action.type.value} " + ("ok" if not err else f"failed -{errname(err)}"),
                       **action_detail(vma, action))
        if err:
            # mmap_action_finish(): unmap first — the rmap lock is still held by the caller here.
            if action.hide_from_rmap_until_complete and vma.vm_file is not None \
                    and vma.vm_file.inode.ino in mm.locks.i_mmap:
                mm.probe.trace("mmap", "lock order: do_munmap() with i_mmap_rwsem held (deadlock in this kernel)",
                          ino=vma.vm_file.inode.ino)
                mm.lock_events.append(("unmap-under-rmap-lock", self.name))
            self._unmap_new(mm, vma, err, is_compat)
            if action.error_hook is not None:
                hook = action.error_hook
                new = mm.callback("error_hook", lambda: hook(err), vma=None)
                if not new:
                    mm.probe.trace("mmap", "VM_WARN: error_hook cleared the error")
                err = int(new)
        elif action.success_hook is not None:
            hook_s = action.success_hook
            err = int(mm.probe.inject("success_hook") or mm.callback("success_hook", lambda: hook_s(vma), vma=vma))
            if err:
                mm.probe.trace("mmap", f"success_hook failed -{errname(err)}: VMA stays mapped")
        self._rmap_unlock(mm, vma, action)
        return err


class Profile70(Profile619):
    """Linux 7.0: as 6.19 (the VMA flags type became a bitmap: ``desc->vma_flags``)."""

    name = "7.0"
    summary = "as 6.19; desc->vma_flags"


class ProfileSeedV3(Profile619):
    """The seed patch (v3, Sep 2025) exactly as written: MMAP_NOTHING / MMAP_REMAP_PFN with
    ``remap.is_io_remap``; success_hook(const vma) and error_hook(err); "If any error arises on these final
    actions, we simply unmap the VMA altogether"; no rmap hiding, no vm_ops->mapped."""

    name = "seed-v3"
    summary = "the seed patch: REMAP_PFN (+is_io_remap), success/error hooks"
    action_types = frozenset({T.NOTHING, T.REMAP_PFN})
    has_vma_flags = False
    has_rmap_hide = False
    ioremap_is_flag = True


class Profile71(KernelProfile):
    """Linux 7.1: mmap_action_prepare() validates (range -EFAULT, partial CoW -EINVAL, simple_ioremap
    geometry, unknown type); IO_REMAP/SIMPLE_IO_REMAP are rewritten to REMAP_PFN; MAP_KERNEL_PAGES;
    ``vm_ops->mapped``; finish order action → mapped → success_hook → rmap unlock → unmap → error_hook;
    the compat path (is_compat) never unmaps and skips the error hook."""

    name = "7.1"
    summary = "mapped, SIMPLE_IO_REMAP, MAP_KERNEL_PAGES, is_compat, rmap unlock before unmap"
    has_actions = True
    action_types = frozenset({T.NOTHING, T.REMAP_PFN, T.IO_REMAP_PFN, T.SIMPLE_IO_REMAP, T.MAP_KERNEL_PAGES})
    has_vma_flags = True
    has_hooks = True
    has_mapped = True
    has_rmap_hide = True
    prepare_validates = True
    compat_names = ("compat_vma_mmap", "compat_set_desc_from_vma", "__compat_vma_mmap")

    def action_prepare(self, mm: MmStruct, desc: VmAreaDesc) -> int:
        e = self.check_action(desc)
        if e:
            return e
        a = desc.action
        if a.type is T.NOTHING:
            return 0
        if a.type in (T.REMAP_PFN, T.IO_REMAP_PFN):
            a.type = T.REMAP_PFN  # io_remap_pfn_range_prepare(): "remap does the actual work"
            return D.remap_pfn_range_prepare(desc, checked=True)
        if a.type is T.SIMPLE_IO_REMAP:
            return D.simple_ioremap_prepare(desc)
        if a.type is T.MAP_KERNEL_PAGES:
            return D.map_kernel_pages_prepare(desc)
        mm.probe.trace("mmap", "WARN: unknown mmap action type")
        return -errno.EINVAL

    def check_action(self, desc: VmAreaDesc) -> int:
        return 0

    def _success(self, mm: MmStruct, vma: VMA, action: MmapAction) -> int:
        if action.success_hook is None:
            return 0
        hook = action.success_hook
        return int(mm.probe.inject("success_hook") or mm.callback("success_hook", lambda: hook(vma), vma=vma))

    def _error(self, mm: MmStruct, action: MmapAction, err: int, is_compat: bool) -> int:
        if is_compat or action.error_hook is None:
            return err
        hook = action.error_hook
        new = int(mm.callback("error_hook", lambda: hook(err), vma=None))
        if not new:
            mm.probe.trace("mmap", "VM_WARN: error_hook returned 0: mmap() will return the address of an "
                              "unmapped range")
        return new

    def action_complete(self, mm: MmStruct, vma: VMA, action: MmapAction, is_compat: bool) -> int:
        err = D.do_action(mm, vma, action)
        mm.probe.trace("mmap", f"action {action.type.value} " + ("ok" if not err else f"failed -{errname(err)}"),
                       **action_detail(vma, action))
        if not err:
            err = self._call_mapped(mm, vma)
        if not err:
            err = self._success(mm, vma, action)
        self._rmap_unlock(mm, vma, action)
        if not err or is_compat:
            return err
        self._unmap_new(mm, vma, err, is_compat)
        return self._error(mm, action, err, is_compat)


class Profile72(Profile71):
    """Linux 7.2.0 (mm-stable-2026-06-18: 17986198a7b9, 8876dc0780f2, 4f5b8759262e): no success/error
    hooks; ``error_override`` replaces a failure's errno; check_mmap_action() refuses a non-errno override;
    desc starts with the dummy vm_ops and a NULL vm_ops after prepare makes the VMA anonymous; the compat
    desc copies the VMA's vm_ops.  A failing mmap_prepare still keeps the commit charge (abort_munmap) and
    the driver's vm_ops/private data still go onto a VMA the range merged into: both changed in 7.3."""

    name = "7.2"
    summary = "mainline 7.2.0: error_override instead of hooks; vma_desc_set_anonymous"
    has_hooks = False
    has_error_override = True
    null_vm_ops_makes_anonymous = True
    compat_desc_copies_vm_ops = True

    def initial_desc_vm_ops(self) -> VmOperations | None:
        from .files import DUMMY_VM_OPS
        return DUMMY_VM_OPS

    def user_vm_ops(self, vma: VMA, vm_ops: VmOperations | None, default: VmOperations | None) -> None:
        from .files import DUMMY_VM_OPS
        if vm_ops is None:
            vma.vm_ops = None  # vma_set_anonymous(): "Only /dev/zero should do this"
        elif vm_ops is not DUMMY_VM_OPS:
            vma.vm_ops = vm_ops

    def check_action(self, desc: VmAreaDesc) -> int:
        a = desc.action
        if a.success_hook is not None or a.error_hook is not None:
            raise D.ProfileFeatureError(f"kernel {self.name} has no success_hook/error_hook")
        if a.error_override and not D.is_valid_error(a.error_override):
            desc.mm.probe.trace("mmap", "WARN: error_override is not an errno")
            return -errno.EINVAL
        return 0

    def _success(self, mm: MmStruct, vma: VMA, action: MmapAction) -> int:
        return 0

    def _error(self, mm: MmStruct, action: MmapAction, err: int, is_compat: bool) -> int:
        return action.error_override or err


class Profile73(Profile72):
    """Linux 7.3 (v7.3-rc6): 7.2 plus two __mmap_region() hotfixes: 6cc27d821963 (7.3-rc4, "mm/vma:
    correctly unaccount on mmap_prepare() failure") releases the commit charge of a failed mmap_prepare
    (unacct_error); 976d5e0ddac8 (7.3-rc6, "mm/vma: predicate setting mmap_prepare VMA fields on new vma
    alloc") runs set_vma_user_defined_fields() only for a newly allocated VMA, never a merged one."""

    name = "7.3"
    summary = "7.2 + 6cc27d821963 (charge released) + 976d5e0ddac8 (user fields only on a new VMA)"
    prepare_failure_releases_charge = True
    user_fields_only_on_new_vma = True


class ProfileFinish(Profile71):
    """Experimental: 7.1 with the seed reviewer's single hook instead of two — ``action.finish(err)`` is
    called exactly once with the outcome (0 or the error, after the unmap on error); its return value is
    the result; on success a non-zero return unmaps the VMA; on error it may replace but not clear it.
    In the compat path an error behaves as 7.1: the raw error, nothing unmapped, ``finish`` not called."""

    name = "finish"
    summary = "experimental: one finish(err) hook instead of success/error hooks"
    has_hooks = False
    has_finish_hook = True

    def check_action(self, desc: VmAreaDesc) -> int:
        a = desc.action
        if a.success_hook is not None or a.error_hook is not None:
            raise D.ProfileFeatureError("the finish profile has one finish(err) hook, not success/error hooks")
        return 0

    def action_complete(self, mm: MmStruct, vma: VMA, action: MmapAction, is_compat: bool) -> int:
        err = D.do_action(mm, vma, action)
        mm.probe.trace("mmap", f"action {action.type.value} " + ("ok" if not err else f"failed -{errname(err)}"),
                       **action_detail(vma, action))
        if not err:
            err = self._call_mapped(mm, vma)
        self._rmap_unlock(mm, vma, action)
        if err and is_compat:
            return err  # compat errors behave as 7.1: the raw error, no unmap, no completion hook
        if err:
            self._unmap_new(mm, vma, err, is_compat)
        if action.finish is None:
            return err
        fin = action.finish
        r = int((0 if err else mm.probe.inject("finish"))
                or mm.callback("finish", lambda: fin(err), vma=None if err else vma))
        if err:
            if not r:
                mm.probe.trace("mmap", "VM_WARN: finish() cleared the error; keeping it")
                return err
            return r
        if r and not is_compat:
            self._unmap_new(mm, vma, r, is_compat)
        return r


PROFILES: dict[str, KernelProfile] = {p.name: p for p in (
    KernelProfile(), ProfileSeedV3(), Profile619(), Profile70(), Profile71(), Profile72(), Profile73(),
    ProfileFinish())}
DEFAULT_PROFILE = "6.18"


def get_profile(name: str) -> KernelProfile:
    """The profile called ``name`` (``ValueError`` listing the known ones otherwise)."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown kernel profile {name!r} (known: {', '.join(PROFILES)})") from None
