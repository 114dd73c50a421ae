"""Removing a log: its names taken away, its header marked gone, its followers woken.

``AtomicLog.unlink()`` removes the log a handle opened; ``remove_log(name)`` whatever log
has the name, plus the regions that crashed logs of that name left behind. Both go through
``remove``, which promises (docs/design.md, "Lifetime and cleanup", has the argument):

* a header is removed only if it is the one meant. Its name is first moved aside
  (``_shm.move_aside``: renamed to a private name, atomically), then what was taken is
  checked; a header that is not the one meant (a log made anew under the name meanwhile)
  gets its name back. So a remover never removes a newer log's header by mistake.
* a removed header is marked: once its name is gone, ``GONE`` is stored in its ``head``
  (if this process may write it) and its followers are woken, so every read of it in every
  process raises LogNotFoundError at once. A log that still has its name is never marked.
* nothing of a removed log stays behind: its regions are listed after its header lost its
  name and listed again after they are unlinked (a rollover running meanwhile may have
  made or renamed one), and its writer removes what it makes after that (the writer looks
  at its claim region's link count at each rollover and when it closes).
* ``remove_log`` also removes the regions of nonces no header at the name carries (what
  crashed logs left), but never those of the log that has the name now. A log being made
  meanwhile may lose a region that way; its creator checks its regions once its header is
  complete and removes itself (``new()`` then raises LogNotFoundError), and the remover
  looks at the name once more after unlinking and removes a log whose regions it took.
"""

from __future__ import annotations

import mmap
import os
import stat
from collections.abc import Callable

from . import _header, _shm, _wait
from ._errors import LogNotFoundError, NotALogError

_ROUNDS = 8  # logs made anew under the name during one remove_log(), at most, before it stops


def unlink_log(name: str, identity: tuple[int, int], nonce: int) -> int:
    """Remove the log whose header is ``identity`` (device, inode) and whose regions are
    named after ``nonce``; a newer log of the same name is left alone. Returns how many
    regions were removed."""
    return _remove(name, _take_header(name, identity), lambda n: n == nonce)[0]


def remove_log(name: str) -> int:
    """Remove log ``name`` from the system: its header and every region of any log of that
    name, including regions orphaned by crashed writers. Returns how many regions were
    removed. Mapped views elsewhere stay valid; every read of the removed log, in every
    process, then raises LogNotFoundError.

    Raises LogNotFoundError if nothing of that name exists, and NotALogError (removing
    nothing) if ``name`` is a shared-memory region that is not a log and has no regions.
    A name that cannot be removed (a directory planted there, another user's file) does
    not stop the others: everything removable is removed, then AccessDeniedError or
    NotALogError is raised for the first that was not.
    """
    name = _shm.check_name(name)
    has_regions = any(True for _ in _shm.regions(name))
    try:
        header_mode: int | None = os.lstat(_shm.SHM_DIR + _shm.header_path(name)).st_mode
    except FileNotFoundError:
        header_mode = None
    if header_mode is not None and not stat.S_ISREG(header_mode):
        _remove(name, None, lambda n: True)  # a directory or such at NAME is not ours to remove
        raise NotALogError(f"{_shm.SHM_DIR}/{name} is not a shared-memory region; not removed")
    if header_mode is None and not has_regions:
        raise LogNotFoundError(f"no log named {name!r}")
    if header_mode is not None and _nonce_at(name) is None and not has_regions:
        raise NotALogError(f"{_shm.SHM_DIR}/{name} is not an atomic-log-shm log; not removed")
    removed = 0
    doomed: set[int] = set()  # the nonces whose regions this call removed
    for _ in range(_ROUNDS):
        header = _take_header(name, None)
        keep = _nonce_at(name)  # a log made anew since: its regions are not orphans
        count, nonces = _remove(name, header, lambda n, keep=keep: n != keep)  # type: ignore[misc]
        removed += count
        doomed |= nonces
        if _nonce_at(name) not in doomed:
            break
        # A log finished its header after its regions were listed here: remove it too.
    return removed


def _remove(name: str, header: _Taken | None, doomed: Callable[[int], bool]) -> tuple[int, set[int]]:
    """Unlink the regions of ``name`` whose nonce is ``doomed`` (and those of ``header``'s
    log), then finish ``header``. Returns how many regions went, and their nonces."""
    removed = 0
    nonces: set[int] = set()
    try:
        paths = []
        for n, _, path in _shm.regions(name):
            if doomed(n) or (header is not None and n == header.nonce):
                nonces.add(n)
                paths.append(path)
        removed += _shm.unlink_every(paths)
    finally:
        if header is not None:
            if header.nonce is not None:
                nonces.add(header.nonce)
            removed += header.finish(name)
    return removed, nonces


class _Taken:
    """A log header moved aside to ``path`` (a private name): mapped read-write for its
    mark when this process may, with its log's wait region to wake."""

    __slots__ = ("nonce", "path", "region", "waits")

    def __init__(self, name: str, path: str, nonce: int | None) -> None:
        self.path = path
        self.nonce = nonce  # None: the header's bytes are damaged (removed by its inode)
        self.region: mmap.mmap | None = None
        self.waits = None if nonce is None else _wait.WaitRegion.open(name, nonce)
        try:
            opened = _shm.open_region(path, "r+b")
        except OSError:  # not ours to write (AccessDeniedError): its followers find out by looking
            opened = None
        if opened is not None:
            file, st = opened
            with file:
                if st.st_size >= _header.FIXED.itemsize:
                    self.region = _shm.map_file(file, path, _header.FIXED.itemsize, mmap.ACCESS_WRITE)

    def finish(self, name: str) -> int:
        """Unlink the header, mark it gone, wake its followers, and unlink what of its log
        was made since its regions were listed. Returns how many regions it removed."""
        try:
            removed = _shm.unlink_every([self.path])
            if self.region is not None:
                _header.mark_gone(self.region)  # its name is gone; pairs with every read's head load
            if self.waits is not None:
                self.waits.wake()  # after the mark: a woken follower looks, and raises
            late = [p for n, _, p in _shm.regions(name) if n == self.nonce]
            return removed + _shm.unlink_every(late)
        finally:
            if self.region is not None:
                self.region.close()
            if self.waits is not None:
                self.waits.close()


def _take_header(name: str, identity: tuple[int, int] | None) -> _Taken | None:
    """Move the log header at ``name`` aside if it is ``identity`` (any log's if None) and
    return it; None if there is none (or another log, or no log, has the name now)."""
    path = _shm.header_path(name)
    if identity is not None and _shm.identity(path) != identity:
        return None
    if identity is None and _nonce_at(name) is None:
        return None  # not a log (or not yet): not ours to move
    private = _shm.move_aside(path)
    if private is None:
        return None
    fixed = _shm.read_region(private, _header.FIXED.itemsize)
    nonce = None if fixed is None else _header.read_nonce(fixed)
    meant = _shm.identity(private) == identity if identity is not None else nonce is not None
    if not meant:
        # Not the one meant (a log made anew meanwhile, a file that is not a log): give it
        # its name back. If something newer has the name by now, this one has lost it
        # anyway: a log is removed (and marked), anything else left under the private name.
        try:
            if _shm.rename_noreplace(private, path) or nonce is None:
                return None
        except FileNotFoundError:  # another remover took it from its private name meanwhile
            return None
    return _Taken(name, private, nonce)


def _nonce_at(name: str) -> int | None:
    """The nonce of the log header at ``name`` now; None if there is none (or not yet)."""
    fixed = _shm.read_region(_shm.header_path(name), _header.FIXED.itemsize)
    return None if fixed is None else _header.read_nonce(fixed)
