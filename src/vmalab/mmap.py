"""mmap(2) and munmap(2): mm/mmap.c and the mapping half of mm/vma.c.

Models arch/x86/kernel/sys_x86_64.c: sys_mmap, mm/util.c: vm_mmap_pgoff(), mm/mmap.c: do_mmap() (argument
checks in the kernel's order, the flag translation, file checks), and mm/vma.c: __mmap_region() as the
kernel writes it since 6.12: small named steps over one :class:`MmapState` (``struct mmap_state``) with
the two labelled error exits ``unacct_error`` and ``abort_munmap``:

* :func:`__mmap_setup` — gather the VMAs the range overlaps, may_expand_vm(), the commit charge,
  vms_clean_up_area();
* :func:`call_mmap_prepare` — ``f_op->mmap_prepare`` on a ``vm_area_desc`` and the profile's
  mmap_action_prepare();
* vma_merge_new_range(), else :func:`__mmap_new_vma` (the legacy ``->mmap`` through :func:`mmap_file`,
  or shared-anonymous shmem);
* :func:`__mmap_complete` and the profile's mmap_action_complete().

The driver contract's version differences are the kernel profile's (:mod:`vmalab.profiles`): this module
asks ``mm.profile`` and never compares release names.
"""

from __future__ import annotations

import errno
import functools
from typing import TYPE_CHECKING, Any

from . import constants as C
from .constants import PAGE_SHIFT, PAGE_SIZE, TASK_SIZE, ULONG_MASK, VM_GROWSDOWN, VM_MAYSHARE, VM_SHARED, VM_WRITE
from .files import (
    DUMMY_VM_OPS,
    FMODE_READ,
    FMODE_WRITE,
    S_IFREG,
    File,
    ProfileFeatureError,
    VmOperations,
    fput,
    hstate_sizelog,
    hugetlb_file_setup,
    shmem_zero_setup,
)
from .gup import mm_populate
from .layout import get_unmapped_area, round_hint_to_min
from .mm_types import VMA, MmStruct
from .mmu_notifier import invalidate_range
from .vma import (
    VmaMunmap,
    do_vmi_munmap,
    merge_new_range,
    vms_abort_munmap_vmas,
    vms_clean_up_area,
    vms_complete_munmap_vmas,
    vms_gather_munmap_vmas,
)

if TYPE_CHECKING:
    from .driver import MmapAction

#: the errno a refused driver's step "returns" inside the model so that the error exits unwind it; it never
#: reaches the caller, who gets the ProfileFeatureError instead
REFUSED = -errno.ENODEV

def sys_mmap(mm: MmStruct, addr: int, length: int, prot: int, flags: int, fd: int, offset: int) -> int:
    """Models arch/x86/kernel/sys_x86_64.c: sys_mmap -> ksys_mmap_pgoff -> vm_mmap_pgoff -> do_mmap.
    Arguments are taken as the unsigned longs the kernel sees; returns the address or -errno."""
    addr &= ULONG_MASK
    length &= ULONG_MASK
    offset &= ULONG_MASK
    prot &= 0xFFFFFFFF
    flags &= ULONG_MASK  # an unsigned long up to do_mmap(): bits above 31 reach MAP_SHARED_VALIDATE's check
    if offset & (PAGE_SIZE - 1):
        return -errno.EINVAL
    file: File | None = None
    huge_file: File | None = None  # the hugetlbfs file made for anonymous MAP_HUGETLB (fput() at the end)
    if not flags & C.MAP_ANONYMOUS:
        file = mm.fdtable.get(fd & 0xFFFFFFFF)  # fget(unsigned int fd)
        if file is None:
            return -errno.EBADF
        if file.f_op.huge_page_size:  # is_file_hugepages(): the length is rounded up to a huge page
            length = _huge_align(length, file.f_op.huge_page_size)
        elif flags & C.MAP_HUGETLB:
            return -errno.EINVAL
    elif flags & C.MAP_HUGETLB:
        # ksys_mmap_pgoff(): the MAP_HUGE_* size must name an hstate; the mapping is of a new unlinked
        # hugetlbfs file (hugetlb_file_setup(), which reserves nothing: acctflag VM_NORESERVE)
        hs = hstate_sizelog((flags >> C.MAP_HUGE_SHIFT) & C.MAP_HUGE_MASK)
        if hs is None:
            return -errno.EINVAL
        length = _huge_align(length, hs.size)
        file = huge_file = hugetlb_file_setup(mm, length, hs)
    try:
        e = mm.probe.inject("security_mmap_file")
        if e:
            return e
        populate: list[int] = []
        locks = mm.locks
        outer = locks.mmap_lock_acquire(True)
        try:
            ret = do_mmap(mm, file, addr, length, prot, flags, offset >> PAGE_SHIFT, populate)
        finally:
            locks.mmap_lock_release(outer, True)
        if populate:
            with mm.locks.mmap_read():
                mm_populate(mm, ret, populate[0])
        return ret
    finally:
        if huge_file is not None:
            fput(mm, huge_file)


