"""A removed log says so at once: whoever removes it stores GONE in its head once the
header's name is gone, so every refresh(), poll(), wait() and info() of it raises
LogNotFoundError, in every process, while what snapshots already show stays as it was."""

from __future__ import annotations

import inspect
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable
from types import FrameType

import numpy as np
import pytest
from support import SHM, Interrupter, interrupt_at_every_line, regions_of, run_traced, wait_in_child

import atomic_log_shm
from atomic_log_shm import AtomicLog, Cursor, LogNotFoundError, Snapshot, remove_log

PACKAGE = os.path.dirname(atomic_log_shm.__file__)


def _every_read_raises(handle: AtomicLog, snap: Snapshot, cursor: Cursor) -> None:
    for read in (snap.refresh, cursor.poll, lambda: cursor.wait(0.0), lambda: cursor.wait(), handle.info):
        with pytest.raises(LogNotFoundError, match="unlinked or replaced"):
            read()


@pytest.mark.parametrize("how", ["unlink", "remove_log"])
def test_every_read_raises_at_once_and_views_stay(how: str, log_name: Callable[[], str]) -> None:
    writer, log = AtomicLog.new_claimed(name=log_name(), retained=8, segment=4, dtype=np.int64)
    reader = AtomicLog.attach(log.name)
    with writer, log, reader:
        writer.extend(range(10))
        snap = reader.snapshot()
        cursor = reader.cursor("newest")
        shown = snap.to_numpy().tolist()
        log.unlink() if how == "unlink" else remove_log(log.name)
        _every_read_raises(reader, snap, cursor)
        assert snap.to_numpy().tolist() == shown  # the view is the one before
        writer.append(10)  # the writer goes on in its head until its next rollover
        with pytest.raises(LogNotFoundError):
            snap.refresh()


def test_a_replaced_log_raises_for_the_old_handle_and_works_for_the_new(log_name: Callable[[], str]) -> None:
    name = log_name()
    old = AtomicLog.new(name=name, retained=8, segment=4, dtype=np.int64)
    with old:
        snap, cursor = old.snapshot(), old.cursor()
        remove_log(name)
        writer, new = AtomicLog.new_claimed(name=name, retained=8, segment=4, dtype=np.int64)
        with writer, new:
            writer.extend(range(3))
            _every_read_raises(old, snap, cursor)
            fresh = AtomicLog.attach(name)
            with fresh:
                assert fresh.snapshot().to_numpy().tolist() == [0, 1, 2]
            old.unlink()  # the old handle's unlink leaves the new log alone, unmarked
            assert new.snapshot().to_numpy().tolist() == [0, 1, 2]
            writer.append(3)
            assert new.snapshot().end == 4


@pytest.mark.parametrize("method", ["fork", "spawn"])
@pytest.mark.parametrize("how", ["unlink", "remove_log"])
def test_a_follower_asleep_in_another_process_is_woken_by_the_removal(
    method: str, how: str, log_name: Callable[[], str]
) -> None:
    writer, log = AtomicLog.new_claimed(name=log_name(), retained=8, segment=4, dtype=np.int64)
    ctx = mp.get_context(method)
    outcome: mp.Queue[str] = ctx.Queue()
    child = ctx.Process(target=wait_in_child, args=(log.name, outcome))
    with writer, log:
        child.start()
        assert outcome.get(timeout=30) == "ready"
        time.sleep(0.6)  # asleep on the futex by now, past its spin and first look
        log.unlink() if how == "unlink" else remove_log(log.name)
        said = outcome.get(timeout=5)
    child.join(5)
    assert said.startswith("LogNotFoundError")
    # Woken by the remover, not by its next look (0.5 s): well under that even when loaded.
    assert float(said.split()[1]) < 0.6 + 0.3


def test_an_interrupt_at_any_line_of_unlink_never_marks_a_log_that_still_has_its_name(
    log_name: Callable[[], str],
) -> None:
    files = {os.path.join(PACKAGE, f) for f in ("_log.py", "_shm.py", "_header.py", "_wait.py")}
    name = log_name()

    def once(at: int | None) -> tuple[bool, int]:
        writer, log = AtomicLog.new_claimed(name=name, retained=8, segment=4, dtype=np.int64)
        with writer:
            writer.extend(range(10))
        reader = AtomicLog.attach(name)
        snap = reader.snapshot()
        tracer = Interrupter(files, at)
        with log, reader:
            interrupted = run_traced(log.unlink, tracer)
            if os.path.exists(os.path.join(SHM, name)):
                snap.refresh()  # still named: never marked, still readable
                assert snap.to_numpy().tolist() == list(range(10))
            log.unlink()  # finishes the removal (it may find nothing left to mark)
            assert not os.path.exists(os.path.join(SHM, name))
        return interrupted, tracer.lines

    interrupt_at_every_line(once, more_than=10)


def test_a_removal_during_a_rollover_is_marked_even_if_the_head_store_comes_after(
    log_name: Callable[[], str],
) -> None:
    """The remover's GONE lands just before the writer publishes its new head (the race the
    writer's own check after that store closes): readers must still learn at once, the
    append that rolled over says the log is gone, and nothing of the log is left behind
    (the segment the rollover made came after the remover listed the regions)."""
    writer, log = AtomicLog.new_claimed(name=log_name(), retained=8, segment=4, dtype=np.int64)
    reader = AtomicLog.attach(log.name)
    source = inspect.getsource(atomic_log_shm._writer.Writer._roll).splitlines()
    first = atomic_log_shm._writer.Writer._roll.__code__.co_firstlineno
    head_store = first + next(i for i, line in enumerate(source) if "words[HEAD_WORD] = seq" in line)
    removed = []

    def tracer(frame: FrameType, event: str, arg: object) -> object:
        if frame.f_code is not atomic_log_shm._writer.Writer._roll.__code__:
            return None

        def local(frame: FrameType, event: str, arg: object) -> object:
            if event == "line" and frame.f_lineno == head_store and not removed:
                removed.append(True)
                remove_log(log.name)  # marks GONE now; the writer's head store comes next
            return local

        return local

    with writer, log, reader:
        writer.extend(range(4))  # the head is full: the next append rolls over
        snap = reader.snapshot()
        sys.settrace(tracer)
        try:
            with pytest.raises(LogNotFoundError, match="its writer is closed"):
                writer.append(4)
        finally:
            sys.settrace(None)
        assert removed and writer.closed
        with pytest.raises(LogNotFoundError, match="unlinked or replaced"):
            snap.refresh()
        assert regions_of(log.name) == []


def test_deleting_only_the_claim_region_closes_the_writer_but_marks_nothing(
    log_name: Callable[[], str],
) -> None:
    """A bystander that deletes the claim region is not a removal: the header keeps its name,
    so readers go on reading (the writer closes itself, as before)."""
    writer, log = AtomicLog.new_claimed(name=log_name(), retained=8, segment=4, dtype=np.int64)
    with writer, log:
        writer.extend(range(3))
        claim = next(p for p in regions_of(log.name) if p.endswith(".claim"))
        os.unlink(os.path.join(SHM, claim))
        with pytest.raises(LogNotFoundError, match="its writer is closed"):
            writer.extend(range(3, 10))  # rolls over: the writer finds its claim region gone
        snap = log.snapshot()
        assert snap.end >= 4
        assert snap.to_numpy().tolist() == list(range(snap.end - len(snap), snap.end))
