"""The seed crate's README example, ported: one process writes, and reads its own log."""

import numpy as np

from atomic_log_shm import AtomicLog

writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=np.int64)
with log, writer:
    for value in range(6):
        writer.append(value)

    snapshot = log.snapshot()
    assert [int(v) for v in snapshot] == [0, 1, 2, 3, 4, 5]

    writer.append(6)
    writer.append(7)
    snapshot.refresh()
    assert [int(v) for v in snapshot.iter()] == [0, 1, 2, 3, 4, 5, 6, 7]

    chunks = [(chunk.sequence, len(chunk.values)) for chunk in snapshot.chunks()]
    assert chunks == [(0, 4), (1, 4)]
    print("seed example: ok", chunks)
