"""``vmalab demo``: a short tour of the model, printed as it runs."""

from __future__ import annotations

from typing import Any

import click

from . import constants as C
from .execute import default_layout
from .mm import MM
from .procfs import import_maps, maps_line
from .scenario import BASE

RW = C.PROT_READ | C.PROT_WRITE
ANON = C.MAP_PRIVATE | C.MAP_ANONYMOUS


def _show(mm: MM, lo: int, hi: int) -> None:
    for v in mm.tree.range(lo, hi):
        rss = mm.rss_pages(v) * 4
        click.echo(f"    {maps_line(mm, v).rstrip():<60} rss={rss}K [{C.vmflags_str(v.vm_flags)}]")


def _step(title: str) -> None:
    click.echo(click.style(f"\n== {title}", bold=True))


def run_demo() -> None:
    mm = MM()
    import_maps(mm, default_layout(8 << 20))
    click.echo("vmalab demo: a model of one x86-64 process under Linux 6.18 (ASLR off, 8 MiB stack rlimit)")
    click.echo(f"mmap_base = {mm.mmap_base:#x} (TASK_SIZE - 128 MiB: the stack gap is clamped to its minimum)")

    _step("1. placement: non-fixed mmaps go top-down, below the vDSO, and merge")
    a = mm.mmap(None, 4096, RW, ANON)
    b = mm.mmap(None, 4096, RW, ANON)
    click.echo(f"  mmap(NULL, 4K) = {a:#x}; again = {b:#x} (directly below, same flags: one VMA)")
    c = mm.mmap(None, 2 << 20, RW, ANON)
    click.echo(f"  mmap(NULL, 2M) = {c:#x} (THP-aligned to 2 MiB, leaving a hole above it)")
    _show(mm, c, mm.mmap_base)

    _step("2. a split: mprotect one page in the middle of an 8-page VMA")
    mm.mmap(BASE, 8 * 4096, RW, ANON | C.MAP_FIXED)
    mm.mprotect(BASE + 3 * 4096, 4096, C.PROT_READ)
    _show(mm, BASE, BASE + (1 << 30))
    click.echo(f"  map_count = {mm.map_count}")

    _step("3. a merge: making it writable again merges the three pieces back")
    mm.mprotect(BASE + 3 * 4096, 4096, RW)
    _show(mm, BASE, BASE + (1 << 30))

    _step("4. anon_vma: two separately written VMAs do not merge across a new middle")
    lo, hi = BASE + 0x100000, BASE + 0x100000 + 6 * 4096
    mm.mmap(lo, 2 * 4096, RW, ANON | C.MAP_FIXED)
    mm.mmap(lo + 3 * 4096, 3 * 4096, RW, ANON | C.MAP_FIXED)
    mm.touch(lo, write=True)
    mm.touch(lo + 3 * 4096, write=True)
    mm.mmap(lo + 2 * 4096, 4096, RW, ANON | C.MAP_FIXED)
    click.echo("  written [0,2) | new [2,3) | written [3,6): the new page merges with the left one only")
    _show(mm, lo, hi)

    _step("5. errnos, as the kernel gives them")
    for label, call in [
        ("munmap(BASE, 0)", lambda: mm.munmap(BASE, 0)),
        ("mmap(BASE, 4K, MAP_FIXED_NOREPLACE) over a mapping", lambda: mm.mmap(
            BASE, 4096, RW, ANON | C.MAP_FIXED_NOREPLACE)),
        ("mprotect(BASE+1, 4K)", lambda: mm.mprotect(BASE + 1, 4096, C.PROT_READ)),
        ("mprotect over a hole", lambda: mm.mprotect(BASE, 0x200000, C.PROT_READ)),
        ("mmap with neither MAP_SHARED nor MAP_PRIVATE", lambda: mm.mmap(None, 4096, RW, C.MAP_ANONYMOUS)),
    ]:
        try:
            call()
            click.echo(f"  {label}: ok")
        except OSError as e:
            click.echo(f"  {label}: {C.ERRNO_NAMES.get(e.errno or 0)}")
    click.echo("  (the hole case changed the VMAs before the hole first, as Linux does:)")
    _show(mm, BASE, BASE + 0x10000)
    mm.validate()
    run_driver_demo()
    click.echo("\nvalidate(): all invariants hold.  Next: `vmalab run tests/scenarios/<name>.json --kernel`"
               " runs a scenario on the live kernel.")


class PfnDemoDevice:
    """The demo's driver: ``mmap_prepare`` asks the core to remap the whole VMA to physical frames and
    to hide the VMA from rmap walkers until that is done (the pattern hugetlbfs used in 6.19)."""

    @staticmethod
    def make() -> Any:
        from .driver import mmap_action_remap_full
        from .files import FileOperations

        class PfnDevice(FileOperations):
            has_mmap_prepare = True

            def mmap_prepare(self, desc: Any) -> int:
                mmap_action_remap_full(desc, start_pfn=0xFEE00)
                desc.action.hide_from_rmap_until_complete = True
                return 0

        return PfnDevice()


def run_driver_demo() -> None:
    from .profiles import PROFILES
    _step("6. the driver contract: a PFN-remapping driver under two kernel profiles")
    click.echo("  class PfnDevice(FileOperations):\n      has_mmap_prepare = True\n"
               "      def mmap_prepare(self, desc):\n          mmap_action_remap_full(desc, start_pfn=0xFEE00)\n"
               "          desc.action.hide_from_rmap_until_complete = True\n          return 0")
    for kernel in ("6.19", "7.1"):
        for fail in (False, True):
            mm = MM(kernel=kernel)
            mm.tracing = True
            fd = mm.open_device("/dev/pfndemo", PfnDemoDevice.make())
            if fail:
                mm.fail_plan["action_complete"] = (1, -5)  # the remap fails with -EIO
            r = mm.sys_mmap(BASE, 4 * 4096, RW, C.MAP_SHARED | C.MAP_FIXED, fd, 0)
            what = "mmap with the remap failing (-EIO injected)" if fail else "mmap"
            res = f"{r:#x}" if r >= 0 else C.ERRNO_NAMES.get(-r, str(r))
            click.echo(f"\n  [{kernel}: {PROFILES[kernel].summary}] {what} -> {res}")
            for ev in mm.trace:
                click.echo(f"    trace: {ev}")
            _show(mm, BASE, BASE + (1 << 30))
            if not mm.tree.range(BASE, BASE + (1 << 30)):
                click.echo("    (no VMA left in the window: the failed mapping was unmapped)")
            mm.validate()
