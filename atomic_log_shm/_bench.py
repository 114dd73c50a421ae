"""Benchmarks of atomic-log-shm against a bare shared-memory ring (the floor) and IPC peers.

    python -m atomic_log_shm._bench                 # full run (a few minutes)
    python -m atomic_log_shm._bench --quick         # smoke run (seconds)
    python -m atomic_log_shm._bench --json out.json --charts charts/ --repeats 5

Records are 32 bytes, ``[('ts','f8'),('seq','i8'),('price','f8'),('qty','i8')]``; ``ts`` is
``time.perf_counter()`` (CLOCK_MONOTONIC, one clock for every process on Linux) at publish.
The writer is this process; readers are separate processes.

  T  one record per append for a fixed time, 0/1/4 busy-polling reader processes: writer records/s
  B  extend() in batches of 1,000, no readers: records/s
  L  paced at 10,000 records/s, one busy-polling reader: publish-to-observe latency p50/p99/p99.9
  W  the newest 100,000 of >= 1,000,000 records as one copied array and as zero-copy chunks;
     the newest 1,000 zero-copy too (cost follows segments, not records)
  R  refresh() with nothing new and with a few new records, windows of 1,000 and 1,000,000
  S  append latency over many segment rollovers: p50, p99.9, max

Readers of ours and of the floor busy-poll (snapshot once, then refresh in a loop); the queue and
socket peers block in their receive, as they are meant to be used (a busy-polled, lock-based
queue starves its writer), with a short timeout to look at the stop flag; iceoryx2 is polled.

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
import array
import contextlib
import ctypes
import importlib
import json
import math
import mmap
import multiprocessing as mp
import os
import platform
import queue
import secrets
import shutil
import signal
import statistics
import struct
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from types import ModuleType
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt
import posix_ipc

from atomic_log_shm import AtomicLog, Snapshot, remove_log

DTYPE = np.dtype([("ts", "<f8"), ("seq", "<i8"), ("price", "<f8"), ("qty", "<i8")])
PACK = struct.Struct("<dqdq")  # the same 32 bytes, for the peers that carry bytes
assert DTYPE.itemsize == PACK.size == 32
PRICE, QTY = 101.25, 7

RETAINED = 1 << 20  # the log of T, B and L (and the floor ring's size)
SEGMENT = 1 << 16
BATCH = 1000
CHECK_EVERY = 1024  # records between clock reads in the timed loops
S_RETAINED, S_SEGMENT = 1 << 16, 1 << 12
R_SMALL = (1000, 250)  # R: (retained, segment) of the 1k window
R_LARGE = (1_000_000, 1 << 16)
W_NEWEST, W_SMALL = 100_000, 1000
FEW_NEW = 3
ATTEMPTS = 3  # tries of one measurement before it counts as failed

# Control words shared by the bench and its readers (int64 each).
STOP = 0  # 0 run; 1 the writer is done (lossy readers drain and stop); 2 abort now
READY = 8  # READY + slot: 1 = reader attached, 2 = reader has seen the transport work
MAX_READERS = 8
WAIT = 0.1  # seconds a blocking peer reader waits before it looks at the control words
CTRL_BYTES = 8 * (READY + MAX_READERS)

Records = npt.NDArray[Any]
_T = TypeVar("_T")
PEERS = (("pyzmq", "zmq"), ("faster-fifo", "faster_fifo"), ("iceoryx2", "iceoryx2"))
FOLLOW_PEERS = ("mpqueue", "zmq", "ffifo", "iox2")
LABEL = {
    "ours": "ours",
    "ours_wait": "ours (wait)",
    "floor": "floor",
    "mpqueue": "mp.Queue",
    "zmq": "pyzmq",
    "ffifo": "faster-fifo",
    "iox2": "iceoryx2",
}


class BenchError(Exception):
    """A measurement could not be made (a reader failed, timed out, a peer misbehaved)."""


@dataclass(frozen=True)
class Params:
    quick: bool
    repeats: int
    t_seconds: float
    b_seconds: float
    l_rate: int
    l_seconds: float
    w_total: int
    w_ring: int
    w_iters: int
    iox_iters: int
    r_batches: int
    r_inner: int
    r_few: int
    s_appends: int
    reader_timeout: float

    @classmethod
    def make(cls, quick: bool, repeats: int | None) -> Params:
        if quick:
            return cls(
                quick=True, repeats=repeats or 1, t_seconds=0.15, b_seconds=0.15, l_rate=10_000,
                l_seconds=0.3, w_total=150_000, w_ring=1 << 17, w_iters=15, iox_iters=1, r_batches=20,
                r_inner=200, r_few=500, s_appends=60_000, reader_timeout=60.0,
            )  # fmt: skip
        return cls(
            quick=False, repeats=repeats or 3, t_seconds=1.5, b_seconds=1.5, l_rate=10_000,
            l_seconds=2.0, w_total=1_100_000, w_ring=1 << 20, w_iters=60, iox_iters=3, r_batches=50,
            r_inner=2000, r_few=5000, s_appends=1_000_000, reader_timeout=120.0,
        )  # fmt: skip


# --------------------------------------------------------------------------------------------
# Shared-memory regions made by the bench (the floor ring, control words)

_created: set[str] = set()  # region names to unlink on the way out


def _new_name(tag: str) -> str:
    return f"alogbench-{os.getpid()}-{secrets.token_hex(4)}-{tag}"


def _unlink(name: str) -> None:
    with contextlib.suppress(posix_ipc.ExistentialError):
        posix_ipc.unlink_shared_memory("/" + name)
    _created.discard(name)


class Region:
    """One POSIX shared-memory region, mapped read-write."""

    def __init__(self, name: str, size: int = 0, *, create: bool = False) -> None:
        if create:
            shm = posix_ipc.SharedMemory("/" + name, posix_ipc.O_CREX, mode=0o600, size=size)
            _created.add(name)
        else:
            shm = posix_ipc.SharedMemory("/" + name)
        try:
            self._map = mmap.mmap(shm.fd, shm.size)
        finally:
            shm.close_fd()
        self.name = name

    @property
    def map(self) -> mmap.mmap:
        return self._map

    def array(self, dtype: Any, count: int, offset: int) -> Records:
        return np.frombuffer(self._map, dtype, count, offset)

    def words(self) -> memoryview:
        return memoryview(self._map).cast("q")

    def close(self) -> None:
        # While arrays still view it, the mapping goes with the last of them.
        with contextlib.suppress(BufferError):
            self._map.close()

    def unlink(self) -> None:
        _unlink(self.name)


class Ring:
    """THE FLOOR: a numpy ring of records and an int64 counter in one region, no abstraction.

    The writer stores ``ring[i % n] = rec`` then ``counter[0] = i + 1``; a reader loads the
    counter, then the records below it.
    """

    HEADER = 64  # the counter, alone on its cache line

    def __init__(self, n: int, name: str | None = None) -> None:
        create = name is None
        self.region = Region(name or _new_name("ring"), self.HEADER + n * DTYPE.itemsize, create=create)
        self.counter = self.region.array(np.int64, 1, 0)
        self.ring = self.region.array(DTYPE, n, self.HEADER)
        self.n = n

    @property
    def name(self) -> str:
        return self.region.name

    def close(self, unlink: bool = False) -> None:
        del self.counter, self.ring
        self.region.close()
        if unlink:
            self.region.unlink()


def ring_parts(ring: Records, lo: int, hi: int) -> list[Records]:
    """Views of the records numbered ``lo..hi`` (at most the last ``len(ring)``), oldest first."""
    n = len(ring)
    lo = max(lo, hi - n)
    if hi <= lo:
        return []
    a = lo % n
    b = a + hi - lo
    if b <= n:
        return [ring[a:b]]
    return [ring[a:], ring[: b - n]]


def newest_chunks(snap: Snapshot, k: int) -> list[Records]:
    """Zero-copy views of the newest ``k`` records a snapshot shows, oldest first."""
    out: list[Records] = []
    need = k
    for chunk in reversed(tuple(snap.chunks())):
        values = chunk.values
        if len(values) >= need:
            out.append(values[len(values) - need :])
            break
        out.append(values)
        need -= len(values)
    out.reverse()
    return out


def joined(parts: Sequence[Records]) -> Records:
    """One new array holding ``parts`` end to end (raw bytes joined, as the library does)."""
    return np.concatenate([part.view(np.uint8) for part in parts]).view(parts[0].dtype)


def _batch() -> Records:
    batch = np.zeros(BATCH, DTYPE)
    batch["price"] = PRICE
    batch["qty"] = QTY
    return batch


# --------------------------------------------------------------------------------------------
# Optional packages

_IOX_SERVICE_TYPE = "alogbench"


class IoxRecord(ctypes.Structure):
    """The record as iceoryx2 carries it (ctypes payload, same 32-byte layout)."""

    _fields_ = [
        ("ts", ctypes.c_double),
        ("seq", ctypes.c_int64),
        ("price", ctypes.c_double),
        ("qty", ctypes.c_int64),
    ]


def _optional(module: str) -> ModuleType | None:
    try:
        return importlib.import_module(module)
    except Exception:
        return None


def _iox() -> ModuleType:
    iox2 = importlib.import_module("iceoryx2")
    iox2.set_log_level(iox2.LogLevel.Error)
    return iox2


def _iox_node(iox2: ModuleType) -> Any:
    # Without this, iceoryx2 takes SIGINT and SIGTERM for itself: the bench could not be stopped.
    builder = iox2.NodeBuilder.new().signal_handling_mode(iox2.SignalHandlingMode.Disabled)
    return builder.create(iox2.ServiceType.Ipc)


def _iox_service(
    iox2: ModuleType,
    node: Any,
    name: str,
    history: int = 0,
    buffer: int = 1024,
    subscribers: int = MAX_READERS,
) -> Any:
    builder = node.service_builder(iox2.ServiceName.new(name)).publish_subscribe(IoxRecord)
    builder = (
        builder.max_publishers(1)
        .max_subscribers(subscribers)
        .history_size(history)
        .subscriber_max_buffer_size(max(buffer, history))
        .enable_safe_overflow(True)
    )
    return builder.open_or_create()


def peer_status() -> dict[str, str]:
    """``{pip name: "installed X.Y" or "missing (...)"}``."""
    from importlib import metadata

    status = {}
    for pip, module in PEERS:
        if _optional(module) is None:
            status[pip] = f"missing (pip install {pip})"
        else:
            try:
                status[pip] = f"installed {metadata.version(pip)}"
            except metadata.PackageNotFoundError:
                status[pip] = "installed"
    return status


# --------------------------------------------------------------------------------------------
# Readers (run in child processes)


class Follow:
    """What a reader process needs besides its transport: control words, a latency table."""

    def __init__(self, words: memoryview, slot: int, latency_n: int, main_pid: int, deadline: float) -> None:
        self.words = words
        self.slot = slot
        self.lat: npt.NDArray[np.float64] | None = np.full(latency_n, np.nan) if latency_n else None
        self.main_pid = main_pid
        self.deadline = deadline

    def ready(self, level: int) -> None:
        self.words[READY + self.slot] = level

    def check(self) -> None:
        """Raise if the bench is gone or the run overran: never outlive the bench."""
        if time.monotonic() > self.deadline:
            raise BenchError("reader deadline passed")
        try:
            os.kill(self.main_pid, 0)
        except ProcessLookupError:
            raise BenchError("the bench process is gone") from None

    def record(self, values: Records, now: float) -> None:
        lat = self.lat
        assert lat is not None
        seqs = values["seq"]
        keep = (seqs >= 0) & (seqs < len(lat))
        lat[seqs[keep]] = now - values["ts"][keep]

    def record_one(self, seq: int, ts: float, now: float) -> None:
        lat = self.lat
        assert lat is not None
        if 0 <= seq < len(lat):
            lat[seq] = now - ts

    def result(self, seen: int, last: int, polls: int) -> dict[str, Any]:
        out: dict[str, Any] = {"seen": seen, "last": last, "polls": polls}
        if self.lat is not None:
            out["lat"] = self.lat[~np.isnan(self.lat)]
        return out


def _read_ours(cfg: dict[str, Any], f: Follow) -> dict[str, Any]:
    log = AtomicLog.attach(cfg["name"])
    try:
        snap = log.snapshot()
        cap = log.segment_capacity
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
                        base = chunk.sequence * cap
                        f.record(chunk.values[max(end - base, 0) :], now)
                        if base <= end:
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


def _read_messages(
    receive: Callable[[], Iterable[bytes | None]], empty: type[BaseException], lossy: bool, f: Follow
) -> dict[str, Any]:
    """Follow a message transport: ``receive()`` returns messages or raises ``empty``.

    Lossy transports (PUB/SUB, iceoryx2) stop once the writer is done and nothing is left;
    queues stop at their ``None`` sentinel. Records with seq < 0 are warm-up messages.
    """
    words, lat, pc, unpack = f.words, f.lat, time.perf_counter, PACK.unpack
    seen = polls = 0
    last = -1
    warm = False
    while True:
        stop = words[STOP]
        try:
            msgs = receive()
        except empty:
            polls += 1
            if stop == 2 or (stop and lossy):
                break
            if not polls & 0xFFF:
                f.check()
            continue
        now = pc()
        for msg in msgs:
            if msg is None:
                return f.result(seen, last, polls)
            ts, seq, _, _ = unpack(msg)
            if seq < 0:
                if not warm:
                    warm = True
                    f.ready(2)
                continue
            seen += 1
            last = seq
            if lat is not None:
                f.record_one(seq, ts, now)
    return f.result(seen, last, polls)


def _read_mpqueue(cfg: dict[str, Any], f: Follow) -> dict[str, Any]:
    get = cfg["queue"].get
    f.ready(2)
    return _read_messages(lambda: (get(True, WAIT),), queue.Empty, False, f)


def _read_ffifo(cfg: dict[str, Any], f: Follow) -> dict[str, Any]:
    get_many = cfg["queue"].get_many
    f.ready(2)
    return _read_messages(lambda: get_many(True, WAIT), queue.Empty, False, f)


def _read_zmq(cfg: dict[str, Any], f: Follow) -> dict[str, Any]:
    zmq = importlib.import_module("zmq")
    context = zmq.Context()
    sock = context.socket(zmq.SUB)
    try:
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.setsockopt(zmq.RCVTIMEO, int(WAIT * 1000))
        sock.connect(cfg["addr"])
        recv = sock.recv
        f.ready(1)
        return _read_messages(lambda: (recv(),), zmq.Again, True, f)
    finally:
        sock.close(0)
        context.term()


class _NoSample(Exception):
    pass


def _read_iox2(cfg: dict[str, Any], f: Follow) -> dict[str, Any]:
    iox2 = _iox()
    node = _iox_node(iox2)
    service = _iox_service(iox2, node, cfg["service"])
    sub = service.subscriber_builder().create()
    try:
        receive, string_at = sub.receive, ctypes.string_at

        def one() -> tuple[bytes]:
            sample = receive()
            if sample is None:
                raise _NoSample
            msg = string_at(sample.payload_ptr, 32)
            sample.delete()
            return (msg,)

        f.ready(1)
        return _read_messages(one, _NoSample, True, f)
    finally:
        sub.delete()
        del service, node


READERS: dict[str, Callable[[dict[str, Any], Follow], dict[str, Any]]] = {
    "ours": _read_ours,
    "ours_wait": _read_ours,
    "floor": _read_floor,
    "mpqueue": _read_mpqueue,
    "ffifo": _read_ffifo,
    "zmq": _read_zmq,
    "iox2": _read_iox2,
}


def reader_main(
    kind: str,
    cfg: dict[str, Any],
    ctrl_name: str,
    slot: int,
    latency_n: int,
    main_pid: int,
    deadline: float,
    results: Any,
) -> None:
    """Entry point of a reader process: follow the transport, put ``(slot, result)``."""
    ctrl = Region(ctrl_name)
    words = ctrl.words()
    try:
        out = READERS[kind](cfg, Follow(words, slot, latency_n, main_pid, deadline))
    except BaseException as exc:
        out = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc(limit=6)}
    finally:
        words.release()
        ctrl.close()
    results.put((slot, out))


# --------------------------------------------------------------------------------------------
# Publishers (the writer side, in this process)


class Publisher:
    """One transport's writer side: set up for n readers, timed loops, sentinels, cleanup."""

    kind = ""
    warmup_needed = False

    def __init__(self, ctx: BaseContext, n_readers: int) -> None:
        self.n_readers = n_readers

    def reader_cfgs(self) -> list[dict[str, Any]]:
        return [{} for _ in range(self.n_readers)]

    def warmup(self) -> None:
        pass

    def t_loop(self, seconds: float) -> tuple[int, float]:
        """Publish as fast as possible for ``seconds``: (records, elapsed).

        Each publisher writes this loop out in full, on purpose: one shared loop calling a
        function per record would add the same call to every contender and blur the very
        differences T measures.
        """
        raise NotImplementedError

    def sender(self) -> Callable[[float, int], None]:
        """Publish one record ``(ts, i)``: for the paced loop of L."""
        raise NotImplementedError

    def finish(self) -> None:
        """After the last record: sentinels for the queues."""

    def close(self) -> None:
        pass


