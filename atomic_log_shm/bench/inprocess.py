"""The scenarios that run in this process, no readers: B (extend in batches), W (the newest
records of a large window), R (refresh), S (append latency across rollovers).

Each ``run_*`` makes one measurement of ours or of the floor and returns its figures; the
suite repeats them and takes medians. Every log and ring made here is removed before return.
"""

from __future__ import annotations

import array
import ctypes
import os
import secrets
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from atomic_log_shm import AtomicLog

from .peers import IOX_SERVICE_TYPE, IoxRecord, iox, iox_node, iox_service, iox_used
from .shm import Ring, joined, new_log, newest_chunks, ring_parts
from .workload import (
    BATCH,
    DTYPE,
    FEW_NEW,
    PRICE,
    QTY,
    R_LARGE,
    R_SMALL,
    RETAINED,
    S_RETAINED,
    S_SEGMENT,
    SEGMENT,
    W_NEWEST,
    W_SMALL,
    BenchError,
    Params,
    Records,
)


def _batch() -> Records:
    batch = np.zeros(BATCH, DTYPE)
    batch["price"] = PRICE
    batch["qty"] = QTY
    return batch


def run_b(kind: str, p: Params) -> dict[str, Any]:
    """extend() in batches of 1,000 for p.b_seconds; the floor writes the batch into its ring."""
    batch = _batch()
    ts, seq, base = batch["ts"], batch["seq"], np.arange(BATCH, dtype=np.int64)
    pc = time.perf_counter
    i = 0
    if kind == "ours":
        writer, log = new_log(RETAINED, SEGMENT)
        try:
            extend = writer.extend
            t0 = pc()
            deadline = t0 + p.b_seconds
            while True:
                ts[:] = pc()
                np.add(base, i, out=seq)
                extend(batch)
                i += BATCH
                t = pc()
                if t >= deadline:
                    break
        finally:
            writer.close()
            log.close()
            log.unlink()
    else:
        floor = Ring(RETAINED)
        try:
            # Raw bytes through the mapping, as ours copies: the fastest copy Python has
            # (numpy would copy structured records field by field, 15x slower).
            ring, counter, n = floor.region.map, floor.counter, floor.n
            size, at = DTYPE.itemsize, Ring.HEADER
            t0 = pc()
            deadline = t0 + p.b_seconds
            while True:
                ts[:] = pc()
                np.add(base, i, out=seq)
                j = i % n
                if j + BATCH <= n:
                    ring[at + j * size : at + (j + BATCH) * size] = batch  # type: ignore[call-overload]
                else:  # the batch wraps
                    k = n - j
                    ring[at + j * size : at + n * size] = batch[:k]  # type: ignore[call-overload]
                    ring[at : at + (BATCH - k) * size] = batch[k:]  # type: ignore[call-overload]
                i += BATCH
                counter[0] = i  # one publication per batch
                t = pc()
                if t >= deadline:
                    break
        finally:
            floor.close(unlink=True)
    return {"records": i, "seconds": t - t0, "rate": i / (t - t0)}


def _timed(fn: Callable[[], object], iters: int) -> float:
    """Median seconds of ``fn()`` over ``iters`` calls."""
    pc = time.perf_counter
    times = []
    for _ in range(iters):
        t = pc()
        fn()
        times.append(pc() - t)
    return statistics.median(times)


def _fill(extend: Callable[[Records], None], total: int, chunk: int = 1 << 16) -> None:
    records = np.zeros(chunk, DTYPE)
    records["price"] = PRICE
    records["qty"] = QTY
    base = np.arange(chunk, dtype=np.int64)
    for i in range(0, total, chunk):
        k = min(chunk, total - i)
        records["ts"] = time.perf_counter()
        np.add(base, i, out=records["seq"])
        extend(records[:k])


