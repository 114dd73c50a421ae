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
from collections.abc import Iterator
from operator import attrgetter
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from ._errors import CorruptLogError, InvalidArgumentError
from ._header import HEAD_WORD
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


# Everything a snapshot shows, as one plain tuple (a refresh makes a new one aside and
# installs it with one attribute store, so an exception at any point leaves the old view or
# the new one; a plain tuple because its unpacking is several times faster than a
# NamedTuple's fields on the hot path):
#   chunks       list[Chunk], never changed once installed
#   length       records shown
#   head         the newest segment shown (or mapped, if it had no records yet)
#   head_start   the position of its record 0
#   head_count   how many of its records are shown
#   head_array   all of it, mapped, for growing the view in place
#   epoch_word   the header words of the head's slot, for the hot path
#   count_word
#   missed       what the refresh that made this view skipped
_View = tuple[list[Chunk], int, int, int, int, npt.NDArray[Any], int, int, int]
_CHUNKS: Final = 0
_LENGTH: Final = 1
_START: Final = 3
_SHOWN: Final = 4
_MISSED: Final = 8


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

    __slots__ = ("_log", "_reader", "_view")
    _view: _View

    def __init__(self, reader: Reader, log: Any) -> None:
        self._reader = reader
        self._log = log
        self._view = reader.consistent(self._view_at)

    def refresh(self) -> None:
        """Replace this view with the log's current one. Cheap when little changed.

        Arrays and iterators obtained before keep showing what they showed. A reader that
        fell further behind than the retained window loses continuity: the view restarts
        at the oldest retained segment, and ``missed`` says how many records it skipped.
        If refresh() raises (an interrupt, a removed log), the view is the one before.
        """
        reader = self._reader
        words = reader.words
        view = self._view
        head = words[HEAD_WORD]  # pairs with the writer's head store, the last of a rollover
        # The hot paths. The head's slot is retired only after the head has moved n segments
        # on, and its epoch is changed first; the head load above saw no move, so the count
        # loaded next is the head's own if the epoch loaded after it still names the head
        # (steps 3 and 4 of the protocol in _reader). Literal indices: this path is measured.
        if head == view[2]:  # the head held
            count = words[view[7]]  # its count word; pairs with the writer's count store
            if count == view[4]:  # nothing new: two loads
                if view[8]:  # the last refresh missed some: this one missed none
                    self._view = (*view[:_MISSED], 0)
                return
        chunks, length, held, start, shown, array, epoch_word, count_word, _ = view
        if head == held and words[epoch_word] == head and shown < count <= reader.layout.segment_capacity:
            grown = chunks[:-1] if shown else chunks[:]  # a new list: the installed one never changes
            grown.append(Chunk(head, array[:count], start))
            length += count - shown
            self._view = (grown, length, head, start, count, array, epoch_word, count_word, 0)
            return
        new = self._advance(view, head) if head > held else None
        if new is None:
            new = reader.consistent(self._view_at)
        _, _, _, new_start, new_shown, *_ = new
        self._view = (*new[:_MISSED], _unseen(new[_CHUNKS], start + shown, new_start + new_shown))

    @property
    def start(self) -> int:
        """The position of the oldest record shown (``end`` if none is)."""
        chunks, _, _, start, shown, *_ = self._view
        return chunks[0].start if chunks else start + shown

    @property
    def end(self) -> int:
        """One past the position of the newest record shown: the log's length at the view."""
        view = self._view
        return view[_START] + view[_SHOWN]

    @property
    def missed(self) -> int:
        """How many positions the last ``refresh()`` skipped: after the previous view's end
        but not shown by this one (reclaimed before it looked, or never written because the
        writer skipped them). 0 while the reader keeps up."""
        return self._view[_MISSED]

    def _advance(self, view: _View, head: int) -> _View | None:
        """The view that keeps the held segments still retained and adds the newer ones;
        None if the writer moved on meanwhile (the caller rebuilds)."""
        reader = self._reader
        chunks, _, held, _, _, held_array, *_ = view
        oldest = head - reader.layout.slot_count + 1
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
        kept = [c for c in chunks if c.sequence >= oldest and c.sequence != held]
        if old_head[1]:
            kept.append(Chunk(held, held_array[: old_head[1]], old_head[0]))
        for seq, array, start, count in added[:-1]:
            if count:
                kept.append(Chunk(seq, array[:count], start))
        seq, array, start, count = added[-1]
        if count:
            kept.append(Chunk(seq, array[:count], start))
        return self._view_of(kept, head, start, count, array)

    def _view_at(self, head: int) -> _View | None:
        """The whole view with ``head`` as the head segment; None if the writer moved on."""
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
        return self._view_of(chunks, head, start, count, head_array)

    def _view_of(
        self, chunks: list[Chunk], head: int, start: int, count: int, head_array: npt.NDArray[Any]
    ) -> _View:
        layout = self._reader.layout
        length = sum(len(c.values) for c in chunks)
        epoch_word, count_word = layout.epoch_word(head), layout.count_word(head)
        return (chunks, length, head, start, count, head_array, epoch_word, count_word, 0)

    def wait(self, timeout: float | None = None) -> bool:
        """Block, using no CPU, until records newer than this view are published or
        ``timeout`` seconds pass. True if ``refresh()`` will show more."""
        return self._reader.wait_beyond(self.end, timeout)

    def __len__(self) -> int:
        return self._view[_LENGTH]

    def __iter__(self) -> Iterator[Any]:
        """Every record shown, oldest first, as read-only numpy scalars."""
        return itertools.chain.from_iterable(map(_values, self._view[_CHUNKS]))

    iter = __iter__

    def chunks(self) -> Iterator[Chunk]:
        """The records shown, one Chunk per segment, oldest first; empty segments are skipped."""
        return iter(self._view[_CHUNKS])

    def to_numpy(self) -> npt.NDArray[Any]:
        """Every record shown, as one contiguous array (a copy, writable, owned by you)."""
        return _concatenate([chunk.values for chunk in self._view[_CHUNKS]], self._reader.dtype)

    def latest(self, k: int) -> npt.NDArray[Any]:
        """The newest ``k`` records shown (fewer if the view holds fewer), as one copy."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise InvalidArgumentError(f"latest() takes a count >= 0, not {k!r}")
        parts: list[npt.NDArray[Any]] = []
        for chunk in reversed(self._view[_CHUNKS]):
            if k <= 0:
                break
            parts.append(chunk.values[-k:])
            k -= len(parts[-1])
        parts.reverse()
        return _concatenate(parts, self._reader.dtype)

    @property
    def log(self) -> Any:
        """The AtomicLog handle this snapshot reads."""
        return self._log

    def __reduce__(self) -> Any:
        raise TypeError("a Snapshot cannot be pickled: send the log and snapshot it there")

    def __repr__(self) -> str:
        return (
            f"<Snapshot of {self._reader.name!r} positions [{self.start}, {self.end}) "
            f"len={len(self)} segments={len(self._view[_CHUNKS])}>"
        )


def _concatenate(parts: list[npt.NDArray[Any]], dtype: Any) -> npt.NDArray[Any]:
    if not parts:
        return np.empty(0, dtype)
    # Join raw bytes: numpy joins structured records field by field, ~10x slower.
    return np.concatenate([np.frombuffer(part, np.uint8) for part in parts]).view(dtype)
