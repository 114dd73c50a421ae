"""An exception raised at any line inside the library (as a SIGINT handler raises
KeyboardInterrupt between bytecodes) must leave the log whole.

Each case runs an operation once per line event inside ``_writer.py``, ``_segment.py`` and
``_shm.py`` (``sys.settrace``), raising KeyboardInterrupt at the k-th, and checks after it:

* every record shown, in-process and by a fresh attach, equals its position (the writer
  appends ``position`` as the value), with no hole: the records appended before the call,
  then none, some or all of the interrupted call's, nothing else;
* the writer either goes on correctly (further appends across several rollovers show the
  same) or is closed with WriterClosedError, and a new claim goes on correctly;
* the log's regions are removed by ``remove_log`` (the autouse fixture checks /dev/shm).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from support import Interrupter, interrupt_at_every_line, run_traced

import atomic_log_shm
from atomic_log_shm import AtomicLog, Writer, WriterClosedError

PACKAGE = os.path.dirname(atomic_log_shm.__file__)
WRITER_FILES = {os.path.join(PACKAGE, f) for f in ("_writer.py", "_segment.py", "_shm.py")}
SEGMENT, RETAINED = 4, 8


def check_log(log: AtomicLog, low: int, high: int) -> int:
    """Records shown equal their positions, contiguous, ending between ``low`` and
    ``high``, in-process and from a fresh attach. Returns the end."""
    ends = []
    for handle in (log, AtomicLog.attach(log.name)):
        snap = handle.snapshot()
        for chunk in snap.chunks():  # positions skipped by skip_to() lie between chunks
            expected = np.arange(chunk.start, chunk.start + len(chunk.values))
            assert np.array_equal(chunk.values, expected), (snap, chunk)
        assert low <= snap.end <= high, (snap.end, low, high)
        ends.append(snap.end)
        if handle is not log:
            handle.close()
    assert ends[0] == ends[1]
    return ends[0]


def go_on(log: AtomicLog, writer: Writer) -> None:
    """Append across several rollovers (reusing pages): the log stays whole."""
    if writer.closed:
        with pytest.raises(WriterClosedError, match="claim"):
            writer.append(0)
        again = log.try_claim_writer()
        assert again is not None
        writer = again
    for _ in range(3 * RETAINED):
        writer.append(writer.end)
        check_log(log, writer.end, writer.end)
    writer.extend(np.arange(writer.end, writer.end + 3 * SEGMENT + 1))
    check_log(log, writer.end, writer.end)
    writer.close()


def at_full_head(writer: Writer) -> None:
    """Fill the head, after enough rollovers that a spare is kept for reuse."""
    while writer.end < 4 * RETAINED or writer.end % SEGMENT:
        writer.append(writer.end)


def append_that_rolls(writer: Writer) -> int:
    writer.append(writer.end)
    return 1


def extend_across(writer: Writer) -> int:
    n = 2 * SEGMENT + 1
    writer.extend(np.arange(writer.end, writer.end + n))
    return n


def extend_list_across(writer: Writer) -> int:
    n = SEGMENT + 2
    writer.extend(list(range(writer.end, writer.end + n)))
    return n


def skip(writer: Writer) -> int:
    writer.skip_to(writer.end + 3)
    return 0


OPERATIONS = [append_that_rolls, extend_across, extend_list_across, skip]


def interrupt_once(name: str, operation: Callable[[Writer], int], at: int | None) -> tuple[bool, int]:
    """One case: returns whether the operation was interrupted and its line count."""
    with AtomicLog.new(retained=RETAINED, segment=SEGMENT, dtype=np.int64, name=name) as log:
        writer = log.try_claim_writer()
        assert writer is not None
        at_full_head(writer)
        before = writer.end
        added = [0]
        tracer = Interrupter(WRITER_FILES, at)
        interrupted = run_traced(lambda: added.__setitem__(0, operation(writer)), tracer)
        high = before + (2 * SEGMENT + 3)
        if interrupted:
            check_log(log, before, high)
        else:
            check_log(log, before + added[0], before + added[0] + 3)
        go_on(log, writer)
    return interrupted, tracer.lines


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda f: f.__name__)
def test_an_interrupt_at_any_line_of_a_write_leaves_the_log_whole(
    log_name: Callable[[], str], operation: Callable[[Writer], int]
) -> None:
    interrupt_at_every_line(lambda at: interrupt_once(log_name(), operation, at), more_than=10)


# -- the read side: a view is the old one or the new one; a cursor hands out no position twice

READER_FILES = {
    os.path.join(PACKAGE, f) for f in ("_snapshot.py", "_cursor.py", "_reader.py", "_segment.py", "_shm.py")
}


def view_of(snap: atomic_log_shm.Snapshot) -> tuple[int, int, list[int]]:
    chunks = list(snap.chunks())
    for chunk in chunks:
        assert np.array_equal(chunk.values, np.arange(chunk.start, chunk.start + len(chunk.values)))
    return snap.start, snap.end, [int(v) for chunk in chunks for v in chunk.values]


def write(writer: Writer, n: int) -> None:
    for _ in range(n):
        writer.append(writer.end)


@pytest.mark.parametrize(
    "moved", [1, SEGMENT + 1, 3 * RETAINED], ids=["same-head", "next-head", "past-window"]
)
def test_an_interrupt_at_any_line_of_refresh_leaves_the_old_view_or_the_new(
    log_name: Callable[[], str], moved: int
) -> None:
    def once(at: int | None) -> tuple[bool, int]:
        with AtomicLog.new(retained=RETAINED, segment=SEGMENT, dtype=np.int64, name=log_name()) as log:
            writer = log.try_claim_writer()
            assert writer is not None
            with writer:
                write(writer, RETAINED + 2)
                snap = log.snapshot()
                old = view_of(snap)
                write(writer, moved)
                new = view_of(log.snapshot())
                tracer = Interrupter(READER_FILES, at)
                interrupted = run_traced(snap.refresh, tracer)
                assert view_of(snap) in ((old, new) if interrupted else (new,))
                snap.refresh()
                assert view_of(snap) == new
        return interrupted, tracer.lines

    interrupt_at_every_line(once, more_than=5)


@pytest.mark.parametrize(
    "moved", [1, SEGMENT + 1, 3 * RETAINED], ids=["same-head", "next-head", "past-window"]
)
def test_an_interrupt_at_any_line_of_poll_never_hands_a_position_out_twice(
    log_name: Callable[[], str], moved: int
) -> None:
    def once(at: int | None) -> tuple[bool, int]:
        with AtomicLog.new(retained=RETAINED, segment=SEGMENT, dtype=np.int64, name=log_name()) as log:
            writer = log.try_claim_writer()
            assert writer is not None
            with writer:
                write(writer, RETAINED + 2)
                cursor = log.cursor("oldest")
                seen: list[int] = []
                accounted = 0  # positions handed out or reported missed, from the first

                def poll() -> None:
                    nonlocal accounted
                    batch = cursor.poll()
                    assert batch.start == accounted + batch.missed or not (batch.arrays or batch.missed)
                    for array in batch.arrays:
                        seen.extend(int(v) for v in array)
                    accounted = (
                        batch.start + sum(len(a) for a in batch.arrays)
                        if batch.arrays
                        else (accounted + batch.missed)
                    )

                poll()
                write(writer, moved)
                tracer = Interrupter(READER_FILES, at)
                interrupted = run_traced(poll, tracer)
                poll()
                poll()
                assert seen == list(range(seen[0], seen[0] + len(seen))) or moved > RETAINED, seen
                assert len(set(seen)) == len(seen), f"positions handed out twice: {seen}"
                assert seen[-1] == writer.end - 1
        return interrupted, tracer.lines

    interrupt_at_every_line(once, more_than=5)


# -- waiting: after an interrupt anywhere in wait(), waiting still works, here and elsewhere

WAIT_FILES = {os.path.join(PACKAGE, f) for f in ("_wait.py", "_reader.py", "_cursor.py", "_snapshot.py")}
PROMPT = 1.0  # seconds: a wake-up or a timeout of 0.05 s must come well within this


def waits_in_child(name: str, start: int) -> Callable[[], tuple[bool, float]]:
    """Fork a process that waits, in ``Cursor.wait()``, for a record past ``start`` once it
    said it is ready; returns a function that gives what its wait returned and how long
    after the call returned it."""
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            cursor = AtomicLog.attach(name).cursor(start)
            os.write(ready_w, b"r")
            woke = cursor.wait(timeout=10 * PROMPT)
            os.write(done_w, b"%d %f" % (woke, time.monotonic()))
            status = 0
        finally:
            os._exit(status)
    os.close(ready_w)
    os.close(done_w)
    assert os.read(ready_r, 1) == b"r"
    os.close(ready_r)

    def result() -> tuple[bool, float]:
        try:
            woke, at = os.read(done_r, 64).split()
        finally:
            os.close(done_r)
            _, status = os.waitpid(pid, 0)
        assert status == 0, f"the waiting process ended with status {status:#x}"
        return bool(int(woke)), float(at)

    return result


@pytest.mark.parametrize("waiter", ["cursor", "snapshot"])
def test_an_interrupt_at_any_line_of_wait_leaves_waiting_working_here_and_in_other_processes(
    log_name: Callable[[], str], waiter: str
) -> None:
    """KeyboardInterrupt at each line of ``Cursor.wait()`` / ``Snapshot.wait()`` (through
    ``Reader.wait_beyond`` and ``_wait.wait_until``, the spin, the futex sleep). After it:
    the next wait() returns False at its timeout and True at once when a record is
    published; the writer's next publication leaves ``waiting`` cleared (an interrupted
    waiter costs it one wake at most); a waiter in another process still wakes promptly."""

    def once(at: int | None) -> tuple[bool, int]:
        name = log_name()
        with AtomicLog.new(retained=RETAINED, segment=SEGMENT, dtype=np.int64, name=name, mode=0o600) as log:
            writer = log.try_claim_writer()
            assert writer is not None
            with writer:
                write(writer, RETAINED + 2)
                cursor = log.cursor("newest")
                snap = log.snapshot()
                wait = cursor.wait if waiter == "cursor" else snap.wait
                tracer = Interrupter(WAIT_FILES, at)
                interrupted = run_traced(lambda: wait(timeout=0.02), tracer)  # nothing comes: it sleeps
                began = time.monotonic()
                assert wait(timeout=0.05) is False
                assert time.monotonic() - began < PROMPT
                write(writer, 1)
                waits = log._reader._waits
                assert waits is not None and waits is not False and waits is not True
                assert waits.waiting.load() == 0, "a publication left waiting set"
                began = time.monotonic()
                assert wait(timeout=10 * PROMPT) is True
                assert time.monotonic() - began < PROMPT
                assert [int(v) for a in cursor.poll().arrays for v in a] == [writer.end - 1]
                snap.refresh()
                result = waits_in_child(name, writer.end)
                time.sleep(0.05)  # let it fall asleep on the futex
                published = time.monotonic()
                write(writer, 1)
                woke, at_time = result()
                assert woke, "a waiter in another process missed the publication"
                assert at_time - published < PROMPT
        return interrupted, tracer.lines

    _, lines = once(None)
    assert lines > 10
    interrupted = sum(once(at)[0] for at in range(lines))
    # How many lines a wait runs depends on timing (its spin, its futex slices): runs past
    # the shortest may end before the k-th line; most are interrupted.
    assert interrupted >= lines // 2, (interrupted, lines)


def test_an_interrupt_inside_close_still_lets_the_claim_go_at_the_next_close(
    log_name: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C during ``writer.close()`` (or the end of a ``with`` block): the next
    ``close()`` must give the claim up, as WriterClosedError's "claim a new one" promises."""
    from atomic_log_shm import _segment

    with AtomicLog.new(retained=RETAINED, segment=SEGMENT, dtype=np.int64, name=log_name()) as log:
        writer = log.try_claim_writer()
        assert writer is not None
        write(writer, 2 * RETAINED)  # a spare is kept: close() has work before claim.release()
        close = _segment.WriterSegments.close

        def interrupted(self: Any) -> None:
            monkeypatch.setattr(_segment.WriterSegments, "close", close)
            raise KeyboardInterrupt("in WriterSegments.close, called by the writer's finalizer")

        monkeypatch.setattr(_segment.WriterSegments, "close", interrupted)
        with pytest.raises(KeyboardInterrupt):
            writer.close()
        writer.close()
        again = log.try_claim_writer()
        assert again is not None, "the closed writer still holds the claim"
        again.close()
