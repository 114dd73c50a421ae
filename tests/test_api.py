"""The API a newcomer reaches for: restartable writers, waiting for a log, its state in one value."""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

import atomic_log_shm
from atomic_log_shm import (
    AtomicLog,
    ClaimHeldError,
    DtypeMismatchError,
    InvalidArgumentError,
    LogExistsError,
    LogInfo,
    LogMismatchError,
    LogNotFoundError,
    list_logs,
)

Names = Callable[[], str]
WRITER = """
import sys, numpy as np
from atomic_log_shm import AtomicLog
writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=np.int64, name=sys.argv[1], exist_ok=True)
writer.append(writer.end)
print(writer.end, flush=True)
if sys.argv[2] == "hang":
    sys.stdin.read()
"""


def run_writer(name: str, then: str = "exit") -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, name, then], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )


def test_a_restarted_writer_continues_its_log_also_after_sigkill(log_name: Names) -> None:
    name = log_name()
    first = run_writer(name)
    assert first.communicate(timeout=30)[0].split() == ["1"]
    second = run_writer(name, "hang")  # run again: the same log goes on
    assert second.stdout is not None and second.stdout.readline().split() == ["2"]
    second.send_signal(signal.SIGKILL)  # a crash: its claim goes with it
    second.wait(10)
    third = run_writer(name)
    assert third.communicate(timeout=30)[0].split() == ["3"]
    with AtomicLog.attach(name) as log:
        assert [int(v) for v in log.snapshot()] == [0, 1, 2]


def test_exist_ok_refuses_a_log_of_other_dtype_or_capacities_showing_both(log_name: Names) -> None:
    name = log_name()
    with AtomicLog.new(retained=8, segment=4, dtype=np.int64, name=name):
        for kwargs in ({"retained": 16, "segment": 4}, {"retained": 8, "segment": 2}):
            shown = r"exists with dtype int64, retained=8, segment=4.*asked"
            with pytest.raises(LogMismatchError, match=shown):
                AtomicLog.new(dtype=np.int64, name=name, exist_ok=True, **kwargs)
        with pytest.raises(LogMismatchError, match="float64"):
            AtomicLog.new_claimed(retained=8, segment=4, dtype=np.float64, name=name, exist_ok=True)
        with AtomicLog.new(retained=8, segment=4, dtype=np.int64, name=name, exist_ok=True) as again:
            assert again.name == name
        assert AtomicLog.attach(name).name == name  # the second handle did not unlink it: not its own


def test_a_name_taken_without_exist_ok_says_what_to_do(log_name: Names) -> None:
    name = log_name()
    with AtomicLog.new(retained=8, segment=4, dtype=np.int64, name=name):
        hint = rf"log named '{name}' already exists.*exist_ok=True"
        with pytest.raises(LogExistsError, match=hint) as info:
            AtomicLog.new(retained=8, segment=4, dtype=np.int64, name=name)
        assert info.value.__cause__ is None and "/" + name not in str(info.value)


def test_exist_ok_with_a_writer_alive_elsewhere_names_its_pid(log_name: Names) -> None:
    name = log_name()
    proc = run_writer(name, "hang")
    try:
        assert proc.stdout is not None and proc.stdout.readline()
        with pytest.raises(ClaimHeldError, match=rf"pid {proc.pid}") as info:
            AtomicLog.new_claimed(retained=8, segment=4, dtype=np.int64, name=name, exist_ok=True)
        assert info.value.pid == proc.pid
    finally:
        proc.kill()
        proc.wait(10)


def test_attach_waits_for_a_log_to_appear(log_name: Names) -> None:
    name = log_name()
    made: list[AtomicLog] = []
    timer = threading.Timer(
        0.2, lambda: made.append(AtomicLog.new(retained=8, segment=4, dtype="<i8", name=name))
    )
    timer.start()
    try:
        begun = time.monotonic()
        with AtomicLog.attach(name, timeout=10) as log:
            assert 0.1 < time.monotonic() - begun < 5 and log.dtype == np.int64
    finally:
        timer.join()
        for log in made:
            log.close()
            log.unlink()


def test_attach_gives_up_after_its_timeout(log_name: Names) -> None:
    begun = time.monotonic()
    with pytest.raises(LogNotFoundError, match=r"appeared within 0.2 s"):
        AtomicLog.attach(log_name(), timeout=0.2)
    assert 0.15 < time.monotonic() - begun < 2
    for bad in (-1, "1", True, float("nan")):
        with pytest.raises(InvalidArgumentError, match="timeout"):
            AtomicLog.attach(log_name(), timeout=bad)  # type: ignore[arg-type]
    with pytest.raises(DtypeMismatchError), AtomicLog.new(retained=1, segment=1, dtype="<i4") as log:
        AtomicLog.attach(log.name, dtype=np.int64, timeout=1)


