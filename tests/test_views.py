"""What a snapshot offers a dashboard: chunks that count records, indexing like a sequence,
the records since a timestamp, and a pandas frame indexed by position."""

from __future__ import annotations

import pickle
from collections.abc import Callable

import numpy as np
import pytest

from atomic_log_shm import AtomicLog, AtomicLogError, Chunk, IndexOutOfRangeError, InvalidArgumentError

Names = Callable[[], str]


def test_a_chunk_counts_its_records_and_is_no_tuple(log_name: Names) -> None:
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=np.int64, name=log_name())
    with log, writer:
        writer.extend(range(6))
        snap = log.snapshot()
        chunks = list(snap.chunks())
        assert [len(c) for c in chunks] == [4, 2]
        first = chunks[0]
        assert isinstance(first, Chunk) and not isinstance(first, tuple)
        assert not hasattr(first, "count") and not hasattr(first, "index")
        assert repr(first) == "Chunk(sequence=0, start=0, values=<4 x int64>)"
        writer.append(6)  # grows the head chunk on the hot path: a Chunk too
        snap.refresh()
        last = list(snap.chunks())[-1]
        assert type(last) is Chunk and (last.sequence, last.start, len(last)) == (1, 4, 3)
        with pytest.raises(AttributeError):
            last.extra = 1  # type: ignore[attr-defined]
        copied = pickle.loads(pickle.dumps(last))  # the values are copied out of shared memory
        assert (copied.sequence, copied.start, copied.values.tolist()) == (1, 4, [4, 5, 6])


def test_a_snapshot_is_indexed_like_a_list_of_its_records(log_name: Names) -> None:
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=np.int64, name=log_name())
    with log, writer:
        writer.extend(range(100, 115))  # 15 records; segment 0 is reclaimed
        snap = log.snapshot()
        shown = [int(v) for v in snap]
        assert shown == list(range(104, 115)) and snap.start == 4  # index 0 is position 4
        for i in range(-len(shown), len(shown)):
            assert snap[i] == shown[i] and isinstance(snap[i], np.int64)
        assert int(snap[np.int64(2)]) == shown[2]
        for s in (slice(None), slice(1, 6), slice(-3, None), slice(2, 2), slice(None, None, 2),
                  slice(None, None, -1), slice(5, 0, -2), slice(-100, 100)):  # fmt: skip
            part = snap[s]
            assert part.tolist() == shown[s] and part.dtype == np.int64 and part.flags.writeable
        for bad in (11, -12, 10**20):
            with pytest.raises(IndexError, match=r"out of range.*shows 11 records") as caught:
                snap[bad]
            assert isinstance(caught.value, IndexOutOfRangeError) and isinstance(caught.value, AtomicLogError)
        for wrong in (1.0, "1", None, (0, 1)):
            with pytest.raises(TypeError, match="indexed by an int or a slice") as raised:
                snap[wrong]  # type: ignore[call-overload]
            assert isinstance(raised.value, InvalidArgumentError)
        with pytest.raises(IndexError):
            AtomicLog.attach(log.name).snapshot()[0] if False else log.cursor().log.snapshot()[99]


def test_indexing_counts_records_across_positions_the_writer_skipped(log_name: Names) -> None:
    writer, log = AtomicLog.new_claimed(retained=12, segment=4, dtype=np.int64, name=log_name())
    with log, writer:
        writer.extend([0, 1])
        writer.skip_to(10)
        writer.extend([10, 11, 12])
        snap = log.snapshot()
        assert [int(v) for v in snap] == [0, 1, 10, 11, 12]
        assert [int(snap[i]) for i in range(-5, 5)] == [0, 1, 10, 11, 12] * 2
        assert snap[1:4].tolist() == [1, 10, 11]


TICK = np.dtype([("t", "<f8"), ("price", "<f8"), ("qty", "<i4")])


