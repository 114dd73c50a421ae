"""D: many followers on one log, as dashboards follow it.

A dashboard is a process that follows a log and wants a fresh view a few times a second:

    cursor = log.cursor("newest")
    while cursor.wait(timeout, latency=L):    # latency only where the library has it
        batch = cursor.poll()

Here every party is a process of its own: one writer appending the 32-byte record (``ts``
is ``time.perf_counter()``, the CLOCK_MONOTONIC all processes share, at publish), N
followers each in the loop above, and a probe that sleeps 10 ms at a time and notes how
late it wakes (does the machine stay responsive?). The bench process starts them, then only
waits: it reads each one's CPU clock just before it lets the writer go and just after the
writer is done, and each one's memory from /proc just before it tells them to stop.

Three parts, each run with a fresh log and fresh processes:

    paced  the writer at 2,000 records/s for 5 s, with 0 (the baseline), 4, 16 and 64
           followers at each latency (0 and 0.1): the followers' CPU as cores, CPU per
           wake-up that found records, every record's lateness at every follower (its
           receive time less its ``ts``), and whether every follower saw every record
    fast   the writer calling ``append`` once per record as fast as it can for T's time,
           with 16, 64 and 128 followers at each latency, each run right after a run of
           the writer alone: its rate with followers over its rate alone, median of pairs
    many   256 followers with latency 1.0 attach, follow the paced writer for 5 s and
           detach: memory per follower (PSS, RSS and private bytes, against the probe, a
           process of the same start with no log), the probe's overshoot, nothing lost

``latency`` goes to ``wait`` only where the library has it (``LATENCY_SUPPORTED``, read
from the signature): elsewhere the rows that need it say "not supported by this version",
and "many" follows with latency 0, saying so.

Processes start with the suite's multiprocessing context, forkserver unless
``--start-method`` says otherwise: each is forked from a server process that was started
clean and has imported only numpy, posix_ipc and atomic_log_shm, so a follower holds none of
the bench's state (its logs, queues and arrays) and starts in milliseconds, where a spawned
interpreter spends about 0.3 s of CPU importing numpy (256 of them keep two cores busy for
40 s). The price: forked followers share the preloaded modules' pages until they touch
them, so their PSS is below an independently started dashboard's (``--start-method spawn``
measures that one).

CPU is each process's CPU clock (``clock_getcpuclockid``: user plus system time of all its
threads, what /proc/<pid>/stat counts in 10 ms ticks, here in nanoseconds), read by the
bench: "cores" is the followers' CPU over the writer's run divided by its length. CPU per
wake-up is each follower's own CPU (``time.process_time()``) from attach to its last poll,
so including the records it took after the writer stopped, over the wait()s that found
records. A follower also notes each batch's lateness (one numpy subtraction per array),
which that figure includes. A follower that dies is reported in its run's ``died``; a
writer or probe that dies fails the run.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import inspect
import math
import os
import queue
import statistics
import time
import traceback
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from atomic_log_shm import AtomicLog, Cursor, Writer

from .harness import GO, READY, STOP, Follow, reader_errors, stop_processes
from .shm import Region, new_name
from .transports import FOLLOW_WAIT
from .workload import CHECK_EVERY, DTYPE, PRICE, QTY, RETAINED, SEGMENT, BenchError, Params

LATENCY_SUPPORTED = "latency" in inspect.signature(Cursor.wait).parameters
UNSUPPORTED = "not supported by this version"
RATE = 2000  # records/s of the paced writer
MANY_LATENCY = 1.0
PROBE_SLEEP = 0.01
RESPONSIVE = 5e-3  # the probe's p99 overshoot a machine that "stays responsive" keeps under:
# a 10 ms sleep that ends 5 ms late would make a 60 Hz screen (16.7 ms a frame) drop frames
WAKE_SLACK = 1.25  # "woken at most about 1/L times a second": up to this many times 1/L
LATE_SLACK = 0.01  # "learns of a record up to L after it was published", plus the wake-up
# itself, which is at the scheduler's mercy (F: tens of µs at p99, ms on a busy machine)
FAST_TARGET = 0.8  # the fast writer with followers in a budget, over the writer alone (as C)
WRITER, PROBE, FIRST_FOLLOWER = 0, 1, 2  # control-word slots (harness.READY + slot)
READY_TIMEOUT = 60.0  # seconds for every process to attach, plus START_EACH per process
START_EACH = 0.25  # a forked follower imports the bench's modules: ~0.1 s of CPU on a busy core
RESULT_TIMEOUT = 120.0  # seconds for results after the writer's run (followers may lag far)
GO_NAP = 1e-3  # how often the writer and the probe look at GO
_QS = (("p50", 50.0), ("p99", 99.0))


@dataclass(frozen=True)
class DParams:
    """What D runs: follower counts of each part, latencies, lengths, repeats."""

    followers: tuple[int, ...]  # paced (the baseline of 0 followers runs too)
    fast_followers: tuple[int, ...]
    many: int
    latencies: tuple[float, ...]  # paced and fast; many uses MANY_LATENCY
    seconds: float  # the paced writer's run (paced and many)
    fast_seconds: float
    repeats: int

    @classmethod
    def make(
        cls,
        p: Params,
        *,
        followers: tuple[int, ...] | None = None,
        fast_followers: tuple[int, ...] | None = None,
        many: int | None = None,
        latencies: tuple[float, ...] | None = None,
        seconds: float | None = None,
    ) -> DParams:
        """The full run's or ``--quick``'s (2 followers, 0.5 s), with what the command line set."""
        return cls(
            followers=followers or ((2,) if p.quick else (4, 16, 64)),
            fast_followers=fast_followers or ((2,) if p.quick else (16, 64, 128)),
            many=many or (4 if p.quick else 256),
            latencies=latencies or (0.0, 0.1),
            seconds=seconds or (0.5 if p.quick else 5.0),
            fast_seconds=p.t_seconds,
            repeats=p.repeats,
        )


def counts(text: str) -> tuple[int, ...]:
    """``--followers 4,16,64``: follower counts, each at least 1."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of whole numbers: {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"follower counts are at least 1: {text!r}")
    return values