def _huge_align(length: int, size: int) -> int:
    """ALIGN(len, huge_page_size) on an unsigned long (wraps to 0 past 2**64)."""
    return (length + size - 1) & ~(size - 1) & ULONG_MASK


def do_mmap(mm: MmStruct, file: File | None, addr: int, length: int, prot: int, flags: int, pgoff: int,
            populate: list[int] | None = None) -> int:
    """Models mm/mmap.c: do_mmap(); a length to populate (after the mmap lock is dropped, as
    vm_mmap_pgoff() does) is appended to ``populate``."""
    if not length:
        return -errno.EINVAL
    if flags & C.MAP_FIXED_NOREPLACE:
        flags |= C.MAP_FIXED  # before the hint rounding: an unaligned NOREPLACE address is EINVAL
    if not flags & C.MAP_FIXED:
        addr = round_hint_to_min(addr, mm.mmap_min_addr)
    length = C.page_align(length)
    if not length:
        return -errno.ENOMEM
    if (pgoff + (length >> PAGE_SHIFT)) & ULONG_MASK < pgoff:
        return -errno.EOVERFLOW
    if mm.map_count > mm.max_map_count:
        return -errno.ENOMEM
    vm_flags = (C.calc_vm_prot_bits(prot) | C.calc_vm_flag_bits(flags) | mm.def_flags
                | C.VM_MAYREAD | C.VM_MAYWRITE | C.VM_MAYEXEC)
    addr = get_unmapped_area(mm, file, addr, length, pgoff, flags, vm_flags)
    if addr < 0:
        return addr
    e = mm.probe.inject("security_mmap_addr")  # the last step of __get_unmapped_area()
    if e:
        return e
    if flags & C.MAP_FIXED_NOREPLACE and mm.tree.find_intersection(addr, addr + length):
        return -errno.EEXIST
    if flags & C.MAP_LOCKED and not mm.can_do_mlock():
        return -errno.EPERM
    if not mm.mlock_future_ok(vm_flags, length):
        return -errno.EAGAIN
    if file is not None:
        inode = file.inode
        maxsize = (1 << 63) - 1 if inode.mode == S_IFREG else ULONG_MASK
        if length > maxsize or pgoff > (maxsize - length) >> PAGE_SHIFT:
            return -errno.EOVERFLOW
        flags_mask = C.LEGACY_MAP_MASK | file.f_op.mmap_supported_flags
        mtype = flags & C.MAP_TYPE
        if mtype in (C.MAP_SHARED, C.MAP_SHARED_VALIDATE):
            if mtype == C.MAP_SHARED:
                flags &= flags_mask
            if flags & ~flags_mask:
                return -errno.EOPNOTSUPP
            if prot & C.PROT_WRITE and not file.f_mode & FMODE_WRITE:
                return -errno.EACCES
            vm_flags |= VM_SHARED | VM_MAYSHARE
            if not file.f_mode & FMODE_WRITE:
                vm_flags &= ~(C.VM_MAYWRITE | VM_SHARED)
        elif mtype != C.MAP_PRIVATE:
            return -errno.EINVAL
        if not file.f_mode & FMODE_READ:
            return -errno.EACCES
        if inode.noexec:
            if vm_flags & C.VM_EXEC:
                return -errno.EPERM
            vm_flags &= ~C.VM_MAYEXEC
        if file.f_op.has_mmap == file.f_op.has_mmap_prepare:
            return -errno.ENODEV  # can_mmap_file()
        if vm_flags & VM_GROWSDOWN:
            return -errno.EINVAL
    else:
        mtype = flags & C.MAP_TYPE
        if mtype == C.MAP_SHARED:
            if vm_flags & VM_GROWSDOWN:
                return -errno.EINVAL
            pgoff = 0
            vm_flags |= VM_SHARED | VM_MAYSHARE
        elif mtype in (C.MAP_PRIVATE, C.MAP_DROPPABLE):
            if mtype == C.MAP_DROPPABLE:
                if flags & (C.MAP_LOCKED | C.MAP_HUGETLB) or vm_flags & VM_GROWSDOWN:
                    return -errno.EINVAL
                vm_flags |= C.VM_DROPPABLE | C.VM_NORESERVE | C.VM_WIPEONFORK | C.VM_DONTDUMP
            pgoff = addr >> PAGE_SHIFT
        else:
            return -errno.EINVAL
    if flags & C.MAP_NORESERVE and mm.overcommit_memory != 2:
        vm_flags |= C.VM_NORESERVE
    if flags & C.MAP_NORESERVE and file is not None and file.f_op.huge_page_size:
        vm_flags |= C.VM_NORESERVE  # hugetlb applies strict overcommit unless MAP_NORESERVE
    ret = mmap_region(mm, file, addr, length, vm_flags, pgoff)
    if ret >= 0 and (vm_flags & C.VM_LOCKED or flags & (C.MAP_POPULATE | C.MAP_NONBLOCK) == C.MAP_POPULATE):
        if populate is not None:
            populate.append(length)
        else:
            mm_populate(mm, ret, length)
    return ret


