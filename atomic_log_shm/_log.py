"""The log handle: a thin front that creates, attaches, claims the writer, and hands out
snapshots, cursors and ``info()``; reading is ``_reader``'s business, writing ``_writer``'s."""

from __future__ import annotations

import errno
import numbers
import os
import secrets
import time
import warnings
import weakref
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from . import _claim, _header, _info, _platform, _remove, _segment, _shm, _wait
from ._cursor import Cursor, Poll
from ._errors import (
    ClaimHeldError,
    DtypeMismatchError,
    InvalidArgumentError,
    LogExistsError,
    LogMismatchError,
    LogNotFoundError,
    NotALogError,
    OutOfSpaceError,
)
from ._reader import Reader
from ._remove import remove_log as remove_log  # public through atomic_log_shm
from ._snapshot import Snapshot
from ._writer import Writer


def _check_position(value: object, what: str) -> int:
    """A position where a record may be: positions are int64, and a log's end is one more."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidArgumentError(f"{what} must be an int, not {type(value).__name__}")
    if not 0 <= int(value) < _header.MAX_POSITION:
        raise InvalidArgumentError(
            f"{what} must be a position from 0 to {_header.MAX_POSITION - 1}, got {value}: "
            "positions are int64, and a log's end is one past its last record"
        )
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
    return _shm.Mode(mode)


class AtomicLog:
    """A handle on a shared-memory log: one writer, any number of readers, any processes.

    Create one with ``new()`` or ``new_claimed()``; open an existing one from any process
    with ``attach(name)``. A handle maps the log read-only: readers never write to shared
    memory and never register. Handles can be pickled; they re-attach by name.
    """

    __slots__ = ("__weakref__", "_left", "_owner", "_reader")
    _reader: Reader
    _owner: bool
    _left: weakref.finalize[..., AtomicLog] | None  # warns if the log it made without a name is left

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise InvalidArgumentError(
            "make a log handle with AtomicLog.new(...), AtomicLog.new_claimed(...) or "
            "AtomicLog.attach(name), not AtomicLog(...)"
        )

    @classmethod
    def _open(cls, name: str, nonce: int | None = None, owner: bool = False) -> AtomicLog:
        """The handle on the log ``name`` (of ``nonce``, if given); ``owner``: this handle
        made it (its ``with`` block unlinks it)."""
        _platform.check()
        log = cls.__new__(cls)
        log._reader = Reader(name, nonce)
        log._owner = owner
        log._left = None
        return log

    @classmethod
    def new(
        cls,
        *,
        retained: int,
        segment: int,
        dtype: Any,
        name: str | None = None,
        mode: int = _shm.DEFAULT_MODE,
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
        anonymous = name is None
        name = _shm.check_name(name) if name is not None else f"alog-{os.getpid()}-{secrets.token_hex(6)}"
        mode = _check_mode(mode)
        start = _check_position(start, "start")
        _platform.check()
        if segment_capacity * dt.itemsize > _header.MAX_SEGMENT_BYTES:
            raise InvalidArgumentError(f"a segment of {segment_capacity} x {dt.itemsize} bytes is too large")
        if _header.slot_count(retained_capacity, segment_capacity) > _header.MAX_SLOTS:
            raise InvalidArgumentError(
                f"{retained_capacity} / {segment_capacity} makes more than {_header.MAX_SLOTS} "
                "segments; use larger segments"
            )
        layout = _header.new_layout(secrets.randbits(64), retained_capacity, segment_capacity, dt)
        try:
            room = _room_for(name, layout)
            if room is not None and not (exist_ok and _shm.identity(_shm.header_path(name))):
                raise room
            return cls._create(name, layout, mode, start, anonymous)
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
    def _create(cls, name: str, layout: _header.Layout, mode: int, start: int, anonymous: bool) -> AtomicLog:
        path = _shm.header_path(name)
        file, region = _shm.create_mapped(path, layout.header_size, mode)
        identity = os.fstat(file.fileno())
        file.close()
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
        # remove_log(name) running meanwhile removes regions no complete header names: if it
        # took any of these, it took the log (docs/design.md, "Lifetime and cleanup").
        made = [_shm.segment_path(name, layout.nonce, 0, token), _shm.wait_path(name, layout.nonce)]
        if any(_shm.identity(p) is None for p in [*made, _shm.claim_path(name, layout.nonce)]):
            _remove.unlink_log(name, (identity.st_dev, identity.st_ino), layout.nonce)
            raise LogNotFoundError(f"log {name!r} was removed while it was being made")
        log = cls._open(name, layout.nonce, owner=True)
        if anonymous:
            # Like a file never closed: a log made without a name that nobody unlinks stays
            # in /dev/shm until reboot, and nothing else would ever say so.
            log._left = weakref.finalize(log, _warn_left_behind, name, identity.st_dev, identity.st_ino)
        return log

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
        mode: int = _shm.DEFAULT_MODE,
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
                log = cls._open(name)
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
        claim = _claim.Claim.try_acquire(reader.name, reader.layout)
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

    async def follow(self, start: int | str = "oldest", *, latency: float = 0.0) -> AsyncIterator[Poll]:
        """Follow the log from asyncio, a Poll at a time.

        Yields a Poll (``arrays``, ``missed``, ``start``) whenever records were published,
        waiting in between without blocking the event loop. ``latency`` is the follower's
        freshness budget, as in ``Cursor.wait()``: with ``latency=0.1`` it yields about ten
        times a second at most, each Poll holding what came meanwhile."""
        latency = _wait.check_latency(latency)
        cursor = self.cursor(start)
        while True:
            batch = cursor.poll()
            if batch.arrays or batch.missed:
                yield batch
            await cursor.wait_async(latency=latency)

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
        every read of it in every process raises LogNotFoundError, and its writer stops at
        its next rollover. Idempotent. The log removed is the one this handle opened (by
        its header's inode), even if its bytes were damaged since; a newer log of the same
        name is left alone. A name that cannot be removed does not stop the others (see
        ``remove_log``).
        """
        reader = self._reader
        _remove.unlink_log(reader.name, reader.identity, reader.layout.nonce)
        if self._left is not None:
            self._left.detach()

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
    return AtomicLog._open(name, nonce)


