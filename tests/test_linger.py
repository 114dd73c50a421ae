"""Cursor.wait()'s linger: a follower that a fast writer keeps ahead of takes its records in
batches instead of spinning through them, and nobody else ever lingers.

The pauses are taken from a stand-in for time.sleep, and where a test needs a follower to
linger, the clock is a stand-in too (``clock``): so nothing here depends on how fast the
machine runs a round, but the one test that runs a real writer in another process.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing as mp
import time
from collections.abc import Iterator

import numpy as np
import pytest

from atomic_log_shm import AtomicLog, InvalidArgumentError, _wait


@pytest.fixture
def pauses(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """The pauses wait() takes, in order, without taking them."""
    taken: list[float] = []
    monkeypatch.setattr(_wait.time, "sleep", taken.append)  # the time module: _reader's too

    async def no_sleep(seconds: float) -> None:
        taken.append(seconds)

    monkeypatch.setattr(_wait.asyncio, "sleep", no_sleep)
    yield taken


TICK = 50e-6  # what the clock advances per reading (``clock``)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """time.monotonic advances TICK per reading, however long the machine takes.

    With the real clock, whether a follower lingers depends on how long its round took: a
    round of over 1 ms (a busy machine) leaves no linger, and one of a few µs (an idle fast
    one) makes 100 records look like a rate that would fill a quarter of the window in the
    pause. Here a round is the few readings it makes: 100 records in 50 to 500 µs are
    200,000 to 2,000,000 a second, fast enough to linger, and the window is safe."""
    readings = itertools.count(1000.0, TICK)
    monkeypatch.setattr(_wait.time, "monotonic", lambda: next(readings))  # _reader's too


def test_a_follower_kept_behind_by_a_fast_writer_lingers_after_a_streak(
    pauses: list[float], clock: None
) -> None:
    writer, log = AtomicLog.new_claimed(retained=1 << 16, segment=1 << 12, dtype=np.int64)
    with log, writer:
        cursor = log.cursor("newest")
        for round_ in range(_wait.STREAK + 4):
            writer.extend(np.arange(100))  # 100 records at once: far faster than 100,000 a second
            assert cursor.wait(1.0)
            assert len(cursor.poll()) == 100
            if round_ < _wait.STREAK:
                assert pauses == []
        assert len(pauses) == 4  # each wait after the streak, until 1 ms after the last returned
        assert all(0 < p < _wait.LINGER for p in pauses)


def test_linger_zero_never_pauses(pauses: list[float]) -> None:
    writer, log = AtomicLog.new_claimed(retained=1 << 16, segment=1 << 12, dtype=np.int64)
    with log, writer:
        cursor = log.cursor("newest")
        for _ in range(3 * _wait.STREAK):
            writer.extend(np.arange(100))
            assert cursor.wait(1.0, linger=0)
            cursor.poll()
        assert pauses == []


def test_a_paced_follower_never_lingers(pauses: list[float]) -> None:
    """One record per wait, each after more than 10 µs: the F case, never held."""
    writer, log = AtomicLog.new_claimed(retained=1 << 16, segment=1 << 12, dtype=np.int64)
    with log, writer:
        cursor = log.cursor("newest")
        for i in range(3 * _wait.STREAK):
            _busy(0.0002)  # time.sleep is the stand-in here
            writer.append(i)
            assert cursor.wait(1.0)
            cursor.poll()
        assert pauses == []


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_a_wait_that_sleeps_ends_the_streak(pauses: list[float]) -> None:
    writer, log = AtomicLog.new_claimed(retained=1 << 16, segment=1 << 12, dtype=np.int64)
    with log, writer:
        cursor = log.cursor("newest")
        for _ in range(_wait.STREAK):  # one short of lingering
            writer.extend(np.arange(100))
            cursor.wait(1.0)
            cursor.poll()
        assert not cursor.wait(0.0)  # nothing there: the streak is over
        writer.extend(np.arange(100))
        cursor.wait(1.0)
        assert pauses == []


def test_lingering_never_risks_the_window(pauses: list[float]) -> None:
    """A small window: holding the follower could let the writer overrun it, so it is not held."""
    writer, log = AtomicLog.new_claimed(retained=256, segment=64, dtype=np.int64)
    with log, writer:
        cursor = log.cursor("newest")
        for _ in range(3 * _wait.STREAK):
            writer.extend(np.arange(100))
            cursor.wait(1.0)
            assert cursor.poll().missed == 0
        assert pauses == []


def test_lingering_never_outlasts_the_timeout(pauses: list[float]) -> None:
    writer, log = AtomicLog.new_claimed(retained=1 << 16, segment=1 << 12, dtype=np.int64)
    with log, writer:
        cursor = log.cursor("newest")
        for _ in range(_wait.STREAK + 3):
            writer.extend(np.arange(100))
            assert cursor.wait(0.0002, linger=0.5)
            cursor.poll()
        assert all(p <= 0.0002 for p in pauses)


def test_wait_async_lingers_as_wait_does(pauses: list[float], clock: None) -> None:
    writer, log = AtomicLog.new_claimed(retained=1 << 16, segment=1 << 12, dtype=np.int64)

    async def follow() -> None:
        cursor = log.cursor("newest")
        for round_ in range(_wait.STREAK + 2):
            writer.extend(np.arange(100))
            assert await cursor.wait_async(1.0)
            cursor.poll()
            if round_ < _wait.STREAK:
                assert pauses == []

    with log, writer:
        asyncio.run(follow())
        assert len(pauses) == 2  # as above
        assert all(0 < p < _wait.LINGER for p in pauses)


@pytest.mark.parametrize("bad", [-1, "1", float("nan"), True, [1]])
def test_bad_linger_and_timeout_raise_invalid_argument(bad: object) -> None:
    writer, log = AtomicLog.new_claimed(retained=64, segment=16, dtype=np.int64)
    with log, writer:
        writer.append(1)
        cursor = log.cursor("oldest")
        snap = log.snapshot()
        with pytest.raises(InvalidArgumentError, match="linger"):
            cursor.wait(1.0, linger=bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgumentError, match="timeout"):
            cursor.wait(bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgumentError, match="timeout"):
            snap.wait(bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgumentError, match="timeout"):
            asyncio.run(cursor.wait_async(bad))  # type: ignore[arg-type]
        assert len(cursor.poll()) == 1  # nothing lost


def _copying_follower(name: str, results: mp.Queue) -> None:  # type: ignore[type-arg]
    log = AtomicLog.attach(name)
    with log:
        cursor = log.cursor("oldest")
        polls = seen = 0
        while True:
            cursor.wait(5.0)
            batch = cursor.poll()
            polls += 1
            seen += len(batch)
            if batch.arrays and batch.arrays[-1][-1] < 0:  # the writer's last record
                break
        results.put((polls, seen, cursor.position))


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_follower_of_a_fast_writer_in_another_process_sees_everything_in_fewer_polls(method: str) -> None:
    n = 300_000
    writer, log = AtomicLog.new_claimed(retained=1 << 20, segment=1 << 16, dtype=np.int64)
    ctx = mp.get_context(method)
    results = ctx.Queue()
    with log, writer:
        proc = ctx.Process(target=_copying_follower, args=(log.name, results))
        proc.start()
        try:
            for i in range(n):
                writer.append(i)
            writer.append(-1)
            polls, seen, position = results.get(timeout=60)
        finally:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
    assert (seen, position) == (n + 1, n + 1)  # nothing missed, nothing twice
    assert polls < n // 50  # batches, not a record or two at a time (15,000 and more without lingering)


@pytest.mark.parametrize(
    ("waiting", "since", "timeout", "expected"),
    [
        (100, 20e-6, None, 1e-3 - 20e-6),  # 5 M/s, far from the window: the rest of the ms
        (100, 20e-6, 0.0002, 0.0002),  # never past the timeout
        (100, 2e-3, None, 0.0),  # the round took longer than linger: nothing left to wait
        (5, 100e-6, None, 0.0),  # 50,000 a second: a paced writer, never held
        (10_000, 20e-6, None, 0.0),  # 500 M/s: the window (65,536) would fill in the pause
    ],
)
def test_how_long_a_follower_lingers(
    waiting: int, since: float, timeout: float | None, expected: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_wait.time, "monotonic", lambda: 100.0 + since)
    pace = _wait.Pace()
    pace.returned = 100.0
    pace.streak = _wait.STREAK  # this wait makes the streak long enough
    assert pace.pause(waiting, _wait.LINGER, timeout, 1 << 16) == pytest.approx(expected)
    pace.streak = _wait.STREAK - 1  # one short of a streak: never
    assert pace.pause(waiting, _wait.LINGER, timeout, 1 << 16) == 0.0


def test_a_snapshot_kept_behind_by_a_fast_writer_lingers_too(pauses: list[float], clock: None) -> None:
    writer, log = AtomicLog.new_claimed(retained=1 << 16, segment=1 << 12, dtype=np.int64)
    with log, writer:
        snap = log.snapshot()
        for round_ in range(_wait.STREAK + 4):
            writer.extend(np.arange(100))
            assert snap.wait(1.0)
            snap.refresh()
            if round_ < _wait.STREAK:
                assert pauses == []
        assert len(pauses) == 4  # as for a cursor
        assert all(0 < p < _wait.LINGER for p in pauses)
        writer.extend(np.arange(100))
        assert snap.wait(1.0, linger=0)  # turned off for this wait
        assert len(pauses) == 4


def test_short_budgets_look_on_a_clock_every_process_shares_and_long_ones_on_their_own() -> None:
    """A budget below ``SHARED_BELOW`` looks at the next tick of a clock of that period
    that every process computes alike (in ``PHASES`` waves, by pid): never later than one
    period, and the same instant for any moment between two ticks. A long budget looks one
    period after the moment it is given."""
    from atomic_log_shm._wait import PHASES, SHARED_BELOW, tick_after

    for latency in (1e-3, 0.05, 0.1, SHARED_BELOW / 2):
        for moment in (0.0, 12.345, 1e6 + 0.01, 1e6 + latency * 3):
            tick = tick_after(moment, latency)
            assert moment < tick <= moment + latency
            # Any moment up to just before that tick gives the same tick: the clock is shared.
            assert tick_after(tick - latency * 0.999, latency) == pytest.approx(tick)
            assert tick_after(tick, latency) == pytest.approx(tick + latency)
            phase = (tick % latency) / latency * PHASES
            assert abs(phase - round(phase)) < 1e-6 * PHASES
    for latency in (SHARED_BELOW, 1.0, 5.0):
        assert tick_after(12.345, latency) == 12.345 + latency
