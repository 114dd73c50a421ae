"""Shared-memory regions: their names, creating, opening, mapping and removing them.

A log ``NAME`` owns the header region ``/NAME`` and, named after the ``nonce`` (16 hex
digits drawn when the log is created): segment regions ``/NAME@<nonce>.<seq>.<token>``, a
wait region ``/NAME@<nonce>.wait``, a claim region ``/NAME@<nonce>.claim`` and, while a
writer holds the claim, its held region ``/NAME@<nonce>.held.<token>``. ``seq`` is the
segment number and ``token`` 16 hex digits the writer draws for each region it makes or
renames (kept in the header). ``@`` is not allowed in log names, so no log's regions can be
mistaken for another's, and the nonce keeps a new log from ever meeting the leftover
regions of an earlier, crashed log of the same name. The token keeps anyone from planting a
name before the writer makes it: /dev/shm is writable by every local user, and a name that
exists stops a create (``O_EXCL``) and a rename that never replaces (``rename_noreplace``),
so the writer draws another token and tries again. A remover renames a header to
``/NAME@<random>.gone`` for the moment it takes to check which log it took (``take_away``).

Every existing region is opened by ``open_region`` (never following a link, never waiting
on a fifo, regular files only) and mapped by ``map_file`` at the size its caller expects.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import io
import mmap
import os
import re
import secrets
import stat
import struct
from collections.abc import Iterator

import posix_ipc

from ._errors import (
    AccessDeniedError,
    InvalidNameError,
    LogExistsError,
    NotALogError,
    OutOfSpaceError,
    ResourceLimitError,
)
from ._header import MAGIC

SHM_DIR = "/dev/shm"
MAX_NAME = 200  # leaves room for "@<16 hex>.<19 digits>.<16 hex>" within NAME_MAX (255)
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
# A segment's part is "<seq>.<token>"; a bare "<seq>" is a version-1 segment (or planted):
# listed, so that cleanup removes it, but never opened.
_REGION = re.compile(
    r"(?P<name>.+)@(?P<nonce>[0-9a-f]{16})\."
    r"(?P<part>(?P<seq>[0-9]+)(?:\.(?P<token>[0-9a-f]{16}))?|wait|claim|held\.[0-9a-f]{16}|gone)"
)
_TOKEN_MASK = (1 << 64) - 1  # a token is an int64 header word, named as its 64 bits unsigned


class Mode(int):
    """The permissions of a log's regions: an int, shown in octal (``0o600``)."""

    def __repr__(self) -> str:
        return f"0o{int(self):o}"

    __str__ = __repr__


DEFAULT_MODE = Mode(0o600)
"""The permissions a log is made with unless told otherwise: read and write for its owner only."""


def new_token() -> int:
    """64 random bits for a region's name, as the int64 the header holds (never 0)."""
    return secrets.randbits(64) - (1 << 63) or 1


def check_name(name: object) -> str:
    if not isinstance(name, str):
        raise InvalidNameError(f"a log name is a str, not {type(name).__name__}")
    if not 0 < len(name) <= MAX_NAME or not _NAME.fullmatch(name):
        raise InvalidNameError(
            f"bad log name {name!r}: use 1 to {MAX_NAME} characters from A-Z a-z 0-9 _ . -, "
            "not starting with '.' or '-' (no '/', no leading slash: the library adds it)"
        )
    return name


def header_path(name: str) -> str:
    return "/" + name


def segment_path(name: str, nonce: int, seq: int, token: int) -> str:
    return f"/{name}@{nonce:016x}.{seq}.{token & _TOKEN_MASK:016x}"


def wait_path(name: str, nonce: int) -> str:
    return f"/{name}@{nonce:016x}.wait"


def claim_path(name: str, nonce: int) -> str:
    return f"/{name}@{nonce:016x}.claim"


def held_path(name: str, nonce: int, token: int) -> str:
    return f"/{name}@{nonce:016x}.held.{token & _TOKEN_MASK:016x}"


_POSIX_IPC_MESSAGES = {
    "This process already has the maximum number of files open": errno.EMFILE,
    "The system limit on the total number of open files has been reached": errno.ENFILE,
    "Not enough memory": errno.ENOMEM,
    "Out of memory": errno.ENOMEM,
}


