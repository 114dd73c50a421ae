"""What a log is, in one value: ``AtomicLog.info()`` and ``list_logs()``.

Everything here is read as any reader reads (``_reader``), plus the header words only
inspection needs (``writer_pid``, ``created_ns``) and the file system's word on the claim
and the regions' sizes: nothing is stored to shared memory and the claim is never tried,
so a live log can be looked at without disturbing its writer.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from numpy.lib import format as npformat

from . import _shm
from ._errors import AtomicLogError
from ._header import CREATED_WORD, PID_WORD, RELEASED_WORD
from ._reader import Reader


class SegmentInfo(NamedTuple):
    """One retained segment of a log.

    Its number, the position of its record 0, and how many of its records are published."""

    sequence: int
    start: int
    published: int


@dataclass(frozen=True)
class LogInfo:
    """A log's state at one moment, as ``AtomicLog.info()`` and ``list_logs()`` give it."""

    name: str
    dtype: np.dtype[Any]
    retained_capacity: int
    segment_capacity: int
    slot_count: int
    """Segments retained: ``ceil(retained_capacity / segment_capacity) + 1``."""
    head_segment: int
    """The number of the segment the writer appends to."""
    segments: tuple[SegmentInfo, ...]
    """The retained segments, oldest first."""
    records: int
    """How many records the retained segments hold."""
    oldest: int | None
    """The position of the oldest retained record (None while there is none)."""
    newest: int | None
    """The position of the newest record (None while there is none)."""
    end: int
    """The position the next record will get."""
    writer_pid: int | None
    """The pid the current or last writer recorded (None if it let go cleanly)."""
    writer_active: bool
    """Whether a writer holds the claim now (a crashed writer's claim is gone)."""
    writer_released: datetime.datetime | None
    """When the last writer let go of the claim cleanly (close, garbage collection), if no
    writer holds it now; None while one does, and after a crash (the time of a death is not
    recorded: ``writer_pid`` then names the dead writer)."""
    created: datetime.datetime
    regions: int
    """Shared-memory regions of the log in /dev/shm (header, segments, wait region, spare)."""
    memory_bytes: int

    @property
    def writer_status(self) -> str:
        """The writer in words: "held by pid N", "free since <time>" (closed cleanly),
        "free (last writer pid N exited)" (it died holding the claim) or "free"."""
        if self.writer_active:
            return f"held by pid {self.writer_pid}" if self.writer_pid else "held"
        if self.writer_pid:
            return f"free (last writer pid {self.writer_pid} exited)"
        released = self.writer_released
        return f"free since {released.isoformat(' ', 'seconds')}" if released else "free"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready values (what ``atomic-log inspect --json`` prints)."""
        return {
            "name": self.name,
            "dtype": str(self.dtype),
            "descr": npformat.dtype_to_descr(self.dtype),
            "itemsize": self.dtype.itemsize,
            "retained_capacity": self.retained_capacity,
            "segment_capacity": self.segment_capacity,
            "slot_count": self.slot_count,
            "head": self.head_segment,
            "segments": [s._asdict() for s in self.segments],
            "records": self.records,
            "first_position": self.oldest,
            "last_position": self.newest,
            "end": self.end,
            "writer": {"held": self.writer_active, "pid": self.writer_pid, "status": self.writer_status},
            "writer_released": self.writer_released and self.writer_released.isoformat("T", "seconds"),
            "regions": self.regions,
            "memory_bytes": self.memory_bytes,
            "created_ns": int(self.created.timestamp() * 1e9),
            "created": self.created.isoformat("T", "seconds"),
        }


def _time(ns: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ns / 1e9).astimezone()


def log_info(reader: Reader) -> LogInfo:
    """The state of the log ``reader`` reads, now."""
    layout = reader.layout
    head, found = reader.retained()
    segments = tuple(SegmentInfo(*s) for s in found)
    shown = [s for s in segments if s.published]
    pid = reader.words[PID_WORD] or None
    active = reader.writer_active()
    regions, size = _shm.footprint(reader.name, layout.nonce)
    created_ns = reader.words[CREATED_WORD]
    released_ns = reader.words[RELEASED_WORD]
    return LogInfo(
        name=reader.name,
        dtype=layout.dtype,
        retained_capacity=layout.retained_capacity,
        segment_capacity=layout.segment_capacity,
        slot_count=layout.slot_count,
        head_segment=head,
        segments=segments,
        records=sum(s.published for s in segments),
        oldest=shown[0].start if shown else None,
        newest=shown[-1].start + shown[-1].published - 1 if shown else None,
        end=segments[-1].start + segments[-1].published,
        writer_pid=pid,
        writer_active=active,
        writer_released=_time(released_ns) if not active and released_ns and pid is None else None,
        created=_time(created_ns),
        regions=regions,
        memory_bytes=size,
    )


def list_logs() -> list[LogInfo]:
    """The state of every log on this host that this process may read, by name.

    Logs that cannot be read (another user's, damaged, being removed) are left out;
    ``atomic-log ls`` lists those too, with the reason.
    """
    infos = []
    for name in _shm.log_names():
        try:
            reader = Reader(name)
        except (AtomicLogError, OSError):
            continue
        try:
            infos.append(log_info(reader))
        except (AtomicLogError, OSError):
            continue
        finally:
            reader.close()
    return infos
