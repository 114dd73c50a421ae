"""The writer's own state: no store lands where it should not, whatever the record size,
and positions stay in range.

A writer is OPEN, ROLLING (a rollover, or the recovery from one an exception cut short, is
under way or was interrupted) or CLOSED; only an OPEN writer with room in its head stores a
record. The cases here are those where a store into a stand-in used to succeed: records of
one byte, a closed or forked writer at count 0, a recovery that was itself interrupted.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from support import Interrupter, interrupt_at_every_line, run_traced

import atomic_log_shm
from atomic_log_shm import (
    AtomicLog,
    InvalidArgumentError,
    OutOfSpaceError,
    Writer,
    WriterClosedError,
    _segment,
)

Names = Callable[[], str]
MAX_POSITION = 2**63 - 1
LIBRARY = os.path.dirname(atomic_log_shm.__file__)


def shown(log: AtomicLog) -> list[tuple[int, Any]]:
    """(position, value) of every record a fresh attach shows, values as Python objects."""
    with AtomicLog.attach(log.name) as other:
        snap = other.snapshot()
        return [(c.start + i, v.item()) for c in snap.chunks() for i, v in enumerate(c.values)]


@pytest.mark.parametrize("dtype", ["u1", "i1", "S1", "?"])
@pytest.mark.parametrize("skipped", [False, True], ids=["fresh", "after-skip"])
def test_a_closed_writer_of_one_byte_records_at_count_0_refuses_and_keeps_its_end(
    log_name: Names, dtype: str, skipped: bool
) -> None:
    writer, log = AtomicLog.new_claimed(retained=4, segment=2, dtype=dtype, name=log_name())
    value = np.zeros(1, dtype)[0].item()
    with log:
        if skipped:
            writer.append(value)
            writer.skip_to(5)  # a new head, at count 0
        end = writer.end
        writer.close()
        for call in (lambda: writer.append(value), lambda: writer.extend([value]), lambda: writer.skip_to(9)):
            with pytest.raises(WriterClosedError):
                call()
        assert writer.end == end, "a closed writer's end moved"
        assert shown(log) == ([(0, value)] if skipped else [])


@pytest.mark.parametrize("skipped", [False, True], ids=["fresh", "after-skip"])
def test_a_forked_childs_writer_of_one_byte_records_at_count_0_refuses_and_changes_nothing(
    log_name: Names, skipped: bool
) -> None:
    writer, log = AtomicLog.new_claimed(retained=4, segment=2, dtype="u1", name=log_name())
    with log, writer:
        if skipped:
            writer.append(3)
            writer.skip_to(5)
        end = writer.end
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through the pipe
            status = b"?"
            try:
                try:
                    writer.append(9)
                    status = b"appended"
                except WriterClosedError:
                    status = b"closed" if writer.end == end else b"end moved"
                except BaseException as exc:
                    status = type(exc).__name__.encode()
            finally:
                os.write(write, status)
                os._exit(0)
        os.close(write)
        assert os.read(read, 32) == b"closed"
        os.close(read)
        os.waitpid(pid, 0)
        assert shown(log) == ([(0, 3)] if skipped else [])
        writer.append(7)  # the parent's writer goes on
        assert shown(log)[-1] == (end, 7)


ONE_BYTE = {  # a one-byte dtype, and a record of it for a small int
    "u1": lambda v: v,
    "S1": lambda v: bytes([65 + v % 26]),
    "[('v', 'u1')]": lambda v: (v,),
}


@pytest.mark.parametrize("dtype", list(ONE_BYTE))
def test_an_interrupted_recovery_of_a_failed_rollover_never_publishes_an_unwritten_record(
    log_name: Names, monkeypatch: pytest.MonkeyPatch, dtype: str
) -> None:
    """One-byte records in reused pages (stale bytes everywhere): a rollover fails (no
    room), the recovery from it is interrupted, and so is the one after; the next appends
    store and show exactly their values (a writer left without its head once stored them
    nowhere, and published a stale byte)."""
    record = ONE_BYTE[dtype]
    writer, log = AtomicLog.new_claimed(
        retained=4, segment=4, dtype=eval(dtype) if dtype.startswith("[") else dtype, name=log_name()
    )
    with log, writer:
        for i in range(40):  # many rollovers: the spare's pages hold old values
            writer.append(record(40 + i % 10))
        while writer.end % 4:
            writer.append(record(42))
        end = writer.end
        take = _segment.WriterSegments.take
        open_writable = _segment.open_writable
        interrupts = [KeyboardInterrupt("inside the recovery (test)")] * 2

        def no_room(self: Any, seq: int) -> Any:
            raise OutOfSpaceError(28, "no room (test)")

        def interrupted(*args: Any) -> Any:
            if interrupts:
                raise interrupts.pop()
            return open_writable(*args)

        monkeypatch.setattr(_segment.WriterSegments, "take", no_room)
        monkeypatch.setattr(_segment, "open_writable", interrupted)
        for _ in range(2):
            with pytest.raises((KeyboardInterrupt, OutOfSpaceError)):
                writer.append(record(7))
        monkeypatch.setattr(_segment.WriterSegments, "take", take)
        values = [record(v) for v in (7, 8, 9, 10, 11)]
        for value in values:
            writer.append(value)
        got = [(p, tuple(v) if isinstance(v, tuple) else v) for p, v in shown(log)[-5:]]
        assert got == [(end + i, v) for i, v in enumerate(values)]
        assert writer.end == end + 5


def test_the_writers_state_is_explicit(log_name: Names, monkeypatch: pytest.MonkeyPatch) -> None:
    writer, log = AtomicLog.new_claimed(retained=4, segment=2, dtype=np.int64, name=log_name())
    with log:
        assert "open" in repr(writer) and not writer.closed
        writer.extend([1, 2])

        def fails(self: Any, seq: int) -> Any:
            raise KeyboardInterrupt("in the rollover (test)")

        monkeypatch.setattr(_segment.WriterSegments, "take", fails)
        monkeypatch.setattr(Writer, "_resync", lambda self: None)  # as if the recovery was cut short
        with pytest.raises(KeyboardInterrupt):
            writer.append(3)
        assert "rolling" in repr(writer)
        monkeypatch.undo()
        writer.append(3)  # the next call recovers first
        assert "open" in repr(writer) and shown(log) == [(0, 1), (1, 2), (2, 3)]
        writer.close()
        assert writer.closed and "closed: close() was called" in repr(writer)


# -- positions ---------------------------------------------------------------------------------


@pytest.mark.parametrize("position", [2**63, 2**64, MAX_POSITION])
def test_skip_to_beyond_int64_is_refused_and_changes_nothing(log_name: Names, position: int) -> None:
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=np.int64, name=log_name())
    with log, writer:
        writer.extend(range(10))
        before = shown(log)
        with pytest.raises(InvalidArgumentError, match="int64"):
            writer.skip_to(position)
        assert shown(log) == before and writer.end == 10
        writer.append(10)
        assert shown(log) == [*before, (10, 10)]


@pytest.mark.parametrize("skipped_to", [MAX_POSITION - 4, MAX_POSITION - 3, MAX_POSITION - 1])
def test_the_last_positions_of_int64_are_usable_and_then_refused(log_name: Names, skipped_to: int) -> None:
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=np.int64, name=log_name())
    with log, writer:
        writer.skip_to(skipped_to)
        n = MAX_POSITION - skipped_to  # fewer than a segment when the head starts near the end
        writer.extend(range(n))
        assert writer.end == MAX_POSITION
        for call in (lambda: writer.append(4), lambda: writer.extend([4, 5])):
            with pytest.raises(InvalidArgumentError, match="int64"):
                call()  # the next record would be at 2**63 - 1
        assert shown(log) == [(skipped_to + i, i) for i in range(n)] and writer.end == MAX_POSITION
        assert log.info().newest == MAX_POSITION - 1


@pytest.mark.parametrize("start", [2**63, MAX_POSITION, -1])
def test_a_log_cannot_start_beyond_int64(log_name: Names, start: int) -> None:
    name = log_name()
    with pytest.raises(InvalidArgumentError, match="position"):
        AtomicLog.new(retained=8, segment=4, dtype=np.int64, name=name, start=start)
    assert not [e for e in os.listdir("/dev/shm") if e.startswith(name)]


def test_a_log_may_start_at_the_last_positions_of_int64(log_name: Names) -> None:
    writer, log = AtomicLog.new_claimed(
        retained=8, segment=4, dtype=np.int64, name=log_name(), start=MAX_POSITION - 2
    )
    with log, writer:
        writer.extend(range(2))
        assert shown(log) == [(MAX_POSITION - 2, 0), (MAX_POSITION - 1, 1)]
        with pytest.raises(InvalidArgumentError, match="int64"):
            writer.append(2)


def test_interrupts_between_appends_never_lose_or_repeat_a_position(log_name: Names) -> None:
    """A timer raises KeyboardInterrupt, at random points of ``append`` (one-byte records,
    rollovers reusing pages), thousands of times: whatever was published is exactly what
    was appended, in order."""
    writer, log = AtomicLog.new_claimed(retained=16, segment=4, dtype="u1", name=log_name())
    appended: list[tuple[int, int]] = []
    armed = False
    interrupts = 0

    def interrupt(signum: int, frame: Any) -> None:
        nonlocal armed
        # Once per arming (never again inside the test's own except clause), and only in
        # the library's code (not in a garbage collector's callback that ran inside it).
        if armed and frame is not None and frame.f_code.co_filename.startswith(LIBRARY):
            armed = False
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        with log:
            signal.setitimer(signal.ITIMER_REAL, 0.0003, 0.0003)
            value = 0
            while len(appended) < 3000:
                at = writer.end
                try:
                    armed = True
                    writer.append(value % 256)
                    armed = False
                    appended.append((at, value % 256))
                    value += 1
                except KeyboardInterrupt:
                    armed = False
                    interrupts += 1
            signal.setitimer(signal.ITIMER_REAL, 0)
            got = dict(shown(log))
            for position, v in appended[-16:]:
                assert got.get(position, v) == v
            ends = [p for p, _ in appended]
            assert ends == sorted(ends) and len(set(ends)) == len(ends)
            assert interrupts > 0
            writer.close()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


WRITER_FILES = {os.path.join(LIBRARY, f) for f in ("_writer.py", "_segment.py", "_shm.py")}


def test_an_interrupt_at_any_line_of_the_recovery_from_an_interrupted_rollover_of_one_byte_records(
    log_name: Names, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rollover of one-byte records (in pages reused, full of old values) is interrupted
    after it published its head; the recovery from that is interrupted in turn, at each of
    its lines. Whatever the writer does next, every record shown is the one appended at its
    position, and the writer goes on (or says it is closed, and a new claim goes on)."""
    dtype = np.dtype([("v", "u1")])
    retire = _segment.WriterSegments.retire

    def at_head_published(self: Any, *args: Any) -> None:
        monkeypatch.setattr(_segment.WriterSegments, "retire", retire)
        raise KeyboardInterrupt("after the head store (test)")

    def once(at: int | None) -> tuple[bool, int]:
        with AtomicLog.new(retained=8, segment=4, dtype=dtype, name=log_name()) as log:
            writer = log.try_claim_writer()
            assert writer is not None
            while writer.end < 48 or writer.end % 4:
                writer.append((writer.end % 256,))
            monkeypatch.setattr(_segment.WriterSegments, "retire", at_head_published)
            tracer = Interrupter(WRITER_FILES, at)  # the rollover, then its recovery, line by line
            run_traced(lambda: writer.append((writer.end % 256,)), tracer)
            monkeypatch.setattr(_segment.WriterSegments, "retire", retire)
            interrupted = tracer.fired
            for _ in range(12):
                try:
                    writer.append((writer.end % 256,))
                except WriterClosedError:
                    writer = log.try_claim_writer()
                    assert writer is not None
            for chunk in AtomicLog.attach(log.name).snapshot().chunks():
                expected = np.arange(chunk.start, chunk.start + len(chunk)) % 256
                assert chunk.values["v"].tolist() == expected.tolist(), (at, chunk)
            writer.close()
        return interrupted, tracer.lines

    interrupt_at_every_line(once, more_than=10)