def run_w(p: Params) -> dict[str, Any]:
    """Newest W_NEWEST records after p.w_total: copied and zero-copy, ours and the floor."""
    total, k, small = p.w_total, W_NEWEST, W_SMALL
    out: dict[str, Any] = {"total": total}
    writer, log = new_log(max(RETAINED, total), SEGMENT)
    reader = AtomicLog.attach(log.name)
    try:
        _fill(writer.extend, total)
        snap = reader.snapshot()
        assert len(snap) >= k
        newest = snap.latest
        out["ours_copy_by"] = "snap.latest(k)"
        copy = newest(k)
        if not np.array_equal(copy["seq"], np.arange(total - k, total)):
            raise BenchError("W: ours returned the wrong newest records")

        def ours_copy() -> Records:
            snap.refresh()
            return newest(k)

        def ours_view(count: int) -> Callable[[], list[Records]]:
            def view() -> list[Records]:
                snap.refresh()
                return newest_chunks(snap, count)

            return view

        out["ours_copy"] = _timed(ours_copy, p.w_iters)
        out["ours_view"] = _timed(ours_view(k), p.w_iters * 10)
        out["ours_view_small"] = _timed(ours_view(small), p.w_iters * 10)
        out["ours_view_chunks"] = len(newest_chunks(snap, k))
        out["ours_view_small_chunks"] = len(newest_chunks(snap, small))
        out["ours_segments"] = len(tuple(snap.chunks()))
    finally:
        writer.close()
        reader.close()
        log.close()
        log.unlink()

    floor = Ring(p.w_ring)
    try:
        ring, counter = floor.ring, floor.counter

        def extend(records: Records) -> None:
            i = int(counter[0])
            for part, src in zip(
                ring_parts(ring, i, i + len(records)), _split(records, ring, i), strict=True
            ):
                part[:] = src
            counter[0] = i + len(records)

        _fill(extend, total)
        copy = joined(ring_parts(ring, total - k, total))
        if not np.array_equal(copy["seq"], np.arange(total - k, total)):
            raise BenchError("W: the floor returned the wrong newest records")

        def floor_copy() -> Records:
            c = int(counter[0])
            return joined(ring_parts(ring, c - k, c))

        def floor_view(count: int) -> Callable[[], list[Records]]:
            def view() -> list[Records]:
                c = int(counter[0])
                return ring_parts(ring, c - count, c)

            return view

        out["floor_copy"] = _timed(floor_copy, p.w_iters)
        out["floor_view"] = _timed(floor_view(k), p.w_iters * 10)
        out["floor_view_small"] = _timed(floor_view(small), p.w_iters * 10)
        out["floor_wraps"] = len(ring_parts(ring, total - k, total)) == 2
    finally:
        floor.close(unlink=True)
    return out


def _split(records: Records, ring: Records, i: int) -> list[Records]:
    """``records`` cut where writing them at global index ``i`` wraps around ``ring``."""
    first = len(ring) - i % len(ring)
    return [records] if len(records) <= first else [records[:first], records[first:]]


def run_w_iox2(p: Params) -> dict[str, Any]:
    """iceoryx2's history as the W peer: a new subscriber receives the newest 100k into an array."""
    iox_used()
    iox2 = iox()
    k = W_NEWEST
    node = iox_node(iox2)
    name = f"{IOX_SERVICE_TYPE}/{os.getpid()}/{secrets.token_hex(4)}"
    service = iox_service(iox2, node, name, history=k, buffer=k, subscribers=1)
    pub = service.publisher_builder().create()
    try:
        send, pc = pub.send_copy, time.perf_counter
        published = k + 1000
        for i in range(published):
            send(IoxRecord(pc(), i, PRICE, QTY))
        out = np.empty(k, DTYPE)
        times = []
        for _ in range(p.iox_iters):
            out[:] = 0
            base = out.ctypes.data
            t = pc()
            sub = service.subscriber_builder().buffer_size(k).create()
            pub.update_connections()  # delivers the history to the new subscriber
            n = 0
            give_up = t + 30
            while n < k:
                sample = sub.receive()
                if sample is None:
                    if pc() > give_up:
                        break
                    continue
                ctypes.memmove(base + 32 * n, sample.payload_ptr, 32)
                sample.delete()
                n += 1
            times.append(pc() - t)
            sub.delete()
            if n != k or not np.array_equal(out["seq"], np.arange(published - k, published)):
                raise BenchError(f"iceoryx2 history gave {n} records, not the newest {k}")
        return {"copy": statistics.median(times), "records": k}
    finally:
        pub.delete()
        del service, node


