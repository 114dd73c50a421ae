"""A writer feeding a pool of reader processes that compute over the latest window.

    python examples/pool.py [--rounds N] [--workers N]

The main process owns the log and its writer and publishes sensor readings. Each round it
hands the log to a ``concurrent.futures.ProcessPoolExecutor``, one task per sensor. The
handle pickles as a name (and the identity of the log), so each task re-attaches in its
worker process and takes its own snapshot: nothing but the name crosses the pipe, and the
statistics are computed on numpy views of shared memory, without copying the window out.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from atomic_log_shm import AtomicLog

READING = np.dtype([("ts", "f8"), ("sensor", "u2"), ("value", "f4")])
SENSORS = 4
BATCH = 5_000


def sensor_stats(log: AtomicLog, sensor: int) -> tuple[int, int, float, float, int]:
    """In a worker: (sensor, readings, mean, max, newest position) over the retained window."""
    with log:  # an attached handle: leaving the block closes it, the log stays
        snap = log.snapshot()
        count, total, peak = 0, 0.0, -np.inf
        for chunk in snap.chunks():  # chunk.values views shared memory: no copy
            values = chunk.values["value"][chunk.values["sensor"] == sensor]
            count += len(values)
            total += float(values.sum(dtype=np.float64))
            peak = max(peak, float(values.max())) if len(values) else peak
        return sensor, count, total / count if count else float("nan"), peak, snap.end - 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=6, help="rounds of writing then computing (default 6)")
    parser.add_argument("--workers", type=int, default=2, help="processes in the pool (default 2)")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(1)
    writer, log = AtomicLog.new_claimed(retained=20_000, segment=4_096, dtype=READING)
    ctx = mp.get_context("spawn")  # workers start clean, without a copy of this process
    with log, writer, ProcessPoolExecutor(args.workers, mp_context=ctx) as pool:
        written = 0
        for round_ in range(1, args.rounds + 1):
            batch = np.zeros(BATCH, READING)
            batch["ts"] = np.arange(written, written + BATCH) / 1000.0
            batch["sensor"] = rng.integers(0, SENSORS, BATCH)
            batch["value"] = 20 + 5 * batch["sensor"] + rng.normal(0, 1, BATCH) + round_
            writer.extend(batch)
            written += BATCH
            results = pool.map(sensor_stats, [log] * SENSORS, range(SENSORS))
            print(f"round {round_}: {written:,} readings written")
            for sensor, count, mean, peak, newest in results:
                print(
                    f"  sensor {sensor}: {count:>6,} in the window, mean {mean:6.2f}, max {peak:6.2f}"
                    f" (window ends at #{newest:,})"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
