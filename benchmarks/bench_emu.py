"""Measure what vmalab costs an emulator: Unicorn alone vs Unicorn + vmalab (the MMU mode) vs native.

Usage: python benchmarks/bench_emu.py [--pages P] [--rounds R] [--pairs K] [--pair-pages Q]
                                      [--repeats N] [--json]

One guest program, ``GUEST_SOURCE`` below (no libc: ``cc -static -nostdlib``, compiled at first use with
:func:`vmalab.oracle.cbuild.build_c_helper` and cached in ``~/.cache/vmalab/``), is run three ways:

* natively, on this machine's kernel;
* under Unicorn alone: its PT_LOAD segments and a stack mapped directly with ``uc.mem_map``, the four
  syscalls it makes served minimally (mmap: ``uc.mem_map`` at a bump address, munmap: ``uc.mem_unmap``,
  write, exit_group);
* under Unicorn + vmalab (:mod:`vmalab.adapters.unicorn`): vmalab's exec model, the virtual TLB whose
  fills go through vmalab's fault path, the syscalls through :class:`vmalab.adapters.syscalls.Dispatcher`.

Workloads:

* memory (``guest 0 P R``): mmap P fresh anonymous pages, then R rounds of a read-modify-write-and-sum
  over every 8-byte word (an asm loop of exactly 7 instructions per word and 5 per round), print the
  checksum.  instr/s = the loop's instructions / seconds; the start-up and exit outside the loop (a few
  hundred instructions, counted by a ``UC_HOOK_CODE`` counter in a separate Unicorn run at a tiny size:
  the ``count`` row) are not in the figure.
* syscalls (``guest 1 K Q``): K mmap(NULL, Q pages) / munmap pairs, print how many failed.  Also the
  dispatcher alone: the same 2K syscalls as direct ``Dispatcher.syscall`` calls on a fresh ``MM``.

Timing: the best of N repeats.  Emulators: the run only (``emu_start``; loading is not timed).  Native:
the wall time of the process minus that of an empty run of the same binary (exec and exit).  The
outputs (checksum, failure count) of the three runs must be equal: the ``same`` column.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from bench_ops import fmt, machine

from vmalab import constants as C
from vmalab.mm import MM
from vmalab.oracle.cbuild import CBuildError, build_c_helper

PAGE = C.PAGE_SIZE
Row = dict[str, Any]
#: instructions of the memory loop (GUEST_SOURCE's memloop): per 8-byte word, per round
PER_WORD, PER_ROUND = 7, 5
CFLAGS = ("-O2", "-Wall", "-static", "-nostdlib", "-fno-stack-protector", "-fno-pie", "-no-pie")
NR_WRITE, NR_MMAP, NR_MUNMAP, NR_EXIT, NR_EXIT_GROUP = 1, 9, 11, 60, 231

GUEST_SOURCE = r"""
/* bench_emu.py's guest: no libc.  guest 0 P R: the memory loop; guest 1 K Q: K mmap/munmap pairs. */
typedef unsigned long u64;
static long sc(long n, long a, long b, long c, long d, long e, long f) {
    register long r10 __asm__("r10") = d, r8 __asm__("r8") = e, r9 __asm__("r9") = f;
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}
static u64 num(const char *s) { u64 v = 0; while (*s >= '0' && *s <= '9') v = v * 10 + (u64)(*s++ - '0'); return v; }
static void out(const char *tag, u64 a, u64 b) {
    char buf[64]; int n = 0;
    while (*tag) buf[n++] = *tag++;
    for (int k = 0; k < 2; k++) {
        u64 v = k ? b : a;
        buf[n++] = ' ';
        for (int i = 60; i >= 0; i -= 4) buf[n++] = "0123456789abcdef"[(v >> i) & 15];
    }
    buf[n++] = '\n';
    sc(1, 1, (long)buf, n, 0, 0, 0);
}
/* 7 instructions per word, 5 per round (bench_emu.py's PER_WORD, PER_ROUND) */
static u64 memloop(u64 *p, u64 words, u64 rounds) {
    u64 sum = 0, i, x, k = 0x9e3779b97f4a7c15UL;
    __asm__ volatile(
        "1: xor %[i], %[i]\n"
        "2: mov (%[p],%[i],8), %[x]\n"
        "   add %[k], %[x]\n"
        "   mov %[x], (%[p],%[i],8)\n"
        "   add %[x], %[s]\n"
        "   inc %[i]\n"
        "   cmp %[w], %[i]\n"
        "   jb 2b\n"
        "   add %[i], %[k]\n"
        "   dec %[n]\n"
        "   test %[n], %[n]\n"
        "   jnz 1b\n"
        : [s] "+r"(sum), [i] "=&r"(i), [x] "=&r"(x), [n] "+r"(rounds), [k] "+r"(k)
        : [p] "r"(p), [w] "r"(words)
        : "cc", "memory");
    return sum;
}
void start_c(long *sp) {
    char **argv = (char **)(sp + 1);
    u64 mode = num(argv[1]), a = num(argv[2]), b = num(argv[3]);
    if (mode == 0) {
        u64 s = 0;
        if (a && b) {
            u64 *p = (u64 *)sc(9, 0, (long)(a * 4096), 3, 0x22, -1, 0);
            if ((long)p < 0) sc(231, 1, 0, 0, 0, 0, 0);
            s = memloop(p, a * 512, b);
        }
        out("mem", a * 512 * b, s);
    } else {
        u64 bad = 0;
        for (u64 k = 0; k < a; k++) {
            long p = sc(9, 0, (long)(b * 4096), 3, 0x22, -1, 0);
            if (p < 0) { bad++; continue; }
            if (sc(11, p, (long)(b * 4096), 0, 0, 0, 0)) bad++;
        }
        out("sys", a, bad);
    }
    sc(231, 0, 0, 0, 0, 0, 0);
}
__asm__(".globl _start\n_start:\n mov %rsp, %rdi\n and $-16, %rsp\n call start_c\n hlt\n");
"""


class Unavailable(Exception):
    """Something cannot be measured here: the message is the reason."""


def loop_instructions(pages: int, rounds: int) -> int:
    """Instructions the memory loop executes (0 when the guest skips it)."""
    if not pages or not rounds:
        return 0
    return rounds * (pages * (PAGE // 8) * PER_WORD + PER_ROUND)


def build_guest() -> str:
    if not sys.platform.startswith("linux"):
        raise Unavailable("the guest is a Linux x86-64 program")
    with tempfile.TemporaryDirectory(prefix="vmalab-bench-emu-") as tmp:
        src = Path(tmp) / "bench_emu_guest.c"
        src.write_text(GUEST_SOURCE)
        try:
            return build_c_helper(src, "bench-emu-guest", CFLAGS)[0]
        except CBuildError as e:
            raise Unavailable(str(e)) from None


def unicorn_module() -> Any:
    from vmalab.adapters import unicorn as adapter

    if not adapter.available():
        raise Unavailable(adapter.INSTALL_HINT)
    import unicorn

    return unicorn


# --- the three runs -----------------------------------------------------------------------------------------
def run_native(binary: str, args: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run([binary, *args], capture_output=True, timeout=3600)
    t = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"native {args}: exit status {proc.returncode}")
    return t, proc.stdout.decode()


def run_unicorn(binary: str, args: list[str], count: bool = False) -> tuple[float, str, int | None]:
    """Unicorn alone: (seconds of emu_start, stdout, instructions counted by UC_HOOK_CODE when ``count``)."""
    uc_mod = unicorn_module()
    from unicorn import x86_const as x86

    uc = uc_mod.Uc(uc_mod.UC_ARCH_X86, uc_mod.UC_MODE_64)
    data = Path(binary).read_bytes()
    entry, phoff, phentsize, phnum = (struct.unpack_from("<Q", data, 24)[0], struct.unpack_from("<Q", data, 32)[0],
                                      *struct.unpack_from("<HH", data, 54))
    mapped: set[int] = set()
    for i in range(phnum):
        p_type, _flags, off, vaddr, _paddr, filesz, memsz, _align = struct.unpack_from(
            "<IIQQQQQQ", data, phoff + i * phentsize)
        if p_type != 1 or not memsz:  # PT_LOAD
            continue
        for page in range(vaddr & ~(PAGE - 1), vaddr + memsz, PAGE):
            if page not in mapped:
                uc.mem_map(page, PAGE, uc_mod.UC_PROT_ALL)
                mapped.add(page)
        uc.mem_write(vaddr, data[off:off + filesz])
    stack_top, stack_size = 0x7FFFFFFFF000, 64 * PAGE
    uc.mem_map(stack_top - stack_size, stack_size, uc_mod.UC_PROT_READ | uc_mod.UC_PROT_WRITE)
    strings = [os.fsencode(s) + b"\0" for s in (binary, *args)]
    blob = b"".join(strings)
    str_at = (stack_top - len(blob) - 64) & ~15
    uc.mem_write(str_at, blob)
    ptrs, q = [], str_at
    for s in strings:
        ptrs.append(q)
        q += len(s)
    words = [len(strings), *ptrs, 0, 0, 0, 0]  # argc, argv, NULL, envp NULL, auxv AT_NULL
    sp = (str_at - 8 * len(words) - 64) & ~15
    uc.mem_write(sp, struct.pack(f"<{len(words)}Q", *words))
    uc.reg_write(x86.UC_X86_REG_RSP, sp)

    out = bytearray()
    state = {"next": 0x100000000000, "stopped": False}

    def on_syscall(uc: Any, _data: Any) -> None:
        nr = uc.reg_read(x86.UC_X86_REG_RAX)
        a0, a1, a2 = (uc.reg_read(r) for r in (x86.UC_X86_REG_RDI, x86.UC_X86_REG_RSI, x86.UC_X86_REG_RDX))
        ret = -38  # ENOSYS
        if nr == NR_MMAP:
            length = (a1 + PAGE - 1) & ~(PAGE - 1)
            ret = state["next"]
            uc.mem_map(ret, length, uc_mod.UC_PROT_READ | uc_mod.UC_PROT_WRITE)
            state["next"] += length
        elif nr == NR_MUNMAP:
            uc.mem_unmap(a0, (a1 + PAGE - 1) & ~(PAGE - 1))
            ret = 0
        elif nr == NR_WRITE:
            out.extend(uc.mem_read(a1, a2))
            ret = a2
        elif nr in (NR_EXIT, NR_EXIT_GROUP):
            state["stopped"] = True
            uc.emu_stop()
            return
        uc.reg_write(x86.UC_X86_REG_RAX, ret & C.ULONG_MASK)

    uc.hook_add(uc_mod.UC_HOOK_INSN, on_syscall, None, 1, 0, x86.UC_X86_INS_SYSCALL)
    counter = [0]
    if count:
        def on_code(_uc: Any, _addr: int, _size: int, _data: Any) -> None:
            counter[0] += 1

        uc.hook_add(uc_mod.UC_HOOK_CODE, on_code)
    t0 = time.perf_counter()
    uc.emu_start(entry, 0xFFFFFFFFFFFFFFFF)
    t = time.perf_counter() - t0
    if not state["stopped"]:
        raise RuntimeError(f"unicorn {args}: stopped without exit_group")
    return t, out.decode(), counter[0] if count else None


def run_vmalab(binary: str, args: list[str]) -> tuple[float, str]:
    """Unicorn + vmalab: (seconds of Machine.run, stdout)."""
    unicorn_module()
    from vmalab.adapters.unicorn import Machine

    out = io.BytesIO()
    m = Machine(binary, [binary, *args], [], stdout=out, stderr=out)
    t0 = time.perf_counter()
    res = m.run()
    t = time.perf_counter() - t0
    if res.status or res.unsupported:
        raise RuntimeError(f"vmalab {args}: status {res.status} {res.unsupported}")
    return t, out.getvalue().decode()


class _NoCpu:
    def set_fs_base(self, value: int) -> None:
        pass

    def get_fs_base(self) -> int:
        return 0


def run_dispatcher(pairs: int, pages: int) -> tuple[float, str]:
    """The same mmap/munmap pairs as direct Dispatcher.syscall calls on a fresh MM: (seconds, the guest's
    output line for them)."""
    from vmalab.adapters.syscalls import Dispatcher

    d = Dispatcher(MM(), _NoCpu(), "/bench", io.BytesIO(), io.BytesIO())
    call, length, bad = d.syscall, pages * PAGE, 0
    fd = -1 & C.ULONG_MASK
    rw, flags = C.PROT_READ | C.PROT_WRITE, C.MAP_PRIVATE | C.MAP_ANONYMOUS
    t0 = time.perf_counter()
    for _ in range(pairs):
        p = call(NR_MMAP, 0, length, rw, flags, fd, 0)
        if p > C.ULONG_MASK - 4096:
            bad += 1
            continue
        if call(NR_MUNMAP, p, length):
            bad += 1
    t = time.perf_counter() - t0
    return t, f"sys {pairs:016x} {bad:016x}\n"


def best(fn: Any, repeats: int, *args: Any) -> tuple[float, Any]:
    """The smallest time of ``repeats`` calls of ``fn(*args)`` (which returns (seconds, ...)) and the rest
    of the last call's answer."""
    t_best, rest = float("inf"), None
    for _ in range(repeats):
        t, *rest = fn(*args)
        t_best = min(t_best, t)
    return t_best, rest


