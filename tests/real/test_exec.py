"""The exec model (vmalab.binfmt_elf) against the live kernel: the maps right after execve.

For each real binary the kernel's maps and smaps are captured at the ptrace stop of the exec event with
ASLR off (vmalab.oracle.exec_capture), and the model's maps after :meth:`MM.exec` of the same path, argv
and envp must equal them line by line (start, end, perms, offset, dev, inode, name) and their smaps
VmFlags must agree VMA by VMA (nothing masked).  Programs compiled at test time cover static, static-PIE,
non-PIE, large-bss and 2 MiB-aligned images.  Bad input must raise ExecError with one line.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from vmalab.binfmt_elf import ELF_ET_DYN_BASE, ExecError, exec_elf
from vmalab.constants import RLIM_INFINITY
from vmalab.mm import MM
from vmalab.procfs import maps, smaps

ON_LINUX = sys.platform.startswith("linux")
needs_linux = pytest.mark.skipif(not ON_LINUX, reason="the exec capture needs Linux (ptrace, /proc)")
CC = shutil.which("cc") or shutil.which("gcc")
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler (cc) to build the test programs")
ENV = ["PATH=/usr/bin:/bin", "LANG=C"]

C_HELLO = "int main(void) { return 0; }\n"
C_BIGBSS = "static char big[40 << 20]; char small[100];\nint main(void) { return big[1] + small[3]; }\n"
C_DATA_BSS = ("char data[5000] = {1}; static char bss[3000];\n"
              "int main(void) { return data[0] + bss[5]; }\n")

#: name -> (source, cc flags)
COMPILED = {
    "static": (C_HELLO, ["-static"]),
    "static_pie": (C_HELLO, ["-static-pie"]),
    "nopie": (C_HELLO, ["-no-pie"]),
    "bigbss_pie": (C_BIGBSS, []),
    "bigbss_static": (C_BIGBSS, ["-static"]),
    "bigbss_static_pie": (C_BIGBSS, ["-static-pie"]),
    "data_bss_nopie": (C_DATA_BSS, ["-no-pie"]),
    "align2m_static_pie": (C_HELLO, ["-static-pie", "-Wl,-z,max-page-size=0x200000"]),
    "align2m_pie": (C_HELLO, ["-Wl,-z,max-page-size=0x200000"]),
    "execstack": (C_HELLO, ["-z", "execstack"]),
}

SYSTEM = ["/usr/bin/ls", "/usr/bin/python3", "/bin/bash", "/usr/bin/git", "/usr/bin/sort", "/usr/bin/cc"]


def _vmflags(text: str) -> dict[int, str]:
    """start -> sorted VmFlags; the [vsyscall] gate area (above TASK_SIZE, not a VMA: the model's smaps
    does not list it, its maps does) is left out."""
    from vmalab.constants import TASK_SIZE
    from vmalab.oracle.exec_capture import smaps_vmflags

    return {k: " ".join(sorted(v.split())) for k, v in smaps_vmflags(text).items() if k < TASK_SIZE}


def _fields(text: str) -> list[tuple[str, ...]]:
    return [tuple(line.split(maxsplit=5)) for line in text.splitlines() if line.strip()]


def _compare(path: str, argv: list[str], envp: list[str], rlimit_stack: int | None = None) -> MM:
    import resource

    from vmalab.oracle.exec_capture import capture_exec

    kernel = capture_exec(path, argv, envp, rlimit_stack=rlimit_stack)
    rl = resource.getrlimit(resource.RLIMIT_STACK)[0] if rlimit_stack is None else rlimit_stack
    if rl == resource.RLIM_INFINITY or rl < 0:
        rl = RLIM_INFINITY
    mm = MM.exec(path, argv, envp, rlimit_stack=rl)
    model_maps = maps(mm)
    assert _fields(model_maps) == _fields(kernel.maps), f"{path}\nmodel:\n{model_maps}\nkernel:\n{kernel.maps}"
    assert _vmflags(smaps(mm)) == _vmflags(kernel.smaps), path
    assert mm.start_brk == kernel.stat["start_brk"], path
    assert mm.start_data == kernel.stat["start_data"] and mm.end_data == kernel.stat["end_data"], path
    mm.validate()
    return mm


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    if CC is None:
        pytest.skip("no C compiler (cc)")
    d = tmp_path_factory.mktemp("exec_progs")
    out: dict[str, str] = {}
    for name, (src, flags) in COMPILED.items():
        c = d / f"{name}.c"
        c.write_text(src)
        exe = d / name
        proc = subprocess.run([CC, "-O0", "-o", str(exe), str(c), *flags], capture_output=True, text=True)
        if proc.returncode == 0:
            out[name] = str(exe)
        else:
            out[name] = ""  # the test of this one skips with the compiler's message
            (d / f"{name}.err").write_text(proc.stderr)
    return out


@needs_linux
@pytest.mark.parametrize("path", SYSTEM)
def test_system_binary_maps_equal_kernel(path: str) -> None:
    if not os.path.exists(path):
        pytest.skip(f"{path} is not installed")
    real = os.path.realpath(path)
    _compare(real, [os.path.basename(path), "--version"], ENV)


@needs_linux
@needs_cc
@pytest.mark.parametrize("name", sorted(COMPILED))
def test_compiled_binary_maps_equal_kernel(programs: dict[str, str], name: str) -> None:
    exe = programs[name]
    if not exe:
        pytest.skip(f"cc cannot build the {name} variant here: {COMPILED[name][1]}")
    _compare(exe, [exe], ENV)


@needs_linux
def test_long_arguments_grow_the_stack() -> None:
    """Strings of more than a page: the stack VMA is the pages they fill plus the 128 KiB stack_expand."""
    env = [*ENV, "BIG=" + "x" * 9000, "MORE=" + "y" * 5000]
    mm = _compare("/usr/bin/ls", ["ls", "-l", "z" * 3000], env)
    stack = mm.tree.last()
    assert stack is not None and stack.vm_end - stack.vm_start == 0x20000 + 5 * 4096


@needs_linux
@pytest.mark.parametrize("rlimit", [64 << 20, 256 << 10, 136 << 10, 1 << 30, -1])
def test_stack_rlimit(rlimit: int) -> None:
    """RLIMIT_STACK moves mmap_base (so the interpreter and the vDSO) and, below the strings' pages plus
    128 KiB, caps the stack VMA at the limit (setup_arg_pages())."""
    import resource

    env = [*ENV, "BIG=" + "x" * 9000]
    _compare("/usr/bin/ls", ["ls"], env, rlimit_stack=resource.RLIM_INFINITY if rlimit < 0 else rlimit)


@needs_linux
@needs_cc
def test_exec_info_matches_kernel_stat(programs: dict[str, str]) -> None:
    """start_code/end_code, arg and env bounds and the initial stack pointer, against /proc/PID/stat."""
    from vmalab.oracle.exec_capture import capture_exec

    for path in ["/usr/bin/ls", programs["static"] or "/usr/bin/sort"]:
        argv, envp = [path, "a", "bc"], ENV
        k = capture_exec(path, argv, envp).stat
        info = exec_elf(MM(), path, argv, envp)
        got = {f: getattr(info, f) for f in ("start_code", "end_code", "start_data", "end_data", "start_brk",
                                            "arg_start", "arg_end", "env_start", "env_end", "start_stack")}
        assert got == {f: k[f] for f in got}, path


@needs_linux
@pytest.mark.parametrize("path", ["/usr/bin/passwd", "/usr/bin/su", "/usr/bin/ssh-agent"])
def test_set_id_binary_is_randomized_by_the_kernel(path: str) -> None:
    """Kernel fact: exec of a set-user-ID / set-group-ID file clears ADDR_NO_RANDOMIZE (PER_CLEAR_ON_SETID),
    so its layout is random even under ptrace with ASLR off.  The model flags it (ExecInfo.set_id) and
    matches everything but the addresses: same VMAs, sizes, perms, offsets, devices, inodes, names."""
    from vmalab.oracle.exec_capture import capture_exec

    if not os.path.exists(path) or not os.stat(path).st_mode & 0o6000:
        pytest.skip(f"{path} is not a set-id binary here")
    kernel = capture_exec(path, [path], ENV)
    mm = MM()
    info = exec_elf(mm, path, [path], ENV)
    assert info.set_id
    assert "7ffffffde000-7ffffffff000" not in kernel.maps  # the kernel randomised the stack

    def shape(text: str) -> list[tuple[int, list[str]]]:
        out = []
        for line in text.splitlines():
            rng, *rest = line.split()
            a, b = (int(x, 16) for x in rng.split("-"))
            out.append((b - a, rest))
        return out

    assert shape(maps(mm)) == shape(kernel.maps)


def test_exec_info_fields() -> None:
    if not os.path.exists("/usr/bin/ls"):
        pytest.skip("no /usr/bin/ls")
    mm = MM()
    info = exec_elf(mm, "/usr/bin/ls", ["ls"], [])
    assert info.interp is not None and info.interp_base > info.load_bias
    assert info.load_bias == ELF_ET_DYN_BASE & ~0xFFF
    assert mm.start_brk == mm.brk == info.start_brk
    assert mm.sys_brk(0) == info.start_brk  # brk works after exec
    assert mm.sys_brk(info.start_brk + 0x21000) == info.start_brk + 0x21000
    assert "[heap]" in maps(mm)


def test_same_file_same_inode() -> None:
    """ld.so and the program each map several VMAs of one File; two opens of one path share the Inode."""
    from vmalab.realfile import open_real

    if not os.path.exists("/usr/bin/ls"):
        pytest.skip("no /usr/bin/ls")
    mm = MM.exec("/usr/bin/ls", ["ls"], [])
    files = {v.vm_file for v in mm.tree if v.vm_file is not None}
    assert len(files) == 2
    f = open_real(mm, "/usr/bin/ls")
    assert any(f.inode is g.inode for g in files)
    assert f.inode.ino == os.stat("/usr/bin/ls").st_ino


def test_randomized_exec_is_seeded() -> None:
    if not os.path.exists("/usr/bin/ls"):
        pytest.skip("no /usr/bin/ls")
    a = maps(MM.exec("/usr/bin/ls", ["ls"], [], randomize=True, seed=7))
    b = maps(MM.exec("/usr/bin/ls", ["ls"], [], randomize=True, seed=7))
    c = maps(MM.exec("/usr/bin/ls", ["ls"], [], randomize=True, seed=8))
    plain = maps(MM.exec("/usr/bin/ls", ["ls"], []))
    assert a == b and a != c and a != plain


# --- bad input -----------------------------------------------------------------------------------------
def _ehdr(ei_class: int = 2, machine: int = 62, phnum: int = 1) -> bytes:
    ident = b"\x7fELF" + bytes([ei_class, 1, 1]) + bytes(9)
    return ident + struct.pack("<HHIQQQIHHHHHH", 2, machine, 1, 0x401000, 64, 0, 0, 64, 56, phnum, 64, 0, 0)


def _bad_files(tmp: Path) -> dict[str, Path]:
    out = {
        "text": b"#!not an elf\nhello\n",
        "empty": b"",
        "truncated": _ehdr()[:30],
        "elf32": b"\x7fELF\x01\x01\x01" + bytes(9) + struct.pack("<HHIIIIIHHHHHH", 2, 3, 1, 0, 52, 0, 0, 52, 32,
                                                                  0, 40, 0, 0),
        "aarch64": _ehdr(machine=183) + bytes(56),
        "truncated_phdrs": _ehdr(phnum=4) + bytes(20),
    }
    paths = {}
    for name, data in out.items():
        p = tmp / name
        p.write_bytes(data)
        p.chmod(0o755)
        paths[name] = p
    ls = Path("/usr/bin/ls")
    if ls.exists():
        data = ls.read_bytes()
        old = b"/lib64/ld-linux-x86-64.so.2\0"
        if old in data:
            p = tmp / "nointerp"
            p.write_bytes(data.replace(old, b"/lib64/ld-nonexist-x86.so.2\0", 1))
            p.chmod(0o755)
            paths["missing_interp"] = p
    return paths


@pytest.mark.parametrize("name", ["text", "empty", "truncated", "elf32", "aarch64", "truncated_phdrs",
                                  "missing_interp", "no_such_file"])
def test_bad_input_is_one_line_exec_error(tmp_path: Path, name: str) -> None:
    paths = _bad_files(tmp_path)
    if name == "no_such_file":
        path = str(tmp_path / "absent")
    elif name not in paths:
        pytest.skip("no /usr/bin/ls to patch")
    else:
        path = str(paths[name])
    mm = MM()
    with pytest.raises(ExecError) as ei:
        exec_elf(mm, path, [path], [])
    msg = str(ei.value)
    assert msg and "\n" not in msg and path.split("/")[-1] in msg
    assert len(mm.tree) == 0  # nothing mapped before the refusal
    if ON_LINUX:
        from vmalab.oracle.exec_capture import ExecCaptureError, capture_exec

        with pytest.raises(ExecCaptureError) as ki:  # the kernel refuses it too, and nothing is left behind
            capture_exec(path, [path], [])
        assert "\n" not in str(ki.value)


def test_exec_needs_empty_mm() -> None:
    mm = MM()
    mm.mmap(0, 4096, 3, 0x22)
    with pytest.raises(ExecError):
        exec_elf(mm, "/usr/bin/ls", ["ls"], [])