class OursPub(Publisher):
    kind = "ours"

    def __init__(self, ctx: BaseContext, n_readers: int) -> None:
        super().__init__(ctx, n_readers)
        self.writer, self.log = AtomicLog.new_claimed(retained=RETAINED, segment=SEGMENT, dtype=DTYPE)
        _logs.append(self.log)

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


class _FanOutPub(Publisher):
    """One bounded queue per reader; each record is put into every queue."""

    queues: list[Any]

    def reader_cfgs(self) -> list[dict[str, Any]]:
        return [{"queue": q} for q in self.queues]

    def t_loop(self, seconds: float) -> tuple[int, float]:
        puts, pack, pc = [q.put for q in self.queues], PACK.pack, time.perf_counter
        i = 0
        t0 = pc()
        deadline = t0 + seconds
        while True:
            for _ in range(CHECK_EVERY):
                msg = pack(pc(), i, PRICE, QTY)
                for put in puts:
                    put(msg, True, 10.0)  # blocks while a reader's queue is full (10 s: fail)
                i += 1
            t = pc()
            if t >= deadline:
                return i, t - t0

    def sender(self) -> Callable[[float, int], None]:
        puts, pack = [q.put for q in self.queues], PACK.pack

        def send(ts: float, i: int) -> None:
            msg = pack(ts, i, PRICE, QTY)
            for put in puts:
                put(msg, True, 10.0)

        return send

    def finish(self) -> None:
        for q in self.queues:
            q.put(None, True, 10.0)


