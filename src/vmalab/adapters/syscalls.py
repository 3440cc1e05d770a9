"""The x86-64 Linux syscall dispatcher shared by the emulator adapters.

A static x86-64 program under an emulator makes two kinds of syscalls: the memory syscalls, which are
the model's business and go to :meth:`vmalab.mm.MM.syscall` (every return is the model's: an address, 0
or ``-errno``), and the few others that glibc's static start-up and exit make.  This module serves the
latter minimally, the way the kernel answers a single-threaded process, and answers ``-ENOSYS`` to
everything else (:data:`SERVED` and the docs list them; ``Dispatcher.unsupported`` counts what a run
asked for and did not get).

Served (syscall numbers of arch/x86/entry/syscalls/syscall_64.tbl):

- memory: mmap, munmap, mprotect, mremap, brk, madvise, mlock, mlock2, munlock, mlockall, munlockall,
  mseal, msync, mincore (its vector is written to guest memory) -- :data:`MEMORY`;
- start-up: arch_prctl (ARCH_SET_FS / ARCH_GET_FS), set_tid_address, set_robust_list, rseq (``-ENOSYS``:
  glibc then runs without restartable sequences), prlimit64 / getrlimit / setrlimit (the mm's rlimits,
  which the model uses), uname (this machine's), getrandom (``os.urandom``), readlink / readlinkat of
  ``/proc/self/exe``, getpid / gettid;
- descriptors 0, 1, 2: read (fd 0), write / writev (fd 1, 2), fstat / newfstatat (the host's fstat of
  the emulator's own descriptor, so stdio buffers as it would natively), ioctl TCGETS (a tty or
  ``-ENOTTY``), close;
- ``/proc/self/maps`` and ``/proc/self/smaps`` (also ``/proc/<pid>/`` and ``/proc/thread-self/``):
  openat / open, read, lseek, close, fstat; the text is the model's (:func:`vmalab.procfs.maps`,
  :func:`vmalab.procfs.smaps`), taken when the file is opened.  Any other path: ``-EACCES`` (the
  emulated program has no file system);
- exit, exit_group: :class:`ProcessExit`.

Guest memory is read and written through the mm (:func:`vmalab.access.read` / :func:`vmalab.access.write`,
user accesses that fault like the CPU's) or the adapter's own :class:`Memory`: a fault there is the
``-EFAULT`` the kernel's copy_{from,to}_user() returns.  The CPU
state the dispatcher needs (the FS base) comes from a :class:`Cpu` the adapter gives.
"""

from __future__ import annotations

import errno
import os
import struct
from collections import Counter
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Protocol

from .. import access
from .. import constants as C
from ..faults import Fault
from ..procfs import maps, smaps

if TYPE_CHECKING:
    from ..mm import MM

__all__ = ["MEMORY", "SERVED", "SYSCALL_NAMES", "Cpu", "Dispatcher", "Memory", "ProcessExit"]

#: x86-64 syscall numbers of the memory syscalls -> the name of their row in vmalab.syscalls.SYSCALLS
MEMORY: dict[int, str] = {
    9: "mmap", 10: "mprotect", 11: "munmap", 12: "brk", 25: "mremap", 26: "msync", 27: "mincore",
    28: "madvise", 149: "mlock", 150: "munlock", 151: "mlockall", 152: "munlockall", 325: "mlock2",
    462: "mseal",
}
#: the other syscalls served (number -> name)
OTHERS: dict[int, str] = {
    0: "read", 1: "write", 2: "open", 3: "close", 5: "fstat", 8: "lseek", 16: "ioctl", 20: "writev",
    39: "getpid", 60: "exit", 63: "uname", 89: "readlink", 97: "getrlimit", 158: "arch_prctl", 160: "setrlimit",
    186: "gettid", 218: "set_tid_address", 231: "exit_group", 257: "openat", 262: "newfstatat",
    267: "readlinkat", 273: "set_robust_list", 302: "prlimit64", 318: "getrandom", 334: "rseq",
}
#: every syscall the dispatcher answers other than with -ENOSYS (rseq is answered -ENOSYS on purpose)
SERVED: dict[int, str] = {**MEMORY, **OTHERS}
#: names of a few common syscalls, for the ``unsupported`` report
SYSCALL_NAMES: dict[int, str] = {
    **SERVED, 4: "stat", 6: "lstat", 7: "poll", 13: "rt_sigaction", 14: "rt_sigprocmask", 17: "pread64",
    21: "access", 56: "clone", 57: "fork", 59: "execve", 61: "wait4", 62: "kill", 72: "fcntl",
    131: "sigaltstack", 202: "futex", 228: "clock_gettime", 435: "clone3",
}

