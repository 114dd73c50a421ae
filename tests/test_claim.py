"""The writer claim: who holds it is seen the same from every process, no reader can take,
fake or hide it, and no exception (a Ctrl-C at any line) leaves it held by nobody.

A writer holds an flock on the claim region (the exclusive right) and the exclusive
open-file-description lock on its held region (for readers to see, in any pid namespace,
without taking anything). Both locks belong to descriptors that file objects own, so a
claim that an exception cut short is let go when those objects go.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import support
from support import (
    SHM,
    Interrupter,
    interrupt_at_every_line,
    regions_of,
    report_untyped_errors,
    run_traced,
    untyped_errors,
)

import atomic_log_shm
from atomic_log_shm import AtomicLog, LogNotFoundError, remove_log

Names = Callable[[], str]
PACKAGE = os.path.dirname(atomic_log_shm.__file__)
FLOCK = struct.Struct("hhqqi4x")


def held_region(name: str) -> str:
    found = [e for e in regions_of(name) if ".held." in e]
    assert len(found) == 1, found
    return os.path.join(SHM, found[0])


def claimable(name: str) -> bool:
    """Whether a fresh handle, in this process, can take the claim now (and gives it back)."""
    with AtomicLog.attach(name) as log:
        writer = log.try_claim_writer()
        if writer is None:
            return False
        writer.close()
        return True


# -- who holds it, seen from anywhere ---------------------------------------------------------


def test_writer_active_follows_the_claim_and_its_held_region(log_name: Names) -> None:
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=np.int64, name=log_name())
    with log:
        assert log.info().writer_active and os.path.exists(held_region(log.name))
        writer.close()
        assert not log.info().writer_active
        assert not [e for e in regions_of(log.name) if ".held." in e]
        again = log.try_claim_writer()
        assert again is not None and log.info().writer_active
        again.close()


def test_a_crashed_writers_held_region_says_no_writer_and_goes_at_the_next_claim(log_name: Names) -> None:
    name = log_name()
    AtomicLog.new(retained=8, segment=4, dtype=np.int64, name=name).close()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - killed
        writer = AtomicLog.attach(name).try_claim_writer()
        assert writer is not None
        os.kill(os.getpid(), 9)
    os.waitpid(pid, 0)
    with AtomicLog.attach(name) as log:
        stale = held_region(name)
        assert not log.info().writer_active
        with log.try_claim_writer() as writer:
            assert writer is not None and log.info().writer_active
            assert not os.path.exists(stale) and os.path.exists(held_region(name))


READER = """
import json, sys
from atomic_log_shm import AtomicLog
log = AtomicLog.attach(sys.argv[1])
active = log.info().writer_active
gone = log.cursor("newest").wait(timeout=2.0, until_writer_gone=True)  # False at once if it sees no writer
print(json.dumps({"active": active, "waited_out": gone is False, "pid": __import__("os").getpid()}))
"""


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare(1)")
def test_a_reader_in_another_pid_namespace_sees_the_writer(log_name: Names) -> None:
    """A container run with --ipc=host, or unshare -p: /proc/locks there hides the writer's
    flock, and the reader must still see the writer (and wait for it)."""
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=np.int64, name=log_name())
    with log, writer:
        command = ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", READER, log.name]
        began = time.monotonic()
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        seen = json.loads(done.stdout)
        assert seen["pid"] == 1, "not in a new pid namespace"
        assert seen["active"] is True
        assert seen["waited_out"] is True and time.monotonic() - began >= 2.0  # it waited the writer out


def lock_everything_readable(name: str, uid: int | None, ready: Any, stop: Any) -> None:
    """A hostile reader (another user, when run as root): open every region of the log it
    can, read-only, and lock what it can on each (flock, OFD read lock); hold until told."""
    support.become(uid)
    held = []
    for entry in regions_of(name):
        try:
            fd = os.open(os.path.join(SHM, entry), os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            continue  # the claim region: not readable
        held.append(fd)
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, FLOCK.pack(fcntl.F_RDLCK, 0, 0, 0, 0))
    ready.set()
    stop.wait(60)


@pytest.mark.parametrize("when", ["before the claim", "while claimed"])
def test_a_reader_can_neither_fake_nor_hide_nor_block_a_writer(log_name: Names, when: str) -> None:
    """A reader with read access to every region it can open locks all it can: readers
    still see the truth about the writer, and writers still claim."""
    import multiprocessing as mp

    fork = mp.get_context("fork")
    uid = support.other_user() if os.geteuid() == 0 else None
    name = log_name()
    with AtomicLog.new(retained=8, segment=4, dtype=np.int64, name=name, mode=0o644) as log:
        writer = log.try_claim_writer() if when == "while claimed" else None
        ready, stop = fork.Event(), fork.Event()
        hostile = fork.Process(target=lock_everything_readable, args=(name, uid, ready, stop))
        hostile.start()
        try:
            assert ready.wait(30)
            assert log.info().writer_active is (writer is not None)  # nothing faked, nothing hidden
            if writer is None:
                writer = log.try_claim_writer()
                assert writer is not None, "a reader kept the writer out"
                assert log.info().writer_active
            writer.append(1)
            writer.close()
            assert not log.info().writer_active
            assert claimable(name)
        finally:
            stop.set()
            hostile.join(30)


# -- no claim held by nobody -------------------------------------------------------------------


CLAIM_FILES = {
    os.path.join(PACKAGE, f) for f in ("_writer.py", "_claim.py", "_segment.py", "_shm.py", "_wait.py")
}


def interrupted(op: Callable[[], Any], at: int | None) -> tuple[bool, Any, int]:
    """Run ``op`` raising KeyboardInterrupt at its ``at``-th line event; (interrupted?, what
    it returned, line events seen). The exception, its traceback and frames are dropped."""
    tracer = Interrupter(CLAIM_FILES, at)
    result: list[Any] = []
    hit = run_traced(lambda: result.append(op()), tracer)
    return hit, result[0] if result else None, tracer.lines


@pytest.mark.parametrize("operation", ["try_claim_writer", "close"])
def test_an_interrupt_at_any_line_of_claiming_or_closing_never_leaves_the_claim_held_by_nobody(
    log_name: Names, operation: str
) -> None:
    """After a KeyboardInterrupt at any line of ``try_claim_writer()`` or ``close()``, once
    the objects involved are dropped, the claim is free; a writer that was returned holds
    it until closed, and no held region is left behind."""
    name = log_name()
    AtomicLog.new(retained=8, segment=4, dtype=np.int64, name=name).close()

    def once(at: int | None) -> tuple[bool, int]:
        log = AtomicLog.attach(name)
        if operation == "close":
            writer = log.try_claim_writer()
            assert writer is not None
            writer.extend(range(9))  # a spare is kept: close() has segments to let go of
            hit, _, lines = interrupted(writer.close, at)
            del writer
        else:
            hit, writer, lines = interrupted(log.try_claim_writer, at)
            if writer is not None:
                assert not claimable(name)
                writer.close()
            del writer
        gc.collect()
        assert claimable(name), f"the claim is still held after an interrupt at line {at}"
        assert len([e for e in regions_of(name) if ".held." in e]) == 0
        log.close()
        return hit, lines

    interrupt_at_every_line(once, more_than=20)
    remove_log(name)


def claim(name: str) -> None:
    """Continue log ``name`` (or make it), write, let go: what a restarted writer does."""
    writer, log = AtomicLog.new_claimed(retained=4, segment=2, dtype=np.int64, name=name, exist_ok=True)
    writer.extend(range(5))
    writer.close()
    log.close()


def remove_and_make_anew(name: str) -> None:
    """Remove log ``name`` and make it anew, then claim it from a handle of its own."""
    remove_log(name)
    AtomicLog.new(retained=4, segment=2, dtype=np.int64, name=name).close()
    with AtomicLog.attach(name) as log:
        writer = log.try_claim_writer()
        if writer is not None:
            writer.close()


def test_claiming_while_the_log_is_removed_and_made_anew_raises_only_typed_errors(log_name: Names) -> None:
    import multiprocessing as mp

    fork = mp.get_context("fork")
    name = log_name()
    errors = fork.Queue()
    claimer = fork.Process(target=report_untyped_errors, args=(lambda: claim(name), 3.0, errors))
    claimer.start()
    try:
        untyped = untyped_errors(lambda: remove_and_make_anew(name), 3.0)
        untyped += errors.get(timeout=60)
    finally:
        claimer.join(60)
        if claimer.is_alive():
            claimer.kill()
    assert untyped == []
    with contextlib.suppress(LogNotFoundError):
        remove_log(name)
    assert regions_of(name) == []
