"""Every bad input gets a specific, typed exception with a clear message, and loses nothing.

"Loses nothing" is checked the same way everywhere: a fresh snapshot (records, chunk
sequences and lengths, len) is exactly what it was before the failing call, and the writer
still appends afterwards.
"""

from __future__ import annotations

import errno
import mmap
import os
import pickle
import secrets
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import posix_ipc
import pytest
from support import SHM, regions_of, segment_number

import atomic_log_shm
from atomic_log_shm import (
    AtomicLog,
    AtomicLogError,
    CorruptLogError,
    DtypeMismatchError,
    IndexOutOfRangeError,
    InvalidArgumentError,
    InvalidNameError,
    InvalidRecordError,
    LogClosedError,
    LogExistsError,
    LogNotFoundError,
    MissingDependencyError,
    NotALogError,
    NotPicklableError,
    OutOfSpaceError,
    UnsupportedDtypeError,
    VersionMismatchError,
    Writer,
    WriterClosedError,
    remove_log,
)
from atomic_log_shm._header import FIXED, SLOT, slot_count

TICK = np.dtype([("price", "<f8"), ("qty", "<i8")])
GOOD = {np.dtype(np.int64): 7, np.dtype(np.int8): 7, TICK: (1.5, 2)}

Names = Callable[[], str]


def state(log: AtomicLog) -> tuple[list[tuple[int, list[Any]]], int]:
    """Everything a fresh snapshot shows."""
    snap = log.snapshot()
    return [(c.sequence, c.values.tolist()) for c in snap.chunks()], len(snap)


def modes(name: str) -> set[int]:
    """The permissions of the regions holding log ``name``'s data: its header and segments."""
    data = [r for r in regions_of(name) if r == name or segment_number(name, r) is not None]
    return {os.stat(os.path.join(SHM, r)).st_mode & 0o7777 for r in data}


@contextmanager
def foreign_region(name: str, content: bytes) -> Iterator[None]:
    """A shared-memory region called ``name`` that this library did not make."""
    shm = posix_ipc.SharedMemory("/" + name, posix_ipc.O_CREX, mode=0o600, size=len(content))
    try:
        if content:
            with mmap.mmap(shm.fd, len(content)) as region:
                region[:] = content
        shm.close_fd()
        yield
    finally:
        posix_ipc.unlink_shared_memory("/" + name)


def region_bytes(name: str) -> bytes:
    with open(os.path.join(SHM, name), "rb") as f:
        return f.read()


@contextmanager
def writable_header(name: str) -> Iterator[mmap.mmap]:
    """The header region of log ``name``, mapped read-write, for damaging it on purpose."""
    shm = posix_ipc.SharedMemory("/" + name)
    try:
        with mmap.mmap(shm.fd, shm.size) as region:
            yield region
    finally:
        shm.close_fd()


def patch_field(name: str, field: str, value: int) -> None:
    dtype, offset = FIXED.fields[field][:2]
    with writable_header(name) as region:
        region[offset : offset + dtype.itemsize] = value.to_bytes(dtype.itemsize, "little")


@pytest.fixture
def claimed(log_name: Names) -> Iterator[Callable[..., tuple[Writer, AtomicLog]]]:
    """Makes claimed logs (retained 8, segments of 4 by default); closes them afterwards."""
    made: list[tuple[Writer, AtomicLog]] = []

    def make(dtype: Any = np.int64, retained: int = 8, segment: int = 4) -> tuple[Writer, AtomicLog]:
        pair = AtomicLog.new_claimed(retained=retained, segment=segment, dtype=dtype, name=log_name())
        made.append(pair)
        return pair

    yield make
    for writer, log in made:
        writer.close()
        log.close()


# -- the exception classes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "standard"),
    [
        (InvalidArgumentError, ValueError),
        (InvalidNameError, ValueError),
        (UnsupportedDtypeError, TypeError),
        (InvalidRecordError, ValueError),
        (DtypeMismatchError, TypeError),
        (LogNotFoundError, FileNotFoundError),
        (LogExistsError, FileExistsError),
        (OutOfSpaceError, OSError),
        (IndexOutOfRangeError, IndexError),
        (MissingDependencyError, ImportError),
        (NotPicklableError, TypeError),
    ],
)
def test_errors_are_also_the_standard_exception_that_fits(error: type, standard: type) -> None:
    assert issubclass(error, AtomicLogError)
    assert issubclass(error, standard)


