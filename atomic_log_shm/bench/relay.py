"""Benchmarks of the Redis relay (``atomic_log_shm.relay``): a log, a relay, Redis, a mirror.

    python -m atomic_log_shm.bench.relay               # every scenario (about a minute)
    python -m atomic_log_shm.bench.relay --quick       # a smoke run (seconds)
    python -m atomic_log_shm.bench.relay --only TL --json out.json

Records are the benchmark suite's 32 bytes, ``[('ts','<f8'),('seq','<i8'),('price','<f8'),
('qty','<i8')]``; ``ts`` is ``time.perf_counter()`` (CLOCK_MONOTONIC, one clock for every
process on Linux) at append. Redis is a ``redis-server`` started here on a free loopback
port, persistence off; the relay and the mirror are ``atomic-log relay`` and ``atomic-log
mirror`` processes, as a user runs them; the writer is this process.

  X  one XADD per record, a round trip each (a naive relay): records/s
  T  a burst of N records appended in batches of 1,000 to a log that retains them all, the
     relay and the mirror running: N / (time from the first append until the mirror holds
     the last record), records/s; and a paced run at 1,000,000 records/s for its loss
  L  10,000 records/s, one append each; a follower of the mirror blocked in ``wait()``:
     append -> that ``wait()`` returns, p50 / p99 / p99.9
  W  the writer's rate, one record per append, to a log a relay follows (no mirror) and to
     one nobody follows, in turns of 0.5 s: medians, per wall second and per CPU second

Every process and shared-memory log made here is stopped or removed on the way out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from atomic_log_shm import AtomicLog, LogNotFoundError, Snapshot, remove_log
from atomic_log_shm.bench.harness import stop_command
from atomic_log_shm.relay import stream_key

DTYPE = np.dtype([("ts", "<f8"), ("seq", "<i8"), ("price", "<f8"), ("qty", "<i8")])
assert DTYPE.itemsize == 32
CLI = [sys.executable, "-m", "atomic_log_shm"]
SEGMENT = 1 << 16
RETAINED = 1 << 20
WAIT = 60.0  # the longest any one step may take


def _records(first: int, count: int) -> npt.NDArray[Any]:
    out = np.zeros(count, DTYPE)
    out["seq"] = np.arange(first, first + count)
    out["price"], out["qty"] = 101.25, 7
    return out


def _until(condition: Callable[[], Any], what: str, nap: float = 0.001) -> Any:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(nap)
    raise TimeoutError(f"timed out waiting for {what}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _redis_server(directory: Path) -> Iterator[str]:
    """A redis-server on a free loopback port, persistence off; yields its URL."""
    import redis

    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit("needs redis-server (Debian: apt-get install redis-server)")
    port = _free_port()
    args = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    with open(directory / "redis.log", "wb") as out:
        proc = subprocess.Popen([*args, "--dir", str(directory)], stdout=out, stderr=subprocess.STDOUT)
    try:
        client = redis.Redis(port=port)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        _until(answers, "redis-server", nap=0.02)
        client.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop_command(proc, WAIT)


class _Command:
    """An ``atomic-log`` command in a process of its own, stderr to a file."""

    def __init__(self, directory: Path, *args: str) -> None:
        self.stderr_path = directory / f"{args[0]}-{secrets.token_hex(4)}.err"
        with open(self.stderr_path, "w") as err:
            self.proc = subprocess.Popen([*CLI, *args], stdout=subprocess.DEVNULL, stderr=err)

    def said(self, text: str) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.proc.args!r} exited: {self.stderr_path.read_text()}")
        return text in self.stderr_path.read_text()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class _Setup:
    """Logs, streams and processes of one scenario, all removed or stopped at the end."""

    def __init__(self, url: str, directory: Path) -> None:
        self.url = url
        self.directory = directory
        self.names: list[str] = []
        self.commands: list[_Command] = []

    def name(self) -> str:
        self.names.append(f"alogbench-{os.getpid()}-{secrets.token_hex(4)}-relay")
        return self.names[-1]

    def relay(self, name: str) -> _Command:
        command = _Command(self.directory, "relay", name, self.url)
        self.commands.append(command)
        _until(lambda: command.said("resuming at position"), "the relay to start", nap=0.01)
        return command

    def mirror(self, name: str, local: str) -> _Command:
        command = _Command(self.directory, "mirror", self.url, name, "--as", local)
        self.commands.append(command)
        return command

    def close(self) -> None:
        import redis

        for command in self.commands:
            command.stop()
        client = redis.Redis.from_url(self.url)
        for name in self.names:
            client.delete(stream_key(name), stream_key(name) + ":meta")
            with contextlib.suppress(LogNotFoundError):
                remove_log(name)
        client.close()


def _attached(name: str) -> AtomicLog:
    return AtomicLog.attach(name, timeout=WAIT)


def _reaches(snap: Snapshot, end: int) -> Callable[[], bool]:
    def reached() -> bool:
        snap.refresh()
        return snap.end >= end

    return reached


# Scenarios ------------------------------------------------------------------------------


def bench_x(setup: _Setup, seconds: float) -> dict[str, float]:
    """One XADD (MAXLEN ~ trimmed) per record, each waiting for its reply."""
    import redis

    client = redis.Redis.from_url(setup.url)
    key = stream_key(setup.name())
    record = _records(0, 1).tobytes()
    n = 0
    began = time.perf_counter()
    deadline = began + seconds
    while time.perf_counter() < deadline:
        for _ in range(100):
            client.xadd(key, {"d": record}, maxlen=RETAINED, approximate=True)
        n += 100
    rate = n / (time.perf_counter() - began)
    client.close()
    return {"records_per_s": rate}


def bench_t(setup: _Setup, total: int, paced_total: int) -> dict[str, float]:
    """Burst: ``total`` records as fast as extend() goes, the log retaining them all; the
    relay and mirror drain them. Paced: 1,000,000 records/s for ``paced_total`` records."""
    out: dict[str, float] = {}
    for mode, count, rate in (("burst", total, None), ("paced", paced_total, 1_000_000.0)):
        source, local = setup.name(), setup.name()
        writer, log = AtomicLog.new_claimed(
            retained=max(count, RETAINED), segment=SEGMENT, dtype=DTYPE, name=source
        )
        with log, writer:
            writer.append(_records(0, 1)[0])  # the mirror's log exists before the clock starts
            setup.relay(source)
            setup.mirror(source, local)
            mirrored = _attached(local)
            with mirrored:
                snap = mirrored.snapshot()
                _until(_reaches(snap, 1), "the first record on the mirror")
                batch = _records(1, 1000)
                began = time.perf_counter()
                for first in range(1, count, 1000):
                    batch["seq"] += 1000
                    writer.extend(batch[: min(1000, count - first)])
                    if rate is not None:
                        while time.perf_counter() < began + first / rate:
                            time.sleep(0.0005)
                written = time.perf_counter()
                _until(_reaches(snap, count), "the mirror to hold every record", nap=0.0002)
                arrived = time.perf_counter()
                seen_missed = mirrored.cursor("oldest").poll().missed  # 0 unless the window moved
        out[f"{mode}_records"] = count - 1
        out[f"{mode}_records_per_s"] = (count - 1) / (arrived - began)
        out[f"{mode}_writer_s"] = written - began
        out[f"{mode}_missed"] = float(seen_missed)
        out[f"{mode}_mirror_start"] = float(snap.start)
    return out


L_FOLLOWER = r"""
import sys, time
import numpy as np
from atomic_log_shm import AtomicLog

