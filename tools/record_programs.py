"""Re-record the example programs of tests/programs/ on this machine (``vmalab record-program``).

    python tools/record_programs.py [--check] [NAME...]

Each recording is tests/programs/NAME.program.json, made with a fixed small environment (PATH, LANG: the
environment is recorded and its size moves the stack) and the working directory tests/programs/.  The C
programs of tests/programs/src/ are compiled first into /tmp/vmalab-programs/ (the recorded paths name
them there), and the input of ``sort`` (20 MB of pseudo-random lines from a fixed seed) is written there
too.  ``--check`` records every program twice and writes it only when the two recordings make the same
memory calls with the same returns and end in the same maps (``recording_differences``: pids, pipe and
socket inodes, the names of cc's temporary files, the inodes of files under /tmp and the order of calls
that threads made at the same time may differ; ``gdb --version`` is not an example for that reason: its
worker threads make its heap grow differently from run to run).  Recordings carry the kernel release they came from.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PROGRAMS = REPO / "tests" / "programs"
BUILD = Path("/tmp/vmalab-programs")
ENV = {"PATH": "/usr/bin:/bin", "LANG": "C"}
SORT_INPUT = BUILD / "sort-input.txt"
SORT_INPUT_SIZE = 20 << 20
SORT_SEED = 13

#: name -> command (a C program of tests/programs/src is named by its stem)
EXAMPLES: dict[str, list[str]] = {
    "true": ["true"],
    "ls": ["ls", "/"],
    "python3": ["python3", "-c", "pass"],
    "bash": ["bash", "-c", "true"],
    "git": ["git", "--version"],
    "sort": ["sort", "--parallel=1", "-S", "64M", "-o", "/dev/null", str(SORT_INPUT)],
    "cc": ["cc", "-c", "-o", str(BUILD / "forkexec.o"), "src/forkexec.c"],
    "cclink": ["cc", "-o", str(BUILD / "realloc-linked"), "src/realloc.c"],
    "perl": ["perl", "-e", "1"],
    "tar": ["tar", "--version"],
    "find": ["find", "/usr/share", "-maxdepth", "1"],
    "forkexec": [str(BUILD / "forkexec")],
    "threads": [str(BUILD / "threads")],
    "realloc": [str(BUILD / "realloc")],
}


def make_sort_input(path: Path = SORT_INPUT, size: int = SORT_INPUT_SIZE, seed: int = SORT_SEED) -> Path:
    """``size`` bytes of lines of 1 to 64 pseudo-random lowercase letters (``random.Random(seed)``): the same
    file on every machine.  Written only when missing or of another size."""
    if path.exists() and path.stat().st_size == size:
        return path
    rnd = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    out: list[str] = []
    n = 0
    while n < size:
        line = "".join(rnd.choices(letters, k=rnd.randint(1, 64))) + "\n"
        line = line[:size - n - 1] + "\n" if n + len(line) > size else line
        out.append(line)
        n += len(line)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(out))
    tmp.replace(path)
    return path


def prepare() -> None:
    """Compile the C programs of tests/programs/src into /tmp/vmalab-programs and write the sort input."""
    BUILD.mkdir(exist_ok=True)
    for src in sorted((PROGRAMS / "src").glob("*.c")):
        exe, tmp = BUILD / src.stem, BUILD / f".{src.stem}.new"
        subprocess.run(["cc", "-O1", "-pthread", "-o", str(tmp), str(src)], check=True)
        if exe.exists() and exe.read_bytes() == tmp.read_bytes():
            tmp.unlink()  # unchanged: keep the file (and its inode)
        else:
            tmp.replace(exe)
    make_sort_input()


def record(name: str) -> dict[str, Any]:
    """Record example ``name`` (``prepare()`` first) with the fixed environment and working directory."""
    from vmalab.oracle.record_program import record_program
    return record_program(EXAMPLES[name], stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=ENV,
                          cwd=str(PROGRAMS))


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(REPO / "src"))
    from vmalab.oracle.record_program import RecordError, memory_call_count, recording_differences
    check = "--check" in argv
    names = [a for a in argv if a != "--check"]
    unknown = [n for n in names if n not in EXAMPLES]
    if unknown:
        print(f"unknown example(s): {', '.join(unknown)}; known: {', '.join(EXAMPLES)}", file=sys.stderr)
        return 2
    prepare()
    status = 0
    for name in names or list(EXAMPLES):
        try:
            trace = record(name)
            diffs = recording_differences(trace, record(name)) if check else []
        except RecordError as e:
            print(f"{name}: {e}", file=sys.stderr)
            return 2
        if diffs:
            print(f"{name}: not deterministic, not written:\n  " + "\n  ".join(diffs[:10]), file=sys.stderr)
            status = 1
            continue
        out = PROGRAMS / f"{name}.program.json"
        text = json.dumps(trace, indent=1) + "\n"
        out.write_text(text)
        print(f"{out.relative_to(REPO)}: {len(trace['processes'])} process(es), {memory_call_count(trace)} memory "
              f"calls, {len(text) // 1024} KiB, kernel {trace['kernel']}" + (", reproducible" if check else ""))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
