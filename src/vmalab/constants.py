"""Kernel constants for Linux 6.18 on x86_64: page geometry, prot/map/madvise bits, vm_flags.

Values are the x86_64 UAPI and ``include/linux/mm.h`` values; names are the kernel's.  Flag words can be
parsed from ``"MAP_PRIVATE|MAP_ANONYMOUS"`` strings with :func:`parse_flag_word`.
"""

from __future__ import annotations

import errno as _errno

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PAGE_MASK = ~(PAGE_SIZE - 1)
PMD_SIZE = 2 << 20
# 4-level paging: DEFAULT_MAP_WINDOW == TASK_SIZE for a 64-bit task.
TASK_SIZE = (1 << 47) - PAGE_SIZE
STACK_GUARD_GAP = 256 << PAGE_SHIFT  # stack_guard_gap default: 256 pages
MMAP_MIN_ADDR = 65536  # max(sysctl vm.mmap_min_addr, CONFIG_LSM_MMAP_MIN_ADDR) as measured here
DAC_MMAP_MIN_ADDR = 4096  # the sysctl value; only CAP_SYS_RAWIO-less callers are held to it
DEFAULT_MAX_MAP_COUNT = 65530
RLIM_INFINITY = (1 << 64) - 1
ULONG_MASK = (1 << 64) - 1

# --- prot -------------------------------------------------------------------------------------------
PROT_NONE = 0x0
PROT_READ = 0x1
PROT_WRITE = 0x2
PROT_EXEC = 0x4
PROT_SEM = 0x8
PROT_GROWSDOWN = 0x01000000
PROT_GROWSUP = 0x02000000

PROT_NAMES = {
    "PROT_NONE": PROT_NONE, "PROT_READ": PROT_READ, "PROT_WRITE": PROT_WRITE, "PROT_EXEC": PROT_EXEC,
    "PROT_SEM": PROT_SEM, "PROT_GROWSDOWN": PROT_GROWSDOWN, "PROT_GROWSUP": PROT_GROWSUP,
}

# --- mmap flags (x86_64) ----------------------------------------------------------------------------
MAP_SHARED = 0x01
MAP_PRIVATE = 0x02
MAP_SHARED_VALIDATE = 0x03
MAP_DROPPABLE = 0x08
MAP_TYPE = 0x0F
MAP_FIXED = 0x10
MAP_ANONYMOUS = 0x20
MAP_32BIT = 0x40
MAP_ABOVE4G = 0x80
MAP_GROWSDOWN = 0x0100
MAP_DENYWRITE = 0x0800
MAP_EXECUTABLE = 0x1000
MAP_LOCKED = 0x2000
MAP_NORESERVE = 0x4000
MAP_POPULATE = 0x8000
MAP_NONBLOCK = 0x10000
MAP_STACK = 0x20000
MAP_HUGETLB = 0x40000
MAP_SYNC = 0x80000
MAP_FIXED_NOREPLACE = 0x100000
MAP_UNINITIALIZED = 0x4000000
MAP_HUGE_SHIFT = 26  # include/uapi/asm-generic/hugetlb_encode.h: log2 of the huge page size in bits 26-31
MAP_HUGE_MASK = 0x3F
MAP_HUGE_2MB = 21 << MAP_HUGE_SHIFT
MAP_HUGE_1GB = 30 << MAP_HUGE_SHIFT

LEGACY_MAP_MASK = (MAP_SHARED | MAP_PRIVATE | MAP_FIXED | MAP_ANONYMOUS | MAP_DENYWRITE | MAP_EXECUTABLE
                   | MAP_UNINITIALIZED | MAP_GROWSDOWN | MAP_LOCKED | MAP_NORESERVE | MAP_POPULATE
                   | MAP_NONBLOCK | MAP_STACK | MAP_HUGETLB | MAP_32BIT | MAP_ABOVE4G
                   | MAP_HUGE_2MB | MAP_HUGE_1GB)

