"""Snapshots: stable, zero-copy views of the retained records, refreshed in place.

Reader protocol. A reader writes nothing to shared memory. To read segment ``s`` it:

1. loads ``head`` (the newest segment; pairs with the writer's last store of a rollover);
2. loads the epoch of slot ``s % n``; unless it equals ``s`` the slot describes another
   segment (``s`` was reclaimed, or is being replaced) and ``s`` is not shown;
3. loads the slot's count ``c`` (pairs with the writer's count store after each append);
4. loads the epoch again; unless it still equals ``s`` the writer retired the slot in
   between, and ``c`` may belong to the next occupant: ``s`` is not shown;
5. maps ``/NAME@nonce.s`` read-only (if its name is gone, ``s`` was reclaimed), checks on a
   new mapping that the epoch still equals ``s`` (``AtomicLog._segment``), and shows
   records ``[0, c)``.

Why a torn or unpublished record can never be observed: the writer stores a record before
it stores the count that covers it; on x86-64 stores become visible in program order and
loads are not reordered with older loads, so a reader that loaded ``c`` then loads records
below ``c`` as they were stored. Records below a published count are never stored again
(a new writer resumes at the published count), a name never comes back once taken away,
and the writer reuses a region only when no other process has it open or mapped, so a view
stays valid for as long as its arrays live, after reclamation too. Epochs only grow, so
the check in steps 2 and 4 cannot be fooled by a slot that changed and changed back.
The full argument is in docs/design.md.

Refresh tries three strategies, cheapest first: the same head with (perhaps) more records;
new segments after the ones held (keep what is still retained, add the rest); a rebuild.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from operator import itemgetter
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import numpy.typing as npt

from ._errors import AtomicLogError, CorruptLogError, LogNotFoundError
from ._header import COUNT_OFFSET, EPOCH_OFFSET, HEAD_WORD, Words

if TYPE_CHECKING:
    from ._log import AtomicLog

_REBUILD_TRIES = 1000
_COUNT_AFTER_EPOCH = COUNT_OFFSET - EPOCH_OFFSET
_values = itemgetter(1)
_new_chunk = tuple.__new__  # Chunk(...) without the Python-level __new__ of a NamedTuple


class Chunk(NamedTuple):
    """The records a snapshot shows from one segment."""

    sequence: int
    """The segment's number: 0 for the first segment of the log, then one more each."""
    values: npt.NDArray[Any]
    """A read-only numpy array viewing the segment in shared memory (no copy)."""
    start: int
    """The position of ``values[0]``: records are numbered from 0 since the log was made."""

    def __repr__(self) -> str:
        shown = f"<{len(self.values)} x {self.values.dtype}>"
        return f"Chunk(sequence={self.sequence}, start={self.start}, values={shown})"


def stuck(log: AtomicLog, first: int, last: int) -> AtomicLogError:
    """The error for a reader that never found the head segment whole."""
    if not log._exists():
        return LogNotFoundError(f"log {log.name!r} was unlinked; its segments are gone")
    if first == last:
        return CorruptLogError(f"log {log.name!r}: head segment {first} has no valid slot or region")
    return AtomicLogError(
        f"log {log.name!r}: the writer replaced the head segment {_REBUILD_TRIES} times while "
        "this reader looked; use larger segments"
    )


def published(words: Words, epoch_word: int, seq: int, capacity: int) -> int:
    """How many records of segment ``seq`` are published, or -1 if its slot is not its own."""
    if words[epoch_word] != seq:
        return -1
    count: int = words[epoch_word - EPOCH_OFFSET + COUNT_OFFSET]  # pairs with the writer's count store
    if words[epoch_word] != seq:  # re-check: the slot may have been retired meanwhile
        return -1
    if not 0 <= count <= capacity:
        raise CorruptLogError(f"segment {seq} claims {count} records; it holds {capacity}")
    return count


