"""Following a log: positions, loss detection, cursors, waiting, and the copy helpers."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import stat
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import SHM, become, other_user, publish_later, regions_of

from atomic_log_shm import AtomicLog, InvalidArgumentError, LogNotFoundError


def flat(arrays) -> list[int]:
    return [int(v) for a in arrays for v in a]


def test_positions_count_records_since_the_log_was_made() -> None:
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=np.int64)
    with log, writer:
        snap = log.snapshot()
        assert (snap.start, snap.end) == (0, 0)
        writer.extend(range(30))
        snap.refresh()
        # 30 records, segments 5, 6, 7 retained: positions 20..29
        assert (snap.start, snap.end, len(snap)) == (20, 30, 10)
        assert [(c.sequence, c.start) for c in snap.chunks()] == [(5, 20), (6, 24), (7, 28)]
        for chunk in snap.chunks():
            assert chunk.values.tolist() == list(range(chunk.start, chunk.start + len(chunk.values)))


def test_positions_continue_across_writer_handover() -> None:
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=np.int64)
    with log:
        writer.extend(range(6))
        writer.close()
        with log.try_claim_writer() as second:
            second.extend(range(6, 11))
        snap = log.snapshot()
        assert snap.end == 11
        assert [int(v) for v in snap] == list(range(11 - len(snap), 11))


def test_a_reader_that_falls_behind_reports_exactly_what_it_missed() -> None:
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=np.int64)  # 3 segments retained
    with log, writer:
        writer.extend(range(10))
        snap = log.snapshot()
        assert (snap.start, snap.end, snap.missed) == (0, 10, 0)
        writer.extend(range(10, 13))
        snap.refresh()  # kept up
        assert snap.missed == 0
        writer.extend(range(13, 100))  # window now 88..99; the view ended at 13
        snap.refresh()
        assert (snap.start, snap.end) == (88, 100)
        assert snap.missed == 88 - 13
        snap.refresh()
        assert snap.missed == 0  # missed describes the last refresh only


def test_cursor_poll_returns_new_records_once_as_views() -> None:
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=np.int64)
    with log, writer:
        writer.extend(range(5))
        cursor = log.cursor()
        first = cursor.poll()
        assert flat(first.arrays) == [0, 1, 2, 3, 4] and first.missed == 0 and first.start == 0
        assert all(not a.flags.writeable and not a.flags.owndata for a in first.arrays)
        assert cursor.poll().arrays == []
        writer.extend(range(5, 11))
        second = cursor.poll()
        assert flat(second.arrays) == list(range(5, 11)) and second.start == 5
        assert len(second.arrays) == 2  # one per segment touched
        assert cursor.position == 11


def test_cursor_from_newest_and_from_a_position() -> None:
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=np.int64)
    with log, writer:
        writer.extend(range(7))
        newest = log.cursor("newest")
        middle = log.cursor(3)
        writer.append(7)
        assert flat(newest.poll().arrays) == [7]
        assert flat(middle.poll().arrays) == [3, 4, 5, 6, 7]
        with pytest.raises(ValueError):
            log.cursor("latest")
        with pytest.raises(ValueError):
            log.cursor(-1)


def test_cursor_that_falls_behind_reports_missed_and_resumes_at_the_oldest() -> None:
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=np.int64)
    with log, writer:
        cursor = log.cursor()
        writer.extend(range(3))
        assert flat(cursor.poll().arrays) == [0, 1, 2]
        writer.extend(range(3, 50))
        poll = cursor.poll()
        assert poll.missed == 40 - 3 and poll.start == 40
        assert flat(poll.arrays) == list(range(40, 50))


def test_latest_and_to_numpy_copy() -> None:
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=np.int64)
    with log, writer:
        snap = log.snapshot()
        assert snap.to_numpy().shape == (0,) and snap.latest(3).shape == (0,)
        writer.extend(range(10))
        snap.refresh()
        whole = snap.to_numpy()
        assert whole.tolist() == list(range(10)) and whole.flags.writeable
        assert snap.latest(5).tolist() == [5, 6, 7, 8, 9]
        assert snap.latest(100).tolist() == list(range(10))
        assert snap.latest(0).tolist() == []
        with pytest.raises(ValueError):
            snap.latest(-1)


def test_wait_times_out_when_nothing_is_published() -> None:
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=np.int64)
    with log, writer:
        cursor = log.cursor("newest")
        started = time.monotonic()
        assert cursor.wait(timeout=0.05) is False
        assert time.monotonic() - started >= 0.05
        writer.append(1)
        assert cursor.wait(timeout=0) is True


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_a_waiter_is_woken_by_a_writer_in_another_process(method: str) -> None:
    with AtomicLog.new(retained=8, segment=4, dtype=np.int64) as log:
        cursor = log.cursor("newest")
        child = mp.get_context(method).Process(target=publish_later, args=(log.name, 0.2))
        child.start()
        try:
            assert cursor.wait(timeout=30)
            assert flat(cursor.poll().arrays) == [42]
        finally:
            child.join(timeout=30)
            if child.is_alive():
                child.kill()
                child.join()
        assert child.exitcode == 0


def test_a_waiter_uses_no_cpu_while_it_waits() -> None:
    with AtomicLog.new(retained=8, segment=4, dtype=np.int64) as log:
        cursor = log.cursor("newest")
        cpu = time.process_time()
        assert cursor.wait(timeout=0.5) is False
        assert time.process_time() - cpu < 0.05  # a busy-poll would burn ~0.5 s


def _wait_forever(name: str, ready) -> None:
    cursor = AtomicLog.attach(name).cursor("newest")
    ready.set()
    cursor.wait()


def test_a_killed_waiter_costs_the_writer_one_wake_up_then_nothing() -> None:
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=np.int64)
    with log, writer:
        ctx = mp.get_context("spawn")
        ready = ctx.Event()
        child = ctx.Process(target=_wait_forever, args=(log.name, ready))
        child.start()
        try:
            assert ready.wait(30)
            deadline = time.monotonic() + 30
            while not writer._waiting() and time.monotonic() < deadline:
                time.sleep(0.001)  # until the child announced it waits
            assert writer._waiting() == 1
        finally:
            child.kill()
            child.join(30)
        writer.append(1)  # wakes nobody: the writer stops asking
        assert writer._waiting() == 0
        writer.append(2)
        assert writer._waiting() == 0


def _wait_and_report(name: str, ready, woke) -> None:
    cursor = AtomicLog.attach(name).cursor("newest")
    ready.set()
    if cursor.wait(timeout=30):
        woke.put(time.perf_counter())


def test_many_waiters_in_other_processes_are_all_woken() -> None:
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=np.int64)
    with log, writer:
        ctx = mp.get_context("fork")
        woke = ctx.Queue()
        readies = [ctx.Event() for _ in range(3)]
        children = [ctx.Process(target=_wait_and_report, args=(log.name, r, woke)) for r in readies]
        for child in children:
            child.start()
        try:
            assert all(r.wait(30) for r in readies)
            time.sleep(0.1)  # let them reach the futex
            writer.append(7)
            for _ in children:
                woke.get(timeout=30)
        finally:
            for child in children:
                child.join(30)
                if child.is_alive():
                    child.kill()
                    child.join()
        assert [c.exitcode for c in children] == [0, 0, 0]


def test_asyncio_waiters_share_one_thread_and_never_block_the_loop() -> None:
    import asyncio
    import threading

    writer, log = AtomicLog.new_claimed(retained=64, segment=8, dtype=np.int64)
    with log, writer:

        async def main() -> list[int]:
            cursors = [log.cursor("newest") for _ in range(5)]
            waits = [asyncio.ensure_future(c.wait_async(timeout=30)) for c in cursors]
            ticks = 0
            for _ in range(10):  # the loop keeps running while they wait
                await asyncio.sleep(0.01)
                ticks += 1
            wakers = [t for t in threading.enumerate() if t.name.startswith("atomic-log-shm waker")]
            assert len(wakers) == 1
            writer.append(5)
            assert all(await asyncio.gather(*waits))
            assert await cursors[0].wait_async(timeout=0.05)  # already something to poll
            assert await log.cursor("newest").wait_async(timeout=0.05) is False
            return [ticks] + [int(v) for a in cursors[0].poll().arrays for v in a]

        assert asyncio.run(main()) == [10, 5]


def test_follow_yields_batches_as_they_are_published() -> None:
    import asyncio

    writer, log = AtomicLog.new_claimed(retained=64, segment=8, dtype=np.int64)
    with log, writer:
        writer.extend(range(3))

        async def main() -> list[list[int]]:
            seen: list[list[int]] = []

            async def produce() -> None:
                for v in range(3, 6):
                    await asyncio.sleep(0.02)
                    writer.append(v)

            task = asyncio.ensure_future(produce())
            async for batch in log.follow():
                seen.append(flat(batch.arrays))
                if sum(map(len, seen)) >= 6:
                    break
            await task
            return seen

        seen = asyncio.run(asyncio.wait_for(main(), 30))
        assert [v for batch in seen for v in batch] == list(range(6))


def _write_range(name: str, start: int, stop: int) -> None:
    log = AtomicLog.attach(name)
    writer = log.try_claim_writer()
    assert writer is not None
    with writer:
        writer.extend(np.arange(start, stop))


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_a_cursor_that_falls_behind_a_writer_in_another_process_reports_the_exact_loss(method: str) -> None:
    ctx = mp.get_context(method)
    with AtomicLog.new(retained=8, segment=4, dtype=np.int64) as log:  # 3 segments of 4 retained
        cursor = log.cursor()

        def run(start: int, stop: int) -> None:
            child = ctx.Process(target=_write_range, args=(log.name, start, stop))
            child.start()
            child.join(30)
            if child.is_alive():
                child.kill()
                child.join()
            assert child.exitcode == 0

        run(0, 5)
        first = cursor.poll()
        assert (flat(first.arrays), first.missed) == ([0, 1, 2, 3, 4], 0)
        run(5, 103)  # positions 92..102 stay (segments 23, 24, 25); 5..91 go by unseen
        second = cursor.poll()
        assert second.missed == 92 - 5 and second.start == 92
        assert flat(second.arrays) == list(range(92, 103))
        assert cursor.position == 103


@settings(max_examples=60, deadline=None)
@given(
    retained=st.integers(1, 12),
    segment=st.integers(1, 5),
    steps=st.lists(st.tuples(st.integers(0, 30), st.booleans()), max_size=25),
)
def test_a_cursor_sees_every_position_once_or_counts_it_as_missed(
    retained: int, segment: int, steps: list[tuple[int, bool]]
) -> None:
    """Whatever the batches and however often it polls, a cursor hands out each position
    at most once, in order, and accounts for every other one in ``missed``."""
    writer, log = AtomicLog.new_claimed(retained=retained, segment=segment, dtype=np.int64)
    with log, writer:
        cursor = log.cursor()
        published = seen = missed = 0
        for size, poll in steps:
            writer.extend(np.arange(published, published + size))
            published += size
            if poll:
                batch = cursor.poll()
                values = flat(batch.arrays)
                assert values == list(range(batch.start, batch.start + len(values)))
                # it resumes where it stood, past exactly what it says it missed
                assert batch.start == seen + missed + batch.missed
                seen += len(values)
                missed += batch.missed
        batch = cursor.poll()
        seen += sum(len(a) for a in batch.arrays)
        missed += batch.missed
        assert seen + missed == published == cursor.position


def test_a_reader_of_another_user_waits_by_polling_and_cannot_truncate_the_wait_region(
    log_name: Callable[[], str],
) -> None:
    """Write access to the wait region is enough to truncate it, which would kill the writer
    (SIGBUS): it has exactly the log's mode, so another user with read access (a 0o644 log)
    cannot open it for writing, and its wait() polls instead, still seeing each record."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run the reader as another local user")
    uid = other_user()
    name = log_name()
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=np.int64, name=name, mode=0o644)
    with log, writer:
        (wait_region,) = [e for e in regions_of(name) if e.endswith(".wait")]
        assert stat.S_IMODE(os.stat(f"{SHM}/{wait_region}").st_mode) == 0o644
        ready_r, ready_w = os.pipe()
        done_r, done_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                become(uid)
                try:
                    os.truncate(f"{SHM}/{wait_region}", 0)
                    os.write(done_w, b"truncated!")
                except PermissionError:
                    pass
                reader = AtomicLog.attach(name)
                cursor = reader.cursor("newest")
                os.write(ready_w, b"r")
                seen: list[int] = []
                while len(seen) < 3 and cursor.wait(timeout=10):
                    seen += [int(v) for a in cursor.poll().arrays for v in a]
                os.write(done_w, json.dumps(seen).encode())
                status = 0
            finally:
                os._exit(status)
        try:
            assert os.read(ready_r, 1) == b"r"
            for v in (7, 8, 9):
                time.sleep(0.05)
                writer.append(v)
            assert json.loads(os.read(done_r, 100)) == [7, 8, 9]
            assert os.waitpid(pid, 0)[1] == 0
            writer.append(10)  # the writer still lives, and publishes
        finally:
            for fd in (ready_r, ready_w, done_r, done_w):
                os.close(fd)