def _warn_left_behind(name: str, device: int, inode: int) -> None:
    """At the collection of the handle that made log ``name`` without a name: warn if the
    log is still there (ResourceWarning, as for a file never closed)."""
    if _shm.identity(_shm.header_path(name)) == (device, inode):
        warnings.warn(
            f"log {name!r}, made without a name, was never unlinked: its regions stay in "
            f"{_shm.SHM_DIR} until reboot. Use `with AtomicLog.new(...) as log:`, call "
            "log.unlink(), or remove it with atomic_log_shm.remove_log()",
            ResourceWarning,
            stacklevel=1,
        )



def _room_for(name: str, layout: _header.Layout) -> OutOfSpaceError | None:
    """The error for a log that cannot fit, or None: its regions (header, every segment of
    the window plus the writer's spare, wait region) must fit in /dev/shm's size and free
    space, and in the memory available (to this process's cgroup, if it has a limit)."""
    need = layout.header_size + (layout.slot_count + 1) * layout.segment_bytes + _wait.SIZE
    fs = os.statvfs(_shm.SHM_DIR)
    limits = {
        f"{_shm.SHM_DIR} holds": fs.f_blocks * fs.f_frsize,
        f"{_shm.SHM_DIR} has free": fs.f_bavail * fs.f_frsize,
        "the memory available is": _memory_available(),
    }
    for what, have in limits.items():
        if have is not None and need > have:
            return OutOfSpaceError(
                errno.ENOSPC,
                f"log {name!r}: {layout.slot_count + 1} segments of {layout.segment_bytes:,} bytes "
                f"(retained={layout.retained_capacity}, segment={layout.segment_capacity}, "
                f"{layout.dtype.itemsize}-byte records) needs {need:,} bytes, and {what} {have:,}: "
                "use a smaller window (retained), or free or add memory",
            )
    return None


def _memory_available() -> int | None:
    """Bytes of memory available now: MemAvailable, or less if this process's cgroup
    (v2) has a lower limit left. None where neither can be read."""
    found = []
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open("/proc/self/cgroup") as cgroup:
            path = next(line[3:].strip() for line in cgroup if line.startswith("0::"))
        folder = os.path.join("/sys/fs/cgroup", path.lstrip("/"))
        with open(os.path.join(folder, "memory.max")) as limit:
            top = limit.read().strip()
        if top != "max":
            with open(os.path.join(folder, "memory.current")) as used:
                found.append(int(top) - int(used.read()))
    except (OSError, ValueError, StopIteration):
        pass
    return min(found) if found else None
