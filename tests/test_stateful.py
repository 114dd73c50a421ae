"""The log side by side with its model: a deque of whole segments.

The model is what the original crate promises. ``n = ceil(retained / segment) + 1`` whole
segments are retained; the append that finds the head full starts the next segment (and the
oldest falls out); a snapshot shows the retained segments' records oldest first, skipping
empty segments, and does not change until ``refresh()``; arrays obtained from a snapshot
never change; a writer can be closed (or dropped) and a new one claimed, which continues
exactly where the old one stopped. The writer may reuse a reclaimed segment's pages only
when nothing maps it any more: snapshots (and their arrays) are also dropped, to let it.
"""

from __future__ import annotations

import gc
import math
import pickle
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
)
from support import regions_of, segments_of, unique_name

from atomic_log_shm import (
    AtomicLog,
    InvalidRecordError,
    LogClosedError,
    Snapshot,
    Writer,
    WriterClosedError,
    remove_log,
)

INT64 = st.integers(-(2**63), 2**63 - 1)

Shown = list[tuple[int, list[Any]]]  # what a snapshot shows: (sequence, records) per chunk


class Model:
    """The log as the crate describes it: a deque of whole segments, the newest last."""

    def __init__(self, retained_capacity: int, segment_capacity: int) -> None:
        self.segment_capacity = segment_capacity
        n = math.ceil(retained_capacity / segment_capacity) + 1
        self.segments: deque[list[int]] = deque([[]], maxlen=n)  # segment 0 exists, empty
        self.next_sequence = 1

    def append(self, value: int) -> None:
        if len(self.segments[-1]) == self.segment_capacity:  # the append that finds the head full
            self.segments.append([])  # ... makes the next segment; the oldest falls out
            self.next_sequence += 1
        self.segments[-1].append(value)

    def window(self, encode: Callable[[int], Any]) -> Shown:
        """What a fresh snapshot must show: retained segments with records, oldest first."""
        first = self.next_sequence - len(self.segments)
        return [(seq, [encode(v) for v in seg]) for seq, seg in enumerate(self.segments, first) if seg]


@dataclass(frozen=True)
class Records:
    """How the model's ints become records of one dtype, and values that must be refused."""

    dtype: np.dtype[Any]
    encode: Callable[[int], Any]  # to the record as ``ndarray.tolist()`` gives it back
    bad: tuple[Any, ...]


RECORDS = {
    "int64": Records(np.dtype(np.int64), lambda v: v, (None, "seven", 2**70, -(2**70))),
    "tick": Records(
        np.dtype([("seq", "<i8"), ("price", "<f8"), ("tag", "S4")]),
        lambda v: (v, v / 4, b"%d" % (v % 1000)),
        (None, (1, 2.0), (1, 2.0, b"x", 4), (2**70, 0.0, b"x"), ("x", 0.0, b"x")),
    ),
}


def shown(snap: Snapshot) -> Shown:
    """What ``snap`` shows, checked to agree between chunks(), iteration and len()."""
    chunks = [(c.sequence, c.values.tolist()) for c in snap.chunks()]
    records = [r for _, rs in chunks for r in rs]
    assert [r.item() for r in snap] == records
    assert len(snap) == len(records)
    return chunks


@dataclass
class Kept:
    """A snapshot held across steps, with what it showed when taken or last refreshed, and
    every chunk array it handed out (with their values then) until it is dropped."""

    snapshot: Snapshot | None
    shown: Shown
    arrays: list[tuple[np.ndarray[Any, Any], list[Any]]]

    @classmethod
    def take(cls, snap: Snapshot, expected: Shown) -> Kept:
        kept = cls(snap, [], [])
        kept.showing(expected)
        return kept

    def showing(self, expected: Shown) -> None:
        """Check the snapshot shows ``expected`` (just taken or refreshed) and remember it."""
        assert self.snapshot is not None
        assert shown(self.snapshot) == expected
        self.shown = expected
        self.arrays += [(c.values, c.values.tolist()) for c in self.snapshot.chunks()]

    def check(self) -> None:
        """Nothing it showed has changed: not the snapshot, not any array it handed out."""
        if self.snapshot is not None:
            assert shown(self.snapshot) == self.shown
        for array, values in self.arrays:
            assert array.tolist() == values

    def drop(self) -> None:
        self.snapshot = None
        self.arrays = []