class MpQueuePub(_FanOutPub):
    kind = "mpqueue"

    def __init__(self, ctx: BaseContext, n_readers: int) -> None:
        super().__init__(ctx, n_readers)
        self.queues = [ctx.Queue(maxsize=1000) for _ in range(n_readers)]

    def close(self) -> None:
        for q in self.queues:
            q.cancel_join_thread()  # never wait on a reader that is gone
            q.close()


class FfifoPub(_FanOutPub):
    kind = "ffifo"

    def __init__(self, ctx: BaseContext, n_readers: int) -> None:
        super().__init__(ctx, n_readers)
        ff = importlib.import_module("faster_fifo")
        self.queues = [ff.Queue(max_size_bytes=1 << 20) for _ in range(n_readers)]

    def close(self) -> None:
        for q in self.queues:
            q.close()


class ZmqPub(Publisher):
    kind = "zmq"
    warmup_needed = True

    def __init__(self, ctx: BaseContext, n_readers: int) -> None:
        super().__init__(ctx, n_readers)
        zmq = importlib.import_module("zmq")
        self.dir = tempfile.mkdtemp(prefix="alogbench-zmq-")
        self.addr = f"ipc://{self.dir}/pub"
        self.context = zmq.Context()
        self.sock = self.context.socket(zmq.PUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(self.addr)

    def reader_cfgs(self) -> list[dict[str, Any]]:
        return [{"addr": self.addr} for _ in range(self.n_readers)]

    def warmup(self) -> None:
        self.sock.send(PACK.pack(time.perf_counter(), -1, PRICE, QTY))

    def t_loop(self, seconds: float) -> tuple[int, float]:
        send, pack, pc = self.sock.send, PACK.pack, time.perf_counter
        i = 0
        t0 = pc()
        deadline = t0 + seconds
        while True:
            for _ in range(CHECK_EVERY):
                send(pack(pc(), i, PRICE, QTY))
                i += 1
            t = pc()
            if t >= deadline:
                return i, t - t0

    def sender(self) -> Callable[[float, int], None]:
        send, pack = self.sock.send, PACK.pack
        return lambda ts, i: send(pack(ts, i, PRICE, QTY))

    def close(self) -> None:
        self.sock.close(0)
        self.context.term()
        shutil.rmtree(self.dir, ignore_errors=True)


class Iox2Pub(Publisher):
    kind = "iox2"
    warmup_needed = True

    def __init__(self, ctx: BaseContext, n_readers: int) -> None:
        super().__init__(ctx, n_readers)
        _iox_used()
        iox2 = _iox()
        self.service_name = f"{_IOX_SERVICE_TYPE}/{os.getpid()}/{secrets.token_hex(4)}"
        self.node = _iox_node(iox2)
        self.service = _iox_service(iox2, self.node, self.service_name)
        self.pub = self.service.publisher_builder().create()

    def reader_cfgs(self) -> list[dict[str, Any]]:
        return [{"service": self.service_name} for _ in range(self.n_readers)]

    def warmup(self) -> None:
        self.pub.update_connections()
        self.pub.send_copy(IoxRecord(time.perf_counter(), -1, PRICE, QTY))

    def t_loop(self, seconds: float) -> tuple[int, float]:
        send, rec, pc = self.pub.send_copy, IoxRecord, time.perf_counter
        i = 0
        t0 = pc()
        deadline = t0 + seconds
        while True:
            for _ in range(CHECK_EVERY):
                send(rec(pc(), i, PRICE, QTY))
                i += 1
            t = pc()
            if t >= deadline:
                return i, t - t0

    def sender(self) -> Callable[[float, int], None]:
        send, rec = self.pub.send_copy, IoxRecord
        return lambda ts, i: send(rec(ts, i, PRICE, QTY))

    def close(self) -> None:
        self.pub.delete()
        del self.service, self.node


PUBLISHERS: dict[str, type[Publisher]] = {
    "ours": OursPub,
    "ours_wait": OursWaitPub,
    "floor": FloorPub,
    "mpqueue": MpQueuePub,
    "ffifo": FfifoPub,
    "zmq": ZmqPub,
    "iox2": Iox2Pub,
}


# --------------------------------------------------------------------------------------------
# Running a writer with reader processes (T and L)


def _stop_processes(procs: Sequence[BaseProcess]) -> None:
    for proc in procs:
        proc.join(timeout=5)
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=2)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=2)