def test_every_exported_error_is_an_atomic_log_error() -> None:
    errors = [getattr(atomic_log_shm, n) for n in atomic_log_shm.__all__ if n.endswith("Error")]
    assert WriterClosedError in errors and LogClosedError in errors
    assert all(issubclass(e, AtomicLogError) for e in errors)


# -- capacities, modes, dtypes, names ------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -1, -(2**70)])
@pytest.mark.parametrize("which", ["retained", "segment"])
def test_capacity_that_is_not_positive(log_name: Names, which: str, bad: int) -> None:
    capacities = {"retained": 8, "segment": 4, which: bad}
    name = log_name()
    with pytest.raises(InvalidArgumentError, match=f"{which} must be at least 1, got {bad}"):
        AtomicLog.new(
            retained=capacities["retained"], segment=capacities["segment"], dtype=np.int64, name=name
        )
    assert regions_of(name) == []


@pytest.mark.parametrize("bad", [4.0, "4", None, True, False, np.float64(4)])
@pytest.mark.parametrize("which", ["retained", "segment"])
def test_capacity_that_is_not_an_int(log_name: Names, which: str, bad: object) -> None:
    capacities = {"retained": 8, "segment": 4, which: bad}
    name = log_name()
    with pytest.raises(TypeError, match=f"{which} must be an int, not {type(bad).__name__}"):
        AtomicLog.new(
            retained=capacities["retained"], segment=capacities["segment"], dtype=np.int64, name=name
        )
    assert regions_of(name) == []


def test_capacities_are_keyword_only() -> None:
    # Two positional ints are easy to swap, and a swap would make a valid, wrong log.
    with pytest.raises(TypeError):
        AtomicLog.new(8, 4, dtype=np.int64)  # type: ignore[misc]
    with pytest.raises(TypeError):
        AtomicLog.new_claimed(8, 4, dtype=np.int64)  # type: ignore[misc]


def test_numpy_integer_capacities_are_ints() -> None:
    with AtomicLog.new(retained=np.int64(8), segment=np.uint8(4), dtype=np.int64) as log:
        assert (log.retained_capacity, log.segment_capacity) == (8, 4)
        assert type(log.retained_capacity) is int


def test_capacities_too_large_to_lay_out() -> None:
    with pytest.raises(InvalidArgumentError, match="too large"):
        AtomicLog.new(retained=8, segment=2**41, dtype=np.int8)
    with pytest.raises(InvalidArgumentError, match="more than 1048576 segments"):
        AtomicLog.new(retained=2**21, segment=1, dtype=np.int8)


def test_log_larger_than_shared_memory_is_out_of_space_and_leaves_nothing(log_name: Names) -> None:
    name = log_name()
    with pytest.raises(OutOfSpaceError, match=name) as info:
        AtomicLog.new(retained=2**39, segment=2**39, dtype=np.uint8, name=name)  # 512 GiB segments
    assert info.value.errno is not None
    assert regions_of(name) == []


def test_a_window_larger_than_memory_is_refused_before_anything_is_made(log_name: Names) -> None:
    """An 80 GB window (10**10 float64 records in segments of 10**6): its segments alone
    would fit the file system's limits one at a time, but the whole window cannot fit in
    /dev/shm or in memory, and filling it would end with the OOM killer."""
    name = log_name()
    expected = rf"{name}.*needs 80,0[0-9,]+ bytes, and (/dev/shm|the memory)"
    with pytest.raises(OutOfSpaceError, match=expected) as info:
        AtomicLog.new(retained=10**10, segment=10**6, dtype="f8", name=name)
    assert info.value.errno == errno.ENOSPC
    assert regions_of(name) == []


def test_a_window_is_measured_against_the_memory_available(
    log_name: Names, monkeypatch: pytest.MonkeyPatch
) -> None:
    from atomic_log_shm import _log

    monkeypatch.setattr(_log, "_memory_available", lambda: 10 * 2**20)  # 10 MiB left
    name = log_name()
    with pytest.raises(OutOfSpaceError, match="the memory available is 10,485,760"):
        AtomicLog.new(retained=2**20, segment=2**18, dtype="f8", name=name)  # 48 MiB with the spare
    assert regions_of(name) == []
    AtomicLog.new(retained=2**16, segment=2**14, dtype="f8", name=name).unlink()  # 3 MiB fits