# ---------------------------------------------------------------------------------------------------
# __mmap_region()
class MmapState:
    """Models ``struct mmap_state``: one mapping being made, threaded through the steps of
    :func:`mmap_region`.  The descriptor fields (``vm_file``, ``vm_ops``, ``private_data``, ``page_prot``,
    ``action``) are what ``f_op->mmap_prepare`` left in the ``vm_area_desc``."""

    __slots__ = ("file", "addr", "end", "pglen", "pgoff", "vm_flags", "vms", "prev", "next", "charged",
                 "transferred", "have_prepare", "vm_file", "vm_ops", "private_data", "page_prot", "action",
                 "refused")

    def __init__(self, file: File | None, addr: int, length: int, vm_flags: int, pgoff: int) -> None:
        self.file = file
        self.addr = addr
        self.end = addr + length
        self.pglen = length >> PAGE_SHIFT
        self.pgoff = pgoff
        self.vm_flags = vm_flags
        self.vms = VmaMunmap(addr, self.end)  # the VMAs a MAP_FIXED mapping replaces
        self.prev: VMA | None = None
        self.next: VMA | None = None
        self.charged = 0  # pages charged to the commit limit for this mapping
        self.transferred = 0  # VM_ACCOUNT pages of replaced VMAs whose charge the new mapping inherits
        self.have_prepare = file is not None and file.f_op.has_mmap_prepare
        self.vm_file = file
        self.vm_ops: VmOperations | None = None
        self.private_data: Any = None
        self.page_prot = 0
        self.action: MmapAction | None = None
        # the driver used a feature its kernel profile lacks: unwound as a failing hook, then raised
        self.refused: ProfileFeatureError | None = None


