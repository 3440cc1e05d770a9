"""``/proc/pid/maps`` and ``/proc/pid/smaps`` for a model, and import of a real process's maps.

Models fs/proc/task_mmu.c: show_map_vma() / show_vma_header_prefix() (byte-exact line format: hex widths,
dev and inode columns, the name column padded to 73), get_vma_name() (file path, " (deleted)",
vm_ops->name, ``[heap]``, ``[stack]``, ``[anon:NAME]``) and show_smap() / show_smap_vma_flags().
"""

from __future__ import annotations

import re

from . import constants as C
from .constants import PAGE_SHIFT, PAGE_SIZE
from .fdtable import FILE_KINDS
from .files import GENERIC_FILE_VM_OPS, File, Inode, SpecialMappingOps, vma_kernel_pagesize
from .mm_types import VMA, MmStruct
from .pagetable import ANON, GUARD, PFN, ZERO

# smaps counts the pages vm_normal_page() returns: not the zero page, guard markers or raw PFNs
NOT_IN_RSS = (ZERO, GUARD, PFN)

PAD_COLUMN = 25 + 8 * 6 - 1  # seq_setwidth(m, 25 + sizeof(void *) * 6 - 1)


def vma_name(mm: MmStruct, vma: VMA) -> str:
    """Models fs/proc/task_mmu.c: get_vma_name()."""
    if vma.vm_file is not None:
        if vma.anon_name is not None and vma.vm_ops is not None and vma.vm_file.f_op.fault_style == "shmem":
            return f"[anon_shmem:{vma.anon_name}]"
        return vma.vm_file.display_path
    if vma.vm_ops is not None:
        n = vma.vm_ops.name(vma)
        if n is not None:
            return n
    if vma.special_name is not None:
        return vma.special_name
    if mm.start_brk and vma.vm_start < mm.brk and vma.vm_end > mm.start_brk:
        return "[heap]"
    if mm.start_stack and vma.vm_start <= mm.start_stack <= vma.vm_end:
        return "[stack]"
    if vma.anon_name is not None:
        return f"[anon:{vma.anon_name}]"
    return ""


def perms(vma: VMA) -> str:
    f = vma.vm_flags
    return ("r" if f & C.VM_READ else "-") + ("w" if f & C.VM_WRITE else "-") + (
        "x" if f & C.VM_EXEC else "-") + ("s" if f & C.VM_MAYSHARE else "p")


def maps_offset(vma: VMA) -> int:
    """The offset column: vm_pgoff << PAGE_SHIFT for file-backed VMAs, 0 for anonymous ones."""
    return (vma.vm_pgoff << C.PAGE_SHIFT) if vma.vm_file is not None else 0


def maps_line(mm: MmStruct, vma: VMA) -> str:
    """One line of /proc/pid/maps, without the newline."""
    if vma.vm_file is not None:
        major, minor = vma.vm_file.inode.dev
        ino = vma.vm_file.inode.ino
    else:
        major = minor = ino = 0
    head = (f"{vma.vm_start:08x}-{vma.vm_end:08x} {perms(vma)} {maps_offset(vma):08x} "
            f"{major:02x}:{minor:02x} {ino} ")
    name = vma_name(mm, vma)
    if not name:
        return head
    return head.ljust(PAD_COLUMN) + " " + name


def maps(mm: MmStruct) -> str:
    """The whole /proc/pid/maps text (the [vsyscall] gate area is appended, as the kernel does)."""
    lines = [maps_line(mm, v) for v in mm.tree]
    lines.append("ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0" + " " * (PAD_COLUMN - 55)
                 + " [vsyscall]")
    return "\n".join(lines) + "\n"


def rss_pages(mm: MmStruct, vma: VMA) -> int:
    """Rss of a VMA in pages (smaps_pte_entry()): mapped PTEs other than the zero page, guard markers and
    raw PFNs."""
    return sum(1 for _, p in mm.pt.items(vma.vm_start >> PAGE_SHIFT, vma.vm_end >> PAGE_SHIFT)
               if p.kind not in NOT_IN_RSS)


def pss_bytes(mm: MmStruct, vma: VMA) -> int:
    """Pss of a VMA in bytes (smaps_account(): PAGE_SIZE divided by each page's mapcount, as smaps
    rounds)."""
    total = 0
    for _, p in mm.pt.items(vma.vm_start >> PAGE_SHIFT, vma.vm_end >> PAGE_SHIFT):
        if p.kind not in NOT_IN_RSS:
            total += (PAGE_SIZE << 12) // max(p.mapcount, 1)
    return total >> 12


