"""A market-data ticker: a writer of trades, a reader printing each symbol's VWAP.

    python examples/ticker.py [--duration SECONDS] [--rate TICKS_PER_S]

A writer process publishes trades (time, symbol, price, quantity) as a structured dtype,
prices walking randomly per symbol. The main process reads: twice a second it refreshes
its snapshot and prints, per symbol, the volume-weighted average price over the retained
window (sum of price * quantity over sum of quantity), the last price and the trade
count. The sums are computed chunk by chunk on numpy views of shared memory: the window is
never copied out.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from typing import Any

import numpy as np

from atomic_log_shm import AtomicLog

TICK = np.dtype([("ts", "f8"), ("symbol", "S8"), ("price", "f8"), ("qty", "i4")])
SYMBOLS = np.array([b"AAPL", b"AMZN", b"GOOG", b"MSFT", b"NVDA"], dtype="S8")  # sorted: searchsorted below
START = np.array([190.0, 180.0, 170.0, 420.0, 120.0])


def trade(log: AtomicLog, rate: float, stop: Any) -> None:
    """The writer process: batches of 100 trades of random symbols, paced to ``rate``."""
    writer = log.try_claim_writer()
    assert writer is not None, "the ticker's log already has a writer"
    rng = np.random.default_rng(11)
    prices = START.copy()
    with writer:
        sent = 0
        start = time.monotonic()
        while not stop.is_set():
            batch = np.empty(100, TICK)
            which = rng.integers(0, len(SYMBOLS), len(batch))
            for s in range(len(SYMBOLS)):  # each symbol's price walks on from its last trade
                mine = which == s
                path = prices[s] * np.cumprod(1 + rng.normal(0, 0.00005, mine.sum()))
                batch["price"][mine] = path.round(2)
                prices[s] = path[-1] if len(path) else prices[s]
            batch["ts"] = time.time()
            batch["symbol"] = SYMBOLS[which]
            batch["qty"] = rng.integers(1, 20, len(batch)) * 100
            writer.extend(batch)
            sent += len(batch)
            time.sleep(max(0.0, sent / rate - (time.monotonic() - start)))


def vwap(snap: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per symbol over the snapshot's window: (VWAP, last price, trades, volume)."""
    notional = np.zeros(len(SYMBOLS))
    volume = np.zeros(len(SYMBOLS))
    trades = np.zeros(len(SYMBOLS), dtype=np.int64)
    last = np.full(len(SYMBOLS), np.nan)
    for chunk in snap.chunks():  # oldest first, so later chunks overwrite "last"
        ticks = chunk.values
        index = np.searchsorted(SYMBOLS, ticks["symbol"])
        qty = ticks["qty"].astype(np.float64)
        notional += np.bincount(index, ticks["price"] * qty, len(SYMBOLS))
        volume += np.bincount(index, qty, len(SYMBOLS))
        trades += np.bincount(index, minlength=len(SYMBOLS))
        for s in range(len(SYMBOLS)):
            hits = np.flatnonzero(index == s)
            if len(hits):
                last[s] = ticks["price"][hits[-1]]
    with np.errstate(invalid="ignore", divide="ignore"):
        return notional / volume, last, trades, volume


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=2.0, help="seconds to run (default 2)")
    parser.add_argument("--rate", type=float, default=50_000, help="trades a second (default 50000)")
    args = parser.parse_args(argv)

    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    with AtomicLog.new(retained=100_000, segment=8_192, dtype=TICK) as log:
        writer = ctx.Process(target=trade, args=(log, args.rate, stop))
        writer.start()
        try:
            snap = log.snapshot()
            end = time.monotonic() + args.duration
            while time.monotonic() < end:
                time.sleep(0.5)
                snap.refresh()
                if not len(snap):
                    print("window: no trades yet (the writer is starting)")
                    continue
                prices, last, trades, volume = vwap(snap)
                print(f"window: {len(snap):,} trades")
                for symbol, p, lp, n, v in zip(SYMBOLS, prices, last, trades, volume, strict=True):
                    name = symbol.decode()
                    print(f"  {name:<5} VWAP {p:9.3f}  last {lp:8.2f}  {n:>7,} trades  {v:>12,.0f} shares")
        finally:
            stop.set()
            writer.join(timeout=5)
            if writer.is_alive():
                writer.kill()
                writer.join()
    return 0 if writer.exitcode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
