"""The log handle: creates, attaches, claims the writer, takes snapshots, cleans up."""

from __future__ import annotations

import numbers
import os
import platform
import secrets
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from . import _header, _segment, _shm, _wait
from ._claim import Claim
from ._cursor import Cursor, Poll
from ._errors import (
    AtomicLogError,
    DtypeMismatchError,
    InvalidArgumentError,
    LogClosedError,
    LogNotFoundError,
    NotALogError,
    UnsupportedPlatformError,
)
from ._header import Words
from ._segment import Records
from ._snapshot import Snapshot
from ._writer import Writer

# The publication protocol needs stores seen in program order and loads not reordered with
# older loads (x86-64's TSO), and aligned 8-byte stores and loads that are never torn.
# Weaker CPUs (aarch64, POWER) need barriers that pure Python cannot issue: refuse there.
_PLATFORM_OK = sys.platform.startswith("linux") and platform.machine().lower() in ("x86_64", "amd64")


def _check_platform() -> None:
    if not _PLATFORM_OK:
        raise UnsupportedPlatformError(
            f"atomic-log-shm runs on Linux x86-64 only, not {sys.platform}/{platform.machine()}: "
            "its lock-free protocol relies on x86-64 memory ordering (see docs/design.md)"
        )


def _check_capacity(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidArgumentError(f"{what} must be an int, not {type(value).__name__}")
    if value <= 0:
        raise InvalidArgumentError(f"{what} must be at least 1, got {value}")
    return int(value)


def _check_mode(mode: object) -> int:
    if isinstance(mode, bool) or not isinstance(mode, int):
        raise InvalidArgumentError(f"mode must be an int such as 0o600, not {type(mode).__name__}")
    if mode & ~0o666 or not mode & 0o600 == 0o600:
        raise InvalidArgumentError(
            f"mode {mode:#o} must give the owner read and write and nobody execute (e.g. 0o600, 0o640)"
        )
    return mode


class _ClosedWords:
    """Stands in for the header words of a closed handle: any read raises."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __getitem__(self, index: int, /) -> int:
        raise LogClosedError(f"the handle on log {self._name!r} was closed; attach again to read")


class AtomicLog:
    """A handle on a shared-memory log: one writer, any number of readers, any processes.

    Create one with ``new()`` or ``new_claimed()``; open an existing one from any process
    with ``attach(name)``. A handle maps the log read-only: readers never write to shared
    memory and never register. Handles can be pickled; they re-attach by name.
    """

    __slots__ = (
        "__weakref__",
        "_layout",
        "_name",
        "_owner",
        "_region",
        "_segments",
        "_waits",
        "_waker",
        "_words",
    )
    _waker: _wait.AsyncWaker | None

    def __init__(self, name: str, *, _nonce: int | None = None, _owner: bool = False) -> None:
        _check_platform()
        region = _shm.open_read(_shm.header_path(name))
        if region is None:
            raise LogNotFoundError(f"no log named {name!r} (nothing at {_shm.SHM_DIR}/{name})")
        try:
            layout = _header.read_layout(region, f"log {name!r}")
            if _nonce is not None and layout.nonce != _nonce:
                raise LogNotFoundError(f"the log {name!r} was removed and replaced by another")
        except BaseException:
            region.close()
            raise
        self._name = name
        self._layout = layout
        self._region = region
        self._words: Words = memoryview(region)[: layout.header_size].cast("q")
        self._segments: dict[int, Records] = {}
        self._owner = _owner
        self._waits: _wait.WaitRegion | bool | None = False  # False: not opened yet
        self._waker = None

    @classmethod
    def new(
        cls,
        *,
        retained: int,
        segment: int,
        dtype: Any,
        name: str | None = None,
        mode: int = 0o600,
    ) -> AtomicLog:
        """Create a log in shared memory, with no writer, and return a handle on it.

        At least ``retained`` records stay readable: whole segments of ``segment`` records
        are kept, ``ceil(retained / segment) + 1`` of them.
        ``name=None`` picks a unique name (see ``.name``). Regions get permissions ``mode``
        (owner-only by default). Used as a context manager, the log is unlinked on exit.
        """
        retained_capacity = _check_capacity(retained, "retained")
        segment_capacity = _check_capacity(segment, "segment")
        dt = _header.check_dtype(dtype)
        name = _shm.check_name(name) if name is not None else f"alog-{os.getpid()}-{secrets.token_hex(6)}"
        mode = _check_mode(mode)
        _check_platform()
        if segment_capacity * dt.itemsize > _header.MAX_SEGMENT_BYTES:
            raise InvalidArgumentError(f"a segment of {segment_capacity} x {dt.itemsize} bytes is too large")
        if _header.slot_count(retained_capacity, segment_capacity) > _header.MAX_SLOTS:
            raise InvalidArgumentError(
                f"{retained_capacity} / {segment_capacity} makes more than {_header.MAX_SLOTS} "
                "segments; use larger segments"
            )
        layout = _header.new_layout(secrets.randbits(64), retained_capacity, segment_capacity, dt)
        path = _shm.header_path(name)
        fd, region = _shm.create(path, layout.header_size, mode)
        os.close(fd)
        try:
            _segment.create(name, layout, 0, mode).close()
            _wait.create(name, layout.nonce, mode)
            _header.write_header(region, layout, time.time_ns())
        except BaseException:
            _segment.unlink(name, layout, 0)
            _shm.unlink_quietly(_shm.wait_path(name, layout.nonce))
            _shm.unlink_quietly(path)
            raise
        finally:
            region.close()
        return cls(name, _nonce=layout.nonce, _owner=True)

    @classmethod
    def new_claimed(
        cls,
        *,
        retained: int,
        segment: int,
        dtype: Any,
        name: str | None = None,
        mode: int = 0o600,
    ) -> tuple[Writer, AtomicLog]:
        """``new()``, then claim its writer: returns ``(writer, log)``."""
        log = cls.new(retained=retained, segment=segment, dtype=dtype, name=name, mode=mode)
        writer = log.try_claim_writer()
        if writer is None:  # only if another process claimed the brand-new log first
            log.close()
            raise AtomicLogError(f"log {log.name!r} was claimed by another process as it was made")
        return writer, log

    @classmethod
    def attach(cls, name: str, *, dtype: Any = None) -> AtomicLog:
        """Open the existing log ``name`` read-only, from any process.

        The dtype is read from the log; if ``dtype`` is given and differs, DtypeMismatchError.
        """
        name = _shm.check_name(name)
        wanted = _header.check_dtype(dtype) if dtype is not None else None
        log = cls(name)
        if wanted is not None and wanted != log.dtype:
            log.close()
            raise DtypeMismatchError(f"log {name!r} holds records of {log.dtype}, not {wanted}")
        return log

    def try_claim_writer(self) -> Writer | None:
        """Return the log's Writer, or None while a writer in any process holds the claim.

        A writer's claim ends when it is closed or collected, or its process dies (also by
        SIGKILL); the new writer continues the same log, nothing lost or repeated.
        """
        self._words[0]  # raises LogClosedError on a closed handle
        claim = Claim.try_acquire(self._name, self._layout.nonce)
        if claim is None:
            return None
        mode = os.fstat(claim.fileno()).st_mode & 0o777  # new segments get the header's mode
        return Writer(self, claim, mode)

    def snapshot(self) -> Snapshot:
        """Capture a stable, zero-copy view of the records retained now."""
        return Snapshot(self)

    def cursor(self, start: int | str = "oldest") -> Cursor:
        """A Cursor that follows the log from ``start``: ``"oldest"`` (the oldest retained
        record), ``"newest"`` (only what is published from now on) or a position."""
        return Cursor(self, start)

    async def follow(self, start: int | str = "oldest") -> AsyncIterator[Poll]:
        """Follow the log from asyncio: yields a Poll (``arrays``, ``missed``, ``start``)
        whenever records were published, waiting in between without blocking the loop."""
        cursor = self.cursor(start)
        while True:
            batch = cursor.poll()
            if batch.arrays or batch.missed:
                yield batch
            await cursor.wait_async()

    def _async_waker(self) -> _wait.AsyncWaker:
        waker = self._waker
        if waker is None:
            waker = self._waker = _wait.AsyncWaker(self)
        return waker

    def _wait_region(self) -> _wait.WaitRegion | None:
        """The wait region mapped for waiting, opened on first use; None: poll instead."""
        if self._waits is False:
            self._words[0]  # raises LogClosedError on a closed handle
            self._waits = _wait.WaitRegion.open(self._name, self._layout.nonce)
        assert self._waits is not True
        return self._waits

    def _segment(self, seq: int) -> Records | None:
        """Segment ``seq`` mapped read-only, from this handle's cache; None if reclaimed."""
        segments = self._segments
        array = segments.get(seq)
        if array is None:
            self._words[0]  # raises LogClosedError on a closed handle
            array = _segment.open_readonly(self._name, self._layout, seq)
            # Look at the slot again now that the mapping exists: the writer retires a slot
            # before it reuses the region, and never reuses one that is mapped elsewhere,
            # so a region opened by its old name late in its life is never taken as `seq`
            # (docs/design.md, "Reusing pages").
            if array is None or self._words[self._layout.epoch_word(seq)] != seq:
                return None
            segments[seq] = array
            if len(segments) > self._layout.slot_count:
                newest = max(segments)
                for old in [s for s in segments if s <= newest - self._layout.slot_count]:
                    del segments[old]  # snapshots holding it keep their own reference
        return array

    @property
    def name(self) -> str:
        """The log's name: ``attach(name)`` opens it from any process."""
        return self._name

    @property
    def dtype(self) -> np.dtype[Any]:
        return self._layout.dtype

    @property
    def retained_capacity(self) -> int:
        return self._layout.retained_capacity

    @property
    def segment_capacity(self) -> int:
        return self._layout.segment_capacity

    @property
    def closed(self) -> bool:
        return isinstance(self._words, _ClosedWords)

    def close(self) -> None:
        """Unmap this process's view of the log. Snapshots already taken stay readable.

        The log itself stays for other processes; ``unlink()`` removes it. Idempotent.
        """
        words = self._words
        if isinstance(words, memoryview):
            self._words = _ClosedWords(self._name)
            words.release()
            self._region.close()
            self._segments.clear()
            if isinstance(self._waits, _wait.WaitRegion):
                self._waits.close()
            self._waits = None

    def _exists(self) -> bool:
        """Whether this log still has its name (and it was not given to another log)."""
        region = _shm.open_read(_shm.header_path(self._name))
        if region is None:
            return False
        try:
            return _header.read_nonce(region) == self._layout.nonce
        finally:
            region.close()

    def unlink(self) -> None:
        """Remove the log's names from the system (nothing of it stays in /dev/shm).

        Processes that have it mapped keep what they mapped; nobody can attach any more,
        and its writer stops at its next rollover. Idempotent.
        """
        if self._exists():  # the name may belong to a newer log by now: leave that one alone
            _shm.unlink_quietly(_shm.header_path(self._name))
        for nonce, _, region_path in _shm.regions(self._name):
            if nonce == self._layout.nonce:
                _shm.unlink_quietly(region_path)

    def __enter__(self) -> AtomicLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the handle; a handle that created the log (``new``) also unlinks it."""
        self.close()
        if self._owner:
            self.unlink()

    def __reduce__(self) -> Any:
        return (_reattach, (self._name, self._layout.nonce))

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"head={self._words[_header.HEAD_WORD]}"
        return (
            f"<AtomicLog {self._name!r} dtype={self.dtype} retained={self.retained_capacity} "
            f"segment={self.segment_capacity} {state}>"
        )


def _reattach(name: str, nonce: int) -> AtomicLog:
    return AtomicLog(name, _nonce=nonce)


def remove_log(name: str) -> int:
    """Remove log ``name`` from the system: its header and every segment region of any log
    of that name, including segments orphaned by crashed writers. Returns how many regions
    were removed. Mapped views elsewhere stay valid.

    Raises LogNotFoundError if nothing of that name exists, and NotALogError (removing
    nothing) if ``name`` is a shared-memory region that is not a log and has no segments.
    """
    name = _shm.check_name(name)
    path = _shm.header_path(name)
    segment_paths = [p for _, _, p in _shm.regions(name)]
    region = _shm.open_read(path)
    header_exists = region is not None or os.path.exists(os.path.join(_shm.SHM_DIR, name))
    if region is not None:
        is_log = _header.read_nonce(region) is not None
        region.close()
        if not is_log and not segment_paths:
            raise NotALogError(f"{_shm.SHM_DIR}/{name} is not an atomic-log-shm log; not removed")
    if not header_exists and not segment_paths:
        raise LogNotFoundError(f"no log named {name!r}")
    removed = _shm.unlink_quietly(path) if header_exists else 0
    return removed + sum(_shm.unlink_quietly(p) for p in segment_paths)
