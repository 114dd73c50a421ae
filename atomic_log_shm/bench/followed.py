"""The scenarios with reader processes: one run of the writer (this process) publishing
through a transport while reader processes follow it (T, L).

T publishes as fast as possible for a fixed time (each publisher's own loop); L publishes
at a fixed rate, each record stamped at publish, and the readers note when they saw it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import Any, cast

import numpy as np

from .harness import CTRL_BYTES, STOP, Publisher, collect, stop_processes, wait_ready
from .shm import Region, new_name
from .transports import PUBLISHERS, reader_main
from .workload import Params


def run_followed(ctx: BaseContext, kind: str, scenario: str, n_readers: int, p: Params) -> dict[str, Any]:
    """One run of T (``scenario="T"``) or L with ``n_readers`` reader processes."""
    latency_n = int(p.l_rate * p.l_seconds) if scenario == "L" else 0
    ctrl = Region(new_name("ctrl"), CTRL_BYTES, create=True)
    words = ctrl.words()
    results = ctx.Queue()
    procs: list[BaseProcess] = []
    pub: Publisher | None = None
    try:
        pub = PUBLISHERS[kind](ctx, n_readers)
        deadline = time.monotonic() + p.reader_timeout + p.t_seconds + p.l_seconds
        for slot, cfg in enumerate(pub.reader_cfgs()):
            args = (kind, cfg, ctrl.name, slot, latency_n, os.getpid(), deadline, results)
            proc = cast(Any, ctx).Process(
                target=reader_main, args=args, name=f"{kind}-reader-{slot}", daemon=True
            )
            proc.start()
            procs.append(proc)
        wait_ready(words, procs, pub, results)
        if scenario == "T":
            count, elapsed = pub.t_loop(p.t_seconds)
        else:
            count, elapsed = latency_n, paced(pub.sender(), p.l_rate, latency_n)
        pub.finish()
        time.sleep(0.05)  # let the last messages of the lossy transports arrive
        words[STOP] = 1
        outs = collect(results, n_readers, p.reader_timeout)
    finally:
        words[STOP] = 2
        stop_processes(procs)
        if pub is not None:
            pub.close()
        results.close()
        results.cancel_join_thread()
        words.release()
        ctrl.close()
        ctrl.unlink()
    run: dict[str, Any] = {
        "impl": kind,
        "readers": n_readers,
        "records": count,
        "seconds": elapsed,
        "rate": count / elapsed,
        "reader_seen": [o["seen"] for o in outs],
        "reader_last": [o["last"] for o in outs],
        "reader_polls": [o["polls"] for o in outs],
    }
    if scenario == "L":
        lat = np.concatenate([o["lat"] for o in outs]) if outs else np.empty(0)
        run["latency"] = lat
    return run


def paced(send: Callable[[float, int], None], rate: int, n: int) -> float:
    """Publish ``n`` records at ``rate`` per second (busy-waiting), ts stamped at publish."""
    pc = time.perf_counter
    period = 1.0 / rate
    t0 = pc() + 0.002
    for i in range(n):
        target = t0 + i * period
        while pc() < target:
            pass
        send(pc(), i)
    return pc() - t0
