"""The read side of a log: the header as a reader sees it, and the one way to read it.

A ``Reader`` is one process's read-only view of one log: the header mapped read-only, its
layout, the segments this process has mapped, and the wait region (mapped only by readers
that wait). Snapshots, cursors, waits and ``info()`` read a log through it and nothing
else; ``AtomicLog`` is a front over it.

Reader protocol. A reader writes nothing to the header or to a segment. To read segment
``s`` it:

1. loads ``head``, the newest segment (pairs with the writer's head store, the last store
   of a rollover);
2. loads the epoch of slot ``s % n``; unless it equals ``s`` the slot describes another
   segment (``s`` was reclaimed, or is being replaced) and ``s`` is not shown;
3. loads the slot's start and count (the count pairs with the writer's count store after
   each append; the start with its start store, made before the epoch names ``s``);
4. loads the epoch again; unless it still equals ``s`` the writer retired the slot in
   between, and what step 3 loaded may belong to the next occupant: ``s`` is not shown;
5. to map the segment's region (``segment()``, once per segment per process): loads the
   epoch, the slot's token (which names the region; it pairs with the writer's token
   store, made before the epoch names ``s``) and the epoch again, as in steps 2 to 4;
   maps the region by that name read-only (if it is gone, ``s`` was reclaimed); checks on
   the new mapping that the epoch still equals ``s``; and shows records ``[0, count)`` at
   positions ``start + i``.

Why a torn or unpublished record can never be observed: the writer stores a record, then
release-stores the count that covers it; a reader loads the count, passes an acquire fence
(``_platform``), then loads the records below it, which it therefore sees as they were
stored, on x86-64 and aarch64 alike. Each load of the protocol above is followed by an
acquire fence before the loads that depend on it, pairing with the writer's fence before
the store it observes. Records below a published count are never stored
again (a new writer resumes at the published count), a name never comes back once taken
away, and the writer reuses a region only when no reader holds the shared lock every
reader takes on a segment it maps (the lock lives as long as the mapping), so a view stays
valid for as long as its arrays live, after reclamation too. Epochs only grow, so the
checks of steps 2 and 4 cannot be fooled by a slot that changed and changed back. The full
argument is in docs/design.md ("Memory ordering").

A rollover can move the head between any two of these loads. Every read that needs a
consistent picture goes through ``consistent()``: one retry loop, one limit, one error.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from . import _claim, _segment, _shm, _wait
from ._errors import AtomicLogError, CorruptLogError, LogClosedError, LogNotFoundError, NotALogError
from ._header import (
    FIXED,
    GONE,
    HEAD_WORD,
    HELD_WORD,
    MAGIC,
    Layout,
    Words,
    declared_size,
    read_layout,
    read_nonce,
)
from ._platform import ACQUIRE, SEQ_CST, fence
from ._segment import Records

_T = TypeVar("_T")

TRIES = 1000  # rollovers a reader sits through before it gives up on one reading


class _ClosedWords:
    """Stands in for the header words of a closed reader: any read raises."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __getitem__(self, index: int, /) -> int:
        raise LogClosedError(f"the handle on log {self._name!r} was closed; attach again to read")


