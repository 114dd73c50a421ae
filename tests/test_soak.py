"""The soak: a writer under random SIGINTs and hostile bystanders, for a minute.

One writer process appends and extends (segments of 16 records: a rollover every few
calls) for ``ATOMIC_LOG_SOAK_SECONDS`` (60 by default). Meanwhile:

* hostile processes list /dev/shm and open, map and lock (flock shared and exclusive,
  POSIX and OFD record locks) every entry of the log in a loop: one as the log's own user,
  one as another local user (``alsnobody``, a ``0o644`` log) where the test runs as root;
* the test sends the writer SIGINT every 5 to 50 ms. Its handler raises KeyboardInterrupt,
  as Python's default does, so the interrupt lands wherever the writer is inside the
  library, a second one in the library's recovery from the first too; the writer catches
  it around each call and goes on, as a notebook or a service would, and after a
  WriterClosedError claims again;
* a reader process refreshes a snapshot and follows with a cursor (``poll``, ``wait``),
  checking every record it is shown against its position.

Records check themselves as in test_crashes.py: record ``pos`` carries ``pos * GOLDEN mod
2**64``. The writer lets SIGINT in only around a library call (it blocks the signal with
``pthread_sigmask`` elsewhere), so that an interrupt is one the library had to survive, not
one in the test's own bookkeeping; a SIGINT sent while it is blocked stays pending and
lands at the next call, and several pending ones count as one. How the loop makes sure no
SIGINT raises inside its own except clauses: ``write`` and ``interrupt``.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import signal
import time
from multiprocessing.connection import Connection
from types import FrameType
from typing import Any

import numpy as np
import pytest
from support import (
    DTYPE,
    GOLDEN,
    MASK,
    become,
    check_of,
    header_state,
    lock_everything,
    other_user,
    reaping,
    receive,
    records,
    soak_seconds,
    start,
    view_problems,
)

import atomic_log_shm
from atomic_log_shm import AtomicLog, WriterClosedError, _segment

SEGMENT = 16
RETAINED = 8 * SEGMENT
CLAIM_PATIENCE = 5.0  # how long a writer closed by an interrupt may take to claim again
SIGINT_ONLY = {signal.SIGINT}
LIBRARY = os.path.dirname(atomic_log_shm.__file__) + os.sep


def interrupt(signum: int, frame: FrameType | None) -> None:
    """The writer's SIGINT handler: a KeyboardInterrupt, as Python's default handler raises.

    Where no frame of the library is running (the signal landed in the writer's own loop:
    the interrupted call is over), it blocks SIGINT before it raises. So the except clauses
    that catch the interrupt always run with SIGINT blocked: a second SIGINT cannot raise
    inside one of them, where nothing would catch it and the writer would die of the test's
    own race. Inside the library nothing is blocked: a second SIGINT may land anywhere,
    in the recovery from the first too, which is what the soak is for."""
    while frame is not None:
        if frame.f_code.co_filename.startswith(LIBRARY):
            raise KeyboardInterrupt
        frame = frame.f_back
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGINT_ONLY)
    raise KeyboardInterrupt


def hostile(name: str, uid: int | None, until: float, conn: Connection) -> None:
    """List /dev/shm and open, map, read and lock every entry of log ``name`` until
    ``until`` (as user ``uid`` if given). Sends how many entries it opened and locked."""
    become(uid)
    opened = mapped = 0
    while time.time() < until:
        for entry in os.listdir("/dev/shm"):
            if entry != name and not entry.startswith(name + "@"):
                continue
            if entry.endswith(".claim") and os.geteuid() == 0:
                continue  # root may open anything: the owner's full power is out of scope
            try:
                fd = os.open("/dev/shm/" + entry, os.O_RDONLY)
            except OSError:
                continue
            opened += 1
            try:
                lock_everything(fd)
                size = os.fstat(fd).st_size
                if size:
                    with mmap.mmap(fd, size, access=mmap.ACCESS_READ) as m:
                        m[0]
                    mapped += 1
            except OSError:
                pass
            finally:
                os.close(fd)
    conn.send({"opened": opened, "mapped": mapped})


def write(name: str, seconds: float, seed: int, conn: Connection) -> None:
    """Append and extend for ``seconds``, catching the KeyboardInterrupts that SIGINTs
    raise inside the library's calls; claim again after a WriterClosedError."""
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGINT_ONLY)
    signal.signal(signal.SIGINT, interrupt)
    made = 0
    create = _segment.create

    def counting(*args: Any) -> _segment.Region:
        nonlocal made
        region = create(*args)
        made += 1
        return region

    _segment.create = counting  # type: ignore[assignment]
    log = AtomicLog.attach(name)
    writer = log.try_claim_writer()
    assert writer is not None
    first_head = made
    rng = np.random.default_rng(seed)
    counts = dict.fromkeys(("calls", "appends", "extends", "interrupts", "reclaims", "records"), 0)
    interrupted_in = {"append": 0, "extend": 0}
    conn.send("ready")
    until = time.time() + seconds
    while time.time() < until:
        pos = writer.end
        one = rng.random() < 0.5
        batch = None if one else records(pos, int(rng.integers(0, 3 * SEGMENT + 1)))
        # SIGINT is blocked again before either except clause runs: by the finally clause
        # (pthread_sigmask runs the handler of a SIGINT still pending before it returns, and
        # none can come after it), or, for a KeyboardInterrupt raised before that block took
        # effect, by the handler itself (``interrupt``).
        try:
            try:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGINT_ONLY)
                if one:
                    writer.append((pos, pos * GOLDEN & MASK))
                else:
                    writer.extend(batch)
            finally:
                signal.pthread_sigmask(signal.SIG_BLOCK, SIGINT_ONLY)
        except KeyboardInterrupt:
            counts["interrupts"] += 1
            interrupted_in["append" if one else "extend"] += 1
        except WriterClosedError:
            writer.close()
            claimed = None
            give_up = time.monotonic() + CLAIM_PATIENCE
            while claimed is None and time.monotonic() < give_up:
                claimed = log.try_claim_writer()
                time.sleep(0.001)
            if claimed is None:
                conn.send({"error": f"no claim within {CLAIM_PATIENCE} s after {writer!r}"})
                return
            writer = claimed
            counts["reclaims"] += 1
        counts["calls"] += 1
        counts["appends" if one else "extends"] += 1
    end = writer.end
    writer.close()
    head = header_state(name)[0]
    conn.send(
        {**counts, "records": end, "rollovers": head, "regions made": made - first_head,
         "interrupted in": interrupted_in}
    )  # fmt: skip


