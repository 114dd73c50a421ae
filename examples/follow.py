"""Following a log: a worker that takes what is new, waits without spinning, and knows
when it fell behind.

    python examples/follow.py

A writer process publishes readings in bursts; this process follows with a cursor. It
sleeps on the log's futex between bursts (no CPU used), takes each burst as zero-copy
arrays, and reports loss: halfway through it stops reading for a while, the writer runs
past the retained window, and the next poll says exactly how many records went by unseen.
"""

import multiprocessing as mp
import time

import numpy as np

from atomic_log_shm import AtomicLog

READING = np.dtype([("sensor", "u2"), ("value", "f4"), ("ts", "f8")])


def produce(log: AtomicLog, bursts: int) -> None:
    with log.try_claim_writer() as writer:
        for burst in range(bursts):
            batch = np.zeros(250, READING)
            batch["sensor"] = np.arange(250) % 8
            batch["value"] = np.random.default_rng(burst).normal(20, 2, 250)
            batch["ts"] = time.time()
            writer.extend(batch)
            time.sleep(0.02)


def main() -> None:
    with AtomicLog.new(retained=1000, segment=250, dtype=READING) as log:
        cursor = log.cursor("oldest")
        writer = mp.get_context("spawn").Process(target=produce, args=(log, 40))
        writer.start()
        seen = missed = 0
        while writer.is_alive() or cursor.wait(timeout=0):
            if not cursor.wait(timeout=0.5):
                continue
            batch = cursor.poll()
            seen += sum(len(a) for a in batch.arrays)
            missed += batch.missed
            if batch.missed:
                print(f"fell behind: {batch.missed} records were reclaimed before I looked")
            if batch.arrays:
                mean = np.mean(np.concatenate([a["value"] for a in batch.arrays]))
                print(f"positions {batch.start}..{cursor.position - 1}: mean value {mean:.2f}")
            if 3000 <= cursor.position < 3300:
                time.sleep(0.3)  # a slow moment: the writer laps the retained window
        writer.join()
        print(f"seen {seen}, missed {missed}, total {seen + missed} = published {cursor.position}")
        assert seen + missed == cursor.position == 40 * 250


if __name__ == "__main__":
    main()
