"""The workload every scenario shares: the 32-byte record, the sizes, and a run's parameters.

Records are ``[('ts','f8'),('seq','i8'),('price','f8'),('qty','i8')]``; ``ts`` is
``time.perf_counter()`` (CLOCK_MONOTONIC, one clock for every process on Linux) at publish,
so a reader in another process computes publish-to-observe latency from it directly.
``Params`` holds what differs between the full run and ``--quick``; the constants here do not.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

DTYPE = np.dtype([("ts", "<f8"), ("seq", "<i8"), ("price", "<f8"), ("qty", "<i8")])
PACK = struct.Struct("<dqdq")  # the same 32 bytes, for the peers that carry bytes
assert DTYPE.itemsize == PACK.size == 32
PRICE, QTY = 101.25, 7

RETAINED = 1 << 20  # the log of T, B, L, F, C and A (and the floor ring's size)
SEGMENT = 1 << 16
BATCH = 1000
CHECK_EVERY = 1024  # records between clock reads in the timed loops
S_RETAINED, S_SEGMENT = 1 << 16, 1 << 12
R_SMALL = (1000, 250)  # R: (retained, segment) of the 1k window
R_LARGE = (1_000_000, 1 << 16)
W_NEWEST, W_SMALL = 100_000, 1000
FEW_NEW = 3
F_SKIP = 1000  # F: the first records of a run, left out of its latencies (warm-up)
C_FOLLOWERS = 4

Records = npt.NDArray[Any]

LABEL = {
    "ours": "ours",
    "ours_wait": "ours (wait)",
    "ours_cursor": "ours (cursor.wait)",
    "ours_copy": "ours (cursor.wait, copying)",
    "floor": "floor",
    "mpqueue": "mp.Queue",
    "zmq": "pyzmq",
    "ffifo": "faster-fifo",
    "iox2": "iceoryx2",
}


class BenchError(Exception):
    """A measurement could not be made (a reader failed, timed out, a peer misbehaved)."""


@dataclass(frozen=True)
class Params:
    quick: bool
    repeats: int
    t_seconds: float
    b_seconds: float
    l_rate: int
    l_seconds: float
    w_total: int
    w_ring: int
    w_iters: int
    iox_iters: int
    r_batches: int
    r_inner: int
    r_few: int
    s_appends: int
    reader_timeout: float
    f_rate: int
    f_seconds: float
    c_appends: int
    a_seconds: float

    @classmethod
    def make(cls, quick: bool, repeats: int | None) -> Params:
        if quick:
            return cls(
                quick=True, repeats=repeats or 1, t_seconds=0.15, b_seconds=0.15, l_rate=10_000,
                l_seconds=0.3, w_total=150_000, w_ring=1 << 17, w_iters=15, iox_iters=1, r_batches=20,
                r_inner=200, r_few=500, s_appends=60_000, reader_timeout=60.0, f_rate=10_000, f_seconds=0.5,
                c_appends=50_000, a_seconds=0.15,
            )  # fmt: skip
        return cls(
            quick=False, repeats=repeats or 3, t_seconds=1.5, b_seconds=1.5, l_rate=10_000,
            l_seconds=2.0, w_total=1_100_000, w_ring=1 << 20, w_iters=60, iox_iters=3, r_batches=50,
            r_inner=2000, r_few=5000, s_appends=1_000_000, reader_timeout=120.0, f_rate=10_000, f_seconds=2.0,
            c_appends=300_000, a_seconds=1.5,
        )  # fmt: skip
