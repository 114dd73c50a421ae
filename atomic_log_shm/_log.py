"""The log handle: a thin front that creates, attaches, claims the writer, and hands out
snapshots, cursors and ``info()``; reading is ``_reader``'s business, writing ``_writer``'s."""

from __future__ import annotations

import numbers
import os
import platform
import secrets
import stat
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from . import _claim, _header, _info, _segment, _shm, _wait
from ._cursor import Cursor, Poll
from ._errors import (
    ClaimHeldError,
    DtypeMismatchError,
    InvalidArgumentError,
    LogExistsError,
    LogMismatchError,
    LogNotFoundError,
    NotALogError,
    UnsupportedPlatformError,
)
from ._reader import Reader
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


def _check_position(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidArgumentError(f"{what} must be an int, not {type(value).__name__}")
    if value < 0:
        raise InvalidArgumentError(f"{what} must be a position >= 0, got {value}")
    return int(value)


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


class AtomicLog:
    """A handle on a shared-memory log: one writer, any number of readers, any processes.

    Create one with ``new()`` or ``new_claimed()``; open an existing one from any process
    with ``attach(name)``. A handle maps the log read-only: readers never write to shared
    memory and never register. Handles can be pickled; they re-attach by name.
    """

    __slots__ = ("__weakref__", "_owner", "_reader")

    def __init__(self, name: str, *, _nonce: int | None = None, _owner: bool = False) -> None:
        _check_platform()
        self._reader = Reader(name, _nonce)
        self._owner = _owner

    @classmethod
    def new(
        cls,
        *,
        retained: int,
        segment: int,
        dtype: Any,
        name: str | None = None,
        mode: int = 0o600,
        start: int = 0,
        exist_ok: bool = False,
    ) -> AtomicLog:
        """Create a log in shared memory, with no writer, and return a handle on it.

        At least ``retained`` records stay readable: whole segments of ``segment`` records
        are kept, ``ceil(retained / segment) + 1`` of them. ``name=None`` picks a unique
        name (see ``.name``). Regions get permissions ``mode`` (owner-only by default). The
        first record gets position ``start``. With ``exist_ok=True`` an existing log of
        that name is opened instead if its dtype and capacities are the ones asked for
        (LogMismatchError otherwise). Used as a context manager, a log this call created
        is unlinked on exit.
        """
        retained_capacity = _check_capacity(retained, "retained")
        segment_capacity = _check_capacity(segment, "segment")
        dt = _header.check_dtype(dtype)
        name = _shm.check_name(name) if name is not None else f"alog-{os.getpid()}-{secrets.token_hex(6)}"
        mode = _check_mode(mode)
        start = _check_position(start, "start")
        _check_platform()
        if segment_capacity * dt.itemsize > _header.MAX_SEGMENT_BYTES:
            raise InvalidArgumentError(f"a segment of {segment_capacity} x {dt.itemsize} bytes is too large")
        if _header.slot_count(retained_capacity, segment_capacity) > _header.MAX_SLOTS:
            raise InvalidArgumentError(
                f"{retained_capacity} / {segment_capacity} makes more than {_header.MAX_SLOTS} "
                "segments; use larger segments"
            )
        layout = _header.new_layout(secrets.randbits(64), retained_capacity, segment_capacity, dt)
        try:
            return cls._create(name, layout, mode, start)
        except LogExistsError:
            if not exist_ok:
                raise LogExistsError(
                    f"a log named {name!r} already exists: attach to it with AtomicLog.attach({name!r}), "
                    "pass exist_ok=True to continue it, or remove it with atomic_log_shm.remove_log()"
                ) from None
        log = cls.attach(name, timeout=1.0)  # a creator racing us may still be writing its header
        try:
            log._check_matches(dt, retained_capacity, segment_capacity)
        except BaseException:
            log.close()
            raise
        return log

    @classmethod
    def _create(cls, name: str, layout: _header.Layout, mode: int, start: int) -> AtomicLog:
        path = _shm.header_path(name)
        fd, region = _shm.create(path, layout.header_size, mode)
        os.close(fd)
        token = None
        try:
            first = _segment.create(name, layout, 0, mode)
            token = first.token
            first.close()
            _wait.create(name, layout.nonce, mode)
            _claim.create(name, layout.nonce, mode)  # before the header names its nonce
            _header.write_header(region, layout, time.time_ns(), start, token)
        except BaseException:
            if token is not None:
                _segment.unlink(name, layout, 0, token)
            _shm.unlink_quietly(_shm.wait_path(name, layout.nonce))
            _shm.unlink_quietly(_shm.claim_path(name, layout.nonce))
            _shm.unlink_quietly(path)
            raise
        finally:
            region.close()
        return cls(name, _nonce=layout.nonce, _owner=True)

    def _check_matches(self, dtype: np.dtype[Any], retained: int, segment: int) -> None:
        asked = (dtype, retained, segment)
        found = (self.dtype, self.retained_capacity, self.segment_capacity)
        if asked != found:
            raise LogMismatchError(
                f"log {self.name!r} exists with dtype {found[0]}, retained={found[1]}, segment={found[2]}; "
                f"asked for dtype {asked[0]}, retained={asked[1]}, segment={asked[2]}. Use the same "
                "arguments, or remove the old log first (atomic_log_shm.remove_log)"
            )

    @classmethod
    def new_claimed(
        cls,
        *,
        retained: int,
        segment: int,
        dtype: Any,
        name: str | None = None,
        mode: int = 0o600,
        start: int = 0,
        exist_ok: bool = False,
    ) -> tuple[Writer, AtomicLog]:
        """``new()``, then claim its writer: returns ``(writer, log)``.

        With ``exist_ok=True`` a matching log of that name is continued (after a restart or
        a crash of its writer); ClaimHeldError if a writer in another process holds it.
        """
        log = cls.new(
            retained=retained,
            segment=segment,
            dtype=dtype,
            name=name,
            mode=mode,
            start=start,
            exist_ok=exist_ok,
        )
        try:
            writer = log.try_claim_writer()
        except BaseException:
            log.close()
            raise
        if writer is None:
            info = log.info()
            log.close()
            holder = f"pid {info.writer_pid}" if info.writer_pid else "another process"
            raise ClaimHeldError(
                f"log {log.name!r} has a writer ({holder}); stop it first, or attach to read",
                pid=info.writer_pid,
            )
        return writer, log

    @classmethod
    def attach(cls, name: str, *, dtype: Any = None, timeout: float | None = None) -> AtomicLog:
        """Open the existing log ``name`` read-only, from any process.

        The dtype is read from the log; if ``dtype`` is given and differs, DtypeMismatchError.
        With a ``timeout`` (seconds), wait that long for the log to appear (and for its
        creator to finish its header) before LogNotFoundError.
        """
        name = _shm.check_name(name)
        wanted = _header.check_dtype(dtype) if dtype is not None else None
        timeout = _wait.check_seconds(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        nap = 0.001
        while True:
            try:
                log = cls(name)
                break
            except (LogNotFoundError, NotALogError) as exc:
                left = None if deadline is None else deadline - time.monotonic()
                if left is None or left <= 0:
                    if timeout:
                        raise LogNotFoundError(f"no log named {name!r} appeared within {timeout} s") from None
                    raise exc from None
                time.sleep(min(nap, left))
                nap = min(nap * 2, 0.05)
        if wanted is not None and wanted != log.dtype:
            log.close()
            raise DtypeMismatchError(f"log {name!r} holds records of {log.dtype}, not {wanted}")
        return log

    def try_claim_writer(self) -> Writer | None:
        """Return the log's Writer, or None while a writer in any process holds the claim.

        A writer's claim ends when it is closed or collected, or its process dies (also by
        SIGKILL); the new writer continues the same log, nothing lost or repeated.
        """
        reader = self._reader
        reader.words[0]  # raises LogClosedError on a closed handle
        claim = _claim.Claim.try_acquire(reader.name, reader.layout.nonce)
        if claim is None:
            return None
        return Writer(reader.name, reader.layout, self, claim, claim.mode)  # segments get the header's mode

    def snapshot(self) -> Snapshot:
        """Capture a stable, zero-copy view of the records retained now."""
        return Snapshot(self._reader, self)

    def cursor(self, start: int | str = "oldest") -> Cursor:
        """A Cursor that follows the log from ``start``.

        ``start`` is ``"oldest"`` (the oldest retained record), ``"newest"`` (only what is
        published from now on) or a position."""
        return Cursor(self._reader, self, start)

    async def follow(self, start: int | str = "oldest") -> AsyncIterator[Poll]:
        """Follow the log from asyncio, a Poll at a time.

        Yields a Poll (``arrays``, ``missed``, ``start``) whenever records were published,
        waiting in between without blocking the event loop."""
        cursor = self.cursor(start)
        while True:
            batch = cursor.poll()
            if batch.arrays or batch.missed:
                yield batch
            await cursor.wait_async()

    def info(self) -> _info.LogInfo:
        """The log's state now, as a LogInfo.

        Capacities, positions, segments, the writer and memory: what ``atomic-log inspect``
        prints. Reads only; never disturbs the writer."""
        return _info.log_info(self._reader)

    @property
    def name(self) -> str:
        """The log's name: ``attach(name)`` opens it from any process."""
        return self._reader.name

    @property
    def dtype(self) -> np.dtype[Any]:
        """The numpy dtype of the records."""
        return self._reader.layout.dtype

    @property
    def retained_capacity(self) -> int:
        """At least this many records stay readable (the ``retained`` it was made with)."""
        return self._reader.layout.retained_capacity

    @property
    def segment_capacity(self) -> int:
        """Records per segment (the ``segment`` it was made with)."""
        return self._reader.layout.segment_capacity

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called on this handle."""
        return self._reader.closed

    def close(self) -> None:
        """Unmap this process's view of the log. Snapshots already taken stay readable.

        The log itself stays for other processes; ``unlink()`` removes it. Idempotent.
        """
        self._reader.close()

    def unlink(self) -> None:
        """Remove the log's names from the system (nothing of it stays in /dev/shm).

        Processes that have it mapped keep what they mapped; nobody can attach any more,
        and its writer stops at its next rollover. Idempotent. The header removed is the
        one this handle opened (by inode), even if its bytes were damaged since. A name
        that cannot be removed does not stop the others (see ``remove_log``).
        """
        reader = self._reader
        paths = [p for nonce, _, p in _shm.regions(reader.name) if nonce == reader.layout.nonce]
        header = _shm.header_path(reader.name)
        # The header this handle opened, known by its inode, not by what its bytes say now
        # (they may be damaged); a newer log of the same name is left alone. Last, so a
        # failure above leaves it to find the rest by.
        if _shm.identity(header) == reader.identity:
            paths.append(header)
        _unlink_marking(paths, reader.name, reader.identity)

    def __enter__(self) -> AtomicLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the handle; a handle that created the log (``new``) also unlinks it."""
        self.close()
        if self._owner:
            self.unlink()

    def __reduce__(self) -> Any:
        return (_reattach, (self.name, self._reader.layout.nonce))

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"end={self._reader.end()}"
        return (
            f"<AtomicLog {self.name!r} dtype={self.dtype} retained={self.retained_capacity} "
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
    A name that cannot be removed (a directory planted there, another user's file) does
    not stop the others: everything removable is removed, then AccessDeniedError or
    NotALogError is raised for the first that was not.
    """
    name = _shm.check_name(name)
    path = _shm.header_path(name)
    segment_paths = [p for _, _, p in _shm.regions(name)]
    try:
        header_mode: int | None = os.lstat(os.path.join(_shm.SHM_DIR, name)).st_mode
    except FileNotFoundError:
        header_mode = None
    if header_mode is not None and not stat.S_ISREG(header_mode):
        _shm.unlink_every(segment_paths)  # a directory or such at NAME is not ours to remove
        raise NotALogError(f"{_shm.SHM_DIR}/{name} is not a shared-memory region; not removed")
    if header_mode is not None:
        region = _shm.open_read(path)
        is_log = region is not None and _header.read_nonce(region) is not None
        if region is not None:
            region.close()
        if not is_log and not segment_paths:
            raise NotALogError(f"{_shm.SHM_DIR}/{name} is not an atomic-log-shm log; not removed")
    elif not segment_paths:
        raise LogNotFoundError(f"no log named {name!r}")
    return _unlink_marking(segment_paths + ([path] if header_mode is not None else []), name, None)


def _unlink_marking(paths: list[str], name: str, expected: tuple[int, int] | None) -> int:
    """``_shm.unlink_every(paths)``, then store GONE in the head of the header that was at
    ``name`` (if it is the one ``expected``, when given) once that name no longer refers
    to it, and wake its waiters: refresh(), poll() and wait() in every process then raise
    LogNotFoundError at once. Without write access to the header, they find out by looking
    (within about a second)."""
    header = _shm.header_path(name)
    opened = _shm.open_header_writable(header, _header.FIXED.itemsize)
    waits = None
    try:
        if opened is not None:
            nonce = _header.read_nonce(opened[0])
            waits = None if nonce is None else _wait.WaitRegion.open(name, nonce)
        return _shm.unlink_every(paths)
    finally:
        if opened is not None:
            region, identity = opened
            try:
                if identity == (expected or identity) and _shm.identity(header) != identity:
                    _header.mark_gone(region)
                    if waits is not None:
                        waits.wake()  # after the mark: a waiter woken looks, and raises
            finally:
                region.close()
                if waits is not None:
                    waits.close()
