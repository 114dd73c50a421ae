"""The live demo behind ``atomic-log demo``: one writer process, a pool of reader processes.

The writer publishes telemetry (a record per sample from one of 16 sensors) at a steady
rate. Each reader attaches by name (its handle arrives pickled), follows the log with a
cursor, asleep until the writer publishes, and a few times a second computes the 99th
percentile of latency over the whole retained window. The last reader of two or more
instead looks only every 0.4 s, longer than the
window lasts at the default rate, so it shows what the log promises a slow reader: the
latest window, and a count of what it missed, never a blocked writer.

Readers report through a shared array of counters rather than a queue: the view reads
whatever is there when it redraws, and a torn pair of counters costs only one odd frame.
The main process draws a live table when stdout is a terminal and ``rich`` is installed,
and otherwise prints a plain line per half second. Every process it started is stopped,
and the log removed, however the demo ends (Ctrl-C included).
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np

from ._log import AtomicLog
from ._snapshot import Snapshot

TELEMETRY = np.dtype(
    [
        ("ts", "<f8"),
        ("seq", "<i8"),
        ("sensor", "<u2"),
        ("load", "<f4"),
        ("temp_c", "<f4"),
        ("latency_us", "<f4"),
    ]
)
RETAINED = 50_000
SEGMENT = 4096
SENSORS = 16
SLOW_POLL = 0.4  # seconds: longer than the window lasts at the default rate
STARTUP_TIMEOUT = 60.0  # seconds for the writer's first record and every reader's first look
STATS_EVERY = 0.25  # seconds between window statistics in a reader
# Per reader in the counters array: records seen, records missed, next position to read.
SEEN, MISSED, NEXT = range(3)
COUNTERS = 3


def write(log: AtomicLog, rate: float, stop: Any) -> None:
    """The writer process: batches of 100 samples, paced to ``rate`` records a second."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us through ``stop``
    writer = log.try_claim_writer()
    if writer is None:
        raise SystemExit(f"log {log.name!r} already has a writer")
    rng = np.random.default_rng(7)
    with writer:
        batch = np.zeros(100, TELEMETRY)
        seq = 0
        start = time.perf_counter()
        while not stop.is_set():
            seqs = np.arange(seq, seq + len(batch))
            phase = seqs / 5000.0
            batch["ts"] = time.time()
            batch["seq"] = seqs
            batch["sensor"] = seqs % SENSORS
            batch["load"] = 50 + 40 * np.sin(phase) + rng.normal(0, 2, len(batch))
            batch["temp_c"] = 45 + 10 * np.sin(phase / 7) + rng.normal(0, 0.3, len(batch))
            batch["latency_us"] = rng.lognormal(np.log(120), 0.35, len(batch))
            writer.extend(batch)
            seq += len(batch)
            ahead = seq / rate - (time.perf_counter() - start)
            if ahead > 0:
                time.sleep(ahead)


