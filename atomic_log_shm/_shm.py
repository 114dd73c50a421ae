"""Shared-memory regions: their names, creating, mapping and removing them.

A log ``NAME`` owns the header region ``/NAME`` and segment regions
``/NAME@<nonce>.<seq>.<token>``, a wait region ``/NAME@<nonce>.wait`` and a claim region
``/NAME@<nonce>.claim``: ``nonce`` is 16 hex digits drawn when the log is created, ``seq``
the segment number and ``token`` 16 hex digits the writer draws for each segment region it
makes or renames (kept in the segment's slot). ``@`` is not allowed in log names, so no
log's regions can be mistaken for another's, and the nonce keeps a new log from ever
meeting the leftover segments of an earlier, crashed log of the same name. The token keeps
anyone from planting a segment's name before the writer makes it: /dev/shm is writable by
every local user, and a name that exists stops a create (``O_EXCL``) and a rename that
never replaces (``rename_noreplace``), so the writer draws another token and tries again.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import re
import stat
import struct
from collections.abc import Iterator

import posix_ipc

from ._errors import (
    AccessDeniedError,
    InvalidNameError,
    LogExistsError,
    LogNotFoundError,
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
    r"(?P<part>(?P<seq>[0-9]+)(?:\.(?P<token>[0-9a-f]{16}))?|wait|claim)"
)
_TOKEN_MASK = (1 << 64) - 1  # a token is an int64 header word, named as its 64 bits unsigned


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


def create(path: str, size: int, mode: int, flags: int = mmap.MAP_SHARED) -> tuple[int, mmap.mmap]:
    """Create a region of ``size`` bytes with its memory reserved, and map it read-write
    with mmap ``flags``. Returns its file descriptor (the caller closes it) and the map.

    On tmpfs, ftruncate() alone reserves nothing: the first store to a page that cannot be
    had kills the process with SIGBUS. posix_fallocate() takes the pages now, so running
    out of room is an OutOfSpaceError here, before anything is published.
    """
    try:
        shm = posix_ipc.SharedMemory(path, posix_ipc.O_CREX, mode=mode, size=0)
    except posix_ipc.ExistentialError:
        raise LogExistsError(f"shared memory {path!r} already exists") from None
    except (OSError, posix_ipc.Error) as exc:  # e.g. ENOSPC: no inode left
        raise _typed(exc, path, size) from None
    try:
        os.fchmod(shm.fd, mode)  # exactly `mode`, whatever the umask
        os.posix_fallocate(shm.fd, 0, size)
        return shm.fd, mmap.mmap(shm.fd, size, flags=flags)
    except BaseException as exc:
        shm.close_fd()
        unlink_quietly(path)
        raise _typed(exc, path, size) from None


def create_empty(path: str, mode: int) -> None:
    """Create an empty region with permissions exactly ``mode``."""
    try:
        shm = posix_ipc.SharedMemory(path, posix_ipc.O_CREX, mode=mode, size=0)
    except posix_ipc.ExistentialError:
        raise LogExistsError(f"shared memory {path!r} already exists") from None
    except (OSError, posix_ipc.Error) as exc:
        raise _typed(exc, path) from None
    try:
        os.fchmod(shm.fd, mode)
    except BaseException as exc:
        unlink_quietly(path)
        raise _typed(exc, path) from None
    finally:
        shm.close_fd()


def open_write_only(path: str) -> int:
    """A write-only descriptor of the existing region ``path`` (owned by the caller); the
    region must be a regular file (a planted directory or fifo is refused)."""
    try:
        fd = os.open(SHM_DIR + path, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise LogNotFoundError(f"no shared memory named {path!r}") from None
    except OSError as exc:
        raise _typed(exc, path) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise LogNotFoundError(f"{SHM_DIR}{path} is not a region of this log")
    return fd


def open_read(path: str) -> mmap.mmap | None:
    """Map an existing region read-only; None if it does not exist (any more), is empty,
    or is not a region (a directory, fifo or link planted under the name)."""
    fd = _open_readonly(path)
    if fd is None:
        return None
    try:
        return _map_readonly(fd, path)
    finally:
        os.close(fd)


def open_read_identified(path: str) -> tuple[mmap.mmap, tuple[int, int]] | None:
    """``open_read``, with the (device, inode) of the region mapped: what the name meant
    when it was opened, whatever its bytes or the name say later."""
    fd = _open_readonly(path)
    if fd is None:
        return None
    try:
        st = os.fstat(fd)
        region = _map_readonly(fd, path)
        return None if region is None else (region, (st.st_dev, st.st_ino))
    finally:
        os.close(fd)


def open_read_shared(path: str) -> mmap.mmap | None:
    """``open_read``, holding a shared lock on the region for as long as the map lives:
    the writer reuses no region that someone holds this way (``unshared``). None also if
    the writer holds the region's exclusive lock now (it is testing a spare for reuse, so
    the region is no longer a published segment).

    The lock is an open-file-description lock: the kernel keeps it for as long as any
    descriptor or mapping refers to the description, so the mapping alone keeps it after
    the descriptor is closed, and it goes away with the last mapping, or the process.
    Read access is all it needs.
    """
    fd = _open_readonly(path)
    if fd is None:
        return None
    try:
        if not _ofd_lock(fd, fcntl.F_RDLCK):
            return None
        return _map_readonly(fd, path)
    finally:
        os.close(fd)


def _open_readonly(path: str) -> int | None:
    """A read-only descriptor of region ``path`` (owned by the caller), as shm_open gives
    one; None if there is no region by that name. A name can be taken by anyone once it is
    gone (/dev/shm is world-writable), so what is found there may be a directory, a link or
    a fifo: never followed, never waited on (O_NONBLOCK: a fifo would block the open), and
    taken as no region."""
    try:
        fd = os.open(SHM_DIR + path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a symbolic link
            return None
        raise _typed(exc, path) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def _map_readonly(fd: int, path: str) -> mmap.mmap | None:
    try:
        size = os.fstat(fd).st_size
        if size == 0:  # only while its creator is between shm_open and fallocate
            return None
        return mmap.mmap(fd, size, access=mmap.ACCESS_READ)
    except OSError as exc:
        raise _typed(exc, path) from None


def open_header_writable(path: str, size: int) -> tuple[mmap.mmap, tuple[int, int]] | None:
    """The first ``size`` bytes of region ``path`` mapped read-write, with its (device,
    inode); None if there is no such region, it is smaller, or this process may not write
    it. Never follows a link, never blocks on a planted fifo (as ``_open_readonly``)."""
    try:
        fd = os.open(SHM_DIR + path, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:  # gone, a link, a directory, not ours to write: nothing to mark
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size < size:
            return None
        return mmap.mmap(fd, size), (st.st_dev, st.st_ino)
    except OSError:
        return None
    finally:
        os.close(fd)


def open_write(path: str) -> tuple[int, mmap.mmap]:
    """Open an existing region read-write: its file descriptor (owned by the caller) and map."""
    try:
        shm = posix_ipc.SharedMemory(path, 0)
    except posix_ipc.ExistentialError:
        raise LogNotFoundError(f"no shared memory named {path!r}") from None
    except (OSError, posix_ipc.Error) as exc:
        raise _typed(exc, path) from None
    fd = shm.fd
    try:
        return fd, mmap.mmap(fd, shm.size)
    except BaseException as exc:
        os.close(fd)
        raise _typed(exc, path) from None


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


def unshared(fd: int) -> bool:
    """True if no reader holds the region behind ``fd``: no open file description but the
    writer's holds a shared lock on it (``open_read_shared``), so no reader has it mapped.

    The test takes the exclusive lock and drops it at once. It raises no signal and waits
    for nobody; a process that maps a region without the lock (outside the protocol) is
    not counted, and may see the region's bytes change when it is reused.
    """
    if not _ofd_lock(fd, fcntl.F_WRLCK):
        return False
    _ofd_lock(fd, fcntl.F_UNLCK)
    return True


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
    segment: opening one would keep the writer from reusing its pages) are opened, and
    only their first bytes are read."""
    try:
        entries = sorted(os.listdir(SHM_DIR))
    except FileNotFoundError:
        return []
    names = []
    for entry in entries:
        if "@" in entry:
            continue
        try:
            with open(os.path.join(SHM_DIR, entry), "rb") as f:
                if f.read(len(MAGIC)) == MAGIC:
                    names.append(entry)
        except OSError:
            continue  # another user's region, a directory, gone meanwhile: not ours to list
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
