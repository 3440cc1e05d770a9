"""Static test programs under Unicorn + vmalab print exactly what they print natively.

Each program of ``tests/emu/programs/`` is compiled with ``cc -static`` at test time and run twice: on
this machine's kernel (``native_run.c``: ASLR off, an empty environment, under ptrace so that a fatal
signal's faulting instruction is read from the registers) and under :mod:`vmalab.adapters.unicorn`.
Every syscall return the program prints, every ``/proc/self/maps`` it prints, its exit status, and for
``guard`` the signal, its code and the faulting instruction must be the same.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from vmalab import MM
from vmalab.adapters.syscalls import Dispatcher, ProcessExit
from vmalab.procfs import maps

HERE = Path(__file__).parent
PROGRAMS = sorted(p.stem for p in (HERE / "programs").glob("*.c"))
CC = shutil.which("cc") or shutil.which("gcc")
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler (cc) to build the test programs")
#: si_code of SIGSEGV (include/uapi/asm-generic/siginfo.h)
SEGV_CODES = {"MAPERR": 1, "ACCERR": 2}
PAGE = 4096


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    if CC is None:
        pytest.skip("no C compiler")
    out = tmp_path_factory.mktemp("emu")
    paths = {}
    for name in PROGRAMS:
        target = out / name
        proc = subprocess.run([CC, "-static", "-O1", "-Wall", "-o", str(target), str(HERE / "programs" / f"{name}.c")],
                              capture_output=True, text=True)
        if proc.returncode:
            pytest.skip(f"cc -static cannot build {name} here: {proc.stderr.strip().splitlines()[-1:]}")
        paths[name] = str(target)
    runner = out / "native_run"
    proc = subprocess.run([CC, "-O1", "-o", str(runner), str(HERE / "native_run.c")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    paths["native_run"] = str(runner)
    return paths


def native(built: dict[str, str], name: str, tmp_path: Path) -> tuple[bytes, list[str]]:
    report = tmp_path / f"{name}.report"
    proc = subprocess.run([built["native_run"], str(report), built[name]], capture_output=True, timeout=120)
    lines = report.read_text().splitlines() if report.exists() else []
    if not lines:
        pytest.skip(f"the native run did not report (ptrace refused?): {proc.stderr.decode(errors='replace')}")
    return proc.stdout, lines


@needs_cc
@pytest.mark.parametrize("mode", ["mmu", "mirror"])
@pytest.mark.parametrize("name", PROGRAMS)
def test_program_same_as_native(built: dict[str, str], name: str, mode: str, tmp_path: Path) -> None:
    uc = pytest.importorskip("vmalab.adapters.unicorn")
    if not uc.available():
        pytest.skip("unicorn is not installed (pip install 'vmalab[unicorn]')")
    want_out, report = native(built, name, tmp_path)
    out, err = io.BytesIO(), io.BytesIO()
    path = built[name]
    res = uc.run(path, [path], [], stdout=out, stderr=err, mode=mode)
    assert out.getvalue().decode() == want_out.decode()
    assert b"/proc/self/maps" in want_out  # each program prints its maps
    assert res.unsupported == "", res.unsupported
    last = report[-1].split()
    if last[0] == "exit":
        assert res.signal is None and res.exit_status == int(last[1])
    else:
        # killed by a signal: the same signal, code, page and instruction
        assert last == ["killed", str(res.signal)]
        sig = report[-2].split()
        assert sig[0] == "signal" and int(sig[1]) == res.signal
        assert res.fault is not None and SEGV_CODES[res.fault.code] == int(sig[3])
        assert int(sig[5], 16) >> 12 == res.fault.addr >> 12  # the TLB fill hook sees the page only
        if mode == "mirror":
            assert int(sig[5], 16) == res.fault.addr  # a memory hook sees the byte
        assert res.pc == int(sig[7], 16)
        assert res.status == 128 + res.signal


def _uc_perms(uc: Any, addr: int) -> int | None:
    """The permissions of Unicorn's region holding ``addr`` (mem_regions() ends are inclusive), or None."""
    return next((p for s, e, p in uc.mem_regions() if s <= addr <= e), None)


def _mirror_machine(built: dict[str, str]) -> Any:
    uc = pytest.importorskip("vmalab.adapters.unicorn")
    if not uc.available():
        pytest.skip("unicorn is not installed (pip install 'vmalab[unicorn]')")
    return uc.Machine(built["brk"], [built["brk"]], [], stdout=io.BytesIO(), stderr=io.BytesIO(), mode="mirror")