def smaps_entry(mm: MmStruct, vma: VMA) -> dict[str, int | str]:
    """The smaps counters the model knows for one VMA (sizes in kB)."""
    rss = rss_pages(mm, vma) * 4
    anon = sum(1 for _, p in mm.pt.items(vma.vm_start >> 12, vma.vm_end >> 12) if p.kind == "anon") * 4
    pss = pss_bytes(mm, vma) >> 10
    page_kb = vma_kernel_pagesize(vma) >> 10  # KernelPageSize, and MMUPageSize (the same on x86)
    return {"Size": (vma.vm_end - vma.vm_start) >> 10, "KernelPageSize": page_kb, "MMUPageSize": page_kb,
            "Rss": rss, "Pss": pss, "Anonymous": anon,
            "Locked": pss if vma.vm_flags & C.VM_LOCKED else 0, "VmFlags": C.vmflags_str(vma.vm_flags)}


def smaps(mm: MmStruct) -> str:
    """/proc/pid/smaps text (the counters the model tracks; others are printed as 0)."""
    out: list[str] = []
    for v in mm.tree:
        e = smaps_entry(mm, v)
        out.append(maps_line(mm, v))
        for key in ("Size", "KernelPageSize", "MMUPageSize", "Rss", "Pss", "Pss_Dirty", "Shared_Clean",
                    "Shared_Dirty", "Private_Clean", "Private_Dirty", "Referenced", "Anonymous", "KSM",
                    "LazyFree", "AnonHugePages", "ShmemPmdMapped", "FilePmdMapped", "Shared_Hugetlb",
                    "Private_Hugetlb", "Swap", "SwapPss", "Locked"):
            val = e.get(key, 0)
            out.append(f"{key + ':':<16}{val:>8} kB")
        out.append(f"THPeligible:    {0:>8}")
        out.append(f"VmFlags: {e['VmFlags']} ".rstrip(" ") + " ")
    return "\n".join(out) + "\n"


#: the memory lines of /proc/PID/status, in the kernel's order (task_mem())
STATUS_FIELDS = ("VmPeak", "VmSize", "VmLck", "VmPin", "VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem", "VmData",
                 "VmStk", "VmExe", "VmLib", "VmPTE", "VmSwap")


def task_mem(mm: MmStruct) -> dict[str, int]:
    """Models fs/proc/task_mmu.c: task_mem(): the memory lines of ``/proc/PID/status`` (kB), from the mm's
    counters: VmPeak/VmHWM are the high-water marks (max of hiwater_vm/hiwater_rss and the current value),
    VmSize total_vm, VmLck locked_vm, VmPin 0 (nothing is pinned), VmData data_vm, VmStk stack_vm,
    RssAnon/RssFile/RssShmem the Rss counters by kind (MM_ANONPAGES, MM_FILEPAGES, MM_SHMEMPAGES).

    The model has no start_code/end_code: VmExe counts the executable VMAs of the lowest file mapping
    (the program image), VmLib the rest of exec_vm.  VmPTE counts the page-table pages (PTE, PMD and PUD
    tables, not the PGD) of the regions that have a PTE table (``PageTable.tables``).  No swap."""
    anon = file = shmem = 0
    exe: File | None = None
    text = 0
    for v in mm.tree:
        if exe is None and v.vm_file is not None:
            exe = v.vm_file
        if v.vm_file is exe and exe is not None and v.vm_flags & C.VM_EXEC:
            text += v.pages
        is_shmem = v.vm_file is not None and v.vm_file.f_op.fault_style == "shmem"
        for _, p in mm.pt.items(v.vm_start >> PAGE_SHIFT, v.vm_end >> PAGE_SHIFT):
            if p.kind in NOT_IN_RSS:
                continue
            if p.kind == ANON:
                anon += 1
            elif is_shmem:
                shmem += 1
            else:
                file += 1
    rss = anon + file + shmem
    pte_tables = mm.pt.tables  # the 2 MiB regions with a PTE table; each PMD table covers 512 of them
    tables = len(pte_tables) + len({t >> 9 for t in pte_tables}) + len({t >> 18 for t in pte_tables})
    exe_pages = min(text, mm.exec_vm)
    pages = {"VmPeak": max(mm.hiwater_vm, mm.total_vm), "VmSize": mm.total_vm, "VmLck": mm.locked_vm, "VmPin": 0,
             "VmHWM": max(mm.hiwater_rss, rss), "VmRSS": rss, "RssAnon": anon, "RssFile": file, "RssShmem": shmem,
             "VmData": mm.data_vm, "VmStk": mm.stack_vm, "VmExe": exe_pages, "VmLib": mm.exec_vm - exe_pages,
             "VmPTE": tables, "VmSwap": 0}
    return {k: pages[k] << (PAGE_SHIFT - 10) for k in STATUS_FIELDS}


