"""Import of a live process (issue 13, item 4): ``MM.from_pid`` / ``MM.from_maps`` with smaps against
processes started here.  The model's maps must equal the process's byte for byte, its VmFlags the
kernel's, and what happens next must agree: the process's own next ``mmap(NULL)`` and ``brk`` (done after
the import, on command through a pipe) land where the model puts them."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from vmalab import MM
from vmalab import constants as C
from vmalab.procfs import MapsFormatError, import_maps, maps, parse_smaps, read_process, smaps_vmflags

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc of live processes")

# A process whose memory calls are all made on command, with read(2)/write(2) only (no stdio buffer, so no
# malloc, so no heap unless asked).  Setup words in argv[1]: h = grow the heap with malloc and split it by
# an mprotect inside; f = a shared read-only file mapping and an anonymous one with MADV_NOHUGEPAGE.
# Commands (one per line): "mmap N" -> the address of mmap(NULL, N, rw, private|anon); "brk N" -> the
# break after brk(current + N); "brk0" -> the break; anything else exits.  Raw syscalls for brk.
SOURCE = r"""
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

static void say(unsigned long v) {
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%lx\n", v);
    if (write(1, buf, n) != n) _exit(3);
}

int main(int argc, char **argv) {
    const char *setup = argc > 1 ? argv[1] : "";
    if (strchr(setup, 'h')) {
        char *p = malloc(100 << 10);
        memset(p, 1, 100 << 10);
        mprotect((void *)(((uintptr_t)p + 8192) & ~4095UL), 3 * 4096, PROT_READ);
    }
    if (strchr(setup, 'f')) {
        int fd = open(argv[0], O_RDONLY);
        if (mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0) == MAP_FAILED) return 2;
        char *a = mmap(NULL, 16 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        madvise(a + 4096, 4096, MADV_NOHUGEPAGE);
        a[0] = 1;
    }
    say(syscall(SYS_brk, 0));
    char line[64];
    for (;;) {
        int n = 0;
        while (n < (int)sizeof line - 1 && read(0, line + n, 1) == 1 && line[n] != '\n') n++;
        line[n] = 0;
        unsigned long v;
        if (sscanf(line, "mmap %lu", &v) == 1)
            say((unsigned long)mmap(NULL, v, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
        else if (sscanf(line, "brk %lu", &v) == 1)
            say(syscall(SYS_brk, syscall(SYS_brk, 0) + v));
        else if (!strcmp(line, "brk0"))
            say(syscall(SYS_brk, 0));
        else
            return 0;
    }
}
"""

ADDR_NO_RANDOMIZE = 0x0040000


def vmas_flags(smaps: str) -> dict[int, str]:
    """start -> VmFlags of a smaps text's VMAs ([vsyscall], above TASK_SIZE, is not a VMA)."""
    return {start: f for start, f in smaps_vmflags(smaps).items() if start < C.TASK_SIZE}


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> str:
    cc = shutil.which("cc")
    if cc is None:
        pytest.skip("needs a C compiler (cc)")
    d = tmp_path_factory.mktemp("import")
    (d / "live.c").write_text(SOURCE)
    subprocess.run([cc, "-O1", "-o", str(d / "live"), str(d / "live.c")], check=True)
    return str(d / "live")


def _no_aslr() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.personality(ADDR_NO_RANDOMIZE)


class Live:
    """A running copy of the program: ``ask`` sends one command and returns the number it prints."""

    def __init__(self, path: str, setup: str, aslr: bool) -> None:
        self.proc = subprocess.Popen([path, setup], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     bufsize=1, preexec_fn=None if aslr else _no_aslr)
        self.pid = self.proc.pid
        self.first_brk = self._read()  # printed once the setup is done

    def _read(self) -> int:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "the live program died"
        return int(line, 16)

    def ask(self, command: str) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._read()

    def maps(self) -> str:
        with open(f"/proc/{self.pid}/maps", encoding="utf-8") as f:
            return f.read()

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def live(program: str) -> Iterator[Callable[[str, bool], Live]]:
    started: list[Live] = []

    def start(setup: str, aslr: bool) -> Live:
        started.append(Live(program, setup, aslr))
        return started[-1]

    yield start
    for p in started:
        p.close()


RW = C.PROT_READ | C.PROT_WRITE
ANON = C.MAP_PRIVATE | C.MAP_ANONYMOUS
SIZES = (4096, 5 * 4096, 2 << 20, 3 << 20, 64 << 20, 4096)


@pytest.mark.parametrize("aslr", [True, False], ids=["aslr-on", "aslr-off"])
@pytest.mark.parametrize("setup", ["hf", ""], ids=["split-heap", "no-heap"])
def test_from_pid_then_the_process_and_the_model_agree(live: Callable[[str, bool], Live], setup: str,
                                                       aslr: bool) -> None:
    p = live(setup, aslr)
    snap = read_process(p.pid)
    mm = MM.from_pid(p.pid)
    mm.validate()
    assert maps(mm) == snap.maps  # byte for byte, [heap] pieces included
    kernel_flags = vmas_flags(snap.smaps)
    assert {v.vm_start: C.vmflags_str(v.vm_flags) for v in mm.tree} == kernel_flags
    heap = [line for line in snap.maps.splitlines() if line.endswith("[heap]")]
    if "h" in setup:
        assert len(heap) == 3  # rw / r (the mprotect) / rw
        assert "nh" in " ".join(kernel_flags.values()) and any("rd mr me" in f for f in kernel_flags.values())
    else:
        assert heap == []  # the break comes from /proc/PID/stat alone
    assert mm.start_brk == snap.stat["start_brk"]
    assert mm.sys_brk(0) == p.first_brk == p.ask("brk0")
    for size in SIZES:  # the process maps after the import: the model must place it the same
        assert mm.mmap(None, size, RW, ANON) == p.ask(f"mmap {size}"), f"mmap of {size:#x}"
    for grow in (5 * 4096, 3 * 4096 + 123):
        cur = mm.sys_brk(0)
        assert mm.sys_brk(cur + grow) == p.ask(f"brk {grow}")
    mm.validate()
    assert maps(mm) == p.maps()


def test_from_maps_with_start_brk_and_smaps_equals_from_pid(live: Callable[[str, bool], Live]) -> None:
    p = live("", True)
    snap = read_process(p.pid)
    without = MM.from_maps(snap.maps)
    assert without.sys_brk(0) == 0  # maps alone cannot know the break without a [heap] line
    mm = MM.from_maps(snap.maps, snap.smaps, start_brk=snap.stat["start_brk"])
    assert mm.sys_brk(0) == p.first_brk
    assert maps(mm) == maps(MM.from_pid(p.pid)) == snap.maps
    assert mm.mmap_base == MM.from_pid(p.pid).mmap_base


def test_a_sleeping_python_imports_byte_for_byte() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        for _ in range(50):  # until its interpreter is up (libpython and the encodings mapped)
            snap = read_process(proc.pid)
            if snap.maps.count("\n") > 20:
                break
            subprocess.run(["sleep", "0.05"], check=True)
        mm = MM.from_pid(proc.pid)
        mm.validate()
        assert maps(mm) == snap.maps
        assert {v.vm_start: C.vmflags_str(v.vm_flags) for v in mm.tree} == vmas_flags(snap.smaps)
        assert mm.start_stack == snap.stat["start_stack"] and mm.start_brk == snap.stat["start_brk"]
    finally:
        proc.kill()
        proc.wait()


def test_relro_guess_keeps_rodata_apart_after_exec(program: str, live: Callable[[str, bool], Live]) -> None:
    """Maps alone, right after execve: the read-only segment before the writable one is still .rodata (no
    `ac`).  When ld.so then makes the start of the writable segment read-only (RELRO), the kernel keeps
    it apart from .rodata; so must the model."""
    exec_capture = pytest.importorskip("vmalab.oracle.exec_capture")
    cap = exec_capture.capture_exec(program, [program, ""], ["A=1"])
    mm = MM.from_maps(cap.maps)  # no smaps: the guess
    assert {v.vm_start: C.vmflags_str(v.vm_flags) for v in mm.tree} == vmas_flags(cap.smaps)
    # the same program, ASLR off, after ld.so ran: apply its RELRO to the interpreter in the model
    steady = live("", False).maps()
    ld = [ln.split() for ln in steady.splitlines() if ln.endswith("/ld-linux-x86-64.so.2")]
    relro = [ln for ln in ld if ln[1] == "r--p" and int(ln[2], 16) > 0][-1]
    lo, hi = (int(x, 16) for x in relro[0].split("-"))
    mm.mprotect(lo, hi - lo, C.PROT_READ)
    model_ld = [ln.split() for ln in maps(mm).splitlines() if ln.endswith("/ld-linux-x86-64.so.2")]
    assert model_ld == ld


# ---- bad input ------------------------------------------------------------------------------------------
MAPS = "00400000-00401000 r--p 00000000 fe:00 12 /bin/x\n00600000-00602000 rw-p 00000000 00:00 0 [heap]\n"
SMAPS = ("00400000-00401000 r--p 00000000 fe:00 12 /bin/x\nRss: 4 kB\nVmFlags: rd mr mw me \n"
         "00600000-00602000 rw-p 00000000 00:00 0 [heap]\nRss: 8 kB\nAnonymous: 8 kB\nVmFlags: rd wr mr mw me ac \n")


def test_smaps_is_parsed_and_used() -> None:
    entries = parse_smaps(SMAPS)
    assert [(e.start, e.fields.get("Anonymous"), e.vmflags) for e in entries] == [
        (0x400000, None, "rd mr mw me"), (0x600000, 8, "rd wr mr mw me ac")]
    mm = MM.from_maps(MAPS, SMAPS.replace("rd wr mr mw me ac", "rd wr mr mw me"))
    heap = mm.vma_at(0x600000)
    assert heap is not None and C.vmflags_str(heap.vm_flags) == "rd wr mr mw me" and heap.anon_vma is not None
    assert (mm.start_brk, mm.brk) == (0x600000, 0x602000)


@pytest.mark.parametrize(("smaps", "where"), [
    (SMAPS.replace("Rss: 8 kB", "Rss eight"), "smaps line 5"),
    (SMAPS.replace("rd wr mr", "rd zz mr"), "smaps line 7"),
    ("Rss: 4 kB\n" + SMAPS, "smaps line 1"),
    (SMAPS.split("00600000")[0], "maps line 2"),  # no entry for the heap
    (SMAPS + "00700000-00701000 r--p 00000000 00:00 0 \n", "smaps line 8"),  # a VMA maps does not have
])
def test_bad_smaps_names_the_line(smaps: str, where: str) -> None:
    with pytest.raises(MapsFormatError, match=where):
        MM.from_maps(MAPS, smaps)


def test_bad_maps_names_the_line() -> None:
    with pytest.raises(MapsFormatError, match="maps line 2"):
        import_maps(MM(), MAPS.replace("rw-p", "rwzp"))


def test_multi_vma_heap_from_maps_alone() -> None:
    text = ("00400000-00401000 r-xp 00000000 fe:00 12 /bin/x\n"
            "00601000-00603000 rw-p 00000000 00:00 0 [heap]\n"
            "00603000-00604000 r--p 00000000 00:00 0 [heap]\n"
            "00604000-00610000 rw-p 00000000 00:00 0 [heap]\n")
    mm = MM.from_maps(text)
    assert (mm.start_brk, mm.brk) == (0x601000, 0x610000)
    assert maps(mm).splitlines()[:3] == [maps(mm).splitlines()[i] for i in range(3)]
    assert [line.split()[-1] for line in maps(mm).splitlines()[1:4]] == ["[heap]"] * 3
    mm.mprotect(0x603000, 4096, RW)  # the pieces of one heap share an anon_vma: they merge back
    assert len(mm.tree) == 2


def test_cli_maps_pid(live: Callable[[str, bool], Live]) -> None:
    p = live("h", True)
    out = subprocess.run([sys.executable, "-m", "vmalab", "maps", "--pid", str(p.pid)], capture_output=True,
                         text=True, check=True).stdout
    assert out == p.maps()
    sm = subprocess.run([sys.executable, "-m", "vmalab", "maps", "--pid", str(p.pid), "--smaps"],
                        capture_output=True, text=True, check=True).stdout
    assert vmas_flags(sm) == vmas_flags(read_process(p.pid).smaps)
    dead = subprocess.Popen(["true"])
    dead.wait()
    r = subprocess.run([sys.executable, "-m", "vmalab", "maps", "--pid", str(dead.pid)], capture_output=True,
                       text=True)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == f"vmalab: error: pid {dead.pid}: no such process\n"
    r = subprocess.run([sys.executable, "-m", "vmalab", "maps", "--pid", "2"], capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and "no user address space" in r.stderr


@pytest.mark.parametrize("program", ["/usr/bin/ls", "static"])
def test_from_maps_right_after_exec_takes_mmap_base_above_the_interpreter(program: str, tmp_path: object) -> None:
    """Right after exec (ASLR off) ld.so is the first top-down mapping and the vDSO block sits below it:
    mmap_base is the end of ld.so, not of [vdso]; a static program has only the vDSO block."""
    from pathlib import Path

    from vmalab.layout import mmap_base
    from vmalab.oracle.exec_capture import capture_exec

    path = program
    if program == "static":
        if shutil.which("cc") is None:
            pytest.fail("cc is needed to build the static test program")
        src = Path(str(tmp_path)) / "s.c"
        src.write_text("int main(void) { return 0; }\n")
        path = str(Path(str(tmp_path)) / "s")
        subprocess.run(["cc", "-static", "-o", path, str(src)], check=True)
    cap = capture_exec(path, [path], ["A=1"], 10)
    mm = MM.from_maps(cap.maps)
    assert mm.mmap_base == mmap_base(8 << 20)
    lines = [ln for ln in cap.maps.splitlines() if "[vdso]" in ln]
    vdso_end = int(lines[0].split()[0].split("-")[1], 16)
    assert (vdso_end < mm.mmap_base) == (program != "static")
