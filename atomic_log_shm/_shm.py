"""Shared-memory regions: their names, creating, mapping and removing them.

A log ``NAME`` owns the header region ``/NAME`` and segment regions
``/NAME@<nonce>.<seq>``: ``nonce`` is 16 hex digits drawn when the log is created and
``seq`` the segment number. ``@`` is not allowed in log names, so no log's regions can be
mistaken for another's, and the nonce keeps a new log from ever meeting the leftover
segments of an earlier, crashed log of the same name.
"""

from __future__ import annotations

import errno
import mmap
import os
import re
from collections.abc import Iterator

import posix_ipc

from ._errors import InvalidNameError, LogExistsError, LogNotFoundError, OutOfSpaceError

SHM_DIR = "/dev/shm"
MAX_NAME = 200  # leaves room for "@<16 hex>.<20 digits>" within NAME_MAX (255)
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
_SEGMENT = re.compile(r"(?P<name>.+)@(?P<nonce>[0-9a-f]{16})\.(?P<seq>[0-9]+)")


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


def segment_path(name: str, nonce: int, seq: int) -> str:
    return f"/{name}@{nonce:016x}.{seq}"


def create(path: str, size: int, mode: int) -> mmap.mmap:
    """Create a region of ``size`` bytes with its memory reserved, and map it read-write.

    On tmpfs, ftruncate() alone reserves nothing: the first store to a page that cannot be
    had kills the process with SIGBUS. posix_fallocate() takes the pages now, so running
    out of room is an OutOfSpaceError here, before anything is published.
    """
    try:
        shm = posix_ipc.SharedMemory(path, posix_ipc.O_CREX, mode=mode, size=0)
    except posix_ipc.ExistentialError:
        raise LogExistsError(f"shared memory {path!r} already exists") from None
    try:
        os.fchmod(shm.fd, mode)  # exactly `mode`, whatever the umask
        os.posix_fallocate(shm.fd, 0, size)
        return mmap.mmap(shm.fd, size)
    except OSError as exc:
        unlink_quietly(path)
        if exc.errno in (errno.ENOSPC, errno.ENOMEM, errno.EFBIG):
            raise OutOfSpaceError(
                exc.errno, f"no room in {SHM_DIR} for {size} bytes ({path}); free some and retry"
            ) from None
        raise
    finally:
        shm.close_fd()


def open_read(path: str) -> mmap.mmap | None:
    """Map an existing region read-only; None if it does not exist (any more) or is empty."""
    try:
        shm = posix_ipc.SharedMemory(path, 0, read_only=True)
    except posix_ipc.ExistentialError:
        return None
    try:
        if shm.size == 0:  # only while its creator is between shm_open and fallocate
            return None
        return mmap.mmap(shm.fd, shm.size, access=mmap.ACCESS_READ)
    finally:
        shm.close_fd()


def open_write(path: str) -> tuple[int, mmap.mmap]:
    """Open an existing region read-write: its file descriptor (owned by the caller) and map."""
    try:
        shm = posix_ipc.SharedMemory(path, 0)
    except posix_ipc.ExistentialError:
        raise LogNotFoundError(f"no shared memory named {path!r}") from None
    fd = shm.fd
    try:
        return fd, mmap.mmap(fd, shm.size)
    except BaseException:
        os.close(fd)
        raise


def unlink_quietly(path: str) -> bool:
    try:
        posix_ipc.unlink_shared_memory(path)
    except posix_ipc.ExistentialError:
        return False
    return True


def segments(name: str) -> Iterator[tuple[int, int, str]]:
    """(nonce, seq, path) of every segment region of logs called ``name``, any nonce."""
    try:
        entries = os.listdir(SHM_DIR)
    except FileNotFoundError:
        return
    for entry in entries:
        m = _SEGMENT.fullmatch(entry)
        if m and m["name"] == name:
            yield int(m["nonce"], 16), int(m["seq"]), "/" + entry
