"""Processes outside the protocol must not kill, block or corrupt the writer (issue 9).

A bystander is any process that lacks the right to claim the writer: a backup agent, a
``grep -r /dev/shm``, another local user reading a log made with ``mode=0o644``. Each test
names what the bystander does and what must still hold.
"""

from __future__ import annotations

import fcntl
import json
import mmap
import os
import signal
import stat
import struct
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import numpy as np
import pytest
from support import other_user

import atomic_log_shm
from atomic_log_shm import AtomicLog, _segment

_FLOCK = struct.Struct("hhqqi4x")  # struct flock on Linux x86-64


def lock_everything(fd: int) -> None:
    """Take every lock a descriptor allows (flock, POSIX and OFD record locks), keep it."""
    for how in (fcntl.LOCK_EX, fcntl.LOCK_SH):
        with suppress(OSError):
            fcntl.flock(fd, how | fcntl.LOCK_NB)
    for cmd in (fcntl.F_SETLK, fcntl.F_OFD_SETLK):
        for kind in (fcntl.F_WRLCK, fcntl.F_RDLCK):
            with suppress(OSError):
                fcntl.fcntl(fd, cmd, _FLOCK.pack(kind, 0, 0, 0, 0))


def bystand(name: str, lock: bool) -> None:
    """Open, map and read every region of log ``name`` in a loop, as `grep -r`, tar or a
    backup agent do; with ``lock``, also take every lock a read-only descriptor allows."""
    while True:
        for entry in os.listdir("/dev/shm"):
            if entry != name and not entry.startswith(name + "@"):
                continue
            if entry.endswith(".claim") and os.geteuid() == 0:
                continue  # only root may open it for reading (see the claim region's own tests)
            try:
                fd = os.open("/dev/shm/" + entry, os.O_RDONLY)
            except OSError:
                continue
            try:
                if lock:
                    lock_everything(fd)
                size = os.fstat(fd).st_size
                if size:
                    with mmap.mmap(fd, size, access=mmap.ACCESS_READ) as m:
                        m[0]
            except OSError:
                pass
            finally:
                os.close(fd)


@contextmanager
def bystander(name: str, lock: bool, uid: int | None) -> Iterator[int]:
    """A forked process running ``bystand`` (as user ``uid`` if given); yields its pid."""
    pid = os.fork()
    if pid == 0:
        try:
            if uid is not None:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
            bystand(name, lock)
        finally:
            os._exit(1)
    try:
        yield pid
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def write_in_child(name: str, rollovers: int, segment: int) -> Callable[[], dict[str, Any] | None]:
    """Fork a writer that rolls over ``rollovers`` times (record value = its position).
    Returns a poll: None while it runs, then its wait status and how many regions it made."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(read_end)
            made = 0
            create = _segment.create

            def counting(*args: Any) -> _segment.Region:
                nonlocal made
                made += 1
                return create(*args)

            _segment.create = counting  # type: ignore[assignment]
            writer = AtomicLog.attach(name).try_claim_writer()
            assert writer is not None
            batch = np.arange(segment, dtype=np.int64)
            for _ in range(rollovers):
                writer.extend(batch + writer.end)
            writer.close()
            os.write(write_end, json.dumps({"made": made}).encode())
            status = 0
        except BaseException:
            os.write(write_end, json.dumps({"error": traceback.format_exc()}).encode())
        finally:
            os._exit(status)
    os.close(write_end)

    def poll() -> dict[str, Any] | None:
        done, status = os.waitpid(pid, os.WNOHANG)
        if not done:
            return None
        with os.fdopen(read_end, "rb") as f:
            out = f.read()
        return {"status": status, **(json.loads(out) if out else {})}

    return poll


def check_snapshot(log: AtomicLog) -> None:
    """Every record a new snapshot shows must equal its position."""
    snap = log.snapshot()
    values = snap.to_numpy()
    expected = np.arange(snap.start, snap.start + len(values))
    assert np.array_equal(values, expected), f"wrong records in {snap!r}"


CASES = [
    pytest.param(0o600, False, False, id="same-user-opens-and-maps"),
    pytest.param(0o600, True, False, id="same-user-opens-maps-and-locks"),
    pytest.param(0o644, False, True, id="other-user-opens-and-maps"),
    pytest.param(0o644, True, True, id="other-user-opens-maps-and-locks"),
]


@pytest.mark.parametrize(("mode", "lock", "as_other"), CASES)
def test_a_bystander_opening_every_region_in_a_loop_never_kills_the_writer_nor_shows_wrong_records(
    log_name: Callable[[], str], mode: int, lock: bool, as_other: bool
) -> None:
    if as_other and os.geteuid() != 0:
        pytest.skip("needs root to run the bystander as another local user")
    uid = other_user() if as_other else None
    name = log_name()
    rollovers, segment = 3000, 16
    log = AtomicLog.new(retained=8 * segment, segment=segment, dtype=np.int64, name=name, mode=mode)
    with log, bystander(name, lock, uid) as proc:
        poll = write_in_child(name, rollovers, segment)
        checked = 0
        while (result := poll()) is None:
            check_snapshot(log)
            checked += 1
        check_snapshot(log)
        assert os.waitpid(proc, os.WNOHANG) == (0, 0), "the bystander itself ended"
    assert os.WIFEXITED(result["status"]) and os.WEXITSTATUS(result["status"]) == 0, (
        f"the writer ended with status {result['status']:#x} (signal {os.WTERMSIG(result['status'])})"
        if os.WIFSIGNALED(result["status"])
        else f"the writer failed: {result}"
    )
    reused = rollovers - result["made"]
    print(f"\n{rollovers} rollovers, {reused} reused reclaimed pages, {checked} snapshots checked")
    if not lock:  # a bystander that locks may hold every spare; the snapshots here hold some
        assert reused > 0


def test_the_claim_region_cannot_be_opened_for_reading(log_name: Callable[[], str]) -> None:
    """So a process of the owner that opens regions read-only cannot lock it either."""
    with AtomicLog.new(retained=64, segment=16, dtype=np.int64, name=log_name(), mode=0o644) as log:
        (claim,) = [
            e for e in os.listdir("/dev/shm") if e.startswith(log.name + "@") and e.endswith(".claim")
        ]
        assert stat.S_IMODE(os.stat("/dev/shm/" + claim).st_mode) == 0o200


def test_another_user_locking_every_region_it_can_open_does_not_keep_writers_out(
    log_name: Callable[[], str],
) -> None:
    """A reader of another user (a 0o644 log) holds every lock it can take on every region
    of the log: flock shared and exclusive, POSIX and OFD locks, read and write."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run the reader as another local user")
    uid = other_user()
    name = log_name()
    ready_r, ready_w = os.pipe()
    with AtomicLog.new(retained=64, segment=16, dtype=np.int64, name=name, mode=0o644) as log:
        pid = os.fork()
        if pid == 0:
            try:
                if uid is not None:
                    os.setgroups([])
                    os.setgid(uid)
                    os.setuid(uid)
                held = []
                for entry in os.listdir("/dev/shm"):
                    if entry == name or entry.startswith(name + "@"):
                        with suppress(OSError):
                            fd = os.open("/dev/shm/" + entry, os.O_RDONLY)
                            lock_everything(fd)
                            held.append(fd)
                os.write(ready_w, b"%d" % len(held))
                time.sleep(60)
            finally:
                os._exit(0)
        try:
            assert int(os.read(ready_r, 16)) >= 3  # the header, segment 0 and the wait region
            writer = log.try_claim_writer()
            assert writer is not None, "a reader's lock kept the writer out"
            with writer:
                writer.extend(np.arange(100, dtype=np.int64))
                assert log.info().writer_active
        finally:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(ready_r)
            os.close(ready_w)


