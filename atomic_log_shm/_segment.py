"""Segments: fixed-size arrays of records, one shared-memory region each.

A segment region holds ``segment_capacity`` records and nothing else; what is published of
it lives in the header's slot for it (``_header.py``). Each mapping is owned by the numpy
array made on it, so a mapping lives exactly as long as some array (a snapshot's chunk, a
record scalar) still refers to it, even after the writer unlinked the region's name.
"""

from __future__ import annotations

import io
import mmap
from collections import deque
from typing import Any

import numpy as np
import numpy.typing as npt

from . import _shm
from ._errors import CorruptLogError, LogExistsError, LogNotFoundError
from ._header import Layout
from ._platform import SEQ_CST, fence

Records = npt.NDArray[Any]

def create(name: str, layout: Layout, seq: int, mode: int) -> Region:
    """Make segment ``seq`` (reserved, zeroed, its pages mapped) for the writer, under a
    name nobody holds: a name that exists (planted by another process) is never taken
    over; another token is drawn. Raises before any change to the log if the region cannot
    be made (OutOfSpaceError)."""
    for _ in range(_shm.NAME_TRIES):
        token = _shm.new_token()
        path = _shm.segment_path(name, layout.nonce, seq, token)
        try:
            flags = mmap.MAP_SHARED | mmap.MAP_POPULATE
            file, region = _shm.create_mapped(path, layout.segment_bytes, mode, flags)
        except LogExistsError:
            continue
        return Region(seq, token, file, region, layout)
    raise LogExistsError(
        f"cannot make segment {seq} of log {name!r}: {_shm.NAME_TRIES} random names in a row exist already"
    )


class Region:
    """A segment as the writer holds it: its number, the token in its name, the region
    opened read-write (for the lock test of ``_shm.unshared``), its mapping and a writable
    array of records viewing the mapping."""

    __slots__ = ("array", "file", "map", "seq", "token")

    def __init__(self, seq: int, token: int, file: io.FileIO, region: mmap.mmap, layout: Layout) -> None:
        self.seq = seq
        self.token = token
        self.file = file
        self.map = region
        self.array = np.frombuffer(region, layout.dtype, count=layout.segment_capacity)

    def close(self) -> None:
        """Close the descriptor; the mapping lives as long as the arrays on it. Idempotent."""
        self.file.close()


_KEEP = 64  # the most segments a writer keeps open for reuse: two descriptors each


class WriterSegments:
    """The segments a writer has made, kept mapped so their pages can be used again.

    A fresh region costs the kernel a zeroed page per page and a page fault per page on
    first store: about 1 ms for a 2 MiB segment here, all of it in the append that rolls
    over, while a ring of hot pages (the floor a Python writer can reach) pays nothing.
    So the segment that leaves the window is not unlinked but renamed to the name of the
    segment after next (``retire``), and when that one is needed (``take``) its pages are
    reused, provided no reader holds it mapped any more (``_shm.unshared``: readers map a
    segment under a shared lock that lives as long as the mapping): a reader that still
    holds it keeps its values unchanged, and the writer makes a fresh
    region instead. Only the newest ``_KEEP`` segments are held, so a window of more
    segments than that is made of fresh regions. The renamed region is unpublished and
    numbered above the head, so no reader opens it; close() unlinks it, and a writer that
    claims after a crash removes it. Its new name carries a fresh token, and the rename
    never replaces a name that exists (one planted in /dev/shm): see ``_shm``.
    """

    __slots__ = ("_layout", "_live", "_mode", "_name", "_spare")

    def __init__(self, name: str, layout: Layout, mode: int, head: Region) -> None:
        self._name = name
        self._layout = layout
        self._mode = mode
        self._live: deque[Region] = deque([head])
        self._spare: Region | None = None

    def take(self, seq: int) -> Region:
        """Segment ``seq`` for the writer, its old pages reused if nobody else holds them.
        Raises (changing nothing) if it cannot be made; the next call tries again."""
        spare, self._spare = self._spare, None
        # The slot that described the spare was retired (its epoch stored) before this: seen
        # before the lock test below, which pairs with the fence after a reader's lock, before
        # its last epoch load, in Reader.segment() (docs/design.md, "Reusing pages").
        fence(SEQ_CST)
        if spare is not None and spare.seq == seq and _shm.unshared(spare.file.fileno()):
            region = spare
        else:
            if spare is not None:
                self._unlink(spare)
            region = create(self._name, self._layout, seq, self._mode)
        live = self._live
        live.append(region)
        if len(live) > _KEEP:  # a long window: stop holding its oldest (it will be made anew)
            live.popleft().close()
        return region

    def retire(self, seq: int, token: int, spare_seq: int) -> None:
        """Segment ``seq`` (named with ``token``) left the window: take its name away,
        keeping it as the spare for segment ``spare_seq`` if this writer made it, else
        unlinking it. Never raises for a name it cannot take: a region it cannot rename is
        unlinked (no spare this time)."""
        live = self._live
        while live and live[0].seq < seq:  # never expected: only one segment leaves at a time
            self._unlink(live.popleft())
        if live and live[0].seq == seq and self._spare is None:
            region = live.popleft()
            nonce = self._layout.nonce
            old = _shm.segment_path(self._name, nonce, seq, region.token)
            for _ in range(_shm.NAME_TRIES):
                fresh = _shm.new_token()
                new = _shm.segment_path(self._name, nonce, spare_seq, fresh)
                try:
                    renamed = _shm.rename_noreplace(old, new)
                except OSError:  # gone, or the file system refuses: no spare this time
                    break
                if renamed:
                    region.seq, region.token = spare_seq, fresh
                    self._spare = region
                    return
            self._unlink(region)
        elif seq >= 0:
            unlink(self._name, self._layout, seq, token)

    def _unlink(self, region: Region) -> None:
        unlink(self._name, self._layout, region.seq, region.token)
        region.close()

    def reset(self, head: Region) -> None:
        """Hold only ``head`` (after ``close()``): the state of a writer that just claimed."""
        self._live = deque([head])

    def forget(self) -> None:
        """In a forked child: close the inherited descriptors and drop the mappings,
        unlinking nothing (the segments and the spare are the parent's)."""
        spare, self._spare = self._spare, None
        if spare is not None:
            spare.close()
        while self._live:
            self._live.popleft().close()

    def close(self) -> None:
        """Unlink the spare and let go of every descriptor; the log's segments stay."""
        spare, self._spare = self._spare, None
        if spare is not None:
            self._unlink(spare)
        while self._live:
            self._live.popleft().close()