# -- a freshness budget: woken at most about once per latency, at no cost to the writer --------

BUDGET = 0.1


def _budget_follower(name: str, ready: Any, out: Any) -> None:
    """Follow with a budget until the record -1; report every return's time and what it held."""
    cursor = AtomicLog.attach(name).cursor("newest")
    ready.set()
    returns = []
    while True:
        woke = cursor.wait(timeout=10, latency=BUDGET)
        batch = cursor.poll()
        returns.append((time.monotonic(), woke, [int(v) for a in batch.arrays for v in a]))
        if returns[-1][2] and returns[-1][2][-1] == -1:
            break
    out.put(returns)


def test_a_follower_with_a_budget_returns_about_once_per_latency_and_costs_the_writer_nothing(
    log_name: Callable[[], str],
) -> None:
    """A writer appends for 1 s, stamping each record with its publication time: the
    follower returns at most about once per 0.1 s, sees every record, none more than about
    0.1 s late (with a wide margin for a busy machine), and never sets the waiting flag."""
    ctx = mp.get_context("fork")
    writer, log = AtomicLog.new_claimed(retained=1 << 16, segment=1 << 12, dtype=np.int64, name=log_name())
    with log, writer:
        ready, out = ctx.Event(), ctx.Queue()
        child = ctx.Process(target=_budget_follower, args=(log.name, ready, out))
        child.start()
        try:
            assert ready.wait(30)
            published = {}
            began = time.monotonic()
            i = 0
            while time.monotonic() - began < 1.0:
                published[i] = time.monotonic()
                writer.append(i)
                assert writer._waiting() == 0, "a follower with a budget asked to be woken"
                i += 1
                time.sleep(0.0005)
            writer.append(-1)
            returns = out.get(timeout=30)
        finally:
            child.join(30)
    seen = [v for _, _, values in returns for v in values]
    assert seen == [*range(i), -1]
    assert len(returns) <= 1.0 / BUDGET * 1.5 + 3, f"{len(returns)} returns in about 1 s"
    late = max(at - published[v] for at, _, values in returns for v in values if v >= 0)
    assert late < BUDGET + 0.5, f"a record was seen {late:.3f} s after it was published"