def mmap_region(mm: MmStruct, file: File | None, addr: int, length: int, vm_flags: int, pgoff: int) -> int:
    """Models mm/vma.c: __mmap_region(): returns the address or -errno, leaving behind exactly what the
    kernel leaves on each error path (a charge it never releases, the hole of a failed MAP_FIXED)."""
    prof = mm.profile
    map = MmapState(file, addr, length, vm_flags, pgoff)
    e = __mmap_setup(mm, map)
    if e:
        return _abort_munmap(mm, map, e)
    if map.have_prepare:
        e = call_mmap_prepare(mm, map)
        if e:
            if prof.prepare_failure_releases_charge:
                return _refused(map, _unacct_error(mm, map, e, "mmap_prepare"))
            return _refused(map, _abort_munmap(mm, map, e, "mmap_prepare"))
    vma: VMA | None = None
    if map.prev is not None or map.next is not None:
        vma = merge_new_range(mm, addr, map.end, map.vm_flags, map.vm_file, map.pgoff, map.prev, map.next)
    allocated = vma is None
    if vma is None:
        r = __mmap_new_vma(mm, map)
        if isinstance(r, tuple):
            return _refused(map, _unacct_error(mm, map, *r))
        vma = r
    if map.have_prepare and (allocated or not prof.user_fields_only_on_new_vma):
        # set_vma_user_defined_fields(): onto a merged VMA too until 976d5e0ddac8 (7.3-rc6)
        prof.user_vm_ops(vma, map.vm_ops, DUMMY_VM_OPS)
        vma.vm_private_data = map.private_data
    __mmap_complete(mm, map, vma)
    if map.have_prepare and allocated and map.action is not None:
        e = prof.action_complete(mm, vma, map.action, is_compat=False)
        if e:
            return e
    if allocated:
        if mm.probe.tracing:
            mm.probe.trace("mmap", "established", start=addr, end=map.end)
    return addr


def __mmap_setup(mm: MmStruct, map: MmapState) -> int:
    """Models mm/vma.c: __mmap_setup(): gather what a MAP_FIXED mapping replaces, check RLIMIT_AS/DATA,
    charge an accountable mapping (the replaced VMAs' charge is inherited, not released) and tear the
    old range down (vms_clean_up_area()).  Errors return before anything was torn down."""
    vms = map.vms
    first, prev, nxt = mm.tree.around(map.addr, map.end)  # vma_find(), else vma_prev() / vma_next()
    if first is not None:
        e = vms_gather_munmap_vmas(mm, vms, first)
        if e:
            return e
        map.prev, map.next = vms.prev, vms.next
    else:
        map.prev, map.next = prev, nxt
    if not mm.may_expand_vm(map.vm_flags, map.pglen - vms.nr_pages):
        return -errno.ENOMEM
    huge = map.file is not None and map.file.f_op.huge_page_size  # hugetlb is never accountable
    if (map.vm_flags & (C.VM_NORESERVE | VM_SHARED | VM_WRITE)) == VM_WRITE and not huge:  # accountable_mapping()
        charged = map.pglen - vms.nr_accounted
        if charged and (mm.probe.inject("vm_enough_memory") or not mm.vm_enough_memory(charged)):
            return -errno.ENOMEM
        map.charged = charged
        map.transferred = vms.nr_accounted
        vms.nr_accounted = 0
        for v in vms.detached:
            v.vm_flags &= ~C.VM_ACCOUNT  # vms->nr_accounted = 0: their charge is not released
        map.vm_flags |= C.VM_ACCOUNT
    if vms.detached:
        vms_clean_up_area(mm, vms)
    return 0


