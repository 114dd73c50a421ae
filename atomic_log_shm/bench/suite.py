"""The suite: every scenario, repeated and interleaved, reduced to medians.

``Suite.run`` runs the scenarios asked for, in the order of ``SCENARIOS``; each ``run_<letter>``
repeats its measurements (interleaved, so that drift in the machine's load hits all
contenders alike), retries one that fails (another program may remove our regions from
/dev/shm mid-run), and stores medians and raw runs in ``scenarios[letter]``. The table
and charts made from them are in ``report``.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from multiprocessing.context import BaseContext
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from .dashboards import MANY_LATENCY, RATE, DParams, run_d
from .followed import run_alone, run_followed
from .inprocess import run_b, run_r, run_s, run_w, run_w_iox2
from .workload import C_FOLLOWERS, F_SKIP, LABEL, S_SEGMENT, Params

SCENARIOS = {  # letter: what it measures, in the order the suite runs them
    "T": "Throughput: one record per append for a fixed time with 0, 1 and 4 busy-polling reader "
    "processes (and readers in wait()); the writer's records/s, ours against the floor and the peers.",
    "B": "Batches: extend() in batches of 1,000 for a fixed time, no readers; records/s against the "
    "floor's byte copy into its ring.",
    "L": "Latency: a writer paced at 10,000 records/s and one reader process (ours and the floor "
    "busy-poll, ours also waits in wait(), the peers block in their receive); publish-to-observe "
    "latency p50/p99/p99.9.",
    "W": "Window: the newest 100,000 of over 1,000,000 records as one copied array and as zero-copy "
    "chunks (and the newest 1,000), against the floor and iceoryx2's history.",
    "R": "Refresh: snapshot.refresh() with nothing new and with 3 new records, on windows of 1,000 "
    "and 1,000,000 records; its cost must not grow with the window.",
    "S": "Stalls: the latency of each of many appends across segment rollovers (p50, p99.9, max), "
    "against the floor's store.",
    "F": "Follower latency: a writer paced at 10,000 records/s, one follower process in "
    "cursor.wait(1.0) + cursor.poll(), then one busy-polling snapshot.refresh(); per record "
    "publish-to-observe p50/p99/p99.9/max and how many were later than 1 ms and 10 ms (the "
    f"first {F_SKIP:,} records left out).",
    "C": f"Writer cost with followers: append as fast as possible for a fixed count with 0 and with "
    f"{C_FOLLOWERS} follower processes in cursor.wait() + poll() that copy what they get, "
    "alternated; the rate with followers over the rate without.",
    "A": "Append vs floor: append() one record at a time for a fixed time, no reader, alternated "
    "with the floor's store into its ring and with struct.pack_into of the fields into the same "
    "ring; the rate ratios.",
    "D": f"Dashboards: many follower processes on one log, each in cursor.wait(timeout, latency=L) + "
    f"poll(), L 0 and 0.1 (where the library has latency=). A writer process paced at {RATE:,} "
    "records/s for 5 s with 0, 4, 16, 64 followers: their CPU (cores, per wake-up), every "
    "record's lateness, nothing lost; one appending as fast as it can, alone and with 16, 64, 128 "
    f"followers, alternated: the rate ratio; 256 followers at L={MANY_LATENCY:g}: memory per "
    "follower, a probe's sleep overshoot (counts, latencies, time: the D options above).",
}
F_FOLLOWERS = {"wait": "ours_cursor", "poll": "ours"}  # F's two followers, by the way they look
ATTEMPTS = 3  # tries of one measurement before it counts as failed
_QS = (("p50", 50), ("p99", 99), ("p999", 99.9))
_T = TypeVar("_T")


def machine() -> dict[str, Any]:
    cpus = os.cpu_count() or 1
    usable = len(os.sched_getaffinity(0))
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    note = f"{usable} usable core{'s' if usable != 1 else ''}"
    if usable < 5:
        note += (
            ": 4 busy readers + the writer = 5 busy processes oversubscribe it, so T with 4 readers "
            "measures CPU sharing as much as the log"
        )
    if usable < 2:
        note += "; with 1 core even 1 busy reader halves the writer"
    return {
        "cpus": cpus,
        "usable_cpus": usable,
        "cpu_model": model,
        "loadavg": os.getloadavg(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "note": note,
    }


def _median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


class Suite:
    def __init__(
        self, p: Params, ctx: BaseContext, peers: Sequence[str], dash: DParams | None = None
    ) -> None:
        self.p = p
        self.dash = dash or DParams.make(p)
        self.ctx = ctx
        self.peers = list(peers)
        # Ours again with readers blocking in snap.wait(), where the library has it (info only).
        self.extras = ["ours_wait"]
        self.scenarios: dict[str, dict[str, Any]] = {}
        self.errors: list[str] = []
        self.retries: list[str] = []
        self.core_failed = False

    def attempt(self, what: str, core: bool, fn: Callable[[], _T]) -> _T | None:
        """``fn()``, tried up to ATTEMPTS times; None (and an error noted) if every try failed.

        On a shared machine another program may remove our regions from /dev/shm mid-run
        (test fixtures that clean up "their" leaks do): a failed run is retried, and noted.
        """
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return fn()
            except Exception as exc:
                first = str(exc).splitlines()[0] if str(exc) else ""
                if attempt < ATTEMPTS:
                    self.retries.append(f"{what}: {type(exc).__name__}: {first}")
                    print(f"  ~ {what}: {type(exc).__name__}: {first} (retrying)", flush=True)
                    continue
                self.errors.append(f"{what}: {type(exc).__name__}: {exc}")
                print(f"  ! {what}: {type(exc).__name__}: {first}", flush=True)
                if core:
                    self.core_failed = True
        return None

    def run(self, only: str) -> None:
        steps: list[tuple[str, Callable[[], None]]] = [
            ("T", self.run_t),
            ("B", self.run_b),
            ("L", self.run_l),
            ("W", self.run_w),
            ("R", self.run_r),
            ("S", self.run_s),
            ("F", self.run_f),
            ("C", self.run_c),
            ("A", self.run_a),
            ("D", self.run_d),
        ]
        for key, step in steps:
            if key in only:
                print(f"[{key}] ...", flush=True)
                t = time.perf_counter()
                step()
                print(f"[{key}] done in {time.perf_counter() - t:.1f} s", flush=True)

    def run_t(self) -> None:
        configs = [(k, n) for k in ("ours", "floor") for n in (0, 1, 4)]
        configs += [(k, n) for k in (*self.extras, *self.peers) for n in (1, 4)]
        runs: dict[str, list[dict[str, Any]]] = {f"{k}/{n}": [] for k, n in configs}
        for _ in range(self.p.repeats):  # interleaved, so drift in the machine's load hits all alike
            for kind, n in configs:
                run = self.attempt(
                    f"T {LABEL[kind]} {n} readers",
                    kind.startswith("ours") or kind == "floor",
                    lambda: run_followed(self.ctx, kind, "T", n, self.p),  # noqa: B023 (called at once)
                )
                if run is not None:
                    runs[f"{kind}/{n}"].append(run)
        rates = {key: _median([r["rate"] for r in rs]) for key, rs in runs.items() if rs}
        # The share of the records published that the slowest reader received (lossy peers drop).
        seen = {
            key: _median([min(r["reader_seen"]) / r["records"] for r in rs])
            for key, rs in runs.items()
            if rs and not key.endswith("/0")
        }
        self.scenarios["T"] = {"rates": rates, "seen": seen, "runs": runs}

    def run_b(self) -> None:
        runs: dict[str, list[dict[str, Any]]] = {"ours": [], "floor": []}
        for _ in range(self.p.repeats):
            for kind in runs:
                b = self.attempt(f"B {kind}", True, lambda: run_b(kind, self.p))  # noqa: B023
                if b is not None:
                    runs[kind].append(b)
        rates = {k: _median([r["rate"] for r in rs]) for k, rs in runs.items() if rs}
        self.scenarios["B"] = {"rates": rates, "runs": runs}

    def run_l(self) -> None:
        kinds = ["ours", "floor", *self.extras, *self.peers]
        lats: dict[str, list[npt.NDArray[np.float64]]] = {k: [] for k in kinds}
        runs: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
        for _ in range(self.p.repeats):
            for kind in kinds:
                run = self.attempt(
                    f"L {LABEL[kind]}",
                    kind.startswith("ours") or kind == "floor",
                    lambda: run_followed(self.ctx, kind, "L", 1, self.p),  # noqa: B023 (called at once)
                )
                if run is None:
                    continue
                lat = run.pop("latency")
                lats[kind].append(lat)
                run["observed"] = len(lat)
                run.update({q: float(np.percentile(lat, v)) if len(lat) else math.nan for q, v in _QS})
                runs[kind].append(run)
        stats = {}
        for kind, rs in runs.items():
            if rs:  # the median over repeats of each percentile
                stats[kind] = {q: _median([r[q] for r in rs]) for q, _ in _QS}
                stats[kind]["observed"] = _median([r["observed"] for r in rs])
                stats[kind]["expected"] = rs[0]["records"]
        self.scenarios["L"] = {
            "stats": stats,
            "runs": runs,
            "rate": self.p.l_rate,
            "seconds": self.p.l_seconds,
        }
        self._l_samples = {k: v[-1] for k, v in lats.items() if v}

    def run_w(self) -> None:
        runs = []
        for _ in range(self.p.repeats):
            w = self.attempt("W", True, lambda: run_w(self.p))
            if w is not None:
                runs.append(w)
        data: dict[str, Any] = {"runs": runs}
        if runs:
            data.update(
                {
                    k: _median([r[k] for r in runs])
                    for k, v in runs[0].items()
                    if not isinstance(v, bool | str)
                }
            )
            data["floor_wraps"] = runs[0]["floor_wraps"]
            data["ours_copy_by"] = runs[0]["ours_copy_by"]
        if "iox2" in self.peers:
            iox = self.attempt("W iceoryx2 history", False, lambda: run_w_iox2(self.p))
            if iox is not None:
                data["iox2"] = iox
        self.scenarios["W"] = data

    def run_r(self) -> None:
        runs = []
        for _ in range(self.p.repeats):
            r = self.attempt("R", True, lambda: run_r(self.p))
            if r is not None:
                runs.append(r)
        data: dict[str, Any] = {"runs": runs}
        if runs:
            data.update({k: _median([r[k] for r in runs]) for k in runs[0]})
        self.scenarios["R"] = data

    def run_s(self) -> None:
        runs: dict[str, list[dict[str, Any]]] = {"ours": [], "floor": []}
        for _ in range(self.p.repeats):
            for kind in runs:
                s = self.attempt(f"S {kind}", True, lambda: run_s(kind, self.p))  # noqa: B023
                if s is not None:
                    runs[kind].append(s)
        self._s_samples = {k: rs[-1].pop("samples") for k, rs in runs.items() if rs}
        for rs in runs.values():
            for r in rs:
                r.pop("samples", None)
        data: dict[str, Any] = {"runs": runs, "segment": S_SEGMENT, "appends": self.p.s_appends}
        for kind, rs in runs.items():
            if rs:
                data[kind] = {k: _median([r[k] for r in rs]) for k in rs[0]}
        self.scenarios["S"] = data

    def run_f(self) -> None:
        lats: dict[str, list[npt.NDArray[np.float64]]] = {name: [] for name in F_FOLLOWERS}
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in F_FOLLOWERS}
        for _ in range(self.p.repeats):  # alternated: waiting, polling, waiting, ...
            for name, kind in F_FOLLOWERS.items():
                run = self.attempt(
                    f"F {LABEL[kind]}",
                    True,
                    lambda: run_followed(self.ctx, kind, "F", 1, self.p),  # noqa: B023 (called at once)
                )
                if run is None:
                    continue
                lat = run.pop("latency")
                lats[name].append(lat)
                run.update(_lateness(lat), expected=run["records"] - F_SKIP)
                runs[name].append(run)
        stats = {}
        for name, rs in runs.items():
            if rs:  # every repeat's records together: the counts of late ones are totals
                stats[name] = _lateness(np.concatenate(lats[name]))
                stats[name]["expected"] = sum(r["expected"] for r in rs)
                stats[name]["missed"] = sum(sum(r.get("reader_missed", ())) for r in rs)
        data: dict[str, Any] = {
            "stats": stats,
            "runs": runs,
            "rate": self.p.f_rate,
            "seconds": self.p.f_seconds,
            "skipped": F_SKIP,
        }
        if "wait" in stats and "poll" in stats:
            data["wait_vs_poll_p99"] = stats["wait"]["p99"] / stats["poll"]["p99"]
        self.scenarios["F"] = data

    def run_c(self) -> None:
        runs: dict[str, list[dict[str, Any]]] = {"0": [], str(C_FOLLOWERS): []}
        for _ in range(self.p.repeats):
            for n in (0, C_FOLLOWERS):  # alternated: 0, 4, 0, 4, ...
                run = self.attempt(
                    f"C {n} followers",
                    True,
                    lambda: run_followed(self.ctx, "ours_copy", "C", n, self.p),  # noqa: B023
                )
                if run is not None:
                    runs[str(n)].append(run)
        rates = {n: _median([r["rate"] for r in rs]) for n, rs in runs.items() if rs}
        data: dict[str, Any] = {"rates": rates, "runs": runs, "appends": self.p.c_appends}
        if len(rates) == 2:
            data["ratio"] = rates[str(C_FOLLOWERS)] / rates["0"]
        followed = runs[str(C_FOLLOWERS)]
        if followed:  # the share of the records the slowest follower took, and what they missed
            data["seen"] = _median([min(r["reader_seen"]) / r["records"] for r in followed])
            data["missed"] = sum(sum(r["reader_missed"]) for r in followed)
        self.scenarios["C"] = data

    def run_a(self) -> None:
        runs: dict[str, list[dict[str, Any]]] = {"ours": [], "floor": [], "floor_struct": []}
        for _ in range(self.p.repeats):
            for kind in runs:  # alternated: ours, floor, floor_struct, ours, ...
                a = self.attempt(f"A {kind}", True, lambda: run_alone(self.ctx, kind, self.p.a_seconds))  # noqa: B023
                if a is not None:
                    runs[kind].append(a)
        rates = {k: _median([r["rate"] for r in rs]) for k, rs in runs.items() if rs}
        data: dict[str, Any] = {"rates": rates, "runs": runs}
        if "ours" in rates and "floor" in rates:
            data["ratio"] = rates["ours"] / rates["floor"]
        if "ours" in rates and "floor_struct" in rates:
            data["ratio_struct"] = rates["ours"] / rates["floor_struct"]
        self.scenarios["A"] = data

    def run_d(self) -> None:
        self.scenarios["D"] = run_d(self.ctx, self.dash, self.attempt)


def _lateness(lat: npt.NDArray[np.float64]) -> dict[str, Any]:
    """F's figures of a set of latencies (seconds): quantiles, max, how many came late."""
    if not len(lat):
        return {"p50": math.nan, "p99": math.nan, "p999": math.nan, "max": math.nan, "observed": 0,
                "over_1ms": 0, "over_10ms": 0}  # fmt: skip
    out: dict[str, Any] = {q: float(np.percentile(lat, v)) for q, v in _QS}
    out["max"] = float(lat.max())
    out["observed"] = len(lat)
    out["over_1ms"] = int((lat > 1e-3).sum())
    out["over_10ms"] = int((lat > 10e-3).sum())
    return out
