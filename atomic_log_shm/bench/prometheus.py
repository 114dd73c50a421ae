"""Benchmarks of the Prometheus exporter (``atomic_log_shm.prometheus``, ``atomic-log export``).

    python -m atomic_log_shm.bench.prometheus             # both scenarios (about a minute)
    python -m atomic_log_shm.bench.prometheus --quick     # a smoke run (seconds)
    python -m atomic_log_shm.bench.prometheus --only S --json out.json

Records are 40 bytes, five numeric fields and a label field of 20 distinct values:
``[('ts','<f8'),('seq','<i8'),('price','<f8'),('qty','<i4'),('latency_us','<f4'),
('sensor','<i8')]``, and the same with ``('sym','S8')`` for ``sensor`` (a label of bytes;
appending such records one at a time takes numpy's path, far slower: W uses ``sensor``).
Logs retain 100,000 records in segments of 8,192.

  S  one scrape of a log holding 100,000 records: ``LogCollector.collect()`` without a
     label, with ``label="sensor"`` and with ``label="sym"``, and the text a registry
     makes of it (``generate_latest``): medians of repeats, wall and CPU time; a GET of
     ``/metrics`` from an ``atomic-log export --label sym`` process: the median wall time,
     and the exporter's mean CPU time per GET
  W  the writer's rate, one record per append, in turns of a few seconds: with an
     ``atomic-log export --label sensor`` process of its log scraped every second by
     another process, and with neither process running; medians per wall second and per
     CPU second of the writer, the exporter's CPU time per second, and the scrapes' duration

The writer is this process. Every process and shared-memory log made here is stopped or
removed on the way out.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from atomic_log_shm import AtomicLog, LogNotFoundError, Writer, remove_log
from atomic_log_shm.bench.harness import stop_command

_NUMBERS = [("ts", "<f8"), ("seq", "<i8"), ("price", "<f8"), ("qty", "<i4"), ("latency_us", "<f4")]
DTYPE = np.dtype([*_NUMBERS, ("sensor", "<i8")])
BYTES_DTYPE = np.dtype([*_NUMBERS, ("sym", "S8")])
assert DTYPE.itemsize == BYTES_DTYPE.itemsize == 40
LABELS = 20  # distinct values of the label field
RETAINED = 100_000
SEGMENT = 8_192
CLI = [sys.executable, "-m", "atomic_log_shm"]
WAIT = 60.0  # the longest any one step may take
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# A scraper in a process of its own (as Prometheus is): GET the URL every INTERVAL
# seconds, print how long each GET took.
SCRAPER = r"""
import sys, time, urllib.request
url, interval = sys.argv[1], float(sys.argv[2])
while True:
    began = time.monotonic()
    urllib.request.urlopen(url, timeout=60).read()
    took = time.monotonic() - began
    print(took, flush=True)
    time.sleep(max(0.0, interval - took))
