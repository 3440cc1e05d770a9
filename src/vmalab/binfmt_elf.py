"""execve of an x86-64 ELF: the address space right after exec returns to user space (before ld.so runs).

Models fs/binfmt_elf.c of Linux 6.18 -- load_elf_binary(), elf_load(), elf_map(), total_mapping_size(),
maximum_alignment(), load_elf_interp(), the "brk" handling of load_elf_binary(), create_elf_tables()'s
stack layout -- with fs/exec.c: __bprm_mm_init(), copy_strings() and setup_arg_pages() (the 128 KiB
``stack_expand``) and arch/x86: ``ELF_ET_DYN_BASE`` (arch/x86/include/asm/elf.h), map_vdso()
(arch/x86/entry/vdso/vma.c: [vvar], [vvar_vclock], [vdso] as one top-down block) and arch_randomize_brk()
(arch/x86/kernel/process.c).

Every mapping goes through the model's own machinery, as the kernel's vm_mmap()/vm_munmap()/vm_brk_flags()
do: :func:`vmalab.mmap.do_mmap` (so placement is :func:`vmalab.layout.get_unmapped_area`, with the
THP alignment of ext4 files), :func:`vmalab.vma.do_vmi_munmap` and :func:`vmalab.brk.do_brk_flags`, so
flags, accounting and merges come out as they do for any mmap.  The model's order is the kernel's:
the stack first (bprm_mm_init, setup_arg_pages), then the program's PT_LOAD segments, the interpreter,
then the vDSO.

Randomisation is off unless the mm was made with ``randomize=True`` (then the stack top, the PIE load
bias, the brk and the mmap base are drawn from ``mm.rng``: reproducible with a seed, not the kernel's).
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass

from . import constants as C
from .brk import check_brk_limits, do_brk_flags
from .constants import PAGE_MASK, PAGE_SHIFT, PAGE_SIZE, TASK_SIZE
from .elf import ET_DYN, ET_EXEC, PF_R, PF_W, PF_X, PT_GNU_STACK, PT_LOAD, ElfError, ElfImage, ProgramHeader, read_elf
from .files import File, SpecialMappingOps, fput
from .layout import get_unmapped_area
from .mm_types import VMA, MmStruct
from .mmap import do_mmap
from .procfs import SPECIAL_FLAGS
from .realfile import open_real
from .vma import do_vmi_munmap

__all__ = ["DEFAULT_MAP_WINDOW", "ELF_ET_DYN_BASE", "STACK_EXPAND", "ExecError", "ExecInfo", "exec_elf",
           "stack_strings_size", "total_mapping_size"]

DEFAULT_MAP_WINDOW = TASK_SIZE  # 4-level paging: (1 << 47) - PAGE_SIZE
STACK_TOP = DEFAULT_MAP_WINDOW  # STACK_TOP == STACK_TOP_MAX without LA57
#: arch/x86/include/asm/elf.h: ELF_ET_DYN_BASE for a 64-bit task, DEFAULT_MAP_WINDOW / 3 * 2
ELF_ET_DYN_BASE = DEFAULT_MAP_WINDOW // 3 * 2
#: fs/exec.c: setup_arg_pages(): stack_expand = 131072UL ("randomly 32*4k (or 2*64k) pages")
STACK_EXPAND = 131072
#: the vDSO block of 6.18 (measured): [vvar] 4 pages, [vvar_vclock] 2 pages, [vdso] 2 pages
VDSO_BLOCK = (("[vvar]", 4), ("[vvar_vclock]", 2), ("[vdso]", 2))
ELF_PLATFORM = "x86_64"
MMAP64_RND_BITS = 28  # arch_mmap_rnd(): mmap_rnd_bits default on x86-64
STACK_RND_MASK = 0x3FFFFF  # arch/x86/include/asm/elf.h (64-bit)
MAX_ARG_STRLEN = 32 * PAGE_SIZE


class ExecError(ValueError):
    """The exec model refuses the file (not ELF, wrong arch, missing interpreter, ...): a one-line message."""


@dataclass
class ExecInfo:
    """Where load_elf_binary() left things (the values of ``/proc/PID/stat`` and the auxiliary vector)."""

    path: str
    entry: int  # the address the process starts at: the interpreter's entry, else the program's
    program_entry: int  # AT_ENTRY: the program's e_entry + load_bias
    load_bias: int
    interp_base: int  # AT_BASE: 0 without an interpreter
    interp: str | None
    phdr: int  # AT_PHDR
    phnum: int
    start_code: int
    end_code: int
    start_data: int
    end_data: int
    start_brk: int
    brk: int
    stack_top: int  # the end of the stack VMA
    start_stack: int  # mm->start_stack: the initial stack pointer (argc)
    arg_start: int
    arg_end: int
    env_start: int
    env_end: int
    executable_stack: bool
    #: a set-user-ID (or set-group-ID, group-executable) file: bprm_fill_uid() sets PER_CLEAR_ON_SETID, so
    #: the kernel clears ADDR_NO_RANDOMIZE and randomises this exec even under ptrace and `setarch -R`
    #: (measured: passwd, su, mount, ssh-agent ...); the model places it as asked (``mm.randomize``)
    set_id: bool = False


# ---------------------------------------------------------------------------------------------------
# small kernel helpers
def ELF_PAGESTART(v: int) -> int:  # noqa: N802 - the kernel's macro
    return v & PAGE_MASK


def ELF_PAGEOFFSET(v: int) -> int:  # noqa: N802
    return v & (PAGE_SIZE - 1)


def ELF_PAGEALIGN(v: int) -> int:  # noqa: N802
    return (v + PAGE_SIZE - 1) & PAGE_MASK


def _bad_addr(x: int) -> bool:
    """BAD_ADDR(): an address at or above TASK_SIZE (an -errno reads as one)."""
    return x < 0 or x >= TASK_SIZE


def total_mapping_size(phdrs: tuple[ProgramHeader, ...]) -> int:
    """Models fs/binfmt_elf.c: total_mapping_size(): from the page of the first PT_LOAD to the end of
    the last one's memory."""
    loads = [p for p in phdrs if p.p_type == PT_LOAD]
    if not loads:
        return 0
    return loads[-1].p_vaddr + loads[-1].p_memsz - ELF_PAGESTART(loads[0].p_vaddr)


