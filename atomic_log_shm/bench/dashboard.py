"""What the live dashboard (``atomic-log dashboard``) costs the machine and the writer.

    python -m atomic_log_shm.bench.dashboard           # about two minutes
    python -m atomic_log_shm.bench.dashboard --quick   # a smoke run (seconds)

The dashboard is an ``atomic-log dashboard`` process, as a user runs it. Its client is a
thread here that reads a log's event stream as the page does (at 800 pixel columns, a
wide chart), while this process asks for the list of logs every 2 s, as the page does.
Records are a float64 ``ts`` (seconds since the epoch) and nine float32 fields, like the
three services' cpu, memory and latency of the documentation's screenshot.

  C  a log written at 4,000 records/s by a thread here, with a minute of history: the
     server's CPU (utime + stime from /proc/PID/stat) over S seconds while the client
     streams windows of 10 s (40,000 records), 25 s (100,000) and 60 s (240,000), and
     the frames a second the client got
  W  the writer's rate, one record per append, to a log the client streams (a window of
     100,000 records, all the log retains) and to one nobody streams, in turns of 0.5 s:
     medians, per wall second and per second of the writer's CPU; the rest of the
     machine's load falls on both alike
  M  as W, with an ``atomic-log export`` process of the streamed log (no label) scraped
     every second besides the page: everything the monitoring page offers at once; also
     the server's and the exporter's CPU, and the frames the client got

Every process and log made here is stopped or removed on the way out.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from atomic_log_shm import AtomicLog, Writer
from atomic_log_shm.bench.harness import stop_command

FIELDS = [
    f"{service}_{metric}" for service in ("api", "db", "cache") for metric in ("cpu", "mem_mb", "p99_ms")
]
DTYPE = np.dtype([("ts", "<f8")] + [(field, "<f4") for field in FIELDS])
CLI = [sys.executable, "-m", "atomic_log_shm", "dashboard"]
COLUMNS = 800  # pixel columns the client asks for
LIST_EVERY = 2.0  # seconds between two looks at the list of logs, as the page's
RATE = 4_000  # records a second in C
WINDOWS = (10, 25, 60)  # seconds, in C
WAIT = 60.0  # the longest any one step may take


def _records(ts: Any) -> Any:
    out = np.zeros(len(ts), DTYPE)
    out["ts"] = ts
    for k, field in enumerate(FIELDS):
        out[field] = 10 * (k + 1) + np.sin(ts / (5 + k))
    return out


class _Stream:
    """A client of one event stream, in a thread: counts the frames it gets until close()."""

    def __init__(self, address: tuple[str, int], name: str, seconds: float) -> None:
        self._sock = socket.create_connection(address, timeout=WAIT)
        path = f"/api/stream?log={name}&seconds={seconds}&columns={COLUMNS}"
        self._sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {address[0]}:{address[1]}\r\n\r\n".encode())
        self.frames = 0
        self._thread = threading.Thread(target=self._read)
        self._thread.start()

    def _read(self) -> None:
        with contextlib.suppress(OSError), self._sock.makefile("rb") as lines:
            for line in lines:
                if line == b"event: frame\n":
                    self.frames += 1

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # the reader sees the end of the stream
        self._thread.join(WAIT)
        self._sock.close()


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


@contextlib.contextmanager
def _dashboard(*names: str) -> Iterator[tuple[int, str]]:
    """An ``atomic-log dashboard NAMES`` process: its pid and URL. Stopped on the way out."""
    proc = subprocess.Popen([*CLI, *names, "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split()[2]
        yield proc.pid, url
    finally:
        stop_command(proc, WAIT)


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rstrip("/").rsplit(":", 1)
    return host, int(port)


def _list(url: str) -> None:
    with urllib.request.urlopen(url + "api/logs", timeout=WAIT) as response:
        response.read()


@contextlib.contextmanager
def _paced(writer: Writer, rate: int, history: float) -> Iterator[None]:
    """A thread appending at ``rate`` records a second, timestamps from ``history`` s ago."""
    stop = threading.Event()
    start = time.time() - history

    def write() -> None:
        written = 0
        while not stop.is_set():
            due = int((time.time() - start) * rate)
            writer.extend(_records(start + np.arange(written, due) / rate))
            written = due
            stop.wait(0.01)

    thread = threading.Thread(target=write)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def bench_c(seconds: float) -> dict[str, float]:
    name = f"alogbench-{os.getpid()}-{secrets.token_hex(4)}"
    results = {}
    writer, log = AtomicLog.new_claimed(retained=300_000, segment=16_384, dtype=DTYPE, name=name)
    try:
        with writer, _paced(writer, RATE, max(WINDOWS)), _dashboard(name) as (pid, url):
            idle = _cpu_seconds(pid)
            time.sleep(seconds)
            results["no_client_cpu_pct"] = 100 * (_cpu_seconds(pid) - idle) / seconds
            for window in WINDOWS:
                stream = _Stream(_address(url), name, window)
                try:
                    time.sleep(1.0)  # the first frame, and the rate's first estimate
                    frames, cpu, began = stream.frames, _cpu_seconds(pid), time.monotonic()
                    while time.monotonic() - began < seconds:
                        _list(url)
                        time.sleep(LIST_EVERY)
                    took = time.monotonic() - began
                    results[f"w{window}s_cpu_pct"] = 100 * (_cpu_seconds(pid) - cpu) / took
                    results[f"w{window}s_frames_per_s"] = (stream.frames - frames) / took
                finally:
                    stream.close()
    finally:
        log.unlink()
        log.close()
    return results


def _append_rate(writer: Writer, seconds: float) -> tuple[float, float]:
    """Records a second, one append each, for ``seconds``: per second of wall time, and per
    second of this thread's CPU time (what the writer itself spends a record)."""
    record = tuple(_records(np.array([time.time()]))[0].tolist())  # a tuple: append's fast path
    append, clock = writer.append, time.perf_counter
    n = 0
    began, cpu = clock(), time.thread_time()
    while clock() - began < seconds:
        for _ in range(1024):
            append(record)
        n += 1024
    return n / (clock() - began), n / (time.thread_time() - cpu)


