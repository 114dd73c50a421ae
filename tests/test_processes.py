"""The log across real processes, under both the ``spawn`` and the ``fork`` start methods.

A child runs a module-level function ``fn(out, *args)``: it may report intermediate steps
with ``out.put(("step", value))`` and its return value (or exception) reaches the test
through the same queue. Steps are sequenced with queues and events, never with sleeps, and
every wait times out, so a bug fails its test instead of hanging it.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import pickle
import select
import signal
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import pytest
from support import (
    SHM,
    TIMEOUT,
    Child,
    chunk_shape,
    is_header_or_segment,
    log_mappings,
    mapping_of,
    segments_in_shm,
    values,
)

from atomic_log_shm import (
    AtomicLog,
    DtypeMismatchError,
    LogNotFoundError,
    WriterClosedError,
)

METHODS = ["spawn", "fork"]


# ---------------------------------------------------------------------------------------
# Running children


@pytest.fixture(params=METHODS)
def ctx(request: pytest.FixtureRequest) -> Any:
    return multiprocessing.get_context(request.param)


@pytest.fixture
def start(ctx: Any, log_name: Callable[[], str]) -> Iterator[Callable[..., Child]]:
    """Start children; whatever is still running after the test is killed and joined
    (before ``log_name`` removes the logs)."""
    children: list[Child] = []

    def start_(fn: Callable[..., Any], *args: Any) -> Child:
        children.append(Child(ctx, fn, args))
        return children[-1]

    yield start_
    for child in children:
        child.stop()


@contextlib.contextmanager
def children_killed_on_failure() -> Iterator[None]:
    """If the block fails, kill and join the processes it started (pool workers)."""
    before = set(multiprocessing.active_children())
    try:
        yield
    except BaseException:
        for process in set(multiprocessing.active_children()) - before:
            process.kill()
            process.join(TIMEOUT)
        raise


# ---------------------------------------------------------------------------------------
# Looking at the system


def chunk_problems(chunks: list[Any], capacity: int) -> list[str]:
    """Chunks of a log whose record i is the value i: each must show its own records."""
    problems = []
    for c in chunks:
        start = c.sequence * capacity
        if len(c.values) == 0 or not np.array_equal(c.values, np.arange(start, start + len(c.values))):
            problems.append(f"segment {c.sequence} shows {c.values[:4].tolist()}... not from {start}")
    return problems


def view_problems(snap: Any, capacity: int, slots: int) -> list[str]:
    """What is wrong with a view of a log whose record i is the value i (empty if nothing)."""
    chunks = list(snap.chunks())
    if not chunks:
        return []
    problems = chunk_problems(chunks, capacity)
    seqs = [c.sequence for c in chunks]
    if seqs != list(range(seqs[0], seqs[0] + len(seqs))):
        problems.append(f"chunk sequences not consecutive: {seqs}")
    if len(chunks) > slots:
        problems.append(f"{len(chunks)} chunks shown, more than the {slots} kept")
    for c in chunks[:-1]:
        if len(c.values) != capacity:
            problems.append(f"segment {c.sequence} is not the last chunk but holds {len(c.values)}")
    shown = np.concatenate([c.values for c in chunks])
    if len(snap) != len(shown) or not np.all(np.diff(shown) == 1):
        problems.append(f"view of {len(snap)} records is not strictly consecutive")
    return problems


def bounds(snap: Any) -> tuple[int, int]:
    """(first value, last value + 1) of a non-empty view."""
    chunks = list(snap.chunks())
    return int(chunks[0].values[0]), int(chunks[-1].values[-1]) + 1


def raised(action: Callable[[], object]) -> type[BaseException] | None:
    try:
        action()
    except Exception as exc:
        return type(exc)
    return None


def memory_owner(array: np.ndarray) -> Any:
    """The buffer (the mmap) a numpy view ultimately reads."""
    base: Any = array
    while isinstance(base, np.ndarray):
        base = base.base
    return base


# ---------------------------------------------------------------------------------------
# 1. attach by name from a child

RECORD = np.dtype([("seq", "<i8"), ("price", "<f8"), ("sym", "U4")])


def attach_by_name_and_snapshot(out: Any, name: str) -> dict[str, Any]:
    with AtomicLog.attach(name) as log:
        snap = log.snapshot()
        return {
            "dtype": log.dtype,
            "capacities": (log.retained_capacity, log.segment_capacity),
            "records": [record.tolist() for record in snap],
            "chunks": chunk_shape(snap),
        }


def attach_with_dtype(out: Any, name: str, dtype: Any) -> None:
    AtomicLog.attach(name, dtype=dtype)


def test_child_attaches_by_name_with_the_dtype_read_from_the_header(start, log_name) -> None:
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=RECORD, name=log_name())
    with log, writer:
        for i in range(6):
            writer.append((i, 100.0 + i / 4, f"S{i}"))
        seen = start(attach_by_name_and_snapshot, log.name).result()
        assert seen["dtype"] == RECORD
        assert seen["capacities"] == (8, 4)
        assert seen["records"] == [(i, 100.0 + i / 4, f"S{i}") for i in range(6)]
        assert seen["chunks"] == [(0, 4), (1, 2)]


def test_child_attaching_with_a_wrong_dtype_gets_dtype_mismatch(start, log_name) -> None:
    with AtomicLog.new(retained=8, segment=4, dtype=np.int64, name=log_name()) as log:
        child = start(attach_with_dtype, log.name, np.int32)
        with pytest.raises(DtypeMismatchError, match=r"int64.*int32"):
            child.result()


# ---------------------------------------------------------------------------------------
# 2. readers cannot write, at the numpy level and at the OS level


def try_to_write_through_a_reader(out: Any, name: str, go: Any) -> list[int]:
    log = AtomicLog.attach(name)
    snap = log.snapshot()
    chunk = snap.chunks()[0]
    owner = memory_owner(chunk.values)
    out.put(
        (
            "step",
            {
                "item store": raised(lambda: chunk.values.__setitem__(0, -1)),
                "set writeable": raised(lambda: setattr(chunk.values.flags, "writeable", True)),
                "frombuffer writeable": np.frombuffer(owner, np.uint8).flags.writeable,
                "buffer readonly": memoryview(owner).readonly,
                "chunk mappings": [mapping_of(c.values, name) for c in snap.chunks()],
            },
        )
    )
    assert go.wait(TIMEOUT)  # the test reads our /proc/<pid>/maps meanwhile
    return values(snap)


def test_reader_child_cannot_write_and_maps_the_log_without_write_permission(start, ctx, log_name) -> None:
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=np.int64, name=log_name())
    with log:
        with writer:
            writer.extend(range(10, 16))
        go = ctx.Event()
        child = start(try_to_write_through_a_reader, log.name, go)
        seen = child.step()
        assert seen["item store"] is ValueError
        assert seen["set writeable"] is ValueError
        assert seen["frombuffer writeable"] is False
        assert seen["buffer readonly"] is True

        assert [m.perms for m in seen["chunk mappings"]] == ["r--s", "r--s"]
        # Every mapping of the log in the reader, header and segments, is shared and read-only.
        mappings = log_mappings(child.pid, log.name)
        assert {m.path for m in mappings} == {f"{SHM}/{log.name}"} | {m.path for m in seen["chunk mappings"]}
        assert [m for m in mappings if m.perms != "r--s"] == []

        go.set()
        assert child.result() == [10, 11, 12, 13, 14, 15]
        assert values(log.snapshot()) == [10, 11, 12, 13, 14, 15]  # unchanged, seen from here
        with log.try_claim_writer() as writer:
            writer.append(16)
        assert values(log.snapshot()) == [10, 11, 12, 13, 14, 15, 16]


# ---------------------------------------------------------------------------------------
# 3. a snapshot stays valid after its segments are reclaimed: tests/test_page_reuse.py


# ---------------------------------------------------------------------------------------
# 4. the writer claim across processes


def claim_append_and_hold(out: Any, name: str, count: int, hold: Any) -> None:
    log = AtomicLog.attach(name)
    writer = log.try_claim_writer()
    assert writer is not None
    for v in range(count):
        writer.append(v)
    out.put(("step", count))
    hold.wait(TIMEOUT)  # never set: the test kills us with SIGKILL while we hold the claim


def test_sigkilled_writer_child_frees_the_claim_and_the_next_writer_continues_without_gap_or_repeat(
    start, ctx, log_name
) -> None:
    # 100 records in segments of 16: the killed writer leaves segment 6 with 4 of 16
    with AtomicLog.new(retained=256, segment=16, dtype=np.int64, name=log_name()) as log:
        hold = ctx.Event()
        child = start(claim_append_and_hold, log.name, 100, hold)
        assert child.step() == 100
        assert log.try_claim_writer() is None

        os.kill(child.pid, signal.SIGKILL)
        assert child.join() == -signal.SIGKILL

        writer = log.try_claim_writer()
        assert writer is not None
        with writer:
            for v in range(100, 150):
                writer.append(v)
            snap = log.snapshot()
            assert values(snap) == list(range(150))
            assert chunk_shape(snap) == [(s, 16) for s in range(9)] + [(9, 6)]


def continue_the_log_until_killed(out: Any, name: str) -> None:
    log = AtomicLog.attach(name)
    writer = log.try_claim_writer()
    assert writer is not None
    shown = values(log.snapshot())
    v = shown[-1] + 1 if shown else 0
    out.put(("step", v))
    for base in range(v, v + 10**9, 8):  # killed long before the end, at no particular point
        for value in range(base, base + 5):
            writer.append(value)
        writer.extend(range(base + 5, base + 8))  # batches too: a kill may land inside one


def test_writers_sigkilled_at_arbitrary_points_hand_over_without_gap_or_repeat(start, log_name) -> None:
    # segments of 2 records: a kill often lands inside a rollover
    with AtomicLog.new(retained=8, segment=2, dtype=np.int64, name=log_name()) as log:
        capacity, slots = 2, 5  # ceil(8 / 2) + 1 segments are kept
        next_value = 0
        for _ in range(4):
            child = start(continue_the_log_until_killed, log.name)
            assert child.step() == next_value  # the new writer resumes right after the last
            os.kill(child.pid, signal.SIGKILL)
            assert child.join() == -signal.SIGKILL
            snap = log.snapshot()
            assert view_problems(snap, capacity, slots) == []
            shown = values(snap)
            if shown:  # empty only if the first writer was killed before its first append
                assert shown[-1] >= next_value - 1
                next_value = shown[-1] + 1

        writer = log.try_claim_writer()
        assert writer is not None
        with writer:
            writer.extend(range(next_value, next_value + 20))
            snap = log.snapshot()
            assert values(snap) == list(range(next_value + 20 - len(snap), next_value + 20))
            assert view_problems(snap, capacity, slots) == []
        # whatever the killed writers half-made or left unreclaimed is gone
        assert segments_in_shm(log.name).keys() == {c.sequence for c in snap.chunks()}


def claim_then_release(out: Any, name: str, how: str, proceed: Any, finish: Any) -> None:
    log = AtomicLog.attach(name)
    writer = log.try_claim_writer()
    assert writer is not None
    if how == "with":
        with writer:
            writer.extend([0, 1, 2])
            out.put(("step", "claimed"))
            assert proceed.wait(TIMEOUT)
    else:
        writer.extend([0, 1, 2])
        out.put(("step", "claimed"))
        assert proceed.wait(TIMEOUT)
        if how == "close":
            writer.close()
        elif how == "gc":
            del writer
            gc.collect()
        elif how == "exit":
            return  # the process ends with the writer open
    out.put(("step", "released"))
    assert finish.wait(TIMEOUT)  # still alive: the claim was freed by `how`, not by our death


@pytest.mark.parametrize("how", ["close", "with", "gc", "exit"])
def test_claim_held_by_a_child_is_released_by(how, start, ctx, log_name) -> None:
    with AtomicLog.new(retained=16, segment=4, dtype=np.int64, name=log_name()) as log:
        proceed, finish = ctx.Event(), ctx.Event()
        child = start(claim_then_release, log.name, how, proceed, finish)
        assert child.step() == "claimed"
        assert log.try_claim_writer() is None

        proceed.set()
        if how == "exit":
            assert child.result() is None
            assert child.join() == 0
        else:
            assert child.step() == "released"
            assert child.process.is_alive()
        writer = log.try_claim_writer()
        assert writer is not None
        with writer:
            writer.append(3)
            assert values(log.snapshot()) == [0, 1, 2, 3]
        finish.set()
        if how != "exit":
            assert child.result() is None


# ---------------------------------------------------------------------------------------
# 5. a Writer inherited through fork() is closed in the child; the parent keeps the claim


def use_inherited_writer(writer: Any, log: AtomicLog) -> dict[str, Any]:
    return {
        "closed": writer.closed,
        "append": raised(lambda: writer.append(99)),
        "extend": raised(lambda: writer.extend([99])),
        "claim from the child": log.try_claim_writer(),
        "values": values(log.snapshot()),
        "close": raised(writer.close),  # a no-op here: it must not free the parent's claim
    }


def use_inherited_writer_in_process(out: Any, writer: Any, log: AtomicLog) -> dict[str, Any]:
    return use_inherited_writer(writer, log)


def run_in_forked_child(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a child made by a bare os.fork(); return its result through a pipe."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave without running any of pytest's cleanup
        try:
            os.close(r)
            try:
                message: Any = ("return", fn())
            except BaseException:
                message = ("raise", traceback.format_exc())
            os.write(w, pickle.dumps(message))
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    try:
        while True:
            ready, _, _ = select.select([r], [], [], TIMEOUT)
            if not ready:
                pytest.fail("the forked child did not report in time")
            block = os.read(r, 65536)
            if not block:
                break
            data += block
    finally:
        os.close(r)
        if not data:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    kind, value = pickle.loads(data)
    assert kind == "return", value
    return value


@pytest.mark.parametrize("fork", ["os.fork", "fork-context Process"])
def test_writer_inherited_by_a_forked_child_is_closed_there_and_the_parent_keeps_the_claim(
    fork, log_name
) -> None:
    # 3 segments of 4 are kept; at 14 records the head is segment 3 and segment 0 has left
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=np.int64, name=log_name())
    with log, writer:
        writer.extend(range(14))
        if fork == "os.fork":
            seen = run_in_forked_child(lambda: use_inherited_writer(writer, log))
        else:
            child = Child(multiprocessing.get_context("fork"), use_inherited_writer_in_process, (writer, log))
            try:
                seen = child.result()
                assert child.join() == 0
            finally:
                child.stop()
        assert seen == {
            "closed": True,
            "append": WriterClosedError,
            "extend": WriterClosedError,
            "claim from the child": None,
            "values": list(range(4, 14)),
            "close": None,
        }

        # The parent's writer works on, across rollovers (the child took nothing it had
        # made), and its claim is still held.
        with AtomicLog.attach(log.name) as other:
            writer.extend(range(14, 17))
            assert values(other.snapshot()) == list(range(8, 17))  # segments 2, 3 and 4
            writer.extend(range(17, 40))
            assert values(other.snapshot()) == list(range(28, 40))  # segments 7, 8 and 9
            assert not writer.closed
            assert other.try_claim_writer() is None
            writer.close()
            reclaimed = other.try_claim_writer()
            assert reclaimed is not None
            reclaimed.close()


def what_of_the_log_is_writable(out: Any, name: str) -> dict[str, list[str]]:
    """The log's regions this process maps, or has a descriptor on, with write access."""
    descriptors = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError), open(f"/proc/self/fdinfo/{fd}") as info:
            flags = int(next(line for line in info if line.startswith("flags:")).split()[1], 8)
            path = os.readlink(f"/proc/self/fd/{fd}").removesuffix(" (deleted)")
            if flags & os.O_ACCMODE != os.O_RDONLY and is_header_or_segment(path, name):
                descriptors.append(path)
    return {
        "mappings": sorted(m.path for m in log_mappings(os.getpid(), name) if "w" in m.perms),
        "descriptors": sorted(descriptors),
    }


