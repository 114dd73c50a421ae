"""Benchmarks of atomic-log-shm against a bare shared-memory ring (the floor) and IPC peers.

    python -m atomic_log_shm.bench                  # full run (a few minutes); or: atomic-log bench
    python -m atomic_log_shm.bench --quick          # smoke run (seconds)
    python -m atomic_log_shm.bench --json out.json --charts charts/ --repeats 5 --only TL

The writer is this process; readers are separate processes. The scenarios, a sentence per
letter, are ``SCENARIOS`` in ``suite`` (and ``--help``). The modules, in import order:

    workload    the 32-byte record, sizes, Params (full or --quick)
    shm         regions, the floor's ring, our logs, and removing them all
    harness     control words, the reader's side of them, starting and stopping readers
    peers       mp.Queue, pyzmq, faster-fifo, iceoryx2: reader loops and publishers
    transports  ours and the floor: reader loops and publishers; the registries
    followed    the scenarios with reader processes
    dashboards  D: many follower processes on one log, its writer and a probe all processes
    inprocess   the scenarios in this process
    suite       repeats, interleaving, retries, medians
    report      the table, the details, JSON, charts
    relay       on its own (it starts a redis-server): ``python -m atomic_log_shm.bench.relay``,
                the Redis relay and mirror of ``atomic_log_shm.relay`` (X T L W)

Baselines, measured in the same run: the floor (a numpy ring of the same records plus an int64
counter in one shared-memory region, written and polled with no abstraction: T, B, L, W, R, S);
multiprocessing.Queue, one per reader (T, L); and, when installed, pyzmq PUB/SUB over ipc://,
faster-fifo (T, L) and iceoryx2 (T, L, and its history for W). Missing peers are skipped with a
note: ``pip install pyzmq faster-fifo iceoryx2 matplotlib``.

Only numpy and posix_ipc (the library's own dependencies) are imported at module level;
optional packages are imported lazily. Every shared-memory region made here is removed on the
way out, and reader processes are stopped (then killed) whatever happens.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import platform
import signal
import textwrap
from collections.abc import Sequence
from dataclasses import asdict

from . import dashboards as _dashboards
from . import peers as _peers
from . import shm as _shm
from .report import details, format_table, jsonable, rows, write_charts
from .suite import SCENARIOS, Suite, machine
from .workload import Params

__all__ = ["main"]


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None, prog: str = "python -m atomic_log_shm.bench") -> int:
    """Run the scenarios ``argv`` asks for, print the table; 1 if a core measurement failed."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(__doc__ or "").split("\n")[0],
        epilog="scenarios (--only):\n"
        + "\n".join(
            textwrap.fill(v, 92, initial_indent=f"  {k}  ", subsequent_indent="     ", break_on_hyphens=False)
            for k, v in SCENARIOS.items()
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="a seconds-long smoke run")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    parser.add_argument(
        "--repeats", type=int, metavar="N", help="runs per measurement, medians (default 3; 1 quick)"
    )
    parser.add_argument("--charts", metavar="DIR", help="write PNG charts (needs matplotlib)")
    parser.add_argument("--no-peers", action="store_true", help="skip pyzmq, faster-fifo and iceoryx2")
    every = "".join(SCENARIOS)
    parser.add_argument(
        "--only", default=every, metavar="LETTERS", help=f"the scenarios to run (default {every}; see below)"
    )
    parser.add_argument("--start-method", default="forkserver", choices=("forkserver", "spawn", "fork"))
    d = parser.add_argument_group("D (dashboards)")
    counts = _dashboards.counts
    d.add_argument(
        "--followers", type=counts, metavar="N,N", help="paced: follower counts (4,16,64; quick 2)"
    )
    d.add_argument(
        "--fast-followers", type=counts, metavar="N,N", help="fast: follower counts (16,64,128; quick 2)"
    )
    d.add_argument("--many-followers", type=int, metavar="N", help="many: follower count (256; quick 4)")
    d.add_argument(
        "--latencies", type=_dashboards.latencies, metavar="S,S", help="latency= of the followers (0,0.1)"
    )
    d.add_argument("--follow-seconds", type=float, metavar="S", help="the paced writer's run (5; quick 0.5)")
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.many_followers is not None and args.many_followers < 1:
        parser.error("--many-followers must be at least 1")
    if args.follow_seconds is not None and not 0 < args.follow_seconds < math.inf:
        parser.error("--follow-seconds must be a positive number of seconds")
    p = Params.make(args.quick, args.repeats)
    dash = _dashboards.DParams.make(
        p,
        followers=args.followers,
        fast_followers=args.fast_followers,
        many=args.many_followers,
        latencies=args.latencies,
        seconds=args.follow_seconds,
    )
    ctx = mp.get_context(args.start_method)
    if args.start_method == "forkserver":
        # The bench's own modules are not preloaded: each reader imports them as it starts.
        ctx.set_forkserver_preload(["numpy", "posix_ipc", "atomic_log_shm"])

    status = _peers.peer_status()
    modules = {"pyzmq": "zmq", "faster-fifo": "ffifo", "iceoryx2": "iox2"}
    peers = ["mpqueue"]
    if not args.no_peers:
        peers += [modules[pip] for pip, st in status.items() if st.startswith("installed")]
    info = machine()
    print(
        f"atomic-log-shm bench ({'quick' if p.quick else 'full'} run, {p.repeats} repeat(s), "
        f"{args.start_method} readers)"
    )
    print(f"machine: {info['cpu_model'] or platform.machine()}, {info['cpus']} CPUs; {info['note']}")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in info['loadavg'])} (shared machine: noisy)")
    print(
        "peers: "
        + "; ".join(f"{k} {v}" for k, v in status.items())
        + ("; skipped (--no-peers)" if args.no_peers else "")
    )

    suite = Suite(p, ctx, peers, dash)
    leftovers: list[str] = []
    previous = signal.signal(signal.SIGTERM, _terminated)  # so that the clean-up below runs
    try:
        suite.run(args.only.upper())
    except KeyboardInterrupt:
        suite.errors.append("interrupted")
        suite.core_failed = True
    finally:
        leftovers = _shm.cleanup()
        _peers.iox_cleanup()
        signal.signal(signal.SIGTERM, previous)
    if leftovers:
        suite.errors.append(f"cleaned up leftover regions: {leftovers}")

    table = rows(suite)
    print()
    print(format_table(table))
    print()
    for line in details(suite):
        print(line)
    if suite.retries:
        print(f"\nretried {len(suite.retries)} measurement(s) that failed once:")
        for note in suite.retries:
            print(f"  {note}")
    if suite.errors:
        print("\nerrors:")
        for err in suite.errors:
            print(f"  {err.splitlines()[0]}")
    charts = write_charts(suite, args.charts) if args.charts else []
    for path in charts:
        print(f"chart: {path}")
    if args.json:
        result = {
            "machine": info,
            "params": asdict(p),
            "dashboards": asdict(dash),
            "peers": status,
            "start_method": args.start_method,
            "scenarios": suite.scenarios,
            "rows": table,
            "errors": suite.errors,
            "retries": suite.retries,
            "charts": charts,
        }
        with open(args.json, "w") as f:
            json.dump(jsonable(result), f, indent=1)
        print(f"results: {args.json}")
    return 1 if suite.core_failed else 0