def test_an_existing_log_is_continued_whatever_room_is_left(
    log_name: Names, monkeypatch: pytest.MonkeyPatch
) -> None:
    from atomic_log_shm import _log

    name = log_name()
    with AtomicLog.new(retained=2**16, segment=2**14, dtype="f8", name=name):
        monkeypatch.setattr(_log, "_memory_available", lambda: 0)  # as if this log took the last of it
        AtomicLog.new(retained=2**16, segment=2**14, dtype="f8", name=name, exist_ok=True).close()


def test_slot_count_is_exact_for_huge_capacities() -> None:
    # Making such a log needs a 1 TiB segment, so the layout function is checked directly.
    segment = 2**40 - 1
    retained = (2**20 - 2) * segment + 1  # one record more than 2**20 - 2 whole segments
    assert slot_count(retained, segment) == -(-retained // segment) + 1


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o660, 0o644, 0o666])
def test_regions_get_exactly_the_mode_asked_for(log_name: Names, mode: int) -> None:
    name = log_name()
    old_umask = os.umask(0o077)  # would strip group and other bits if the library relied on it
    try:
        writer, log = AtomicLog.new_claimed(retained=2, segment=1, dtype=np.int64, name=name, mode=mode)
    finally:
        os.umask(old_umask)
    with log:
        writer.extend(range(3))
        writer.close()
        with log.try_claim_writer() as successor:  # a new writer's segments get the same mode
            successor.extend(range(3))
            assert modes(name) == {mode}
        assert len(regions_of(name)) >= 4  # the header and the three retained segments at least
        assert modes(name) == {mode}


def test_default_mode_is_owner_only(log_name: Names) -> None:
    name = log_name()
    old_umask = os.umask(0)
    try:
        writer, log = AtomicLog.new_claimed(retained=2, segment=1, dtype=np.int64, name=name)
    finally:
        os.umask(old_umask)
    with log, writer:
        writer.extend(range(3))
        assert modes(name) == {0o600}


@pytest.mark.parametrize("mode", [0o700, 0o400, 0o200, 0o000, 0o777, 0o1600, 0o4600, -1])
def test_mode_out_of_range(log_name: Names, mode: int) -> None:
    name = log_name()
    with pytest.raises(InvalidArgumentError, match=f"mode {mode:#o}"):
        AtomicLog.new(retained=8, segment=4, dtype=np.int64, name=name, mode=mode)
    assert regions_of(name) == []


@pytest.mark.parametrize("mode", ["0o600", 384.0, None, True])
def test_mode_that_is_not_an_int(log_name: Names, mode: object) -> None:
    name = log_name()
    with pytest.raises(TypeError, match=f"mode must be an int.*not {type(mode).__name__}"):
        AtomicLog.new(retained=8, segment=4, dtype=np.int64, name=name, mode=mode)  # type: ignore[arg-type]
    assert regions_of(name) == []


@pytest.mark.parametrize(
    ("dtype", "why"),
    [
        (object, "objects"),
        ([("ts", "f8"), ("payload", "O")], "objects"),
        (np.dtype(("<i4", (3,))), "sub-array"),
        ("S0", "no size"),
        ("U0", "no size"),
        ("V0", "no size"),
        ([], "no size"),
        ([("empty", "<i4", (0,))], "no size"),
        ("not-a-dtype", "not a numpy dtype"),
    ],
    ids=repr,
)
def test_unsupported_dtype(log_name: Names, dtype: Any, why: str) -> None:
    name = log_name()
    with pytest.raises(UnsupportedDtypeError, match=why):
        AtomicLog.new(retained=8, segment=4, dtype=dtype, name=name)
    assert regions_of(name) == []


def test_sub_array_message_suggests_a_field_of_the_same_records() -> None:
    with pytest.raises(UnsupportedDtypeError) as info:
        AtomicLog.new(retained=8, segment=4, dtype=("<i4", (3,)))
    assert "[('values', '<i4', (3,))]" in str(info.value)