def test_forked_child_keeps_no_writable_descriptor_or_mapping_of_its_parents_log(log_name) -> None:
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=np.int64, name=log_name())
    with log, writer:
        writer.extend(range(30))
        here = what_of_the_log_is_writable(None, log.name)
        assert here["mappings"] != [] and here["descriptors"] != []  # the writer's, here
        child = Child(multiprocessing.get_context("fork"), what_of_the_log_is_writable, (log.name,))
        try:
            assert child.result() == {"mappings": [], "descriptors": []}
            assert child.join() == 0
        finally:
            child.stop()


# ---------------------------------------------------------------------------------------
# 6. handles travel to pool workers by name; writers and snapshots refuse to


def window_sum_and_values(log: AtomicLog) -> tuple[str, int, list[int]]:
    with log:  # a re-attached handle does not own the log: this closes it, never unlinks
        seen = values(log.snapshot())
    return log.name, sum(seen), seen


def unpickle(out: Any, data: bytes) -> None:
    pickle.loads(data)


def test_log_handle_passed_to_a_multiprocessing_pool_reattaches_by_name(ctx, log_name) -> None:
    writer, log = AtomicLog.new_claimed(retained=32, segment=8, dtype=np.int64, name=log_name())
    with log, writer:
        writer.extend(range(50))
        window = list(range(16, 50))  # segments 2..6 of 8
        assert values(log.snapshot()) == window
        with children_killed_on_failure(), ctx.Pool(2) as pool:
            got = pool.map_async(window_sum_and_values, [log] * 4, chunksize=1).get(TIMEOUT)
        assert got == [(log.name, sum(window), window)] * 4
        writer.append(50)  # the log is still there, and still this writer's
        with AtomicLog.attach(log.name) as again:
            assert again.try_claim_writer() is None
            assert values(again.snapshot()) == [*window, 50]