MAP_NAMES = {
    "MAP_SHARED": MAP_SHARED, "MAP_PRIVATE": MAP_PRIVATE, "MAP_SHARED_VALIDATE": MAP_SHARED_VALIDATE,
    "MAP_DROPPABLE": MAP_DROPPABLE, "MAP_FIXED": MAP_FIXED, "MAP_ANONYMOUS": MAP_ANONYMOUS,
    "MAP_ANON": MAP_ANONYMOUS, "MAP_32BIT": MAP_32BIT, "MAP_ABOVE4G": MAP_ABOVE4G,
    "MAP_GROWSDOWN": MAP_GROWSDOWN, "MAP_DENYWRITE": MAP_DENYWRITE, "MAP_EXECUTABLE": MAP_EXECUTABLE,
    "MAP_LOCKED": MAP_LOCKED, "MAP_NORESERVE": MAP_NORESERVE, "MAP_POPULATE": MAP_POPULATE,
    "MAP_NONBLOCK": MAP_NONBLOCK, "MAP_STACK": MAP_STACK, "MAP_HUGETLB": MAP_HUGETLB, "MAP_SYNC": MAP_SYNC,
    "MAP_FIXED_NOREPLACE": MAP_FIXED_NOREPLACE, "MAP_UNINITIALIZED": MAP_UNINITIALIZED,
    "MAP_HUGE_2MB": MAP_HUGE_2MB, "MAP_HUGE_1GB": MAP_HUGE_1GB,
}

