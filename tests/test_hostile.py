"""Hostile conditions: a damaged header, a full /dev/shm, long runs, permissions, cleanup.

docs/reliability.md (from "A hostile or damaged header" to "Cleanup") states each guarantee,
what is out of scope, and the figures of the last run.

1. A damaged header region is fuzzed in forked children: the child overwrites the header
   (after taking a snapshot through it, and before attaching anew), then reads through the
   public API; the parent checks how the child ended, so a segfault, SIGBUS or hang is one
   failed case rather than a dead test run. Reading must give a consistent view or raise
   an AtomicLogError.
2. /dev/shm running out of room is played in a private tmpfs of a few pages, mounted in a
   mount namespace of a child (``unshare --mount``): nothing the host sees is touched.
3. Readers and writers following 10,000+ rollovers hold a bounded number of mappings and
   file descriptors (read from /proc/self/maps and /proc/self/fd).
4. Permissions of regions, read-only mappings of readers, name validation.
5. Cleanup of a log, including segments orphaned by a crashed writer.

Not tested, on purpose: truncating a region after a process mapped it. Loads from the lost
pages raise SIGBUS in every process that mapped it; only a process with write access to
the region (its writer's user) can do that, and such a process can damage the log anyway.
"""

from __future__ import annotations

import errno
import faulthandler
import json
import mmap
import os
import resource
import secrets
import select
import signal
import stat
import subprocess
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np
import posix_ipc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import SHM, mappings_and_fds, mappings_of, regions_of, segment_number, segments_of, values

from atomic_log_shm import (
    AtomicLog,
    AtomicLogError,
    InvalidArgumentError,
    InvalidNameError,
    LogNotFoundError,
    Snapshot,
    remove_log,
)
from atomic_log_shm._header import FIXED, MAX_DTYPE_SIZE, SLOT, header_size

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
CASE_SECONDS = 10  # a fuzz case that takes longer is a hang (SIGALRM ends the child)
FUZZ_EXAMPLES = int(os.environ.get("HOSTILE_FUZZ_EXAMPLES", "1500"))
PAGE = mmap.PAGESIZE

outcomes: Counter[str] = Counter()  # how fuzzed reads ended, over the whole module run


def report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    """Print a figure of this run past pytest's capture (quoted in the reliability doc)."""
    with capsys.disabled():
        print(f"\n[hostile] {line}")


def segment_entries(name: str) -> list[str]:
    """The /dev/shm entries of the segments of logs called ``name``, any nonce."""
    return [entry for _, entry in segments_of(name)]


def overwrite_header(name: str, content: bytes) -> None:
    """Replace log ``name``'s header region by ``content``, resizing it, through a read-write map."""
    shm = posix_ipc.SharedMemory("/" + name)
    try:
        os.ftruncate(shm.fd, len(content))
        if content:
            with mmap.mmap(shm.fd, len(content)) as region:
                region[:] = content
    finally:
        shm.close_fd()


def read_header(name: str) -> bytes:
    shm = posix_ipc.SharedMemory("/" + name, read_only=True)
    try:
        return os.pread(shm.fd, shm.size, 0)
    finally:
        shm.close_fd()



# ---------------------------------------------------------------------------------------
# Children: forked, bounded in time, and their death by a signal reported as such