class LogMachine(RuleBasedStateMachine):
    """One log, one writer at a time, snapshots held across any number of steps."""

    snapshots = Bundle("snapshots")
    closed_writers = Bundle("closed_writers")

    @initialize(
        retained=st.integers(1, 20),
        segment=st.integers(1, 8),
        records=st.sampled_from(sorted(RECORDS)),
    )
    def create(self, retained: int, segment: int, records: str) -> None:
        self.records = RECORDS[records]
        self.name = unique_name()
        self.writer: Writer | None
        self.writer, self.log = AtomicLog.new_claimed(
            retained=retained, segment=segment, dtype=self.records.dtype, name=self.name
        )
        self.model = Model(retained, segment)
        self.kept: list[Kept] = []

    def teardown(self) -> None:
        name = getattr(self, "name", None)
        if name is None:
            return
        if self.writer is not None:
            self.writer.close()
        self.log.close()
        remove_log(name)
        assert regions_of(name) == []

    def expected(self) -> Shown:
        return self.model.window(self.records.encode)

    def draw_values(self, data: st.DataObject) -> list[int]:
        return data.draw(st.lists(INT64, max_size=3 * self.model.segment_capacity), label="values")

    # -- writing ----------------------------------------------------------------------------

    @precondition(lambda self: self.writer is not None)
    @rule(value=INT64)
    def append(self, value: int) -> None:
        self.writer.append(self.records.encode(value))
        self.model.append(value)

    @precondition(lambda self: self.writer is not None)
    @rule(data=st.data(), as_array=st.booleans())
    def extend(self, data: st.DataObject, as_array: bool) -> None:
        values = self.draw_values(data)
        records = [self.records.encode(v) for v in values]
        self.writer.extend(np.array(records, self.records.dtype) if as_array else records)
        for v in values:
            self.model.append(v)

    @precondition(lambda self: self.writer is not None)
    @rule(data=st.data())
    def append_refuses_a_bad_value(self, data: st.DataObject) -> None:
        bad = data.draw(st.sampled_from(self.records.bad), label="bad")
        with pytest.raises(InvalidRecordError):
            self.writer.append(bad)
        # the model does not change: the invariants check the log did not either

    @precondition(lambda self: self.writer is not None)
    @rule(data=st.data())
    def extend_refuses_a_batch_with_a_bad_value(self, data: st.DataObject) -> None:
        records: list[Any] = [self.records.encode(v) for v in self.draw_values(data)]
        bad = data.draw(st.sampled_from(self.records.bad), label="bad")
        records.insert(data.draw(st.integers(0, len(records)), label="at"), bad)
        with pytest.raises(InvalidRecordError):
            self.writer.extend(records)

    # -- the writer claim -------------------------------------------------------------------

    @precondition(lambda self: self.writer is not None)
    @rule(target=closed_writers)
    def close_writer(self) -> Writer:
        writer, self.writer = self.writer, None
        writer.close()
        assert writer.closed
        return writer

    @precondition(lambda self: self.writer is not None)
    @rule()
    def drop_writer(self) -> None:
        self.writer = None  # collected: its claim ends as if closed
        gc.collect()

    @precondition(lambda self: self.writer is not None)
    @rule()
    def second_claim_is_refused(self) -> None:
        assert self.log.try_claim_writer() is None

    @precondition(lambda self: self.writer is None)
    @rule()
    def claim_writer(self) -> None:
        self.writer = self.log.try_claim_writer()
        assert self.writer is not None  # continues where the last one stopped: see the invariants

    @rule(old=closed_writers, value=INT64)
    def closed_writer_refuses(self, old: Writer, value: int) -> None:
        with pytest.raises(WriterClosedError):
            old.append(self.records.encode(value))
        with pytest.raises(WriterClosedError):
            old.extend([self.records.encode(value)])

    # -- reading ----------------------------------------------------------------------------

    @rule(target=snapshots)
    def take_snapshot(self) -> Kept:
        kept = Kept.take(self.log.snapshot(), self.expected())
        self.kept.append(kept)
        return kept

    @rule(kept=snapshots)
    def refresh(self, kept: Kept) -> None:
        kept.snapshot.refresh()
        kept.showing(self.expected())

    @rule(kept=consumes(snapshots))
    def drop_snapshot(self, kept: Kept) -> None:
        self.kept.remove(kept)
        kept.drop()  # its segments may now be reused by the writer

    @invariant()
    def kept_snapshots_and_their_arrays_never_change(self) -> None:
        for kept in self.kept:
            kept.check()

    @invariant()
    def a_fresh_snapshot_is_the_model(self) -> None:
        assert shown(self.log.snapshot()) == self.expected()

    @invariant()
    def memory_is_the_retained_segments_and_at_most_one_spare(self) -> None:
        retained = set(range(self.model.next_sequence - len(self.model.segments), self.model.next_sequence))
        segments = {seq for seq, _ in segments_of(self.name)}
        spares = segments - retained
        assert retained <= segments
        # an open writer may keep one region ready, named above the head; never any older one
        assert spares <= ({self.model.next_sequence} if self.writer is not None else set())
        assert self.name in regions_of(self.name)


