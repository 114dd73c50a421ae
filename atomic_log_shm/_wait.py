"""Blocking until something is published, without busy-polling: a futex in shared memory,
or, for followers with a freshness budget, a timer the writer never hears of.

Each log has a small wait region ``/NAME@<nonce>.wait``, the one region that readers may
write, and only readers that wait do (and only readers with write access to the log: the
region has exactly the log's mode, since write access is enough to truncate it and so to
kill the writer with SIGBUS; readers with read access only poll, see ``wait_until``):

    offset  size  field     written by                          read by
    0       8     signal    writer or remover, when it wakes    futex (low 32 bits), waiters
                            waiters (an atomic add)
    8       8     waiting   waiters (1), writer (0, when waking) writer, after each publication
    16      48    reserved (zero)

Waiter (``wait_until``): look at the log, yielding the CPU, for up to ``_SPIN`` (a follower
that keeps up with a fast writer finds the next records here, costing the writer nothing;
``_Spin`` skips it for a while after one that did not pay); then, in slices of at most
``LOOK_EVERY``: load ``signal``; store ``waiting = 1`` (sequentially consistent); a full
fence; look at the log again (return if something arrived); ``FUTEX_WAIT(signal, loaded
value, slice)``. Writer, after each publication (``Writer._publish``): the count's store
is sequentially consistent; then load ``waiting`` (sequentially consistent); if set,
``wake()``: store ``waiting = 0``, add 1 to ``signal`` (sequentially consistent),
``FUTEX_WAKE`` every waiter. A writer nobody waits on pays one load per publication; each
time waiters go to sleep costs it one system call.

Why no wake-up is lost (docs/design.md, "Waiting: why no wake-up is lost", has it in full):

* the publication against the waiter's last look: the writer stores the count, then loads
  ``waiting``; the waiter stores ``waiting``, then loads the count. Each side's store and
  load are kept in order (the writer's by their sequential consistency, the waiter's by its
  full fence), so both cannot miss the other: either the waiter's look sees the count, or
  the writer's load sees ``waiting``.
* the writer's clear against a waiter that sets ``waiting`` meanwhile: the writer clears
  *before* it bumps ``signal`` (an atomic add that keeps the clear before it); a waiter whose
  store of 1 the clear erased loaded ``signal`` before that store (its store is a release:
  the load stays before it), so before the bump: its FUTEX_WAIT fails at once or is woken by
  this wake, and it sets ``waiting`` again before it sleeps again.

A follower with a freshness budget (``latency`` > 0, ``paced``) never sets ``waiting``: it
looks at the log once per ``latency`` (a short budget on a clock every process shares, so
that followers with one budget wake together: ``tick_after``), sleeping in between on a
timer, and returns at most once per period, taking what came as one batch. The writer does
nothing for it.

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
from collections.abc import Callable, Generator

from . import _shm
from ._errors import AccessDeniedError, AtomicLogError, InvalidArgumentError
from ._platform import SEQ_CST, SYSCALLS, AtomicView, fence

SIZE = 64
SIGNAL_WORD = 0
WAITING_WORD = 1

_SYS_FUTEX = SYSCALLS.futex
_FUTEX_WAIT = 0
_FUTEX_WAKE = 1
_WAKE_ALL = 0x7FFFFFFF
_SPIN = 30e-6  # how long a waiter looks again (yielding) before it asks to be woken
_SPIN_PAUSE = 0.01  # after a spin that did not pay, how long waiters of this process skip it,
_LONGEST_SPIN_PAUSE = 1.0  # doubling up to this while spins keep not paying
LOOK_EVERY = 0.5
"""Seconds, at most, between a follower's looks at whether its log (or its writer) is still
there, while it finds nothing new: the longest a waiter sleeps on the futex, how often it
checks ``still()``, how often a snapshot's ``poll()`` opens the header's name."""
_FIRST_NAP = 50e-6  # polling fallback
_LONGEST_NAP = 2e-3

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


# -- arguments ---------------------------------------------------------------------------------


def check_seconds(value: object, what: str = "timeout") -> float | None:
    """``value`` as seconds (None stays None); InvalidArgumentError unless a number >= 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise InvalidArgumentError(f"{what} must be None or a number of seconds >= 0, not {value!r}")
    return float(value)


def check_linger(value: object) -> float:
    """``linger`` as seconds; InvalidArgumentError unless a number >= 0 (None is 0)."""
    return check_seconds(value, "linger") or 0.0


def check_latency(value: object) -> float:
    """``latency`` as seconds; InvalidArgumentError unless a number >= 0 (None is 0)."""
    return check_seconds(value, "latency") or 0.0


# -- one follower's pace -----------------------------------------------------------------------

LINGER = 1e-3
"""The default ``linger`` of ``wait()``: how long after its previous return a follower that
keeps finding records already waiting is held, to take them in bigger batches (seconds)."""
STREAK = 8  # waits in a row that found records already there before a wait lingers
FAST = 1e-5  # ... and only while they come faster than one per FAST seconds
WINDOW_SHARE = 4  # lingering never lets more than 1/WINDOW_SHARE of the window arrive