def read(log: AtomicLog, reader: int, every: float, counters: Any, p99: Any, stop: Any) -> None:
    """A reader process: follow the log with a cursor, count what it saw and what it missed.

    ``every`` 0: sleep until the writer publishes (no CPU while idle); else look only every
    ``every`` seconds, as a slow consumer would.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cursor = log.cursor("newest")  # only what comes from now on, as a dashboard attaching would
    window = log.snapshot()
    at = reader * COUNTERS
    seen = missed = 0
    next_stats = 0.0
    while not stop.is_set():
        if every:
            time.sleep(every)
        else:
            cursor.wait(timeout=0.1)  # the timeout only lets us notice ``stop``
        batch = cursor.poll()
        seen += sum(len(values) for values in batch.arrays)
        missed += batch.missed  # reclaimed before this reader looked: lost to it, by design
        counters[at + SEEN], counters[at + MISSED], counters[at + NEXT] = seen, missed, cursor.position
        now = time.monotonic()
        if now >= next_stats:
            window.refresh()
            if len(window):
                latency = np.concatenate([c.values["latency_us"] for c in window.chunks()])
                p99[reader] = float(np.percentile(latency, 99))
            next_stats = now + STATS_EVERY


def _wait_for_start(snap: Snapshot, procs: list[Any], counters: Any) -> float | None:
    """When the demo's clock starts: once the writer's first record is published and every
    reader has looked at the log (starting processes on a busy machine can take seconds),
    or at ``STARTUP_TIMEOUT`` if the writer writes but a reader is still starting (it shows
    as starting); None if the writer failed or never wrote."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    writer, readers = procs[0], procs[1:]
    wrote = False
    while time.monotonic() < deadline and writer.exitcode is None:
        if not wrote:
            snap.refresh()
            wrote = len(snap) > 0
        looked = all(
            counters[r * COUNTERS + NEXT] >= 0 or p.exitcode is not None for r, p in enumerate(readers)
        )
        if wrote and looked:
            return time.monotonic()
        time.sleep(0.02)
    if writer.exitcode is not None:
        return None
    if wrote:
        return time.monotonic()
    writer.kill()  # reported as failed in the summary
    writer.join()
    return None


@dataclass
class Frame:
    """What one redraw shows: the log's state and each reader's, at one moment."""

    elapsed: float
    window: int
    newest: int  # position of the newest record, -1 before the first
    writer_rate: float
    readers: list[tuple[float, int, int, int, float]]  # poll, seen, lag (-1: starting), missed, p99


class _Rates:
    """Records per second over the last second or so, from successive totals."""

    def __init__(self) -> None:
        self._history: list[tuple[float, int]] = []

    def add(self, t: float, total: int) -> float:
        history = self._history
        history.append((t, total))
        while len(history) > 2 and t - history[1][0] >= 1.0:
            history.pop(0)
        t0, n0 = history[0]
        return (total - n0) / (t - t0) if t > t0 else 0.0


def run(
    duration: float, readers: int, rate: float, name: str | None = None, out: TextIO | None = None
) -> int:
    """Run the demo for ``duration`` seconds; 0 if every process ended well, else 1."""
    out = out if out is not None else sys.stdout
    ctx = mp.get_context("spawn")  # children start clean: no inherited handles or threads
    stop = ctx.Event()
    counters = ctx.Array("q", readers * COUNTERS, lock=False)
    counters[NEXT::COUNTERS] = [-1] * readers  # -1: this reader has not looked yet
    p99 = ctx.Array("d", readers, lock=False)
    polls = [SLOW_POLL if readers >= 2 and r == readers - 1 else 0.0 for r in range(readers)]
    with AtomicLog.new(retained=RETAINED, segment=SEGMENT, dtype=TELEMETRY, name=name) as log:
        print(
            f"log {log.name}: {len(TELEMETRY.names or ())} fields, {TELEMETRY.itemsize} bytes a record; "
            f"retains {log.retained_capacity:,} records in segments of {log.segment_capacity:,}\n"
            f"  while it runs, try in another terminal:  atomic-log inspect {log.name}  |  "
            f"atomic-log tail {log.name}",
            file=out,
            flush=True,
        )
        procs = [ctx.Process(target=write, args=(log, rate, stop), name="demo-writer")]
        procs += [
            ctx.Process(target=read, args=(log, r, polls[r], counters, p99, stop), name=f"demo-reader-{r}")
            for r in range(readers)
        ]
        try:
            for p in procs:
                p.start()
            show = _live_view(out, readers) or _plain_view(out)
            snap = log.snapshot()
            rates = _Rates()
            started = _wait_for_start(snap, procs, counters)
            with show as draw:
                while started is not None:
                    elapsed = time.monotonic() - started
                    if duration and elapsed >= duration:
                        break
                    if any(p.exitcode not in (None, 0) for p in procs):
                        break  # a child failed: stop now, the summary says which
                    snap.refresh()
                    newest = snap.end - 1
                    rows = []
                    for r in range(readers):
                        seen, missed, nxt = counters[r * COUNTERS : (r + 1) * COUNTERS]
                        lag = max(newest + 1 - nxt, 0) if nxt >= 0 else -1
                        rows.append((polls[r], seen, lag, missed, p99[r]))
                    draw(Frame(elapsed, len(snap), newest, rates.add(elapsed, newest + 1), rows))
                    time.sleep(0.1)
        except KeyboardInterrupt:
            pass  # Ctrl-C ends the demo early; the cleanup below is the same
        finally:
            stop.set()
            for p in procs:
                if p.pid is None:
                    continue  # never started
                p.join(timeout=5)
                if p.is_alive():
                    p.kill()
                    p.join()
    failed = [f"{p.name} (exit {p.exitcode})" for p in procs if p.exitcode != 0]
    if failed:
        print(f"failed: {', '.join(failed)}; every process stopped, shared memory removed", file=out)
        return 1
    print("done: every process stopped, shared memory removed", file=out)
    return 0