class Reader:
    """One process's read-only view of a log (see the module docstring for the protocol).

    ``words`` is the header as int64 words: the hot paths of snapshots index it directly,
    with the word indices ``layout`` gives.
    """

    __slots__ = (
        "_region",
        "_segments",
        "_slot_words",
        "_waiter",
        "_waits",
        "identity",
        "layout",
        "name",
        "words",
    )

    words: Words

    def __init__(self, name: str, nonce: int | None = None) -> None:
        path = _shm.header_path(name)
        opened = _shm.open_region(path)
        if opened is None:
            raise LogNotFoundError(f"no log named {name!r} (nothing at {_shm.SHM_DIR}/{name})")
        file, st = opened
        with file:
            if st.st_size < FIXED.itemsize:  # empty only while its creator reserves its memory
                raise NotALogError(f"{_shm.SHM_DIR}/{name} is {st.st_size} bytes: too small for a log header")
            # Map only what the header says it is, at most: a file planted under the name
            # may be huge (and sparse). The magic first, as read_layout() reads it.
            magic = os.pread(file.fileno(), len(MAGIC), 0)
            fence(ACQUIRE)  # pairs with the creator's fence before its magic store (write_header)
            size = FIXED.itemsize
            if magic == MAGIC:
                size = declared_size(os.pread(file.fileno(), FIXED.itemsize, 0))
            region = _shm.map_file(file, path, min(size, st.st_size))
        self.identity = (st.st_dev, st.st_ino)  # which header this handle reads
        try:
            layout = read_layout(region, f"log {name!r}")
            if nonce is not None and layout.nonce != nonce:
                raise LogNotFoundError(f"the log {name!r} was removed and replaced by another")
        except BaseException:
            region.close()
            raise
        self.name = name
        self.layout: Layout = layout
        self._region = region
        self.words = memoryview(region)[: layout.header_size].cast("q")
        self._segments: dict[int, Records] = {}
        self._slot_words = (-1, 0, 0, 0)  # (seq, its epoch, start and count words): slot()'s cache
        self._waits: _wait.WaitRegion | bool | None = False  # False: not opened yet
        self._waiter: _wait.AsyncWaker | None = None

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.layout.dtype

    @property
    def closed(self) -> bool:
        return isinstance(self.words, _ClosedWords)

    # -- the protocol -----------------------------------------------------------------------

    def slot(self, seq: int) -> tuple[int, int] | None:
        """``(start, count)`` of segment ``seq`` as published now, or None if its slot
        describes another segment (steps 2 to 4 of the protocol)."""
        words = self.words
        cached = self._slot_words  # the words of the last segment asked about: mostly the head
        if cached[0] != seq:
            layout = self.layout
            words_of = (layout.epoch_word(seq), layout.start_word(seq), layout.count_word(seq))
            cached = self._slot_words = (seq, *words_of)
        _, epoch_word, start_word, count_word = cached
        if words[epoch_word] != seq:
            return None
        fence(ACQUIRE)  # the epoch before the words it covers: pairs with the writer's fence before it
        start: int = words[start_word]  # pairs with the writer's start store in a rollover
        count: int = words[count_word]  # pairs with the writer's release store of the count
        # The words before the epoch's re-check, and before the records the count covers;
        # pairs with the writer's fence after its retiring store, and its release of the count.
        fence(ACQUIRE)
        if words[epoch_word] != seq:  # re-check: the slot may have been retired meanwhile
            return None
        if not 0 <= count <= self.layout.segment_capacity or start < 0:
            raise CorruptLogError(
                f"log {self.name!r}: segment {seq} claims {count} records from position {start}; "
                f"it holds {self.layout.segment_capacity}"
            )
        return start, count

    def consistent(self, attempt: Callable[[int], _T | None]) -> _T:
        """``attempt(head)`` for the head loaded now, again while it returns None (the writer
        moved on between its loads), up to ``TRIES`` times."""
        words = self.words
        first = head = words[HEAD_WORD]
        for _ in range(TRIES):
            head = words[HEAD_WORD]  # pairs with the writer's head store, the last of a rollover
            fence(ACQUIRE)  # the head before the slots: pairs with the writer's fence before its store
            if head < 0:
                raise self._bad_head(head)
            result = attempt(head)
            if result is not None:
                return result
        raise self._stuck(first, head)

    def _bad_head(self, head: int) -> AtomicLogError:
        if head == GONE:
            return self.gone()
        return CorruptLogError(f"log {self.name!r} has head segment {head}")

    def gone(self) -> LogNotFoundError:
        """The error of every read of a log that was removed (marked, or found by a look)."""
        return LogNotFoundError(f"log {self.name!r} was unlinked or replaced; attach to the new one, if any")

    def end(self) -> int:
        """One past the newest published position (the log's length, in positions)."""
        head = self.words[HEAD_WORD]  # pairs with the writer's head store, the last of a rollover
        fence(ACQUIRE)  # the head before its slot: as in consistent()
        slot = self.slot(head) if head >= 0 else None
        if slot is not None:  # the common case, and a waiter's every look: no closure, no loop
            return slot[0] + slot[1]
        return self.consistent(self._end_at)

    def _end_at(self, head: int) -> int | None:
        slot = self.slot(head)
        return None if slot is None else slot[0] + slot[1]

    def retained(self) -> tuple[int, list[tuple[int, int, int]]]:
        """The head segment and ``(sequence, start, count)`` of each retained segment, oldest
        first, as one reading: the head did not move while the slots were read."""

        def attempt(head: int) -> tuple[int, list[tuple[int, int, int]]] | None:
            found = []
            for seq in range(head, max(head - self.layout.slot_count, -1), -1):
                slot = self.slot(seq)
                if slot is None:
                    break  # reclaimed, and every older segment with it
                found.append((seq, *slot))
            fence(ACQUIRE)  # the slots before the head's re-check: as in slot()'s re-check of its epoch
            if self.words[HEAD_WORD] != head:
                return None
            return head, found[::-1]

        return self.consistent(attempt)

    def segment(self, seq: int) -> Records | None:
        """Segment ``seq`` mapped read-only (the whole of it, published or not: callers
        show only the published prefix), from this process's cache; None if reclaimed."""
        segments = self._segments
        array = segments.get(seq)
        if array is None:
            words = self.words
            layout = self.layout
            epoch_word = layout.epoch_word(seq)
            if words[epoch_word] != seq:
                return None
            fence(ACQUIRE)  # as in slot(): the epoch before the token
            token = words[layout.token_word(seq)]  # pairs with the writer's token store in a rollover
            fence(ACQUIRE)  # as in slot(): the token before the re-check
            if words[epoch_word] != seq:  # re-check: the token may be the next occupant's
                return None
            try:
                array = _segment.open_readonly(self.name, layout, seq, token)
            except CorruptLogError:  # too short to be segment seq: unless seq is still
                if words[epoch_word] != seq:  # published, the name was reclaimed and taken
                    return None  # by someone else (/dev/shm is world-writable)
                raise
            # Look at the slot again now that the lock and mapping exist: the writer retires
            # a slot before it tests a region's lock for reuse, so a region opened by its old
            # name but locked after that test is never taken as `seq`, and once a name is
            # gone anyone may create a file under it (docs/design.md, "Reusing pages"). The
            # lock before that load: pairs with the writer's fence before its lock test.
            fence(SEQ_CST)
            if array is None or words[epoch_word] != seq:
                return None
            segments[seq] = array
            if len(segments) > layout.slot_count:
                newest = max(segments)
                for old in [s for s in segments if s <= newest - layout.slot_count]:
                    del segments[old]  # snapshots holding it keep their own reference
        return array

    def exists(self) -> bool:
        """Whether this log still has its name (and it was not given to another log)."""
        fixed = _shm.read_region(_shm.header_path(self.name), FIXED.itemsize)
        return fixed is not None and read_nonce(fixed) == self.layout.nonce

    def _stuck(self, first: int, last: int) -> AtomicLogError:
        """The error for a reader that never found the head segment whole."""
        if not self.exists():
            return LogNotFoundError(f"log {self.name!r} was unlinked; its segments are gone")
        if first == last:
            return CorruptLogError(f"log {self.name!r}: head segment {first} has no valid slot or region")
        return AtomicLogError(
            f"log {self.name!r}: the writer replaced the head segment {TRIES} times while "
            "this reader looked; use larger segments"
        )

    # -- waiting ----------------------------------------------------------------------------

    def wait_beyond(
        self,
        position: int,
        timeout: float | None,
        until_writer_gone: bool = False,
        pace: _wait.Pace | None = None,
        linger: float = 0.0,
        latency: float = 0.0,
    ) -> bool:
        """Block, using no CPU, until the log's end passes ``position`` or ``timeout``
        seconds pass. True if it did. Raises LogNotFoundError within about a second once
        the log is unlinked or replaced; with ``until_writer_gone``, returns False within
        about a second once no writer holds the claim. With a ``pace`` (the follower's):
        a ``latency`` > 0 is the follower's freshness budget (``_wait.paced``); else a wait
        that finds records already there may linger (``_wait.Pace``)."""
        timeout = _wait.check_seconds(timeout)
        still = self._still(until_writer_gone)
        if pace is not None and latency:
            found = _wait.sleeping(_wait.paced(self.end, position, timeout, latency, pace, still))
        else:
            pause = self._pause(position, timeout, pace, linger)  # the one look before waiting
            if pause:
                time.sleep(pause)
            region = self._wait_region()
            found = pause is not None or _wait.wait_until(region, self.end, position, timeout, still)
        if pace is not None:
            pace.returned = time.monotonic()
        return found

    async def wait_beyond_async(
        self,
        position: int,
        timeout: float | None,
        until_writer_gone: bool = False,
        pace: _wait.Pace | None = None,
        linger: float = 0.0,
        latency: float = 0.0,
    ) -> bool:
        """``wait_beyond()`` for asyncio: the event loop never blocks."""
        timeout = _wait.check_seconds(timeout)
        if pace is not None and latency:
            paced = _wait.paced(self.end, position, timeout, latency, pace, self._still(until_writer_gone))
            found = await _wait.sleeping_async(paced)
        else:
            pause = self._pause(position, timeout, pace, linger)
            if pause:
                await asyncio.sleep(pause)
            found = pause is not None or await self._wake_async(position, timeout, until_writer_gone)
        if pace is not None:
            pace.returned = time.monotonic()
        return found

    async def _wake_async(self, position: int, timeout: float | None, until_writer_gone: bool) -> bool:
        """The futex wait for asyncio, through this handle's one waker thread; in slices,
        looking at the claim between them, with ``until_writer_gone``."""
        waiter = self._waiter
        if waiter is None:
            waiter = self._waiter = _wait.AsyncWaker(self.name, self.end, self.wait_beyond)
        if not until_writer_gone:
            return await waiter.wait(position, timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:  # no writes, no locks: a look at the held region between slices
            look = _wait.LOOK_EVERY
            left = look if deadline is None else min(look, deadline - time.monotonic())
            if await waiter.wait(position, max(left, 0.0)):
                return True
            if not self.writer_active() or left < look:
                return False

    def _still(self, until_writer_gone: bool) -> Callable[[], bool]:
        """What a wait asks every ``LOOK_EVERY`` seconds: raise if the log is gone; False
        (stop waiting) once no writer holds the claim, with ``until_writer_gone``."""

        def still() -> bool:
            if not self.exists():
                raise self.gone()
            return not until_writer_gone or self.writer_active()

        return still

    def _wait_region(self) -> _wait.WaitRegion | None:
        """The wait region, mapped at the first wait; None where this process may not."""
        if self._waits is False:
            self.words[0]  # raises LogClosedError on a closed reader
            self._waits = _wait.WaitRegion.open(self.name, self.layout.nonce)
        assert self._waits is not True
        return self._waits

    def _pause(
        self, position: int, timeout: float | None, pace: _wait.Pace | None, linger: float
    ) -> float | None:
        """With records beyond ``position`` already there, how long a wait lingers first
        (``_wait.Pace``: 0 without a pace); None, ending the follower's streak, if there
        are none (then ``_wait.wait_until`` waits for them)."""
        waiting = self.end() - position
        if waiting <= 0:
            if pace is not None:
                pace.streak = 0
            return None
        return 0.0 if pace is None else pace.pause(waiting, linger, timeout, self.layout.retained_capacity)

    def writer_active(self) -> bool:
        """Whether some writer holds the claim on this log now (taking nothing, writing
        nothing, in any pid namespace: ``_claim.held``)."""
        token = self.words[HELD_WORD]  # pairs with the claim's token store, after it locked the region
        fence(ACQUIRE)  # the token before the look at its region; pairs with the claim's fence
        return _claim.held(self.name, self.layout.nonce, token)

    # -- the end ----------------------------------------------------------------------------

    def close(self) -> None:
        """Unmap the header and forget the segments (views already made stay). Idempotent."""
        words = self.words
        if isinstance(words, memoryview):
            self.words = _ClosedWords(self.name)
            words.release()
            self._region.close()
            self._segments.clear()
            if isinstance(self._waits, _wait.WaitRegion):
                self._waits.close()
            self._waits = None

