"""A dashboard: read the latest window of a log and draw it.

    python examples/dashboard.py [--frames N] [--png PATH]
    python examples/dashboard.py --attach NAME --field FIELD     # e.g. the demo's log, field load

Without ``--attach`` it starts a writer process of its own (a noisy signal, 20,000 records
a second) and draws that. Each frame refreshes one snapshot and draws the window as a text
sparkline across the terminal: one character per bucket of records, the bucket's mean.
With ``--png PATH`` and matplotlib installed, the last window is also saved as a chart.
A dashboard wants the latest window, not every record: that is what the log is for.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import sys
import time
from typing import Any

import numpy as np

from atomic_log_shm import AtomicLog

SIGNAL = np.dtype([("ts", "f8"), ("value", "f4")])
BARS = "▁▂▃▄▅▆▇█"


def produce(log: AtomicLog, stop: Any) -> None:
    """The writer process: a slow wave with noise, in batches of 200, 20,000 a second."""
    writer = log.try_claim_writer()
    assert writer is not None, "the dashboard's log already has a writer"
    rng = np.random.default_rng(3)
    with writer:
        n = 0
        start = time.monotonic()
        while not stop.is_set():
            t = np.arange(n, n + 200) / 20_000
            batch = np.empty(200, SIGNAL)
            batch["ts"] = t
            batch["value"] = (
                np.sin(2 * np.pi * t / 2.5) + 0.3 * np.sin(2 * np.pi * t * 3) + rng.normal(0, 0.05, 200)
            )
            writer.extend(batch)
            n += 200
            time.sleep(max(0.0, n / 20_000 - (time.monotonic() - start)))


def sparkline(values: np.ndarray, width: int) -> str:
    """``values`` in ``width`` characters, each the mean of its bucket, scaled min..max."""
    if len(values) == 0:
        return "(no records yet)"
    buckets = np.array_split(values.astype(np.float64), min(width, len(values)))
    means = np.array([b.mean() for b in buckets])
    low, high = means.min(), means.max()
    scaled = (means - low) / (high - low) if high > low else np.zeros_like(means)
    return "".join(BARS[int(s * (len(BARS) - 1))] for s in scaled)


def window(snap: Any, field: str | None) -> np.ndarray:
    """The window's values of ``field`` (the record itself for a plain dtype), one array."""
    parts = [c.values[field] if field else c.values for c in snap.chunks()]
    return np.concatenate(parts) if parts else np.empty(0)


def draw(log: AtomicLog, field: str | None, frames: int, every: float, png: str | None) -> None:
    width = max(20, min(shutil.get_terminal_size().columns, 200) - 2)
    snap = log.snapshot()
    deadline = time.monotonic() + 10
    while not len(snap) and time.monotonic() < deadline:  # a writer just started needs a moment
        time.sleep(0.05)
        snap.refresh()
    values = np.empty(0)
    for frame in range(frames):
        time.sleep(every)
        snap.refresh()
        values = window(snap, field)
        stats = f"min {values.min():.3f} max {values.max():.3f} last {values[-1]:.3f}" if len(values) else ""
        print(f"frame {frame + 1}: {len(values):,} records  {stats}")
        print(" " + sparkline(values, width), flush=True)
    if png:
        save_png(values, png, f"{log.name}: {field or 'value'} over the latest window")


def save_png(values: np.ndarray, path: str, title: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        print("--png needs matplotlib (pip install matplotlib); no chart written", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.plot(values, linewidth=0.6)
    ax.set_title(title)
    ax.set_xlabel("record in window (oldest first)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"chart written to {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--attach", metavar="NAME", help="draw an existing log instead of starting a writer")
    parser.add_argument("--field", help="the field to draw (default: value)")
    parser.add_argument("--frames", type=int, default=5, help="frames to draw (default 5)")
    parser.add_argument("--every", type=float, default=0.5, help="seconds between frames (default 0.5)")
    parser.add_argument("--png", metavar="PATH", help="also save the last window as a PNG chart (matplotlib)")
    args = parser.parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")  # a terminal without UTF-8 gets '?' bars, not a crash

    if args.attach:
        with AtomicLog.attach(args.attach) as log:
            field = args.field or ("value" if log.dtype.names and "value" in log.dtype.names else None)
            draw(log, field, args.frames, args.every, args.png)
        return 0

    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    with AtomicLog.new(retained=40_000, segment=4_096, dtype=SIGNAL) as log:
        writer = ctx.Process(target=produce, args=(log, stop))
        writer.start()
        try:
            draw(log, args.field or "value", args.frames, args.every, args.png)
        finally:
            stop.set()
            writer.join(timeout=5)
            if writer.is_alive():
                writer.kill()
                writer.join()
    return 0 if writer.exitcode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