class _View:
    """A context manager giving a draw(frame) function; exiting leaves the screen tidy."""

    def __init__(self, draw: Callable[[Frame], None], close: Callable[[], None] = lambda: None) -> None:
        self._draw = draw
        self._close = close

    def __enter__(self) -> Callable[[Frame], None]:
        return self._draw

    def __exit__(self, *exc_info: object) -> None:
        self._close()


def _plain_view(out: TextIO) -> _View:
    """A line every half second: for pipes, logs and terminals without rich."""
    next_line = 0.0

    def draw(frame: Frame) -> None:
        nonlocal next_line
        if frame.elapsed < next_line:
            return
        next_line = frame.elapsed + 0.5
        cols = "  ".join(
            f"r{r}: lag {lag:,} missed {missed:,}" if lag >= 0 else f"r{r}: starting"
            for r, (_, _, lag, missed, _) in enumerate(frame.readers)
        )
        print(
            f"t={frame.elapsed:4.1f}s  window {frame.window:,}  newest #{frame.newest:,}  "
            f"writer {frame.writer_rate:,.0f}/s  {cols}",
            file=out,
            flush=True,
        )

    return _View(draw)


def _live_view(out: TextIO, readers: int) -> _View | None:
    """A table redrawn in place, if ``out`` is a terminal and rich is installed."""
    if not out.isatty():
        return None
    try:
        from rich.console import Console, Group
        from rich.live import Live
        from rich.table import Table
        from rich.text import Text
    except ImportError:
        return None

    live = Live(console=Console(file=out), refresh_per_second=8, transient=False)
    seen_rates = [_Rates() for _ in range(readers)]

    def draw(frame: Frame) -> None:
        title = Text.assemble(
            ("writer ", "bold"),
            f"{frame.writer_rate:>10,.0f} records/s   ",
            ("window ", "bold"),
            f"{frame.window:,} records   ",
            ("newest ", "bold"),
            f"#{frame.newest:,}   ",
            ("t ", "bold"),
            f"{frame.elapsed:.1f} s",
        )
        table = Table(expand=False)
        for header in ("reader", "looks", "records/s", "lag", "missed", "p99 latency (window)"):
            table.add_column(header, justify="right")
        for r, (poll, seen, lag, missed, p99) in enumerate(frame.readers):
            rate = seen_rates[r].add(frame.elapsed, seen)
            table.add_row(
                f"r{r}",
                f"every {poll * 1000:.0f} ms" if poll else "on publish",
                f"{rate:,.0f}",
                f"{lag:,}" if lag >= 0 else "starting",
                Text(f"{missed:,}", style="yellow" if missed else ""),
                f"{p99:.0f} us" if p99 else "-",
            )
        live.update(Group(title, table), refresh=True)

    live.start()
    return _View(draw, live.stop)
