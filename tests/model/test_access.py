"""The memory API (vmalab.access): mm.read / mm.write / mm.fetch / mm.page_at, and file pages that hold
a real file's bytes.  Where the live kernel can show it, it is asked: a real file mapped with Python's
mmap gives the bytes the model must show, and read(2) into a buffer that runs into a PROT_NONE page shows
that a copy stops exactly at the faulting page."""

from __future__ import annotations

import ctypes
import mmap
import os
import sys
from pathlib import Path

import pytest

from vmalab import MM, Fault
from vmalab import constants as C
from vmalab.fdtable import install
from vmalab.pagetable import ANON, FILE, ZERO
from vmalab.realfile import open_real

P = 4096
RW = C.PROT_READ | C.PROT_WRITE
FIXED = C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_FIXED
BASE = 0x500000000000


def test_write_and_read_span_pages() -> None:
    mm = MM()
    mm.mmap(BASE, 4 * P, RW, FIXED)
    data = bytes(range(256)) * 20  # 5120 bytes from page 0 to page 2
    mm.write(BASE + P - 100, data)
    assert mm.read(BASE + P - 100, len(data)) == data
    assert mm.read(BASE, 4) == b"\0\0\0\0"
    # byte by byte, MM.touch agrees
    assert [mm.touch(BASE + P - 100 + i) for i in (0, 99, 100, 4195)] == [data[i] for i in (0, 99, 100, 4195)]
    assert mm.pt.rss == 3 and mm.page_at(BASE + 3 * P) is None  # only the pages written are resident
    assert mm.read(BASE, 0) == b""
    mm.validate()


def test_zero_page_reads_are_not_rss() -> None:
    mm = MM()
    mm.mmap(BASE, 2 * P, RW, FIXED)
    assert mm.read(BASE, 2 * P) == bytes(2 * P)
    page = mm.page_at(BASE + P)
    assert page is not None and page.kind == ZERO and mm.pt.rss == 0
    assert mm.tree.lookup(BASE).anon_vma is None  # a read fault prepares no anon_vma
    mm.write(BASE + P + 5, b"\x01")
    page = mm.page_at(BASE + P)
    assert page is not None and page.kind == ANON and mm.pt.rss == 1
    assert mm.read(BASE + P, 8) == b"\0\0\0\0\0\x01\0\0"


def test_zero_bytes_written_over_data_read_back_as_zero() -> None:
    mm = MM()
    mm.mmap(BASE, P, RW, FIXED)
    mm.write(BASE, b"\xff" * 64)
    mm.write(BASE + 8, bytes(8))
    assert mm.read(BASE, 24) == b"\xff" * 8 + bytes(8) + b"\xff" * 8
    mm.write(BASE, bytes(range(256)) * 16)  # a whole page: compacted into the page's base
    page = mm.page_at(BASE)
    assert page is not None and page.base is not None and not page.data
    assert mm.read(BASE, P) == bytes(range(256)) * 16
    mm.write(BASE + 1, b"\0")
    assert mm.read(BASE, 3) == b"\x00\x00\x02" and mm.touch(BASE + 2) == 2


def test_write_faulting_half_way_leaves_the_pages_before_written() -> None:
    mm = MM()
    mm.mmap(BASE, 2 * P, RW, FIXED)
    mm.mmap(BASE + 2 * P, P, C.PROT_READ, FIXED)
    with pytest.raises(Fault) as e:
        mm.write(BASE + P + 10, b"\x07" * (2 * P))
    assert (e.value.signal, e.value.addr, e.value.code) == ("SIGSEGV", BASE + 2 * P, "ACCERR")
    assert mm.read(BASE + P + 10, P - 10) == b"\x07" * (P - 10)
    assert mm.read(BASE + 2 * P, 4) == bytes(4)
    with pytest.raises(Fault) as e:
        mm.read(BASE + 2 * P, 2 * P)  # runs off the end: MAPERR at the first unmapped page
    assert (e.value.addr, e.value.code) == (BASE + 3 * P, "MAPERR")


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.read.restype = ctypes.c_ssize_t
    libc.read.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
    return libc


@pytest.mark.skipif(sys.platform != "linux", reason="the live kernel is Linux")
def test_a_copy_stops_at_the_faulting_page_like_the_kernels(tmp_path: Path) -> None:
    """read(2) into [RW page][PROT_READ page] from a file of 2 pages: the kernel copies up to the
    read-only page and returns that count; the model's write raises there with the same bytes written."""
    src = tmp_path / "src"
    payload = os.urandom(2 * P)
    src.write_bytes(payload)
    libc = _libc()
    addr = libc.mmap(None, 2 * P, RW, C.MAP_PRIVATE | C.MAP_ANONYMOUS, -1, 0)
    assert addr not in (None, ctypes.c_void_p(-1).value)
    try:
        assert libc.mprotect(ctypes.c_void_p(addr + P), P, C.PROT_READ) == 0
        fd = os.open(src, os.O_RDONLY)
        try:
            off = 100
            got = libc.read(fd, ctypes.c_void_p(addr + off), 2 * P - off)
        finally:
            os.close(fd)
        kernel = ctypes.string_at(addr, 2 * P)
    finally:
        libc.munmap(ctypes.c_void_p(addr), 2 * P)
    assert got == P - off  # the kernel: exactly the bytes before the read-only page
    mm = MM()
    mm.mmap(BASE, 2 * P, RW, FIXED)
    mm.mprotect(BASE + P, P, C.PROT_READ)
    with pytest.raises(Fault) as e:
        mm.write(BASE + off, payload[:2 * P - off])
    assert e.value.addr - (BASE + off) == got
    assert mm.read(BASE, 2 * P) == kernel


