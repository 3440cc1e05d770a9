"""Every driver callback reaches the tools through the probe, whichever syscall causes it.

The kernel calls ``vm_ops->open`` for the new VMA of a split (split_vma()), of an mremap copy
(copy_vma()) and of a fork (dup_mmap()), and ``vm_ops->close`` when munmap or exit_mmap() removes a VMA;
``f_op->mmap_prepare`` gets the descriptor.  An observer installed on ``mm.probe`` must see each of them,
with the mmap lock held for write where the kernel holds it.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any

from vmalab import MM
from vmalab import constants as C
from vmalab.driver import VmAreaDesc
from vmalab.files import FileOperations, VmOperations
from vmalab.mm_types import VMA

B = 0x500000000000
K = C.PAGE_SIZE
RW = C.PROT_READ | C.PROT_WRITE
SH = C.MAP_SHARED | C.MAP_FIXED


class Seen:
    """A callback observer: records (callback, vma start, mmap lock mode, whether a desc came along)."""

    def __init__(self, mm: MM) -> None:
        self.mm = mm
        self.calls: list[tuple[str, int | None, str | None, bool]] = []

    def call(self, name: str, fn: Callable[[], Any], vma: VMA | None, desc: Any = None) -> Any:
        self.calls.append((name, vma.vm_start if vma is not None else None, self.mm.locks.mmap_lock,
                           desc is not None))
        return fn()

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]


class CountingOps(VmOperations):
    def __init__(self) -> None:
        self.opened: list[int] = []
        self.closed: list[int] = []

    def open(self, vma: VMA) -> None:
        self.opened.append(vma.vm_start)

    def close(self, vma: VMA) -> None:
        self.closed.append(vma.vm_start)


class Drv(FileOperations):
    has_mmap_prepare = True

    def __init__(self) -> None:
        self.ops = CountingOps()

    def mmap_prepare(self, desc: VmAreaDesc) -> int:
        desc.vm_ops = self.ops
        return 0


def _setup() -> tuple[MM, Seen, Drv, int]:
    mm = MM()
    seen = Seen(mm)
    mm.probe.observer = seen
    drv = Drv()
    fd = mm.open_device("/dev/probe", drv)
    return mm, seen, drv, fd


def test_mmap_prepare_gets_its_descriptor() -> None:
    mm, seen, _, fd = _setup()
    assert mm.sys_mmap(B, 4 * K, RW, SH, fd, 0) == B
    assert seen.calls == [("mmap_prepare", None, "write", True)]


def test_split_mremap_fork_munmap_and_exit_callbacks_all_go_through_the_probe() -> None:
    mm, seen, drv, fd = _setup()
    assert mm.sys_mmap(B, 4 * K, RW, SH, fd, 0) == B
    seen.calls.clear()
    # split_vma(): ->open for the new part, under the write lock
    assert mm.sys_mprotect(B + K, K, C.PROT_READ) == 0
    assert seen.names() == ["open", "open"] and drv.ops.opened == [B, B + 2 * K]
    assert all(c[2] == "write" for c in seen.calls)
    seen.calls.clear()
    # copy_vma(): ->open for the copy that mremap moves the pages into
    new = B + 0x100000
    flags = C.MREMAP_NAMES["MREMAP_MAYMOVE"] | C.MREMAP_NAMES["MREMAP_FIXED"]
    assert mm.sys_mremap(B + 3 * K, K, K, flags, new) == new
    assert ("open", new) in [(c[0], c[1]) for c in seen.calls]
    assert new in drv.ops.opened
    # munmap: ->close of the VMA it removes
    seen.calls.clear()
    assert mm.sys_munmap(B, K) == 0
    assert [(c[0], c[1], c[2]) for c in seen.calls] == [("close", B, "write")]
    # fork: ->open for every copied VMA, seen by the child's probe (the VMA is the child's)
    before = len(drv.ops.opened)
    child = mm.fork()
    assert len(drv.ops.opened) - before == child.map_count - MM().map_count
    # exit_mmap(): ->close of every VMA, under the write lock
    child.probe.observer = Seen(child)
    child.exit_mmap()
    obs = child.probe.observer
    assert isinstance(obs, Seen)
    child_seen = obs.names()
    assert child_seen == ["close"] * len(child_seen) and len(child_seen) == 3
    assert all(c[2] == "write" for c in obs.calls)
    mm.validate()


def test_probe_fault_plan_fails_the_planned_hit_only() -> None:
    mm = MM()
    mm.probe.fail_plan["vma_alloc"] = (2, -errno.ENOMEM)
    anon = C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_FIXED
    assert mm.sys_mmap(B, K, RW, anon, -1, 0) == B
    assert mm.sys_mmap(B + 4 * K, K, RW, anon, -1, 0) == -errno.ENOMEM
    assert mm.sys_mmap(B + 8 * K, K, RW, anon, -1, 0) == B + 8 * K
    assert mm.probe.fail_hits["vma_alloc"] == 3
    assert mm.fail_plan is mm.probe.fail_plan  # the old name still works
    mm.validate()