def test_dtype_with_overlapping_fields(log_name: Names) -> None:
    union = np.dtype({"names": ["a", "b"], "formats": ["<i4", "<i4"], "offsets": [0, 0]})
    name = log_name()
    with pytest.raises(UnsupportedDtypeError):
        AtomicLog.new(retained=8, segment=4, dtype=union, name=name)
    assert regions_of(name) == []


BAD_NAMES = [
    "",
    "a/b",
    "/leading-slash",
    "with@at",
    ".hidden",
    "-dash",
    "with space",
    "tab\t",
    "newline\n",
    "caf\u00e9",
    "x" * 201,
    5,
    b"bytes",
    ["list"],
]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_bad_name(name: Any) -> None:
    shown = repr(name)[:40] if isinstance(name, str) else type(name).__name__
    for call in (
        lambda: AtomicLog.new(retained=8, segment=4, dtype=np.int64, name=name),
        lambda: AtomicLog.new_claimed(retained=8, segment=4, dtype=np.int64, name=name),
        lambda: AtomicLog.attach(name),
        lambda: remove_log(name),
    ):
        with pytest.raises(InvalidNameError) as info:
            call()
        assert shown in str(info.value)


def test_attach_none_is_a_bad_name() -> None:
    with pytest.raises(InvalidNameError, match="not NoneType"):
        AtomicLog.attach(None)  # type: ignore[arg-type]


def test_longest_name_works_through_rollovers(log_name: Names) -> None:
    name = (log_name() + "-" + "x" * 200)[:200]
    try:
        writer, log = AtomicLog.new_claimed(retained=2, segment=1, dtype=np.int64, name=name)
        with log, writer:
            writer.extend(range(1000))  # segment numbers with four digits
            assert [int(v) for v in AtomicLog.attach(name).snapshot()] == [997, 998, 999]
    finally:
        assert regions_of(name) == []


# -- existence: made twice, not there, not a log, another version ------------------------------


def test_creating_a_log_that_exists(claimed: Callable[..., tuple[Writer, AtomicLog]]) -> None:
    writer, log = claimed()
    writer.extend([1, 2, 3, 4, 5])
    before = state(log)
    with pytest.raises(LogExistsError, match=log.name):
        AtomicLog.new(retained=2, segment=1, dtype=np.int8, name=log.name)
    with pytest.raises(LogExistsError, match=log.name):
        AtomicLog.new_claimed(retained=8, segment=4, dtype=np.int64, name=log.name)
    assert state(log) == before
    assert AtomicLog.attach(log.name).dtype == np.int64
    writer.append(6)
    assert state(log) == ([(0, [1, 2, 3, 4]), (1, [5, 6])], 6)


def test_creating_a_log_over_a_foreign_region_leaves_it_alone(log_name: Names) -> None:
    name = log_name()
    content = secrets.token_bytes(256)
    with foreign_region(name, content):
        with pytest.raises(LogExistsError, match=name):
            AtomicLog.new(retained=8, segment=4, dtype=np.int64, name=name)
        assert region_bytes(name) == content
        assert regions_of(name) == [name]


def test_attaching_to_a_log_that_does_not_exist(log_name: Names) -> None:
    name = log_name()
    with pytest.raises(LogNotFoundError, match=name):
        AtomicLog.attach(name)
    with pytest.raises(FileNotFoundError):
        AtomicLog.attach(name, dtype=np.int64)


def test_attaching_to_a_removed_log(log_name: Names) -> None:
    with AtomicLog.new(retained=8, segment=4, dtype=np.int64, name=log_name()) as log:
        name = log.name
    with pytest.raises(LogNotFoundError, match=name):
        AtomicLog.attach(name)


@pytest.mark.parametrize(
    "content",
    [bytes(4096), secrets.token_bytes(4096), secrets.token_bytes(16), b"ALOGSHM"],
    ids=["zeros", "random", "too-small", "almost-magic"],
)
def test_attaching_to_a_region_that_is_not_a_log(log_name: Names, content: bytes) -> None:
    name = log_name()
    with foreign_region(name, content):
        with pytest.raises(NotALogError, match=name):
            AtomicLog.attach(name)
        with pytest.raises(NotALogError, match=name):
            remove_log(name)
        assert region_bytes(name) == content  # not removed, not changed