def maximum_alignment(phdrs: tuple[ProgramHeader, ...]) -> int:
    """Models fs/binfmt_elf.c: maximum_alignment(): the largest power-of-two p_align of the PT_LOADs,
    at least a page."""
    alignment = 0
    for p in phdrs:
        if p.p_type == PT_LOAD and p.p_align and not p.p_align & (p.p_align - 1):
            alignment = max(alignment, p.p_align)
    return ELF_PAGEALIGN(alignment)


def make_prot(p_flags: int) -> int:
    """Models fs/binfmt_elf.c: make_prot() (arch_elf_adjust_prot() is a no-op on x86)."""
    prot = 0
    if p_flags & PF_R:
        prot |= C.PROT_READ
    if p_flags & PF_W:
        prot |= C.PROT_WRITE
    if p_flags & PF_X:
        prot |= C.PROT_EXEC
    return prot


def stack_strings_size(filename: str, argv: list[str], envp: list[str]) -> int:
    """The bytes fs/exec.c puts at the top of the new stack before setup_arg_pages(): the NULL word
    (``bprm->p = vma->vm_end - sizeof(void *)``), then bprm->filename, the envp and argv strings, each
    NUL-terminated."""
    return 8 + sum(len(os.fsencode(s)) + 1 for s in (filename, *envp, *argv))


# ---------------------------------------------------------------------------------------------------
# the mm calls load_elf_binary() makes
def vm_mmap(mm: MmStruct, file: File, addr: int, length: int, prot: int, flags: int, off: int) -> int:
    """Models mm/util.c: vm_mmap() -> vm_mmap_pgoff() -> do_mmap() under the mmap lock."""
    if length <= 0:
        return -errno.EINVAL
    with mm.locks.mmap_write():
        return do_mmap(mm, file, addr & C.ULONG_MASK, length, prot, flags, off >> PAGE_SHIFT)


def vm_munmap(mm: MmStruct, start: int, length: int) -> int:
    """Models mm/mmap.c: vm_munmap() (a no-op for an empty range)."""
    end = ELF_PAGEALIGN(start + length)
    if end <= start:
        return 0
    with mm.locks.mmap_write():
        return do_vmi_munmap(mm, start, end)


