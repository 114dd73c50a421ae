"""Cursors: follow a log from a position, taking what was published since the last look.

A cursor is a snapshot plus a position. ``poll()`` refreshes the snapshot and hands out the
records at and after the position, as zero-copy views (one per segment touched), then moves
the position to the snapshot's end. Readers still register nowhere: a cursor that falls
behind the retained window learns how many records it missed and carries on from the
oldest retained one. Positions the writer skipped (``Writer.skip_to``) count as missed too.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import numpy.typing as npt

from . import _wait
from ._errors import InvalidArgumentError, NotPicklableError
from ._reader import Reader
from ._snapshot import Snapshot, _concatenate, data_frame


class Poll:
    """What one ``Cursor.poll()`` found: ``len(poll)`` is the number of new records."""

    __slots__ = ("_dtype", "arrays", "missed", "start")

    arrays: list[npt.NDArray[Any]]
    """The new records, oldest first: read-only views of shared memory, one per segment."""
    missed: int
    """How many positions before ``start`` this cursor will never see: published but
    reclaimed before it looked, or never written (``Writer.skip_to``)."""
    start: int
    """The position of the first record of ``arrays``; the arrays are contiguous, so record
    ``j`` of them all is at ``start + j``."""

    def __init__(self, arrays: list[npt.NDArray[Any]], missed: int, start: int, dtype: np.dtype[Any]) -> None:
        self.arrays = arrays
        self.missed = missed
        self.start = start
        self._dtype = dtype

    def to_numpy(self) -> npt.NDArray[Any]:
        """The new records, as one contiguous array (a copy, writable, owned by you)."""
        return _concatenate(self.arrays, self._dtype)

    def to_pandas(self) -> Any:
        """The new records, as a ``pandas.DataFrame`` (a copy) indexed by position.

        The index is named ``"position"``; there is one column per field, or one column,
        ``"value"``, for a log of plain values. Needs pandas:
        ``pip install 'atomic-log-shm[pandas]'``."""
        starts = itertools.accumulate((len(a) for a in self.arrays), initial=self.start)
        return data_frame(self.arrays, list(starts)[: len(self.arrays)], self._dtype)

    def __len__(self) -> int:
        return sum(len(a) for a in self.arrays)

    def __repr__(self) -> str:
        return f"<Poll of {len(self)} records from position {self.start}, {self.missed} missed>"


class Cursor:
    """A reader's place in a log. Create with ``log.cursor(start)``; not thread-safe."""

    __slots__ = ("_pace", "_position", "_reader", "_snapshot")

    def __init__(self, reader: Reader, log: Any, start: int | str = "oldest") -> None:
        if not (start in ("oldest", "newest") or (type(start) is int and start >= 0)):
            raise InvalidArgumentError(
                f"a cursor starts at 'oldest', 'newest' or a position >= 0, not {start!r}"
            )
        self._reader = reader
        self._snapshot = snapshot = Snapshot(reader, log)
        if start == "oldest":
            self._position = snapshot.start
        elif start == "newest":
            self._position = snapshot.end
        else:
            assert isinstance(start, int)
            self._position = start
        self._pace = _wait.Pace()  # for lingering in wait()

    @property
    def position(self) -> int:
        """The position of the next record this cursor will return."""
        return self._position

    @property
    def log(self) -> Any:
        """The AtomicLog handle this cursor follows."""
        return self._snapshot.log

    def poll(self) -> Poll:
        """The records published since the last poll (none if nothing new), and the loss.

        Raises LogNotFoundError once the log is unlinked or replaced: at once when its
        remover could mark it (the usual case), else within about a second."""
        snapshot = self._snapshot
        snapshot.refresh()
        position = self._position
        end = snapshot.end
        if position >= end:  # nothing new: has the log gone? (looked at every 0.5 s at most)
            snapshot.look_if_gone()
            return Poll([], 0, position, self._reader.dtype)
        chunks = snapshot.chunks()
        first = len(chunks)  # the oldest chunk that holds positions at or after `position`
        while first and chunks[first - 1].start + len(chunks[first - 1].values) > position:
            first -= 1
        if first == len(chunks):  # nothing shown from `position` on: all of it is lost
            self._position = end
            return Poll([], end - position, end, self._reader.dtype)
        chunk = chunks[first]
        start = max(position, chunk.start)
        arrays = [chunk.values[start - chunk.start :]]
        reached = chunk.start + len(chunk.values)
        for chunk in chunks[first + 1 :]:
            if chunk.start != reached:
                break  # a gap (positions never written): the next poll reports it
            arrays.append(chunk.values)
            reached += len(chunk.values)
        batch = Poll(arrays, start - position, start, self._reader.dtype)
        # The only store, and the return on the same line: an interrupt (a line event, or a
        # signal handler, which runs only at calls and jumps) comes before both or after
        # both, so the cursor never moves past records it did not hand out.
        self._position = reached; return batch  # noqa: E702  # fmt: skip

    def wait(
        self,
        timeout: float | None = None,
        *,
        until_writer_gone: bool = False,
        linger: float = _wait.LINGER,
        latency: float = 0.0,
    ) -> bool:
        """Block, using no CPU, until there is something to poll or the time is up.

        Returns when a record at or after ``position`` is published or ``timeout`` seconds
        pass: True if there is something to poll. Raises LogNotFoundError once the log is
        unlinked or replaced by a new log of the same name (at once when its remover could
        mark it, else within about a second). With ``until_writer_gone=True`` it also
        returns False within about a second once no writer holds the claim (see
        ``log.info().writer_active``).

        ``latency`` is this follower's freshness budget, in seconds. With ``latency=0`` (the
        default) a follower is woken as soon as a record is published. With ``latency=L``
        it may learn of a record up to about ``L`` seconds after it was published (plus
        scheduling), and in exchange returns at most about once per ``L`` seconds, taking
        what came as one batch: it looks at the log every ``L`` seconds and never asks the
        writer to wake it, so the writer does nothing for it. A dashboard that redraws a
        few times a second wants ``latency=0.1``. Such a follower learns that the log is
        gone at its next look.

        Without a budget, a follower that finds records already waiting every time it
        comes back (its writer is faster than its loop) is held until ``linger`` seconds
        (default 1 ms) after wait() last returned, so it takes them in batches instead of
        spinning through a record or two at a time. Only after 8 such waits in a row, while
        records come faster than 100,000 a second, never past ``timeout``, and never so long
        that more than a quarter of the retained window could arrive meanwhile. ``linger=0``
        turns it off."""
        if linger is not _wait.LINGER:
            linger = _wait.check_linger(linger)
        if latency:
            latency = _wait.check_latency(latency)
        return self._reader.wait_beyond(
            self._position, timeout, until_writer_gone, self._pace, linger, latency
        )

    async def wait_async(
        self,
        timeout: float | None = None,
        *,
        until_writer_gone: bool = False,
        linger: float = _wait.LINGER,
        latency: float = 0.0,
    ) -> bool:
        """``wait()`` for asyncio: never blocks the event loop. True if there is news.

        ``until_writer_gone``, ``linger`` and ``latency`` work as in ``wait()``."""
        if linger is not _wait.LINGER:
            linger = _wait.check_linger(linger)
        if latency:
            latency = _wait.check_latency(latency)
        return await self._reader.wait_beyond_async(
            self._position, timeout, until_writer_gone, self._pace, linger, latency
        )

    def __reduce__(self) -> Any:
        raise NotPicklableError("a Cursor cannot be pickled: send the log and make a cursor there")

    def __repr__(self) -> str:
        return f"<Cursor of {self._reader.name!r} at position {self._position}>"