def wait_child(pid: int, read_end: int, seconds: float) -> tuple[int, str]:
    """The exit code (negative: killed by that signal) and report of a forked child."""
    deadline = time.monotonic() + seconds
    chunks = []
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([read_end], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise AssertionError(f"the child hung for {seconds} s (killed)")
            data = os.read(read_end, 1 << 16)
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(read_end)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode(errors="replace")


def in_child(fn: Callable[[], str], seconds: float = CASE_SECONDS) -> tuple[int, str]:
    """Run ``fn`` in a forked child that SIGALRM ends after ``seconds``; its exit code
    (0 if ``fn`` returned, 1 if it raised, negative if a signal killed it) and report
    (what ``fn`` returned, or the traceback)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code, text = 1, ""
        try:
            os.close(read_end)
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.alarm(int(seconds))
            text, code = fn(), 0
        except BaseException:
            text = traceback.format_exc()
        finally:
            try:
                os.write(write_end, text.encode())
            finally:
                os._exit(code)
    os.close(write_end)
    return wait_child(pid, read_end, seconds * 3)


# ---------------------------------------------------------------------------------------
# 1. A hostile or damaged header
#
# The log fuzzed: 22 int64 records in segments of 4, three slots. Segments 0-4 are full,
# the head, 5, holds two records; 3, 4 and 5 are retained. Record i is stored as i + 1.

RETAINED, SEGMENT, WRITTEN = 8, 4, 22
SLOTS, HEAD = 3, 5
DESCR_AT = FIXED.itemsize + SLOT.itemsize * SLOTS  # where the dtype description starts
SMALLEST_HEADER = header_size(2, 1)  # no header of fewer bytes can pass validation


def written_bytes(seq: int) -> bytes:
    """The records the writer stored in segment ``seq``, as bytes.

    A forged count can show more of a segment than this; what such a view shows past the
    records written is whatever the region holds there, and is not checked.
    """
    first = seq * SEGMENT
    return (np.arange(first, min(first + SEGMENT, WRITTEN), dtype=np.int64) + 1).tobytes()


def make_fuzz_log(name: str) -> bytes:
    """Make the fuzzed log (its writer closed) and return its header as written."""
    writer, log = AtomicLog.new_claimed(retained=RETAINED, segment=SEGMENT, dtype=np.int64, name=name)
    with writer:
        writer.extend(np.arange(WRITTEN) + 1)
        assert [c.sequence for c in log.snapshot().chunks()] == [3, 4, 5]
    log.close()  # the log stays: the log_name fixture removes it
    return read_header(name)


def check_view(snap: Snapshot) -> None:
    """A consistent view: consecutive segments, positions that only grow and never overlap,
    the records shown are the ones written to each segment (a prefix of it: since segments
    may end short after a skip, a count damaged lower is not detectable), and iteration
    agrees with the chunks."""
    chunks = list(snap.chunks())
    seqs = [c.sequence for c in chunks]
    assert seqs == sorted(set(seqs)), seqs  # empty segments are skipped, so gaps may appear
    assert all(0 <= seq <= HEAD for seq in seqs), f"segments {seqs} were never made"
    capacity = snap.log.segment_capacity
    reached = 0
    for chunk in chunks:
        assert 0 < len(chunk.values) <= capacity, (chunk.sequence, len(chunk.values))
        assert chunk.start >= reached, f"segment {chunk.sequence} overlaps the one before"
        reached = chunk.start + len(chunk.values)
        assert not chunk.values.flags.writeable
        shown, written = chunk.values.tobytes(), written_bytes(chunk.sequence)
        n = min(len(shown), len(written))
        assert shown[:n] == written[:n], f"segment {chunk.sequence} shows other records than written"
    assert len(snap) == sum(len(c.values) for c in chunks)
    records = [np.asarray(r).tobytes() for r in snap]
    assert records == [np.asarray(r).tobytes() for c in chunks for r in c.values]
    assert snap.to_numpy().tobytes() == b"".join(c.values.tobytes() for c in chunks)


def outcome(read: Callable[[], None]) -> str:
    """'view' if ``read`` saw a consistent view, else the AtomicLogError it raised.
    Any other exception propagates: the case fails."""
    try:
        read()
    except AtomicLogError as exc:
        return type(exc).__name__
    return "view"


def read_fresh(name: str) -> None:
    log = AtomicLog.attach(name)
    snap = log.snapshot()
    check_view(snap)
    snap.refresh()
    check_view(snap)
    cursor, polled = log.cursor("oldest"), []
    while cursor.position < snap.end:  # a poll stops at a gap; the next one goes on
        polled += cursor.poll().arrays
    assert b"".join(a.tobytes() for a in polled) == snap.to_numpy().tobytes()
    log.close()


def read_damaged(name: str, written: bytes, damaged: bytes) -> str:
    """In a child: damage the header under a held snapshot, then read it every way."""
    held = snap = None
    if len(damaged) >= len(written):  # shrinking a mapped region is SIGBUS: out of scope
        held = AtomicLog.attach(name)
        snap = held.snapshot()
        check_view(snap)
    overwrite_header(name, damaged)
    seen = []
    if held is not None and snap is not None:
        seen.append(outcome(lambda: (snap.refresh(), check_view(snap))))  # type: ignore[func-returns-value]
        seen.append(outcome(lambda: check_view(held.snapshot())))
    seen.append(outcome(lambda: read_fresh(name)))
    return ",".join(seen)


def run_case(name: str, written: bytes, ops: list[tuple[Any, ...]]) -> None:
    damaged = damage(written, ops)
    try:
        code, text = in_child(lambda: read_damaged(name, written, damaged))
    finally:
        overwrite_header(name, written)
    what = f"header damaged by {ops!r:.500}"
    if code < 0:
        raise AssertionError(f"{what}: the reader was killed by {signal.Signals(-code).name}")
    assert code == 0, f"{what}: {text}"
    outcomes.update(text.split(","))
    outcomes["cases"] += 1


# Damage is a list of operations on the header bytes, applied in order.


def field(name: str, value: int) -> tuple[Any, ...]:
    """Store ``value`` (two's complement, truncated) in a field of the fixed part."""
    dt, at = FIXED.fields[name][:2]  # type: ignore[index]
    return ("int", at, dt.itemsize, value)


def bump(name: str, delta: int) -> tuple[Any, ...]:
    dt, at = FIXED.fields[name][:2]  # type: ignore[index]
    return ("add", at, dt.itemsize, delta)


def slot(index: int, part: str, value: int) -> tuple[Any, ...]:
    return ("int", FIXED.itemsize + SLOT.itemsize * index + SLOT.fields[part][1], 8, value)  # type: ignore[index]


def raw(at: int, data: bytes) -> tuple[Any, ...]:
    return ("bytes", at, data)


def describe(text: bytes | str, declared: int | None = None) -> tuple[Any, ...]:
    """Replace the dtype description by ``text``, the region resized and its size fields set
    to match (so validation reaches the parse), or ``declared`` stored as its length."""
    return ("descr", text.encode() if isinstance(text, str) else text, declared)


def resize(size: int) -> tuple[Any, ...]:
    """Truncate or zero-extend the region to ``size`` bytes (negative: that many fewer)."""
    return ("resize", size)


def grow(size: int) -> tuple[Any, ...]:
    """Zero-extend the region by ``size`` bytes."""
    return ("grow", size)


def damage(header: bytes, ops: list[tuple[Any, ...]]) -> bytes:
    buf = bytearray(header)

    def put(at: int, data: bytes) -> None:
        n = max(0, min(len(data), len(buf) - at))
        buf[at : at + n] = data[:n]

    def store(at: int, size: int, value: int) -> None:
        put(at, (value % (1 << 8 * size)).to_bytes(size, "little"))

    for kind, *args in ops:
        if kind == "int":
            store(*args)
        elif kind == "add":
            at, size, delta = args
            store(at, size, int.from_bytes(bytes(buf[at : at + size]), "little", signed=size == 8) + delta)
        elif kind == "bytes":
            put(*args)
        elif kind == "descr":
            text, declared = args
            size = header_size(SLOTS, len(text))
            buf[DESCR_AT:] = text + bytes(size - DESCR_AT - len(text))
            buf[:] = buf.ljust(size, b"\0")
            store(*field("dtype_size", len(text) if declared is None else declared)[1:])
            store(*field("header_size", size)[1:])
        elif kind == "resize":
            (size,) = args
            size = max(0, size if size >= 0 else len(header) + size)
            buf[:] = buf[:size].ljust(size, b"\0")
        elif kind == "grow":
            buf.extend(bytes(args[0]))
    if len(buf) >= SMALLEST_HEADER and len(buf) % 8:
        # A region whose size is not a multiple of 8 is BUG 1, tested on its own below:
        # keep the fuzz from finding it again and again.
        buf.extend(bytes(-len(buf) % 8))
    return bytes(buf)


NESTINGS: dict[str, Callable[[int], str]] = {
    "brackets": lambda d: "[" * d + "]" * d,
    "parens": lambda d: "(" * d + "1" + ")" * d,
    "braces": lambda d: "{" * d + "}" * d,
    "minus": lambda d: "-" * d + "1",
    "plus": lambda d: "1" + "+1" * d,
    "not": lambda d: "not " * d + "1",
    "invert": lambda d: "~" * d + "1",
    "subscript": lambda d: "x" + "[0]" * d,
    "attribute": lambda d: "x" + ".x" * d,
    "lambda": lambda d: "lambda:" * d + "1",
    "fields": lambda d: "[('a', " * d + "'<i8'" + ")]" * d,
    "sub-arrays": lambda d: "(" * d + "'<i8'" + ", (1,))" * d,
}

OTHER_DESCRIPTIONS = [
    "'<f8'",
    "'<i4'",
    "'|O'",
    "[('a', '|O')]",
    "'|V8'",
    "'|S8'",
    "'<U2'",
    "'<M8[ns]'",
    "('<i8', (2,))",
    "[('a', '<i4'), ('b', '<i4')]",
    "[('x', '<i8', (1073741824,))]",
    "[('x', '<i8', (-1,))]",
    "'<V1099511627776'",
    "{'names': ['a']}",
    "None",
    "1e999",
    "''",
    "[]",
    "__import__('os')._exit(99)",  # must never run: a parse, never an evaluation
]

NAMED_DAMAGE: dict[str, list[tuple[Any, ...]]] = {
    "magic off by one bit": [raw(7, b"\x01")],
    "magic zeroed": [raw(0, bytes(8))],
    "version ahead": [bump("version", 1)],
    "version zero": [field("version", 0)],
    "version all ones": [field("version", -1)],
    "header_size +8": [bump("header_size", 8)],
    "header_size -8": [bump("header_size", -8)],
    "header_size zero": [field("header_size", 0)],
    "slot_count +1": [bump("slot_count", 1)],
    "slot_count -1": [bump("slot_count", -1)],
    "slot_count zero": [field("slot_count", 0)],
    "slot_count negative": [field("slot_count", -3)],
    "slot_count 2**40": [field("slot_count", 1 << 40)],
    "retained zero": [field("retained_capacity", 0)],
    "retained negative": [field("retained_capacity", -8)],
    "retained 2**63-1": [field("retained_capacity", (1 << 63) - 1)],
    "retained for 2 slots": [field("retained_capacity", 4)],
    "retained for 4 slots": [field("retained_capacity", 12)],
    "segment_capacity zero": [field("segment_capacity", 0)],
    "segment_capacity negative": [field("segment_capacity", -4)],
    "segment_capacity 2**62": [field("segment_capacity", 1 << 62)],
    "segment_capacity for 2 slots": [field("segment_capacity", 8)],
    "capacities halved consistently": [field("retained_capacity", 4), field("segment_capacity", 2)],
    "capacities doubled consistently": [field("retained_capacity", 16), field("segment_capacity", 8)],
    "itemsize 4": [field("itemsize", 4)],
    "itemsize 16": [field("itemsize", 16)],
    "itemsize zero": [field("itemsize", 0)],
    "itemsize negative": [field("itemsize", -8)],
    "itemsize 2**40": [field("itemsize", 1 << 40)],
    "dtype_size zero": [field("dtype_size", 0)],
    "dtype_size negative": [field("dtype_size", -1)],
    "dtype_size +1": [bump("dtype_size", 1)],
    "dtype_size -1": [bump("dtype_size", -1)],
    "dtype_size 2**62": [field("dtype_size", 1 << 62)],
    "dtype_size past the limit": [field("dtype_size", MAX_DTYPE_SIZE + 1)],
    "head -1": [field("head", -1)],
    "head -2**63": [field("head", -(1 << 63))],
    "head 2**62": [field("head", 1 << 62)],
    "head 2**63-1": [field("head", (1 << 63) - 1)],
    "head ahead by 1": [bump("head", 1)],
    "head ahead by 2": [bump("head", 2)],
    "head ahead by slot_count": [bump("head", SLOTS)],
    "head ahead by 1000": [bump("head", 1000)],
    "head behind by 1": [bump("head", -1)],
    "head behind by 2": [bump("head", -2)],
    "head behind the window": [bump("head", -3)],
    "head zero": [field("head", 0)],
    "head ahead, its slot forged": [bump("head", 1), slot(0, "epoch", HEAD + 1), slot(0, "count", 1)],
    "head far ahead, its slot forged": [field("head", 3 << 40), slot(0, "epoch", 3 << 40)],
    "head behind, its slot forged": [field("head", 2), slot(2, "epoch", 2), slot(2, "count", 4)],
    "head count beyond capacity": [slot(HEAD % SLOTS, "count", SEGMENT + 1)],
    "head count negative": [slot(HEAD % SLOTS, "count", -1)],
    "head count 2**63-1": [slot(HEAD % SLOTS, "count", (1 << 63) - 1)],
    "head count zero": [slot(HEAD % SLOTS, "count", 0)],
    "head count full": [slot(HEAD % SLOTS, "count", SEGMENT)],
    "older count not full": [slot(4 % SLOTS, "count", 3)],
    "older count beyond capacity": [slot(4 % SLOTS, "count", SEGMENT + 1)],
    "older count negative": [slot(3 % SLOTS, "count", -5)],
    "older start overlapping the one before": [slot(4 % SLOTS, "start", 4 * SEGMENT - 1)],
    "head start negative": [slot(HEAD % SLOTS, "start", -1)],
    "head start 2**63-1": [slot(HEAD % SLOTS, "start", (1 << 63) - 1)],
    "head epoch retired": [slot(HEAD % SLOTS, "epoch", -1)],
    "head epoch from the future": [slot(HEAD % SLOTS, "epoch", HEAD + SLOTS)],
    "head epoch from the past": [slot(HEAD % SLOTS, "epoch", HEAD - SLOTS)],
    "head epoch 2**63-1": [slot(HEAD % SLOTS, "epoch", (1 << 63) - 1)],
    "oldest epoch retired": [slot(3 % SLOTS, "epoch", -1)],
    "oldest epoch wrong": [slot(3 % SLOTS, "epoch", 6)],
    "every epoch retired": [slot(i, "epoch", -1) for i in range(SLOTS)],
    "epochs rotated": [slot(0, "epoch", 4), slot(1, "epoch", 5), slot(2, "epoch", 3)],
    "nonce changed": [bump("nonce", 1)],
    "writer_pid and created_ns garbage": [field("writer_pid", -7), field("created_ns", -1)],
    "reserved words set": [raw(FIXED.fields["reserved"][1], b"\xff" * 40)],  # type: ignore[index]
    "description random bytes": [describe(bytes(range(256)) * 2)],
    "description invalid utf-8": [describe(b"'\xff\xfe<i8'")],
    "description with a NUL": [describe(b"'<i8'\x00")],
    "description empty": [describe(b"")],
    "description 64 KiB of garbage": [describe(b"\x80'[(" * (MAX_DTYPE_SIZE // 4))],
    "description 64 KiB + 1": [describe(b"'" * (MAX_DTYPE_SIZE + 1))],
    "description length 2**31": [describe("'<i8'", 1 << 31)],
    "description length 2**62": [describe("'<i8'", 1 << 62)],
    "description length -1": [describe("'<i8'", -1)],
    "description of 4-byte ints, itemsize 4": [describe("'<i4'"), field("itemsize", 4)],
    "description of objects, itemsize 8": [describe("'|O'"), field("itemsize", 8)],
    "description of a sub-array, itemsize 16": [describe("('<i8', (2,))"), field("itemsize", 16)],
    "description of 8 GiB records": [describe("[('x', '<i8', (1073741824,))]"), field("itemsize", 1 << 33)],
    **{f"description {text}": [describe(text)] for text in OTHER_DESCRIPTIONS},
    **{
        f"description nested {kind} x{depth}": [describe(nest(depth))]
        for kind, nest in NESTINGS.items()
        for depth in (50, 30000)
    },
    **{f"truncated to {size}": [resize(size)] for size in (0, 1, 7, 8, 64, 127, 128, 129, 136, 160, 168)},
    "truncated into the slots": [resize(DESCR_AT - 8)],
    "truncated to the description": [resize(DESCR_AT)],
    "truncated by 8": [resize(-8)],
    "grown by 8": [grow(8)],
    "grown by a page": [grow(PAGE)],
    "grown by a MiB": [grow(1 << 20)],
    "all zeros": [raw(0, bytes(1 << 12))],
    "all ones": [raw(0, b"\xff" * (1 << 12))],
}


@pytest.fixture
def fuzz_log(log_name: Callable[[], str]) -> tuple[str, bytes]:
    name = log_name()
    return name, make_fuzz_log(name)


@pytest.mark.parametrize("case", list(NAMED_DAMAGE))
def test_reader_of_a_damaged_header_sees_a_consistent_view_or_an_atomic_log_error(
    case: str, fuzz_log: tuple[str, bytes]
) -> None:
    run_case(*fuzz_log, NAMED_DAMAGE[case])


EDGE_INTS = [-(1 << 63), -(1 << 62), -2, -1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 184]
EDGE_INTS += [1 << 16, (1 << 16) + 1, (1 << 31) - 1, 1 << 31, (1 << 32) - 1, 1 << 32, 1 << 40]
EDGE_INTS += [1 << 62, (1 << 63) - 1]
ints = st.one_of(st.sampled_from(EDGE_INTS), st.integers(-(1 << 63), (1 << 64) - 1))
int_fields = [n for n in FIXED.names if n not in ("magic", "reserved")]  # type: ignore[union-attr]
descriptions = st.one_of(
    st.binary(max_size=300),
    st.sampled_from(OTHER_DESCRIPTIONS),
    st.builds(
        lambda nest, depth: nest(depth), st.sampled_from(list(NESTINGS.values())), st.integers(1, 40_000)
    ),
)
damages = st.lists(
    st.one_of(
        st.builds(field, st.sampled_from(int_fields), ints),
        st.builds(bump, st.sampled_from(["head", "slot_count", "header_size", "dtype_size"]), ints),
        st.builds(slot, st.integers(0, SLOTS), st.sampled_from(["epoch", "count"]), ints),
        st.builds(slot, st.integers(0, SLOTS - 1), st.sampled_from(["epoch", "count"]), st.integers(-2, 9)),
        st.builds(raw, st.integers(0, 200), st.binary(min_size=1, max_size=64)),
        st.builds(raw, st.just(0), st.binary(min_size=8, max_size=8)),
        st.builds(describe, descriptions, st.one_of(st.none(), ints)),
        st.builds(resize, st.integers(-64, 400)),
        st.builds(grow, st.sampled_from([8, PAGE])),
    ),
    min_size=1,
    max_size=4,
)


def test_fuzzed_header_damage_gives_a_consistent_view_or_an_atomic_log_error(
    fuzz_log: tuple[str, bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    name, written = fuzz_log
    start = time.monotonic()

    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(ops=damages)
    def fuzz(ops: list[tuple[Any, ...]]) -> None:
        run_case(name, written, ops)

    before = outcomes["cases"]
    fuzz()
    report(
        capsys,
        f"fuzz: {outcomes['cases'] - before} hypothesis cases in {time.monotonic() - start:.1f} s; "
        f"{outcomes['cases']} damaged headers in all this run, reads ended: "
        + ", ".join(f"{k} {v}" for k, v in outcomes.most_common() if k != "cases"),
    )


def test_the_fuzz_would_see_a_reader_killed_by_a_signal() -> None:
    def die() -> str:
        faulthandler.disable()  # spare the log pytest's dump of the stack
        os.kill(os.getpid(), signal.SIGBUS)
        return "survived"

    code, _ = in_child(die)
    assert code == -signal.SIGBUS
    code, _ = in_child(lambda: str(time.sleep(5)), seconds=1)
    assert code == -signal.SIGALRM


def test_a_header_region_with_slack_attaches_and_reads_the_same_log(
    fuzz_log: tuple[str, bytes],
) -> None:
    name, written = fuzz_log
    before = AtomicLog.attach(name)
    try:
        expected = before.snapshot().to_numpy().tolist()
    finally:
        before.close()
    overwrite_header(name, written + b"\0\0\0")  # valid header, 3 bytes of slack
    log = AtomicLog.attach(name)
    try:
        assert log.snapshot().to_numpy().tolist() == expected
    finally:
        log.close()


def test_a_claim_on_a_header_region_with_slack_works_and_is_released(
    fuzz_log: tuple[str, bytes],
) -> None:
    name, written = fuzz_log
    log = AtomicLog.attach(name)
    try:
        overwrite_header(name, written + b"\0\0\0")
        writer = log.try_claim_writer()
        assert writer is not None
        writer.close()
        overwrite_header(name, written)
        writer = log.try_claim_writer()
        assert writer is not None, "the first claim was not released"
        writer.close()
    finally:
        log.close()


# ---------------------------------------------------------------------------------------
# 2. Out of room in /dev/shm
#
# The scenarios run in a child with a mount namespace of its own (unshare --mount), where
# /dev/shm is a fresh tmpfs of a few pages; each phase mounts a new one over the last. The
# child (hostile_out_of_space.py) prints what it saw as JSON; the tests below check it. A
# SIGBUS anywhere in it would end it with -SIGBUS instead of that report.



@pytest.fixture(scope="module")
def out_of_space() -> dict[str, Any]:
    """What the scenarios above saw, and how their process ended."""
    try:
        done = subprocess.run(
            ["unshare", "--mount", "--", sys.executable, str(TESTS / "hostile_out_of_space.py")],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
    except FileNotFoundError:
        pytest.skip("no unshare command (util-linux) to make a private /dev/shm")
    if done.returncode > 0 and not done.stdout.strip():
        pytest.skip(f"cannot make a mount namespace here: {done.stderr.strip()[-300:]}")
    facts: dict[str, Any] = json.loads(done.stdout.splitlines()[-1]) if done.stdout.strip() else {}
    if "cannot_mount" in facts:
        pytest.skip(f"cannot mount a tmpfs on /dev/shm in a mount namespace: {facts['cannot_mount']}")
    facts["returncode"] = done.returncode
    facts["stderr"] = done.stderr[-2000:]
    return facts


def no_phase_failed(facts: dict[str, Any], phase: str) -> None:
    assert f"{phase}_failed" not in facts, facts[f"{phase}_failed"]


def test_no_sigbus_when_dev_shm_is_full_while_a_plain_region_gets_one(out_of_space: dict[str, Any]) -> None:
    assert out_of_space["returncode"] == 0, out_of_space["stderr"]
    no_phase_failed(out_of_space, "sigbus_control")
    assert out_of_space["control_returncode"] == -signal.SIGBUS  # the harness would see one


def test_rollover_without_room_is_an_out_of_space_error_and_changes_nothing(
    out_of_space: dict[str, Any],
) -> None:
    no_phase_failed(out_of_space, "rollover")
    extend = out_of_space["extend"]
    assert "OutOfSpaceError" in extend["mro"] and "OSError" in extend["mro"]
    assert extend["errno"] == errno.ENOSPC
    assert extend["published"] == extend["room"]  # what fitted the head is published
    assert out_of_space["extend_left_no_region"]
    assert out_of_space["extend_published_contiguous"]
    assert len(out_of_space["append"]) == 2
    for append in out_of_space["append"]:
        assert "OutOfSpaceError" in append["mro"] and append["errno"] == errno.ENOSPC
        assert append["left_no_region"] and append["snapshot_unchanged"] and append["fresh_snapshot_same"]


def test_rollover_retried_after_room_is_made_succeeds(out_of_space: dict[str, Any]) -> None:
    no_phase_failed(out_of_space, "rollover")
    assert out_of_space["retry_shows_record"]
    assert out_of_space["after_retry_contiguous"]
    assert out_of_space["after_unlink"] == []


def test_new_log_without_room_is_an_out_of_space_error_and_leaves_nothing(
    out_of_space: dict[str, Any],
) -> None:
    no_phase_failed(out_of_space, "new_too_big")
    for case in ("new_segment_too_big", "new_header_only", "new_no_room"):
        assert "OutOfSpaceError" in out_of_space[case]["mro"], case
        assert out_of_space[case]["errno"] == errno.ENOSPC
    assert out_of_space["new_segment_too_big_left"] == []
    assert out_of_space["new_header_only_left"] == ["ballast"]
    assert out_of_space["new_no_room_left"] == ["ballast"]


def test_rollover_without_an_inode_changes_nothing(out_of_space: dict[str, Any]) -> None:
    no_phase_failed(out_of_space, "out_of_inodes")
    assert out_of_space["inodes"]["left_no_region"]
    assert out_of_space["inodes"]["snapshot_unchanged"]


def test_rollover_without_an_inode_is_an_out_of_space_error(out_of_space: dict[str, Any]) -> None:
    no_phase_failed(out_of_space, "out_of_inodes")
    assert "OutOfSpaceError" in out_of_space["inodes"]["mro"], out_of_space["inodes"]
    assert out_of_space["inodes"]["errno"] == errno.ENOSPC


# ---------------------------------------------------------------------------------------
# 3. Bounded resources over many rollovers

ROLLOVERS = 12_000


def assert_bounded(samples: list[tuple[int, int]], slots: int, baseline_fds: int, who: str) -> None:
    """At most 2 * slots + 6 mappings of the log and 3 * slots + 7 more descriptors than
    before it (CPython's mmap keeps a descriptor per mapping; a writer holds its claim's
    two), and neither growing: the second half of the run holds no more than the first
    half did."""
    half = len(samples) // 2
    maps, fds = [m for m, _ in samples], [f for _, f in samples]
    assert max(maps) <= 2 * slots + 6, f"{who} mappings {maps}"
    assert max(fds) - baseline_fds <= 3 * slots + 7, f"{who} descriptors {fds} (from {baseline_fds})"
    assert max(maps[half:]) <= max(maps[:half]), f"{who} mappings grow: {maps}"
    assert max(fds[half:]) <= max(fds[:half]), f"{who} descriptors grow: {fds}"


def test_reader_and_writer_in_one_process_hold_bounded_mappings_through_12000_rollovers(
    log_name: Callable[[], str], capsys: pytest.CaptureFixture[str]
) -> None:
    baseline = mappings_and_fds("")[1]
    writer, log = AtomicLog.new_claimed(retained=3, segment=1, dtype=np.int64, name=log_name())  # 4 slots
    samples = []
    with log, writer:
        snap = log.snapshot()
        for i in range(ROLLOVERS + 1):
            writer.append(i)
            snap.refresh()
            assert values(snap)[-1] == i
            if i % 100 == 0:
                snap = log.snapshot()  # a new snapshot now and then; the old one is dropped
            if i % 500 == 0:
                samples.append(mappings_and_fds(log.name))
        assert values(snap) == list(range(ROLLOVERS - 3, ROLLOVERS + 1))
    assert_bounded(samples, 4, baseline, "process")
    report(
        capsys,
        f"one process: {ROLLOVERS} rollovers followed; max {max(m for m, _ in samples)} mappings "
        f"of the log, {min(f for _, f in samples)}..{max(f for _, f in samples)} descriptors",
    )


def test_reader_following_a_writer_process_through_12000_rollovers_holds_bounded_mappings(
    log_name: Callable[[], str], capsys: pytest.CaptureFixture[str]
) -> None:
    name, slots = log_name(), 8
    baseline = mappings_and_fds(name)[1]
    with AtomicLog.new(retained=slots - 1, segment=1, dtype=np.int64, name=name) as log:
        writer = subprocess.Popen(
            [sys.executable, str(TESTS / "hostile_rollover_writer.py"), name, str(ROLLOVERS + 1)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            snap, heads, samples, refreshes = log.snapshot(), set(), [], 0
            deadline = time.monotonic() + 90
            while writer.poll() is None:
                assert time.monotonic() < deadline, "the writer process did not finish"
                snap.refresh()
                refreshes += 1
                seen = values(snap)
                assert seen == list(range(seen[0], seen[0] + len(seen))) if seen else True
                if seen:
                    heads.add(seen[-1])
                if refreshes % 200 == 0:
                    snap = log.snapshot()
                if seen and seen[-1] // 250 > len(samples):  # every 250 rollovers
                    samples.append(mappings_and_fds(name))
            out, err = writer.communicate(timeout=30)
        finally:
            writer.kill()
            writer.wait()
        assert writer.returncode == 0, err
        snap.refresh()
        assert values(snap) == list(range(ROLLOVERS + 1 - slots, ROLLOVERS + 1))
    del snap  # a snapshot keeps its segments mapped after close(); with it gone, nothing is
    samples.append(mappings_and_fds(name))
    assert samples[-1][0] == 0
    written = json.loads(out)
    writer_samples = [(m, f) for m, f in written["samples"]]
    assert len(writer_samples) > 20 and len(samples) > 4, (len(writer_samples), len(samples))
    assert_bounded(writer_samples, slots, written["baseline"], "writer")
    assert_bounded(samples[:-1], slots, baseline, "reader")
    report(
        capsys,
        f"two processes: the reader refreshed {refreshes} times and saw {len(heads)} of "
        f"{ROLLOVERS} rollovers; max mappings of the log: reader {max(m for m, _ in samples)}, "
        f"writer {max(m for m, _ in writer_samples)}; descriptors: reader "
        f"{min(f for _, f in samples)}..{max(f for _, f in samples)}, writer "
        f"{min(f for _, f in writer_samples)}..{max(f for _, f in writer_samples)}",
    )


def with_descriptors_to_spare(spare: int, use: Callable[[], str]) -> Callable[[], str]:
    """``use``, run with a descriptor limit of ``spare`` more than this process has open."""

    def limited() -> str:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + spare, hard))
        try:
            return use()
        except AtomicLogError as exc:
            return type(exc).__name__
        except OSError as exc:
            raise AssertionError(f"a bare {type(exc).__name__}: {exc}") from None

    return limited


def log_of_200_segments(name: str) -> None:
    writer, log = AtomicLog.new_claimed(retained=199, segment=1, dtype=np.int64, name=name)  # 200 slots
    with writer:
        writer.extend(range(300))
    log.close()  # the log stays: the log_name fixture removes it


def test_snapshot_of_more_segments_than_descriptors_to_spare_works_or_raises_an_atomic_log_error(
    log_name: Callable[[], str],
) -> None:
    name = log_name()
    log_of_200_segments(name)
    code, text = in_child(with_descriptors_to_spare(50, lambda: str(len(AtomicLog.attach(name).snapshot()))))
    assert code == 0, text


def test_writer_of_more_segments_than_descriptors_to_spare_works_or_raises_an_atomic_log_error(
    log_name: Callable[[], str],
) -> None:
    name = log_name()
    with AtomicLog.new(retained=199, segment=1, dtype=np.int64, name=name):

        def write() -> str:
            writer = AtomicLog.attach(name).try_claim_writer()
            assert writer is not None
            writer.extend(range(300))
            writer.close()
            return "wrote"

        code, text = in_child(with_descriptors_to_spare(50, write))
        assert code == 0, text


# ---------------------------------------------------------------------------------------
# 4. Permissions and names


def assert_modes(name: str, mode: int) -> None:
    """The header and every segment have exactly ``mode``; the claim region is write-only
    for whoever ``mode`` lets write; any other region of the log (a helper region readers
    may write) gives read access to exactly whom ``mode`` does."""
    modes = {e: stat.S_IMODE(os.stat(f"{SHM}/{e}").st_mode) for e in regions_of(name)}
    assert segment_entries(name), modes
    for entry in [name, *segment_entries(name)]:
        assert modes.pop(entry) == mode, (entry, oct(mode))
    (claim,) = [e for e in modes if e.endswith(".claim")]
    assert modes.pop(claim) == mode & 0o222, (claim, oct(mode))
    for entry, other in modes.items():
        assert other & 0o444 == mode & 0o444 and not other & 0o111, (entry, oct(other))


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.parametrize(("mode", "expected"), [(None, 0o600), (0o640, 0o640), (0o660, 0o660)])
def test_every_region_gets_exactly_the_mode_asked_also_segments_of_a_reclaimed_writer(
    mode: int | None, expected: int, log_name: Callable[[], str]
) -> None:
    name = log_name()
    kwargs = {} if mode is None else {"mode": mode}
    with umask(0o077 if mode else 0):  # neither a strict nor an open umask changes the modes
        writer, log = AtomicLog.new_claimed(retained=4, segment=2, dtype=np.int64, name=name, **kwargs)
    with log:
        with writer:
            assert_modes(name, expected)
            writer.extend(range(20))  # rollovers make segments 1-9
            assert_modes(name, expected)

        def reclaim_and_write() -> str:
            os.umask(0o022 if mode else 0)
            again = AtomicLog.attach(name).try_claim_writer()
            assert again is not None
            again.extend(range(20, 40))  # segments 10-19, made by another process
            again.close()
            return ""

        code, text = in_child(reclaim_and_write)
        assert code == 0, text
        assert values(log.snapshot())[-1] == 39
        assert_modes(name, expected)


@pytest.mark.parametrize("mode", [0o400, 0o200, 0o000, 0o700, 0o610, 0o4600, 0o1600, -1, 1 << 20])
def test_unusable_modes_are_refused(mode: int) -> None:
    with pytest.raises(InvalidArgumentError):
        AtomicLog.new(retained=4, segment=2, dtype=np.int64, mode=mode)


def test_arguments_of_the_wrong_type_are_refused_with_an_atomic_log_error() -> None:
    with pytest.raises(AtomicLogError):
        AtomicLog.new(retained=4, segment=2, dtype=np.int64, mode="0o600")  # type: ignore[arg-type]


def test_readers_map_the_log_read_only_and_cannot_write_through_their_arrays(
    log_name: Callable[[], str],
) -> None:
    name = log_name()
    with AtomicLog.new(retained=4, segment=2, dtype=np.int64, name=name) as log:

        def write() -> str:  # in a child: this process never maps the log writable
            writer = AtomicLog.attach(name).try_claim_writer()
            assert writer is not None
            writer.extend(range(5))
            writer.close()
            return ""

        assert in_child(write) == (0, "")
        snap = log.snapshot()
        chunk = snap.chunks()[0]
        with pytest.raises(ValueError):
            chunk.values[0] = 7
        with pytest.raises(ValueError):
            chunk.values.setflags(write=True)
        record = next(iter(snap))
        with pytest.raises((TypeError, ValueError)):
            record[...] = 7
        mappings = mappings_of(name)
        shown = {e for seq, e in segments_of(name) if seq in (0, 1, 2)}
        assert len(shown) == 3 and {name, *shown} <= {m.region for m in mappings}, mappings
        assert all("w" not in m.perms and m.perms.startswith("r") for m in mappings), mappings
        assert values(snap) == [0, 1, 2, 3, 4]


def test_a_name_of_200_characters_works_and_one_of_201_is_refused(log_name: Callable[[], str]) -> None:
    base = log_name()
    name = base + "n" * (200 - len(base))
    longest_segment = f"{name}@{(1 << 64) - 1:016x}.{(1 << 63) - 1}.{(1 << 64) - 1:016x}"
    assert len(longest_segment) <= os.pathconf(SHM, "PC_NAME_MAX")
    try:
        writer, log = AtomicLog.new_claimed(retained=2, segment=1, dtype=np.int64, name=name)
        with log, writer:
            writer.extend(range(1000))
            assert values(AtomicLog.attach(name).snapshot()) == [997, 998, 999]
    finally:
        if regions_of(name):
            remove_log(name)
    too_long = name + "n"
    for call in (
        lambda: AtomicLog.new(retained=2, segment=1, dtype=np.int64, name=too_long),
        lambda: AtomicLog.attach(too_long),
        lambda: remove_log(too_long),
    ):
        with pytest.raises(InvalidNameError):
            call()


@pytest.mark.parametrize(
    "name",
    ["..", ".", "a/b", "/abc", "../etc", "abc/", "a/../b", ".hidden", "-x", "a@b", "", "a b", "a\0b", "é"],
)
def test_names_with_path_separators_dots_or_other_characters_are_refused(name: str) -> None:
    for call in (
        lambda: AtomicLog.new(retained=2, segment=1, dtype=np.int64, name=name),
        lambda: AtomicLog.attach(name),
        lambda: remove_log(name),
    ):
        with pytest.raises(InvalidNameError):
            call()


@pytest.mark.parametrize("name", [None, b"abc", 7])
def test_names_that_are_not_str_are_refused(name: Any) -> None:
    with pytest.raises(InvalidNameError):
        AtomicLog.attach(name)
    with pytest.raises(InvalidNameError):
        remove_log(name)


# ---------------------------------------------------------------------------------------
# 5. Cleanup, with segments orphaned by a crashed writer


def crash_writer(name: str, count: int) -> None:
    """A writer in a forked child appends ``count`` records and is SIGKILLed holding the claim."""

    def write_and_die() -> str:
        writer = AtomicLog.attach(name).try_claim_writer()
        assert writer is not None
        writer.extend(np.arange(count))
        os.kill(os.getpid(), signal.SIGKILL)
        return "survived"

    assert in_child(write_and_die)[0] == -signal.SIGKILL


def nonce_of(name: str) -> int:
    at = FIXED.fields["nonce"][1]  # type: ignore[index]
    return int.from_bytes(read_header(name)[at : at + 8], "little")


def orphan(name: str, nonce: int, seq: int, size: int = 16) -> str:
    """Make a segment region ``seq`` of ``nonce`` with a token of its own, as a crashed
    writer leaves one (size 0: it died before reserving it)."""
    entry = f"{name}@{nonce:016x}.{seq}.{secrets.randbits(64):016x}"
    with suppress(posix_ipc.ExistentialError):
        posix_ipc.SharedMemory("/" + entry, posix_ipc.O_CREX, mode=0o600, size=size).close_fd()
    return entry


# A log of 3 slots of 2 records, 25 records written: head 12, window 10-12. Orphans of its
# own nonce: 13 half-made (size 0), 19 past the head, 9 and 0 below the window, 11 under a
# token its slot does not hold; and three segments of another log of the same name, an
# earlier one that crashed.
OWN_ORPHANS, OTHER_ORPHANS = [(13, 0), (19, 16), (9, 16), (0, 16), (11, 16)], [0, 12, 13]


def make_crashed_log(name: str) -> tuple[AtomicLog, list[str], list[str]]:
    """The log above: its handle, its own orphans, the other log's orphans."""
    log = AtomicLog.new(retained=4, segment=2, dtype=np.int64, name=name)
    crash_writer(name, 25)
    nonce = nonce_of(name)
    own = [orphan(name, nonce, seq, size) for seq, size in OWN_ORPHANS]
    other = [orphan(name, nonce ^ 0xFF, seq) for seq in OTHER_ORPHANS]
    return log, own, other


def test_unlink_removes_every_region_of_its_log_and_remove_log_every_other_one_too(
    log_name: Callable[[], str],
) -> None:
    name = log_name()
    log, own, other = make_crashed_log(name)
    with log:
        snap = log.snapshot()
        assert set(own) < set(regions_of(name))
        log.unlink()
        assert regions_of(name) == sorted(other)  # another log's segments are not its own
        assert values(snap) == list(range(20, 25))  # mapped views outlive the names
        with pytest.raises(LogNotFoundError):
            AtomicLog.attach(name)
        assert remove_log(name) == len(other)
        assert regions_of(name) == []
        with pytest.raises(LogNotFoundError):
            remove_log(name)


def test_remove_log_removes_the_header_and_the_segments_of_every_nonce(log_name: Callable[[], str]) -> None:
    name = log_name()
    log, _, _ = make_crashed_log(name)
    with log:
        entries = regions_of(name)
        assert len(entries) >= 1 + 3 + len(OWN_ORPHANS) + len(OTHER_ORPHANS)
        assert remove_log(name) == len(entries)
        assert regions_of(name) == []


def test_reclaimed_writer_removes_its_logs_orphans_at_claim_and_nothing_else(
    log_name: Callable[[], str],
) -> None:
    name = log_name()
    log, own, other = make_crashed_log(name)
    with log:
        shown = values(log.snapshot())
        ours = f"{name}@{nonce_of(name):016x}."
        window = {e for seq, e in segments_of(name) if seq in (10, 11, 12) and e.startswith(ours)} - set(own)
        assert len(window) == 3, window
        writer = log.try_claim_writer()
        assert writer is not None
        with writer:
            left = set(segment_entries(name)) - {*window, *other}
            # a writer may make its next segment early
            assert all(e.startswith(ours) and segment_number(name, e) == 13 for e in left), sorted(left)
            assert all(os.stat(f"{SHM}/{e}").st_size == 16 for e in left)  # not the size-0 orphan
            assert set(window) | set(other) <= set(regions_of(name))
            assert values(log.snapshot()) == shown
            writer.extend(range(25, 40))
            assert values(log.snapshot()) == list(range(34, 40))


# -- what anyone may put in /dev/shm: fifos, directories, links where names are looked at -----


@pytest.mark.parametrize("kind", ["fifo", "directory", "symlink to a fifo"])
def test_listing_logs_never_waits_on_what_others_put_in_dev_shm(
    log_name: Callable[[], str], kind: str
) -> None:
    """Any local user can make a fifo in /dev/shm: opening one blocks until a writer comes.
    ``list_logs()`` and ``atomic-log ls`` open every candidate without waiting, and go on."""
    planted = os.path.join(SHM, log_name())
    fifo = planted + "-fifo"
    if kind == "fifo":
        os.mkfifo(planted)
    elif kind == "directory":
        os.mkdir(planted)
    else:
        os.mkfifo(fifo)
        os.symlink(fifo, planted)
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=np.int64, name=log_name())
    try:
        with log, writer:
            code = "import atomic_log_shm, sys; print(sorted(i.name for i in atomic_log_shm.list_logs()))"
            listed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
            assert listed.returncode == 0, listed.stderr
            assert log.name in listed.stdout and os.path.basename(planted) not in listed.stdout
            command = [sys.executable, "-m", "atomic_log_shm", "ls", "--json"]
            ls = subprocess.run(command, capture_output=True, text=True, timeout=60)
            assert ls.returncode == 0 and log.name in ls.stdout, ls.stderr
    finally:
        for path in (planted, fifo):
            if os.path.isdir(path) and not os.path.islink(path):
                os.rmdir(path)
            elif os.path.lexists(path):
                os.unlink(path)


@pytest.mark.parametrize("kind", ["directory", "fifo"])
@pytest.mark.parametrize("waiter", ["cursor", "snapshot"])
def test_a_follower_of_a_log_removed_by_hand_learns_it_is_gone_even_if_its_wait_region_name_is_taken(
    log_name: Callable[[], str], kind: str, waiter: str
) -> None:
    """The owner removes the log's files by hand (no gone mark), and something else takes the
    wait region's name: a follower's wait() raises LogNotFoundError, never a raw OSError or
    ValueError, and never blocks."""
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=np.int64, name=log_name())
    reader = AtomicLog.attach(log.name)
    cursor = reader.cursor("newest")
    snap = reader.snapshot()
    wait_path = next(os.path.join(SHM, e) for e in regions_of(log.name) if e.endswith(".wait"))
    for entry in regions_of(log.name):
        os.unlink(os.path.join(SHM, entry))
    os.mkdir(wait_path) if kind == "directory" else os.mkfifo(wait_path)
    try:
        with pytest.raises(LogNotFoundError):
            (cursor.wait if waiter == "cursor" else snap.wait)(timeout=10)
    finally:
        os.rmdir(wait_path) if kind == "directory" else os.unlink(wait_path)
        writer.close()
        reader.close()
        log.close()
