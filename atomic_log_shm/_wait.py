"""Blocking until something is published, without busy-polling: a futex in shared memory.

Each log has a small wait region ``/NAME@<nonce>.wait``, the one region that readers may
write, and only readers that wait do (and only readers with write access to the log: the
region has exactly the log's mode, since write access is enough to truncate it and so to
kill the writer with SIGBUS; readers with read access only poll, see ``wait_until``):

    offset  size  field     written by                          read by
    0       8     signal    writer, when it wakes waiters       futex (low 32 bits), waiters
    8       8     waiting   waiters (1), writer (0, when waking) writer, after each publication
    16      8     fenced    writer, at claim (1: registered     waiters, before they sleep
                            for membarrier, else 0)

Waiter: look at the log, yielding the CPU, for up to ``_SPIN`` (a follower that keeps up
with a fast writer finds the next records here, costing the writer nothing; the spin is
skipped for ``_SPIN_PAUSE`` after one that did not pay); then load ``signal``; store
``waiting = 1``; if ``fenced``, ``membarrier(GLOBAL_EXPEDITED)``; look at the log again
(return if something arrived); ``FUTEX_WAIT(signal, loaded value, slice)``; repeat.
Writer, after each publication: load ``waiting``; if set, store ``waiting = 0``, bump
``signal``, ``FUTEX_WAKE`` every waiter. A writer nobody waits on pays one load per
publication; each time waiters go to sleep costs it one system call.

Why no wake-up is lost (docs/design.md, "Waiting: why no wake-up is lost", has it in full):

* the publication against the waiter's last look: the writer stores the count, then loads
  ``waiting``; the waiter stores ``waiting``, then loads the count. x86-64 and aarch64 may
  let each load pass its own older store, so both could miss the other. The waiter's membarrier orders
  both: once it returns, every CPU running the (registered) writer has executed a full
  barrier, so either the writer's count store is visible to the waiter's look, or the
  writer's later load of ``waiting`` sees 1.
* the writer's clear against a waiter that sets ``waiting`` meanwhile: the writer clears
  *before* it bumps ``signal`` (a sequentially consistent fetch_add, which keeps the clear
  before it); a waiter whose store of 1 the clear erased loaded ``signal`` before that store
  (an acquire fence keeps the load before the store), so before the bump: its FUTEX_WAIT
  fails at once or is woken by this wake, and it sets ``waiting`` again before it sleeps
  again.

Where the kernel has no membarrier (``fenced`` is 0), or refuses a waiter's call, the first
argument does not hold: a wake-up may be missed, rarely, and is then late by at most
``_UNFENCED_SLICE``.

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
import weakref
from collections.abc import Callable

from . import _shm
from ._errors import AccessDeniedError, AtomicLogError, InvalidArgumentError
from ._platform import ACQUIRE, SEQ_CST, SYSCALLS, AtomicView, fence

SIZE = 64
SIGNAL_WORD = 0
WAITING_WORD = 1
FENCED_WORD = 2

_SYS_FUTEX = SYSCALLS.futex
_FUTEX_WAIT = 0
_FUTEX_WAKE = 1
_WAKE_ALL = 0x7FFFFFFF
_SYS_MEMBARRIER = SYSCALLS.membarrier
_MEMBARRIER_CMD_QUERY = 0
_MEMBARRIER_CMD_GLOBAL_EXPEDITED = 1 << 1
_MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED = 1 << 2
_SPIN = 30e-6  # how long a waiter looks again (yielding) before it asks to be woken
_SPIN_PAUSE = 0.01  # after a spin that did not pay, how long waiters of this process skip it,
_LONGEST_SPIN_PAUSE = 1.0  # doubling up to this while spins keep not paying
LOOK_EVERY = 0.5
"""Seconds, at most, between a follower's looks at whether its log (or its writer) is still
there, while it finds nothing new: the longest a fenced waiter sleeps on the futex, how often
it checks ``still()``, how often a snapshot's ``poll()`` opens the header's name."""
_UNFENCED_SLICE = 0.01  # without a working membarrier: the bound on a missed wake-up's delay
_FIRST_NAP = 50e-6  # polling fallback
_LONGEST_NAP = 2e-3

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _membarrier_available() -> bool:
    mask: int = _syscall(_SYS_MEMBARRIER, _MEMBARRIER_CMD_QUERY, 0, 0)
    needed = _MEMBARRIER_CMD_GLOBAL_EXPEDITED | _MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED
    return mask >= 0 and mask & needed == needed


MEMBARRIER = _membarrier_available()
"""Whether this kernel offers the asymmetric fence the wait protocol uses (queried once)."""


def check_seconds(value: object, what: str = "timeout") -> float | None:
    """``value`` as seconds (None stays None); InvalidArgumentError unless a number >= 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise InvalidArgumentError(f"{what} must be None or a number of seconds >= 0, not {value!r}")
    return float(value)


