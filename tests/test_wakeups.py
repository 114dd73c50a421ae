"""No lost wake-ups: the wait protocol of _wait.py against writers at random moments.

ATOMIC_LOG_WAKEUPS sets how many times the long test's waiter sleeps and is woken
(default 20,000, about 10 s; 100,000 take about a minute).
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import random
import time
from collections.abc import Callable

import numpy as np
import pytest
from support import publish_later, wait_in_child

from atomic_log_shm import AtomicLog, LogNotFoundError, _wait

WAKEUPS = int(os.environ.get("ATOMIC_LOG_WAKEUPS", "20000"))
STAMPED = np.dtype([("ts", "<f8"), ("seq", "<i8")])
LOST = 0.25  # a lost wake-up ends only when the waiter's slice (0.5 s) runs out


def test_waiting_and_waking_make_no_system_call_but_the_futex(
    log_name: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The protocol orders the waiter's flag and the writer's count with atomics and fences
    # (no membarrier, which would interrupt the writer's CPU at every sleep): a waiter that
    # sleeps and is woken asks the kernel for FUTEX_WAIT and FUTEX_WAKE, nothing else.
    called: list[int] = []
    real = _wait._syscall
    monkeypatch.setattr(_wait, "_syscall", lambda number, *args: called.append(number) or real(number, *args))
    writer, log = AtomicLog.new_claimed(name=log_name(), retained=8, segment=4, dtype=np.int64)
    with log, writer:
        cursor = log.cursor("newest")
        assert cursor.wait(0.05, linger=0) is False
        ctx = mp.get_context("fork")
        writer.close()
        child = ctx.Process(target=publish_later, args=(log.name, 0.1))
        child.start()
        assert cursor.wait(5.0)
        child.join()
    assert called and set(called) == {_wait._SYS_FUTEX}


def test_a_waiter_whose_flag_the_writer_clears_cannot_sleep_through_that_wake(
    log_name: Callable[[], str],
) -> None:
    # Race (a): the writer saw `waiting` set (by an earlier waiter), then a waiter loads
    # signal and sets `waiting`, then the writer clears it. The clear comes before the
    # bump, so the waiter's FUTEX_WAIT on the signal it loaded returns at once.
    writer, log = AtomicLog.new_claimed(name=log_name(), retained=8, segment=4, dtype=np.int64)
    with log, writer:
        region = _wait.WaitRegion.open(log.name, log._reader.layout.nonce)
        assert region is not None
        signal = region.signal.load()  # the waiter's load
        region.waiting.store(1)  # the waiter's store, which the writer's clear erases
        region.wake()  # the writer: clear, bump, wake
        assert region.waiting.load() == 0
        began = time.monotonic()
        region.sleep(signal, 2.0)  # the waiter goes to sleep on what it loaded
        assert time.monotonic() - began < 1.0  # at once, not after the 2 s it would sleep
        region.close()


def _random_writer(name: str, count: int, go: mp.synchronize.Event) -> None:
    log = AtomicLog.attach(name)
    writer = log.try_claim_writer()
    assert writer is not None
    rng = random.Random(1234)
    go.wait()
    for i in range(count):
        pause = rng.choice((0.0, 5e-6, 20e-6, 60e-6, 150e-6, 400e-6))
        until = time.perf_counter() + pause
        while time.perf_counter() < until:
            pass
        writer.append((time.perf_counter(), i))
    writer.close()
    log.close()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_waiter_woken_many_times_at_random_moments_is_never_left_asleep(
    method: str, log_name: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_wait, "_SPIN", 0.0)  # sleep on the futex every time: no spinning
    count = WAKEUPS if method == "fork" else WAKEUPS // 10
    writer, log = AtomicLog.new_claimed(name=log_name(), retained=1 << 16, segment=1 << 14, dtype=STAMPED)
    writer.close()
    ctx = mp.get_context(method)
    go = ctx.Event()
    child = ctx.Process(target=_random_writer, args=(log.name, count, go))
    with log:
        cursor = log.cursor("oldest")
        child.start()
        while not log.info().writer_active:
            time.sleep(0.01)
        go.set()
        seen = wakes = 0
        latest = 0.0
        while seen < count:
            assert cursor.wait(5.0), f"no record for 5 s after {seen} of {count}"
            wakes += 1
            now = time.perf_counter()
            for values in cursor.poll().arrays:
                assert values["seq"].tolist() == list(range(seen, seen + len(values)))
                seen += len(values)
                latest = max(latest, now - float(values["ts"][-1]))
        child.join(10)
        assert child.exitcode == 0
    # Many records were waited for, one by one (a slow machine, or one emulating another
    # CPU, finds several at a wake-up more often).
    assert wakes > count // 20
    assert latest < LOST, f"a record was observed {latest * 1e3:.0f} ms after its publication"


def test_a_follower_waiting_without_timeout_hears_the_log_was_unlinked(log_name: Callable[[], str]) -> None:
    writer, log = AtomicLog.new_claimed(name=log_name(), retained=8, segment=4, dtype=np.int64)
    reader = AtomicLog.attach(log.name)
    cursor = reader.cursor("newest")
    writer.close()
    began = time.monotonic()
    ctx = mp.get_context("fork")
    remover = ctx.Process(target=_remove_after, args=(log.name, 0.2))
    remover.start()
    with pytest.raises(LogNotFoundError):
        cursor.wait()
    assert time.monotonic() - began < 1.5
    remover.join()
    reader.close()
    log.close()


def _remove_after(name: str, delay: float) -> None:
    from atomic_log_shm import remove_log

    time.sleep(delay)
    remove_log(name)


def _replace_after(name: str, delay: float) -> None:
    from atomic_log_shm import remove_log

    time.sleep(delay)
    remove_log(name)
    AtomicLog.new(name=name, retained=8, segment=4, dtype=np.int64).close()


@pytest.mark.parametrize("method", ["fork", "spawn"])
@pytest.mark.parametrize("change", ["unlinked", "replaced"])
def test_a_follower_in_another_process_hears_the_log_is_gone(
    method: str, change: str, log_name: Callable[[], str]
) -> None:
    from atomic_log_shm import remove_log

    name = log_name()
    AtomicLog.new(name=name, retained=8, segment=4, dtype=np.int64).close()
    ctx = mp.get_context(method)
    outcome: mp.Queue[str] = ctx.Queue()
    child = ctx.Process(target=wait_in_child, args=(name, outcome))
    child.start()
    assert outcome.get(timeout=30) == "ready"
    time.sleep(0.1)
    remove_log(name)
    if change == "replaced":
        AtomicLog.new(name=name, retained=8, segment=4, dtype=np.int64).close()
    said = outcome.get(timeout=5)
    child.join(5)
    assert said.startswith("LogNotFoundError")
    assert float(said.split()[1]) < 1.0 + 0.1 + 0.5  # within 1 s of the change (+ the 0.1 s before it)


@pytest.mark.parametrize("change", ["unlinked", "replaced"])
def test_an_asyncio_follower_hears_the_log_is_gone(change: str, log_name: Callable[[], str]) -> None:
    name = log_name()
    AtomicLog.new(name=name, retained=8, segment=4, dtype=np.int64).close()
    reader = AtomicLog.attach(name)
    target = _remove_after if change == "unlinked" else _replace_after
    changer = mp.get_context("fork").Process(target=target, args=(name, 0.2))

    async def follow() -> float:
        cursor = reader.cursor("newest")
        changer.start()
        began = time.monotonic()
        with pytest.raises(LogNotFoundError):
            await cursor.wait_async()
        return time.monotonic() - began

    assert asyncio.run(follow()) < 0.2 + 1.0 + 0.3
    changer.join()
    reader.close()


def test_wait_can_return_when_the_writer_lets_go(log_name: Callable[[], str]) -> None:
    writer, log = AtomicLog.new_claimed(name=log_name(), retained=8, segment=4, dtype=np.int64)
    with log:
        cursor = log.cursor("newest")
        ctx = mp.get_context("fork")
        writer.close()
        holder = ctx.Process(target=_hold_claim, args=(log.name, 0.3))
        holder.start()
        while not log.info().writer_active:
            time.sleep(0.01)
        began = time.monotonic()
        assert cursor.wait(10.0, until_writer_gone=True) is False
        assert 0.2 < time.monotonic() - began < 0.3 + 1.0
        assert not log.info().writer_active
        holder.join()
        assert cursor.wait(0.05) is False  # without asking, wait() waits out its timeout


def _hold_claim(name: str, seconds: float) -> None:
    log = AtomicLog.attach(name)
    writer = log.try_claim_writer()
    assert writer is not None
    time.sleep(seconds)
    writer.close()


def _wait_for_skip(name: str, start: int, ready: mp.synchronize.Event, out: mp.queues.Queue[object]) -> None:
    cursor = AtomicLog.attach(name).cursor(start)
    ready.set()
    woke = cursor.wait(timeout=10)
    out.put((woke, time.monotonic(), cursor.poll().missed))


def test_skip_to_wakes_a_follower_asleep_in_another_process_at_once(log_name: Callable[[], str]) -> None:
    """The skipped positions are news (a follower counts them as missed): the writer's
    skip_to() ends with the same publication step as an append, which wakes sleepers."""
    ctx = mp.get_context("fork")
    writer, log = AtomicLog.new_claimed(name=log_name(), retained=8, segment=4, dtype=np.int64)
    with log, writer:
        writer.extend(range(3))
        ready, out = ctx.Event(), ctx.Queue()
        child = ctx.Process(target=_wait_for_skip, args=(log.name, 3, ready, out))
        child.start()
        assert ready.wait(30)
        time.sleep(0.1)  # asleep on the futex by now
        skipped = time.monotonic()
        writer.skip_to(10)
        woke, at, missed = out.get(timeout=30)
        child.join(30)
        assert woke and missed == 7
        assert at - skipped < LOST, f"woken {at - skipped:.3f} s after the skip: its slice ran out"


def test_a_child_forked_while_the_async_waker_runs_waits_asynchronously_too(
    log_name: Callable[[], str],
) -> None:
    """The parent's waker thread is not in the child (threads do not survive fork): the
    child's wait_async() must start its own and wake when a record comes."""
    import threading

    writer, log = AtomicLog.new_claimed(name=log_name(), retained=8, segment=4, dtype=np.int64)
    with log, writer:
        cursor = log.cursor("newest")
        in_parent = threading.Thread(target=lambda: asyncio.run(cursor.wait_async(30)), daemon=True)
        in_parent.start()
        waker = log._reader._waiter
        deadline = time.monotonic() + 10
        while (waker is None or not waker._running) and time.monotonic() < deadline:
            time.sleep(0.01)
            waker = log._reader._waiter
        assert waker is not None and waker._running
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - reports through the pipe
            status = b"?"
            try:
                began = time.monotonic()
                woke = asyncio.run(cursor.wait_async(3.0))
                status = b"%d %.3f" % (woke, time.monotonic() - began)
            except BaseException as exc:
                status = repr(exc).encode()
            finally:
                os.write(write, status)
                os._exit(0)
        os.close(write)
        time.sleep(0.3)
        writer.append(1)  # wakes the parent's waiter, and must wake the child's
        woke, took = os.read(read, 200).split()
        os.close(read)
        os.waitpid(pid, 0)
        in_parent.join(30)
        assert woke == b"1" and float(took) < 2.5, (woke, took)