class Snapshot:
    """A stable view of the records a log retained when it was taken (or last refreshed).

    The arrays it shows view shared memory without copying and never change; holding the
    snapshot (or any of its arrays) keeps their segments mapped, even after the writer
    reclaimed them. ``refresh()`` moves the view forward in place. Records are numbered by
    position, from 0 since the log was made: the view shows positions ``[start, end)``.
    A snapshot is not thread-safe: give each thread its own (they are cheap).
    """

    __slots__ = (
        "_chunks",
        "_head",
        "_head_array",
        "_head_count",
        "_head_start",
        "_head_word",
        "_len",
        "_log",
        "_missed",
    )
    _chunks: list[Chunk]
    _len: int
    _head: int  # the newest segment shown (or mapped, if it had no records yet)
    _head_start: int  # the position of its first record
    _head_word: int  # the header word of its slot's epoch
    _head_count: int  # how many of its records are shown
    _head_array: npt.NDArray[Any]  # all of it, mapped, for growing the view in place
    _missed: int

    def __init__(self, log: AtomicLog) -> None:
        self._log = log
        self._rebuild()
        self._missed = 0

    def refresh(self) -> None:
        """Replace this view with the log's current one. Cheap when little changed.

        Arrays and iterators obtained before keep showing what they showed. A reader that
        fell further behind than the retained window loses continuity: the view restarts
        at the oldest retained segment, and ``missed`` says how many records it skipped.
        """
        log = self._log
        words = log._words
        head = words[HEAD_WORD]
        if head == self._head:
            # The hot paths. The head's slot is retired only after the head has moved n
            # segments on, and its epoch is changed first; the head load above saw no
            # move, so the count loaded next is the head's own if the epoch loaded after
            # it still names the head (the second half of the check in published()).
            count = words[self._head_word + _COUNT_AFTER_EPOCH]
            if count == self._head_count:  # nothing new: two loads
                self._missed = 0
                return
            if words[self._head_word] == head and self._head_count < count <= log._layout.segment_capacity:
                self._missed = 0
                self._grow_head(count)
                return
        elif head > self._head and self._advance(head):
            self._missed = 0
            return
        end = self.end
        self._rebuild()
        self._missed = max(0, self.start - end)

    @property
    def start(self) -> int:
        """The position of the oldest record shown (``end`` if none is)."""
        return self._chunks[0].start if self._chunks else self._head_start + self._head_count

    @property
    def end(self) -> int:
        """One past the position of the newest record shown: the log's length at the view."""
        return self._head_start + self._head_count

    @property
    def missed(self) -> int:
        """How many records the last ``refresh()`` skipped: published after the previous
        view's end but reclaimed before this view's start. 0 while the reader keeps up."""
        return self._missed

    def _grow_head(self, count: int) -> None:
        chunk = _new_chunk(Chunk, (self._head, self._head_array[:count], self._head_start))
        if self._head_count:
            self._chunks[-1] = chunk
        else:
            self._chunks.append(chunk)
        self._len += count - self._head_count
        self._head_count = count

    def _set_head(self, head: int, head_word: int, array: npt.NDArray[Any], count: int) -> None:
        self._head = head
        self._head_start = head * self._log._layout.segment_capacity
        self._head_word = head_word
        self._head_array = array
        self._head_count = count

    def _advance(self, head: int) -> bool:
        """Keep the held segments that are still retained and add the newer ones."""
        log = self._log
        layout = log._layout
        capacity = layout.segment_capacity
        oldest = head - layout.slot_count + 1
        if self._head < oldest:
            return False
        head_word = layout.epoch_word(head)
        count = published(log._words, head_word, head, capacity)
        if count < 0:
            return False
        added = []
        for seq in range(self._head + 1, head + 1):
            array = log._segment(seq)
            if array is None:
                return False
            added.append(array)
        chunks = self._chunks
        # The old head segment is full now that a newer one exists.
        self._grow_head(capacity)
        while chunks and chunks[0].sequence < oldest:
            self._len -= len(chunks.pop(0).values)
        for seq, array in enumerate(added[:-1], self._head + 1):
            chunks.append(Chunk(seq, array, seq * capacity))
        self._len += capacity * (len(added) - 1)
        self._set_head(head, head_word, added[-1], 0)
        if count:
            self._grow_head(count)
        return True

    def _rebuild(self) -> None:
        log = self._log
        words = log._words
        layout = log._layout
        capacity = layout.segment_capacity
        first = head = words[HEAD_WORD]
        for _ in range(_REBUILD_TRIES):
            head = words[HEAD_WORD]
            if head < 0:
                raise CorruptLogError(f"log {log.name!r} has head segment {head}")
            head_word = layout.epoch_word(head)
            count = published(words, head_word, head, capacity)
            head_array = log._segment(head) if count >= 0 else None
            if head_array is None:
                continue  # the writer moved on between our loads; look again
            chunks = [Chunk(head, head_array[:count], head * capacity)] if count else []
            for seq in range(head - 1, max(head - layout.slot_count, -1), -1):
                full = published(words, layout.epoch_word(seq), seq, capacity)
                if full < 0:
                    break  # reclaimed, and every older segment with it
                if full != capacity:
                    raise CorruptLogError(
                        f"log {log.name!r}: segment {seq} is older than the head but holds "
                        f"{full} of {capacity} records"
                    )
                array = log._segment(seq)
                if array is None:
                    break
                chunks.append(Chunk(seq, array, seq * capacity))
            chunks.reverse()
            self._chunks = chunks
            self._len = sum(len(chunk.values) for chunk in chunks)
            self._set_head(head, head_word, head_array, count)
            return
        raise stuck(log, first, head)

    def wait(self, timeout: float | None = None) -> bool:
        """Block, using no CPU, until records newer than this view are published or
        ``timeout`` seconds pass. True if ``refresh()`` will show more."""
        from ._wait import wait_beyond  # _wait builds on this module

        return wait_beyond(self._log, self.end, timeout)

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[Any]:
        """Every record shown, oldest first, as read-only numpy scalars."""
        return itertools.chain.from_iterable(map(_values, tuple(self._chunks)))

    iter = __iter__

    def chunks(self) -> Iterator[Chunk]:
        """The records shown, one Chunk per segment, oldest first; empty segments are skipped."""
        return iter(tuple(self._chunks))

    def to_numpy(self) -> npt.NDArray[Any]:
        """Every record shown, as one contiguous array (a copy, writable, owned by you)."""
        return _concatenate([chunk.values for chunk in self._chunks], self._log.dtype)

    def latest(self, k: int) -> npt.NDArray[Any]:
        """The newest ``k`` records shown (fewer if the view holds fewer), as one copy."""
        if k < 0:
            raise ValueError(f"latest() takes a count >= 0, not {k}")
        parts: list[npt.NDArray[Any]] = []
        for chunk in reversed(self._chunks):
            if k <= 0:
                break
            parts.append(chunk.values[-k:])
            k -= len(parts[-1])
        parts.reverse()
        return _concatenate(parts, self._log.dtype)

    @property
    def log(self) -> AtomicLog:
        """The log handle this snapshot reads."""
        return self._log

    def __reduce__(self) -> Any:
        raise TypeError("a Snapshot cannot be pickled: send the log and snapshot it there")

    def __repr__(self) -> str:
        return (
            f"<Snapshot of {self._log.name!r} positions [{self.start}, {self.end}) "
            f"len={self._len} segments={len(self._chunks)}>"
        )


def _concatenate(parts: list[npt.NDArray[Any]], dtype: Any) -> npt.NDArray[Any]:
    if not parts:
        return np.empty(0, dtype)
    # Join raw bytes: numpy joins structured records field by field, ~10x slower.
    return np.concatenate([np.frombuffer(part, np.uint8) for part in parts]).view(dtype)