def _typed(exc: BaseException, path: str, size: int = 0) -> BaseException:
    """The library's error for a system error met on region ``path``; others unchanged."""
    if isinstance(exc, posix_ipc.PermissionsError | PermissionError):
        return AccessDeniedError(errno.EACCES, f"permission denied on {SHM_DIR}{path}")
    if not isinstance(exc, OSError):
        return exc
    if exc.errno is None:  # posix_ipc raises OSError(message) for some errnos
        exc.errno = _POSIX_IPC_MESSAGES.get(str(exc))
    if exc.errno in (errno.ENOSPC, errno.EFBIG):
        return OutOfSpaceError(
            exc.errno, f"no room in {SHM_DIR} for {size} bytes ({path}); free some and retry"
        )
    if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOMEM):
        return ResourceLimitError(
            exc.errno,
            f"cannot open or map {SHM_DIR}{path}: {os.strerror(exc.errno or 0)}. Each mapped "
            "segment holds a descriptor and a mapping: raise the limit (ulimit -n) or use "
            "fewer, larger segments",
        )
    return exc


def create(path: str, mode: int) -> io.FileIO:
    """Create the empty region ``path`` with permissions exactly ``mode``, opened read-write;
    LogExistsError if the name exists (whatever is there: it is never opened)."""
    try:
        shm = posix_ipc.SharedMemory(path, posix_ipc.O_CREX, mode=mode, size=0)
    except posix_ipc.ExistentialError:
        raise LogExistsError(f"shared memory {path!r} already exists") from None
    except (OSError, posix_ipc.Error) as exc:  # e.g. ENOSPC: no inode left
        raise _typed(exc, path) from None
    file = io.FileIO(shm.fd, "r+b")  # owns the descriptor from here: closed with the file, or by gc
    try:
        os.fchmod(file.fileno(), mode)  # exactly `mode`, whatever the umask
    except BaseException as exc:
        file.close()
        unlink_quietly(path)
        raise _typed(exc, path) from None
    return file


def create_mapped(
    path: str, size: int, mode: int, flags: int = mmap.MAP_SHARED
) -> tuple[io.FileIO, mmap.mmap]:
    """``create()`` a region of ``size`` bytes with its memory reserved, mapped read-write
    with mmap ``flags``; the caller owns both.

    On tmpfs, ftruncate() alone reserves nothing: the first store to a page that cannot be
    had kills the process with SIGBUS. posix_fallocate() takes the pages now, so running
    out of room is an OutOfSpaceError here, before anything is published.
    """
    file = create(path, mode)
    try:
        os.posix_fallocate(file.fileno(), 0, size)
        return file, mmap.mmap(file.fileno(), size, flags=flags)
    except BaseException as exc:
        file.close()
        unlink_quietly(path)
        raise _typed(exc, path, size) from None


_ACCESS = {"rb": os.O_RDONLY, "wb": os.O_WRONLY, "r+b": os.O_RDWR}


def open_region(path: str, mode: str = "rb") -> tuple[io.FileIO, os.stat_result] | None:
    """The one way this library opens an existing region: as a file (``mode`` "rb", "wb"
    or "r+b"), with its status; None if there is no region by that name.

    A name can be taken by anyone once it is gone (/dev/shm is world-writable), so what is
    found there may be a link, a directory or a fifo: a link is never followed
    (O_NOFOLLOW), nothing is ever waited on (O_NONBLOCK: opening a fifo would block), and
    anything but a regular file counts as no region. The file owns its descriptor: closed
    with it, or when it is collected, so an exception anywhere cannot leak it. Callers map
    only the size they expect (``map_file``) and check the size first.
    """
    flags = _ACCESS[mode] | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(SHM_DIR + path, flags)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO):  # a symbolic link; a fifo with no reader
            return None
        raise _typed(exc, path) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            return None
    except BaseException:
        os.close(fd)
        raise
    return io.FileIO(fd, mode), st


def map_file(file: io.FileIO, path: str, size: int, access: int = mmap.ACCESS_READ) -> mmap.mmap:
    """The first ``size`` bytes of ``file`` (region ``path``) mapped with ``access``."""
    try:
        return mmap.mmap(file.fileno(), size, access=access)
    except OSError as exc:
        raise _typed(exc, path, size) from None


