"""Processes outside the protocol must not kill, block or corrupt the writer.

A bystander is any process that lacks the right to claim the writer: a backup agent, a
``grep -r /dev/shm``, another local user reading a log made with ``mode=0o644``. Each test
names what the bystander does and what must still hold.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import numpy as np
import pytest
from support import become, check_snapshot, lock_everything, other_user, segments_of, values, write_in_child

import atomic_log_shm
from atomic_log_shm import AtomicLog, _segment, _shm
from atomic_log_shm._header import FIXED, SLOT


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
                become(uid)
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


# -- names planted ahead of the writer: segment names cannot be guessed, nor taken over

SEGMENT = re.compile(r"@(?P<nonce>[0-9a-f]{16})\.(?P<seq>[0-9]+)(?:\.(?P<token>[0-9a-f]{16}))?")


def header_slots(name: str) -> tuple[int, int, list[int]] | None:
    """(nonce, head, the token of every slot) as the header says now; None if unreadable."""
    try:
        with open(f"/dev/shm/{name}", "rb") as f:
            raw = f.read()
        fixed = np.frombuffer(raw, FIXED, count=1)[0]
        slots = np.frombuffer(raw, SLOT, count=int(fixed["slot_count"]), offset=FIXED.itemsize)
        tokens = [int(t) for t in slots["token"]]
    except (OSError, ValueError, KeyError):  # not readable by this user, or being made
        return None
    return int(fixed["nonce"]), int(fixed["head"]), tokens


def guesses(name: str, listed: dict[str, int], gone: set[str]) -> set[str]:
    """Every name a planter can predict for the segments to come (``listed``: the log's
    segment names in /dev/shm now, not planted, by number): the numbers 1 to 3 above the
    newest it sees (listed, or the header's head), with no token, with each token it sees
    (listed, or in a slot) and with tokens 0 and all ones; and ``gone``, names it saw that
    have since gone (the name a spare was renamed from, a reclaimed segment's)."""
    tokens = {"0" * 16, "f" * 16}
    nonces, top = set(), 0
    for entry, seq in listed.items():
        m = SEGMENT.search(entry)
        assert m is not None
        nonces.add(m["nonce"])
        top = max(top, seq)
        tokens.add(m["token"] or "0" * 16)
    header = header_slots(name)
    if header is not None:
        nonce, head, slot_tokens = header
        nonces.add(f"{nonce:016x}")
        top = max(top, head)
        tokens |= {f"{t & ((1 << 64) - 1):016x}" for t in slot_tokens}
    names = set(gone)
    for nonce in nonces:
        for seq in (top + 1, top + 2, top + 3):
            names.add(f"{name}@{nonce}.{seq}")
            names |= {f"{name}@{nonce}.{seq}.{token}" for token in tokens}
    return names


def plant(name: str, segment_bytes: int, report: int) -> None:
    """Create, in a loop, a file or a directory under every name ``guesses`` predicts: files
    of a segment's size holding records -1 (a reader that opened one would show them).
    Plants far behind the newest segment are removed, to keep /dev/shm small."""
    mine: dict[str, int] = {}
    seen: set[str] = set()
    planted = 0
    poison = np.full(segment_bytes // 8, -1, np.int64).tobytes()
    last = time.monotonic()
    while True:
        listed = {}
        for entry in os.listdir("/dev/shm"):
            m = SEGMENT.search(entry) if entry.startswith(name + "@") else None
            if m and entry not in mine:
                listed[entry] = int(m["seq"])
        gone, seen = seen - listed.keys() - mine.keys(), set(listed)
        top = max(listed.values(), default=0)
        for entry in guesses(name, listed, gone) - mine.keys():
            path = "/dev/shm/" + entry
            try:
                if planted % 2:
                    os.mkdir(path)
                else:
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                    try:
                        os.write(fd, poison)
                    finally:
                        os.close(fd)
            except OSError:
                continue
            m = SEGMENT.search(entry)
            assert m is not None
            mine[entry] = int(m["seq"])
            planted += 1
        for entry in [e for e, seq in mine.items() if seq < top - 32]:
            with suppress(OSError):
                os.rmdir("/dev/shm/" + entry) if os.path.isdir("/dev/shm/" + entry) else os.unlink(
                    "/dev/shm/" + entry
                )
            del mine[entry]
        if time.monotonic() - last > 0.02:
            os.pwrite(report, planted.to_bytes(8, "little"), 0)
            last = time.monotonic()


@contextmanager
def planter(name: str, segment_bytes: int, uid: int | None) -> Iterator[Callable[[], int]]:
    """A forked process running ``plant`` (as user ``uid`` if given); yields how many names
    it has planted so far. The directories it planted are removed afterwards (its files
    are left to the log's unlink(), which removes every name it may)."""
    report = os.open("/dev/shm", os.O_RDWR | os.O_TMPFILE, 0o666)
    os.ftruncate(report, 8)
    pid = os.fork()
    if pid == 0:
        try:
            become(uid)
            plant(name, segment_bytes, report)
        finally:
            os._exit(1)
    try:
        yield lambda: int.from_bytes(os.pread(report, 8, 0), "little")
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(report)
        for entry in os.listdir("/dev/shm"):
            if entry.startswith(name + "@") and os.path.isdir("/dev/shm/" + entry):
                os.rmdir("/dev/shm/" + entry)


@pytest.mark.parametrize("as_other", [False, True], ids=["same-user-process", "other-user"])
def test_names_planted_ahead_of_the_writer_never_fail_an_append_nor_show_a_wrong_record(
    log_name: Callable[[], str], as_other: bool
) -> None:
    if as_other and os.geteuid() != 0:
        pytest.skip("needs root to run the planter as another local user")
    uid = other_user() if as_other else None
    name = log_name()
    rollovers, segment = 10000, 16
    retained = 8 * segment
    log = AtomicLog.new(retained=retained, segment=segment, dtype=np.int64, name=name, mode=0o644)
    with log, planter(name, segment * 8, uid) as planted:
        time.sleep(0.2)  # the planter is at work before the first rollover
        poll = write_in_child(name, rollovers, segment)
        checked = 0
        while (result := poll()) is None:
            check_snapshot(log)
            checked += 1
        # The writer is gone, the planter is not: a snapshot maps every segment of the window
        # (a reader lapped by the writer may miss the oldest, so this is checked at rest).
        snap = check_snapshot(log)
        assert len(snap) == log._reader.layout.slot_count * segment, f"a segment went missing: {snap!r}"
        during = planted()
    status = result["status"]
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"the writer failed: {result}"
    print(
        f"\n{rollovers} rollovers, {rollovers - result['made']} reused pages, {during} names planted, "
        f"{checked} snapshots checked"
    )
    assert during > rollovers // 10, f"the planter planted only {during} names"


def test_a_name_taken_when_the_writer_draws_it_is_never_used_another_token_is_drawn(
    log_name: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A planter that guesses the tokens the writer draws (here: a stand-in for ``secrets``
    tells it) takes those names first, with files and directories, for the region a
    rollover makes and for the name the spare is renamed to: the writer draws again each
    time; after 8 taken names in a row it unlinks the spare instead of keeping it; no call
    raises, no planted name is used, replaced or removed."""
    name = log_name()
    segment = 4
    writer, log = AtomicLog.new_claimed(retained=segment, segment=segment, dtype=np.int64, name=name)
    nonce = log._reader.layout.nonce
    queue: list[int] = []  # the tokens the writer draws next, then random ones
    monkeypatch.setattr(_shm, "new_token", lambda: queue.pop(0) if queue else secrets.randbits(63))
    planted: dict[str, bool] = {}  # path: is a directory

    def plant(seq: int, tokens: range) -> None:
        for token in tokens:
            path = f"/dev/shm/{name}@{nonce:016x}.{seq}.{token:016x}"
            if token % 2:
                os.mkdir(path)
            else:
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            planted[path] = bool(token % 2)
        queue.extend(tokens)

    def writers_own() -> dict[int, str]:
        return {seq: e for seq, e in segments_of(name) if "/dev/shm/" + e not in planted}

    def roll_once() -> None:
        writer.extend(np.arange(writer.end, writer.end + segment))

    with log, writer:
        try:
            roll_once()  # segment 0, full
            plant(1, range(1, 4))  # the region of segment 1: 3 names taken, the 4th is free
            roll_once()
            assert sorted(writers_own()) == [0, 1]
            queue.append(100)  # segment 2's region (fresh: no spare yet), then the spare's name
            plant(3, range(101, 104))  # segment 0 leaves the window, renamed to 3: 3 names taken
            roll_once()
            assert sorted(writers_own()) == [1, 2, 3]  # 3: the spare, under a free name
            plant(4, range(201, 209))  # every name the spare of segment 4 draws is taken
            roll_once()  # segment 3 reuses the spare; segment 1's region finds no name: unlinked
            assert sorted(writers_own()) == [2, 3]
            roll_once()  # segment 4: a fresh region
            assert sorted(writers_own()) == [3, 4, 5]
            snap = log.snapshot()
            assert values(snap) == list(range(snap.start, writer.end)) and snap.start == 3 * segment
            for path, is_dir in planted.items():
                st = os.lstat(path)
                assert stat.S_ISDIR(st.st_mode) == is_dir and (is_dir or st.st_size == 0), path
        finally:  # before the log's unlink(), which would refuse the directories
            for path, is_dir in planted.items():
                with suppress(FileNotFoundError):
                    os.rmdir(path) if is_dir else os.unlink(path)


@pytest.mark.parametrize(
    "kind", ["directory", "fifo", "symlink", "short file", "file of wrong records", "huge sparse file"]
)
def test_a_reader_lapped_between_loading_a_segments_name_and_opening_it_never_shows_what_was_planted_there(
    log_name: Callable[[], str], monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """A reader loads a segment's token from its slot, then the writer laps it (the segment
    leaves the window, its name goes) and someone creates ``kind`` under the name before the
    reader opens it: the reader neither raises, blocks, maps it, nor shows it; it finds the
    segment reclaimed, as it is."""
    name = log_name()
    segment = 4
    writer, log = AtomicLog.new_claimed(retained=segment, segment=segment, dtype=np.int64, name=name)
    planted: list[str] = []
    real_open = _segment.open_readonly

    def lapped_once(name_: str, layout: Any, seq: int, token: int) -> Any:
        if not planted:
            path = "/dev/shm" + _shm.segment_path(name_, layout.nonce, seq, token)
            writer.extend(np.arange(writer.end, writer.end + 3 * segment))  # seq leaves the window
            assert not os.path.lexists(path)
            if kind == "directory":
                os.mkdir(path)
            elif kind == "fifo":
                os.mkfifo(path)
            elif kind == "symlink":
                os.symlink("/etc/passwd", path)
            elif kind == "huge sparse file":  # mapped whole, it would exhaust the address space
                with open(path, "xb") as f:
                    f.truncate(1 << 46)
            else:
                size = 8 if kind == "short file" else layout.segment_bytes
                with open(path, "xb") as f:
                    f.write(np.full(size // 8, -1, np.int64).tobytes())
            planted.append(path)
        return real_open(name_, layout, seq, token)

    with log, writer:
        try:
            writer.extend(np.arange(3 * segment))
            monkeypatch.setattr(_segment, "open_readonly", lapped_once)
            snap = check_snapshot(AtomicLog.attach(name))
            assert planted and len(snap) == 2 * segment and snap.start + len(snap) == writer.end
        finally:
            for path in planted:
                os.rmdir(path) if os.path.isdir(path) and not os.path.islink(path) else os.unlink(path)