# -------------------------------------------------------------------------------------------------------
# import
_MAPS_RE = re.compile(
    r"^([0-9a-f]+)-([0-9a-f]+) ([r-])([w-])([x-])([sp]) ([0-9a-f]+) ([0-9a-f]+):([0-9a-f]+) (\d+)\s*(.*)$")

SPECIAL_FLAGS = {
    "[vvar]": C.parse_vmflags("rd mr pf io de dd"),
    "[vvar_vclock]": C.parse_vmflags("rd mr pf io de dd"),
    "[vdso]": C.parse_vmflags("rd ex mr mw me de"),
}


class MapsFormatError(ValueError):
    """A line of a maps or smaps text could not be parsed."""


_SMAPS_FIELD_RE = re.compile(r"^([A-Za-z_]+):\s+(\d+)(?: kB)?$")


class SmapsEntry:
    """One VMA of a ``/proc/PID/smaps`` text: its header (the maps line), the counters (``Rss``,
    ``Anonymous``, ... in kB, ``THPeligible`` and ``ProtectionKey`` as numbers) and the ``VmFlags``
    mnemonics (None when the entry has no VmFlags line)."""

    def __init__(self, start: int, end: int, header: str, line: int) -> None:
        self.start = start
        self.end = end
        self.header = header
        self.line = line  # where the entry starts in the text (1-based), for error messages
        self.fields: dict[str, int] = {}
        self.vmflags: str | None = None

    def __repr__(self) -> str:
        return f"SmapsEntry({self.start:#x}-{self.end:#x}, vmflags={self.vmflags!r})"


def parse_smaps(text: str) -> list[SmapsEntry]:
    """The VMAs of a ``/proc/PID/smaps`` text (also ``smaps`` output of the model).  A line that is
    neither a maps header, a ``Key: N [kB]`` counter nor ``VmFlags:`` raises :class:`MapsFormatError`
    naming it; so do unknown VmFlags mnemonics."""
    out: list[SmapsEntry] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip("\n")
        if not line.strip():
            continue
        m = _MAPS_RE.match(line)
        if m:
            out.append(SmapsEntry(int(m.group(1), 16), int(m.group(2), 16), line, n))
            continue
        if not out:
            raise MapsFormatError(f"smaps line {n}: expected a maps header, got {line!r}")
        if line.startswith("VmFlags:"):
            mnemonics = line[len("VmFlags:"):].strip()
            try:
                C.parse_vmflags(mnemonics)
            except ValueError as e:
                raise MapsFormatError(f"smaps line {n}: {e}") from None
            out[-1].vmflags = mnemonics
            continue
        f = _SMAPS_FIELD_RE.match(line.strip())
        if not f:
            raise MapsFormatError(f"smaps line {n}: cannot parse {line!r}")
        out[-1].fields[f.group(1)] = int(f.group(2))
    return out


def smaps_vmflags(text: str) -> dict[int, str]:
    """start address -> VmFlags mnemonics of a smaps text (the ``vmflags`` argument of import_maps)."""
    return {e.start: e.vmflags for e in parse_smaps(text) if e.vmflags is not None}


def _is_ro_data(v: VMA) -> bool:
    """A private read-only, non-executable file VMA (perms ``r--p``)."""
    return v.vm_file is not None and v.vm_flags & (C.VM_READ | C.VM_WRITE | C.VM_EXEC | C.VM_SHARED) == C.VM_READ