def rate(work: int, seconds: float | None) -> float | None:
    return work / seconds if seconds and seconds > 0 else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


# --- the measurements -------------------------------------------------------------------------------------
def measure(pages: int, rounds: int, pairs: int, pair_pages: int, repeats: int) -> list[Row]:
    binary = build_guest()
    unicorn_module()
    notes: list[str] = []
    t_empty, _ = best(run_native, max(repeats, 5), binary, ["1", "0", "1"])
    notes.append(f"native: process wall time minus an empty run's ({t_empty * 1e3:.2f} ms, exec and exit)")

    rows: list[Row] = []
    # the instruction count, checked once at a tiny size with a UC_HOOK_CODE counter (not timed)
    _, out_c, counted = run_unicorn(binary, ["0", "2", "3"], True)
    assert counted is not None
    rows.append({"kind": "count", "pages": 2, "rounds": 3, "counted": counted, "loop": loop_instructions(2, 3),
                 "outside_loop": counted - loop_instructions(2, 3), "output": out_c.strip()})

    mem_args = ["0", str(pages), str(rounds)]
    work = loop_instructions(pages, rounds)
    t_nat, (o_nat,) = best(run_native, repeats, binary, mem_args)
    t_uc, (o_uc, _) = best(run_unicorn, repeats, binary, mem_args)
    t_vm, (o_vm,) = best(run_vmalab, repeats, binary, mem_args)
    t_nat_net = t_nat - t_empty
    rates = {"native": rate(work, t_nat_net), "unicorn": rate(work, t_uc), "vmalab": rate(work, t_vm)}
    outputs = {"native": o_nat.strip(), "unicorn": o_uc.strip(), "vmalab": o_vm.strip()}
    rows.append({"kind": "mem", "pages": pages, "rounds": rounds, "instructions": work, **rates,
                 "unicorn_native": ratio(rates["unicorn"], rates["native"]),
                 "vmalab_native": ratio(rates["vmalab"], rates["native"]),
                 "vmalab_unicorn": ratio(rates["vmalab"], rates["unicorn"]),
                 "seconds": {"native": t_nat_net, "unicorn": t_uc, "vmalab": t_vm},
                 "outputs": outputs, "same": len(set(outputs.values())) == 1})

    sys_args = ["1", str(pairs), str(pair_pages)]
    n = 2 * pairs
    t_nat, (o_nat,) = best(run_native, repeats, binary, sys_args)
    t_uc, (o_uc, _) = best(run_unicorn, repeats, binary, sys_args)
    t_vm, (o_vm,) = best(run_vmalab, repeats, binary, sys_args)
    t_d, (o_d,) = best(run_dispatcher, repeats, pairs, pair_pages)
    t_nat_net = t_nat - t_empty
    rates = {"native": rate(n, t_nat_net), "unicorn": rate(n, t_uc), "vmalab": rate(n, t_vm),
             "dispatcher": rate(n, t_d)}
    outputs = {"native": o_nat.strip(), "unicorn": o_uc.strip(), "vmalab": o_vm.strip(), "dispatcher": o_d.strip()}
    rows.append({"kind": "syscalls", "pairs": pairs, "pair_pages": pair_pages, "syscalls": n, **rates,
                 "unicorn_native": ratio(rates["unicorn"], rates["native"]),
                 "vmalab_native": ratio(rates["vmalab"], rates["native"]),
                 "dispatcher_native": ratio(rates["dispatcher"], rates["native"]),
                 "vmalab_unicorn": ratio(rates["vmalab"], rates["unicorn"]),
                 "seconds": {"native": t_nat_net, "unicorn": t_uc, "vmalab": t_vm, "dispatcher": t_d},
                 "outputs": outputs, "same": len(set(outputs.values())) == 1})
    for r in rows[1:]:
        if r["native"] is None:
            notes.append(f"{r['kind']}: native run too short to measure beside exec (raise the sizes)")
    rows.append({"kind": "meta", "machine": machine(), "repeats": repeats, "guest": binary, "notes": notes})
    return rows