def call_mmap_prepare(mm: MmStruct, map: MmapState) -> int:
    """Models mm/vma.c: call_mmap_prepare(): build the ``vm_area_desc``, call ``f_op->mmap_prepare`` and
    the profile's mmap_action_prepare(), then take the fields the driver may change back into ``map``.
    On failure a file the hook swapped in is released (abort_munmap fput()s it)."""
    file = map.file
    assert file is not None
    prof = mm.profile
    desc = prof.new_desc(mm, file, map.addr, map.end, map.pgoff, map.vm_flags)
    prepare = functools.partial(file.f_op.mmap_prepare, desc)
    try:
        e = mm.probe.inject("mmap_prepare") or int(mm.callback("mmap_prepare", prepare, desc=desc))
        if not e:
            e = (mm.probe.inject("action_prepare") if prof.prepare_validates else 0) or prof.action_prepare(mm, desc)
    except ProfileFeatureError as exc:
        map.refused, e = exc, REFUSED
    if e:
        if desc.vm_file is not file and desc.vm_file is not None:
            fput(mm, desc.vm_file)
        return e
    map.pgoff, map.vm_file, map.vm_flags, map.page_prot = desc.pgoff, desc.vm_file, desc.vm_flags, desc.page_prot
    map.vm_ops, map.private_data = desc.vm_ops, desc.private_data
    if prof.has_actions:
        map.action = desc.action
    return 0


def mmap_file(mm: MmStruct, file: File, vma: VMA, *, linked: bool = True) -> int:
    """Models mm/internal.h: mmap_file(): the legacy ``f_op->mmap(file, vma)`` through the probe.  A
    legacy hook that installs ``vm_ops->mapped`` is not refused in any released kernel (the linux-next
    check __vma_check_mmap_hook() was removed before 7.1 shipped, 3d3544a6c996): its ``mapped`` is
    silently never called.  ``linked`` is False for the compat path's detached VMA."""
    e = int(mm.callback("mmap", functools.partial(file.f_op.mmap, file, vma), vma=vma if linked else None))
    if not e and getattr(vma.vm_ops, "mapped", None):
        if mm.profile.legacy_mapped_rejected:
            mm.probe.trace("mmap", "WARN: legacy ->mmap installed vm_ops->mapped")
            e = -errno.EINVAL
        elif mm.profile.has_mapped:
            mm.probe.trace("mmap", "mapped ignored (legacy hook)")
    return e


def __mmap_new_vma(mm: MmStruct, map: MmapState) -> VMA | tuple[int, str]:
    """Models mm/vma.c: __mmap_new_vma() (with __mmap_new_file_vma()): allocate and link a new VMA, call
    a legacy ``->mmap`` or set up shared anonymous memory.  Returns the VMA, or (-errno, the failed step)
    after undoing the step's own work (the file reference, partial PTEs)."""
    file, vm_file = map.file, map.vm_file
    addr, end = map.addr, map.end
    e = mm.probe.inject("vma_alloc") or mm.probe.inject("vma_prealloc")
    if e:
        if vm_file is not file and vm_file is not None:
            fput(mm, vm_file)  # abort_munmap fput()s a file mmap_prepare swapped in
        return e, "VMA allocation"
    vma = VMA(addr, end, map.vm_flags, map.pgoff, vm_file)
    vma.page_prot = map.page_prot
    if vm_file is not None:
        if vm_file is file:
            vm_file.refcount += 1  # get_file(); a swapped-in file's reference is already owned
        vma.vm_ops = DUMMY_VM_OPS
        if vm_file.f_op.has_mmap and not map.have_prepare:
            try:
                e = mm.probe.inject("mmap") or mmap_file(mm, vm_file, vma)
            except ProfileFeatureError as exc:  # e.g. from a stacked file's mmap_prepare (compat layer)
                map.refused, e = exc, REFUSED
            if e:
                if vma.vm_file is not None:
                    fput(mm, vma.vm_file)
                mm.pt.zap(addr >> PAGE_SHIFT, end >> PAGE_SHIFT)  # unmap_region(): undo partial PTEs
                if mm.notifiers:
                    invalidate_range(mm, addr, end, "unmap")
                return e, "->mmap"
            map.vm_flags = vma.vm_flags
    elif map.vm_flags & VM_SHARED:
        shmem_zero_setup(mm, vma)
    mm.tree.insert(vma)
    mm.locks.vma_start_write(vma)
    if mm.probe.tracing:
        mm.probe.trace("mmap", "new vma", start=addr, end=end)
    action = map.action
    if (action is not None and action.hide_from_rmap_until_complete and vma.vm_file is not None
            and mm.profile.has_rmap_hide):
        mm.locks.lock_i_mmap(vma.vm_file.inode.ino)
        mm.probe.trace("mmap", "rmap lock held until the action completes", ino=vma.vm_file.inode.ino)
    return vma