def import_maps(mm: MmStruct, text: str, vmflags: dict[int, str] | None = None, smaps_text: str | None = None,
                start_brk: int | None = None) -> None:
    """Load the VMAs of a real process's ``/proc/pid/maps`` text into an empty ``mm``.

    Flags come from ``vmflags`` (start address -> smaps VmFlags) where given, else from the VmFlags of
    ``smaps_text`` (the same process's ``/proc/pid/smaps``; every maps VMA must have its entry there),
    else are guessed from the perms column: private writable gets ``ac``, special mappings get the
    kernel's flags, and a read-only file VMA gets ``ac`` only where it is a RELRO range (see below).

    anon_vma: with smaps, a VMA with ``Anonymous`` pages has one (shared with the VMA right before it
    when both are pieces of one mapping split by a flag change, as an mprotect split leaves them; two
    adjacent pieces with equal flags that the kernel keeps apart have different ones).  Without smaps,
    the ``[heap]`` VMAs have one.  Rss itself is not imported: smaps does not say which pages are present.

    Files become read-only regular files identified by (dev, inode).  The program break: ``start_brk``
    when given (``/proc/PID/stat`` field 47; the only source when there is no ``[heap]`` line, as right
    after execve), else the start of the first ``[heap]`` VMA; ``brk`` is the end of the last ``[heap]``
    VMA (maps shows the page-aligned break only), or ``start_brk`` without a heap.  A heap split by
    mprotect (several ``[heap]`` lines) stays one heap.  ``[stack]`` sets ``start_stack``.  The
    ``[vsyscall]`` gate area is not a VMA and is skipped.
    """
    if len(mm.tree):
        raise ValueError("import_maps needs an empty MM")
    if start_brk is not None and not (0 <= start_brk < C.TASK_SIZE):
        raise ValueError(f"start_brk {start_brk:#x} is not a user address")
    smaps_by_start: dict[int, SmapsEntry] | None = None
    if smaps_text is not None:
        entries = parse_smaps(smaps_text)
        smaps_by_start = {e.start: e for e in entries}
    files: dict[tuple[str, int, int, int], File] = {}
    heap_start = heap_end = 0
    guessed: set[int] = set()  # starts of the VMAs whose flags were guessed from the perms column
    seen: set[int] = set()
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip("\n")
        if not line.strip():
            continue
        m = _MAPS_RE.match(line)
        if not m:
            raise MapsFormatError(f"maps line {n}: cannot parse {line!r}")
        start, end = int(m.group(1), 16), int(m.group(2), 16)
        r, w, x, s = m.group(3, 4, 5, 6)
        off = int(m.group(7), 16)
        major, minor, ino = int(m.group(8), 16), int(m.group(9), 16), int(m.group(10))
        name = m.group(11).strip()
        if name == "[vsyscall]" or start >= C.TASK_SIZE + C.PAGE_SIZE:
            continue
        if start >= end or start & 0xFFF or end & 0xFFF or end > C.TASK_SIZE:
            raise MapsFormatError(f"maps line {n}: bad range {line!r}")
        entry: SmapsEntry | None = None
        if smaps_by_start is not None:
            entry = smaps_by_start.get(start)
            if entry is None or entry.end != end or entry.header.split()[:6] != line.split()[:6]:
                raise MapsFormatError(f"maps line {n}: smaps has no entry for {line!r}")
            seen.add(start)
        flags = (C.VM_READ if r == "r" else 0) | (C.VM_WRITE if w == "w" else 0) | (C.VM_EXEC if x == "x" else 0)
        flags |= C.VM_MAYREAD | C.VM_MAYWRITE | C.VM_MAYEXEC
        if s == "s":
            flags |= C.VM_SHARED | C.VM_MAYSHARE
        known = vmflags.get(start) if vmflags is not None else None
        if known is None and entry is not None:
            known = entry.vmflags
        if known is not None:
            try:
                flags = C.parse_vmflags(known)
            except ValueError as e:
                raise MapsFormatError(f"maps line {n}: {e}") from None
        else:
            guessed.add(start)
            if name in SPECIAL_FLAGS:
                flags = SPECIAL_FLAGS[name]
            elif name == "[stack]":
                flags |= C.VM_GROWSDOWN | C.VM_ACCOUNT
            elif s == "p" and w == "w":
                flags |= C.VM_ACCOUNT
        v = VMA(start, end, flags, off >> C.PAGE_SHIFT if ino or name.startswith("/") else start >> C.PAGE_SHIFT)
        if name in SPECIAL_FLAGS:
            v.vm_ops = SpecialMappingOps(name)
            v.vm_pgoff = 0
        elif name.startswith(("/", "$")) and (ino or major or minor):  # "$RUNNER", "$FILES/..." are symbolic
            key = (name, major, minor, ino)
            f = files.get(key)
            if f is None:
                path, deleted = (name[:-10], True) if name.endswith(" (deleted)") else (name, False)
                inode = Inode(ino, (major, minor), size=1 << 40)
                f = File(inode, FILE_KINDS["disk"](), path, deleted=deleted, owner=mm)
                files[key] = f
            v.vm_file = f
            f.refcount += 1
            v.vm_ops = GENERIC_FILE_VM_OPS
        elif name == "[heap]":
            if not heap_start:
                heap_start = start
            heap_end = end
        elif name == "[stack]":
            mm.start_stack = end - 8
        elif name.startswith("[anon:") and name.endswith("]"):
            v.anon_name = name[6:-1]
        elif name and not name.startswith("["):
            raise MapsFormatError(f"maps line {n}: unsupported name {name!r}")
        elif name.startswith("[") and name not in ("[heap]", "[stack]"):
            v.special_name = name
        prev = mm.tree.last()
        if prev is not None and prev.vm_end > start:
            raise MapsFormatError(f"maps line {n}: overlaps or is out of order")
        if (prev is not None and v.vm_file is not None and prev.vm_file is v.vm_file and prev.vm_end == start
                and s == "p" and w == "w" and _is_ro_data(prev) and prev.vm_pgoff + prev.pages == v.vm_pgoff
                and prev.vm_start in guessed and start in guessed):
            # RELRO: the C library made the start of the writable segment read-only; the ELF loader had
            # mapped it writable (charged, VM_ACCOUNT), and mprotect keeps the charge, so it keeps `ac`.
            # A read-only VMA right before the writable segment is that RELRO range only when another
            # read-only VMA of the file comes before it (.rodata, never charged): the two would be one VMA
            # if their flags were equal.  Without one it is .rodata itself (right after execve, before
            # ld.so applied RELRO), and an `ac` there would merge it with the RELRO range later.
            pprev = mm.tree.prev(prev.vm_start)
            if (pprev is not None and pprev.vm_file is v.vm_file and pprev.vm_end == prev.vm_start
                    and _is_ro_data(pprev)):
                prev.vm_flags |= C.VM_ACCOUNT
                mm.committed += prev.pages
        if entry is not None:
            if entry.fields.get("Anonymous", 0) and not v.vm_flags & C.VM_SHARED:
                _give_anon_vma(mm, prev, v, name == "[heap]" and start == heap_start)
        elif name == "[heap]" and s == "p":
            # The C library has written to its heap (static TLS), so it has an anon_vma; its first fault
            # found the written bss VMA right below compatible and reused that one (measured: munlock of
            # the heap's first page merges bss and heap into one [heap] VMA).  The pieces of a heap that
            # an mprotect split share it.
            _give_anon_vma(mm, prev, v, start == heap_start)
        mm.tree.insert(v)
        mm.vm_stat_account(v.vm_flags, v.pages)
        if v.vm_flags & C.VM_LOCKED:
            mm.locked_vm += v.pages
        if v.vm_flags & C.VM_ACCOUNT:
            mm.committed += v.pages
    if smaps_by_start is not None:
        for extra in smaps_by_start.values():
            if extra.start not in seen and extra.start < C.TASK_SIZE and not extra.header.endswith("[vsyscall]"):
                raise MapsFormatError(f"smaps line {extra.line}: VMA not in the maps text: {extra.header!r}")
    if start_brk is not None:
        mm.start_brk = start_brk
        mm.brk = max(heap_end, start_brk)
    elif heap_start:
        mm.start_brk, mm.brk = heap_start, heap_end