def render_text(rows: list[Row]) -> str:
    meta = next(r for r in rows if r["kind"] == "meta")
    out = [f"vmalab bench_emu: {meta['machine']}", f"best of {meta['repeats']}; ratios are of rates"]
    for r in rows:
        if r["kind"] == "mem":
            out += ["", f"memory loop: {r['pages']:,} fresh pages x {r['rounds']} rounds, "
                    f"{r['instructions']:,} loop instructions (instr/s)",
                    f"{'native/s':>14} {'unicorn/s':>14} {'uc+vmalab/s':>14} {'uc/nat':>7} {'vm/nat':>7} "
                    f"{'vm/uc':>7} {'same':>5}",
                    f"{fmt(r['native'], ',.0f'):>14} {fmt(r['unicorn'], ',.0f'):>14} {fmt(r['vmalab'], ',.0f'):>14} "
                    f"{fmt(r['unicorn_native'], '.3f'):>7} {fmt(r['vmalab_native'], '.3f'):>7} "
                    f"{fmt(r['vmalab_unicorn'], '.2f'):>7} {'yes' if r['same'] else 'NO':>5}"]
        elif r["kind"] == "syscalls":
            out += ["", f"syscalls: {r['pairs']:,} mmap/munmap pairs of {r['pair_pages']} page(s) "
                    f"({r['syscalls']:,} syscalls/s)",
                    f"{'native/s':>11} {'unicorn/s':>10} {'uc+vmalab/s':>11} {'dispatch/s':>10} {'uc/nat':>7} "
                    f"{'vm/nat':>7} {'dsp/nat':>7} {'vm/uc':>6} {'same':>5}",
                    f"{fmt(r['native'], ',.0f'):>11} {fmt(r['unicorn'], ',.0f'):>10} {fmt(r['vmalab'], ',.0f'):>11} "
                    f"{fmt(r['dispatcher'], ',.0f'):>10} {fmt(r['unicorn_native'], '.3f'):>7} "
                    f"{fmt(r['vmalab_native'], '.3f'):>7} {fmt(r['dispatcher_native'], '.3f'):>7} "
                    f"{fmt(r['vmalab_unicorn'], '.2f'):>6} {'yes' if r['same'] else 'NO':>5}"]
        elif r["kind"] == "count":
            meta["notes"].append(f"UC_HOOK_CODE count at {r['pages']} pages x {r['rounds']} rounds: "
                                 f"{r['counted']:,} instructions, {r['outside_loop']:,} outside the loop "
                                 "(not in the instr/s figures)")
    for r in rows:
        if r.get("same") is False:
            meta["notes"].append(f"{r['kind']}: outputs differ: {r['outputs']}")
    out.append("")
    for note in meta["notes"]:
        out += textwrap.wrap(note, 96, initial_indent="note: ", subsequent_indent="  ")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> list[Row]:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--pages", type=int, default=1024, help="pages of the memory loop (default 1024: 4 MiB)")
    ap.add_argument("--rounds", type=int, default=16, help="rounds of the memory loop over its pages")
    ap.add_argument("--pairs", type=int, default=5000, help="mmap/munmap pairs")
    ap.add_argument("--pair-pages", type=int, default=1, help="pages per mmap of the syscall loop")
    ap.add_argument("--repeats", type=int, default=3, help="repeats (the best is kept)")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = ap.parse_args(argv)
    if min(args.pages, args.rounds, args.pairs, args.pair_pages, args.repeats) < 1:
        ap.error("every size must be at least 1")
    try:
        rows = measure(args.pages, args.rounds, args.pairs, args.pair_pages, args.repeats)
    except Unavailable as e:
        sys.exit(f"bench_emu: {e}")
    print(json.dumps(rows, indent=1) if args.json else render_text(rows))
    return rows


if __name__ == "__main__":
    main()