def follow(name: str, until: float, conn: Connection) -> None:
    """Refresh a snapshot and follow with a cursor until ``until`` and then until the
    writer is gone and every record was seen; check every record shown."""
    log = AtomicLog.attach(name)
    snap = log.snapshot()
    cursor = log.cursor("oldest")
    wrong: dict[str, int] = {}
    examples: list[Any] = []
    seen = views = waits = woken = missed = 0
    expected = cursor.position  # the next position the cursor should hand out, or report missed
    window_start = 0
    last_look = 0.0
    done = False
    while not done:
        snap.refresh()
        views += 1
        _, problems = view_problems(list(snap.chunks()), SEGMENT)
        for what, n in problems.items():
            wrong[what] = wrong.get(what, 0) + n
        if snap.start < window_start:
            wrong["window moved back"] = wrong.get("window moved back", 0) + 1
        window_start = snap.start
        batch = cursor.poll()
        if batch.arrays or batch.missed:
            if batch.start < expected:
                wrong["position handed out twice"] = wrong.get("position handed out twice", 0) + 1
            elif batch.start != expected + batch.missed:
                wrong["positions skipped unreported"] = wrong.get("positions skipped unreported", 0) + 1
                examples.append((expected, batch.start, batch.missed, [len(a) for a in batch.arrays]))
            missed += batch.missed
            at = batch.start
            for array in batch.arrays:
                where = np.arange(at, at + len(array))
                bad = np.count_nonzero((array["pos"] != where) | (array["check"] != check_of(where)))
                if bad:
                    wrong["wrong record from the cursor"] = wrong.get("wrong record from the cursor", 0) + bad
                at += len(array)
                seen += len(array)
            expected = at
        elif time.time() < until:
            waits += 1
            woken += cursor.wait(timeout=0.05)
        now = time.time()
        if now >= until and now - last_look > 0.2:
            last_look = now
            done = not log.info().writer_active and cursor.position == snap.end == log.snapshot().end
    conn.send(
        {"views": views, "records checked by the cursor": seen, "missed": missed, "waits": waits,
         "woken": woken, "end": expected, "wrong": wrong, "examples": examples[:5]}
    )  # fmt: skip


@pytest.mark.slow
def test_a_writer_under_random_sigints_and_hostile_lockers_never_dies_nor_shows_a_wrong_record(
    log_name: Any,
) -> None:
    seconds = soak_seconds(60.0)
    name = log_name()
    as_root = os.geteuid() == 0
    rng = np.random.default_rng()
    log = AtomicLog.new(retained=RETAINED, segment=SEGMENT, dtype=DTYPE, name=name, mode=0o644)
    with log, reaping() as processes:
        writer, from_writer = start(processes, write, name, seconds, int(rng.integers(2**32)))
        receive(from_writer, 20.0, "the writer")
        until = time.time() + seconds
        hostiles = [start(processes, hostile, name, None, until)]
        if as_root:
            hostiles.append(start(processes, hostile, name, other_user(), until))
        _, from_reader = start(processes, follow, name, until)
        sigints = 0
        while writer.is_alive() and not from_writer.poll(0):
            time.sleep(float(rng.uniform(0.005, 0.05)))
            with contextlib.suppress(ProcessLookupError):
                os.kill(writer.pid, signal.SIGINT)
                sigints += 1
        result = receive(from_writer, seconds + 60, "the writer")
        writer.join(20.0)
        read = receive(from_reader, 60.0, "the reader")
        hostile_counts = [receive(conn, 30.0, "a hostile process") for _, conn in hostiles]
        assert log.try_claim_writer() is not None  # nobody kept the claim
    figures = {
        "seconds": seconds,
        "SIGINTs sent": sigints,
        **result,
        "page reuses": result["rollovers"] - result["regions made"],
        "reader": read,
        "hostile (same user, other user)": hostile_counts,
    }
    print(f"\nsoak: {figures}")
    if not as_root:
        print("the other-user hostile process was skipped: the test needs root to run as another user")
    assert writer.exitcode == 0, f"the writer died (exit code {writer.exitcode}): {figures}"
    assert read["wrong"] == {}, f"wrong records: {figures}"
    assert read["end"] == result["records"], f"the cursor did not reach the writer's end: {figures}"
    assert result["interrupts"] > 0, figures
    assert all(h["opened"] > 0 for h in hostile_counts), figures