@pytest.mark.parametrize("version", [1, 2, 4])  # 1: before positions had a start; 2: before the held region
def test_another_layout_version(claimed: Callable[..., tuple[Writer, AtomicLog]], version: int) -> None:
    writer, log = claimed()
    writer.extend([1, 2, 3])
    patch_field(log.name, "version", version)
    with pytest.raises(VersionMismatchError, match=rf"{log.name}.*version {version}.*version 3"):
        AtomicLog.attach(log.name)
    assert remove_log(log.name) >= 2  # another version's log can still be removed
    assert regions_of(log.name) == []


@pytest.mark.parametrize(
    ("field", "value"),
    [("retained_capacity", 0), ("segment_capacity", -4), ("slot_count", 99), ("dtype_size", 0)],
)
def test_damaged_header(claimed: Callable[..., tuple[Writer, AtomicLog]], field: str, value: int) -> None:
    writer, log = claimed()
    writer.extend([1, 2, 3])
    before = state(log)
    patch_field(log.name, field, value & (2**64 - 1))
    with pytest.raises(CorruptLogError, match=log.name):
        AtomicLog.attach(log.name)
    assert state(log) == before  # a handle made before the damage read its layout then


def test_damaged_dtype_description(claimed: Callable[..., tuple[Writer, AtomicLog]]) -> None:
    _, log = claimed()
    description = FIXED.itemsize + SLOT.itemsize * slot_count(log.retained_capacity, log.segment_capacity)
    with writable_header(log.name) as region:
        region[description : description + 6] = b"\xff(\x00[]{"
    with pytest.raises(CorruptLogError, match=f"{log.name}.*dtype"):
        AtomicLog.attach(log.name)


def test_attaching_with_another_dtype(claimed: Callable[..., tuple[Writer, AtomicLog]]) -> None:
    _, log = claimed(TICK)
    with pytest.raises(DtypeMismatchError, match=rf"{log.name}.*price.*not int64"):
        AtomicLog.attach(log.name, dtype=np.int64)
    with pytest.raises(DtypeMismatchError):
        AtomicLog.attach(log.name, dtype=[("price", ">f8"), ("qty", "<i8")])  # byte order counts
    with pytest.raises(UnsupportedDtypeError):
        AtomicLog.attach(log.name, dtype=object)
    assert AtomicLog.attach(log.name, dtype=[("price", "f8"), ("qty", "i8")]).dtype == TICK


def test_remove_log_of_a_missing_name(log_name: Names) -> None:
    name = log_name()
    with pytest.raises(LogNotFoundError, match=name):
        remove_log(name)


# -- records that do not fit ------------------------------------------------------------------

BAD_RECORDS = [
    (np.int64, "seven"),
    (np.int64, 2**70),
    (np.int64, -(2**63) - 1),
    (np.int64, None),
    (np.int64, float("nan")),
    (np.int64, 1j),
    (np.int64, (1, 2)),
    (np.int8, 300),
    (np.int8, -129),
    (np.int8, np.int64(300)),
    (TICK, (1.5,)),
    (TICK, (1.5, 2, 3)),
    (TICK, ("x", 2)),
    (TICK, (1.5, 2**70)),
    (TICK, None),
]


# (sequence, length) of the chunks after `filled` records and three more (3 segments of 4 kept)
AFTER_THREE_MORE = {0: [(0, 3)], 2: [(0, 4), (1, 1)], 4: [(0, 4), (1, 3)], 12: [(1, 4), (2, 4), (3, 3)]}


@pytest.mark.parametrize("filled", sorted(AFTER_THREE_MORE), ids=lambda n: f"{n}-written")
@pytest.mark.parametrize(("dtype", "bad"), BAD_RECORDS, ids=repr)
def test_a_record_that_does_not_fit_changes_nothing(
    claimed: Callable[..., tuple[Writer, AtomicLog]], dtype: Any, bad: Any, filled: int
) -> None:
    """With 4 or 12 written the head is full: the failing append is the one that would roll."""
    writer, log = claimed(dtype)
    good = GOOD[np.dtype(dtype)]
    writer.extend([good] * filled)
    before = state(log)
    shown = repr(bad)

    with pytest.raises(InvalidRecordError) as info:
        writer.append(bad)
    assert shown in str(info.value)
    assert state(log) == before

    for batch in ([bad], [good, bad], [good] * 9 + [bad], [bad] + [good] * 9):
        with pytest.raises(InvalidRecordError) as info:
            writer.extend(batch)
        if len(batch) < 3:
            assert shown in str(info.value)
        with pytest.raises(InvalidRecordError):
            writer.extend(np.array(batch, dtype=object))
        assert state(log) == before

    writer.append(good)  # the writer goes on as if nothing had happened
    writer.extend([good, good])
    chunks = AFTER_THREE_MORE[filled]
    assert state(log) == ([(seq, [good] * n) for seq, n in chunks], sum(n for _, n in chunks))


