"""The IPC peers measured side by side with ours: multiprocessing.Queue and, when installed,
pyzmq PUB/SUB over ipc://, faster-fifo and iceoryx2 publish-subscribe. Each one's reader
loop (run in a reader process) and publisher; the optional packages and their clean-up.

The queue and socket peers block in their receive, as they are meant to be used (a
busy-polled, lock-based queue starves its writer), with a short timeout to look at the stop
flag; iceoryx2 is polled. Only numpy and posix_ipc are imported at module level; the peers'
packages are imported when first used, and a missing one is skipped with a note.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import os
import queue
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from multiprocessing.context import BaseContext
from types import ModuleType
from typing import Any

from .harness import MAX_READERS, STOP, WAIT, Follow, Publisher
from .workload import CHECK_EVERY, PACK, PRICE, QTY

PEERS = (("pyzmq", "zmq"), ("faster-fifo", "faster_fifo"), ("iceoryx2", "iceoryx2"))

IOX_SERVICE_TYPE = "alogbench"


class IoxRecord(ctypes.Structure):
    """The record as iceoryx2 carries it (ctypes payload, same 32-byte layout)."""

    _fields_ = [
        ("ts", ctypes.c_double),
        ("seq", ctypes.c_int64),
        ("price", ctypes.c_double),
        ("qty", ctypes.c_int64),
    ]


def optional(module: str) -> ModuleType | None:
    try:
        return importlib.import_module(module)
    except Exception:
        return None


def iox() -> ModuleType:
    iox2 = importlib.import_module("iceoryx2")
    iox2.set_log_level(iox2.LogLevel.Error)
    return iox2


def iox_node(iox2: ModuleType) -> Any:
    # Without this, iceoryx2 takes SIGINT and SIGTERM for itself: the bench could not be stopped.
    builder = iox2.NodeBuilder.new().signal_handling_mode(iox2.SignalHandlingMode.Disabled)
    return builder.create(iox2.ServiceType.Ipc)


def iox_service(
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
        if optional(module) is None:
            status[pip] = f"missing (pip install {pip})"
        else:
            try:
                status[pip] = f"installed {metadata.version(pip)}"
            except metadata.PackageNotFoundError:
                status[pip] = "installed"
    return status


# --------------------------------------------------------------------------------------------
# Readers (run in reader processes)


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


def read_mpqueue(cfg: dict[str, Any], f: Follow) -> dict[str, Any]:
    get = cfg["queue"].get
    f.ready(2)
    return _read_messages(lambda: (get(True, WAIT),), queue.Empty, False, f)


def read_ffifo(cfg: dict[str, Any], f: Follow) -> dict[str, Any]:
    get_many = cfg["queue"].get_many
    f.ready(2)
    return _read_messages(lambda: get_many(True, WAIT), queue.Empty, False, f)


def read_zmq(cfg: dict[str, Any], f: Follow) -> dict[str, Any]:
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


def read_iox2(cfg: dict[str, Any], f: Follow) -> dict[str, Any]:
    iox2 = iox()
    node = iox_node(iox2)
    service = iox_service(iox2, node, cfg["service"])
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


# --------------------------------------------------------------------------------------------
# Publishers (the writer side, in the bench's process)


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
        iox_used()
        iox2 = iox()
        self.service_name = f"{IOX_SERVICE_TYPE}/{os.getpid()}/{secrets.token_hex(4)}"
        self.node = iox_node(iox2)
        self.service = iox_service(iox2, self.node, self.service_name)
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


# --------------------------------------------------------------------------------------------
# What iceoryx2 leaves behind

_iox_state: dict[str, Any] = {}


def iox_used() -> None:
    """Note, before iceoryx2 first runs, what it had in /dev/shm and /tmp (to clean up after)."""
    if "shm" not in _iox_state:
        _iox_state["shm"] = {e for e in os.listdir("/dev/shm") if e.startswith("iox2_")}
        _iox_state["tmp_existed"] = os.path.exists(os.path.join(tempfile.gettempdir(), "iceoryx2"))


def iox_cleanup() -> None:
    """Remove what iceoryx2 left in /dev/shm and /tmp since this run first used it."""
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
