"""Files of this machine, modelled from ``stat``: a :class:`~vmalab.files.File` for a real path.

Models what the mmap path sees of a file opened by path (fs/open.c: do_filp_open()): the inode's device
(``major:minor`` of ``/proc/pid/maps``), inode number and size from :func:`os.stat`, and the file
system, which decides the file's ``get_unmapped_area``: ext4 and xfs files use
``thp_get_unmapped_area()`` (fs/ext4/file.c, fs/xfs/xfs_file.c: a mapping of 2 MiB or more of the file is
placed 2 MiB-aligned), tmpfs files ``shmem_get_unmapped_area()``, every other file system the mm's
default.  A ``noexec`` mount makes the inode refuse PROT_EXEC (path_noexec()).

Identity without a registry: the same real inode opened twice in an mm (or in a fork of it, which shares
its files) gets the same :class:`~vmalab.files.Inode`, found among the files the mm already holds (its
descriptors and its mapped files), keyed by ``(dev, ino)``.  So the page cache and the maps' inode column
stay shared as the kernel's are.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass

from .constants import PAGE_SHIFT, PAGE_SIZE
from .fdtable import FILE_KINDS
from .files import FMODE_READ, FMODE_WRITE, File, FileOperations, Inode, ShmemFileOps
from .mm_types import MmStruct

__all__ = ["THP_FILE_SYSTEMS", "MountInfo", "RealContent", "find_inode", "mount_of", "open_real"]

#: file systems whose regular files' f_op->get_unmapped_area is thp_get_unmapped_area() (6.18)
THP_FILE_SYSTEMS = frozenset({"ext4", "ext2", "ext3", "xfs"})


@dataclass(frozen=True)
class MountInfo:
    """One line of /proc/self/mountinfo, the fields the model uses."""

    mount_point: str
    fstype: str
    noexec: bool


def _unescape(s: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (\\040 ...)."""
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and i + 3 < len(s) and s[i + 1:i + 4].isdigit():
            out.append(chr(int(s[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def mount_of(path: str, mountinfo: str | None = None) -> MountInfo:
    """The mount holding ``path`` (already resolved): the longest mount point that is a prefix of it in
    ``/proc/self/mountinfo`` (the last one mounted wins on equal points).  Unknown (no mountinfo, not
    Linux): ``MountInfo("/", "unknown", False)``."""
    if mountinfo is None:
        try:
            with open("/proc/self/mountinfo") as f:
                mountinfo = f.read()
        except OSError:
            return MountInfo("/", "unknown", False)
    best = MountInfo("/", "unknown", False)
    best_len = -1
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, rfields = left.split(), right.split()
        if len(fields) < 6 or not rfields:
            continue
        point = _unescape(fields[4])
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= best_len:
            best_len = len(point)
            best = MountInfo(point, rfields[0], "noexec" in fields[5].split(","))
    return best


def find_inode(mm: MmStruct, dev: tuple[int, int], ino: int) -> Inode | None:
    """The Inode with this device and number among the files ``mm`` holds (descriptors, mapped files)."""
    for f in mm.fdtable.values():
        if f.inode.dev == dev and f.inode.ino == ino:
            return f.inode
    for v in mm.tree:
        vf = v.vm_file
        if vf is not None and vf.inode.dev == dev and vf.inode.ino == ino:
            return vf.inode
    return None


class RealContent:
    """The content provider of a real file's inode (:attr:`vmalab.files.Inode.content`): ``self(pgoff)``
    reads page ``pgoff`` of the file, as ->read_folio() reads it from the disk.  The file is opened and
    mapped read-only at the first read, and stays mapped while the inode lives; unreadable: zeroes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._map: mmap.mmap | bytes | None = None

    def __call__(self, pgoff: int) -> bytes:
        m = self._map
        if m is None:
            try:
                with open(self.path, "rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) if size else b""
            except (OSError, ValueError):
                m = b""
            self._map = m
        off = pgoff << PAGE_SHIFT
        return bytes(m[off:off + PAGE_SIZE])


def open_real(mm: MmStruct, path: str, flags: int = os.O_RDONLY, *, mountinfo: str | None = None) -> File:
    """Open the real file ``path`` for ``mm``: a :class:`File` (one reference, not installed in the
    descriptor table: :func:`vmalab.fdtable.install` does that) whose inode carries the real device,
    inode number and size.  ``flags`` are open(2)'s (O_RDONLY, O_WRONLY, O_RDWR decide the FMODE bits).
    The path shown in maps is the resolved path, as d_path() shows it.  ``OSError`` when the file cannot
    be stat'ed."""
    real = os.path.realpath(path)
    st = os.stat(real)
    dev = (os.major(st.st_dev), os.minor(st.st_dev))
    acc = flags & os.O_ACCMODE
    fmode = {os.O_RDONLY: FMODE_READ, os.O_WRONLY: FMODE_WRITE}.get(acc, FMODE_READ | FMODE_WRITE)
    mnt = mount_of(real, mountinfo)
    inode = find_inode(mm, dev, st.st_ino)
    if inode is None:
        inode = Inode(st.st_ino, dev, size=st.st_size, noexec=mnt.noexec)
        if os.path.isfile(real):
            inode.content = RealContent(real)
    f_op: FileOperations
    if mnt.fstype in ("tmpfs", "shmem"):
        f_op = ShmemFileOps()
    else:
        f_op = FILE_KINDS["disk"]()  # generic page-cache file (vmalab.drivers.filemap.RegularFileOps)
        if mnt.fstype not in THP_FILE_SYSTEMS:
            f_op.get_unmapped_area = None  # this file system has no thp_get_unmapped_area()
    return File(inode, f_op, real, f_mode=fmode, owner=mm)