class Pace:
    """One follower's recent waits (a cursor's, a snapshot's): how many in a row found
    records already there, and when the last one returned. In-process only."""

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


# -- the wait region ---------------------------------------------------------------------------


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

    __slots__ = ("_region", "_view", "address", "signal", "waiting")

    def __init__(self, region: mmap.mmap) -> None:
        self._region = region
        self._view = view = AtomicView(region)  # keeps the map exported: its address stays valid
        self.address = view.address
        self.signal = view.cell_u32(SIGNAL_WORD * 8)  # the futex word: the low half, little-endian
        self.waiting = view.cell_u64(WAITING_WORD * 8)

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

    def wake(self) -> None:
        """Wake every waiter (the writer calls this when ``waiting`` is set; a remover after
        its gone mark)."""
        # Clear before the bump: a waiter whose flag this erases loaded signal before the
        # bump, so its FUTEX_WAIT cannot sleep through the wake below (pairs with the
        # signal load, then waiting store, in sleep_unless()). The bump is a sequentially
        # consistent read-modify-write: the clear (and a remover's GONE mark) is seen before
        # it on every CPU, and two bumps that race (a writer's, a remover's) are two.
        self.waiting.store(0, SEQ_CST)
        self.signal.fetch_add(1, SEQ_CST)
        _syscall(_SYS_FUTEX, ctypes.c_void_p(self.address), _FUTEX_WAKE, _WAKE_ALL, None, None, 0)

    def sleep_unless(self, ready: Callable[[], bool], seconds: float) -> bool:
        """Ask to be woken, then sleep until woken or ``seconds`` pass, unless ``ready()``
        already: True if it was (see the module docstring for why no wake-up is lost)."""
        signal = self.signal.load(SEQ_CST)  # before the store below: pairs with the writer's clear, then bump
        # Sequentially consistent, so a release: the load above stays before it. Pairs with
        # the writer's load of waiting after its count store (Writer._publish).
        self.waiting.store(1, SEQ_CST)
        fence(SEQ_CST)  # the store above before the look below: pairs with the writer's store, then load
        if ready():
            return True
        self.sleep(signal, seconds)
        return False

    def sleep(self, signal: int, seconds: float) -> None:
        """Sleep until woken, ``seconds`` pass, or the futex word no longer holds ``signal``."""
        whole = int(seconds)
        timeout = _Timespec(whole, int((seconds - whole) * 1e9))
        address = ctypes.c_void_p(self.address)
        expected = ctypes.c_uint32(signal)
        if _syscall(_SYS_FUTEX, address, _FUTEX_WAIT, expected, ctypes.byref(timeout), None, 0) < 0:
            err = ctypes.get_errno()
            if err not in (errno.EAGAIN, errno.ETIMEDOUT, errno.EINTR):
                raise AtomicLogError(f"waiting on the log's futex failed: {os.strerror(err)} (errno {err})")

    def close(self) -> None:
        """Unmap the region. Idempotent."""
        if self._region.closed:
            return
        self._view.close()
        self._region.close()


# -- waiting -----------------------------------------------------------------------------------


class _Spin:
    """The adaptive spin of this process's waiters: look again, yielding the CPU, for up to
    ``_SPIN`` before asking to be woken, while that pays."""

    __slots__ = ("after", "pause")

    def __init__(self) -> None:
        self.start_over()

    def start_over(self) -> None:
        """Spin at the next wait, as if no spin had been found not to pay."""
        self.after = 0.0  # time.monotonic() before which waiters do not spin
        self.pause = _SPIN_PAUSE  # how long the next spin that does not pay stops spinning

    def found(self, ready: Callable[[], bool], waiting: Callable[[], int]) -> bool:
        """Spin (unless spinning stopped paying lately); True if ``ready()`` came true.
        ``waiting()`` is how many records are there."""
        if time.monotonic() < self.after:
            return False
        began = time.perf_counter()
        while time.perf_counter() - began < _SPIN:
            os.sched_yield()  # lets a writer that shares this CPU run
            if ready():
                # Spinning pays while records come faster than one per _SPIN: then a
                # follower that yields keeps up without ever costing the writer a wake-up.
                if waiting() * _SPIN >= time.perf_counter() - began:
                    self.pause = _SPIN_PAUSE
                    return True
                break
        # It did not pay (a yield may have lent the CPU to another program for long): skip
        # spinning for a while, twice as long each time in a row.
        self.after = time.monotonic() + self.pause
        self.pause = min(2 * self.pause, _LONGEST_SPIN_PAUSE)
        return ready()


_spin = _Spin()


