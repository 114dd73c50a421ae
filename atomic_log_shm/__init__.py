"""atomic-log-shm: a rolling window of typed records shared by one writer with many reader
processes through POSIX shared memory, lock-free and zero-copy on the read side.

    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=np.int64)
    writer.append(1)
    snap = AtomicLog.attach(log.name).snapshot()   # in any process
"""

from ._cursor import Cursor, Poll
from ._errors import (
    AccessDeniedError,
    AtomicLogError,
    ClaimHeldError,
    CorruptLogError,
    DtypeMismatchError,
    IndexOutOfRangeError,
    InvalidArgumentError,
    InvalidNameError,
    InvalidRecordError,
    LogClosedError,
    LogExistsError,
    LogMismatchError,
    LogNotFoundError,
    MissingDependencyError,
    NotALogError,
    NotAMirrorError,
    NotPicklableError,
    OutOfSpaceError,
    RedisUnavailableError,
    ResourceLimitError,
    StreamContentError,
    StreamNotFoundError,
    UnsupportedDtypeError,
    UnsupportedPlatformError,
    VersionMismatchError,
    WriterClosedError,
)
from ._info import LogInfo, SegmentInfo, list_logs
from ._log import AtomicLog, remove_log
from ._shm import DEFAULT_MODE
from ._snapshot import Chunk, Chunks, Snapshot
from ._writer import Writer

__version__ = "0.2.0"

__all__ = [
    "DEFAULT_MODE",
    "AccessDeniedError",
    "AtomicLog",
    "AtomicLogError",
    "Chunk",
    "Chunks",
    "ClaimHeldError",
    "CorruptLogError",
    "Cursor",
    "DtypeMismatchError",
    "IndexOutOfRangeError",
    "InvalidArgumentError",
    "InvalidNameError",
    "InvalidRecordError",
    "LogClosedError",
    "LogExistsError",
    "LogInfo",
    "LogMismatchError",
    "LogNotFoundError",
    "MissingDependencyError",
    "NotALogError",
    "NotAMirrorError",
    "NotPicklableError",
    "OutOfSpaceError",
    "Poll",
    "RedisUnavailableError",
    "ResourceLimitError",
    "SegmentInfo",
    "Snapshot",
    "StreamContentError",
    "StreamNotFoundError",
    "UnsupportedDtypeError",
    "UnsupportedPlatformError",
    "VersionMismatchError",
    "Writer",
    "WriterClosedError",
    "list_logs",
    "remove_log",
]
