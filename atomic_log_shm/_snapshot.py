"""Snapshots: stable, zero-copy views of the retained records, refreshed in place.

A snapshot reads the log through a ``_reader.Reader`` (whose docstring gives the reader
protocol and why a torn or unpublished record is never shown) and keeps the arrays it
shows: one read-only view per segment, each pinning its mapping.

Refresh tries three strategies, cheapest first: the same head with (perhaps) more records
(two header loads when nothing changed); new segments after the ones held (keep what is
still retained, add the rest); a rebuild. The view is built aside and installed by plain
attribute stores, so an exception inside ``refresh()`` leaves the previous view.
"""

from __future__ import annotations

import itertools
import operator
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from operator import attrgetter
from typing import Any, overload

import numpy as np
import numpy.typing as npt

from . import _wait
from ._errors import (
    CorruptLogError,
    IndexOutOfRangeError,
    InvalidArgumentError,
    MissingDependencyError,
    NotPicklableError,
)
from ._header import HEAD_WORD
from ._platform import ACQUIRE, fence
from ._reader import Reader

_values = attrgetter("values")
_start = attrgetter("start")


class Chunk:
    """The records a snapshot shows from one segment: ``len(chunk)`` is how many."""

    __slots__ = ("sequence", "start", "values")

    sequence: int
    """The segment's number: 0 for the first segment of the log, then one more each."""
    values: npt.NDArray[Any]
    """A read-only numpy array viewing the segment in shared memory (no copy)."""
    start: int
    """The position of ``values[0]``: records are numbered from 0 since the log was made."""

    def __init__(self, sequence: int, values: npt.NDArray[Any], start: int) -> None:
        self.sequence = sequence
        self.values = values
        self.start = start

    def __len__(self) -> int:
        return len(self.values)

    def __repr__(self) -> str:
        shown = f"<{len(self.values)} x {self.values.dtype}>"
        return f"Chunk(sequence={self.sequence}, start={self.start}, values={shown})"


class _View:
    """Everything a snapshot shows, never changed once made: a refresh makes a new one aside
    and installs it with one attribute store, so an exception at any point leaves the old
    view or the new one. Plain slots: the idle refresh reads three of them."""

    __slots__ = ("array", "chunks", "count_word", "epoch_word", "head", "length", "missed", "shown", "start")

    def __init__(
        self,
        chunks: list[Chunk],
        length: int,
        head: int,
        start: int,
        shown: int,
        array: npt.NDArray[Any],
        epoch_word: int,
        count_word: int,
        missed: int,
    ) -> None:
        self.chunks = chunks  # never changed once the view is made
        self.length = length  # records shown
        self.head = head  # the newest segment shown (or mapped, if it has no records yet)
        self.start = start  # the position of the head's record 0
        self.shown = shown  # how many of the head's records are shown
        self.array = array  # all of the head, mapped, for growing the view in place
        self.epoch_word = epoch_word  # the header words of the head's slot
        self.count_word = count_word
        self.missed = missed  # what the refresh that made this view skipped

    @property
    def end(self) -> int:
        return self.start + self.shown

    def keep(self, missed: int) -> _View:
        """This view again, saying the refresh that made it missed ``missed`` positions."""
        again = _View.__new__(_View)
        for name in _View.__slots__:
            setattr(again, name, getattr(self, name))
        again.missed = missed
        return again


class Chunks(list[Chunk]):
    """Chunks of records, oldest first: what ``Snapshot.chunks()`` and ``Snapshot.since()``
    return. A list (index it, slice it, ``len()`` counts the chunks) that copies its
    records out in one step: ``to_numpy()``, ``to_pandas()``.

    The chunks view shared memory without copying, as ``Chunk.values`` says; a slice of
    the list is a plain list."""

    __slots__ = ("dtype",)

    dtype: np.dtype[Any]
    """The log's dtype: the dtype of every chunk's values, and of ``to_numpy()`` of none."""

    def __init__(self, chunks: Iterable[Chunk], dtype: np.dtype[Any]) -> None:
        super().__init__(chunks)
        self.dtype = dtype

    def to_numpy(self) -> npt.NDArray[Any]:
        """Every record of the chunks, oldest first, as one contiguous array (a copy,
        writable, owned by you)."""
        return _concatenate([chunk.values for chunk in self], self.dtype)

    def to_pandas(self) -> Any:
        """Every record of the chunks, as a ``pandas.DataFrame`` (a copy) indexed by position.

        The index is named ``"position"``; there is one column per field, or one column,
        ``"value"``, for a log of plain values. Needs pandas:
        ``pip install 'atomic-log-shm[pandas]'``."""
        return data_frame([chunk.values for chunk in self], [chunk.start for chunk in self], self.dtype)


