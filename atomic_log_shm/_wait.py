"""Blocking until something is published, without busy-polling: a futex in shared memory.

Each log has a small wait region ``/NAME@<nonce>.wait``, the one region that readers may
write, and only readers that wait do:

    offset  size  field     written by                     read by
    0       8     signal    writer, when it wakes waiters  futex (low 32 bits), waiters
    8       8     waiting   waiters (1), writer (0)        writer, after each publication

Waiter: load ``signal``; store ``waiting = 1``; look at the log again (return if something
arrived); ``FUTEX_WAIT(signal, loaded value, slice)``; repeat until there is news or the
timeout passes. Writer, after each publication: load ``waiting``; if set, bump ``signal``
and ``FUTEX_WAKE`` every waiter; if the kernel woke none, store ``waiting = 0``. So a
writer nobody waits on pays one load per publication and no system call, and a waiter that
was killed or gave up costs the writer one system call, once.

A waiter's store of ``waiting`` and its look at the log can be reordered on x86-64 (a load
may pass an older store), as can the writer's count store and its load of ``waiting``:
both may miss the other, and that publication wakes nobody. The next publication does, and
a waiter never sleeps longer than ``_SLICE`` before it looks again, which bounds how late
such a rare wake-up can be.

The futex is shared (no FUTEX_PRIVATE_FLAG): the kernel keys it by file and offset, so
the writer's and every reader's mappings meet on it. Where the wait region cannot be
mapped writable (a reader without write permission), waiting falls back to polling.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import mmap
import os
import threading
import time
from collections.abc import Callable

import posix_ipc

from . import _shm
from ._errors import LogNotFoundError

SIZE = 64
SIGNAL_WORD = 0
WAITING_WORD = 1

_SYS_FUTEX = 202  # x86-64; the only architecture this library runs on (see _log.py)
_FUTEX_WAIT = 0
_FUTEX_WAKE = 1
_WAKE_ALL = 0x7FFFFFFF
_SLICE = 0.05  # the longest a waiter sleeps before it looks at the log again
_FIRST_NAP = 50e-6  # polling fallback
_LONGEST_NAP = 2e-3

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def wait_mode(mode: int) -> int:
    """The wait region's mode: whoever may read the log may write it (to wait)."""
    return mode | (mode & 0o444) >> 1


def create(name: str, nonce: int, mode: int) -> None:
    fd, region = _shm.create(_shm.wait_path(name, nonce), SIZE, wait_mode(mode))
    region.close()
    os.close(fd)


class WaitRegion:
    """The wait region mapped read-write, with the address of its futex word."""

    __slots__ = ("_anchor", "_region", "address", "words")

    def __init__(self, region: mmap.mmap) -> None:
        self._region = region
        self._anchor = ctypes.c_char.from_buffer(region)  # pins the map while we hold its address
        self.address = ctypes.addressof(self._anchor)
        self.words = memoryview(region)[:SIZE].cast("q")

    @classmethod
    def open(cls, name: str, nonce: int) -> WaitRegion | None:
        """Map the wait region of a log; None if this process may not (or it is gone)."""
        try:
            fd, region = _shm.open_write(_shm.wait_path(name, nonce))
        except (LogNotFoundError, posix_ipc.PermissionsError, PermissionError):
            return None
        os.close(fd)
        if len(region) < SIZE:
            region.close()
            return None
        return cls(region)

    def wake(self) -> None:
        """Wake every waiter (the writer calls this when ``waiting`` is set)."""
        words = self.words
        words[SIGNAL_WORD] = (words[SIGNAL_WORD] + 1) & 0xFFFFFFFF
        if _syscall(_SYS_FUTEX, ctypes.c_void_p(self.address), _FUTEX_WAKE, _WAKE_ALL, None, None, 0) == 0:
            words[WAITING_WORD] = 0  # nobody was asleep: stop paying until someone waits again

    def sleep(self, signal: int, seconds: float) -> None:
        """Sleep until woken, ``seconds`` pass, or ``signal`` has already changed."""
        whole = int(seconds)
        timeout = _Timespec(whole, int((seconds - whole) * 1e9))
        if (
            _syscall(
                _SYS_FUTEX, ctypes.c_void_p(self.address), _FUTEX_WAIT, signal, ctypes.byref(timeout), None, 0
            )
            < 0
        ):
            err = ctypes.get_errno()
            if err not in (errno.EAGAIN, errno.ETIMEDOUT, errno.EINTR):
                raise OSError(err, os.strerror(err))

    def close(self) -> None:
        """Unmap the region. Idempotent."""
        if self._region.closed:
            return
        self.words.release()
        del self._anchor
        self._region.close()


def wait_until(region: WaitRegion | None, ready: Callable[[], bool], timeout: float | None) -> bool:
    """Block until ``ready()`` or ``timeout`` seconds pass; True if ready. Sleeps on the
    futex of ``region``, or polls with backoff where this process cannot map it (None)."""
    if ready():
        return True
    deadline = None if timeout is None else time.monotonic() + timeout
    nap = _FIRST_NAP
    while True:
        left = _SLICE if deadline is None else min(_SLICE, deadline - time.monotonic())
        if left <= 0:
            return False
        if region is None:  # no futex for us: poll, backing off
            time.sleep(min(nap, left))
            nap = min(nap * 2, _LONGEST_NAP)
        else:
            words = region.words
            signal = words[SIGNAL_WORD]
            words[WAITING_WORD] = 1  # ask the writer to wake us after its next publication
            if ready():
                return True
            region.sleep(signal, left)
        if ready():
            return True


class AsyncWaker:
    """Wakes the asyncio waiters of one log handle, with one thread for all of them.

    The event loop must never block, and a thread per waiting coroutine would not scale.
    So the first coroutine that waits starts a thread that sleeps on the futex for the
    lowest position anyone waits beyond, and hands each coroutine its answer through
    ``loop.call_soon_threadsafe``; the thread ends when nobody waits. ``end()`` is the log's
    end position now and ``wait_beyond(position, timeout)`` the blocking wait.
    """

    __slots__ = ("_end", "_lock", "_name", "_running", "_wait_beyond", "_waiters")

    def __init__(
        self, name: str, end: Callable[[], int], wait_beyond: Callable[[int, float | None], bool]
    ) -> None:
        self._name = name
        self._end = end
        self._wait_beyond = wait_beyond
        self._lock = threading.Lock()
        self._waiters: dict[asyncio.Future[bool], int] = {}
        self._running = False

    async def wait(self, position: int, timeout: float | None) -> bool:
        if self._end() > position:
            return True
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        with self._lock:
            self._waiters[future] = position
            if not self._running:
                self._running = True
                threading.Thread(
                    target=self._run, name=f"atomic-log-shm waker {self._name}", daemon=True
                ).start()
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except asyncio.TimeoutError:
            return False
        finally:
            with self._lock:
                self._waiters.pop(future, None)

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._waiters:
                    self._running = False
                    return
                lowest = min(self._waiters.values())
            try:
                self._wait_beyond(lowest, _SLICE)
                self._settle(self._end(), None)
            except Exception as exc:  # e.g. the handle was closed: every waiter hears of it
                self._settle(None, exc)

    def _settle(self, end: int | None, error: BaseException | None) -> None:
        """Answer the waiters for positions below ``end`` (all of them, with an error)."""
        with self._lock:
            done = [f for f, position in self._waiters.items() if end is None or position < end]
            for future in done:
                del self._waiters[future]
        for future in done:
            future.get_loop().call_soon_threadsafe(_resolve, future, error)


def _resolve(future: asyncio.Future[bool], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(True)
    else:
        future.set_exception(error)
