"""The machinery of a run with reader processes: control words, the reader's side of them,
the writer side's interface, and starting, waiting for, collecting and stopping readers.

The bench and its readers share one small region of int64 control words: ``STOP`` (0 run;
1 the writer is done, lossy readers drain and stop; 2 abort now), ``GO`` (1 once the bench
lets a writer process start: D's) and, per reader slot, ``READY + slot`` (1 attached, 2 has
seen the transport work). A reader never outlives the
bench: it checks the bench's pid and a deadline as it goes, and whatever happens the bench
stops its readers (join, then terminate, then kill). Transports live in ``transports`` and
``peers``; the scenarios that use them in ``followed``.
"""

from __future__ import annotations

import os
import queue
import subprocess
import time
from collections.abc import Callable, Sequence
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import Any

import numpy as np
import numpy.typing as npt

from .workload import BenchError, Records

# Control words shared by the bench and its readers (int64 each).
STOP = 0  # 0 run; 1 the writer is done (lossy readers drain and stop); 2 abort now
GO = 1  # 1 once the bench lets a writer process start publishing (D's writer is a process)
READY = 8  # READY + slot: 1 = reader attached, 2 = reader has seen the transport work
MAX_READERS = 8
WAIT = 0.1  # seconds a blocking peer reader waits before it looks at the control words
CTRL_BYTES = 8 * (READY + MAX_READERS)


class Follow:
    """What a reader process needs besides its transport: control words, a latency table."""

    def __init__(
        self, words: memoryview, slot: int, latency_n: int, main_pid: int, deadline: float, skip: int = 0
    ) -> None:
        self.words = words
        self.slot = slot
        self.lat: npt.NDArray[np.float64] | None = np.full(latency_n, np.nan) if latency_n else None
        self.main_pid = main_pid
        self.deadline = deadline
        self.skip = skip  # records 0..skip-1 are warm-up: left out of the result's latencies

    def ready(self, level: int) -> None:
        self.words[READY + self.slot] = level

    def check(self) -> None:
        """Raise if the bench is gone or the run overran: never outlive the bench."""
        if time.monotonic() > self.deadline:
            raise BenchError("reader deadline passed")
        try:
            os.kill(self.main_pid, 0)
        except ProcessLookupError:
            raise BenchError("the bench process is gone") from None

    def record(self, values: Records, now: float) -> None:
        lat = self.lat
        assert lat is not None
        seqs = values["seq"]
        keep = (seqs >= 0) & (seqs < len(lat))
        lat[seqs[keep]] = now - values["ts"][keep]

    def record_one(self, seq: int, ts: float, now: float) -> None:
        lat = self.lat
        assert lat is not None
        if 0 <= seq < len(lat):
            lat[seq] = now - ts

    def result(self, seen: int, last: int, polls: int) -> dict[str, Any]:
        out: dict[str, Any] = {"seen": seen, "last": last, "polls": polls}
        if self.lat is not None:
            lat = self.lat[self.skip :]
            out["lat"] = lat[~np.isnan(lat)]
        return out


class Publisher:
    """One transport's writer side: set up for n readers, timed loops, sentinels, cleanup."""

    kind = ""
    warmup_needed = False

    def __init__(self, ctx: BaseContext, n_readers: int) -> None:
        self.n_readers = n_readers

    def reader_cfgs(self) -> list[dict[str, Any]]:
        return [{} for _ in range(self.n_readers)]

    def warmup(self) -> None:
        pass

    def t_loop(self, seconds: float) -> tuple[int, float]:
        """Publish as fast as possible for ``seconds``: (records, elapsed).

        Each publisher writes this loop out in full, on purpose: one shared loop calling a
        function per record would add the same call to every contender and blur the very
        differences T measures.
        """
        raise NotImplementedError

    def count_loop(self, n: int) -> float:
        """Publish ``n`` records as fast as possible, each stamped: seconds taken (for C)."""
        raise NotImplementedError

    def sender(self) -> Callable[[float, int], None]:
        """Publish one record ``(ts, i)``: for the paced loop of L and F."""
        raise NotImplementedError

    def finish(self) -> None:
        """After the last record: sentinels for the queues."""

    def close(self) -> None:
        pass


JOIN_GRACE = 5.0  # seconds every process together gets to end on its own
KILL_GRACE = 2.0  # then, together, after SIGTERM; then after SIGKILL


def stop_processes(procs: Sequence[BaseProcess]) -> None:
    """End every process: join, then terminate, then kill, each step one shared deadline
    (hundreds of stuck processes take seconds, not a grace period each)."""
    steps: tuple[tuple[Callable[[BaseProcess], None] | None, float], ...] = (
        (None, JOIN_GRACE),
        (BaseProcess.terminate, KILL_GRACE),
        (BaseProcess.kill, KILL_GRACE),
    )
    for send, grace in steps:
        alive = [proc for proc in procs if proc.is_alive()]
        if not alive:
            return
        if send is not None:
            for proc in alive:
                send(proc)
        deadline = time.monotonic() + grace
        for proc in alive:
            proc.join(timeout=max(0.0, deadline - time.monotonic()))


def stop_command(proc: subprocess.Popen[Any], grace: float = 60.0) -> None:
    """End a command the bench started (a server, an exporter): SIGTERM, then, after
    ``grace`` seconds, SIGKILL."""
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def reader_errors(results: Any) -> str:
    errors: list[str] = []
    while True:
        try:
            slot, out = results.get(timeout=0.2)
        except queue.Empty:
            return "; ".join(errors) or "no message"
        if "error" in out:
            errors.append(f"reader {slot}: {out['error']}")


def wait_ready(words: memoryview, procs: Sequence[BaseProcess], pub: Publisher, results: Any) -> None:
    deadline = time.monotonic() + 60
    n = len(procs)
    while True:
        levels = [words[READY + k] for k in range(n)]
        if all(level >= 2 for level in levels):
            return
        if any(proc.exitcode is not None for proc in procs):
            raise BenchError(f"a reader exited before it was ready: {reader_errors(results)}")
        if time.monotonic() > deadline:
            raise BenchError(f"readers not ready after 60 s (states {levels})")
        if pub.warmup_needed and all(level >= 1 for level in levels):
            pub.warmup()
        time.sleep(0.001)


def collect(results: Any, n: int, timeout: float) -> list[dict[str, Any]]:
    outs: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while len(outs) < n:
        try:
            slot, out = results.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            raise BenchError(f"{n - len(outs)} reader(s) gave no result within {timeout:.0f} s") from None
        if "error" in out:
            raise BenchError(f"reader {slot}: {out['error']}\n{out.get('trace', '')}")
        outs[slot] = out
    return [outs[k] for k in range(n)]
