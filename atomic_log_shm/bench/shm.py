"""The shared memory the bench makes, and its removal: regions, the floor's ring, our logs.

Every region made here (control words, the floor's ring) is registered in ``_created`` and
every log in ``_logs`` as it is created; ``cleanup()`` removes whatever a run left behind,
so an interrupted or failed measurement leaves nothing in /dev/shm.
THE FLOOR lives here too: a numpy ring of records and an int64 counter in one region,
written and read with no abstraction, the fastest a Python writer can publish.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import secrets
from collections.abc import Sequence
from typing import Any

import numpy as np
import posix_ipc

from atomic_log_shm import AtomicLog, Snapshot, Writer, remove_log

from .workload import DTYPE, Records

_created: set[str] = set()  # region names to unlink on the way out
_logs: list[AtomicLog] = []  # logs to unlink on the way out


def new_name(tag: str) -> str:
    return f"alogbench-{os.getpid()}-{secrets.token_hex(4)}-{tag}"


def unlink_region(name: str) -> None:
    with contextlib.suppress(posix_ipc.ExistentialError):
        posix_ipc.unlink_shared_memory("/" + name)
    _created.discard(name)


class Region:
    """One POSIX shared-memory region, mapped read-write."""

    def __init__(self, name: str, size: int = 0, *, create: bool = False) -> None:
        if create:
            shm = posix_ipc.SharedMemory("/" + name, posix_ipc.O_CREX, mode=0o600, size=size)
            _created.add(name)
        else:
            shm = posix_ipc.SharedMemory("/" + name)
        try:
            self._map = mmap.mmap(shm.fd, shm.size)
        finally:
            shm.close_fd()
        self.name = name

    @property
    def map(self) -> mmap.mmap:
        return self._map

    def array(self, dtype: Any, count: int, offset: int) -> Records:
        return np.frombuffer(self._map, dtype, count, offset)

    def words(self) -> memoryview:
        return memoryview(self._map).cast("q")

    def close(self) -> None:
        # While arrays still view it, the mapping goes with the last of them.
        with contextlib.suppress(BufferError):
            self._map.close()

    def unlink(self) -> None:
        unlink_region(self.name)


class Ring:
    """THE FLOOR: a numpy ring of records and an int64 counter in one region, no abstraction.

    The writer stores ``ring[i % n] = rec`` then ``counter[0] = i + 1``; a reader loads the
    counter, then the records below it.
    """

    HEADER = 64  # the counter, alone on its cache line

    def __init__(self, n: int, name: str | None = None) -> None:
        create = name is None
        self.region = Region(name or new_name("ring"), self.HEADER + n * DTYPE.itemsize, create=create)
        self.counter = self.region.array(np.int64, 1, 0)
        self.ring = self.region.array(DTYPE, n, self.HEADER)
        self.n = n

    @property
    def name(self) -> str:
        return self.region.name

    def close(self, unlink: bool = False) -> None:
        del self.counter, self.ring
        self.region.close()
        if unlink:
            self.region.unlink()


def ring_parts(ring: Records, lo: int, hi: int) -> list[Records]:
    """Views of the records numbered ``lo..hi`` (at most the last ``len(ring)``), oldest first."""
    n = len(ring)
    lo = max(lo, hi - n)
    if hi <= lo:
        return []
    a = lo % n
    b = a + hi - lo
    if b <= n:
        return [ring[a:b]]
    return [ring[a:], ring[: b - n]]


def newest_chunks(snap: Snapshot, k: int) -> list[Records]:
    """Zero-copy views of the newest ``k`` records a snapshot shows, oldest first."""
    out: list[Records] = []
    need = k
    for chunk in reversed(tuple(snap.chunks())):
        values = chunk.values
        if len(values) >= need:
            out.append(values[len(values) - need :])
            break
        out.append(values)
        need -= len(values)
    out.reverse()
    return out


def joined(parts: Sequence[Records]) -> Records:
    """One new array holding ``parts`` end to end (raw bytes joined, as the library does)."""
    return np.concatenate([part.view(np.uint8) for part in parts]).view(parts[0].dtype)


def new_log(retained: int, segment: int) -> tuple[Writer, AtomicLog]:
    """A new log of DTYPE records and its writer; ``cleanup()`` unlinks it if its user does not."""
    writer, log = AtomicLog.new_claimed(retained=retained, segment=segment, dtype=DTYPE)
    _logs.append(log)
    return writer, log


def cleanup() -> list[str]:
    """Remove every log and region this run left in /dev/shm; returns what had to be removed."""
    leftovers = []
    for log in _logs:
        log.unlink()
    _logs.clear()
    for name in list(_created):
        leftovers.append(name)
        unlink_region(name)
    prefix = f"alog-{os.getpid()}-"
    for entry in os.listdir("/dev/shm"):
        if entry.startswith(prefix) and "@" not in entry:
            leftovers.append(entry)
            remove_log(entry)
    return leftovers