log = AtomicLog.attach(sys.argv[1])
count = int(sys.argv[2])
cursor = log.cursor("newest")
print("ready", flush=True)
lat = np.empty(count)
n = missed = 0
deadline = time.monotonic() + 120
while n < count and time.monotonic() < deadline:
    if not cursor.wait(timeout=0.5):
        continue
    now = time.perf_counter()
    batch = cursor.poll()
    missed += batch.missed
    for values in batch.arrays:
        k = min(len(values), count - n)
        lat[n : n + k] = now - values["ts"][:k]
        n += k
np.save(sys.argv[3], lat[:n])
print(missed, flush=True)
"""


def bench_l(setup: _Setup, count: int, rate: float) -> dict[str, float]:
    source, local = setup.name(), setup.name()
    writer, log = AtomicLog.new_claimed(retained=RETAINED, segment=SEGMENT, dtype=DTYPE, name=source)
    with log, writer:
        writer.append(_records(0, 1)[0])
        setup.relay(source)
        setup.mirror(source, local)
        with _attached(local) as mirrored:
            _until(_reaches(mirrored.snapshot(), 1), "the first record on the mirror")
        out_path = setup.directory / "latencies.npy"
        follower = subprocess.Popen(
            [sys.executable, "-c", L_FOLLOWER, local, str(count), str(out_path)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert follower.stdout is not None
            if follower.stdout.readline().strip() != "ready":
                raise RuntimeError("the follower did not start")
            record = _records(1, 1)[0]
            interval = 1.0 / rate
            began = time.perf_counter()
            for i in range(count):
                due = began + i * interval
                left = due - time.perf_counter()
                if left > 0:
                    time.sleep(left)
                record["seq"] = i + 1
                record["ts"] = time.perf_counter()
                writer.append(record)
            elapsed = time.perf_counter() - began
            missed = int(follower.communicate(timeout=WAIT)[0].strip())
        finally:
            if follower.poll() is None:
                follower.kill()
                follower.wait()
        lat = np.load(out_path) * 1e6
    p50, p99, p999 = np.percentile(lat, [50, 99, 99.9])
    return {
        "rate": count / elapsed,
        "records": float(len(lat)),
        "missed": float(missed),
        "p50_us": float(p50),
        "p99_us": float(p99),
        "p999_us": float(p999),
        "max_us": float(lat.max()),
    }


def _append_rate(writer: Any, seconds: float) -> tuple[float, float]:
    """Records a second of one append each, as the benchmark suite's T measures them: per
    second of wall time, and per second of this process's CPU time."""
    append = writer.append
    clock = time.perf_counter
    n = 0
    began, cpu = clock(), time.process_time()
    deadline = began + seconds
    while True:
        for i in range(n, n + 1024):
            append((clock(), i, 101.25, 7))
        n += 1024
        if clock() >= deadline:
            break
    return n / (clock() - began), n / (time.process_time() - cpu)