def latencies(text: str) -> tuple[float, ...]:
    """``--latencies 0,0.1``: freshness budgets in seconds, each finite and at least 0."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of seconds: {text!r}") from None
    if not all(0 <= v < math.inf for v in values):
        raise argparse.ArgumentTypeError(f"latencies are seconds, finite and at least 0: {text!r}")
    return values


# ---- the processes: writers, followers, the probe ---------------------------------------


def _child(
    role: Callable[[dict[str, Any], Follow], dict[str, Any]],
    cfg: dict[str, Any],
    ctrl_name: str,
    slot: int,
    main_pid: int,
    deadline: float,
    results: Any,
) -> None:
    """Entry point of every process of D: run ``role``, put ``(slot, result or error)``."""
    ctrl = Region(ctrl_name)
    words = ctrl.words()
    try:
        out = role(cfg, Follow(words, slot, 0, main_pid, deadline))
    except BaseException as exc:
        out = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc(limit=6)}
    finally:
        words.release()
        ctrl.close()
    results.put((slot, out))


def _await_go(f: Follow) -> None:
    while not f.words[GO]:
        if f.words[STOP]:
            raise BenchError("stopped before the run began")
        f.check()
        time.sleep(GO_NAP)


@contextlib.contextmanager
def _claimed(name: str) -> Iterator[Writer]:
    with AtomicLog.attach(name) as log:
        writer = log.try_claim_writer()
        if writer is None:
            raise BenchError(f"log {name!r} has a writer already")
        with writer:
            yield writer


def _write_paced(cfg: dict[str, Any], f: Follow) -> dict[str, Any]:
    """The paced writer: ``records`` appends at ``rate`` a second, sleeping between them."""
    with _claimed(cfg["name"]) as writer:
        append, words, pc, sleep = writer.append, f.words, time.perf_counter, time.sleep
        n, period = cfg["records"], 1.0 / cfg["rate"]
        f.ready(1)
        _await_go(f)
        t0 = pc()
        for i in range(n):
            delay = t0 + i * period - pc()
            if delay > 0:
                sleep(delay)  # not a busy wait: the followers get the machine's cores
            append((pc(), i, PRICE, QTY))
            if words[STOP]:
                raise BenchError("aborted")
            if not i % CHECK_EVERY:
                f.check()
        return {"records": n, "seconds": pc() - t0}


def _write_fast(cfg: dict[str, Any], f: Follow) -> dict[str, Any]:
    """The fast writer: one ``append`` per record, as fast as it can, for ``seconds``."""
    with _claimed(cfg["name"]) as writer:
        append, words, pc = writer.append, f.words, time.perf_counter
        f.ready(1)
        _await_go(f)
        i = 0
        t0 = pc()
        deadline = t0 + cfg["seconds"]
        while True:
            for _ in range(CHECK_EVERY):
                append((pc(), i, PRICE, QTY))
                i += 1
            t = pc()
            if t >= deadline:
                return {"records": i, "seconds": t - t0}
            if words[STOP]:
                raise BenchError("aborted")


def _waiter(cursor: Cursor, latency: float) -> tuple[Callable[..., bool], float]:
    """``cursor.wait`` with the freshness budget (none at 0, today's default), and its timeout."""
    wait: Callable[..., bool] = cursor.wait
    return (functools.partial(wait, latency=latency) if latency else wait), FOLLOW_WAIT + latency


def _follow_noting(cfg: dict[str, Any], f: Follow) -> dict[str, Any]:
    """A paced run's follower: the dashboard's loop, noting every record's lateness."""
    with AtomicLog.attach(cfg["name"]) as log:
        cursor = log.cursor("newest")
        wait, timeout = _waiter(cursor, cfg["latency"])
        poll, words, pc = cursor.poll, f.words, time.perf_counter
        start = cursor.position
        lateness: list[npt.NDArray[np.float64]] = []
        woken = fruitful = missed = 0
        cpu = time.process_time()
        f.ready(1)
        while True:
            stop = words[STOP]
            if not stop:
                if wait(timeout):
                    woken += 1
                else:
                    f.check()  # nothing for a while: is the bench still there?
            batch = poll()
            if batch.arrays:
                now = pc()
                for values in batch.arrays:
                    lateness.append(now - values["ts"])
                fruitful += 1
            missed += batch.missed
            if stop:
                break
        cpu = time.process_time() - cpu
        lat = np.concatenate(lateness) if lateness else np.empty(0)
        seen = cursor.position - start
    return {"seen": seen, "missed": missed, "woken": woken, "fruitful": fruitful, "cpu": cpu, "lateness": lat}


def _follow_counting(cfg: dict[str, Any], f: Follow) -> dict[str, Any]:
    """A fast run's follower: the dashboard's loop, counting what it gets (a fast writer's
    millions of records would make lateness tables of hundreds of MB per follower)."""
    with AtomicLog.attach(cfg["name"]) as log:
        cursor = log.cursor("newest")
        wait, timeout = _waiter(cursor, cfg["latency"])
        poll, words = cursor.poll, f.words
        start = cursor.position
        woken = fruitful = missed = 0
        cpu = time.process_time()
        f.ready(1)
        while True:
            stop = words[STOP]
            if not stop:
                if wait(timeout):
                    woken += 1
                else:
                    f.check()
            batch = poll()
            if batch.arrays:
                fruitful += 1
            missed += batch.missed
            if stop:
                break
        cpu = time.process_time() - cpu
        seen = cursor.position - start
    return {"seen": seen, "missed": missed, "woken": woken, "fruitful": fruitful, "cpu": cpu}


def _probe(cfg: dict[str, Any], f: Follow) -> dict[str, Any]:
    """Sleep PROBE_SLEEP at a time while the writer runs; note how late each sleep ends."""
    words, pc, sleep = f.words, time.perf_counter, time.sleep
    f.ready(1)
    _await_go(f)
    over: list[float] = []
    while not words[STOP]:
        t = pc()
        sleep(PROBE_SLEEP)
        over.append(pc() - t - PROBE_SLEEP)
        if not len(over) % CHECK_EVERY:
            f.check()
    return {"overshoot": np.array(over)}


ROLES = {"paced": (_write_paced, _follow_noting), "fast": (_write_fast, _follow_counting)}


# ---- the bench's side: one run --------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def _cpu(pid: int | None) -> float:
    """CPU seconds process ``pid`` has used (user + system, every thread); NaN if it is gone."""
    clock = ctypes.c_int()  # clockid_t
    if pid is None or _libc.clock_getcpuclockid(pid, ctypes.byref(clock)):
        return math.nan
    try:
        return time.clock_gettime(clock.value)
    except OSError:
        return math.nan


_SMAPS = {"Rss": "rss", "Pss": "pss", "Private_Clean": "uss", "Private_Dirty": "uss"}


def _memory(pid: int | None) -> dict[str, int]:
    """Process ``pid``'s RSS, PSS and private (USS) bytes, from /proc; {} if it is gone."""
    out = dict.fromkeys(("rss", "pss", "uss"), 0)
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in _SMAPS:
                    out[_SMAPS[key]] += int(rest.split()[0]) * 1024  # kB
    except (OSError, ValueError):
        return {}
    return out


def _collect(
    results: Any,
    procs: Sequence[BaseProcess],
    outs: dict[int, dict[str, Any]],
    wanted: Collection[int],
    deadline: float,
) -> None:
    """Put results into ``outs`` until every slot in ``wanted`` has one, each missing one's
    process has ended without a word, or the deadline passes."""
    while any(slot not in outs for slot in wanted) and time.monotonic() < deadline:
        try:
            slot, out = results.get(timeout=0.2)
        except queue.Empty:
            # An ended process has flushed its result into the queue's pipe: none came in
            # 0.2 s, so those that ended without one will never send it.
            if all(procs[slot].exitcode is not None for slot in wanted if slot not in outs):
                return
            continue
        outs[slot] = out


def _wait_ready(words: memoryview, procs: Sequence[BaseProcess], results: Any, deadline: float) -> None:
    while not all(words[READY + slot] for slot in range(len(procs))):
        if any(proc.exitcode is not None for proc in procs):
            raise BenchError(f"a process of the run ended before it was ready: {reader_errors(results)}")
        if time.monotonic() > deadline:
            late = [slot for slot in range(len(procs)) if not words[READY + slot]]
            raise BenchError(f"{len(late)} process(es) not ready in time (slots {late[:10]})")
        time.sleep(0.01)


def _gone(proc: BaseProcess, out: dict[str, Any] | None) -> str:
    """Why ``proc`` gave no result: its error, or how it ended."""
    if out is not None:
        return str(out["error"])
    return (
        f"no result (exit code {proc.exitcode})" if proc.exitcode is not None else "no result, still running"
    )


def _stats(xs: npt.NDArray[np.float64]) -> dict[str, float]:
    if not len(xs):
        return {"p50": math.nan, "p99": math.nan, "max": math.nan}
    out = {q: float(np.percentile(xs, v)) for q, v in _QS}
    out["max"] = float(xs.max())
    return out


def run_once(ctx: BaseContext, kind: str, n: int, latency: float, dp: DParams) -> dict[str, Any]:
    """One run of ``kind`` ("paced" or "fast"): a fresh log, its writer, ``n`` followers in
    ``wait(latency=latency)`` + ``poll()``, the probe. Every process ends and the log is
    removed before it returns or raises."""
    write, follow = ROLES[kind]
    seconds = dp.seconds if kind == "paced" else dp.fast_seconds
    slots = FIRST_FOLLOWER + n
    roles = [(write, {"records": int(RATE * seconds), "rate": RATE, "seconds": seconds}), (_probe, {})]
    roles += [(follow, {"latency": latency})] * n
    allowance = READY_TIMEOUT + START_EACH * slots
    ctrl = Region(new_name("ctrl"), 8 * (READY + slots), create=True)
    words = ctrl.words()
    results = ctx.Queue()
    procs: list[BaseProcess] = []
    try:
        with AtomicLog.new(retained=RETAINED, segment=SEGMENT, dtype=DTYPE) as log:  # unlinked on exit
            started = time.monotonic()
            deadline = started + allowance + seconds + 2 * RESULT_TIMEOUT
            for slot, (role, cfg) in enumerate(roles):
                args = (role, {**cfg, "name": log.name}, ctrl.name, slot, os.getpid(), deadline, results)
                proc = cast(Any, ctx).Process(target=_child, args=args, name=f"D-{kind}-{slot}", daemon=True)
                proc.start()
                procs.append(proc)
            _wait_ready(words, procs, results, started + allowance)
            attach = time.monotonic() - started
            pids = [proc.pid for proc in procs]
            cpu0 = [_cpu(pid) for pid in pids]
            t0 = time.monotonic()
            words[GO] = 1
            outs: dict[int, dict[str, Any]] = {}
            _collect(results, procs, outs, (WRITER,), t0 + seconds + RESULT_TIMEOUT)
            wall = time.monotonic() - t0
            cpu = [_cpu(pid) - c for pid, c in zip(pids, cpu0, strict=True)]
            memory = [_memory(pid) for pid in pids]
            stopped = time.monotonic()
            words[STOP] = 1
            _collect(results, procs, outs, range(slots), stopped + RESULT_TIMEOUT)
            stop_processes(procs)
            detach = time.monotonic() - stopped
    finally:
        words[STOP] = 2  # whatever is still running: stop now
        stop_processes(procs)
        results.close()
        results.cancel_join_thread()
        words.release()
        ctrl.close()
        ctrl.unlink()
    for slot in (WRITER, PROBE):
        if slot not in outs or "error" in outs[slot]:
            what = "writer" if slot == WRITER else "probe"
            raise BenchError(f"the {what} failed: {_gone(procs[slot], outs.get(slot))}")
    writer = outs[WRITER]
    followers = [outs.get(slot) for slot in range(FIRST_FOLLOWER, slots)]
    died = [
        {"follower": k, "exitcode": proc.exitcode, "why": _gone(proc, out)}
        for k, (proc, out) in enumerate(zip(procs[FIRST_FOLLOWER:], followers, strict=True))
        if out is None or "error" in out
    ]
    for d in died:
        print(
            f"  ! D {kind}, {n} followers, latency {latency:g}: follower {d['follower']} died: {d['why']}",
            flush=True,
        )
    alive = [out for out in followers if out is not None and "error" not in out]
    fruitful = sum(o["fruitful"] for o in alive)
    followers_cpu = float(np.nansum(cpu[FIRST_FOLLOWER:]))
    mem = [m for m in memory[FIRST_FOLLOWER:] if m]
    run: dict[str, Any] = {
        "kind": kind,
        "followers": n,
        "latency": latency,
        "records": writer["records"],
        "rate": writer["records"] / writer["seconds"],
        "wall": wall,
        "attach": attach,
        "detach": detach,
        "followers_cpu": followers_cpu,
        "cores": followers_cpu / wall,
        "writer_cores": cpu[WRITER] / wall,
        "cpu_per_wake": sum(o["cpu"] for o in alive) / fruitful if fruitful else math.nan,
        "wakes_per_s": sum(o["woken"] for o in alive) / len(alive) / wall if alive else math.nan,
        "fruitful_per_s": fruitful / len(alive) / wall if alive else math.nan,
        "seen_min": min((o["seen"] for o in alive), default=0),
        "short": sum(o["seen"] < writer["records"] for o in alive),
        "missed": sum(o["missed"] for o in alive),
        "died": died,
        "probe": _stats(outs[PROBE]["overshoot"]),
        "probe_memory": memory[PROBE],
        "memory": {k: float(np.median([m[k] for m in mem])) for k in ("rss", "pss", "uss")} if mem else {},
        "memory_max": {k: max(m[k] for m in mem) for k in ("rss", "pss", "uss")} if mem else {},
        "lateness": np.concatenate([o["lateness"] for o in alive if "lateness" in o] or [np.empty(0)]),
    }
    return run


# ---- the suite's side: every part, repeated, reduced -----------------------------------


def _median(xs: Sequence[float]) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return float(statistics.median(xs)) if xs else math.nan


_MEDIANS = (
    "cores",
    "followers_cpu",
    "writer_cores",
    "cpu_per_wake",
    "wakes_per_s",
    "fruitful_per_s",
    "rate",
    "wall",
)


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A configuration's runs, reduced: medians, lateness of all runs' records together,
    the totals of what was lost; the runs (less their lateness tables) kept as they were."""
    lateness = np.concatenate([run.pop("lateness") for run in runs])
    out: dict[str, Any] = {k: _median([r[k] for r in runs]) for k in _MEDIANS}
    out.update(_stats(lateness))
    out["observed"] = len(lateness)
    out["probe_p99"] = _median([r["probe"]["p99"] for r in runs])
    out["missed"] = sum(r["missed"] for r in runs)
    out["died"] = sum(len(r["died"]) for r in runs)
    out["short"] = sum(r["short"] for r in runs)
    out["seen_all"] = not (out["missed"] or out["died"] or out["short"])
    out["runs"] = runs
    return out


def _key(n: int, latency: float) -> str:
    return f"{n}/{latency:g}"


def run_d(
    ctx: BaseContext,
    dp: DParams,
    attempt: Callable[[str, bool, Callable[[], dict[str, Any]]], dict[str, Any] | None],
) -> dict[str, Any]:
    """Every part of D (``attempt`` is ``Suite.attempt``: retries, notes failures); the
    scenario's entry of the suite's results."""
    usable = [lat for lat in dp.latencies if lat == 0 or LATENCY_SUPPORTED]
    paced_runs: dict[str, list[dict[str, Any]]] = {_key(0, 0): []}
    paced_runs.update({_key(n, lat): [] for n in dp.followers for lat in dp.latencies})
    for _ in range(dp.repeats):  # interleaved, so that drift in the machine's load hits all alike
        for n, lat in [(0, 0.0), *((n, lat) for n in dp.followers for lat in usable)]:
            run = attempt(
                f"D paced, {n} followers, latency {lat:g}",
                True,
                lambda: run_once(ctx, "paced", n, lat, dp),  # noqa: B023 (called at once)
            )
            if run is not None:
                paced_runs[_key(n, lat)].append(run)
    paced = {key: _summary(runs) if runs else {} for key, runs in paced_runs.items()}

    fast_runs: dict[str, list[dict[str, Any]]] = {"alone": []}
    fast_runs.update({_key(n, lat): [] for n in dp.fast_followers for lat in dp.latencies})
    pairs: dict[str, list[tuple[float, float]]] = {key: [] for key in fast_runs if key != "alone"}
    for _ in range(dp.repeats):
        for n, lat in [(n, lat) for n in dp.fast_followers for lat in usable]:
            alone = attempt("D fast writer alone", True, lambda: run_once(ctx, "fast", 0, 0.0, dp))
            followed = attempt(
                f"D fast writer, {n} followers, latency {lat:g}",
                True,
                lambda: run_once(ctx, "fast", n, lat, dp),  # noqa: B023 (called at once)
            )
            for key, run in (("alone", alone), (_key(n, lat), followed)):
                if run is not None:
                    run.pop("lateness")
                    fast_runs[key].append(run)
            if alone is not None and followed is not None:
                pairs[_key(n, lat)].append((alone["rate"], followed["rate"]))
    fast: dict[str, Any] = {}
    for key, runs in fast_runs.items():
        if runs:
            fast[key] = {k: _median([r[k] for r in runs]) for k in _MEDIANS}
            fast[key].update(
                missed=sum(r["missed"] for r in runs),
                died=sum(len(r["died"]) for r in runs),
                short=sum(r["short"] for r in runs),
                runs=runs,
            )
            if pairs.get(key):  # the median ratio of the pairs, and of the runs alone they had
                fast[key]["ratio"] = _median([followed / alone for alone, followed in pairs[key]])
                fast[key]["alone"] = _median([alone for alone, _ in pairs[key]])
                fast[key]["pairs"] = pairs[key]
        else:
            fast[key] = {}

    many_latency = MANY_LATENCY if LATENCY_SUPPORTED else 0.0
    run = attempt(
        f"D {dp.many} followers, latency {many_latency:g}",
        True,
        lambda: run_once(ctx, "paced", dp.many, many_latency, dp),
    )
    many: dict[str, Any] = {"followers": dp.many, "asked": MANY_LATENCY, "latency": many_latency}
    if run is not None:
        many.update(_summary([run]))
        for k in ("attach", "detach", "memory", "memory_max", "probe_memory", "probe"):
            many[k] = run[k]
    return {
        "latency_supported": LATENCY_SUPPORTED,
        "start_method": ctx.get_start_method(),
        "rate": RATE,
        "seconds": dp.seconds,
        "fast_seconds": dp.fast_seconds,
        "repeats": dp.repeats,
        "followers": list(dp.followers),
        "fast_followers": list(dp.fast_followers),
        "latencies": list(dp.latencies),
        "paced": paced,
        "fast": fast,
        "many": many,
    }