def open_writable(name: str, layout: Layout, seq: int, token: int) -> Region:
    """Map the existing segment ``seq``, named with ``token``, read-write (a new writer's head)."""
    path = _shm.segment_path(name, layout.nonce, seq, token)
    opened = _shm.open_region(path, "r+b")
    if opened is None:
        raise LogNotFoundError(f"segment {seq} of log {name!r} is gone ({_shm.SHM_DIR}{path})")
    file, st = opened
    try:
        _check_size(path, st.st_size, layout)
        region = _shm.map_file(file, path, layout.segment_bytes, mmap.ACCESS_WRITE)
    except BaseException:
        file.close()
        raise
    return Region(seq, token, file, region, layout)


def open_readonly(name: str, layout: Layout, seq: int, token: int) -> Records | None:
    """Map segment ``seq``, named with ``token``, without write permission, under a shared
    lock that lives as long as the map (see ``_shm.unshared``); None once it has been
    reclaimed (or the writer holds the region's exclusive lock: it is testing a spare for
    reuse, so the region is no longer a published segment). CorruptLogError, before
    anything is mapped, if the region is not the size of a segment."""
    path = _shm.segment_path(name, layout.nonce, seq, token)
    opened = _shm.open_region(path)
    if opened is None:
        return None
    file, st = opened
    with file:
        _check_size(path, st.st_size, layout)
        if not _shm.lock_shared(file.fileno()):
            return None
        region = _shm.map_file(file, path, layout.segment_bytes)
    return np.frombuffer(region, layout.dtype, count=layout.segment_capacity)


def _check_size(path: str, size: int, layout: Layout) -> None:
    if size != layout.segment_bytes:
        raise CorruptLogError(
            f"{_shm.SHM_DIR}{path} is {size} bytes, not the {layout.segment_bytes} of a segment"
        )


def unlink(name: str, layout: Layout, seq: int, token: int) -> None:
    _shm.unlink_quietly(_shm.segment_path(name, layout.nonce, seq, token))


def unlink_strays(name: str, layout: Layout, live: dict[int, int]) -> int:
    """Unlink every segment region of this log but the live ones (``live`` maps their
    numbers to their tokens): what a crashed writer left half-made (beyond the head) or did
    not get to reclaim, and any name planted among them that this process may remove.
    Returns how many."""
    removed = 0
    for nonce, seq, token, path in _shm.segments(name):
        if nonce == layout.nonce and (token is None or live.get(seq) != token):
            removed += _shm.unlink_quietly(path)
    return removed