def test_extend_needs_a_sequence(claimed: Callable[..., tuple[Writer, AtomicLog]]) -> None:
    writer, log = claimed()
    writer.extend([1, 2, 3, 4])
    before = state(log)
    for scalar in (5, np.int64(5), np.array(5)):
        with pytest.raises(TypeError, match="use append"):
            writer.extend(scalar)
    assert state(log) == before


def test_extend_takes_one_dimension(claimed: Callable[..., tuple[Writer, AtomicLog]]) -> None:
    writer, log = claimed()
    writer.extend([1, 2, 3, 4])
    before = state(log)
    for rows in (np.zeros((2, 2), np.int64), [[1, 2], [3, 4]], np.zeros((1, 3, 1), np.int64)):
        with pytest.raises(InvalidRecordError, match=r"1-d .*shape \("):
            writer.extend(rows)
    assert state(log) == before
    writer.extend(np.zeros((2, 2), np.int64).ravel())
    assert len(log.snapshot()) == 8


def test_an_array_whose_values_do_not_fit(claimed: Callable[..., tuple[Writer, AtomicLog]]) -> None:
    writer, log = claimed(np.int8)
    with pytest.raises(InvalidRecordError, match="300"):
        writer.extend(np.array([1, 300], dtype=np.int64))
    assert state(log) == ([], 0)


def test_a_bad_value_deep_in_a_batch_is_named(claimed: Callable[..., tuple[Writer, AtomicLog]]) -> None:
    writer, log = claimed()
    with pytest.raises(InvalidRecordError) as info:
        writer.extend([*range(50), 2**70])
    assert log.name in str(info.value) or str(2**70) in str(info.value)


# -- closed writers, closed handles, unlinked logs ---------------------------------------------


def test_a_closed_writer_refuses_and_changes_nothing(
    claimed: Callable[..., tuple[Writer, AtomicLog]],
) -> None:
    writer, log = claimed()
    writer.extend([1, 2, 3, 4])  # the head is full: append would take the rollover path
    before = state(log)
    writer.close()
    writer.close()  # idempotent
    for call in (lambda: writer.append(5), lambda: writer.extend([5]), lambda: writer.extend([])):
        with pytest.raises(WriterClosedError, match=rf"{log.name}.*try_claim_writer"):
            call()
    assert state(log) == before
    with log.try_claim_writer() as successor:
        successor.append(5)
    with pytest.raises(WriterClosedError):
        writer.append(6)
    assert state(log) == ([(0, [1, 2, 3, 4]), (1, [5])], 5)


def test_a_second_writer_is_refused_while_one_is_open(
    claimed: Callable[..., tuple[Writer, AtomicLog]],
) -> None:
    writer, log = claimed()
    assert log.try_claim_writer() is None
    assert AtomicLog.attach(log.name).try_claim_writer() is None
    writer.append(1)
    assert state(log) == ([(0, [1])], 1)


def test_a_closed_handle(claimed: Callable[..., tuple[Writer, AtomicLog]]) -> None:
    writer, log = claimed()
    writer.extend(range(6))
    snap = log.snapshot()
    chunks = list(snap.chunks())
    log.close()
    log.close()  # idempotent
    assert log.closed and "closed" in repr(log)
    for call in (log.snapshot, snap.refresh, log.try_claim_writer):
        with pytest.raises(LogClosedError, match=log.name):
            call()
    assert [int(v) for v in snap] == list(range(6))  # taken before close(): still readable
    assert [(c.sequence, c.values.tolist()) for c in chunks] == [(0, [0, 1, 2, 3]), (1, [4, 5])]
    assert len(snap) == 6
    writer.append(6)  # the writer holds its own claim: the log goes on for others
    assert [int(v) for v in AtomicLog.attach(log.name).snapshot()] == list(range(7))