def _reader_errors(results: Any) -> str:
    errors: list[str] = []
    while True:
        try:
            slot, out = results.get(timeout=0.2)
        except queue.Empty:
            return "; ".join(errors) or "no message"
        if "error" in out:
            errors.append(f"reader {slot}: {out['error']}")


def _wait_ready(words: memoryview, procs: Sequence[BaseProcess], pub: Publisher, results: Any) -> None:
    deadline = time.monotonic() + 60
    n = len(procs)
    while True:
        levels = [words[READY + k] for k in range(n)]
        if all(level >= 2 for level in levels):
            return
        if any(proc.exitcode is not None for proc in procs):
            raise BenchError(f"a reader exited before it was ready: {_reader_errors(results)}")
        if time.monotonic() > deadline:
            raise BenchError(f"readers not ready after 60 s (states {levels})")
        if pub.warmup_needed and all(level >= 1 for level in levels):
            pub.warmup()
        time.sleep(0.001)


def _collect(results: Any, n: int, timeout: float) -> list[dict[str, Any]]:
    outs: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while len(outs) < n:
        try:
            slot, out = results.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            raise BenchError(f"{n - len(outs)} reader(s) gave no result within {timeout:.0f} s") from None
        if "error" in out:
            raise BenchError(f"reader {slot}: {out['error']}\n{out.get('trace', '')}")
        outs[slot] = out
    return [outs[k] for k in range(n)]


