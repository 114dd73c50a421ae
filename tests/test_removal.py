"""Removing a log while others use its name: nothing is left behind, and no log that keeps
its name loses a region or its header.

``log.unlink()`` removes the log a handle opened, ``remove_log(name)`` whatever log has the
name (and orphans of crashed ones). Either may run while the writer rolls over (making and
renaming regions the remover did not list), while another process makes a new log of the
same name, or while another remover runs.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import random
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import numpy as np
import pytest
from support import regions_of, report_untyped_errors, untyped_errors

from atomic_log_shm import (
    AtomicLog,
    LogNotFoundError,
    WriterClosedError,
    _remove,
    remove_log,
)

Names = Callable[[], str]
FORK = mp.get_context("fork")


def write_until_removed(name: str, ready: Any) -> None:
    """A writer that rolls over as fast as it can (a segment of 2) until its log is gone."""
    writer, log = AtomicLog.new_claimed(retained=4, segment=2, dtype=np.int64, name=name)
    ready.set()
    try:
        while True:
            writer.append(writer.end)
    except (LogNotFoundError, WriterClosedError):
        pass
    finally:
        writer.close()
        log.close()


@pytest.mark.parametrize("how", ["remove_log", "unlink"])
def test_removing_a_log_while_its_writer_rolls_over_leaves_nothing_behind(log_name: Names, how: str) -> None:
    for _ in range(12):
        name = log_name()
        ready = FORK.Event()
        child = FORK.Process(target=write_until_removed, args=(name, ready))
        child.start()
        try:
            assert ready.wait(30)
            time.sleep(random.uniform(0, 0.004))
            if how == "remove_log":
                remove_log(name)
            else:
                with AtomicLog.attach(name) as log:
                    log.unlink()
            child.join(30)
            assert child.exitcode == 0
        finally:
            if child.is_alive():
                child.kill()
                child.join()
        assert regions_of(name) == [], f"{how} racing rollovers left regions behind"


def test_a_writer_that_finds_its_log_removed_at_close_removes_what_it_made_since(log_name: Names) -> None:
    """The remover listed the regions before the writer's last rollover made one (and kept
    a spare): the writer closes without another rollover, and nothing stays."""
    writer, log = AtomicLog.new_claimed(retained=4, segment=2, dtype=np.int64, name=log_name())
    with log:
        writer.extend(range(9))  # several rollovers: a spare is kept
        listed = [p for n, _, p in _remove._shm.regions(log.name)]  # a remover lists ...
        writer.extend(range(9, 15))  # ... the writer rolls over (makes, renames) ...
        _remove._shm.unlink_every([*listed, "/" + log.name])  # ... the remover unlinks its list
        assert regions_of(log.name) != []
        writer.close()
        assert regions_of(log.name) == []


def replace_log_at(line: int, code: Any, replace: Callable[[], None]) -> Callable[..., Any]:
    """A trace function that calls ``replace()`` once, at ``line`` of ``code``."""
    done: list[bool] = []

    def tracer(frame: FrameType, event: str, arg: object) -> Any:
        if frame.f_code is not code:
            return None

        def local(frame: FrameType, event: str, arg: object) -> Any:
            if event == "line" and frame.f_lineno == line and not done:
                done.append(True)
                replace()
            return local

        return local

    return tracer


def line_of(function: Any, text: str) -> int:
    import inspect

    source = inspect.getsource(function).splitlines()
    return function.__code__.co_firstlineno + next(i for i, s in enumerate(source) if text in s)


def test_unlink_racing_a_remove_and_recreate_leaves_the_new_log_whole(log_name: Names) -> None:
    """Between the handle's look at the name and its move of the header aside, the log is
    removed and made anew: the new log keeps its name, header and regions, unmarked."""
    name = log_name()
    old = AtomicLog.new(retained=8, segment=4, dtype=np.int64, name=name)
    made: list[Any] = []

    def replace() -> None:
        remove_log(name)
        made.append(AtomicLog.new_claimed(retained=8, segment=4, dtype=np.int64, name=name))

    code = _remove._shm.move_aside.__code__
    tracer = replace_log_at(line_of(_remove._shm.move_aside, "for _ in range"), code, replace)
    sys.settrace(tracer)
    try:
        old.unlink()
    finally:
        sys.settrace(None)
    assert made, "the race was not run"
    writer, new = made[0]
    with new, writer:
        writer.extend(range(10))
        with AtomicLog.attach(name) as again:
            assert [int(v) for v in again.snapshot()] == list(range(10))
        assert new.info().writer_active
    old.close()


def test_remove_log_racing_a_remove_and_recreate_marks_what_it_removes(log_name: Names) -> None:
    """remove_log() removes whatever log has the name: if a new one took the name between its
    look and its move, the new one is removed, and marked, never left unmarked without a
    header (its readers learn at once)."""
    name = log_name()
    AtomicLog.new(retained=8, segment=4, dtype=np.int64, name=name).close()
    made: list[Any] = []

    def replace() -> None:
        _remove.unlink_log(name, _remove._shm.identity("/" + name), _nonce(name))  # type: ignore[arg-type]
        made.append(AtomicLog.new_claimed(retained=8, segment=4, dtype=np.int64, name=name))

    tracer = replace_log_at(
        line_of(_remove._shm.move_aside, "for _ in range"), _remove._shm.move_aside.__code__, replace
    )
    sys.settrace(tracer)
    try:
        remove_log(name)
    finally:
        sys.settrace(None)
    writer, new = made[0]
    with new:
        with pytest.raises(LogNotFoundError):
            new.snapshot()  # marked gone: every read raises at once
        with pytest.raises(LogNotFoundError):
            writer.extend(range(10))  # rolls over: the writer finds its log removed
        writer.close()
    assert regions_of(name) == []


def _nonce(name: str) -> int:
    with AtomicLog.attach(name) as log:
        return log._reader.layout.nonce


def make_use_and_unlink(name: str) -> None:
    """Make (or continue) log ``name``, use it, unlink it: a short-lived log's life."""
    writer, log = AtomicLog.new_claimed(retained=4, segment=2, dtype=np.int64, name=name, exist_ok=True)
    with log, writer:
        writer.extend(range(7))
        with AtomicLog.attach(name) as other:
            other.snapshot()
        log.unlink()


def remove_now_and_then(name: str) -> None:
    remove_log(name)
    time.sleep(random.uniform(0, 0.002))


def test_removers_racing_makers_raise_only_typed_errors_and_leave_nothing(log_name: Names) -> None:
    name = log_name()
    errors = FORK.Queue()
    makers = [
        FORK.Process(target=report_untyped_errors, args=(lambda: make_use_and_unlink(name), 3.0, errors))
        for _ in range(2)
    ]
    for maker in makers:
        maker.start()
    try:
        untyped = untyped_errors(lambda: remove_now_and_then(name), 3.0)
        for _ in makers:
            untyped += errors.get(timeout=60)
    finally:
        for maker in makers:
            maker.join(60)
            if maker.is_alive():
                maker.kill()
    assert untyped == []
    # Whatever is left is a whole log or nothing: attach and read it, then remove it all.
    try:
        with AtomicLog.attach(name) as log:
            log.snapshot()
    except LogNotFoundError:
        pass
    with contextlib.suppress(LogNotFoundError):
        remove_log(name)
    assert regions_of(name) == []