def test_a_budget_follower_finds_a_record_within_its_latency_after_an_idle_while(
    log_name: Callable[[], str],
) -> None:
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=np.int64, name=log_name())
    with log, writer:
        snap = log.snapshot()
        assert snap.wait(0.25, latency=BUDGET) is False  # nothing: it looked, and slept on a timer
        ctx = mp.get_context("fork")
        writer.close()
        child = ctx.Process(target=publish_later, args=(log.name, 0.3))
        began = time.monotonic()
        child.start()
        assert snap.wait(10, latency=BUDGET)
        child.join()
        assert time.monotonic() - began < 0.3 + BUDGET + 1.0
        snap.refresh()
        assert [int(v) for v in snap] == [42]


def test_a_budget_follower_learns_that_its_log_is_gone_at_its_next_look(log_name: Callable[[], str]) -> None:
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=np.int64, name=log_name())
    reader = AtomicLog.attach(log.name)
    cursor = reader.cursor("newest")
    with writer:
        log.unlink()
        began = time.monotonic()
        with pytest.raises(LogNotFoundError):
            cursor.wait(10, latency=BUDGET)
        assert time.monotonic() - began < BUDGET + 1.0
    reader.close()
    log.close()


@pytest.mark.parametrize("bad", [-0.1, "0.1", True, float("nan")])
def test_a_budget_must_be_seconds(log_name: Callable[[], str], bad: Any) -> None:
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=np.int64, name=log_name())
    with log, writer:
        for wait in (log.cursor().wait, log.snapshot().wait):
            with pytest.raises(InvalidArgumentError, match="latency"):
                wait(0.01, latency=bad)


def test_follow_and_wait_async_take_a_budget(log_name: Callable[[], str]) -> None:
    import asyncio

    writer, log = AtomicLog.new_claimed(retained=1 << 12, segment=1 << 10, dtype=np.int64, name=log_name())

    async def follow() -> list[int]:
        seen: list[int] = []
        async for batch in log.follow("oldest", latency=BUDGET):
            seen.extend(int(v) for a in batch.arrays for v in a)
            if seen and seen[-1] == -1:
                return seen
        return seen

    async def write() -> None:
        for i in range(200):
            writer.append(i)
            await asyncio.sleep(0.001)
        writer.append(-1)

    async def both() -> list[int]:
        seen, _ = await asyncio.gather(follow(), write())
        return seen

    with log, writer:
        assert asyncio.run(asyncio.wait_for(both(), 30)) == [*range(200), -1]
        cursor = log.cursor("newest")
        assert asyncio.run(cursor.wait_async(0.2, latency=BUDGET)) is False