def _give_anon_vma(mm: MmStruct, prev: VMA | None, v: VMA, heap: bool) -> None:
    """Give ``v`` (about to be inserted after ``prev``) an anon_vma: ``prev``'s when ``prev`` looks like
    another piece of the same mapping (adjacent, same file or both anonymous, contiguous file offsets, and
    flags that differ, or equal flags at the bss/heap boundary, which brk never merges), else a new one."""
    if (prev is not None and prev.anon_vma is not None and prev.vm_end == v.vm_start and prev.vm_file is v.vm_file
            and prev.vm_ops is v.vm_ops and prev.special_name is None and v.special_name is None
            and (v.vm_file is None or prev.vm_pgoff + prev.pages == v.vm_pgoff)
            and (prev.vm_flags != v.vm_flags or heap)):
        v.anon_vma, v.avc_len = prev.anon_vma, 1
        return
    if (heap and prev is not None and prev.anon_vma is None and prev.vm_end == v.vm_start and prev.vm_file is None
            and prev.vm_ops is None and prev.special_name is None and prev.vm_flags == v.vm_flags):
        prev.anon_vma, prev.avc_len = mm.new_anon_vma(), 1  # the bss below the heap (maps-only import)
        v.anon_vma, v.avc_len = prev.anon_vma, 1
        return
    v.anon_vma, v.avc_len = mm.new_anon_vma(), 1


