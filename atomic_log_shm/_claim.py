"""The writer claim: the exclusive right to append, held as an flock on the claim region.

The claim region ``/NAME@<nonce>.claim`` is empty and exists only to be locked. Its mode
gives write, and only write, to the classes (owner, group, others) the header gives write
to: flock needs no write permission, so a lock on a file readers can open (the header)
could be taken by any reader and keep writers out. Nobody can open the claim region for
reading, and only those who may write the log can open it at all (root and the owner's
chmod excepted: the owner's processes have full power over the log anyway). It is made
before the header holds the nonce that names it, so nobody can plant it.

flock() belongs to an open file description, so the kernel drops it when the last
descriptor to it closes: on close(), when the Writer is collected, and when its process
dies, SIGKILL included. Nothing a dead writer did can keep a new writer out. The
descriptor is owned by a file object from the moment it is opened, so an exception at any
line (a KeyboardInterrupt) cannot leave the lock held by a descriptor nobody owns: it is
closed when the claim is released, or when the objects holding it are collected.

Whether a writer holds the claim is for readers to see without trying to take it (trying
would disturb a writer that is claiming), and in every pid namespace (a reader in a
container sees no flock of a process outside it in /proc/locks). So a writer that claims
also makes a held region ``/NAME@<nonce>.held.<token>``, with the header's mode, takes
the exclusive open-file-description lock on it, and only then publishes its token in the
header's ``held_token``. A reader asks the kernel whether that region is locked for
writing (F_OFD_GETLK, which takes nothing). Only a description open for writing can hold
that lock, nobody can lock the region before the writer (its name cannot be guessed before
it is published), and nobody can after (the writer holds it exclusively), so a reader can
neither fake a writer nor hide one. The lock goes with the writer's descriptor, SIGKILL
included; a crashed writer's held region is removed by the next claim.

fork() copies descriptors, which would let a child keep its parent's claim alive. So a
child process closes its copies at once (``os.register_at_fork``) and its inherited Writer
objects become closed: only the process that claimed may write.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import mmap
import os
import time
import warnings
import weakref
from typing import Protocol

from . import _shm
from ._errors import LogNotFoundError
from ._header import HELD_WORD, PID_WORD, RELEASED_WORD, Layout, read_nonce
from ._platform import ACQUIRE, RELEASE, AtomicView, fence


def mode(header_mode: int) -> int:
    """The claim region's mode: write-only, for whoever may write the header."""
    return header_mode & 0o222


def create(name: str, nonce: int, header_mode: int) -> None:
    _shm.create(_shm.claim_path(name, nonce), mode(header_mode)).close()


class Claim:
    """Exclusive write access to one log: the lock (the claim region, open), the held region
    (open and locked, for readers to see), and a read-write map of the header. ``mode`` is
    the header's permissions, ``header`` its (device, inode)."""

    __slots__ = ("__weakref__", "_held", "_held_path", "_lock", "_region", "header", "mode", "view", "words")

    def __init__(self, lock: io.FileIO, region: mmap.mmap, mode: int, header: tuple[int, int]) -> None:
        self._lock = lock
        self._region = region
        self._held: io.FileIO | None = None
        self._held_path = ""
        self.mode = mode
        self.header = header  # (device, inode) of the header mapped: which log this claim is on
        self.words = memoryview(region)[: len(region) // 8 * 8].cast("q")
        self.view = AtomicView(region)  # the writer's release stores (Writer._publish)
        self.words[PID_WORD] = os.getpid()  # informational: who holds the claim

    def _hold(self, name: str, nonce: int) -> None:
        """Make the held region, lock it and publish its token (see the module docstring)."""
        for held_nonce, part, path in _shm.regions(name):  # a crashed writer's: nobody else claims now
            if held_nonce == nonce and part.startswith("held."):
                _shm.unlink_quietly(path)
        token = _shm.new_token()  # never 0, which says "no writer"
        self._held_path = _shm.held_path(name, nonce, token)  # first: release() removes it, however this ends
        self._held = _shm.create(self._held_path, self.mode)
        _shm.lock_exclusive(self._held.fileno())  # a new region: nobody else can hold a lock on it
        # After the lock: a reader that loads this token finds the region locked (or gone).
        fence(RELEASE)  # pairs with the acquire fence after the token load in Reader.writer_active
        self.words[HELD_WORD] = token

    @classmethod
    def try_acquire(cls, name: str, layout: Layout) -> Claim | None:
        """Take the claim on log ``name``, or return None while another handle holds it."""
        opened = _shm.open_region(_shm.claim_path(name, layout.nonce), "wb")
        if opened is None:
            raise LogNotFoundError(f"the log {name!r} was removed (its claim region is gone)")
        lock = opened[0]
        try:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                return None
            # Pairs with the release of the lock by the last writer (the kernel's, at its
            # close or death): everything it stored to the header is seen by this one.
            fence(ACQUIRE)
            path = _shm.header_path(name)
            header = _shm.open_region(path, "r+b")
            if header is None:
                raise LogNotFoundError(f"the log {name!r} was removed")
            file, st = header
            with file:
                if st.st_size < layout.header_size:  # another log's header, or one being made
                    raise LogNotFoundError(f"the log {name!r} was removed and replaced by another")
                region = _shm.map_file(file, path, layout.header_size, mmap.ACCESS_WRITE)
            if read_nonce(region) != layout.nonce:
                region.close()
                raise LogNotFoundError(f"the log {name!r} was removed and replaced by another")
            claim = cls(lock, region, st.st_mode & 0o777, (st.st_dev, st.st_ino))
        except BaseException:
            lock.close()  # also drops the lock
            raise
        try:
            claim._hold(name, layout.nonce)
        except BaseException:
            claim.release()
            raise
        return claim

    def release(self) -> None:
        """Give the claim up. Idempotent, and safe to call again after an exception (an
        interrupt) cut a call short: it finishes what that call left."""
        if self._lock.closed:
            return
        with contextlib.suppress(ValueError):  # the view is released: a cut-short call stored these
            self.words[HELD_WORD] = 0  # before the held region goes: readers stop looking at it
            self.words[RELEASED_WORD] = time.time_ns()  # when: what followers read in info()
            self.words[PID_WORD] = 0  # before unlocking, so a successor's pid is never erased
        if self._held_path:
            _shm.unlink_quietly(self._held_path)
        if self._held is not None:
            self._held.close()
        self._lock.close()  # the last descriptor of the lock: the claim is free
        self._unmap()

    def forget(self) -> None:
        """In a forked child: drop the inherited copies, leaving the parent's claim held."""
        if self._held is not None:
            self._held.close()
        self._lock.close()
        self._unmap()

    def _unmap(self) -> None:
        self.words.release()
        self.view.close()
        with contextlib.suppress(BufferError):  # a view an interrupted frame holds: gc unmaps it
            self._region.close()

    def fileno(self) -> int:
        """The descriptor of the claim region (unlinked with the log); -1 once released."""
        return -1 if self._lock.closed else self._lock.fileno()


def held(name: str, nonce: int, token: int) -> bool:
    """Whether a writer holds the claim on log ``name`` now, found without trying to take
    it: ``token`` is the header's ``held_token`` (see the module docstring)."""
    if token == 0:
        return False
    opened = _shm.open_region(_shm.held_path(name, nonce, token))
    if opened is None:  # released (or its writer crashed and a new claim removed it)
        return False
    with opened[0] as file:
        return _shm.locked_exclusive(file.fileno())


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
