"""The writer claim: the exclusive right to append, held as an flock on the claim region.

The claim region ``/NAME@<nonce>.claim`` is empty and exists only to be locked. Its mode
gives write, and only write, to the classes (owner, group, others) the header gives write
to: flock needs no write permission, so a lock on a file readers can open (the header)
could be taken by any reader and keep writers out. Nobody can open the claim region for
reading, and only those who may write the log can open it at all (root and the owner's
chmod excepted: the owner's processes have full power over the log anyway). It is made before the header
holds the nonce that names it, so nobody can plant it.

flock() belongs to an open file description, so the kernel drops it when the last
descriptor to it closes: on close(), when the Writer is collected, and when its process
dies, SIGKILL included. Nothing a dead writer did can keep a new writer out.

fork() copies descriptors, which would let a child keep its parent's claim alive. So a
child process closes its copies at once (``os.register_at_fork``) and its inherited Writer
objects become closed: only the process that claimed may write.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import time
import warnings
import weakref
from typing import Protocol

from . import _shm
from ._errors import LogNotFoundError
from ._header import PID_WORD, RELEASED_WORD, read_nonce


def mode(header_mode: int) -> int:
    """The claim region's mode: write-only, for whoever may write the header."""
    return header_mode & 0o222


def create(name: str, nonce: int, header_mode: int) -> None:
    _shm.create_empty(_shm.claim_path(name, nonce), mode(header_mode))


class Claim:
    """Exclusive write access to one log: the lock (a descriptor of the claim region) and a
    read-write map of its header. ``mode`` is the header's permissions."""

    __slots__ = ("__weakref__", "_fd", "_region", "header", "mode", "words")

    def __init__(self, fd: int, region: mmap.mmap, mode: int, header: tuple[int, int]) -> None:
        self._fd = fd
        self._region = region
        self.mode = mode
        self.header = header  # (device, inode) of the header mapped: which log this claim is on
        self.words = memoryview(region)[: len(region) // 8 * 8].cast("q")
        self.words[PID_WORD] = os.getpid()  # informational: who holds the claim

    @classmethod
    def try_acquire(cls, name: str, nonce: int) -> Claim | None:
        """Take the claim on log ``name``, or return None while another handle holds it."""
        try:
            lock_fd = _shm.open_write_only(_shm.claim_path(name, nonce))
        except LogNotFoundError:
            raise LogNotFoundError(f"the log {name!r} was removed (its claim region is gone)") from None
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            return None
        try:
            fd, region = _shm.open_write(_shm.header_path(name))
        except BaseException:
            os.close(lock_fd)  # also drops the lock
            raise
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)  # the map keeps what it needs
        if read_nonce(region) != nonce or len(region) < 8:
            region.close()
            os.close(lock_fd)
            raise LogNotFoundError(f"the log {name!r} was removed and replaced by another")
        return cls(lock_fd, region, st.st_mode & 0o777, (st.st_dev, st.st_ino))

    def release(self) -> None:
        """Give the claim up. Idempotent, and safe to call again after an exception (an
        interrupt) cut a call short: it finishes what that call left."""
        if self._fd < 0:
            return
        with contextlib.suppress(ValueError):  # the view is released: a cut-short call stored these
            self.words[RELEASED_WORD] = time.time_ns()  # when: what followers read in info()
            self.words[PID_WORD] = 0  # before unlocking, so a successor's pid is never erased
        self._close()

    def forget(self) -> None:
        """In a forked child: drop the inherited copy, leaving the parent's claim held."""
        if self._fd >= 0:
            self._close()

    def _close(self) -> None:
        self.words.release()
        self._region.close()
        fd = self._fd
        # The last descriptor of this lock: closing it releases the claim. On one line, so
        # neither a line event nor a signal handler (run only at calls and jumps) comes
        # between the store and the close: the descriptor is never leaked nor closed twice.
        self._fd = -1; os.close(fd)  # noqa: E702  # fmt: skip

    def fileno(self) -> int:
        """The descriptor of the claim region: unlinked with the log (``unlink()``)."""
        return self._fd


def held(name: str, nonce: int) -> bool:
    """Whether some writer holds the claim on log ``name`` now, found without trying to
    take it (trying would disturb a writer that is claiming at that moment).

    /proc/locks lists every flock by device and inode: the truth even when a crashed
    writer's pid has since been reused.
    """
    try:
        st = os.stat(_shm.SHM_DIR + _shm.claim_path(name, nonce))
    except FileNotFoundError:
        return False
    with open("/proc/locks") as f:
        locks = f.read()
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in locks.splitlines():
        fields = line.split()  # "1: FLOCK ADVISORY WRITE <pid> <maj:min:inode> 0 EOF"
        if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == inode:
            return True
    return False


class _Disownable(Protocol):
    def _disown(self) -> None: ...


_holders: weakref.WeakSet[_Disownable] = weakref.WeakSet()


def track(holder: _Disownable) -> None:
    """Have ``holder._disown()`` called in every child forked while it is alive."""
    _holders.add(holder)


def _disown_all_in_child() -> None:
    holders = list(_holders)
    _holders.clear()
    for holder in holders:
        try:
            holder._disown()
        except Exception as exc:  # one holder's trouble must not leave the others armed
            warnings.warn(
                f"atomic_log_shm: could not disown {holder!r} in a forked child: {exc!r}", stacklevel=1
            )


os.register_at_fork(after_in_child=_disown_all_in_child)