# -------------------------------------------------------------------------------------------------------
# a live process
#: /proc/PID/limits rows -> the rlimit the model keeps
_LIMIT_ROWS = {"Max stack size": "RLIMIT_STACK", "Max address space": "RLIMIT_AS", "Max data size": "RLIMIT_DATA",
               "Max locked memory": "RLIMIT_MEMLOCK"}


class ProcessSnapshot:
    """What :func:`read_process` read of a live process: its maps and smaps texts (one consistent
    view), the mm fields of ``/proc/PID/stat`` (``start_data`` 45, ``end_data`` 46, ``start_brk`` 47,
    ``start_stack`` 28; proc(5) numbers them from 1; the break itself is not there) and its memory
    rlimits (name -> (soft, hard))."""

    def __init__(self, pid: int, maps: str, smaps: str, stat: dict[str, int],
                 rlimits: dict[str, tuple[int, int]]) -> None:
        self.pid = pid
        self.maps = maps
        self.smaps = smaps
        self.stat = stat
        self.rlimits = rlimits


def _read(path: str) -> str:
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        return f.read()


def parse_stat(text: str) -> dict[str, int]:
    """The mm fields of a ``/proc/PID/stat`` line (the comm field, in parentheses, may hold spaces and
    parentheses: the fields are counted after its last ``)``)."""
    rest = text[text.rindex(")") + 2:].split()
    field = {"start_stack": 28, "start_data": 45, "end_data": 46, "start_brk": 47}
    return {k: int(rest[n - 3]) for k, n in field.items()}


def parse_limits(text: str) -> dict[str, tuple[int, int]]:
    """The memory rlimits of a ``/proc/PID/limits`` text: name -> (soft, hard), unlimited as RLIM_INFINITY."""
    out: dict[str, tuple[int, int]] = {}
    for line in text.splitlines():
        for row, name in _LIMIT_ROWS.items():
            if line.startswith(row):
                soft, hard = (C.RLIM_INFINITY if v == "unlimited" else int(v) for v in line[len(row):].split()[:2])
                out[name] = (soft, hard)
    return out


def read_process(pid: int, attempts: int = 5) -> ProcessSnapshot:
    """Read a live process's ``maps``, ``smaps``, ``stat`` and ``limits`` under /proc.  maps and smaps are
    read until two reads of maps around smaps agree (a running process may change between them).

    ``ProcessLookupError`` when there is no such process, ``PermissionError`` when its memory may not be
    read (ptrace access mode), ``ValueError`` when it has no user address space (a kernel thread, a zombie)
    or never holds still."""
    base = f"/proc/{int(pid)}"
    try:
        for _ in range(attempts):
            maps_text = _read(base + "/maps")
            smaps_text = _read(base + "/smaps")
            stat = parse_stat(_read(base + "/stat"))
            again = _read(base + "/maps")
            headers = [ln for ln in smaps_text.splitlines() if _MAPS_RE.match(ln)]
            if again == maps_text and headers == maps_text.splitlines():
                break
        else:
            raise ValueError(f"pid {pid}: its maps kept changing while being read")
        limits = parse_limits(_read(base + "/limits"))
    except FileNotFoundError:
        raise ProcessLookupError(3, f"no process with pid {pid}") from None  # ESRCH
    if not maps_text.strip():
        raise ValueError(f"pid {pid} has no user address space (a kernel thread or a zombie)")
    return ProcessSnapshot(pid, maps_text, smaps_text, stat, limits)