@needs_cc
def test_mirror_store_to_a_page_made_writable_by_the_fault_lands(built: dict[str, str]) -> None:
    """unicorn#2368: a store retried after the write-protect hook granted the page is dropped by Unicorn; the
    mirror stops at the store, faults the page in through vmalab and runs the instruction again."""
    m = _mirror_machine(built)
    mm = m.mm
    data = mm.mmap(None, 2 * PAGE, 3, 0x22)  # PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS
    code = mm.mmap(None, PAGE, 7, 0x22)
    m.mirror.apply()
    value = 0x1122334455667788
    # mov rcx, data+4092; mov rax, value; mov [rcx], rax (across two pages); mov byte [rcx+8], 0x5a;
    # mov eax, 60; mov edi, 7; syscall (exit 7)
    prog = (b"\x48\xb9" + (data + PAGE - 4).to_bytes(8, "little") + b"\x48\xb8" + value.to_bytes(8, "little")
            + b"\x48\x89\x01" + b"\xc6\x41\x08\x5a" + b"\xb8\x3c\x00\x00\x00\xbf\x07\x00\x00\x00\x0f\x05")
    m.write(code, prog)
    assert mm.page_at(data) is None and mm.page_at(data + PAGE) is None  # not resident: no permission in Unicorn
    res = m.run(begin=code)
    assert res.exit_status == 7 and res.signal is None
    assert m.read(data + PAGE - 4, 9) == value.to_bytes(8, "little") + b"\x5a"
    # both pages were faulted in by vmalab (write faults: anonymous pages), and Unicorn may write them now
    for a in (data, data + PAGE):
        page = mm.page_at(a)
        assert page is not None and page.kind == "anon"
        assert a >> 12 in m.mirror.wr
    # the bytes follow the pages out of Unicorn: mremap moves them (MREMAP_MAYMOVE|MREMAP_FIXED); run()
    # unsubscribed the mirror when the program ended
    mm.mmu_notifier_register(m.mirror)
    target = mm.mmap(None, 2 * PAGE, 3, 0x22)
    assert mm.syscall("mremap", data, 2 * PAGE, 2 * PAGE, 3, target) == target
    m.mirror.apply()
    assert m.read(target + PAGE - 4, 9) == value.to_bytes(8, "little") + b"\x5a"
    assert all(not (s <= data < e + 1) for s, e, _ in m.uc.mem_regions())  # inclusive ends


@needs_cc
def test_mirror_regions_follow_the_vmas(built: dict[str, str]) -> None:
    m = _mirror_machine(built)
    mm, uc = m.mm, m.uc
    a = mm.mmap(None, 4 * PAGE, 3, 0x22)
    mm.mprotect(a + PAGE, PAGE, 1)
    m.write(a, b"x")  # resident and writable: a write fault through vmalab
    m.mirror.apply()
    # one page resident (written: a write fault through vmalab); the others have no permission until touched
    assert [_uc_perms(uc, a + i * PAGE) for i in range(4)] == [3, 0, 0, 0]
    mm.munmap(a + PAGE, PAGE)
    m.mirror.apply()
    assert [_uc_perms(uc, a + i * PAGE) for i in range(4)] == [3, None, 0, 0]
    assert m.read(a + 2 * PAGE, 1) == b"\0"  # a read fault: present in vmalab, read-only in Unicorn
    assert [_uc_perms(uc, a + i * PAGE) for i in range(4)] == [3, None, 1, 0]
    assert mm.page_at(a + 2 * PAGE) is not None
    mm.syscall("madvise", a, PAGE, 4)  # MADV_DONTNEED: not resident, the bytes are zeros again
    m.mirror.apply()
    assert uc.mem_read(a, 1) == b"\0" and a >> 12 not in m.mirror.res
    assert m.read(a, 1) == b"\0"


def test_mirror_mode_needs_no_virtual_tlb(monkeypatch: pytest.MonkeyPatch) -> None:
    uc = pytest.importorskip("vmalab.adapters.unicorn")
    if not uc.available():
        pytest.skip("unicorn is not installed (pip install 'vmalab[unicorn]')")
    import unicorn

    monkeypatch.delattr(unicorn, "UC_TLB_VIRTUAL")
    with pytest.raises(uc.UnicornUnavailable, match="mode='mirror'"):
        uc.Machine("/bin/true", ["/bin/true"])
    with pytest.raises(ValueError, match="unknown mode"):
        uc.Machine("/bin/true", ["/bin/true"], mode="shadow")