TestLog = LogMachine.TestCase
TestLog.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)


class HandlesMachine(RuleBasedStateMachine):
    """Several handles on one log in this process: they share state only through shared
    memory. Any handle can take snapshots or claim the writer; closing one leaves the others
    (and its own earlier snapshots) working."""

    snapshots = Bundle("snapshots")

    @initialize(retained=st.integers(1, 12), segment=st.integers(1, 4))
    def create(self, retained: int, segment: int) -> None:
        self.name = unique_name()
        self.writer: Writer | None
        self.writer, creator = AtomicLog.new_claimed(
            retained=retained, segment=segment, dtype=np.int64, name=self.name
        )
        self.handles = [creator, AtomicLog.attach(self.name)]
        self.model = Model(retained, segment)
        self.kept: list[Kept] = []

    def teardown(self) -> None:
        name = getattr(self, "name", None)
        if name is None:
            return
        if self.writer is not None:
            self.writer.close()
        for handle in self.handles:
            handle.close()
        remove_log(name)
        assert regions_of(name) == []

    def expected(self) -> Shown:
        return self.model.window(int)

    def pick(self, data: st.DataObject) -> AtomicLog:
        return data.draw(st.sampled_from(self.handles), label="handle")

    @precondition(lambda self: self.writer is not None)
    @rule(values=st.lists(INT64, max_size=10))
    def extend(self, values: list[int]) -> None:
        self.writer.extend(values)
        for v in values:
            self.model.append(v)

    @precondition(lambda self: self.writer is not None)
    @rule()
    def close_writer(self) -> None:
        self.writer.close()
        self.writer = None

    @precondition(lambda self: self.writer is None)
    @rule(data=st.data())
    def claim_writer_through_any_handle(self, data: st.DataObject) -> None:
        self.writer = self.pick(data).try_claim_writer()
        assert self.writer is not None
        assert all(h.try_claim_writer() is None for h in self.handles)

    @rule(pickled=st.booleans())
    def attach(self, pickled: bool) -> None:
        handle = pickle.loads(pickle.dumps(self.handles[0])) if pickled else AtomicLog.attach(self.name)
        self.handles.append(handle)

    @precondition(lambda self: len(self.handles) > 1)
    @rule(data=st.data())
    def close_handle(self, data: st.DataObject) -> None:
        handle = self.pick(data)
        self.handles.remove(handle)
        handle.close()
        with pytest.raises(LogClosedError):
            handle.snapshot()

    @rule(target=snapshots, data=st.data())
    def take_snapshot(self, data: st.DataObject) -> Kept:
        kept = Kept.take(self.pick(data).snapshot(), self.expected())
        self.kept.append(kept)
        return kept

    @rule(kept=snapshots)
    def refresh(self, kept: Kept) -> None:
        if kept.snapshot.log.closed:
            with pytest.raises(LogClosedError):
                kept.snapshot.refresh()
            return
        kept.snapshot.refresh()
        kept.showing(self.expected())

    @rule(kept=consumes(snapshots))
    def drop_snapshot(self, kept: Kept) -> None:
        self.kept.remove(kept)
        kept.drop()

    @invariant()
    def kept_snapshots_and_their_arrays_never_change(self) -> None:
        for kept in self.kept:
            kept.check()

    @invariant()
    def every_open_handle_sees_the_model(self) -> None:
        for handle in self.handles:
            assert shown(handle.snapshot()) == self.expected()


TestHandles = HandlesMachine.TestCase
TestHandles.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
