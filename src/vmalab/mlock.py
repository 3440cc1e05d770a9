"""mlock(2), mlock2(2), munlock(2), mlockall(2), munlockall(2).

Models mm/mlock.c of Linux 6.18: the argument rounding of do_mlock(), the RLIMIT_MEMLOCK check (skipped with
CAP_IPC_LOCK), the range walk of apply_vma_lock_flags() (a hole ends it with ENOMEM after the VMAs before
it were already changed), mlock_fixup() (VM_SPECIAL, secretmem and droppable VMAs are silently skipped;
the others are split or merged through :meth:`MM.vma_modify`; ``locked_vm`` follows), the population
of a newly locked range (mm/gup.c: __mm_populate() with errors reported, not ignored), and mlockall()'s
``mm->def_flags`` for future mappings.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from . import constants as C
from .constants import PAGE_MASK, PAGE_SHIFT, PAGE_SIZE, ULONG_MASK, VM_LOCKED, VM_LOCKED_MASK, VM_LOCKONFAULT

if TYPE_CHECKING:
    from .mm import MM
    from .vma import VMA

MLOCK_ONFAULT = 0x01
MCL_CURRENT = 1
MCL_FUTURE = 2
MCL_ONFAULT = 4


def _page_align(x: int) -> int:
    """PAGE_ALIGN() on an unsigned long (wraps to 0 near ULONG_MAX, as in the kernel)."""
    return (x + PAGE_SIZE - 1) & PAGE_MASK & ULONG_MASK


class MlockMixin:
    """The mlock part of :class:`vmalab.mm.MM` (see the module docstring)."""

    # -- syscalls ---------------------------------------------------------------------------------------
    def sys_mlock(self: MM, start: int, length: int) -> int:
        """Models mm/mlock.c: SYSCALL_DEFINE2(mlock)."""
        return self.do_mlock(start, length, VM_LOCKED)

    def sys_mlock2(self: MM, start: int, length: int, flags: int) -> int:
        """Models mm/mlock.c: SYSCALL_DEFINE3(mlock2): MLOCK_ONFAULT adds VM_LOCKONFAULT."""
        flags &= 0xFFFFFFFF
        if flags & ~MLOCK_ONFAULT:
            return -errno.EINVAL
        vm_flags = VM_LOCKED | (VM_LOCKONFAULT if flags & MLOCK_ONFAULT else 0)
        return self.do_mlock(start, length, vm_flags)

    def sys_munlock(self: MM, start: int, length: int) -> int:
        """Models mm/mlock.c: SYSCALL_DEFINE2(munlock): no capability or rlimit check, no population."""
        start &= ULONG_MASK
        length = _page_align((length & ULONG_MASK) + (start & (PAGE_SIZE - 1)))
        start &= PAGE_MASK
        return self.apply_vma_lock_flags(start, length, 0)

    def sys_mlockall(self: MM, flags: int) -> int:
        """Models mm/mlock.c: SYSCALL_DEFINE1(mlockall)."""
        flags &= 0xFFFFFFFF
        if flags >= 1 << 31:
            flags -= 1 << 32  # the argument is an int
        if not flags or flags & ~(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) or flags == MCL_ONFAULT:
            return -errno.EINVAL
        if not self.can_do_mlock():
            return -errno.EPERM
        lock_limit = self.rlimit("RLIMIT_MEMLOCK") >> PAGE_SHIFT
        if flags & MCL_CURRENT and self.total_vm > lock_limit and not self.cap_ipc_lock:
            return -errno.ENOMEM
        self.apply_mlockall_flags(flags)
        if flags & MCL_CURRENT:
            self.populate_range(0, C.TASK_SIZE, ignore_errors=True)
        return 0

    def sys_munlockall(self: MM) -> int:
        """Models mm/mlock.c: SYSCALL_DEFINE0(munlockall)."""
        self.apply_mlockall_flags(0)
        return 0

    # -- internals --------------------------------------------------------------------------------------
    def do_mlock(self: MM, start: int, length: int, flags: int) -> int:
        """Models mm/mlock.c: do_mlock(): round, check the capability and RLIMIT_MEMLOCK, lock, populate."""
        start &= ULONG_MASK
        if not self.can_do_mlock():
            return -errno.EPERM
        length = _page_align((length & ULONG_MASK) + (start & (PAGE_SIZE - 1)))
        start &= PAGE_MASK
        lock_limit = self.rlimit("RLIMIT_MEMLOCK") >> PAGE_SHIFT
        locked = (length >> PAGE_SHIFT) + self.locked_vm
        if locked > lock_limit and not self.cap_ipc_lock:
            # pages of the range that are locked already are not charged twice
            locked -= self.count_mm_mlocked_page_nr(start, length)
        if locked > lock_limit and not self.cap_ipc_lock:
            return -errno.ENOMEM
        e = self.apply_vma_lock_flags(start, length, flags)
        if e:
            return e
        e = self.populate_range(start, length, ignore_errors=False)
        if e == -errno.EFAULT:
            return -errno.ENOMEM  # __mlock_posix_error_return()
        if e == -errno.ENOMEM:
            return -errno.EAGAIN
        return e

    def count_mm_mlocked_page_nr(self: MM, start: int, length: int) -> int:
        """Models mm/mlock.c: count_mm_mlocked_page_nr(): locked pages of VMAs inside [start, start+len)."""
        end = (start + length) & ULONG_MASK
        if end < start:
            end = ULONG_MASK
        count = 0
        for v in self.tree.range(start, end):
            if v.vm_flags & VM_LOCKED:
                lo, hi = max(v.vm_start, start), min(v.vm_end, end)
                count += (hi - lo) >> PAGE_SHIFT
        return count

    def apply_vma_lock_flags(self: MM, start: int, length: int, flags: int) -> int:
        """Models mm/mlock.c: apply_vma_lock_flags(): walk [start, start+len) VMA by VMA; a hole -> ENOMEM
        (the VMAs before it stay changed)."""
        end = start + length
        if end > ULONG_MASK:
            return -errno.EINVAL
        if end == start:
            return 0
        vma = self.tree.lookup(start)
        if vma is None:
            return -errno.ENOMEM
        prev = vma if start > vma.vm_start else self.tree.prev(vma)
        nstart = start
        tmp = vma.vm_start
        cur: VMA | None = vma
        while cur is not None and cur.vm_start < end:
            if cur.vm_start != tmp:
                return -errno.ENOMEM
            newflags = (cur.vm_flags & ~VM_LOCKED_MASK) | flags
            tmp = min(cur.vm_end, end)
            r = self.mlock_fixup(cur, prev, nstart, tmp, newflags)
            if isinstance(r, int):
                return r
            prev = r
            tmp = r.vm_end  # vma_iter_end(): the end of the VMA the iterator is on
            nstart = tmp
            cur = self.tree.next(r)
        if tmp < end:
            return -errno.ENOMEM
        return 0

    def mlock_fixup(self: MM, vma: VMA, prev: VMA | None, start: int, end: int, newflags: int) -> VMA | int:
        """Models mm/mlock.c: mlock_fixup(): returns the VMA now covering [start, end) (``vma`` itself when
        nothing is done) or -errno."""
        oldflags = vma.vm_flags
        if (newflags == oldflags or oldflags & C.VM_SPECIAL or oldflags & C.VM_HUGETLB
                or oldflags & C.VM_DROPPABLE or self.vma_is_secretmem(vma)):
            return vma  # don't set VM_LOCKED or VM_LOCKONFAULT and don't count
        r = self.vma_modify(vma, prev, start, end, newflags, op="mlock")
        if isinstance(r, int):
            return r
        nr_pages = (end - start) >> PAGE_SHIFT
        if not newflags & VM_LOCKED:
            nr_pages = -nr_pages
        elif oldflags & VM_LOCKED:
            nr_pages = 0
        self.locked_vm += nr_pages
        # vma_modify() keeps the sticky flags of merged VMAs; the lock bits are exactly newflags'.
        r.vm_flags = (r.vm_flags & ~VM_LOCKED_MASK) | (newflags & VM_LOCKED_MASK)
        return r

    @staticmethod
    def vma_is_secretmem(vma: VMA) -> bool:
        """Models mm/secretmem.c: vma_is_secretmem()."""
        from .files import SecretmemVmOps
        return isinstance(vma.vm_ops, SecretmemVmOps)

    def apply_mlockall_flags(self: MM, flags: int) -> None:
        """Models mm/mlock.c: apply_mlockall_flags(): set ``def_flags`` for MCL_FUTURE and (re)lock or
        unlock every VMA; errors of single VMAs are ignored."""
        self.def_flags &= ~VM_LOCKED_MASK
        if flags & MCL_FUTURE:
            self.def_flags |= VM_LOCKED
            if flags & MCL_ONFAULT:
                self.def_flags |= VM_LOCKONFAULT
            if not flags & MCL_CURRENT:
                return
        to_add = 0
        if flags & MCL_CURRENT:
            to_add = VM_LOCKED | (VM_LOCKONFAULT if flags & MCL_ONFAULT else 0)
        prev: VMA | None = None
        cur = self.tree.first()
        while cur is not None:
            newflags = (cur.vm_flags & ~VM_LOCKED_MASK) | to_add
            r = self.mlock_fixup(cur, prev, cur.vm_start, cur.vm_end, newflags)
            if isinstance(r, int):
                r = cur
            prev = r
            cur = self.tree.next(r)

    def populate_range(self: MM, start: int, length: int, ignore_errors: bool) -> int:
        """Models mm/gup.c: __mm_populate(): fault in [start, start+len) VMA by VMA (skipping VM_IO/VM_PFNMAP
        and VM_LOCKONFAULT VMAs); returns 0 or the first error (-EFAULT for PROT_NONE or a page beyond
        EOF) unless ``ignore_errors``."""
        end = min(start + length, C.TASK_SIZE + PAGE_SIZE)
        nstart = start
        while nstart < end:
            v = self.tree.find(nstart)
            if v is None or v.vm_start >= end:
                break
            nstart = max(nstart, v.vm_start)
            nend = min(end, v.vm_end)
            if v.vm_flags & (C.VM_IO | C.VM_PFNMAP):
                nstart = nend
                continue
            e = self.populate_vma_page_range(v, nstart, nend)
            if e and not ignore_errors:
                return e
            nstart = nend
        return 0

    def populate_vma_page_range(self: MM, vma: VMA, start: int, end: int) -> int:
        """Models mm/gup.c: populate_vma_page_range() with __get_user_pages(): write-fault a private
        writable VMA (breaking COW), read-fault the others; PROT_NONE -> -EFAULT; a fault that would
        raise SIGBUS -> -EFAULT.  VM_LOCKONFAULT VMAs are left alone."""
        if vma.vm_flags & VM_LOCKONFAULT:
            return 0
        if not vma.vm_flags & C.VM_ACCESS_FLAGS:
            return -errno.EFAULT  # no FOLL_FORCE for an inaccessible VMA: check_vma_flags() fails
        if self.vma_is_secretmem(vma):
            return -errno.EFAULT
        if vma.vm_file is None and not vma.is_anonymous():
            return 0  # special mappings ([vdso]): their pages are not modelled
        write = (vma.vm_flags & (C.VM_WRITE | C.VM_SHARED)) == C.VM_WRITE
        for addr in range(start, end, PAGE_SIZE):
            sig = self._fault(vma, addr, write, gup=True)
            if sig is not None:
                return -errno.ENOMEM if sig == "OOM" else -errno.EFAULT
        return 0