def test_log_handle_passed_to_a_process_pool_executor_reattaches_by_name(ctx, log_name) -> None:
    writer, log = AtomicLog.new_claimed(retained=32, segment=8, dtype=np.int64, name=log_name())
    with log, writer:
        writer.extend(range(50))
        window = list(range(16, 50))
        with children_killed_on_failure():
            executor = ProcessPoolExecutor(max_workers=2, mp_context=ctx)
            try:
                got = list(executor.map(window_sum_and_values, [log] * 4, timeout=TIMEOUT))
            finally:
                executor.shutdown(wait=True, cancel_futures=True)
        assert got == [(log.name, sum(window), window)] * 4
        writer.append(50)
        with AtomicLog.attach(log.name) as again:
            assert values(again.snapshot()) == [*window, 50]


def test_writer_and_snapshot_refuse_to_be_pickled_even_for_a_pool(ctx, log_name) -> None:
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=np.int64, name=log_name())
    with log, writer:
        snap = log.snapshot()
        with pytest.raises(TypeError, match="Writer cannot be pickled"):
            pickle.dumps(writer)
        with pytest.raises(TypeError, match="Snapshot cannot be pickled"):
            pickle.dumps(snap)
        with children_killed_on_failure():
            executor = ProcessPoolExecutor(max_workers=1, mp_context=ctx)
            try:
                with pytest.raises(TypeError, match="Snapshot cannot be pickled"):
                    executor.submit(len, snap).result(TIMEOUT)
            finally:
                executor.shutdown(wait=True, cancel_futures=True)