# --- madvise / mlock / msync / mremap / rlimit (used by the scenario format) ------------------------
MADV_NAMES = {
    "MADV_NORMAL": 0, "MADV_RANDOM": 1, "MADV_SEQUENTIAL": 2, "MADV_WILLNEED": 3, "MADV_DONTNEED": 4,
    "MADV_FREE": 8, "MADV_REMOVE": 9, "MADV_DONTFORK": 10, "MADV_DOFORK": 11, "MADV_MERGEABLE": 12,
    "MADV_UNMERGEABLE": 13, "MADV_HUGEPAGE": 14, "MADV_NOHUGEPAGE": 15, "MADV_DONTDUMP": 16,
    "MADV_DODUMP": 17, "MADV_WIPEONFORK": 18, "MADV_KEEPONFORK": 19, "MADV_COLD": 20, "MADV_PAGEOUT": 21,
    "MADV_POPULATE_READ": 22, "MADV_POPULATE_WRITE": 23, "MADV_DONTNEED_LOCKED": 24, "MADV_COLLAPSE": 25,
    "MADV_HWPOISON": 100, "MADV_SOFT_OFFLINE": 101, "MADV_GUARD_INSTALL": 102, "MADV_GUARD_REMOVE": 103,
}
MLOCK_NAMES = {"MLOCK_ONFAULT": 1, "MCL_CURRENT": 1, "MCL_FUTURE": 2, "MCL_ONFAULT": 4}
MSYNC_NAMES = {"MS_ASYNC": 1, "MS_INVALIDATE": 2, "MS_SYNC": 4}
MREMAP_NAMES = {"MREMAP_MAYMOVE": 1, "MREMAP_FIXED": 2, "MREMAP_DONTUNMAP": 4}
RLIMIT_NAMES = {"RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3, "RLIMIT_CORE": 4,
                "RLIMIT_RSS": 5, "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7, "RLIMIT_MEMLOCK": 8, "RLIMIT_AS": 9}
#: include/uapi/linux/capability.h: every capability's number (CAP_LAST_CAP is CAP_CHECKPOINT_RESTORE, 40)
CAP_NAMES = {name: i for i, name in enumerate((
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE"))}
#: the capabilities the model checks (MmStruct.cap_ipc_lock, cap_sys_rawio, cap_sys_resource, cap_sys_admin)
MODELLED_CAPS = ("CAP_IPC_LOCK", "CAP_SYS_RAWIO", "CAP_SYS_RESOURCE", "CAP_SYS_ADMIN")

UIO_MAXIOV = 1024  # include/uapi/linux/uio.h: the most iovecs process_madvise() takes
ANON_VMA_NAME_MAX = 80  # include/linux/mm_types.h: an anon VMA name's buffer, NUL included

# --- vm_flags (include/linux/mm.h, 64-bit) -----------------------------------------------------------
VM_NONE = 0
VM_READ = 1 << 0
VM_WRITE = 1 << 1
VM_EXEC = 1 << 2
VM_SHARED = 1 << 3
VM_MAYREAD = 1 << 4
VM_MAYWRITE = 1 << 5
VM_MAYEXEC = 1 << 6
VM_MAYSHARE = 1 << 7
VM_GROWSDOWN = 1 << 8
VM_UFFD_MISSING = 1 << 9
VM_PFNMAP = 1 << 10
VM_MAYBE_GUARD = 1 << 11
VM_UFFD_WP = 1 << 12
VM_LOCKED = 1 << 13
VM_IO = 1 << 14
VM_SEQ_READ = 1 << 15
VM_RAND_READ = 1 << 16
VM_DONTCOPY = 1 << 17
VM_DONTEXPAND = 1 << 18
VM_LOCKONFAULT = 1 << 19
VM_ACCOUNT = 1 << 20
VM_NORESERVE = 1 << 21
VM_HUGETLB = 1 << 22
VM_SYNC = 1 << 23
VM_ARCH_1 = 1 << 24  # x86: VM_PAT
VM_WIPEONFORK = 1 << 25
VM_DONTDUMP = 1 << 26
VM_SOFTDIRTY = 1 << 27
VM_MIXEDMAP = 1 << 28
VM_HUGEPAGE = 1 << 29
VM_NOHUGEPAGE = 1 << 30
VM_MERGEABLE = 1 << 31
VM_SHADOW_STACK = 1 << 37
VM_UFFD_MINOR = 1 << 38
VM_DROPPABLE = 1 << 40
VM_SEALED = 1 << 42

VM_ACCESS_FLAGS = VM_READ | VM_WRITE | VM_EXEC
VM_SPECIAL = VM_IO | VM_DONTEXPAND | VM_PFNMAP | VM_MIXEDMAP
VM_LOCKED_MASK = VM_LOCKED | VM_LOCKONFAULT
VM_STICKY = VM_SOFTDIRTY | VM_MAYBE_GUARD
# Flags whose difference does not prevent a merge (6.18.44: soft-dirty and the sticky guard marker).
VM_IGNORE_MERGE = VM_SOFTDIRTY | VM_MAYBE_GUARD
# VM_DATA_DEFAULT_FLAGS on x86-64 (VM_DATA_FLAGS_TSK_EXEC without READ_IMPLIES_EXEC): no VM_EXEC
VM_DATA_DEFAULT_FLAGS = VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC
VM_STACK_DEFAULT_FLAGS = VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC | VM_GROWSDOWN

# smaps VmFlags mnemonics in the order show_smap_vma_flags() prints them (ascending bit number).
# VM_SOFTDIRTY ("sd") is not shown by this kernel (no soft-dirty support configured).
VMFLAG_MNEMONICS: tuple[tuple[int, str], ...] = (
    (VM_READ, "rd"), (VM_WRITE, "wr"), (VM_EXEC, "ex"), (VM_SHARED, "sh"), (VM_MAYREAD, "mr"),
    (VM_MAYWRITE, "mw"), (VM_MAYEXEC, "me"), (VM_MAYSHARE, "ms"), (VM_GROWSDOWN, "gd"),
    (VM_UFFD_MISSING, "um"), (VM_PFNMAP, "pf"), (VM_MAYBE_GUARD, "gu"), (VM_UFFD_WP, "uw"),
    (VM_LOCKED, "lo"), (VM_IO, "io"), (VM_SEQ_READ, "sr"), (VM_RAND_READ, "rr"), (VM_DONTCOPY, "dc"),
    (VM_DONTEXPAND, "de"), (VM_LOCKONFAULT, "lf"), (VM_ACCOUNT, "ac"), (VM_NORESERVE, "nr"),
    (VM_HUGETLB, "ht"), (VM_SYNC, "sf"), (VM_ARCH_1, "ar"), (VM_WIPEONFORK, "wf"), (VM_DONTDUMP, "dd"),
    (VM_MIXEDMAP, "mm"), (VM_HUGEPAGE, "hg"), (VM_NOHUGEPAGE, "nh"), (VM_MERGEABLE, "mg"),
    (VM_SHADOW_STACK, "ss"), (VM_UFFD_MINOR, "ui"), (VM_DROPPABLE, "dp"), (VM_SEALED, "sl"),
)
MNEMONIC_TO_FLAG = {mn: bit for bit, mn in VMFLAG_MNEMONICS} | {"sd": VM_SOFTDIRTY}


def vmflags_str(flags: int) -> str:
    """Render vm_flags the way ``/proc/pid/smaps`` prints the VmFlags line (without the prefix)."""
    return " ".join(mn for bit, mn in VMFLAG_MNEMONICS if flags & bit)


def parse_vmflags(text: str) -> int:
    """Inverse of :func:`vmflags_str`; unknown mnemonics raise ``ValueError``."""
    flags = 0
    for mn in text.split():
        try:
            flags |= MNEMONIC_TO_FLAG[mn]
        except KeyError:
            raise ValueError(f"unknown VmFlags mnemonic {mn!r}") from None
    return flags


def calc_vm_prot_bits(prot: int) -> int:
    """Models include/linux/mman.h: calc_vm_prot_bits() (x86 without pkeys)."""
    return (VM_READ if prot & PROT_READ else 0) | (VM_WRITE if prot & PROT_WRITE else 0) | (
        VM_EXEC if prot & PROT_EXEC else 0)


def calc_vm_flag_bits(flags: int) -> int:
    """Models include/linux/mman.h: calc_vm_flag_bits() for an anonymous or regular-file mapping."""
    out = 0
    if flags & MAP_GROWSDOWN:
        out |= VM_GROWSDOWN
    if flags & MAP_LOCKED:
        out |= VM_LOCKED
    if flags & MAP_SYNC:
        out |= VM_SYNC
    if flags & MAP_STACK:
        out |= VM_NOHUGEPAGE
    return out


def page_align(n: int) -> int:
    """PAGE_ALIGN() on an unsigned long: wraps to 0 past 2**64 like the kernel's macro."""
    return (n + PAGE_SIZE - 1) & PAGE_MASK & ULONG_MASK


def offset_in_page(n: int) -> int:
    return n & (PAGE_SIZE - 1)


ERRNO_NAMES: dict[int, str] = {num: name for name, num in _errno.__dict__.items()
                               if name.startswith("E") and isinstance(num, int)}
# Prefer the canonical names where Python's errno module has aliases.
ERRNO_NAMES.update({_errno.EAGAIN: "EAGAIN", _errno.EOPNOTSUPP: "EOPNOTSUPP", _errno.EDEADLK: "EDEADLK"})
ERRNO_NUMBERS: dict[str, int] = {name: num for name, num in _errno.__dict__.items()
                                 if name.startswith("E") and isinstance(num, int)}


class FlagWordError(ValueError):
    """A flag word in a scenario or on the command line names an unknown flag."""


def parse_flag_word(word: str | int | None, table: dict[str, int], what: str) -> int:
    """Parse ``"A|B|0x40"`` against a name table.  Numbers are accepted as they are; ``None``/``""`` is 0."""
    if word is None:
        return 0
    if isinstance(word, bool):
        raise FlagWordError(f"{what}: expected flag names or a number, got {word!r}")
    if isinstance(word, int):
        if word < 0:
            raise FlagWordError(f"{what}: negative value {word}")
        return word
    if not isinstance(word, str):
        raise FlagWordError(f"{what}: expected flag names or a number, got {word!r}")
    value = 0
    for part in word.split("|"):
        part = part.strip()
        if not part or part == "0":
            continue
        if part in table:
            value |= table[part]
            continue
        try:
            value |= int(part, 0)
        except ValueError:
            raise FlagWordError(f"{what}: unknown flag {part!r}") from None
    return value


def errname(err: int) -> str:
    """The name of a -errno value (``-12`` -> ``ENOMEM``), for traces and results; a value without a name
    is ``E<number>`` (``-4095`` -> ``E4095``), as the live runner writes it."""
    return ERRNO_NAMES.get(-err, f"E{-err}")