def test_another_thread_reading_end_never_disturbs_a_rollover(
    log_name: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``end`` only reads. A thread that watches it (as a Mirror's ``position`` is watched)
    while the writer rolls over in its own thread must never change the writer: once it
    did, by resyncing a writer it found rolling, which removed the region the rollover had
    just made, and readers then found the head with no region."""
    import threading

    take = _segment.WriterSegments.take
    seen: list[int] = []

    def take_while_another_thread_reads_end(self: Any, seq: int) -> Any:
        region = take(self, seq)  # made, not yet published: the writer is rolling over
        watcher = threading.Thread(target=lambda: seen.append(writer.end))
        watcher.start()
        watcher.join()
        return region

    with AtomicLog.new(retained=8, segment=4, dtype=np.int64, name=log_name()) as log:
        writer = log.try_claim_writer()
        assert writer is not None
        monkeypatch.setattr(_segment.WriterSegments, "take", take_while_another_thread_reads_end)
        for value in range(40):
            writer.append(value)
        monkeypatch.setattr(_segment.WriterSegments, "take", take)
        assert seen == list(range(4, 40, 4)), "end during each rollover: what is published"
        snap = AtomicLog.attach(log.name).snapshot()
        assert snap.end == 40 and [int(v) for v in snap] == list(range(snap.start, 40))
        writer.close()
