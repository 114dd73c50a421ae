"""What a snapshot offers a dashboard: chunks that count records, indexing like a sequence,
the records since a timestamp, and a pandas frame indexed by position."""

from __future__ import annotations

import pickle
from collections.abc import Callable

import numpy as np
import pytest

from atomic_log_shm import AtomicLog, AtomicLogError, Chunk

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