def __mmap_complete(mm: MmStruct, map: MmapState, vma: VMA) -> None:
    """Models mm/vma.c: __mmap_complete(): finish the unmap of what was replaced, account the new
    mapping, and drop VM_LOCKED from a VMA that cannot be locked (counting it in locked_vm otherwise).

    6.18-stable's vma_supports_mlock(): VM_SPECIAL and VM_DROPPABLE VMAs cannot be locked, so a
    MAP_DROPPABLE mapping made under mlockall(MCL_FUTURE) loses VM_LOCKED here -- after do_mmap() decided
    to populate it (tests/scenarios/mlockall_future_droppable_not_locked.json)."""
    if map.vms.detached:
        vms_complete_munmap_vmas(mm, map.vms)
    mm.vm_stat_account(map.vm_flags, map.pglen)
    if map.vm_flags & C.VM_LOCKED:
        if vma.vm_flags & (C.VM_SPECIAL | C.VM_DROPPABLE):
            vma.vm_flags &= ~C.VM_LOCKED_MASK
        else:
            mm.locked_vm += map.pglen


def _unacct_error(mm: MmStruct, map: MmapState, e: int, what: str) -> int:
    """__mmap_region()'s ``unacct_error`` label: release the commit charge, then ``abort_munmap``."""
    if map.charged:
        mm.vm_unacct_memory(map.charged)
    return _abort_munmap(mm, map, e, what, charge_released=True)


def _abort_munmap(mm: MmStruct, map: MmapState, e: int, what: str | None = None,
                  charge_released: bool = False) -> int:
    """__mmap_region()'s ``abort_munmap`` label: vms_abort_munmap_vmas() (the old VMAs come back if
    nothing was torn down yet, else their range stays a hole).  A charge not released here, and the
    charge inherited from replaced VMAs, are never given back: recorded as ``leaked_commit``."""
    lost = (0 if charge_released else map.charged) + map.transferred
    if lost:
        mm.leaked_commit += lost
        mm.probe.trace("mmap", "commit charge leaked", pages=lost)
    vms_abort_munmap_vmas(mm, map.vms)
    if map.refused is not None:
        mm.probe.trace("mmap", f"{what} refused by the kernel profile: {map.refused}")
    elif what is not None:
        mm.probe.trace("mmap", f"{what} failed -{C.errname(e)}")
    return e


def _refused(map: MmapState, e: int) -> int:
    """After an error exit: a driver the kernel profile refused (:class:`ProfileFeatureError`) has been
    unwound exactly like a hook that returned an error; now the refusal reaches the caller."""
    if map.refused is not None:
        raise map.refused
    return e


# ---------------------------------------------------------------------------------------------------
# munmap
def sys_munmap(mm: MmStruct, addr: int, length: int) -> int:
    """Models mm/mmap.c: SYSCALL_DEFINE2(munmap) -> __vm_munmap() -> do_vmi_munmap()."""
    locks = mm.locks
    outer = locks.mmap_lock_acquire(True)
    try:
        start = addr & ULONG_MASK
        length &= ULONG_MASK
        if start & (PAGE_SIZE - 1) or start > TASK_SIZE or length > TASK_SIZE - start:
            return -errno.EINVAL
        end = start + C.page_align(length)
        if end == start:
            return -errno.EINVAL
        return do_vmi_munmap(mm, start, end)
    finally:
        locks.mmap_lock_release(outer, True)
