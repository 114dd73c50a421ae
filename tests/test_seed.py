"""The seed crate's README example, and the basic promises of the API, in one process."""

from __future__ import annotations

import numpy as np
import pytest
from support import values

from atomic_log_shm import AtomicLog


def test_seed_readme_example() -> None:
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=np.int64)
    with log:
        for v in range(6):
            writer.append(v)
        snap = log.snapshot()
        assert [int(v) for v in snap] == [0, 1, 2, 3, 4, 5]
        writer.append(6)
        writer.append(7)
        snap.refresh()
        assert [int(v) for v in snap.iter()] == list(range(8))
        assert [(c.sequence, len(c)) for c in snap.chunks()] == [(0, 4), (1, 4)]
        assert int(snap[-1]) == 7 and snap[2:5].tolist() == [2, 3, 4]
        writer.close()


def test_new_head_segment_is_made_by_the_append_that_finds_the_head_full() -> None:
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=np.int64)
    with log, writer:
        writer.extend(range(8))
        assert [c.sequence for c in log.snapshot().chunks()] == [0, 1]
        writer.append(8)
        assert [(c.sequence, len(c.values)) for c in log.snapshot().chunks()] == [(0, 4), (1, 4), (2, 1)]


def test_whole_segments_are_retained() -> None:
    # ceil(10 / 4) + 1 = 4 segments
    writer, log = AtomicLog.new_claimed(retained=10, segment=4, dtype=np.int64)
    with log, writer:
        writer.extend(range(100))
        snap = log.snapshot()
        assert values(snap) == list(range(84, 100))
        assert [c.sequence for c in snap.chunks()] == [21, 22, 23, 24]
        writer.append(100)
        snap.refresh()
        assert values(snap) == list(range(88, 101))
        assert len(snap) == 13


def test_empty_log_has_an_empty_snapshot() -> None:
    with AtomicLog.new(retained=4, segment=2, dtype="f8") as log:
        snap = log.snapshot()
        assert len(snap) == 0
        assert list(snap) == []
        assert list(snap.chunks()) == []
        snap.refresh()
        assert len(snap) == 0


def test_snapshot_is_stable_until_refreshed() -> None:
    writer, log = AtomicLog.new_claimed(retained=4, segment=2, dtype=np.int32)
    with log, writer:
        writer.extend([1, 2, 3])
        snap = log.snapshot()
        chunks = list(snap.chunks())
        writer.extend(range(4, 50))  # reclaims every segment the snapshot shows
        assert values(snap) == [1, 2, 3]
        assert [c.values.tolist() for c in chunks] == [[1, 2], [3]]
        snap.refresh()
        assert values(snap) == list(range(45, 50))  # segments 22, 23 and 24 (one record)
        assert [c.values.tolist() for c in chunks] == [[1, 2], [3]]


def test_chunk_values_are_read_only_views_of_shared_memory() -> None:
    writer, log = AtomicLog.new_claimed(retained=4, segment=4, dtype=np.int64)
    with log, writer:
        writer.extend([1, 2])
        chunk = log.snapshot().chunks()[0]
        assert not chunk.values.flags.writeable
        assert not chunk.values.flags.owndata
        with pytest.raises(ValueError):
            chunk.values[0] = 5
        with pytest.raises(ValueError):
            chunk.values.flags.writeable = True
        writer.append(3)
        assert chunk.values.tolist() == [1, 2]  # the view ends at the count it was given


def test_structured_records_and_numpy_scalars() -> None:
    dt = np.dtype([("ts", "f8"), ("seq", "i8"), ("price", "f8"), ("qty", "i8")])
    writer, log = AtomicLog.new_claimed(retained=16, segment=4, dtype=dt)
    with log, writer:
        writer.append((1.5, 1, 100.25, 3))
        writer.append(np.array((2.5, 2, 100.5, 4), dtype=dt)[()])
        writer.extend(np.array([(3.5, 3, 101.0, 5)] * 5, dtype=dt))
        snap = log.snapshot()
        records = list(snap)
        assert len(records) == 7
        assert records[0]["price"] == 100.25 and records[1]["seq"] == 2
        assert [int(r["seq"]) for r in records] == [1, 2, 3, 3, 3, 3, 3]
        with pytest.raises(ValueError):
            records[0]["qty"] = 9


def test_properties_and_repr() -> None:
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype="u2")
    with log, writer:
        assert (log.retained_capacity, log.segment_capacity, log.dtype) == (8, 4, np.dtype("u2"))
        assert log.name in repr(log) and "Writer" in repr(writer)
        writer.append(7)
        assert "len=1" in repr(log.snapshot())


def test_refresh_strategies_agree_with_a_fresh_snapshot() -> None:
    writer, log = AtomicLog.new_claimed(retained=6, segment=3, dtype=np.int64)
    with log, writer:
        snap = log.snapshot()
        n = 0
        for step in [0, 1, 1, 2, 3, 5, 8, 13, 21, 2, 1, 0, 40]:
            writer.extend(range(n, n + step))
            n += step
            snap.refresh()
            fresh = log.snapshot()
            assert values(snap) == values(fresh)
            assert [c.sequence for c in snap.chunks()] == [c.sequence for c in fresh.chunks()]
            assert len(snap) == len(fresh)