def test_a_writer_of_an_unlinked_log_stops_at_its_next_rollover(
    claimed: Callable[..., tuple[Writer, AtomicLog]],
) -> None:
    writer, log = claimed()
    writer.extend([1, 2])
    snap = log.snapshot()
    log.unlink()
    assert regions_of(log.name) == []
    writer.extend([3, 4])  # fits in the head segment, which this process still maps
    with pytest.raises(LogNotFoundError, match=log.name):
        writer.append(5)
    assert writer.closed
    with pytest.raises(WriterClosedError):
        writer.append(5)
    assert regions_of(log.name) == []  # no segment was made for the unlinked log
    with pytest.raises(LogNotFoundError, match=log.name):
        snap.refresh()  # the unlink marked the log gone (tests/test_gone.py)
    assert [(c.sequence, c.values.tolist()) for c in snap.chunks()] == [(0, [1, 2])]  # the view before


def test_a_snapshot_of_an_unlinked_log_says_so(claimed: Callable[..., tuple[Writer, AtomicLog]]) -> None:
    writer, log = claimed()
    writer.extend([1, 2])
    log.unlink()
    with pytest.raises(LogNotFoundError, match=f"{log.name}.*unlinked"):
        log.snapshot()


# -- no internal exception behind a public one; views that refuse politely ----------------------


def test_a_writer_of_a_removed_log_shows_no_internal_error(
    claimed: Callable[..., tuple[Writer, AtomicLog]],
) -> None:
    writer, log = claimed(retained=4, segment=2)
    log.unlink()
    with pytest.raises(LogNotFoundError, match=f"{log.name}.*unlinked") as raised:
        for v in range(10):  # a rollover comes within 3 appends
            writer.append(v)
    shown = raised.value.__cause__ or (
        None if raised.value.__suppress_context__ else raised.value.__context__
    )
    assert shown is None, f"{type(shown).__name__} shown under the LogNotFoundError"


def test_an_extend_across_a_removed_log_shows_no_internal_error(
    claimed: Callable[..., tuple[Writer, AtomicLog]],
) -> None:
    writer, log = claimed(retained=4, segment=2)
    log.unlink()
    with pytest.raises(LogNotFoundError) as raised:
        writer.extend(range(10))
    assert raised.value.__cause__ is None and not isinstance(raised.value.__context__, IndexError)


def test_views_refuse_pickling_with_a_typed_error(claimed: Callable[..., tuple[Writer, AtomicLog]]) -> None:
    _, log = claimed()
    for view, what in ((log.snapshot(), "Snapshot"), (log.cursor(), "Cursor")):
        with pytest.raises(NotPicklableError, match=f"a {what} cannot be pickled: send the log"):
            pickle.dumps(view)


def test_snapshot_index_and_since_errors_are_typed(claimed: Callable[..., tuple[Writer, AtomicLog]]) -> None:
    writer, log = claimed(np.dtype([("t", "<f8"), ("pos", "<f4", (3,))]))
    writer.append((1.0, (0.0, 1.0, 2.0)))
    snap = log.snapshot()
    with pytest.raises(IndexOutOfRangeError, match=f"index 1 is out of range: the snapshot of '{log.name}'"):
        snap[1]
    with pytest.raises(InvalidArgumentError, match="indexed by an int or a slice, not str"):
        snap["t"]  # type: ignore[call-overload]
    with pytest.raises(InvalidArgumentError, match=f"field 'pos' of log '{log.name}' is"):
        snap.since("pos", 0)
    with pytest.raises(InvalidArgumentError, match="no field 'x'; its fields are t, pos"):
        snap.since("x", 0)


def test_to_pandas_without_pandas_names_the_extra(
    claimed: Callable[..., tuple[Writer, AtomicLog]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, log = claimed()
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if not installed
    with pytest.raises(MissingDependencyError, match=r"pip install 'atomic-log-shm\[pandas\]'") as raised:
        log.snapshot().to_pandas()
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    with pytest.raises(ImportError):
        log.cursor().poll().to_pandas()