def bench_w(setup: _Setup, seconds: float, rounds: int) -> dict[str, float]:
    """Two logs, one followed by a relay; the writer appends to each in turn for
    ``seconds``, ``rounds`` times: the rest of the machine's load falls on both alike."""
    writers = []
    for relayed in (False, True):
        name = setup.name()
        writer, log = AtomicLog.new_claimed(retained=RETAINED, segment=SEGMENT, dtype=DTYPE, name=name)
        writer.append((0.0, 0, 101.25, 7))
        if relayed:
            setup.relay(name)
        writers.append((writer, log))
    rates: list[list[tuple[float, float]]] = [[], []]
    try:
        for _ in range(rounds):
            for side, (writer, _log) in enumerate(writers):
                rates[side].append(_append_rate(writer, seconds))
    finally:
        for writer, log in writers:
            writer.close()
            log.close()
    wall = [statistics.median(r[0] for r in side) for side in rates]
    cpu = [statistics.median(r[1] for r in side) for side in rates]
    return {
        "alone_per_s": wall[0],
        "relayed_per_s": wall[1],
        "ratio": wall[1] / wall[0],
        "alone_per_cpu_s": cpu[0],
        "relayed_per_cpu_s": cpu[1],
        "cpu_ratio": cpu[1] / cpu[0],
        "rounds": float(rounds),
    }


# Running --------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m atomic_log_shm.bench.relay", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="short runs: a smoke test")
    parser.add_argument("--only", default="XTLW", help="scenarios to run, e.g. TL (default XTLW)")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    args = parser.parse_args(argv)
    quick = args.quick
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="relaybench-") as tmp, _redis_server(Path(tmp)) as url:
        steps: dict[str, Callable[[_Setup], dict[str, float]]] = {
            "X": lambda s: bench_x(s, 0.5 if quick else 3.0),
            "T": lambda s: bench_t(s, 200_000 if quick else 4_000_000, 200_000 if quick else 3_000_000),
            "L": lambda s: bench_l(s, 2_000 if quick else 50_000, 10_000.0),
            "W": lambda s: bench_w(s, 0.25 if quick else 0.5, 2 if quick else 12),
        }
        for key in args.only.upper():
            if key not in steps:
                parser.error(f"no scenario {key!r}; choose from {''.join(steps)}")
            setup = _Setup(url, Path(tmp))
            try:
                results[key] = steps[key](setup)
            finally:
                setup.close()
            shown = (f"{k}={v:,.0f}" if abs(v) >= 100 else f"{k}={v:.3f}" for k, v in results[key].items())
            print(f"{key}: " + "  ".join(shown), flush=True)
    if "X" in results and "T" in results:
        ratio = results["T"]["burst_records_per_s"] / results["X"]["records_per_s"]
        print(f"relay burst / one XADD per record: {ratio:,.0f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