def test_pickled_handle_of_a_log_unlinked_and_recreated_under_its_name_fails_to_unpickle(
    start, log_name
) -> None:
    name = log_name()
    with AtomicLog.new(retained=8, segment=4, dtype=np.int64, name=name) as old:
        data = pickle.dumps(old)
    with AtomicLog.new(retained=8, segment=4, dtype=np.int64, name=name):  # same name, another log
        child = start(unpickle, data)
        with pytest.raises(LogNotFoundError):
            child.result()


# ---------------------------------------------------------------------------------------
# 7. a reader racing a writer across thousands of rollovers only ever sees whole windows


def follow_the_writer(out: Any, name: str, ready: Any, done: Any, total: int) -> dict[str, Any]:
    log = AtomicLog.attach(name)
    capacity = log.segment_capacity
    slots = -(-log.retained_capacity // capacity) + 1
    snap = log.snapshot()
    # Views kept alive (recent ones, and a few to the end) pin their segments: the writer
    # must never reuse those pages, so these views must keep showing the same records.
    recent: deque[list[Any]] = deque(maxlen=8)
    kept: list[list[Any]] = []
    ready.set()
    views = 0
    problems: list[str] = []
    last = (0, 0)
    while len(problems) < 20:
        finished = done.is_set()  # read before the refresh: the last one sees everything
        snap.refresh()
        views += 1
        problems += view_problems(snap, capacity, slots)
        if len(snap):
            now = bounds(snap)
            if now[0] < last[0] or now[1] < last[1]:
                problems.append(f"refresh went backwards: {last} then {now}")
            last = now
            fresh = log.snapshot()  # taken later, so never behind the refreshed view
            views += 1
            problems += view_problems(fresh, capacity, slots)
            if len(fresh) and (bounds(fresh)[0] < now[0] or bounds(fresh)[1] < now[1]):
                problems.append(f"refreshed view {now} is ahead of a later fresh one {bounds(fresh)}")
            recent.append(list(snap.chunks()))
            if not kept or (views % 512 == 0 and len(kept) < 8):
                kept.append(list(fresh.chunks()))
            if views % 16 == 0:
                for chunks in recent:
                    problems += chunk_problems(chunks, capacity)
        if finished:
            break
    for chunks in [*recent, *kept]:
        problems += chunk_problems(chunks, capacity)
    fresh = log.snapshot()
    if last[1] != total or chunk_shape(snap) != chunk_shape(fresh) or values(snap) != values(fresh):
        problems.append(f"final refresh {chunk_shape(snap)} differs from a fresh {chunk_shape(fresh)}")
    return {"views": views, "kept": len(kept), "problems": problems, "final": chunk_shape(snap)}


def test_child_reader_racing_200k_appends_sees_only_contiguous_views(start, ctx, log_name) -> None:
    total = 200_000
    writer, log = AtomicLog.new_claimed(retained=256, segment=64, dtype=np.int64, name=log_name())
    with log, writer:
        ready, done = ctx.Event(), ctx.Event()
        child = start(follow_the_writer, log.name, ready, done, total)
        assert ready.wait(TIMEOUT)
        for base in range(0, total, 1250):  # 1000 single appends, then a batch across segments
            for v in range(base, base + 1000):
                writer.append(v)
            writer.extend(range(base + 1000, base + 1250))
        done.set()
        seen = child.result()
        assert seen["problems"] == []
        assert seen["views"] > 50
        assert seen["kept"] > 0
        # 200000 records are segments 0..3124, all full; 5 segments are kept
        assert seen["final"] == [(s, 64) for s in range(3120, 3125)]