def run_followed(ctx: BaseContext, kind: str, scenario: str, n_readers: int, p: Params) -> dict[str, Any]:
    """One run of T (``scenario="T"``) or L with ``n_readers`` reader processes."""
    latency_n = int(p.l_rate * p.l_seconds) if scenario == "L" else 0
    ctrl = Region(_new_name("ctrl"), CTRL_BYTES, create=True)
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
        _wait_ready(words, procs, pub, results)
        if scenario == "T":
            count, elapsed = pub.t_loop(p.t_seconds)
        else:
            count, elapsed = latency_n, paced(pub.sender(), p.l_rate, latency_n)
        pub.finish()
        time.sleep(0.05)  # let the last messages of the lossy transports arrive
        words[STOP] = 1
        outs = _collect(results, n_readers, p.reader_timeout)
    finally:
        words[STOP] = 2
        _stop_processes(procs)
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


# --------------------------------------------------------------------------------------------
# In-process scenarios (B, W, R, S)


def run_b(kind: str, p: Params) -> dict[str, Any]:
    """extend() in batches of 1,000 for p.b_seconds; the floor writes the batch into its ring."""
    batch = _batch()
    ts, seq, base = batch["ts"], batch["seq"], np.arange(BATCH, dtype=np.int64)
    pc = time.perf_counter
    i = 0
    if kind == "ours":
        writer, log = AtomicLog.new_claimed(retained=RETAINED, segment=SEGMENT, dtype=DTYPE)
        _logs.append(log)
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
    writer, log = AtomicLog.new_claimed(retained=max(RETAINED, total), segment=SEGMENT, dtype=DTYPE)
    _logs.append(log)
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
    _iox_used()
    iox2 = _iox()
    k = W_NEWEST
    node = _iox_node(iox2)
    name = f"{_IOX_SERVICE_TYPE}/{os.getpid()}/{secrets.token_hex(4)}"
    service = _iox_service(iox2, node, name, history=k, buffer=k, subscribers=1)
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
        writer, log = AtomicLog.new_claimed(retained=retained, segment=segment, dtype=DTYPE)
        _logs.append(log)
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
        writer, log = AtomicLog.new_claimed(retained=S_RETAINED, segment=S_SEGMENT, dtype=DTYPE)
        _logs.append(log)
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


