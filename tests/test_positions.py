"""Logs that start at a position and skip forward: positions are global, gaps are missed.

A log's positions need not start at 0 (``new(..., start=p)``), and its writer may jump
ahead (``skip_to(p)``): what a mirror of another log needs, whose records it did not all
get. The positions in between are never shown as data; readers count them as missed,
exactly, as they count records reclaimed before they looked.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atomic_log_shm import AtomicLog, InvalidArgumentError, Snapshot, WriterClosedError

Names = Callable[[], str]


def shown(snap: Snapshot) -> list[tuple[int, int]]:
    """(position, value) of every record a snapshot shows."""
    return [(c.start + i, int(v)) for c in snap.chunks() for i, v in enumerate(c.values)]


def test_a_log_that_starts_at_a_position(log_name: Names) -> None:
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=np.int64, name=log_name(), start=1000)
    with log, writer:
        snap = log.snapshot()
        assert (snap.start, snap.end, len(snap)) == (1000, 1000, 0)
        writer.extend(range(6))
        snap.refresh()
        assert shown(snap) == [(1000 + i, i) for i in range(6)]
        assert [(c.sequence, c.start) for c in snap.chunks()] == [(0, 1000), (1, 1004)]
        assert (snap.missed, writer.end) == (0, 1006)
        assert log.info().oldest == 1000 and log.info().newest == 1005


def test_skip_to_leaves_a_gap_that_snapshots_and_cursors_count_as_missed(log_name: Names) -> None:
    writer, log = AtomicLog.new_claimed(retained=12, segment=4, dtype=np.int64, name=log_name())
    with log, writer:
        cursor = log.cursor("oldest")
        snap = log.snapshot()
        writer.extend([0, 1])
        writer.skip_to(10)
        writer.extend([10, 11, 12])
        assert writer.end == 13
        snap.refresh()
        assert shown(snap) == [(0, 0), (1, 1), (10, 10), (11, 11), (12, 12)]
        assert (snap.start, snap.end, len(snap), snap.missed) == (0, 13, 5, 8)
        # A poll hands out contiguous records only: the gap is reported by the next one.
        first = cursor.poll()
        assert (first.start, first.missed, len(first)) == (0, 0, 2)
        second = cursor.poll()
        assert (second.start, second.missed, len(second)) == (10, 8, 3)
        assert [int(v) for a in second.arrays for v in a] == [10, 11, 12]
        assert cursor.poll().missed == 0 and cursor.position == 13


def test_skip_to_refuses_going_back_and_is_a_no_op_in_place(log_name: Names) -> None:
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=np.int64, name=log_name())
    with log, writer:
        writer.extend([0, 1, 2])
        for bad in (2, -1):
            with pytest.raises(InvalidArgumentError, match="skip back"):
                writer.skip_to(bad)
        with pytest.raises(InvalidArgumentError, match="int"):
            writer.skip_to(5.0)  # type: ignore[arg-type]
        writer.skip_to(3)  # nothing skipped: the same segment goes on
        writer.append(3)
        assert [(c.sequence, c.start, len(c.values)) for c in log.snapshot().chunks()] == [(0, 0, 4)]
    with pytest.raises(WriterClosedError):
        writer.skip_to(100)


def test_a_skip_far_beyond_the_window_leaves_only_the_new_records(log_name: Names) -> None:
    writer, log = AtomicLog.new_claimed(retained=4, segment=2, dtype=np.int64, name=log_name())
    with log, writer:
        snap = log.snapshot()
        writer.extend(range(5))
        for _ in range(3):
            writer.skip_to(writer.end + 1_000_000)
            writer.append(7)
        snap.refresh()
        assert shown(snap) == [(1_000_005, 7), (2_000_006, 7), (3_000_007, 7)]
        assert snap.missed == 3_000_008 - 3  # records 0..4 were published, then reclaimed


def _continue_after_skip(name: str, conn: object) -> None:
    log = AtomicLog.attach(name)
    writer = log.try_claim_writer()
    assert writer is not None
    end = writer.end
    writer.append(99)
    conn.send(end)  # type: ignore[attr-defined]
    writer.close()
    log.close()


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_a_new_writer_in_another_process_continues_after_a_skip(log_name: Names, method: str) -> None:
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=np.int64, name=log_name())
    with log:
        writer.append(0)
        writer.skip_to(50)
        writer.append(50)
        writer.close()
        ctx = mp.get_context(method)
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_continue_after_skip, args=(log.name, child))
        proc.start()
        assert parent.recv() == 51
        proc.join(10)
        assert proc.exitcode == 0
        assert shown(log.snapshot()) == [(0, 0), (50, 50), (51, 99)]


@settings(max_examples=60, deadline=None)
@given(
    segment=st.integers(1, 5),
    retained=st.integers(1, 12),
    start=st.integers(0, 50),
    steps=st.lists(st.tuples(st.integers(0, 9), st.integers(0, 12)), max_size=25),
)
def test_every_position_shown_holds_what_was_written_there_and_the_rest_is_missed(
    segment: int, retained: int, start: int, steps: list[tuple[int, int]]
) -> None:
    """A model of positions: a dict of what was written where. For random appends and skips,
    a cursor sees each written position at most once with its own value, counts every other
    position it passes as missed, and a snapshot shows only written positions."""
    writer, log = AtomicLog.new_claimed(retained=retained, segment=segment, dtype=np.int64, start=start)
    with log, writer:
        written: dict[int, int] = {}
        cursor = log.cursor("oldest")
        seen = missed = 0
        for gap, count in steps:
            if gap:
                writer.skip_to(writer.end + gap)
            values = np.arange(writer.end, writer.end + count, dtype=np.int64) * 7
            for i, v in enumerate(values.tolist()):
                written[writer.end + i] = v
            writer.extend(values)
            batch = cursor.poll()
            missed += batch.missed
            for j, v in enumerate(int(x) for a in batch.arrays for x in a):
                assert written[batch.start + j] == v
                seen += 1
            snap = log.snapshot()
            assert all(written.get(p) == v for p, v in shown(snap))
            assert snap.end == writer.end
        assert seen + missed == writer.end - start