# -- names planted in /dev/shm, damaged headers: cleanup removes what it can, typed errors


def test_a_directory_planted_among_the_segments_neither_stops_the_claim_nor_the_cleanup(
    log_name: Callable[[], str],
) -> None:
    name = log_name()
    log = AtomicLog.new(retained=8, segment=4, dtype=np.int64, name=name)
    nonce = log._reader.layout.nonce
    planted = f"/dev/shm/{name}@{nonce:016x}.99"
    os.mkdir(planted)
    try:
        writer = log.try_claim_writer()
        assert writer is not None
        with writer:
            writer.extend(np.arange(10))
        with pytest.raises(atomic_log_shm.NotALogError, match="not a region"):
            log.unlink()
        assert sorted(e for e in os.listdir("/dev/shm") if e.startswith(name)) == [os.path.basename(planted)]
        with pytest.raises(atomic_log_shm.NotALogError):
            atomic_log_shm.remove_log(name)
    finally:
        os.rmdir(planted)
        log.close()


def test_remove_log_of_a_name_that_is_a_directory_is_a_typed_error_and_removes_the_segments(
    log_name: Callable[[], str],
) -> None:
    name = log_name()
    log = AtomicLog.new(retained=8, segment=4, dtype=np.int64, name=name)
    os.unlink("/dev/shm/" + name)  # the header's name taken away, a directory in its place
    os.mkdir("/dev/shm/" + name)
    try:
        with pytest.raises(atomic_log_shm.NotALogError):
            atomic_log_shm.remove_log(name)
        assert [e for e in os.listdir("/dev/shm") if e.startswith(name)] == [name]
    finally:
        os.rmdir("/dev/shm/" + name)
        log.close()


def test_unlink_removes_its_own_header_even_when_its_bytes_were_damaged(log_name: Callable[[], str]) -> None:
    name = log_name()
    with AtomicLog.new(retained=8, segment=4, dtype=np.int64, name=name) as log:
        with open("/dev/shm/" + name, "r+b") as f:
            f.write(b"\xff" * 64)  # magic, nonce, capacities: nothing says whose it is
        log.unlink()
        assert not [e for e in os.listdir("/dev/shm") if e.startswith(name)]


def test_unlink_leaves_a_newer_log_of_the_same_name_alone(log_name: Callable[[], str]) -> None:
    name = log_name()
    old = AtomicLog.new(retained=8, segment=4, dtype=np.int64, name=name)
    atomic_log_shm.remove_log(name)
    with AtomicLog.new(retained=8, segment=4, dtype=np.int64, name=name) as new:
        old.unlink()
        old.close()
        assert os.path.exists("/dev/shm/" + name)
        assert len(new.snapshot()) == 0
