"""Our log and the floor as transports: each one's reader loop (run in a reader process) and
publisher (the writer side, in the bench's process); the registries of every transport,
the peers' included; and ``reader_main``, the entry point of a reader process.

Readers of ours and of the floor busy-poll (snapshot once, then refresh in a loop), or,
for ``ours_wait``, block in ``snap.wait()`` between refreshes. The followers of F and C use
the cursor API, as an application following a log would: ``cursor.wait(1.0)``, then
``cursor.poll()``; the F one notes when each record arrived, the C one copies what it got.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from multiprocessing.context import BaseContext
from typing import Any

from atomic_log_shm import AtomicLog

from . import peers
from .harness import STOP, WAIT, Follow, Publisher
from .shm import Region, Ring, joined, new_log, ring_parts
from .workload import CHECK_EVERY, PACK, PRICE, QTY, RETAINED, SEGMENT


def _read_ours(cfg: dict[str, Any], f: Follow) -> dict[str, Any]:
    log = AtomicLog.attach(cfg["name"])
    try:
        snap = log.snapshot()
        words, lat, pc = f.words, f.lat, time.perf_counter
        wait = snap.wait if cfg.get("wait") else None  # block instead of spinning
        start = end = snap.end
        f.ready(2)
        polls = 0
        while True:
            stop = words[STOP]
            if wait is not None and not stop:
                wait(WAIT)
            snap.refresh()
            new = snap.end
            if new != end:
                if lat is not None:
                    now = pc()
                    for chunk in reversed(tuple(snap.chunks())):
                        f.record(chunk.values[max(end - chunk.start, 0) :], now)
                        if chunk.start <= end:
                            break
                end = new
            polls += 1
            if stop:
                break
            if not polls & 0xFFF:
                f.check()
        return f.result(end - start, end - 1, polls)
    finally:
        log.close()


FOLLOW_WAIT = 1.0  # seconds the cursor followers wait (F, C) before they look at the control words


def _follow_noting(cfg: dict[str, Any], f: Follow) -> dict[str, Any]:
    """F's waiting follower: ``cursor.wait()``, ``cursor.poll()``, note when each record arrived."""
    log = AtomicLog.attach(cfg["name"])
    try:
        cursor = log.cursor("newest")
        wait, poll, words, pc = cursor.wait, cursor.poll, f.words, time.perf_counter
        start = cursor.position
        f.ready(2)
        polls = missed = 0
        while True:
            stop = words[STOP]
            if not stop and not wait(FOLLOW_WAIT):
                f.check()  # nothing new for a while: is the bench still there?
            batch = poll()
            if batch.arrays:
                now = pc()
                for values in batch.arrays:
                    f.record(values, now)
            missed += batch.missed
            polls += 1
            if stop:
                break
        end = cursor.position
        return {**f.result(end - start, end - 1, polls), "missed": missed}
    finally:
        log.close()


def _follow_copying(cfg: dict[str, Any], f: Follow) -> dict[str, Any]:
    """C's follower: ``cursor.wait()``, ``cursor.poll()``, and copy the new records out."""
    log = AtomicLog.attach(cfg["name"])
    try:
        cursor = log.cursor("newest")
        wait, poll, words = cursor.wait, cursor.poll, f.words
        start = cursor.position
        f.ready(2)
        polls = missed = copied = 0
        while True:
            stop = words[STOP]
            if not stop and not wait(FOLLOW_WAIT):
                f.check()
            batch = poll()
            if batch.arrays:
                copied += len(joined(batch.arrays))  # one new array, bytes copied as the library does
            missed += batch.missed
            polls += 1
            if stop:
                break
        end = cursor.position
        return {**f.result(end - start, end - 1, polls), "missed": missed, "copied": copied}
    finally:
        log.close()


def _read_floor(cfg: dict[str, Any], f: Follow) -> dict[str, Any]:
    ring = Ring(cfg["n"], cfg["name"])
    try:
        counter, records = ring.counter, ring.ring
        words, lat, pc = f.words, f.lat, time.perf_counter
        start = end = int(counter[0])
        f.ready(2)
        polls = 0
        while True:
            stop = words[STOP]
            c = int(counter[0])  # the counter first, then the records below it
            if c != end:
                if lat is not None:
                    now = pc()
                    for part in ring_parts(records, end, c):
                        f.record(part, now)
                end = c
            polls += 1
            if stop:
                break
            if not polls & 0xFFF:
                f.check()
        return f.result(end - start, end - 1, polls)
    finally:
        ring.close()