def vm_brk_flags(mm: MmStruct, addr: int, request: int, vm_flags: int) -> int:
    """Models mm/vma.c: vm_brk_flags(): anonymous memory at a fixed address as brk makes it (the bss):
    check_brk_limits(), unmap what is there, then do_brk_flags() after the previous VMA (which
    merges with an anonymous neighbour).  0 or -errno."""
    length = ELF_PAGEALIGN(request)
    if length < request:
        return -errno.ENOMEM
    if not length:
        return 0
    if vm_flags & ~C.VM_EXEC:
        return -errno.EINVAL
    with mm.locks.mmap_write():
        e = check_brk_limits(mm, addr, length)
        if e:
            return e
        e = do_vmi_munmap(mm, addr, addr + length)
        if e:
            return e
        return do_brk_flags(mm, mm.tree.prev(addr), addr, length, vm_flags)


def elf_map(mm: MmStruct, file: File, addr: int, ph: ProgramHeader, prot: int, type_: int,
            total_size: int) -> int:
    """Models fs/binfmt_elf.c: elf_map(): map the segment's file pages; with ``total_size`` (the first
    mapping of an ET_DYN image) reserve the whole image, then unmap all past this segment."""
    size = ELF_PAGEALIGN(ph.p_filesz + ELF_PAGEOFFSET(ph.p_vaddr))
    off = ph.p_offset - ELF_PAGEOFFSET(ph.p_vaddr)
    addr = ELF_PAGESTART(addr)
    if not size:
        return addr
    if total_size:
        total_size = ELF_PAGEALIGN(total_size)
        map_addr = vm_mmap(mm, file, addr, total_size, prot, type_, off)
        if not _bad_addr(map_addr):
            vm_munmap(mm, map_addr + size, total_size - size)
    else:
        map_addr = vm_mmap(mm, file, addr, size, prot, type_, off)
    return map_addr


def elf_load(mm: MmStruct, file: File, addr: int, ph: ProgramHeader, prot: int, type_: int,
             total_size: int) -> int:
    """Models fs/binfmt_elf.c: elf_load(): elf_map() the file part, then the bss: padzero() clears the
    tail of the last file page (a write into the private file mapping: it gets an anon_vma), and
    vm_brk_flags() maps the whole pages past it (executable if the segment is)."""
    if ph.p_filesz:
        map_addr = elf_map(mm, file, addr, ph, prot, type_, total_size)
        if _bad_addr(map_addr):
            return map_addr
        zero_start = map_addr + ELF_PAGEOFFSET(ph.p_vaddr) + ph.p_filesz
        zero_end = map_addr + ELF_PAGEOFFSET(ph.p_vaddr) + ph.p_memsz
        if ph.p_memsz > ph.p_filesz and ELF_PAGEOFFSET(zero_start) and prot & C.PROT_WRITE:
            _padzero(mm, zero_start)
    else:
        map_addr = zero_start = ELF_PAGESTART(addr)
        zero_end = zero_start + ELF_PAGEOFFSET(ph.p_vaddr) + ph.p_memsz
    if ph.p_memsz > ph.p_filesz:
        zero_start = ELF_PAGEALIGN(zero_start)
        zero_end = ELF_PAGEALIGN(zero_end)
        e = vm_brk_flags(mm, zero_start, zero_end - zero_start, C.VM_EXEC if prot & C.PROT_EXEC else 0)
        if e:
            map_addr = e
    return map_addr


def _padzero(mm: MmStruct, addr: int) -> None:
    """padzero(): clear_user() of the rest of the page: a write fault on the private file page, and the
    file's bytes past the end of the segment (the start of the bss) become zeroes."""
    from .access import write  # a user access, as clear_user() is

    write(mm, addr, bytes(-addr % PAGE_SIZE))


# ---------------------------------------------------------------------------------------------------
def _read_image(path: str, what: str) -> ElfImage:
    """The file's ELF headers (the first 64 KiB, the whole file when a header lies beyond)."""
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 16)
            try:
                return read_elf(data, what)
            except ElfError:
                more = f.read()
                if not more:
                    raise
                return read_elf(data + more, what)
    except ElfError as e:
        raise ExecError(str(e)) from None
    except OSError as e:
        raise ExecError(f"{what}: {e.strerror or e}") from None


