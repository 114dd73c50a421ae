"""Live demo: one writer process publishes telemetry, three reader processes follow it.

    python examples/demo.py [--duration SECONDS] [--readers N]

The writer appends a record per sample (timestamp, sequence number, CPU-like load and a
latency figure) at a steady rate. Each reader attaches by name, takes one snapshot and then
refreshes it, counting what it saw, how far behind the writer it is, and how many records
it missed because they left the retained window before it looked. The main process prints
one line of figures per half second, then stops every process and removes the log.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import queue
import sys
import time

import numpy as np

from atomic_log_shm import AtomicLog

SAMPLE = np.dtype([("ts", "f8"), ("seq", "i8"), ("load", "f4"), ("latency_us", "f4")])


def write(log: AtomicLog, rate: float, stop: mp.synchronize.Event) -> None:
    writer = log.try_claim_writer()
    assert writer is not None, "the demo's log has another writer"
    with writer:
        batch = np.zeros(100, SAMPLE)
        seq = 0
        start = time.perf_counter()
        while not stop.is_set():
            batch["seq"] = np.arange(seq, seq + len(batch))
            phase = batch["seq"] / 5000.0
            batch["load"] = 50 + 40 * np.sin(phase)
            batch["latency_us"] = 120 + 30 * np.cos(phase * 3)
            batch["ts"] = time.perf_counter()
            writer.extend(batch)
            seq += len(batch)
            ahead = seq / rate - (time.perf_counter() - start)
            if ahead > 0:
                time.sleep(ahead)


def read(
    log: AtomicLog,
    reader: int,
    report: mp.Queue[tuple[int, int, int, int, float]],
    stop: mp.synchronize.Event,
) -> None:
    snap = log.snapshot()
    seen = missed = 0
    last = -1
    next_report = time.monotonic()
    while not stop.is_set():
        snap.refresh()
        for chunk in snap.chunks():
            seqs = chunk.values["seq"]
            fresh = seqs[seqs > last]
            if len(fresh):
                if last >= 0 and fresh[0] > last + 1:
                    missed += int(fresh[0] - last - 1)
                seen += len(fresh)
                last = int(fresh[-1])
        if time.monotonic() >= next_report:
            mean_load = float(np.mean([c.values["load"].mean() for c in snap.chunks()] or [math.nan]))
            report.put((reader, seen, missed, last, mean_load))
            next_report += 0.5
        time.sleep(0.002)  # a dashboard need not spin; issue #4 brings blocking waits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=3.0, help="seconds to run (default 3)")
    parser.add_argument("--readers", type=int, default=3, help="reader processes (default 3)")
    parser.add_argument("--rate", type=float, default=200_000, help="records per second (default 200k)")
    args = parser.parse_args(argv)

    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    report: mp.Queue[tuple[int, int, int, int, float]] = ctx.Queue()
    with AtomicLog.new(50_000, 4096, dtype=SAMPLE) as log:
        print(
            f"log {log.name}: {log.dtype}, retains {log.retained_capacity} records "
            f"in segments of {log.segment_capacity}"
        )
        procs = [ctx.Process(target=write, args=(log, args.rate, stop))]
        procs += [ctx.Process(target=read, args=(log, r, report, stop)) for r in range(args.readers)]
        for p in procs:
            p.start()
        try:
            status: dict[int, tuple[int, int, int, float]] = {}
            end = time.monotonic() + args.duration
            while time.monotonic() < end:
                try:
                    reader, seen, missed, last, load = report.get(timeout=0.6)
                except queue.Empty:
                    continue
                status[reader] = (seen, missed, last, load)
                if len(status) == args.readers:
                    snap = log.snapshot()
                    newest = int(next(snap.chunks()).values["seq"][0]) + len(snap) - 1 if len(snap) else -1
                    cols = "  ".join(
                        f"r{r}: seen {s:>9,} missed {m:>6,} lag {newest - last:>6,}"
                        for r, (s, m, last, _) in sorted(status.items())
                    )
                    print(
                        f"t={args.duration - (end - time.monotonic()):4.1f}s  window {len(snap):>6,}  "
                        f"newest #{newest:>9,}  {cols}"
                    )
                    status.clear()
        finally:
            stop.set()
            for p in procs:
                p.join(timeout=5)
                if p.is_alive():
                    p.kill()
                    p.join()
    bad = [p.exitcode for p in procs if p.exitcode != 0]
    print("done: every process stopped, shared memory removed" if not bad else f"processes failed: {bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