class OursPub(Publisher):
    kind = "ours"

    def __init__(self, ctx: BaseContext, n_readers: int) -> None:
        super().__init__(ctx, n_readers)
        self.writer, self.log = new_log(RETAINED, SEGMENT)

    def reader_cfgs(self) -> list[dict[str, Any]]:
        return [{"name": self.log.name} for _ in range(self.n_readers)]

    def t_loop(self, seconds: float) -> tuple[int, float]:
        append, pc = self.writer.append, time.perf_counter
        i = 0
        t0 = pc()
        deadline = t0 + seconds
        while True:
            for _ in range(CHECK_EVERY):
                append((pc(), i, PRICE, QTY))
                i += 1
            t = pc()
            if t >= deadline:
                return i, t - t0

    def count_loop(self, n: int) -> float:
        append, pc = self.writer.append, time.perf_counter
        t0 = pc()
        for i in range(n):
            append((pc(), i, PRICE, QTY))
        return pc() - t0

    def sender(self) -> Callable[[float, int], None]:
        append = self.writer.append
        return lambda ts, i: append((ts, i, PRICE, QTY))

    def close(self) -> None:
        self.writer.close()
        self.log.close()
        self.log.unlink()


class OursWaitPub(OursPub):
    """Ours with readers that block in ``snap.wait()`` (where the library has it)."""

    kind = "ours_wait"

    def reader_cfgs(self) -> list[dict[str, Any]]:
        return [{"name": self.log.name, "wait": True} for _ in range(self.n_readers)]


class OursCursorPub(OursPub):
    """Ours with F's follower: ``cursor.wait()`` and ``poll()``, noting each record's latency."""

    kind = "ours_cursor"


class OursCopyPub(OursPub):
    """Ours with C's followers: ``cursor.wait()`` and ``poll()``, copying what they get."""

    kind = "ours_copy"


class FloorPub(Publisher):
    kind = "floor"

    def __init__(self, ctx: BaseContext, n_readers: int) -> None:
        super().__init__(ctx, n_readers)
        self.ring = Ring(RETAINED)

    def reader_cfgs(self) -> list[dict[str, Any]]:
        return [{"name": self.ring.name, "n": self.ring.n} for _ in range(self.n_readers)]

    def t_loop(self, seconds: float) -> tuple[int, float]:
        ring, counter, n, pc = self.ring.ring, self.ring.counter, self.ring.n, time.perf_counter
        i = 0
        t0 = pc()
        deadline = t0 + seconds
        while True:
            for _ in range(CHECK_EVERY):
                ring[i % n] = (pc(), i, PRICE, QTY)
                counter[0] = i + 1
                i += 1
            t = pc()
            if t >= deadline:
                return i, t - t0

    def sender(self) -> Callable[[float, int], None]:
        ring, counter, n = self.ring.ring, self.ring.counter, self.ring.n

        def send(ts: float, i: int) -> None:
            ring[i % n] = (ts, i, PRICE, QTY)
            counter[0] = i + 1

        return send

    def close(self) -> None:
        self.ring.close(unlink=True)


class StructFloorPub(FloorPub):
    """The floor's ring written the struct way: ``struct.pack_into`` of the record's
    fields, passed one by one, into the ring's mmap, then the counter. No numpy record on
    the way: the fastest pure-Python store of a record measured here. Publishes only (A)."""

    kind = "floor_struct"

    def t_loop(self, seconds: float) -> tuple[int, float]:
        region, counter, n, pc = self.ring.region.map, self.ring.counter, self.ring.n, time.perf_counter
        pack_into, size, base = PACK.pack_into, PACK.size, Ring.HEADER
        i = 0
        t0 = pc()
        deadline = t0 + seconds
        while True:
            for _ in range(CHECK_EVERY):
                pack_into(region, base + (i % n) * size, pc(), i, PRICE, QTY)
                counter[0] = i + 1
                i += 1
            t = pc()
            if t >= deadline:
                return i, t - t0


READERS: dict[str, Callable[[dict[str, Any], Follow], dict[str, Any]]] = {
    "ours": _read_ours,
    "ours_wait": _read_ours,
    "ours_cursor": _follow_noting,
    "ours_copy": _follow_copying,
    "floor": _read_floor,
    "mpqueue": peers.read_mpqueue,
    "ffifo": peers.read_ffifo,
    "zmq": peers.read_zmq,
    "iox2": peers.read_iox2,
}


def reader_main(
    kind: str,
    cfg: dict[str, Any],
    ctrl_name: str,
    slot: int,
    latency_n: int,
    latency_skip: int,
    main_pid: int,
    deadline: float,
    results: Any,
) -> None:
    """Entry point of a reader process: follow the transport, put ``(slot, result)``."""
    ctrl = Region(ctrl_name)
    words = ctrl.words()
    try:
        out = READERS[kind](cfg, Follow(words, slot, latency_n, main_pid, deadline, latency_skip))
    except BaseException as exc:
        out = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc(limit=6)}
    finally:
        words.release()
        ctrl.close()
    results.put((slot, out))


PUBLISHERS: dict[str, type[Publisher]] = {
    "ours": OursPub,
    "ours_wait": OursWaitPub,
    "ours_cursor": OursCursorPub,
    "ours_copy": OursCopyPub,
    "floor": FloorPub,
    "floor_struct": StructFloorPub,
    "mpqueue": peers.MpQueuePub,
    "ffifo": peers.FfifoPub,
    "zmq": peers.ZmqPub,
    "iox2": peers.Iox2Pub,
}