def read_region(path: str, size: int) -> bytes | None:
    """The first ``size`` bytes of region ``path`` (fewer if it is shorter), read without
    mapping it; None if there is no region by that name."""
    opened = open_region(path)
    if opened is None:
        return None
    with opened[0] as file:
        return os.pread(file.fileno(), size, 0)


def unlink_quietly(path: str) -> bool:
    """Remove region ``path``; False if it is gone, or not a region this process may
    remove (a directory, another user's file planted under the log's names)."""
    try:
        os.unlink(SHM_DIR + path)
    except FileNotFoundError:
        return False
    except (IsADirectoryError, PermissionError):
        return False  # not ours: leave it (unlink_every reports it)
    return True


def unlink_every(paths: list[str]) -> int:
    """Remove every region of ``paths`` that can be removed, even when some cannot; then
    raise a typed error for the first that could not (AccessDeniedError for another user's
    region, NotALogError for a directory or any other non-region). Returns how many were
    removed (gone ones are not counted)."""
    removed = 0
    failed: BaseException | None = None
    for path in paths:
        try:
            os.unlink(SHM_DIR + path)
            removed += 1
        except FileNotFoundError:
            continue
        except PermissionError:
            failed = failed or AccessDeniedError(errno.EACCES, f"permission denied removing {SHM_DIR}{path}")
        except OSError as exc:  # EISDIR (a planted directory), EBUSY, ...
            failed = failed or NotALogError(
                f"{SHM_DIR}{path} is not a region of this log ({exc.strerror}); not removed"
            )
    if failed is not None:
        raise failed
    return removed


def identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of the name ``path`` now, without following links; None if absent."""
    try:
        st = os.lstat(SHM_DIR + path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)  # glibc >= 2.28
if _renameat2 is not None:
    _renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    _renameat2.restype = ctypes.c_int


def rename_noreplace(old: str, new: str) -> bool:
    """Give region ``old`` the name ``new`` unless ``new`` exists (False then: nothing
    changed). Never replaces an existing name, whoever made it. Raises OSError if ``old``
    cannot be renamed (FileNotFoundError once it is gone).

    ``renameat2(RENAME_NOREPLACE)`` does it in one step; where libc or the file system
    lacks it, ``link`` (which never replaces either) and then ``unlink`` of the old name.
    """
    src, dst = os.fsencode(SHM_DIR + old), os.fsencode(SHM_DIR + new)
    if _renameat2 is not None:
        if _renameat2(_AT_FDCWD, src, _AT_FDCWD, dst, _RENAME_NOREPLACE) == 0:
            return True
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            return False
        if err not in (errno.ENOSYS, errno.EINVAL):  # EINVAL: no RENAME_NOREPLACE here
            raise OSError(err, os.strerror(err), SHM_DIR + old)
    try:
        os.link(src, dst)
    except FileExistsError:
        return False
    os.unlink(src)
    return True


# Names tried before giving up on making or renaming a region. A name is taken only if
# someone guessed 64 random bits, so a second try already means a same-user process that
# watches the listing; the limit keeps a broken file system from looping for ever.
NAME_TRIES = 8


def move_aside(path: str) -> str | None:
    """Rename region ``path`` to a private name (``<path>@<16 random hex>.gone``), never
    replacing anything, and return that name; None if nothing is at ``path``. A remover
    moves a header aside before it looks at what it took: no name stays on a log that is
    being removed, and the log put back (``rename_noreplace``) if it was not the one meant.
    """
    for _ in range(NAME_TRIES):
        private = f"{path}@{secrets.token_hex(8)}.gone"
        try:
            if rename_noreplace(path, private):
                return private
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _typed(exc, path) from None
    raise LogExistsError(f"cannot move {SHM_DIR}{path} aside: {NAME_TRIES} random names in a row exist")


# struct flock on Linux x86-64 and aarch64: l_type, l_whence, l_start, l_len, l_pid, padding
# to 32 bytes. l_start = l_len = 0 locks the whole file; l_pid must be 0 for OFD locks.
_FLOCK = struct.Struct("hhqqi4x")


def _ofd_lock(fd: int, kind: int) -> bool:
    """Take (or, with F_UNLCK, drop) an open-file-description lock on the whole of ``fd``
    without waiting; False if another open file description holds a conflicting one."""
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _FLOCK.pack(kind, os.SEEK_SET, 0, 0, 0))
    except (BlockingIOError, PermissionError):  # EAGAIN, or EACCES on some kernels
        return False
    return True


def lock_shared(fd: int) -> bool:
    """Take a shared open-file-description lock on the whole of ``fd`` (read access is
    enough); False while another description holds the exclusive one. The kernel keeps it
    for as long as any descriptor or mapping refers to the description."""
    return _ofd_lock(fd, fcntl.F_RDLCK)


def lock_exclusive(fd: int) -> bool:
    """Take the exclusive open-file-description lock on the whole of ``fd`` (which must be
    open for writing); False while another description holds a lock on it."""
    return _ofd_lock(fd, fcntl.F_WRLCK)


def unshared(fd: int) -> bool:
    """True if no reader holds the region behind ``fd``: no open file description but the
    writer's holds a shared lock on it (``lock_shared``), so no reader has it mapped.

    The test takes the exclusive lock and drops it at once. It raises no signal and waits
    for nobody; a process that maps a region without the lock (outside the protocol) is
    not counted, and may see the region's bytes change when it is reused.
    """
    if not lock_exclusive(fd):
        return False
    _ofd_lock(fd, fcntl.F_UNLCK)
    return True


def locked_exclusive(fd: int) -> bool:
    """Whether another open file description holds the exclusive lock on the region behind
    ``fd`` now, asked without taking anything (F_OFD_GETLK). Only a description open for
    writing can hold that lock, and the kernel answers the same in every pid namespace."""
    probe = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, _FLOCK.pack(fcntl.F_RDLCK, os.SEEK_SET, 0, 0, 0))
    return bool(_FLOCK.unpack(probe)[0] == fcntl.F_WRLCK)


def regions(name: str) -> Iterator[tuple[int, str, str]]:
    """(nonce, part, path) of every region but the header of logs called ``name``, any
    nonce: ``part`` is "<seq>.<token>" (a segment), "<seq>" (a version-1 segment, or a
    name planted there), "wait" or "claim"."""
    try:
        entries = os.listdir(SHM_DIR)
    except FileNotFoundError:
        return
    for entry in entries:
        m = _REGION.fullmatch(entry)
        if m and m["name"] == name:
            yield int(m["nonce"], 16), m["part"], "/" + entry


def segments(name: str) -> Iterator[tuple[int, int, int | None, str]]:
    """(nonce, seq, token, path) of every segment region of logs called ``name``, any nonce;
    ``token`` (as the int64 the slot holds) is None for a name without one."""
    for nonce, part, path in regions(name):
        seq, dot, token = part.partition(".")
        if seq.isdigit():
            yield nonce, int(seq), _as_int64(int(token, 16)) if dot else None, path


def _as_int64(token: int) -> int:
    return token - (1 << 64) if token >> 63 else token


def log_names() -> list[str]:
    """The names of the log headers in /dev/shm, sorted. Only entries without '@' (never a
    segment: opening one would keep the writer from reusing its pages) are opened, as
    ``open_region`` opens (no link followed, no fifo waited on), and only their first bytes
    are read."""
    try:
        entries = sorted(os.listdir(SHM_DIR))
    except FileNotFoundError:
        return []
    names = []
    for entry in entries:
        if "@" in entry:
            continue
        try:
            if read_region("/" + entry, len(MAGIC)) == MAGIC:
                names.append(entry)
        except OSError:
            continue  # another user's region, gone meanwhile: not ours to list
    return names


def region_owners() -> set[str]:
    """Every log name that has regions (segments, wait regions) in /dev/shm."""
    try:
        entries = os.listdir(SHM_DIR)
    except FileNotFoundError:
        return set()
    return {m["name"] for m in map(_REGION.fullmatch, entries) if m}


def footprint(name: str, nonce: int | None) -> tuple[int, int]:
    """(regions, bytes) in /dev/shm of log ``name``: its header and every region named
    after it with ``nonce`` (any nonce if None)."""
    paths = [header_path(name)] + [p for n, _, p in regions(name) if nonce is None or n == nonce]
    count = size = 0
    for path in paths:
        try:
            st = os.lstat(SHM_DIR + path)
        except FileNotFoundError:
            continue  # reclaimed since the listing, or no header (an orphan)
        if stat.S_ISREG(st.st_mode):  # a directory or link planted under a log's names is not its
            size += st.st_size
            count += 1
    return count, size
