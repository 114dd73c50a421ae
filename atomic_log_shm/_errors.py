"""The exception hierarchy: everything this library raises on purpose is an AtomicLogError.

Where a standard exception also fits (a bad argument is a ValueError, a missing log is a
FileNotFoundError), the class derives from both, so callers can catch either.
"""

from __future__ import annotations


class AtomicLogError(Exception):
    """Base class of every error raised by atomic_log_shm."""


class InvalidArgumentError(AtomicLogError, ValueError, TypeError):
    """An argument of the wrong type or out of range.

    For example a capacity that is not a positive int, or an unusable mode. Catchable as
    ValueError or TypeError."""


class IndexOutOfRangeError(AtomicLogError, IndexError):
    """An index beyond the records a snapshot shows (``snap[i]``). Catchable as IndexError."""


class MissingDependencyError(AtomicLogError, ImportError):
    """An optional dependency is not installed.

    pandas, for ``to_pandas()``; the message names the extra to install. Catchable as
    ImportError."""


class NotPicklableError(AtomicLogError, TypeError):
    """A handle that maps this process's shared memory cannot be pickled.

    To use a log in another process, send the log (or its name) and open the view there.
    Catchable as TypeError."""


class InvalidNameError(AtomicLogError, ValueError):
    """The log name cannot be used as a POSIX shared-memory name."""


class UnsupportedDtypeError(AtomicLogError, TypeError):
    """The dtype cannot live in shared memory (objects, zero-sized, sub-array)."""


class InvalidRecordError(AtomicLogError, ValueError, TypeError):
    """A value passed to append() or extend() does not fit the log's dtype.

    numpy said ValueError, TypeError or OverflowError. Catchable as ValueError or TypeError."""


class LogMismatchError(AtomicLogError, ValueError):
    """An existing log differs from what was asked for.

    Raised by ``new(..., exist_ok=True)`` when the dtype or capacities differ; the message
    shows both sides."""


class DtypeMismatchError(LogMismatchError, TypeError):
    """attach() was given a dtype other than the one the log was created with."""


class ClaimHeldError(AtomicLogError):
    """A writer in another process holds the log's claim (``new_claimed(..., exist_ok=True)``).
    ``pid`` is the holder's process id, when it recorded one."""

    def __init__(self, message: str, pid: int | None = None) -> None:
        super().__init__(message)
        self.pid = pid


class LogNotFoundError(AtomicLogError, FileNotFoundError):
    """No log of that name exists (or it was removed or replaced)."""


class LogExistsError(AtomicLogError, FileExistsError):
    """A shared-memory region of that name already exists."""


class NotALogError(AtomicLogError):
    """The region exists but does not carry a log header."""


class VersionMismatchError(AtomicLogError):
    """The log was written by a version of this library with another layout."""


class CorruptLogError(AtomicLogError):
    """The shared memory of the log contradicts itself; nothing was read from it."""


class WriterClosedError(AtomicLogError):
    """The writer was closed (or belongs to the parent of a forked process)."""


class LogClosedError(AtomicLogError):
    """This process closed its handle on the log."""


class OutOfSpaceError(AtomicLogError, OSError):
    """Shared memory is full: a new segment could not be reserved. Nothing was published."""


class AccessDeniedError(AtomicLogError, PermissionError):
    """The regions of the log exist but this process may not open them so."""


class ResourceLimitError(AtomicLogError, OSError):
    """The system refused a descriptor or a mapping (each mapped segment holds one of each)."""


class UnsupportedPlatformError(AtomicLogError):
    """This CPU or OS does not give the memory ordering the lock-free protocol relies on."""


class RedisUnavailableError(AtomicLogError, ConnectionError):
    """Redis did not answer at the URL given (wrong host or port, server down, credentials
    refused) when a relay or mirror started: it wrote nothing. Catchable as ConnectionError."""


class StreamContentError(AtomicLogError, ValueError):
    """A Redis stream holds what no relay of this log writes: foreign entries, or records of
    another dtype or other capacities. Nothing was written; ``stream`` is its key."""

    def __init__(self, stream: str, message: str) -> None:
        super().__init__(message)
        self.stream = stream

    def __reduce__(self) -> tuple[type[StreamContentError], tuple[str, str]]:
        return type(self), (self.stream, str(self))


class NotAMirrorError(AtomicLogError, ValueError):
    """A mirror refused to write into a local log that is not a mirror of its stream: the
    stream's source log itself (the same name on the source's host), or an existing log
    whose dtype, capacities or newest records are not the stream's. Nothing was written;
    ``name`` is the local log's name, ``stream`` the stream's key."""

    def __init__(self, name: str, stream: str, message: str) -> None:
        super().__init__(message)
        self.name = name
        self.stream = stream

    def __reduce__(self) -> tuple[type[NotAMirrorError], tuple[str, str, str]]:
        return type(self), (self.name, self.stream, str(self))


class StreamNotFoundError(AtomicLogError, LookupError):
    """No relayed stream of that key exists in Redis (neither the stream nor its ``:meta``
    hash). ``stream`` is its key. Catchable as LookupError."""

    def __init__(self, stream: str, message: str) -> None:
        super().__init__(message)
        self.stream = stream

    def __reduce__(self) -> tuple[type[StreamNotFoundError], tuple[str, str]]:
        return type(self), (self.stream, str(self))
