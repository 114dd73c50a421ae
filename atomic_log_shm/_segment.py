"""Segments: fixed-size arrays of records, one shared-memory region each.

A segment region holds ``segment_capacity`` records and nothing else; what is published of
it lives in the header's slot for it (``_header.py``). Each mapping is owned by the numpy
array made on it, so a mapping lives exactly as long as some array (a snapshot's chunk, a
record scalar) still refers to it, even after the writer unlinked the region's name.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import numpy.typing as npt

from . import _shm
from ._errors import CorruptLogError
from ._header import Layout

Records = npt.NDArray[Any]


def create(name: str, layout: Layout, seq: int, mode: int) -> Records:
    """Make segment ``seq`` (reserved, zeroed) and return it writable. Raises before any change
    to the log if the region cannot be made (OutOfSpaceError, LogExistsError)."""
    region = _shm.create(_shm.segment_path(name, layout.nonce, seq), layout.segment_bytes, mode)
    return np.frombuffer(region, layout.dtype, count=layout.segment_capacity)


def open_writable(name: str, layout: Layout, seq: int) -> Records:
    path = _shm.segment_path(name, layout.nonce, seq)
    fd, region = _shm.open_write(path)
    os.close(fd)
    if len(region) < layout.segment_bytes:
        raise CorruptLogError(f"segment {path!r} is {len(region)} bytes, short of {layout.segment_bytes}")
    return np.frombuffer(region, layout.dtype, count=layout.segment_capacity)


def open_readonly(name: str, layout: Layout, seq: int) -> Records | None:
    """Map segment ``seq`` without write permission; None once it has been reclaimed."""
    path = _shm.segment_path(name, layout.nonce, seq)
    region = _shm.open_read(path)
    if region is None:
        return None
    if len(region) < layout.segment_bytes:
        raise CorruptLogError(f"segment {path!r} is {len(region)} bytes, short of {layout.segment_bytes}")
    return np.frombuffer(region, layout.dtype, count=layout.segment_capacity)


def unlink(name: str, layout: Layout, seq: int) -> None:
    _shm.unlink_quietly(_shm.segment_path(name, layout.nonce, seq))


def unlink_outside(name: str, layout: Layout, first: int, last: int) -> int:
    """Unlink this log's segments numbered outside ``first..last``: what a crashed writer
    left half-made (beyond the head) or did not get to reclaim. Returns how many."""
    removed = 0
    for nonce, seq, path in _shm.segments(name):
        if nonce == layout.nonce and not first <= seq <= last:
            removed += _shm.unlink_quietly(path)
    return removed