"""


def _records(first: int, count: int, dtype: np.dtype[Any] = DTYPE) -> npt.NDArray[Any]:
    out = np.zeros(count, dtype)
    seq = np.arange(first, first + count)
    out["ts"] = seq * 1e-3
    out["seq"] = seq
    out["price"] = 100 + seq % 997 * 0.25
    out["qty"] = seq % 50
    out["latency_us"] = seq % 400 * 0.5
    if dtype.names is not None and "sym" in dtype.names:
        out["sym"] = np.char.mod(b"SYM%02d", seq % LABELS)
    else:
        out["sensor"] = seq % LABELS
    return out


@contextlib.contextmanager
def _log(dtype: np.dtype[Any] = DTYPE) -> Iterator[tuple[Writer, AtomicLog]]:
    """A log of ``dtype`` holding RETAINED records, removed on the way out."""
    name = f"alogbench-{os.getpid()}-{secrets.token_hex(4)}-prom"
    writer, log = AtomicLog.new_claimed(retained=RETAINED, segment=SEGMENT, dtype=dtype, name=name)
    try:
        for first in range(0, RETAINED, 10_000):
            writer.extend(_records(first, 10_000, dtype))
        assert len(log.snapshot()) == RETAINED
        yield writer, log
    finally:
        writer.close()
        log.close()
        with contextlib.suppress(LogNotFoundError):
            remove_log(name)


@contextlib.contextmanager
def _exporter(name: str, label: str | None) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``atomic-log export NAME [--label LABEL]`` on a free port: the process and its URL."""
    proc = subprocess.Popen(
        [*CLI, "export", name, "--port", "0", *(["--label", label] if label else [])],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if " at " not in line:
            raise RuntimeError(f"atomic-log export did not start: {line!r}")
        yield proc, line.rsplit(" at ", 1)[1].strip()
    finally:
        stop_command(proc, WAIT)


def _medians_ms(run: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """The median time ``run()`` takes, in ms: wall time, and this process's CPU time
    (which a busy machine's scheduling does not inflate)."""
    wall, cpu = [], []
    for _ in range(repeats):
        began, began_cpu = time.perf_counter(), time.process_time()
        run()
        wall.append(time.perf_counter() - began)
        cpu.append(time.process_time() - began_cpu)
    return statistics.median(wall) * 1e3, statistics.median(cpu) * 1e3


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime: fields 14 and 15


# Scenarios ------------------------------------------------------------------------------


def bench_s(repeats: int) -> dict[str, float]:
    from prometheus_client import CollectorRegistry, generate_latest

    from atomic_log_shm.prometheus import LogCollector

    results: dict[str, float] = {"records": float(RETAINED)}
    with _log() as (_, log), _log(BYTES_DTYPE) as (_, bytes_log):
        for name, label in ((log.name, None), (log.name, "sensor"), (bytes_log.name, "sym")):
            key = label or "plain"
            with LogCollector([name], label=label) as collector:
                registry = CollectorRegistry()
                registry.register(collector)
                results[f"{key}_series"] = float(sum(len(family.samples) for family in collector.collect()))
                wall, cpu = _medians_ms(collector.collect, repeats)
                results[f"{key}_collect_ms"], results[f"{key}_collect_cpu_ms"] = wall, cpu
                wall, cpu = _medians_ms(functools.partial(generate_latest, registry), repeats)
                results[f"{key}_text_ms"], results[f"{key}_text_cpu_ms"] = wall, cpu
        with _exporter(bytes_log.name, "sym") as (proc, url):

            def get() -> bytes:
                with urllib.request.urlopen(url, timeout=WAIT) as answer:
                    return bytes(answer.read())

            get()
            before = _cpu_seconds(proc.pid)
            results["sym_http_ms"] = _medians_ms(get, repeats)[0]
            results["sym_http_exporter_cpu_ms"] = (_cpu_seconds(proc.pid) - before) / repeats * 1e3  # a mean
    return results


def _append_rate(writer: Writer, seconds: float) -> tuple[float, float]:
    """Records a second of one append each: per second of wall time, and per second of
    this process's CPU time."""
    append = writer.append
    clock = time.perf_counter
    records = _records(0, LABELS * 50).tolist()  # plain tuples, as an application has them
    n = 0
    began, cpu = clock(), time.process_time()
    deadline = began + seconds
    while True:
        for record in records:
            append(record)
        n += len(records)
        if clock() >= deadline:
            break
    return n / (clock() - began), n / (time.process_time() - cpu)


def _exported_rate(
    writer: Writer, name: str, seconds: float, interval: float
) -> tuple[float, float, float, list[float]]:
    """``_append_rate`` while an exporter of log ``name`` is scraped every ``interval``
    seconds; also the exporter's CPU seconds a second, and how long each scrape took."""
    with _exporter(name, "sensor") as (proc, url):
        scraper = subprocess.Popen(
            [sys.executable, "-c", SCRAPER, url, str(interval)], stdout=subprocess.PIPE, text=True
        )
        try:
            assert scraper.stdout is not None
            scraper.stdout.readline()  # its first scrape is done: everything has started
            before, began = _cpu_seconds(proc.pid), time.perf_counter()
            wall, cpu = _append_rate(writer, seconds)
            exporter_cpu = (_cpu_seconds(proc.pid) - before) / (time.perf_counter() - began)
        finally:
            stop_command(scraper, WAIT)
        scrapes = [float(line) for line in scraper.stdout.read().split()]
    return wall, cpu, exporter_cpu, scrapes


def bench_w(seconds: float, rounds: int, interval: float) -> dict[str, float]:
    """One log; turns of ``seconds`` with the exporter scraped every ``interval`` seconds
    and with no exporter at all, ``rounds`` times, the order swapped each round so that
    drift in the machine's load falls on both alike."""
    alone: list[tuple[float, float]] = []
    exported: list[tuple[float, float]] = []
    exporter_cpu: list[float] = []
    scrapes: list[float] = []
    with _log() as (writer, log):
        for r in range(rounds):
            for with_exporter in (True, False) if r % 2 == 0 else (False, True):
                if with_exporter:
                    wall, cpu, spent, took = _exported_rate(writer, log.name, seconds, interval)
                    exported.append((wall, cpu))
                    exporter_cpu.append(spent)
                    scrapes += took
                else:
                    alone.append(_append_rate(writer, seconds))
    wall_alone, cpu_alone = (statistics.median(x[i] for x in alone) for i in (0, 1))
    wall_with, cpu_with = (statistics.median(x[i] for x in exported) for i in (0, 1))
    return {
        "alone_per_s": wall_alone,
        "exported_per_s": wall_with,
        "ratio": wall_with / wall_alone,
        "alone_per_cpu_s": cpu_alone,
        "exported_per_cpu_s": cpu_with,
        "cpu_ratio": cpu_with / cpu_alone,
        "exporter_cpu_per_s": statistics.median(exporter_cpu),
        "scrape_ms_while_writing": statistics.median(scrapes) * 1e3 if scrapes else float("nan"),
        "scrapes": float(len(scrapes)),
        "rounds": float(rounds),
    }


# Running --------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m atomic_log_shm.bench.prometheus", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="short runs: a smoke test")
    parser.add_argument("--only", default="SW", help="scenarios to run, e.g. S (default SW)")
    parser.add_argument(
        "--interval", type=float, default=1.0, help="seconds between two scrapes in W (default 1)"
    )
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    args = parser.parse_args(argv)
    quick = args.quick
    steps: dict[str, Callable[[], dict[str, float]]] = {
        "S": lambda: bench_s(3 if quick else 51),
        "W": lambda: bench_w(0.5 if quick else 3.0, 2 if quick else 10, args.interval),
    }
    results: dict[str, dict[str, float]] = {}
    for key in args.only.upper():
        if key not in steps:
            parser.error(f"no scenario {key!r}; choose from {''.join(steps)}")
        results[key] = steps[key]()
        shown = (f"{k}={v:,.0f}" if abs(v) >= 100 else f"{k}={v:.3f}" for k, v in results[key].items())
        print(f"{key}: " + "  ".join(shown), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