def test_since_gives_zero_copy_chunks_from_the_first_record_at_or_after_a_value(log_name: Names) -> None:
    writer, log = AtomicLog.new_claimed(retained=16, segment=4, dtype=TICK, name=log_name())
    with log, writer:
        writer.extend(np.array([(t, 1.0, t) for t in range(0, 20, 2)], TICK))  # t = 0, 2 .. 18
        snap = log.snapshot()
        since = snap.since("t", 7.0)
        assert [int(v["t"]) for c in since for v in c.values] == [8, 10, 12, 14, 16, 18]
        assert [(c.sequence, c.start, len(c)) for c in since] == [(1, 4, 4), (2, 8, 2)]
        held = {c.sequence: c.values for c in snap.chunks()}
        for c in since:  # views of the snapshot's own arrays, not copies
            assert np.shares_memory(c.values, held[c.sequence]) and not c.values.flags.writeable
        assert [len(c) for c in snap.since("t", 8)] == [4, 2]  # an equal value is included
        assert sum(len(c) for c in snap.since("t", -1)) == len(snap)
        assert snap.since("t", 18.5) == []
        assert sum(len(c) for c in snap.since("t", 18)) == 1
        with pytest.raises(InvalidArgumentError, match="has no field 'time'; its fields are t, price, qty"):
            snap.since("time", 1)
        with pytest.raises(InvalidArgumentError, match="name the one to search"):
            snap.since(None, 1)
        with pytest.raises(InvalidArgumentError, match="cannot compare 'soon' with t"):
            snap.since("t", "soon")


def test_since_on_plain_values_compares_the_values_themselves(log_name: Names) -> None:
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=np.int64, name=log_name())
    with log, writer:
        snap = log.snapshot()
        assert snap.since(None, 0) == []
        writer.extend(range(10))
        snap.refresh()
        assert [int(v) for c in snap.since(None, 5) for v in c.values] == [5, 6, 7, 8, 9]
        with pytest.raises(InvalidArgumentError, match="plain int64 values, which have no field 't'"):
            snap.since("t", 5)


def test_to_pandas_indexes_records_by_position(log_name: Names) -> None:
    pd = pytest.importorskip("pandas")
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=TICK, name=log_name(), start=1000)
    with log, writer:
        cursor = log.cursor()
        snap = log.snapshot()
        empty = snap.to_pandas()
        assert list(empty.columns) == ["t", "price", "qty"] and len(empty) == 0
        writer.extend(np.array([(t, t / 2, t) for t in range(10)], TICK))
        writer.skip_to(1020)
        writer.append((20.0, 10.0, 20))
        snap.refresh()
        frame = snap.to_pandas()
        assert frame.index.name == "position"
        assert frame.index.tolist() == [1004, 1005, 1006, 1007, 1008, 1009, 1020]
        assert frame["t"].tolist() == [4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 20.0]
        assert frame["qty"].dtype == np.int32 and frame.loc[1020, "price"] == 10.0
        batch = cursor.poll()
        polled = batch.to_pandas()
        assert polled.index.tolist() == list(range(1000 + batch.missed, 1010))
        assert polled["t"].tolist() == [float(v["t"]) for a in batch.arrays for v in a]
        assert isinstance(polled, pd.DataFrame)


def test_to_pandas_of_plain_values_has_one_column_named_value(log_name: Names) -> None:
    pytest.importorskip("pandas")
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=np.float32, name=log_name())
    with log, writer:
        cursor = log.cursor()
        writer.extend([1.5, 2.5, 3.5, 4.5, 5.5])
        frame = log.snapshot().to_pandas()
        assert list(frame.columns) == ["value"] and frame["value"].tolist() == [1.5, 2.5, 3.5, 4.5, 5.5]
        polled = cursor.poll().to_pandas()
        assert polled.index.tolist() == [0, 1, 2, 3, 4] and polled["value"].dtype == np.float32
        assert cursor.poll().to_pandas().empty