ARCH_SET_FS, ARCH_GET_FS = 0x1002, 0x1003
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
TCGETS = 0x5401
O_ACCMODE = 3
PATH_MAX = 4096
#: struct stat of x86-64 (arch/x86/include/uapi/asm/stat.h): 144 bytes
_STAT = struct.Struct("<QQQIIIIQqqqqqqqqq24x")
S_IFREG = 0o100000


class ProcessExit(Exception):
    """The program called exit or exit_group: ``status`` is its exit code (0..255)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"exit {status}")
        self.status = status


class Memory(Protocol):
    """Guest memory as the dispatcher reads and writes it: user accesses that raise
    :class:`vmalab.Fault` where the CPU would fault (by default :func:`vmalab.access.read` /
    :func:`vmalab.access.write` on the mm; the Unicorn adapter gives one that reads its physical frames)."""

    def read(self, addr: int, n: int) -> bytes: ...

    def write(self, addr: int, data: bytes) -> None: ...


class Cpu(Protocol):
    """What the dispatcher needs of the emulated CPU."""

    def set_fs_base(self, value: int) -> None: ...

    def get_fs_base(self) -> int: ...


@dataclass
class _ProcFile:
    data: bytes
    pos: int = 0


@dataclass
class Dispatcher:
    """Serves the syscalls of one emulated single-threaded process whose address space is ``mm``.

    ``exe`` is the program's path (``/proc/self/exe``); ``stdin``/``stdout``/``stderr`` are binary
    streams (the emulator's own by default, see :meth:`with_stdio`); ``pid`` is what getpid and
    set_tid_address return.  :meth:`syscall` takes the number and the six argument registers and returns
    the value for ``rax`` (an unsigned 64-bit integer), or raises :class:`ProcessExit`."""

    mm: MM
    cpu: Cpu
    exe: str
    stdout: IO[bytes]
    stderr: IO[bytes]
    stdin: IO[bytes] | None = None
    #: guest memory (None: vmalab.access on the mm)
    memory: Memory | None = None
    pid: int = field(default_factory=os.getpid)
    #: syscall number -> how many times it was answered -ENOSYS because it is not served
    unsupported: Counter[int] = field(default_factory=Counter)
    #: how many syscalls were dispatched
    count: int = 0
    _files: dict[int, _ProcFile] = field(default_factory=dict)
    _closed: set[int] = field(default_factory=set)

    # -- entry ------------------------------------------------------------------------------------------
    def syscall(self, nr: int, a0: int = 0, a1: int = 0, a2: int = 0, a3: int = 0, a4: int = 0, a5: int = 0
                ) -> int:
        """Dispatch syscall ``nr``: the return value as the 64-bit ``rax`` (``-errno`` modulo 2**64)."""
        self.count += 1
        name = MEMORY.get(nr)
        if name is not None:
            r = self._memory(name, (a0, a1, a2, a3, a4, a5))
        else:
            handler = _HANDLERS.get(nr)
            if handler is None:
                self.unsupported[nr] += 1
                r = -errno.ENOSYS
            else:
                r = handler(self, a0, a1, a2, a3, a4, a5)
        return r & C.ULONG_MASK

    def unsupported_report(self) -> str:
        """One line naming the syscalls answered -ENOSYS (empty when there were none)."""
        if not self.unsupported:
            return ""
        parts = [f"{SYSCALL_NAMES.get(nr, f'syscall {nr}')} x{n}" for nr, n in sorted(self.unsupported.items())]
        return "not served (-ENOSYS): " + ", ".join(parts)

    # -- guest memory -----------------------------------------------------------------------------------
    def read_mem(self, addr: int, n: int) -> bytes | None:
        """``n`` bytes of guest memory, or None where copy_from_user() would fault (-EFAULT)."""
        if n == 0:
            return b""
        try:
            return self.memory.read(addr, n) if self.memory is not None else access.read(self.mm, addr, n)
        except Fault:
            return None

    def write_mem(self, addr: int, data: bytes) -> bool:
        """Write guest memory; False where copy_to_user() would fault (-EFAULT)."""
        if not data:
            return True
        try:
            if self.memory is not None:
                self.memory.write(addr, data)
            else:
                access.write(self.mm, addr, data)
        except Fault:
            return False
        return True

    def read_string(self, addr: int, limit: int = PATH_MAX) -> bytes | None:
        """A NUL-terminated string (strncpy_from_user()), without the NUL; None on a fault or when it is
        longer than ``limit`` (the caller answers -EFAULT / -ENAMETOOLONG)."""
        out = bytearray()
        while len(out) < limit:
            chunk = min(C.PAGE_SIZE - (addr & (C.PAGE_SIZE - 1)), limit - len(out))
            data = self.read_mem(addr, chunk)
            if data is None:
                return None
            nul = data.find(b"\0")
            if nul >= 0:
                return bytes(out + data[:nul])
            out += data
            addr += chunk
        return None

    # -- memory syscalls --------------------------------------------------------------------------------
    def _memory(self, name: str, args: tuple[int, ...]) -> int:
        if name == "mincore":
            from ..syscalls import SYSCALLS

            start, length, vec = args[0], args[1], args[2]
            r, vector = SYSCALLS["mincore"].fn(self.mm, start, length)
            if r < 0:
                return int(r)
            if not self.write_mem(vec, bytes(1 if ch == "1" else 0 for ch in (vector or ""))):
                return -errno.EFAULT
            return 0
        from ..syscalls import SYSCALLS

        nargs = SYSCALLS[name].nargs
        return self.mm.syscall(name, *args[:nargs])

    # -- descriptors ------------------------------------------------------------------------------------
    def _stream(self, fd: int) -> IO[bytes] | None:
        if fd in self._closed:
            return None
        return {1: self.stdout, 2: self.stderr}.get(fd)

    def sys_write(self, fd: int, buf: int, count: int, *_: int) -> int:
        fd = _int(fd)
        if fd in self._files:
            return -errno.EBADF  # opened O_RDONLY
        stream = self._stream(fd)
        if stream is None:
            return -errno.EBADF
        count = min(count, 0x7FFFF000)  # MAX_RW_COUNT
        data = self.read_mem(buf, count)
        if data is None:
            return -errno.EFAULT
        try:
            stream.write(data)
            stream.flush()
        except BrokenPipeError:
            return -errno.EPIPE  # as with SIGPIPE ignored: the signal is not delivered
        return len(data)

    def sys_writev(self, fd: int, iov: int, iovcnt: int, *_: int) -> int:
        fd = _int(fd)
        stream = self._stream(fd)
        if stream is None or fd in self._files:
            return -errno.EBADF
        if iovcnt > 1024:  # UIO_MAXIOV
            return -errno.EINVAL
        raw = self.read_mem(iov, 16 * iovcnt)
        if raw is None:
            return -errno.EFAULT
        parts = []
        for i in range(iovcnt):
            base, length = struct.unpack_from("<QQ", raw, 16 * i)
            data = self.read_mem(base, length)
            if data is None:
                return -errno.EFAULT
            parts.append(data)
        out = b"".join(parts)
        try:
            stream.write(out)
            stream.flush()
        except BrokenPipeError:
            return -errno.EPIPE  # as with SIGPIPE ignored: the signal is not delivered
        return len(out)

    def sys_read(self, fd: int, buf: int, count: int, *_: int) -> int:
        fd = _int(fd)
        f = self._files.get(fd)
        if f is not None:
            data = f.data[f.pos:f.pos + count]
            if not self.write_mem(buf, data):
                return -errno.EFAULT
            f.pos += len(data)
            return len(data)
        if fd == 0 and fd not in self._closed:
            if self.stdin is None:
                return 0
            data = self.stdin.read(min(count, 1 << 16)) if count else b""
            if not self.write_mem(buf, data or b""):
                return -errno.EFAULT
            return len(data or b"")
        return -errno.EBADF

    def sys_lseek(self, fd: int, offset: int, whence: int, *_: int) -> int:
        f = self._files.get(_int(fd))
        if f is None:
            return -errno.ESPIPE if _int(fd) in (0, 1, 2) and _int(fd) not in self._closed else -errno.EBADF
        offset = _signed(offset)
        base = {0: 0, 1: f.pos, 2: len(f.data)}.get(_int(whence))
        if base is None or base + offset < 0:
            return -errno.EINVAL
        f.pos = base + offset
        return f.pos

    def sys_close(self, fd: int, *_: int) -> int:
        fd = _int(fd)
        if self._files.pop(fd, None) is not None:
            return 0
        if fd in (0, 1, 2) and fd not in self._closed:
            self._closed.add(fd)
            return 0
        return -errno.EBADF

    def _proc_text(self, path: bytes) -> bytes | None:
        parts = path.split(b"/")
        if len(parts) != 4 or parts[0] != b"" or parts[1] != b"proc":
            return None
        if parts[2] not in (b"self", b"thread-self", str(self.pid).encode()):
            return None
        if parts[3] == b"maps":
            return maps(self.mm).encode()
        if parts[3] == b"smaps":
            return smaps(self.mm).encode()
        return None

    def _open(self, dirfd: int, path_addr: int, flags: int) -> int:
        path = self.read_string(path_addr)
        if path is None:
            return -errno.EFAULT
        if not path:
            return -errno.ENOENT
        if not path.startswith(b"/") and _int(dirfd) != -100 and _int(dirfd) not in self._files:
            return -errno.EBADF
        text = self._proc_text(path)
        if text is None:
            return -errno.EACCES  # the emulated program has no file system
        if _int(flags) & O_ACCMODE != os.O_RDONLY:
            return -errno.EACCES
        fd = 3
        while fd in self._files:
            fd += 1
        self._files[fd] = _ProcFile(text)
        return fd

    def sys_open(self, path: int, flags: int, mode: int, *_: int) -> int:
        return self._open(AT_FDCWD, path, flags)

    def sys_openat(self, dirfd: int, path: int, flags: int, mode: int, *_: int) -> int:
        return self._open(dirfd, path, flags)

    def _stat_bytes(self, fd: int) -> bytes | None:
        f = self._files.get(fd)
        if f is not None:  # a proc file: size 0, like the kernel's
            return _STAT.pack(0, 0, 1, S_IFREG | 0o444, 0, 0, 0, 0, 0, 1024, 0, 0, 0, 0, 0, 0, 0)
        if fd in (0, 1, 2) and fd not in self._closed:
            try:
                st = os.fstat(fd)
            except OSError:
                return None
            return _STAT.pack(st.st_dev, st.st_ino, st.st_nlink, st.st_mode, st.st_uid, st.st_gid, 0,
                              st.st_rdev, st.st_size, st.st_blksize, st.st_blocks,
                              int(st.st_atime), st.st_atime_ns % 10**9, int(st.st_mtime), st.st_mtime_ns % 10**9,
                              int(st.st_ctime), st.st_ctime_ns % 10**9)
        return None

    def sys_fstat(self, fd: int, buf: int, *_: int) -> int:
        data = self._stat_bytes(_int(fd))
        if data is None:
            return -errno.EBADF
        return 0 if self.write_mem(buf, data) else -errno.EFAULT

    def sys_newfstatat(self, dirfd: int, path: int, buf: int, flags: int, *_: int) -> int:
        p = self.read_string(path)
        if p is None:
            return -errno.EFAULT
        if p == b"" and _int(flags) & AT_EMPTY_PATH:
            return self.sys_fstat(dirfd, buf)
        return -errno.EACCES  # no file system

    def sys_ioctl(self, fd: int, request: int, arg: int, *_: int) -> int:
        fd = _int(fd)
        if fd in self._files:
            return -errno.ENOTTY
        if fd not in (0, 1, 2) or fd in self._closed:
            return -errno.EBADF
        if _int(request) != TCGETS:
            return -errno.ENOTTY if not os.isatty(fd) else -errno.EINVAL
        try:
            import fcntl

            termios = fcntl.ioctl(fd, TCGETS, bytes(60))
        except OSError:
            return -errno.ENOTTY
        return 0 if self.write_mem(arg, bytes(termios)) else -errno.EFAULT

    # -- process ----------------------------------------------------------------------------------------
    def sys_exit(self, status: int, *_: int) -> int:
        raise ProcessExit(status & 0xFF)

    def sys_getpid(self, *_: int) -> int:
        return self.pid

    def sys_set_tid_address(self, tidptr: int, *_: int) -> int:
        return self.pid

    def sys_set_robust_list(self, head: int, length: int, *_: int) -> int:
        return 0 if length == 24 else -errno.EINVAL  # sizeof(struct robust_list_head)

    def sys_rseq(self, *_: int) -> int:
        return -errno.ENOSYS  # glibc runs without rseq (__rseq_size 0)

    def sys_arch_prctl(self, code: int, addr: int, *_: int) -> int:
        code = _int(code)
        if code == ARCH_SET_FS:
            if addr >= C.TASK_SIZE + C.PAGE_SIZE:  # not canonical user space
                return -errno.EPERM
            self.cpu.set_fs_base(addr)
            return 0
        if code == ARCH_GET_FS:
            return 0 if self.write_mem(addr, struct.pack("<Q", self.cpu.get_fs_base())) else -errno.EFAULT
        return -errno.EINVAL

    def sys_uname(self, buf: int, *_: int) -> int:
        u = os.uname()
        fields = (u.sysname, u.nodename, u.release, u.version, u.machine, "(none)")
        data = b"".join(os.fsencode(s)[:64].ljust(65, b"\0") for s in fields)
        return 0 if self.write_mem(buf, data) else -errno.EFAULT

    def sys_getrandom(self, buf: int, count: int, flags: int, *_: int) -> int:
        if _int(flags) & ~0x7:
            return -errno.EINVAL
        count = min(count, 0x1FFFFFF)
        return count if self.write_mem(buf, os.urandom(count)) else -errno.EFAULT

    def _readlink(self, path_addr: int, buf: int, size: int) -> int:
        path = self.read_string(path_addr)
        if path is None:
            return -errno.EFAULT
        if _signed(size) <= 0:
            return -errno.EINVAL
        if path not in (b"/proc/self/exe", b"/proc/thread-self/exe", f"/proc/{self.pid}/exe".encode()):
            return -errno.EACCES
        target = os.fsencode(os.path.realpath(self.exe))[:size]
        return len(target) if self.write_mem(buf, target) else -errno.EFAULT

    def sys_readlink(self, path: int, buf: int, size: int, *_: int) -> int:
        return self._readlink(path, buf, size)

    def sys_readlinkat(self, dirfd: int, path: int, buf: int, size: int, *_: int) -> int:
        return self._readlink(path, buf, size)

    def _rlimit(self, resource: int, new: int, old: int) -> int:
        if resource >= 16:  # RLIM_NLIMITS
            return -errno.EINVAL
        cur, mx = self.mm.rlimits.get(resource, (C.RLIM_INFINITY, C.RLIM_INFINITY))
        if new:
            raw = self.read_mem(new, 16)
            if raw is None:
                return -errno.EFAULT
            ncur, nmax = struct.unpack("<QQ", raw)
            if ncur > nmax:
                return -errno.EINVAL
        if old and not self.write_mem(old, struct.pack("<QQ", cur, mx)):
            return -errno.EFAULT
        if new:
            self.mm.rlimits[resource] = (ncur, nmax)
        return 0

    def sys_prlimit64(self, pid: int, resource: int, new: int, old: int, *_: int) -> int:
        if _int(pid) not in (0, self.pid):
            return -errno.ESRCH
        return self._rlimit(_int(resource), new, old)

    def sys_getrlimit(self, resource: int, old: int, *_: int) -> int:
        return self._rlimit(_int(resource), 0, old)

    def sys_setrlimit(self, resource: int, new: int, *_: int) -> int:
        return self._rlimit(_int(resource), new, 0)


def _int(v: int) -> int:
    """The low 32 bits of a register as a C ``int``."""
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def _signed(v: int) -> int:
    v &= C.ULONG_MASK
    return v - (1 << 64) if v >> 63 else v


_ALIASES = {"exit_group": "exit", "gettid": "getpid"}  # one thread: its tid is the pid
_HANDLERS = {nr: getattr(Dispatcher, f"sys_{_ALIASES.get(name, name)}") for nr, name in OTHERS.items()}
