"""Page reuse: the writer reuses the pages of a segment that left the window, and only when
no reader holds them.

A fresh region costs the kernel a zeroed page and a fault per page (about 1 ms for 2 MiB),
so the segment that leaves the window is renamed and kept (``_segment.WriterSegments``), and
reused for a later segment when no other process holds it: readers map a segment under a
shared open-file-description lock, which the writer tests with a non-blocking exclusive one
(``_shm.unshared``); no signal is involved, so a process that opens a region cannot harm the
writer. Here: reuse happens while processes open and lock every region, without a wrong
record or a dead writer; and what a reader holds is never reused, however far the writer goes.

Page reuse is also exercised where its threats are tested: a writer killed with a region
kept for reuse (``test_crashes``, the kill stages), an interrupt in a rollover that reuses
a spare (``test_interrupts``), names planted where the spare is renamed to
(``test_bystanders``), memory at most one spare past the window (``test_stateful``), a
reader racing 200,000 appends (``test_processes``), and the soak (``test_soak``), which
reports how many rollovers reused pages.
"""

from __future__ import annotations

import gc
import mmap
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
from support import (
    TIMEOUT,
    Child,
    become,
    check_snapshot,
    chunk_shape,
    lock_everything,
    mapping_of,
    other_user,
    segments_in_shm,
    values,
    write_in_child,
)

from atomic_log_shm import AtomicLog

# -- reuse goes on while processes open, map and lock every region


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
            become(uid)
            bystand(name, lock)
        finally:
            os._exit(1)
    try:
        yield pid
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


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


# -- what a reader holds is never reused


def hold_views_while_writer_reclaims(out: Any, name: str, go: list[Any]) -> dict[str, Any]:
    log = AtomicLog.attach(name)
    snap = log.snapshot()  # held, with its handle, then refreshed at the end
    held = [c.values for c in snap.chunks()]
    out.put(("step", {"chunks": chunk_shape(snap), "arrays": [a.tolist() for a in held]}))
    assert go[0].wait(TIMEOUT)

    with AtomicLog.attach(name) as other:  # arrays kept alone: handle closed, snapshot dropped
        bare = [c.values for c in other.snapshot().chunks()]
    gc.collect()
    out.put(("step", [a.tolist() for a in bare]))
    assert go[1].wait(TIMEOUT)  # the writer appends far past the retained window meanwhile

    after = {
        "snapshot": values(snap),
        "arrays": [a.tolist() for a in held],
        "bare arrays": [a.tolist() for a in bare],
        "mapped inodes": {mapping_of(a, name).inode for a in held + bare},
    }
    snap.refresh()
    after["refreshed"] = values(snap)
    after["refreshed chunks"] = chunk_shape(snap)
    after["arrays after refresh"] = [a.tolist() for a in held]
    return after


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_child_views_keep_their_values_after_the_writer_reclaims_their_segments(
    method: str, log_name: Callable[[], str]
) -> None:
    # retained 8, segments of 4: ceil(8 / 4) + 1 = 3 segments are kept
    ctx = multiprocessing.get_context(method)
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=np.int64, name=log_name())
    with log, writer:
        writer.extend(range(10))
        go = [ctx.Event(), ctx.Event()]
        with Child(ctx, hold_views_while_writer_reclaims, (log.name, go)) as child:
            held = child.step()
            assert held == {
                "chunks": [(0, 4), (1, 4), (2, 2)],
                "arrays": [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]],
            }
            writer.extend(range(10, 30))
            go[0].set()
            bare = child.step()
            assert bare == [[20, 21, 22, 23], [24, 25, 26, 27], [28, 29]]  # segments 5, 6 and 7

            writer.extend(range(30, 200))
            assert segments_in_shm(log.name).keys().isdisjoint({0, 1, 2, 5, 6, 7})  # all reclaimed
            go[1].set()
            after = child.result()
        # The child still maps the six regions it holds, and none of them has a name any more.
        assert len(after["mapped inodes"]) == 6
        assert after["mapped inodes"].isdisjoint(segments_in_shm(log.name).values())

        assert after["arrays"] == held["arrays"]
        assert after["bare arrays"] == bare
        assert after["snapshot"] == list(range(10))
        assert after["refreshed"] == list(range(188, 200)) == values(log.snapshot())
        assert after["refreshed chunks"] == [(47, 4), (48, 4), (49, 4)]
        assert after["arrays after refresh"] == held["arrays"]