class _Clock:
    """A wait's timeout, and its looks at ``still()`` every ``LOOK_EVERY`` seconds."""

    __slots__ = ("deadline", "look_at", "still")

    def __init__(self, timeout: float | None, still: Callable[[], bool] | None) -> None:
        now = time.monotonic()
        self.deadline = None if timeout is None else now + timeout
        self.look_at = now + LOOK_EVERY
        self.still = still

    def left(self, longest: float) -> float | None:
        """How long the wait may sleep now, at most ``longest``, after a look at ``still()``
        if one is due; None once it is over (its timeout passed, or ``still()`` said no).
        ``still()`` may also raise."""
        now = time.monotonic()
        if self.still is not None:
            if now >= self.look_at:
                if not self.still():
                    return None
                self.look_at = now + LOOK_EVERY
            longest = min(longest, self.look_at - now)
        if self.deadline is not None:
            if now >= self.deadline:
                return None
            longest = min(longest, self.deadline - now)
        return longest


def wait_until(
    region: WaitRegion | None,
    end: Callable[[], int],
    position: int,
    timeout: float | None,
    still: Callable[[], bool] | None = None,
) -> bool:
    """Block until ``end()`` passes ``position`` or ``timeout`` seconds pass; True if it
    did. For a caller that has just found that it has not: spins a little first
    (``_Spin``), then sleeps on the futex of ``region``, or polls with backoff where this
    process cannot map it (None). Every ``LOOK_EVERY`` seconds, ``still()`` (if given) says
    whether waiting still makes sense: False ends the wait (returning False); it may also
    raise."""

    def ready() -> bool:
        return end() > position

    if _spin.found(ready, lambda: end() - position):
        return True
    clock = _Clock(timeout, still)
    nap = _FIRST_NAP
    while True:
        left = clock.left(LOOK_EVERY)
        if left is None:
            return False
        if region is None:  # no futex for us: poll, backing off
            time.sleep(min(nap, left))
            nap = min(nap * 2, _LONGEST_NAP)
        elif region.sleep_unless(ready, left):
            return True
        if ready():
            return True


def paced(
    end: Callable[[], int],
    position: int,
    timeout: float | None,
    latency: float,
    pace: Pace,
    still: Callable[[], bool] | None = None,
) -> Generator[float, None, bool]:
    """A follower's wait with a freshness budget of ``latency`` seconds, as the seconds to
    sleep between its looks (the caller sleeps them: ``time.sleep`` or ``asyncio.sleep``);
    returns what ``wait_until`` would. It never asks to be woken, so the writer does nothing
    for it. It looks at the log once per ``latency`` (when: ``tick_after``), and returns at
    most once per period (none before the look after its previous return,
    ``pace.returned``), so a record it finds is at most about ``latency`` old and a busy log
    wakes it about once per ``latency``."""
    clock = _Clock(timeout, still)
    while True:
        now = time.monotonic()
        if end() > position:
            due = tick_after(pace.returned, latency) - now
            if due > 0 and clock.deadline is not None:
                due = min(due, clock.deadline - now)
            if due > 0:
                yield due
            return True
        left = clock.left(tick_after(now, latency) - now)
        if left is None:
            return False
        yield left


SHARED_BELOW = 0.25  # budgets shorter than this (seconds) wake on the shared clock ...
PHASES = 2  # ... in this many waves, a process in each by its pid


def tick_after(moment: float, latency: float) -> float:
    """When a follower with a budget of ``latency`` seconds looks next after ``moment``
    (seconds of CLOCK_MONOTONIC).

    A short budget wakes often, and a wake-up costs a process far more CPU when the machine
    wakes for it alone: such followers look on a clock shared by every process of the host
    (multiples of ``latency``, which every process computes alike from CLOCK_MONOTONIC), in
    ``PHASES`` waves a fraction of a period apart. A long budget wakes rarely, and hundreds
    of followers waking at one instant would hold the cores for milliseconds: each such
    follower looks ``latency`` after ``moment``."""
    if latency >= SHARED_BELOW:
        return moment + latency
    shift = os.getpid() % PHASES * latency / PHASES
    tick = ((moment - shift) // latency + 1) * latency + shift
    return tick if tick > moment else tick + latency  # a product rounded down onto moment


def sleeping(wait: Generator[float, None, bool]) -> bool:
    """Run ``paced()`` with ``time.sleep``."""
    try:
        while True:
            time.sleep(next(wait))
    except StopIteration as done:
        result: bool = done.value
        return result


async def sleeping_async(wait: Generator[float, None, bool]) -> bool:
    """Run ``paced()`` with ``asyncio.sleep``: the event loop never blocks."""
    try:
        while True:
            await asyncio.sleep(next(wait))
    except StopIteration as done:
        result: bool = done.value
        return result


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
    """A forked child starts with its own waiting state: no waker threads (it has none of
    its parent's), and a spin that has not yet been found not to pay."""
    for waker in list(_wakers):
        waker._start_over()
    _spin.start_over()


os.register_at_fork(after_in_child=_start_over_in_child)