LINGER = 1e-3
"""The default ``linger`` of ``wait()``: how long after its previous return a follower that
keeps finding records already waiting is held, to take them in bigger batches (seconds)."""
STREAK = 8  # waits in a row that found records already there before a wait lingers
FAST = 1e-5  # ... and only while they come faster than one per FAST seconds
WINDOW_SHARE = 4  # lingering never lets more than 1/WINDOW_SHARE of the window arrive


class Pace:
    """One follower's recent waits (a cursor's, a snapshot's), for lingering: how many in a
    row found records already there, and when the last one returned. In-process only."""

    __slots__ = ("returned", "streak")

    def __init__(self) -> None:
        self.streak = 0
        self.returned = 0.0  # time.monotonic()

    def pause(self, waiting: int, linger: float, timeout: float | None, window: int) -> float:
        """A wait found ``waiting`` records already there: how long it lingers (0: not at all)."""
        self.streak += 1
        if self.streak <= STREAK or not linger:
            return 0.0
        since = time.monotonic() - self.returned
        pause = min(linger - since, linger if timeout is None else timeout)
        # The records came at about waiting / since per second: a follower paced slower
        # than one per FAST never lingers, and lingering must leave room in the window.
        too_slow = waiting * FAST < since
        if pause <= 0 or too_slow or waiting * (since + pause) * WINDOW_SHARE >= window * since:
            return 0.0
        return pause


def check_linger(value: object) -> float:
    """``linger`` as seconds; InvalidArgumentError unless a number >= 0 (None is 0)."""
    return check_seconds(value, "linger") or 0.0


def wait_mode(mode: int) -> int:
    """The wait region's mode: exactly the log's. Write access to it is enough to truncate
    it, and a truncated region kills the writer with SIGBUS at its next load of
    ``waiting``; so only those who may write the log anyway (and so could damage it in other
    ways) sleep on its futex. Readers with read access only poll, backing off (wait_until)."""
    return mode


def create(name: str, nonce: int, mode: int) -> None:
    file, region = _shm.create_mapped(_shm.wait_path(name, nonce), SIZE, wait_mode(mode))
    region.close()
    file.close()


class WaitRegion:
    """The wait region mapped read-write, with the address of its futex word."""

    __slots__ = ("_region", "_view", "address", "words")

    def __init__(self, region: mmap.mmap) -> None:
        self._region = region
        self._view = AtomicView(region)  # keeps the map exported: its address stays valid
        self.address = self._view.address
        self.words = memoryview(region)[:SIZE].cast("q")

    @classmethod
    def open(cls, name: str, nonce: int) -> WaitRegion | None:
        """Map the wait region of a log; None if this process may not, or if what has its
        name is not a wait region (gone, or anything else put there: then waiting polls)."""
        path = _shm.wait_path(name, nonce)
        try:
            opened = _shm.open_region(path, "r+b")
        except AccessDeniedError:
            return None
        if opened is None:
            return None
        file, st = opened
        with file:
            if st.st_size != SIZE:
                return None
            return cls(_shm.map_file(file, path, SIZE, mmap.ACCESS_WRITE))

    def register_writer(self) -> None:
        """Called by a writer once, at claim: let waiters fence against this process, and
        tell them whether they can (``fenced``)."""
        register = _MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED
        fenced = MEMBARRIER and _syscall(_SYS_MEMBARRIER, register, 0, 0) == 0
        self.words[FENCED_WORD] = int(fenced)

    def wake(self) -> None:
        """Wake every waiter (the writer calls this when ``waiting`` is set)."""
        words = self.words
        # Clear before the bump: a waiter whose flag this erases loaded signal before the
        # bump, so its FUTEX_WAIT cannot sleep through the wake below (pairs with the
        # signal load, then waiting store, in wait_until).
        words[WAITING_WORD] = 0
        # A sequentially consistent read-modify-write: the clear above (and a remover's GONE
        # mark before it) is seen before the bump on every CPU, and two bumps that race (the
        # writer's and a remover's) are never one. The futex word is the low 32 bits.
        self._view.fetch_add_u32(SIGNAL_WORD * 8, 1, SEQ_CST)
        _syscall(_SYS_FUTEX, ctypes.c_void_p(self.address), _FUTEX_WAKE, _WAKE_ALL, None, None, 0)

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
                raise AtomicLogError(f"waiting on the log's futex failed: {os.strerror(err)} (errno {err})")

    def close(self) -> None:
        """Unmap the region. Idempotent."""
        if self._region.closed:
            return
        self.words.release()
        self._view.close()
        self._region.close()