# --------------------------------------------------------------------------------------------
# The suite


_logs: list[AtomicLog] = []
_iox_state: dict[str, Any] = {}


def _iox_used() -> None:
    """Note, before iceoryx2 first runs, what it had in /dev/shm and /tmp (to clean up after)."""
    if "shm" not in _iox_state:
        _iox_state["shm"] = {e for e in os.listdir("/dev/shm") if e.startswith("iox2_")}
        _iox_state["tmp_existed"] = os.path.exists(os.path.join(tempfile.gettempdir(), "iceoryx2"))


def _cleanup() -> list[str]:
    """Remove everything this run left in /dev/shm; returns what had to be removed."""
    leftovers = []
    for log in _logs:
        log.unlink()
    _logs.clear()
    for name in list(_created):
        leftovers.append(name)
        _unlink(name)
    prefix = f"alog-{os.getpid()}-"
    for entry in os.listdir("/dev/shm"):
        if entry.startswith(prefix) and "@" not in entry:
            leftovers.append(entry)
            remove_log(entry)
    if "shm" in _iox_state:
        # iceoryx2 keeps a global management region (and stale ones of killed nodes) after
        # the last node is gone; remove what appeared since this run first used it.
        for entry in os.listdir("/dev/shm"):
            if entry.startswith("iox2_") and entry not in _iox_state["shm"]:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join("/dev/shm", entry))
        tmp = os.path.join(tempfile.gettempdir(), "iceoryx2")
        if not _iox_state["tmp_existed"] and not any(files for _, _, files in os.walk(tmp)):
            shutil.rmtree(tmp, ignore_errors=True)
        _iox_state.clear()
    return leftovers


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
    def __init__(self, p: Params, ctx: BaseContext, peers: Sequence[str]) -> None:
        self.p = p
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

    # ---- the table

    def rows(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        sc = self.scenarios

        def row(
            scenario: str, ours: str, baseline: str, ratio: float | None, target: str, met: bool | None
        ) -> None:
            rows.append(
                {
                    "scenario": scenario,
                    "ours": ours,
                    "baseline": baseline,
                    "ratio": ratio,
                    "target": target,
                    "met": met,
                }
            )

        t = sc.get("T", {}).get("rates", {})
        for n in (0, 1, 4):
            ours, floor = t.get(f"ours/{n}"), t.get(f"floor/{n}")
            if ours is None:
                continue
            target = "≥0.80x" if n else "-"
            ratio = ours / floor if floor else None
            met = None if not n or ratio is None else ratio >= 0.8
            row(f"T append, {n} readers (rec/s)", _rate(ours), f"floor {_rate(floor)}", ratio, target, met)
            for peer in self.peers if n else ():
                other = t.get(f"{peer}/{n}")
                if other is not None:
                    row(
                        f"T append, {n} readers (rec/s)",
                        _rate(ours),
                        f"{LABEL[peer]} {_rate(other)}",
                        ours / other,
                        ">1x",
                        ours > other,
                    )
        if t.get("ours/4") and t.get("ours/0"):
            ratio = t["ours/4"] / t["ours/0"]
            floor_ratio = t["floor/4"] / t["floor/0"] if t.get("floor/4") and t.get("floor/0") else None
            base = f"floor 4v0: {floor_ratio:.2f}x" if floor_ratio else "-"
            row("T 4 readers vs 0 (ours)", f"{ratio:.2f}x", base, ratio, "≥0.90x", ratio >= 0.9)
        for n in (1, 4):  # what waiting readers cost the writer: a futex wake per publication
            waited, alone = t.get(f"ours_wait/{n}"), t.get("ours/0")
            if waited and alone:
                row(
                    f"T append cost, {n} readers in wait()",
                    f"{1e9 / waited:.0f} ns",
                    f"no reader: {1e9 / alone:.0f} ns",
                    alone / waited,
                    "-",
                    None,
                )
        b = sc.get("B", {}).get("rates", {})
        if "ours" in b:
            ratio = b["ours"] / b["floor"] if b.get("floor") else None
            row(
                "B extend x1000 (rec/s)",
                _rate(b["ours"]),
                f"floor {_rate(b.get('floor'))}",
                ratio,
                "≥0.80x",
                None if ratio is None else ratio >= 0.8,
            )
        lat = sc.get("L", {}).get("stats", {})
        if "ours" in lat:
            ours, floor = lat["ours"], lat.get("floor")
            ratio = ours["p50"] / floor["p50"] if floor else None
            row(
                "L p50 latency",
                _time(ours["p50"]),
                f"floor {_time(floor and floor['p50'])}",
                ratio,
                "≤2x",
                None if ratio is None else ratio <= 2,
            )
            iox = lat.get("iox2")
            if iox:
                ratio = ours["p99"] / iox["p99"]
                row(
                    "L p99 latency",
                    _time(ours["p99"]),
                    f"iceoryx2 {_time(iox['p99'])}",
                    ratio,
                    "≤1x",
                    ratio <= 1,
                )
            else:
                row("L p99 latency", _time(ours["p99"]), "iceoryx2: not run", None, "≤1x", None)
            waits = lat.get("ours_wait")
            if waits and floor:
                row(
                    "L p50 latency, ours reader in wait()",
                    _time(waits["p50"]),
                    f"floor {_time(floor['p50'])}",
                    waits["p50"] / floor["p50"],
                    "-",
                    None,
                )
            if floor:
                row(
                    "L p99.9 latency",
                    _time(ours["p999"]),
                    f"floor {_time(floor['p999'])}",
                    ours["p999"] / floor["p999"],
                    "-",
                    None,
                )
        w = sc.get("W", {})
        if "ours_copy" in w:
            ratio = w["ours_copy"] / w["floor_copy"]
            row(
                "W newest 100k, copy",
                _time(w["ours_copy"]),
                f"floor {_time(w['floor_copy'])}",
                ratio,
                "≤1.5x",
                ratio <= 1.5,
            )
            if "iox2" in w:
                row(
                    "W newest 100k, copy",
                    _time(w["ours_copy"]),
                    f"iceoryx2 history {_time(w['iox2']['copy'])}",
                    w["ours_copy"] / w["iox2"]["copy"],
                    "-",
                    None,
                )
            per_big = w["ours_view"] / w["ours_view_chunks"]
            per_small = w["ours_view_small"] / w["ours_view_small_chunks"]
            scales = per_big <= 3 * per_small
            row(
                f"W newest 100k, zero-copy ({w['ours_view_chunks']:.0f} chunks)",
                _time(w["ours_view"]),
                f"floor views {_time(w['floor_view'])}",
                w["ours_view"] / w["floor_view"],
                "O(segments)",
                scales,
            )
            row(
                f"W newest 1k, zero-copy ({w['ours_view_small_chunks']:.0f} chunk)",
                _time(w["ours_view_small"]),
                f"floor views {_time(w['floor_view_small'])}",
                w["ours_view_small"] / w["floor_view_small"],
                "O(segments)",
                scales,
            )
        r = sc.get("R", {})
        if "nothing_1k" in r:
            for label in ("1k", "1M"):
                v = r[f"nothing_{label}"]
                row(
                    f"R refresh, nothing new, window {label}",
                    _time(v),
                    f"floor load {_time(r['floor_nothing'])}",
                    v / r["floor_nothing"],
                    "≤3 µs",
                    v <= 3e-6,
                )
            ratio = r["nothing_1M"] / r["nothing_1k"]
            row("R nothing new: 1M vs 1k", f"{ratio:.2f}x", "window 1k", ratio, "same (≤1.5x)", ratio <= 1.5)
            for label in ("1k", "1M"):
                row(
                    f"R refresh, {FEW_NEW} new, window {label}",
                    _time(r[f"few_{label}"]),
                    "-",
                    None,
                    "-",
                    None,
                )
        s = sc.get("S", {})
        if "ours" in s:
            ours, floor = s["ours"], s.get("floor", {})
            ratio = ours["p999"] / ours["p50"]
            row("S append p50", _time(ours["p50"]), f"floor {_time(floor.get('p50'))}", None, "-", None)
            row("S append p99.9", _time(ours["p999"]), f"floor {_time(floor.get('p999'))}", None, "-", None)
            row("S append max", _time(ours["max"]), f"floor {_time(floor.get('max'))}", None, "-", None)
            if "rollover_p50" in ours:
                row(
                    f"S rollover appends, p50 (max {_time(ours['rollover_max'])})",
                    _time(ours["rollover_p50"]),
                    "vs append p50",
                    ours["rollover_p50"] / ours["p50"],
                    "-",
                    None,
                )
            row(
                f"S p99.9 / p50 ({ours['rollovers']:.0f} rollovers, segment {S_SEGMENT})",
                f"{ratio:.1f}x",
                f"floor {floor['p999'] / floor['p50']:.1f}x" if floor else "-",
                ratio,
                "≤10x",
                ratio <= 10,
            )
        return rows

    def details(self) -> list[str]:
        lines = []
        t = self.scenarios.get("T", {}).get("rates", {})
        if t:
            seen = self.scenarios["T"].get("seen", {})
            lines.append("T writer records/s by number of readers (median of repeats; in brackets, the share")
            lines.append(
                "  of the records the slowest reader received; ours and the floor show all of them):"
            )
            for kind in ("ours", "floor", *self.extras, *self.peers):
                cells = [
                    f"{n}: {_rate(t[key]):>6}" + (f" ({seen[key]:4.0%})" if key in seen else " " * 7)
                    for n in (0, 1, 4)
                    if (key := f"{kind}/{n}") in t
                ]
                if cells:
                    lines.append(f"  {LABEL[kind]:<12} " + "   ".join(cells))
        lat = self.scenarios.get("L", {}).get("stats", {})
        if lat:
            lines.append(f"L publish-to-observe latency at {self.p.l_rate}/s for {self.p.l_seconds:g} s:")
            for kind, st in lat.items():
                lines.append(
                    f"  {LABEL[kind]:<12} p50 {_time(st['p50']):>9}  p99 {_time(st['p99']):>9}  "
                    f"p99.9 {_time(st['p999']):>9}  observed {st['observed']:.0f}/{st['expected']}"
                )
        return lines


_QS = (("p50", 50), ("p99", 99), ("p999", 99.9))


def _rate(v: float | None) -> str:
    if v is None:
        return "n/a"
    return f"{v / 1e6:.2f}M" if v >= 1e6 else f"{v / 1e3:.0f}k"


def _time(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if v < 1e-6:
        return f"{v * 1e9:.0f} ns"
    if v < 1e-3:
        return f"{v * 1e6:.2f} µs" if v < 1e-5 else f"{v * 1e6:.1f} µs"
    if v < 1:
        return f"{v * 1e3:.2f} ms"
    return f"{v:.2f} s"


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    head = ("scenario", "ours", "baseline", "ratio", "target", "met?")
    cells = [
        (
            r["scenario"],
            r["ours"],
            r["baseline"],
            "-" if r["ratio"] is None else f"{r['ratio']:.2f}",
            r["target"],
            {True: "yes", False: "NO", None: "-"}[r["met"]],
        )
        for r in rows
    ]
    widths = [max(len(str(c[i])) for c in [head, *cells]) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(head, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def write_charts(suite: Suite, directory: str) -> list[str]:
    """PNG charts of T, L and S with matplotlib (if installed); returns the files written."""
    matplotlib = _optional("matplotlib")
    if matplotlib is None:
        print("charts skipped: matplotlib is not installed (pip install matplotlib)")
        return []
    matplotlib.use("Agg")
    plt = importlib.import_module("matplotlib.pyplot")
    os.makedirs(directory, exist_ok=True)
    written = []
    t = suite.scenarios.get("T", {}).get("rates", {})
    if t:
        fig, ax = plt.subplots(figsize=(8, 4))
        kinds = [
            k
            for k in ("ours", "floor", *suite.extras, *suite.peers)
            if any(f"{k}/{n}" in t for n in (0, 1, 4))
        ]
        for j, n in enumerate((0, 1, 4)):
            xs = [i + (j - 1) * 0.27 for i in range(len(kinds))]
            ax.bar(xs, [t.get(f"{k}/{n}", 0) / 1e6 for k in kinds], width=0.27, label=f"{n} readers")
        ax.set_xticks(range(len(kinds)), [LABEL[k] for k in kinds])
        ax.set_ylabel("writer M records/s")
        ax.set_title("T: one record per publish")
        ax.legend()
        written.append(_save(fig, plt, directory, "T_throughput.png"))
    samples: dict[str, Any] = getattr(suite, "_l_samples", {})
    if samples:
        fig, ax = plt.subplots(figsize=(8, 4))
        for kind, lat in samples.items():
            if len(lat):
                us = np.sort(lat) * 1e6
                ax.plot(us, np.linspace(0, 1, len(us)), label=LABEL[kind])
        ax.set_xscale("log")
        ax.set_xlabel("publish-to-observe latency (µs)")
        ax.set_ylabel("fraction of records")
        ax.set_title(f"L: {suite.p.l_rate}/s, one reader (last repeat)")
        ax.legend()
        written.append(_save(fig, plt, directory, "L_latency_cdf.png"))
    s_samples: dict[str, Any] = getattr(suite, "_s_samples", {})
    if s_samples:
        fig, ax = plt.subplots(figsize=(8, 4))
        for kind, ns in s_samples.items():
            us = np.sort(ns) / 1e3
            ax.plot(us, 1 - np.arange(len(us)) / len(us), label=LABEL[kind])
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("append latency (µs)")
        ax.set_ylabel("fraction slower")
        ax.set_title(f"S: appends across segment rollovers (segment {S_SEGMENT})")
        ax.legend()
        written.append(_save(fig, plt, directory, "S_append_latency.png"))
    return written


def _save(fig: Any, plt: Any, directory: str, name: str) -> str:
    path = os.path.join(directory, name)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return None  # raw samples stay out of the JSON
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m atomic_log_shm._bench", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="a seconds-long smoke run")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    parser.add_argument(
        "--repeats", type=int, metavar="N", help="runs per measurement, medians (default 3; 1 quick)"
    )
    parser.add_argument("--charts", metavar="DIR", help="write PNG charts (needs matplotlib)")
    parser.add_argument("--no-peers", action="store_true", help="skip pyzmq, faster-fifo and iceoryx2")
    parser.add_argument("--only", default="TBLWRS", help="the scenarios to run (default TBLWRS)")
    parser.add_argument("--start-method", default="forkserver", choices=("forkserver", "spawn", "fork"))
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    p = Params.make(args.quick, args.repeats)
    ctx = mp.get_context(args.start_method)
    if args.start_method == "forkserver":
        # Not this module: the children run it as __mp_main__ first, and it must not be there yet.
        ctx.set_forkserver_preload(["numpy", "posix_ipc", "atomic_log_shm"])

    status = peer_status()
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

    suite = Suite(p, ctx, peers)
    leftovers: list[str] = []
    previous = signal.signal(signal.SIGTERM, _terminated)  # so that the clean-up below runs
    try:
        suite.run(args.only.upper())
    except KeyboardInterrupt:
        suite.errors.append("interrupted")
        suite.core_failed = True
    finally:
        leftovers = _cleanup()
        signal.signal(signal.SIGTERM, previous)
    if leftovers:
        suite.errors.append(f"cleaned up leftover regions: {leftovers}")

    rows = suite.rows()
    print()
    print(format_table(rows))
    print()
    for line in suite.details():
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
            "peers": status,
            "start_method": args.start_method,
            "scenarios": suite.scenarios,
            "rows": rows,
            "errors": suite.errors,
            "retries": suite.retries,
            "charts": charts,
        }
        with open(args.json, "w") as f:
            json.dump(_jsonable(result), f, indent=1)
        print(f"results: {args.json}")
    return 1 if suite.core_failed else 0


if __name__ == "__main__":
    # Run as the package's module, so reader processes find their functions by that name.
    from atomic_log_shm import _bench

    sys.exit(_bench.main())