def bench_w(seconds: float, rounds: int, exported: bool = False) -> dict[str, float]:
    """Turns of ``seconds`` on a log nobody reads and on one the client streams (and, if
    ``exported``, an exporter serves to a scraper), ``rounds`` times, the order swapped
    each round so that drift in the machine's load falls on both alike."""
    names = [f"alogbench-{os.getpid()}-{secrets.token_hex(4)}" for _ in range(2)]
    logs = [AtomicLog.new_claimed(retained=100_000, segment=8192, dtype=DTYPE, name=n) for n in names]
    rates: list[list[tuple[float, float]]] = [[], []]
    try:
        for writer, _ in logs:
            writer.extend(_records(time.time() + np.arange(100_000) * 1e-6))  # a full window
        with contextlib.ExitStack() as stack:
            pid, url = stack.enter_context(_dashboard(*names))
            watchers = [pid]
            if exported:
                watchers.append(stack.enter_context(_scraped_exporter(names[1])))
            stream = _Stream(_address(url), names[1], 60)
            stack.callback(stream.close)
            cpu, began = [_cpu_seconds(watcher) for watcher in watchers], time.perf_counter()
            for r in range(rounds):
                for side in (0, 1) if r % 2 == 0 else (1, 0):
                    rates[side].append(_append_rate(logs[side][0], seconds))
            took = time.perf_counter() - began
            cpu = [(_cpu_seconds(w) - before) / took for w, before in zip(watchers, cpu, strict=True)]
            frames = stream.frames / took
    finally:
        for writer, log in logs:
            writer.close()
            log.unlink()
            log.close()
    alone, watched = (statistics.median(r[0] for r in side) for side in rates)
    alone_cpu, watched_cpu = (statistics.median(r[1] for r in side) for side in rates)
    return {
        "alone_per_s": alone,
        "streamed_per_s": watched,
        "ratio": watched / alone,
        "alone_per_cpu_s": alone_cpu,
        "streamed_per_cpu_s": watched_cpu,
        "cpu_ratio": watched_cpu / alone_cpu,
        "rounds": rounds,
        "server_cpu": cpu[0],
        **({"exporter_cpu": cpu[1]} if exported else {}),
        "frames_per_s": frames,
    }


@contextlib.contextmanager
def _scraped_exporter(name: str) -> Iterator[int]:
    """An ``atomic-log export NAME`` process (no label) scraped every second by another
    process, as Prometheus would: the exporter's pid."""
    from atomic_log_shm.bench import prometheus

    with prometheus._exporter(name, None) as (proc, url):
        scrape = [sys.executable, "-c", prometheus.SCRAPER, url, "1.0"]
        scraper = subprocess.Popen(scrape, stdout=subprocess.PIPE)
        try:
            assert scraper.stdout is not None
            scraper.stdout.readline()  # its first scrape is done: everything has started
            yield proc.pid
        finally:
            stop_command(scraper, WAIT)
            if scraper.stdout is not None:
                scraper.stdout.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m atomic_log_shm.bench.dashboard", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="short runs: a smoke test")
    parser.add_argument("--only", default="CWM", help="scenarios to run (default CWM)")
    args = parser.parse_args(argv)
    for key in args.only.upper():
        if key == "C":
            results = bench_c(1.0 if args.quick else 10.0)
        elif key == "W":
            results = bench_w(0.25 if args.quick else 0.5, 2 if args.quick else 12)
        elif key == "M":
            results = bench_w(0.25 if args.quick else 0.5, 2 if args.quick else 40, exported=True)
        else:
            parser.error(f"no scenario {key!r}; choose from CWM")
        shown = (f"{k}={v:,.0f}" if abs(v) >= 100 else f"{k}={v:.2f}" for k, v in results.items())
        print(f"{key}: " + "  ".join(shown), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
