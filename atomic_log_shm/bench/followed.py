"""The scenarios that drive a transport's publisher (the writer, this process): with reader
processes following it (T, L, F, C), or with none at all (A).

T and A publish as fast as possible for a fixed time (each publisher's own loop), C for a
fixed count; L and F publish at a fixed rate, each record stamped at publish, and the
readers note when they saw it (F leaves the first F_SKIP records out, as warm-up).
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
from .workload import F_SKIP, Params


def run_followed(ctx: BaseContext, kind: str, scenario: str, n_readers: int, p: Params) -> dict[str, Any]:
    """One run of T, L, F or C (``scenario``) with ``n_readers`` reader processes."""
    rate, seconds = {"L": (p.l_rate, p.l_seconds), "F": (p.f_rate, p.f_seconds)}.get(scenario, (0, 0.0))
    latency_n = int(rate * seconds)
    skip = F_SKIP if scenario == "F" else 0
    ctrl = Region(new_name("ctrl"), CTRL_BYTES, create=True)
    words = ctrl.words()
    results = ctx.Queue()
    procs: list[BaseProcess] = []
    pub: Publisher | None = None
    try:
        pub = PUBLISHERS[kind](ctx, n_readers)
        deadline = time.monotonic() + p.reader_timeout + p.t_seconds + p.l_seconds
        for slot, cfg in enumerate(pub.reader_cfgs()):
            args = (kind, cfg, ctrl.name, slot, latency_n, skip, os.getpid(), deadline, results)
            proc = cast(Any, ctx).Process(
                target=reader_main, args=args, name=f"{kind}-reader-{slot}", daemon=True
            )
            proc.start()
            procs.append(proc)
        wait_ready(words, procs, pub, results)
        if scenario == "T":
            count, elapsed = pub.t_loop(p.t_seconds)
        elif scenario == "C":
            count, elapsed = p.c_appends, pub.count_loop(p.c_appends)
        else:
            count, elapsed = latency_n, paced(pub.sender(), rate, latency_n)
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
    if outs and "missed" in outs[0]:  # the cursor followers (F, C) count what they missed
        run["reader_missed"] = [o["missed"] for o in outs]
    if latency_n:
        lat = np.concatenate([o["lat"] for o in outs]) if outs else np.empty(0)
        run["latency"] = lat
    return run


def run_alone(ctx: BaseContext, kind: str, seconds: float) -> dict[str, Any]:
    """A publisher's T loop for ``seconds`` with no reader at all (A): records/s."""
    pub = PUBLISHERS[kind](ctx, 0)
    try:
        count, elapsed = pub.t_loop(seconds)
    finally:
        pub.close()
    return {"impl": kind, "records": count, "seconds": elapsed, "rate": count / elapsed}


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