def run_r(p: Params) -> dict[str, Any]:
    """refresh() with nothing new and with FEW_NEW new records, at both window sizes."""
    out: dict[str, Any] = {}
    pc_ns = time.perf_counter_ns
    gaps = []
    for _ in range(2000):
        t = pc_ns()
        gaps.append(pc_ns() - t)
    overhead = statistics.median(gaps)  # of one timing, subtracted from single-call timings
    out["timer_overhead_ns"] = overhead
    for label, (retained, segment) in (("1k", R_SMALL), ("1M", R_LARGE)):
        writer, log = new_log(retained, segment)
        reader = AtomicLog.attach(log.name)
        try:
            _fill(writer.extend, retained + segment)
            snap = reader.snapshot()
            refresh = snap.refresh
            batches = []
            for _ in range(p.r_batches):
                t = pc_ns()
                for _ in range(p.r_inner):
                    refresh()
                batches.append((pc_ns() - t) / p.r_inner)
            out[f"nothing_{label}"] = statistics.median(batches) / 1e9
            out[f"window_{label}"] = len(snap)
            append, i = writer.append, retained + segment
            few = []
            for _ in range(p.r_few):
                for _ in range(FEW_NEW):
                    append((0.0, i, PRICE, QTY))
                    i += 1
                t = pc_ns()
                refresh()
                few.append(pc_ns() - t - overhead)
            out[f"few_{label}"] = statistics.median(few) / 1e9
            if snap.end != i:
                raise BenchError("R: the snapshot did not follow the writer")
            del snap, refresh
        finally:
            writer.close()
            reader.close()
            log.close()
            log.unlink()
    floor = Ring(1024)
    try:
        counter = floor.counter
        end = 0
        batches = []
        for _ in range(p.r_batches):
            t = pc_ns()
            for _ in range(p.r_inner):
                c = counter[0]
                if c != end:
                    end = c
            batches.append((pc_ns() - t) / p.r_inner)
        out["floor_nothing"] = statistics.median(batches) / 1e9
    finally:
        floor.close(unlink=True)
    return out


def _quantiles(ns: npt.NDArray[np.int64]) -> dict[str, float]:
    return {
        "p50": float(np.percentile(ns, 50)) / 1e9,
        "p99": float(np.percentile(ns, 99)) / 1e9,
        "p999": float(np.percentile(ns, 99.9)) / 1e9,
        "max": float(ns.max()) / 1e9,
    }


def run_s(kind: str, p: Params) -> dict[str, Any]:
    """Per-append latency over p.s_appends appends, segments of S_SEGMENT (many rollovers)."""
    pc, pc_ns = time.perf_counter, time.perf_counter_ns
    lat = array.array("q")
    n = p.s_appends
    warm = S_SEGMENT + 1  # the first rollover and the page faults of a fresh log, untimed
    if kind == "ours":
        writer, log = new_log(S_RETAINED, S_SEGMENT)
        try:
            append = writer.append
            for i in range(warm):
                append((pc(), i, PRICE, QTY))
            for i in range(warm, warm + n):
                rec = (pc(), i, PRICE, QTY)
                t = pc_ns()
                append(rec)
                lat.append(pc_ns() - t)
        finally:
            writer.close()
            log.close()
            log.unlink()
    else:
        floor = Ring(S_RETAINED)
        try:
            ring, counter, size = floor.ring, floor.counter, floor.n
            for i in range(warm):
                ring[i % size] = (pc(), i, PRICE, QTY)
                counter[0] = i + 1
            for i in range(warm, warm + n):
                rec = (pc(), i, PRICE, QTY)
                t = pc_ns()
                ring[i % size] = rec
                counter[0] = i + 1
                lat.append(pc_ns() - t)
        finally:
            floor.close(unlink=True)
    ns = np.frombuffer(lat, np.int64)
    out: dict[str, Any] = {**_quantiles(ns)}
    rolls = np.arange(warm, warm + n) % S_SEGMENT == 0  # the appends that made a new segment
    out["rollovers"] = int(rolls.sum())
    if kind == "ours" and rolls.any():
        out["rollover_p50"] = float(np.median(ns[rolls])) / 1e9
        out["rollover_max"] = float(ns[rolls].max()) / 1e9
    out["samples"] = ns
    return out
