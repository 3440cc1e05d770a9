"""A small reader of ELF headers: what the exec model needs, nothing more.

Reads the ELF file header (``Elf64_Ehdr``), the program headers (``Elf64_Phdr``) and the ``PT_INTERP``
string, with the stdlib :mod:`struct` only (include/uapi/linux/elf.h).  The exec model
(:mod:`vmalab.binfmt_elf`) needs no sections, symbols or dynamic tags, so a library (pyelftools) would
be a dependency for three structs.  Every malformation raises :class:`ElfError` with a one-line message.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = ["EM_X86_64", "ET_DYN", "ET_EXEC", "ElfError", "ElfHeader", "ElfImage", "ProgramHeader", "PT_GNU_STACK",
           "PT_INTERP", "PT_LOAD", "read_elf"]

ELFMAG = b"\x7fELF"
ELFCLASS32, ELFCLASS64 = 1, 2
ELFDATA2LSB = 1
EV_CURRENT = 1
ET_EXEC, ET_DYN = 2, 3
EM_X86_64 = 62
PT_LOAD, PT_INTERP, PT_PHDR = 1, 3, 6
PT_GNU_STACK, PT_GNU_PROPERTY = 0x6474E551, 0x6474E553
PF_X, PF_W, PF_R = 1, 2, 4

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")
EM_NAMES = {3: "i386", 8: "MIPS", 20: "PowerPC", 21: "PowerPC64", 22: "S390", 40: "ARM", 62: "x86-64", 183: "AArch64",
            243: "RISC-V"}


class ElfError(ValueError):
    """Not an ELF file this reader (and an x86-64 kernel) can load."""


@dataclass(frozen=True)
class ProgramHeader:
    """``Elf64_Phdr``."""

    p_type: int
    p_flags: int
    p_offset: int
    p_vaddr: int
    p_paddr: int
    p_filesz: int
    p_memsz: int
    p_align: int


@dataclass(frozen=True)
class ElfHeader:
    """The fields of ``Elf64_Ehdr`` the loader reads."""

    e_type: int
    e_machine: int
    e_entry: int
    e_phoff: int
    e_phentsize: int
    e_phnum: int


@dataclass(frozen=True)
class ElfImage:
    """An ELF file's header, program headers and interpreter path (None without PT_INTERP)."""

    header: ElfHeader
    phdrs: tuple[ProgramHeader, ...]
    interp: str | None

    @property
    def loads(self) -> list[ProgramHeader]:
        return [p for p in self.phdrs if p.p_type == PT_LOAD]


def read_elf(data: bytes, name: str = "file") -> ElfImage:
    """Parse ``data`` (at least the headers of the file; the whole file is fine).  The checks are those
    of load_elf_binary() / load_elf_interp() (fs/binfmt_elf.c) before anything is mapped: the magic,
    ELFCLASS64, x86-64 (elf_check_arch()), ET_EXEC or ET_DYN, e_phentsize, e_phnum, the program headers
    within 64 KiB and inside the file, one PT_INTERP NUL-terminated inside the file."""
    if len(data) < 4 or data[:4] != ELFMAG:
        raise ElfError(f"{name}: not an ELF file (bad magic)")
    if len(data) < _EHDR.size:
        raise ElfError(f"{name}: truncated ELF header ({len(data)} of {_EHDR.size} bytes)")
    ident, e_type, e_machine, _ver, e_entry, e_phoff, _shoff, _flags, _ehsize, e_phentsize, e_phnum, *_ = \
        _EHDR.unpack_from(data)
    if ident[4] != ELFCLASS64:
        cls = {ELFCLASS32: "32-bit (ELFCLASS32)"}.get(ident[4], f"class {ident[4]}")
        raise ElfError(f"{name}: {cls} ELF, the x86-64 loader takes ELFCLASS64 only")
    if ident[5] != ELFDATA2LSB:
        raise ElfError(f"{name}: big-endian ELF, not x86-64")
    if e_machine != EM_X86_64:
        raise ElfError(f"{name}: ELF for {EM_NAMES.get(e_machine, f'machine {e_machine}')}, not x86-64")
    if e_type not in (ET_EXEC, ET_DYN):
        raise ElfError(f"{name}: ELF type {e_type} is neither ET_EXEC nor ET_DYN")
    if e_phentsize != _PHDR.size:
        raise ElfError(f"{name}: e_phentsize {e_phentsize} is not {_PHDR.size}")
    size = e_phnum * _PHDR.size
    if e_phnum < 1 or size > 65536:
        raise ElfError(f"{name}: bad program header count {e_phnum}")
    if e_phoff + size > len(data):
        raise ElfError(f"{name}: truncated program headers (need {e_phoff + size} bytes, have {len(data)})")
    phdrs = tuple(ProgramHeader(*_PHDR.unpack_from(data, e_phoff + i * _PHDR.size)) for i in range(e_phnum))
    interp: str | None = None
    for p in phdrs:
        if p.p_type != PT_INTERP:
            continue
        if interp is not None:
            raise ElfError(f"{name}: more than one PT_INTERP")
        if p.p_filesz > 4096 or p.p_filesz < 2 or p.p_offset + p.p_filesz > len(data):
            raise ElfError(f"{name}: bad PT_INTERP")
        raw = data[p.p_offset:p.p_offset + p.p_filesz]
        if raw[-1] != 0:
            raise ElfError(f"{name}: PT_INTERP is not NUL-terminated")
        interp = raw[:-1].decode(errors="surrogateescape")
    hdr = ElfHeader(e_type, e_machine, e_entry, e_phoff, e_phentsize, e_phnum)
    return ElfImage(hdr, phdrs, interp)