def _unseen(chunks: list[Chunk], since: int, end: int) -> int:
    """How many positions in ``[since, end)`` no chunk shows: reclaimed or never written."""
    shown = 0
    for chunk in reversed(chunks):
        last = chunk.start + len(chunk.values)
        if last <= since:
            break
        shown += last - max(chunk.start, since)
    return max(0, end - since - shown)


class Snapshot:
    """A stable view of the records a log retained when it was taken (or last refreshed).

    The arrays it shows view shared memory without copying and never change; holding the
    snapshot (or any of its arrays) keeps their segments mapped, even after the writer
    reclaimed them. ``refresh()`` moves the view forward in place. Records are numbered by
    position, from 0 since the log was made: the view shows positions ``[start, end)``.
    A snapshot is not thread-safe: give each thread its own (they are cheap).
    """

    __slots__ = ("_log", "_look_after", "_pace", "_reader", "_view")
    _view: _View

    def __init__(self, reader: Reader, log: Any) -> None:
        self._reader = reader
        self._log = log
        self._view = reader.consistent(lambda head: self._view_at(head, None))
        self._look_after = 0.0  # (monotonic) when look_if_gone() looks again
        self._pace = _wait.Pace()  # for lingering in wait()

    def refresh(self) -> None:
        """Replace this view with the log's current one. Cheap when little changed.

        Arrays and iterators obtained before keep showing what they showed. A reader that
        fell further behind than the retained window loses continuity: the view restarts
        at the oldest retained segment, and ``missed`` says how many records it skipped.
        If refresh() raises (an interrupt, a removed log), the view is the one before.
        Raises LogNotFoundError once the log is removed, if its remover could mark it (see
        ``Cursor.poll()`` for the rest).

        Three strategies, cheapest first: the same head, perhaps grown; new segments after
        the ones held; a rebuild.
        """
        view = self._view
        words = self._reader.words
        head = words[HEAD_WORD]  # pairs with the writer's head store, the last of a rollover
        new = None
        if head == view.head:
            count = words[view.count_word]  # pairs with the writer's store of the count
            if count == view.shown:  # nothing new: two loads, the path of every idle refresh
                if view.missed:
                    self._view = view.keep(missed=0)  # this refresh missed none
                return
            new = self._refresh_same_head(view, count)
        elif head > view.head:
            new = self._refresh_incremental(view, head)
        self._view = new or self._rebuild(view)

    def _refresh_same_head(self, view: _View, count: int) -> _View | None:
        """The view with the head it holds grown to ``count`` records (loaded after the same
        head); None if the head's slot was retired meanwhile (the caller rebuilds).

        The head's slot is retired only after the head has moved n segments on, and its
        epoch is changed first: the count is the head's own if the epoch loaded after it
        still names the head (steps 3 and 4 of the protocol in _reader)."""
        # The count before the epoch's re-check and the records it covers: pairs with the
        # writer's release of the count, and its fence after retiring a slot.
        fence(ACQUIRE)
        reader = self._reader
        head = view.head
        if reader.words[view.epoch_word] != head or not view.shown < count <= reader.layout.segment_capacity:
            return None
        grown = view.chunks[:-1] if view.shown else view.chunks[:]  # a new list: the old one never changes
        grown.append(Chunk(head, view.array[:count], view.start))
        length = view.length + count - view.shown
        return _View(grown, length, head, view.start, count, view.array, view.epoch_word, view.count_word, 0)

    def _refresh_incremental(self, view: _View, head: int) -> _View | None:
        """The view that keeps the held segments still retained and adds those up to
        ``head``; None if the writer moved on meanwhile, or too far (the caller rebuilds)."""
        # The head before the slots: pairs with the writer's fence before its head store (the
        # refresh loaded the head, found it moved on, and reads its slots now).
        fence(ACQUIRE)
        reader = self._reader
        oldest = head - reader.layout.slot_count + 1
        held = view.head
        if held < oldest:
            return None
        old_head = reader.slot(held)  # its final count: it is no longer the head
        head_slot = reader.slot(head)
        if old_head is None or head_slot is None:
            return None
        added: list[tuple[int, npt.NDArray[Any], int, int]] = []
        for seq in range(held + 1, head + 1):
            slot = reader.slot(seq) if seq != head else head_slot
            array = reader.segment(seq)
            if slot is None or array is None:
                return None
            added.append((seq, array, *slot))
        kept = [c for c in view.chunks if c.sequence >= oldest and c.sequence != held]
        if old_head[1]:
            kept.append(Chunk(held, view.array[: old_head[1]], old_head[0]))
        for seq, array, start, count in added:
            if count:
                kept.append(Chunk(seq, array[:count], start))
        _, array, start, count = added[-1]
        return self._view_of(kept, head, start, count, array, view.end)

    def _rebuild(self, view: _View) -> _View:
        """The view built anew from the head, as a new snapshot's (a reader lapped by the
        writer, or one the other strategies could not serve)."""
        return self._reader.consistent(lambda head: self._view_at(head, view.end))

    def _view_at(self, head: int, since: int | None) -> _View | None:
        """The whole view with ``head`` as the head segment; None if the writer moved on.
        ``since`` is the end of the view it replaces (None for a new snapshot)."""
        reader = self._reader
        slot = reader.slot(head)
        head_array = reader.segment(head) if slot is not None else None
        if slot is None or head_array is None:
            return None
        start, count = slot
        chunks = [Chunk(head, head_array[:count], start)] if count else []
        floor = start  # an older segment ends at or before the start of the one after it
        for seq in range(head - 1, max(head - reader.layout.slot_count, -1), -1):
            older = reader.slot(seq)
            if older is None:
                break  # reclaimed, and every older segment with it
            if older[0] + older[1] > floor:
                raise CorruptLogError(
                    f"log {reader.name!r}: segment {seq} holds positions up to {older[0] + older[1]}, "
                    f"beyond the start {floor} of the segment after it"
                )
            array = reader.segment(seq)
            if array is None:
                break
            if older[1]:
                chunks.append(Chunk(seq, array[: older[1]], older[0]))
            floor = older[0]
        chunks.reverse()
        return self._view_of(chunks, head, start, count, head_array, since)

    def _view_of(
        self,
        chunks: list[Chunk],
        head: int,
        start: int,
        count: int,
        head_array: npt.NDArray[Any],
        since: int | None,
    ) -> _View:
        """A view of ``chunks`` whose head is ``head``; what it misses of the positions
        after ``since`` (the replaced view's end) is counted."""
        layout = self._reader.layout
        missed = 0 if since is None else _unseen(chunks, since, start + count)
        length = sum(len(c.values) for c in chunks)
        words = layout.epoch_word(head), layout.count_word(head)
        return _View(chunks, length, head, start, count, head_array, *words, missed)

    def look_if_gone(self) -> None:
        """Raise LogNotFoundError if the log was unlinked or replaced; looks (opening the
        header's name) at most every ``_wait.LOOK_EVERY`` seconds. For readers that found
        nothing new: ``Cursor.poll()`` calls it, so a follower learns that its log is gone.
        (Not ``refresh()``: its hot path is two loads, and a look there would cost a third of it.)"""
        now = time.monotonic()
        if now >= self._look_after:
            self._look_after = now + _wait.LOOK_EVERY
            if not self._reader.exists():
                raise self._reader.gone()

    @property
    def start(self) -> int:
        """The position of the oldest record shown (``end`` if none is)."""
        view = self._view
        return view.chunks[0].start if view.chunks else view.end

    @property
    def end(self) -> int:
        """One past the position of the newest record shown: the log's length at the view."""
        return self._view.end

    @property
    def missed(self) -> int:
        """How many positions the last ``refresh()`` skipped; 0 while the reader keeps up.

        Positions after the previous view's end but not shown by this one: reclaimed before
        it looked, or never written because the writer skipped them."""
        return self._view.missed


    def wait(
        self,
        timeout: float | None = None,
        *,
        until_writer_gone: bool = False,
        linger: float = _wait.LINGER,
        latency: float = 0.0,
    ) -> bool:
        """Block, using no CPU, until there is more to show or the time is up.

        Returns when records newer than this view are published or ``timeout`` seconds
        pass: True if ``refresh()`` will show more. Raises LogNotFoundError once the log is
        unlinked or replaced; with ``until_writer_gone=True`` returns False within about a
        second once no writer holds the claim. ``latency`` (a freshness budget: woken at
        most about once per ``latency`` seconds, at no cost to the writer) and ``linger``
        work as in ``Cursor.wait()``."""
        if linger is not _wait.LINGER:
            linger = _wait.check_linger(linger)
        if latency:
            latency = _wait.check_latency(latency)
        return self._reader.wait_beyond(self.end, timeout, until_writer_gone, self._pace, linger, latency)

    def __len__(self) -> int:
        return self._view.length

    def __iter__(self) -> Iterator[Any]:
        """Every record shown, oldest first, as read-only numpy scalars."""
        return itertools.chain.from_iterable(map(_values, self._view.chunks))

    iter = __iter__

    def chunks(self) -> Chunks:
        """The records shown, one Chunk per segment, oldest first; empty segments are skipped.

        A new list at each call (the chunks view shared memory: no record is copied), with
        ``to_numpy()`` and ``to_pandas()`` for a copy of them all."""
        return Chunks(self._view.chunks, self._reader.dtype)

    def to_numpy(self) -> npt.NDArray[Any]:
        """Every record shown, as one contiguous array (a copy, writable, owned by you)."""
        return self.chunks().to_numpy()

    def latest(self, k: int) -> npt.NDArray[Any]:
        """The newest ``k`` records shown (fewer if the view holds fewer), as one copy."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise InvalidArgumentError(f"latest() takes a count >= 0, not {k!r}")
        parts: list[npt.NDArray[Any]] = []
        for chunk in reversed(self._view.chunks):
            if k <= 0:
                break
            parts.append(chunk.values[-k:])
            k -= len(parts[-1])
        parts.reverse()
        return _concatenate(parts, self._reader.dtype)

    @overload
    def __getitem__(self, index: int) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> npt.NDArray[Any]: ...
    def __getitem__(self, index: int | slice) -> Any:
        """The records shown, by index in the view, as in a list.

        ``snap[0]`` is the oldest record shown, ``snap[-1]`` the newest: indices count in the
        view, not positions (``snap[0]`` is at position ``start``).

        An int gives one record, as the read-only numpy scalar iteration gives; a slice gives
        a copy (writable, owned by you), one contiguous array. Finding a record takes
        O(log segments).
        """
        length = self._view.length
        if isinstance(index, slice):
            picked = range(length)[index]
            if not picked:
                return np.empty(0, self._reader.dtype)
            low, high = min(picked[0], picked[-1]), max(picked[0], picked[-1]) + 1
            copy = _concatenate(self._records(low, high), self._reader.dtype)
            return copy if picked.step == 1 else copy[picked[0] - low :: picked.step].copy()
        try:
            i = operator.index(index)
        except TypeError:
            raise InvalidArgumentError(
                f"a Snapshot is indexed by an int or a slice, not {type(index).__name__}: "
                "snap[-1] is the newest record, snap[-10:] the newest ten"
            ) from None
        if not -length <= i < length:
            raise IndexOutOfRangeError(
                f"index {i} is out of range: the snapshot of {self._reader.name!r} shows "
                f"{length} records (refresh() to see newer ones)"
            )
        k, offset = self._locate(i + length if i < 0 else i)
        return self._view.chunks[k].values[offset]

    def _locate(self, i: int) -> tuple[int, int]:
        """The chunk (its index in the view) holding record ``i`` of the view, and where."""
        chunks: list[Chunk] = self._view.chunks
        first, last = chunks[0].start, chunks[-1]
        if last.start + len(last.values) - first == self._view.length:  # no positions skipped
            k = bisect_right(chunks, first + i, key=_start) - 1
            return k, first + i - chunks[k].start
        for k, chunk in enumerate(chunks):  # Writer.skip_to left gaps: count through
            if i < len(chunk.values):
                return k, i
            i -= len(chunk.values)
        raise AssertionError("unreachable: i < len(self)")

    def _records(self, low: int, high: int) -> list[npt.NDArray[Any]]:
        """Views of records ``[low, high)`` of the view (0 <= low < high <= len(self))."""
        chunks = self._view.chunks
        k, offset = self._locate(low)
        parts, wanted = [], high - low
        while wanted:
            part = chunks[k].values[offset : offset + wanted]
            parts.append(part)
            wanted -= len(part)
            k, offset = k + 1, 0
        return parts

    def since(self, field: str | None, value: Any) -> Chunks:
        """The records shown whose ``field`` is at least ``value``, as zero-copy chunks.

        For a field that only grows (a timestamp, a sequence number): the chunks hold the
        newest records, from the first with ``record[field] >= value`` on, oldest first.
        ``snap.since("ts", time.time() - 10).to_pandas()`` is the last 10 seconds as a
        DataFrame.
        Found by binary search, over segments and then within one. For a log of plain
        values (no fields), pass ``field=None`` to compare the values themselves. If the
        field does not only grow, which records are returned is unspecified.
        """
        column = _column(self._reader.dtype, field, self._reader.name)
        chunks: list[Chunk] = self._view.chunks
        try:  # the first segment whose newest record reaches value
            first = bisect_left(chunks, True, key=lambda chunk: bool(column(chunk.values)[-1] >= value))
            if first == len(chunks):
                return Chunks((), self._reader.dtype)
            chunk = chunks[first]
            k = int(np.searchsorted(column(chunk.values), value, side="left"))
        except (TypeError, ValueError) as exc:
            raise InvalidArgumentError(
                f"since() cannot compare {value!r} with {field or 'the values'} of log "
                f"{self._reader.name!r} ({_field_dtype(self._reader.dtype, field)}): {exc}"
            ) from None
        head = chunk if k == 0 else Chunk(chunk.sequence, chunk.values[k:], chunk.start + k)
        return Chunks([head, *chunks[first + 1 :]], self._reader.dtype)

    def to_pandas(self) -> Any:
        """Every record shown, as a ``pandas.DataFrame`` (a copy) indexed by position.

        The index is named ``"position"``; there is one column per field, or one column,
        ``"value"``, for a log of plain values. Needs pandas:
        ``pip install 'atomic-log-shm[pandas]'``."""
        return self.chunks().to_pandas()

    @property
    def log(self) -> Any:
        """The AtomicLog handle this snapshot reads."""
        return self._log

    def __reduce__(self) -> Any:
        raise NotPicklableError("a Snapshot cannot be pickled: send the log and snapshot it there")

    def __repr__(self) -> str:
        return (
            f"<Snapshot of {self._reader.name!r} positions [{self.start}, {self.end}) "
            f"len={len(self)} segments={len(self._view.chunks)}>"
        )


def _concatenate(parts: list[npt.NDArray[Any]], dtype: Any) -> npt.NDArray[Any]:
    if not parts:
        return np.empty(0, dtype)
    # Join raw bytes: numpy joins structured records field by field, ~10x slower.
    return np.concatenate([np.frombuffer(part, np.uint8) for part in parts]).view(dtype)


def _field_dtype(dtype: np.dtype[Any], field: str | None) -> np.dtype[Any]:
    return dtype if field is None or dtype.names is None or field not in dtype.names else dtype[field]


def _column(dtype: np.dtype[Any], field: str | None, name: str) -> Callable[[Any], Any]:
    """What picks ``field`` out of an array of records, checked against the log's dtype."""
    names = dtype.names
    if names is None:
        if field is not None:
            raise InvalidArgumentError(
                f"log {name!r} holds plain {dtype} values, which have no field {field!r}: "
                "pass field=None to compare the values themselves"
            )
        return _itself
    if field is None:
        raise InvalidArgumentError(
            f"log {name!r} holds records with fields {', '.join(names)}: name the one to "
            f"search, e.g. since({names[0]!r}, value)"
        )
    if field not in names:
        raise InvalidArgumentError(f"log {name!r} has no field {field!r}; its fields are {', '.join(names)}")
    if dtype[field].shape or dtype[field].names:
        raise InvalidArgumentError(
            f"field {field!r} of log {name!r} is {dtype[field]}, not one number or time: "
            "since() searches a field of scalars"
        )
    return operator.itemgetter(field)


def _itself(values: Any) -> Any:
    return values


def data_frame(arrays: Sequence[npt.NDArray[Any]], starts: Sequence[int], dtype: np.dtype[Any]) -> Any:
    """A pandas DataFrame of ``arrays`` (a copy), indexed by position: array ``j``'s first
    record is at ``starts[j]``; one column per field, or one named "value"."""
    try:
        import pandas as pd
    except ImportError:
        raise MissingDependencyError(
            "to_pandas() needs pandas, which is not installed: pip install 'atomic-log-shm[pandas]'"
        ) from None
    data = _concatenate(list(arrays), dtype)
    ranges = [
        np.arange(start, start + len(a), dtype=np.int64) for a, start in zip(arrays, starts, strict=True)
    ]
    index = pd.Index(np.concatenate(ranges) if ranges else np.empty(0, np.int64), name="position")
    columns = {"value": data} if dtype.names is None else {field: data[field] for field in dtype.names}
    return pd.DataFrame(columns, index=index)