def test_guard_is_the_fatal_one(built: dict[str, str], tmp_path: Path) -> None:
    """The native harness itself: guard dies of SIGSEGV/ACCERR, the others exit 0."""
    _, report = native(built, "guard", tmp_path)
    assert report[-1] == "killed 11" and report[-2].startswith("signal 11 code 2 ")
    _, report = native(built, "brk", tmp_path)
    assert report == ["exit 0"]


# -- the dispatcher on its own ------------------------------------------------------------------------
class _Cpu:
    fs = 0

    def set_fs_base(self, value: int) -> None:
        self.fs = value

    def get_fs_base(self) -> int:
        return self.fs


def _dispatcher() -> tuple[Dispatcher, io.BytesIO]:
    out = io.BytesIO()
    mm = MM()
    return Dispatcher(mm, _Cpu(), "/bin/true", out, io.BytesIO(), pid=4242), out


def test_dispatcher_memory_syscalls_are_the_models() -> None:
    d, _ = _dispatcher()
    ref = MM()
    a = d.syscall(9, 0, 3 << 12, 3, 0x22, (1 << 64) - 1, 0)
    assert a == ref.syscall("mmap", 0, 3 << 12, 3, 0x22, -1, 0)
    assert d.syscall(11, a + 1, 4096) == (-22) & ((1 << 64) - 1)  # munmap EINVAL, as rax
    assert d.syscall(10, a + 4096, 4096, 1) == 0
    assert maps(d.mm).count("\n") == maps(ref).count("\n") + 2  # split in three
    # mincore writes its vector to guest memory
    d.mm.touch(a, write=True)
    vec = a + 2 * 4096
    assert d.syscall(27, a, 2 << 12, vec) == 0
    assert d.mm.touch(vec) == 1 and d.mm.touch(vec + 1) == 0


def test_dispatcher_others() -> None:
    d, out = _dispatcher()
    mm = d.mm
    buf = mm.mmap(None, 2 << 12, 3, 0x22)
    path = b"/proc/self/maps\0"
    from vmalab import access

    access.write(mm, buf, path)
    fd = d.syscall(257, (-100) & ((1 << 64) - 1), buf, 0, 0)
    assert fd == 3
    text = maps(mm).encode()
    assert d.syscall(0, fd, buf + 4096, 4096) == min(len(text), 4096)
    assert access.read(mm, buf + 4096, 20) == text[:20]
    assert d.syscall(1, 1, buf + 4096, 20) == 20 and out.getvalue() == text[:20]
    assert d.syscall(1, 7, buf, 1) == (-9) & ((1 << 64) - 1)  # EBADF
    assert d.syscall(1, 1, 0x10, 1) == (-14) & ((1 << 64) - 1)  # EFAULT
    assert d.syscall(3, fd) == 0 and d.syscall(3, fd) == (-9) & ((1 << 64) - 1)
    access.write(mm, buf, b"/etc/passwd\0")
    assert d.syscall(257, (-100) & ((1 << 64) - 1), buf, 0, 0) == (-13) & ((1 << 64) - 1)  # EACCES
    assert d.syscall(158, 0x1002, 0x1234) == 0 and d.cpu.get_fs_base() == 0x1234
    assert d.syscall(218, 0) == 4242
    assert d.syscall(334, 0, 0, 0, 0) == (-38) & ((1 << 64) - 1)
    assert d.syscall(302, 0, 3, 0, buf) == 0
    assert access.read(mm, buf, 8) == (8 << 20).to_bytes(8, "little")
    assert d.syscall(999) == (-38) & ((1 << 64) - 1)
    assert d.unsupported[999] == 1 and "syscall 999 x1" in d.unsupported_report()
    with pytest.raises(ProcessExit) as e:
        d.syscall(231, 300)
    assert e.value.status == 300 & 0xFF


def test_without_unicorn_the_module_imports_and_names_the_extra() -> None:
    code = textwrap.dedent("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "unicorn" or name.startswith("unicorn."):
                    raise ImportError("hidden")
        sys.meta_path.insert(0, Block())
        import vmalab.adapters.unicorn as u
        assert not u.available()
        try:
            u.run("/bin/true")
        except u.UnicornUnavailable as e:
            print(e)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ})
    assert proc.returncode == 0, proc.stderr
    assert "pip install 'vmalab[unicorn]'" in proc.stdout
    assert len(proc.stdout.strip().splitlines()) == 1