def test_fetch_needs_vm_exec_and_faults_the_page_in_first() -> None:
    mm = MM()
    mm.mmap(BASE, P, C.PROT_READ, FIXED)
    mm.mmap(BASE + P, P, C.PROT_READ | C.PROT_EXEC, FIXED)
    mm.mmap(BASE + 2 * P, P, C.PROT_NONE, FIXED)
    with pytest.raises(Fault) as e:
        mm.fetch(BASE, 4)
    assert (e.value.signal, e.value.code) == ("SIGSEGV", "ACCERR")
    page = mm.page_at(BASE)
    assert page is not None and page.kind == ZERO  # the read fault ran; NX faulted the retried fetch
    assert mm.fetch(BASE + P, 16) == bytes(16)
    with pytest.raises(Fault) as e:
        mm.fetch(BASE + 2 * P, 1)
    assert e.value.code == "ACCERR" and mm.page_at(BASE + 2 * P) is None
    with pytest.raises(Fault) as e:
        mm.fetch(BASE + P + P - 2, 4)  # runs into the PROT_NONE page
    assert e.value.addr == BASE + 2 * P


def test_growsdown_stack_grows_on_access_and_guard_page_faults() -> None:
    mm = MM()
    top = BASE + 0x100000
    mm.mmap(top - P, P, RW, FIXED | C.MAP_GROWSDOWN)
    mm.write(top - P - 8, b"12345678")  # below the VMA: expand_downwards()
    assert mm.tree.lookup(top - 2 * P) is not None and mm.read(top - P - 8, 8) == b"12345678"
    mm.madvise(top - P, P, C.MADV_NAMES["MADV_GUARD_INSTALL"])
    with pytest.raises(Fault) as e:
        mm.read(top - P - 4, 8)
    assert (e.value.addr, e.value.code) == (top - P, "MAPERR")


def test_cow_after_fork() -> None:
    mm = MM()
    mm.mmap(BASE, 2 * P, RW, FIXED)
    mm.write(BASE, b"parent" * 1000)
    child = mm.fork()
    assert child.read(BASE, 6000) == b"parent" * 1000
    child.write(BASE + 3, b"CHILD")
    assert mm.read(BASE, 12) == b"parentparent" and child.read(BASE, 12) == b"parCHILDrent"
    mm.write(BASE + P, b"P2")
    assert child.read(BASE + P, 2) == (b"parent" * 1000)[P:P + 2]
    mm.validate()
    child.validate()


def _real_file(tmp_path: Path, size: int) -> tuple[Path, bytes]:
    path = tmp_path / "data.bin"
    data = os.urandom(size)
    path.write_bytes(data)
    return path, data


def test_real_file_pages_hold_the_files_bytes_as_the_kernel_maps_them(tmp_path: Path) -> None:
    size = 3 * P + 123  # the last page is partial: the kernel shows zeroes after EOF
    path, data = _real_file(tmp_path, size)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
        kernel = bytes(m[:size])
        ctypes_tail = ctypes.string_at(ctypes.addressof(ctypes.c_char.from_buffer_copy(m[3 * P:3 * P + 1])), 1)
    assert kernel == data and ctypes_tail == data[3 * P:3 * P + 1]
    mm = MM()
    fd = install(mm, open_real(mm, str(path)))
    a = mm.mmap(None, 4 * P, C.PROT_READ, C.MAP_PRIVATE, fd, 0)
    assert mm.read(a, size) == kernel
    assert mm.read(a + size, 4 * P - size) == bytes(4 * P - size)  # the rest of the last page
    page = mm.page_at(a)
    assert page is not None and page.kind == FILE and not page.data  # clean page-cache page
    b = mm.mmap(None, 2 * P, C.PROT_READ, C.MAP_SHARED, fd, P)
    assert mm.read(b, 2 * P) == kernel[P:3 * P]  # an offset mapping shares the page cache
    assert mm.page_at(b) is mm.page_at(a + P)


def test_private_file_write_copies_and_leaves_the_page_cache(tmp_path: Path) -> None:
    path, data = _real_file(tmp_path, 2 * P)
    mm = MM()
    fd = install(mm, open_real(mm, str(path)))
    a = mm.mmap(None, 2 * P, RW, C.MAP_PRIVATE, fd, 0)
    b = mm.mmap(None, 2 * P, C.PROT_READ, C.MAP_PRIVATE, fd, 0)
    mm.write(a + 10, b"xyz")
    assert mm.read(a, 16) == data[:10] + b"xyz" + data[13:16]
    assert mm.read(b, 16) == data[:16]  # the page cache keeps the file's bytes
    page = mm.page_at(a)
    assert page is not None and page.kind == ANON
    assert path.read_bytes() == data  # the real file is never written


def test_exec_maps_the_programs_real_bytes() -> None:
    exe = os.path.realpath(sys.executable)
    mm = MM.exec(exe, [exe])
    head = next(v for v in mm.tree if v.vm_file is not None and v.vm_file.path == exe and v.vm_pgoff == 0)
    with open(exe, "rb") as f:
        want = f.read(64)
    assert mm.read(head.vm_start, 64) == want
    text = next(v for v in mm.tree if v.vm_file is not None and v.vm_file.path == exe and v.vm_flags & C.VM_EXEC)
    with open(exe, "rb") as f:
        f.seek(text.vm_pgoff * P)
        want = f.read(32)
    assert mm.fetch(text.vm_start, 32) == want


def test_page_at_never_faults() -> None:
    mm = MM()
    mm.mmap(BASE, P, RW, FIXED)
    assert mm.page_at(BASE) is None and mm.page_at(BASE + P) is None and mm.pt.rss == 0