def test_info_is_the_state_of_the_log_in_one_value(log_name: Names) -> None:
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=np.int64, name=log_name())
    with log:
        info = log.info()
        assert isinstance(info, LogInfo)
        assert (info.oldest, info.newest, info.end, info.records) == (None, None, 0, 0)
        writer.extend(range(13))
        info = log.info()
        capacities = (info.retained_capacity, info.segment_capacity)
        assert (info.name, info.dtype, capacities) == (log.name, np.int64, (8, 4))
        assert (info.oldest, info.newest, info.end, info.records, info.head_segment) == (4, 12, 13, 9, 3)
        assert [tuple(s) for s in info.segments] == [(1, 4, 4), (2, 8, 4), (3, 12, 1)]
        assert (info.writer_pid, info.writer_active) == (os.getpid(), True)
        assert abs(info.created - datetime.datetime.now().astimezone()) < datetime.timedelta(seconds=60)
        assert info.regions >= 5 and info.memory_bytes >= 4 * 4 * 8
        pid = os.getpid()
        assert info.as_dict()["writer"] == {"held": True, "pid": pid, "status": f"held by pid {pid}"}
        writer.close()
        assert (log.info().writer_pid, log.info().writer_active) == (None, False)
        assert any(i.name == log.name and i.records == 9 for i in list_logs())
    assert log.name not in {i.name for i in list_logs()}


def test_poll_length_is_its_record_count(log_name: Names) -> None:
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=np.int64, name=log_name())
    with log, writer:
        cursor = log.cursor()
        writer.extend(range(6))
        batch = cursor.poll()
        assert len(batch) == 6 and not hasattr(batch, "count") and not hasattr(batch, "index")
        assert repr(batch) == "<Poll of 6 records from position 0, 0 missed>"
        assert len(cursor.poll()) == 0
        with pytest.raises(InvalidArgumentError):
            log.cursor("latest")
        with pytest.raises(TypeError, match="a Cursor cannot be pickled"):
            cursor.__reduce__()


def test_the_new_names_are_exported() -> None:
    for name in ("LogInfo", "SegmentInfo", "list_logs", "ClaimHeldError", "LogMismatchError"):
        assert name in atomic_log_shm.__all__


@pytest.mark.parametrize("how", ["unlinked", "replaced"])
def test_poll_raises_once_the_log_is_gone(log_name: Names, how: str) -> None:
    """A follower that polls learns the log is gone within about a second (a snapshot's
    refresh() keeps its two-load hot path: it raises once it needs a segment that is gone)."""
    name = log_name()
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=np.int64, name=name)
    writer.append(1)
    snap, cursor = log.snapshot(), log.cursor()
    writer.close()
    log.unlink()
    if how == "replaced":
        AtomicLog.new(retained=8, segment=4, dtype=np.int64, name=name).close()
    for view in (cursor.poll,):
        begun = time.monotonic()
        with pytest.raises(LogNotFoundError, match=f"{name}.*unlinked or replaced"):
            while time.monotonic() - begun < 5:
                view()
                time.sleep(0.01)
        assert time.monotonic() - begun < 1.5
    assert [int(v) for v in snap] == [1]  # what it showed stays readable
    log.close()


def test_info_says_since_when_no_writer_holds_the_claim(log_name: Names) -> None:
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=np.int64, name=log_name())
    with log:
        assert log.info().writer_released is None  # held now
        before = datetime.datetime.now().astimezone()
        writer.close()
        info = log.info()
        assert info.writer_released is not None and not info.writer_active
        now = datetime.datetime.now().astimezone()
        assert before - datetime.timedelta(seconds=1) <= info.writer_released <= now
        assert info.writer_status.startswith("free since ")
        with log.try_claim_writer() as again:
            assert again is not None and log.info().writer_released is None


def test_wait_async_can_stop_when_the_writer_goes(log_name: Names) -> None:
    import asyncio

    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=np.int64, name=log_name())
    with log:
        cursor = log.cursor("newest")

        async def main() -> tuple[bool, float]:
            asyncio.get_running_loop().call_later(0.2, writer.close)
            begun = time.monotonic()
            got = await cursor.wait_async(timeout=10, until_writer_gone=True)
            return got, time.monotonic() - begun

        got, took = asyncio.run(main())
        assert got is False and took < 2
        assert log.snapshot().wait(timeout=5, until_writer_gone=True) is False


# -- what a newcomer meets first --------------------------------------------------------------


def test_a_handle_is_made_by_new_new_claimed_or_attach_and_help_shows_only_those(log_name: Names) -> None:
    import pydoc

    with pytest.raises(TypeError, match=r"AtomicLog\.new\(\.\.\.\).*attach\(name\)"):
        AtomicLog(log_name())  # type: ignore[call-arg]
    doc = pydoc.render_doc(AtomicLog)
    assert "_nonce" not in doc and "_owner" not in doc
    for way in ("new(", "new_claimed(", "attach("):
        assert way in doc


def test_modes_are_shown_in_octal() -> None:
    import inspect

    assert "mode: 'int' = 0o600" in str(inspect.signature(AtomicLog.new))
    assert repr(atomic_log_shm.DEFAULT_MODE) == "0o600" and atomic_log_shm.DEFAULT_MODE == 0o600


def test_a_log_made_without_a_name_and_left_behind_says_so() -> None:
    import gc
    import warnings

    log = AtomicLog.new(retained=8, segment=4, dtype=np.int64)  # no name: alog-<pid>-<hex>
    name = log.name
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del log
        gc.collect()
    try:
        assert [w.category for w in caught] == [ResourceWarning]
        assert name in str(caught[0].message) and "unlink" in str(caught[0].message)
    finally:
        atomic_log_shm.remove_log(name)
    with warnings.catch_warnings(record=True) as caught:  # unlinked, or named: nothing to say
        warnings.simplefilter("always")
        AtomicLog.new(retained=8, segment=4, dtype=np.int64).unlink()
        gc.collect()
    assert caught == []
