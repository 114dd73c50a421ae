"""Cursors: follow a log from a position, taking what was published since the last look.

A cursor is a snapshot plus a position. ``poll()`` refreshes the snapshot and hands out the
records at and after the position, as zero-copy views (one per segment touched), then moves
the position to the snapshot's end. Readers still register nowhere: a cursor that falls
behind the retained window learns how many records it missed and carries on from the
oldest retained one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import numpy.typing as npt

from ._snapshot import Snapshot
from ._wait import wait_beyond

if TYPE_CHECKING:
    from ._log import AtomicLog


class Poll(NamedTuple):
    """What one ``Cursor.poll()`` found."""

    arrays: list[npt.NDArray[Any]]
    """The new records, oldest first: read-only views of shared memory, one per segment."""
    missed: int
    """How many records were published since the last poll but reclaimed before this one."""
    start: int
    """The position of the first record of ``arrays``."""


class Cursor:
    """A reader's place in a log. Create with ``log.cursor(start)``; not thread-safe."""

    __slots__ = ("_position", "_snapshot")

    def __init__(self, log: AtomicLog, start: int | str = "oldest") -> None:
        self._snapshot = snapshot = Snapshot(log)
        if start == "oldest":
            self._position = snapshot.start
        elif start == "newest":
            self._position = snapshot.end
        elif isinstance(start, int) and not isinstance(start, bool) and start >= 0:
            self._position = start
        else:
            raise ValueError(f"a cursor starts at 'oldest', 'newest' or a position >= 0, not {start!r}")

    @property
    def position(self) -> int:
        """The position of the next record this cursor will return."""
        return self._position

    def poll(self) -> Poll:
        """The records published since the last poll (none if nothing new), and the loss."""
        snapshot = self._snapshot
        snapshot.refresh()
        position = self._position
        missed = 0
        if position < snapshot.start:
            missed = snapshot.start - position
            position = snapshot.start
        arrays: list[npt.NDArray[Any]] = []
        for chunk in reversed(snapshot._chunks):
            skip = position - chunk.start
            if skip >= len(chunk.values):
                break
            arrays.append(chunk.values[max(skip, 0) :])
        arrays.reverse()
        self._position = max(position, snapshot.end)
        return Poll(arrays, missed, position)

    def wait(self, timeout: float | None = None) -> bool:
        """Block, using no CPU, until a record at or after ``position`` is published or
        ``timeout`` seconds pass. True if there is something to poll."""
        return wait_beyond(self._snapshot.log, self._position, timeout)

    async def wait_async(self, timeout: float | None = None) -> bool:
        """``wait()`` for asyncio: never blocks the event loop. True if there is news."""
        return await self._snapshot.log._async_waker().wait(self._position, timeout)

    def __repr__(self) -> str:
        return f"<Cursor of {self._snapshot.log.name!r} at position {self._position}>"