def _open(mm: MmStruct, path: str, what: str) -> File:
    try:
        st = os.stat(path)
    except OSError as e:
        raise ExecError(f"{what}: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ExecError(f"{what}: not a regular file (EACCES)")
    return open_real(mm, path)


def _setup_stack(mm: MmStruct, filename: str, argv: list[str], envp: list[str], executable_stack: bool
                 ) -> tuple[VMA, int]:
    """fs/exec.c: __bprm_mm_init() (one page below STACK_TOP_MAX), copy_strings() (the VMA grows to hold
    the strings) and setup_arg_pages(): shift to the (random) stack top, final flags, then expand by
    ``stack_expand`` (bounded by RLIMIT_STACK).  Returns the VMA and bprm->p after the shift (the
    lowest string: mm->arg_start)."""
    for s in (*argv, *envp):
        if len(os.fsencode(s)) + 1 > MAX_ARG_STRLEN:
            raise ExecError(f"{filename}: an argument or environment string is longer than MAX_ARG_STRLEN (E2BIG)")
    used = stack_strings_size(filename, argv, envp)
    rlim = mm.rlimit("RLIMIT_STACK")
    if used > min(rlim // 4, 3 * ((1 << 47) // 4)) and used > 32 * PAGE_SIZE:
        raise ExecError(f"{filename}: arguments and environment exceed RLIMIT_STACK / 4 (E2BIG)")
    vm_end = STACK_TOP
    p = vm_end - used
    vm_start = ELF_PAGESTART(p)
    stack_top = STACK_TOP
    if mm.randomize:
        # randomize_stack_top() then arch_align_stack() (arch/x86/kernel/process.c), then PAGE_ALIGN
        stack_top -= (mm.rng.getrandbits(32) & STACK_RND_MASK) << PAGE_SHIFT
        stack_top = ELF_PAGEALIGN((stack_top - mm.rng.randrange(8192)) & ~0xF)
    shift = vm_end - stack_top
    vm_start -= shift
    vm_end -= shift
    p -= shift
    stack_size = vm_end - vm_start
    rlim_stack = rlim & PAGE_MASK
    if stack_size + STACK_EXPAND > rlim_stack:
        stack_base = vm_end - rlim_stack
    else:
        stack_base = vm_start - STACK_EXPAND
    flags = C.VM_STACK_DEFAULT_FLAGS | C.VM_ACCOUNT | (C.VM_EXEC if executable_stack else 0) | mm.def_flags
    v = VMA(stack_base, vm_end, flags, stack_base >> PAGE_SHIFT)
    v.anon_vma, v.avc_len = mm.new_anon_vma(), 1  # the strings were written: the stack has pages
    mm.tree.insert(v)
    pages = v.pages
    mm.vm_stat_account(flags, pages)
    mm.committed += pages
    if flags & C.VM_LOCKED:
        mm.locked_vm += pages
    return v, p


def map_vdso(mm: MmStruct) -> int:
    """Models arch/x86/entry/vdso/vma.c: map_vdso(image, 0): one get_unmapped_area() for the whole block,
    then the special mappings [vvar], [vvar_vclock] and [vdso] (_install_special_mapping()).  Returns
    the vDSO's address (AT_SYSINFO_EHDR)."""
    total = sum(n for _, n in VDSO_BLOCK) << PAGE_SHIFT
    addr = get_unmapped_area(mm, None, 0, total, 0, 0, 0)
    if addr < 0:
        raise ExecError(f"map_vdso: no room for the vDSO ({-addr})")
    at = addr
    vdso = 0
    for name, n in VDSO_BLOCK:
        v = VMA(at, at + (n << PAGE_SHIFT), SPECIAL_FLAGS[name], 0, vm_ops=SpecialMappingOps(name))
        mm.tree.insert(v)
        mm.vm_stat_account(v.vm_flags, n)
        if name == "[vdso]":
            vdso = at
        at += n << PAGE_SHIFT
    return vdso


def _load_segments(mm: MmStruct, file: File, img: ElfImage, what: str, *, interp: bool, no_base: int = 0
                   ) -> tuple[int, int]:
    """The PT_LOAD loop of load_elf_binary() (``interp`` False) or of load_elf_interp() (True).
    Returns the load bias (load_elf_interp()'s load_addr) and the end of the image's memory (elf_brk,
    biased)."""
    hdr = img.header
    phdrs = img.phdrs
    first = True
    load_bias = 0
    alignment = maximum_alignment(phdrs)
    elf_brk = 0
    image_total = total_mapping_size(phdrs)
    if not image_total:
        raise ExecError(f"{what}: no PT_LOAD segment")
    for ph in phdrs:
        if ph.p_type != PT_LOAD:
            continue
        prot = make_prot(ph.p_flags)
        flags = C.MAP_PRIVATE
        vaddr = ph.p_vaddr
        total_size = 0
        if interp:
            # load_elf_interp(): MAP_FIXED after the first; the first of an ET_DYN at load_addr + vaddr
            # with the whole image's size (no_base: load_addr = -vaddr).
            if hdr.e_type == ET_EXEC or not first:
                flags |= C.MAP_FIXED
            elif no_base:
                load_bias = -vaddr
            if first:
                total_size = image_total
        elif not first:
            flags |= C.MAP_FIXED
        elif hdr.e_type == ET_EXEC:
            flags |= C.MAP_FIXED_NOREPLACE
        else:  # ET_DYN
            if img.interp is not None:
                load_bias = ELF_ET_DYN_BASE
                if mm.randomize:
                    load_bias += mm.rng.getrandbits(MMAP64_RND_BITS) << PAGE_SHIFT
                if alignment:
                    load_bias &= ~(alignment - 1)
                flags |= C.MAP_FIXED_NOREPLACE
            elif alignment > PAGE_SIZE:
                got = elf_load(mm, file, 0, ph, prot, flags, image_total)
                if _bad_addr(got):
                    raise ExecError(f"{what}: cannot map the image ({_errname(got)})")
                vm_munmap(mm, got, ELF_PAGEALIGN(image_total))
                load_bias = got & ~(alignment - 1)
                flags |= C.MAP_FIXED_NOREPLACE
            else:
                load_bias = 0
            load_bias = ELF_PAGESTART((load_bias - vaddr) & C.ULONG_MASK)
            total_size = image_total
        addr = (load_bias + vaddr) & C.ULONG_MASK
        got = elf_load(mm, file, addr, ph, prot, flags, total_size)
        if _bad_addr(got):
            raise ExecError(f"{what}: cannot map the segment at {addr:#x} ({_errname(got)})")
        if first:
            first = False
            if hdr.e_type == ET_DYN:
                if interp:
                    load_bias = got - ELF_PAGESTART(vaddr)
                else:
                    load_bias = (load_bias + got - ELF_PAGESTART(load_bias + vaddr)) & C.ULONG_MASK
        k = load_bias + ph.p_vaddr
        if _bad_addr(k) or ph.p_filesz > ph.p_memsz or ph.p_memsz > TASK_SIZE or TASK_SIZE - ph.p_memsz < k:
            raise ExecError(f"{what}: a segment does not fit below TASK_SIZE (ENOMEM)")
        elf_brk = max(elf_brk, (load_bias + ph.p_vaddr + ph.p_memsz) & C.ULONG_MASK)
    return load_bias & C.ULONG_MASK, elf_brk


def _set_id(path: str) -> bool:
    """fs/exec.c: bprm_fill_uid(): S_ISUID, or S_ISGID with S_IXGRP."""
    mode = os.stat(path).st_mode
    return bool(mode & stat.S_ISUID or (mode & stat.S_ISGID and mode & stat.S_IXGRP))


def _errname(e: int) -> str:
    return C.ERRNO_NAMES.get(-e, str(e)) if e < 0 else f"{e:#x}"


def exec_elf(mm: MmStruct, path: str, argv: list[str], envp: list[str]) -> ExecInfo:
    """Load ``path`` into the empty ``mm`` as execve(path, argv, envp) leaves it when it returns to user
    space.  Models fs/binfmt_elf.c: load_elf_binary() (see the module docstring for the order).  Raises
    :class:`ExecError` (one line) for a file the kernel would refuse."""
    if len(mm.tree):
        raise ExecError("exec_elf needs an empty mm (begin_new_exec() replaces the whole mm)")
    img = _read_image(path, path)
    hdr = img.header
    interp_img: ElfImage | None = None
    if img.interp is not None:
        if not os.path.exists(img.interp):
            raise ExecError(f"{path}: interpreter {img.interp} not found (ENOENT)")
        interp_img = _read_image(img.interp, f"{path}: interpreter {img.interp}")
        if interp_img.header.e_type not in (ET_EXEC, ET_DYN):
            raise ExecError(f"{path}: interpreter {img.interp} is not ET_EXEC or ET_DYN")
    executable_stack = False
    for ph in img.phdrs:
        if ph.p_type == PT_GNU_STACK:
            executable_stack = bool(ph.p_flags & PF_X)
    file = _open(mm, path, path)
    ifile = _open(mm, img.interp, img.interp) if img.interp is not None else None
    try:
        # setup_arg_pages() runs before the segments are mapped
        stack, p = _setup_stack(mm, path, argv, envp, executable_stack)
        load_bias, elf_brk = _load_segments(mm, file, img, path, interp=False)
        start_code, end_code, start_data, end_data = ~0 & C.ULONG_MASK, 0, 0, 0
        phdr_addr = 0
        for ph in img.loads:
            if ph.p_offset <= hdr.e_phoff < ph.p_offset + ph.p_filesz:
                phdr_addr = hdr.e_phoff - ph.p_offset + ph.p_vaddr
            k = ph.p_vaddr
            if ph.p_flags & PF_X and k < start_code:
                start_code = k
            start_data = max(start_data, k)
            k = ph.p_vaddr + ph.p_filesz
            if ph.p_flags & PF_X and end_code < k:
                end_code = k
            end_data = max(end_data, k)
        program_entry = (hdr.e_entry + load_bias) & C.ULONG_MASK
        interp_base = 0
        entry = program_entry
        if interp_img is not None and ifile is not None:
            interp_base, _ = _load_segments(mm, ifile, interp_img, f"{path}: interpreter {img.interp}",
                                               interp=True, no_base=load_bias)
            entry = (interp_img.header.e_entry + interp_base) & C.ULONG_MASK
        map_vdso(mm)
        # the "brk" handling of load_elf_binary()
        brk_moved = False
        if hdr.e_type == ET_DYN and img.interp is None:
            elf_brk = ELF_ET_DYN_BASE  # static PIE / a loader run directly: brk out of the mmap region
            brk_moved = True
        start_brk = ELF_PAGEALIGN(elf_brk)
        if mm.randomize:
            if not brk_moved:
                start_brk += PAGE_SIZE
            # arch_randomize_brk(): randomize_page(mm->brk, SZ_32M)
            start_brk += mm.rng.randrange(1 << (25 - PAGE_SHIFT)) << PAGE_SHIFT
        mm.start_brk = mm.brk = start_brk
        mm.start_data = (start_data + load_bias) & C.ULONG_MASK
        mm.end_data = (end_data + load_bias) & C.ULONG_MASK
        # create_elf_tables(): the auxv, argv and envp pointers below the strings
        start_stack = _start_stack(p, argv, envp)
        mm.start_stack = start_stack
        args_len = sum(len(os.fsencode(s)) + 1 for s in argv)
        env_len = sum(len(os.fsencode(s)) + 1 for s in envp)
        return ExecInfo(
            path=path, entry=entry, program_entry=program_entry, load_bias=load_bias, interp_base=interp_base,
            interp=img.interp, phdr=(phdr_addr + load_bias) & C.ULONG_MASK, phnum=hdr.e_phnum,
            start_code=(start_code + load_bias) & C.ULONG_MASK, end_code=(end_code + load_bias) & C.ULONG_MASK,
            start_data=mm.start_data, end_data=mm.end_data, start_brk=start_brk, brk=start_brk,
            stack_top=stack.vm_end, start_stack=start_stack, arg_start=p, arg_end=p + args_len,
            env_start=p + args_len, env_end=p + args_len + env_len,
            executable_stack=executable_stack, set_id=_set_id(path))
    finally:
        # free_bprm() / load_elf_binary()'s fput(interpreter): the VMAs keep their own references
        fput(mm, file)
        if ifile is not None:
            fput(mm, ifile)


#: the auxv entries of create_elf_tables() on x86-64 6.18 (ARCH_DLINFO: AT_SYSINFO_EHDR, AT_MINSIGSTKSZ;
#: then HWCAP PAGESZ CLKTCK PHDR PHENT PHNUM BASE FLAGS ENTRY UID EUID GID EGID SECURE RANDOM HWCAP2
#: EXECFN PLATFORM RSEQ_FEATURE_SIZE RSEQ_ALIGN) plus AT_NULL
AUXV_ENTRIES = 2 + 20 + 1


def _start_stack(p: int, argv: list[str], envp: list[str]) -> int:
    """create_elf_tables(): below the strings, arch_align_stack(), the platform string, 16 random bytes,
    then the auxv, envp, argv and argc words, rounded down to 16 bytes: the stack pointer."""
    p &= ~0xF
    p -= len(ELF_PLATFORM) + 1
    p -= 16
    ei_words = 2 * AUXV_ENTRIES
    sp = p - ei_words * 8
    items = (len(argv) + 1) + (len(envp) + 1) + 1
    return (sp - items * 8) & ~0xF