_spin_after = 0.0  # time.monotonic() before which waiters do not spin
_spin_pause = _SPIN_PAUSE  # how long the next spin that does not pay stops spinning


def _fence() -> bool:
    """A full barrier on every CPU that runs a registered writer (and on this one); False
    if the kernel refused it (a seccomp filter, a sandbox such as gVisor): then nothing was
    fenced, and the waiter must not rely on it."""
    return bool(_syscall(_SYS_MEMBARRIER, _MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0, 0) == 0)


def wait_until(
    region: WaitRegion | None,
    end: Callable[[], int],
    position: int,
    timeout: float | None,
    still: Callable[[], bool] | None = None,
) -> bool:
    """Block until ``end()`` passes ``position`` or ``timeout`` seconds pass; True if it
    did. Sleeps on the futex of ``region``, or polls with backoff where this process
    cannot map it (None).

    Every ``LOOK_EVERY`` seconds of waiting, ``still()`` (if given) says whether waiting
    still makes sense: False ends the wait (returning False); it may also raise.
    """

    def ready() -> bool:
        return end() > position

    if ready():
        return True
    now = time.monotonic()
    deadline = None if timeout is None else now + timeout
    check_at = now + LOOK_EVERY
    global _spin_after, _spin_pause
    if now >= _spin_after:  # the next records may be a moment away: look again, yielding
        began = time.perf_counter()
        while time.perf_counter() - began < _SPIN:
            os.sched_yield()  # lets a writer that shares this CPU run
            if ready():
                # Spinning pays while records come faster than one per _SPIN: then a
                # follower that yields keeps up without ever costing the writer a wake-up.
                if (end() - position) * _SPIN >= time.perf_counter() - began:
                    _spin_pause = _SPIN_PAUSE
                    return True
                break
        # It did not pay (a yield may have lent the CPU to another program for long): skip
        # spinning for a while, twice as long each time in a row.
        _spin_after = time.monotonic() + _spin_pause
        _spin_pause = min(2 * _spin_pause, _LONGEST_SPIN_PAUSE)
        if ready():
            return True
    nap = _FIRST_NAP
    while True:
        now = time.monotonic()
        if still is not None and now >= check_at:
            if not still():
                return False
            check_at = now + LOOK_EVERY
        slice_ = min(LOOK_EVERY, check_at - now) if still is not None else LOOK_EVERY
        left = slice_ if deadline is None else min(slice_, deadline - now)
        if left <= 0:
            if deadline is not None and deadline <= now:
                return False
            continue
        if region is None:  # no futex for us: poll, backing off
            time.sleep(min(nap, left))
            nap = min(nap * 2, _LONGEST_NAP)
        else:
            words = region.words
            signal = words[SIGNAL_WORD]  # before the store below: pairs with the writer's clear, then bump
            fence(ACQUIRE)  # keeps that load before the store below (aarch64 may reorder them)
            words[WAITING_WORD] = 1  # pairs with the writer's load of waiting after its count store
            # Orders the store above before the look below, against the writer's pair; if
            # there is no fence, a wake-up may be missed: sleep in short slices then.
            fenced = words[FENCED_WORD] != 0 and _fence()
            if ready():  # pairs with the writer's count store (Reader.slot's count load)
                return True
            region.sleep(signal, left if fenced else min(left, _UNFENCED_SLICE))
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

    __slots__ = ("__weakref__", "_end", "_lock", "_name", "_running", "_wait_beyond", "_waiters")

    def __init__(
        self, name: str, end: Callable[[], int], wait_beyond: Callable[[int, float | None], bool]
    ) -> None:
        self._name = name
        self._end = end
        self._wait_beyond = wait_beyond
        self._start_over()
        _wakers.add(self)

    def _start_over(self) -> None:
        """No waiters, no thread: a new waker, and the state of one in a forked child, which
        has none of its parent's threads (nor its event loops), whatever it inherited."""
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
                self._wait_beyond(lowest, LOOK_EVERY)
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


_wakers: weakref.WeakSet[AsyncWaker] = weakref.WeakSet()


def _start_over_in_child() -> None:
    for waker in list(_wakers):
        waker._start_over()


os.register_at_fork(after_in_child=_start_over_in_child)
