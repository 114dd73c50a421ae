"""The mirror: reads a stream a relay writes (``XREAD BLOCK``) and writes its batches into a
log on this host, at the source's positions.

Which log it writes. A mirror writes only a log that is a mirror of its stream, and checks
it before it writes anything:

- never the source log: the stream's metadata names the log it is relayed from and that
  log's host; on that host, a mirror whose local log has the source's name refuses;
- an existing local log only if its dtype and capacities are the stream's and its newest
  record is the source's: the mirror reads the entry holding that position and compares the
  records they both hold, byte for byte. When the stream no longer holds that position (the
  mirror was away longer than the stream keeps, or Redis lost the stream) there is nothing
  to compare: the mirror continues the log and says so.

A mirror's log holds only what it copied from the stream, so its newest records are the
source's; a log of the same name that another writer filled holds other records at those
positions, or none the stream has.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from .. import DEFAULT_MODE, AtomicLog, Chunk, LogExistsError, NotAMirrorError, StreamContentError, Writer
from .._shm import check_name  # the library's rule for log names, checked before connecting
from ._endpoint import COMMAND_ERROR, IDLE, LINK_ERRORS, Endpoint, log
from ._format import MAX_SEQ, Meta, entry, first_entry, meta_key, parse_meta, stream_key

_READ_COUNT = 16  # entries a mirror takes per XREAD


class Mirror(Endpoint):
    """Reads a stream that a Relay writes and writes its records into a log on this host.

    The local log (``local``, default ``name``) is made with the source's dtype and
    capacities when the first entry arrives, starting at that entry's first position, or
    continued if it exists and is a mirror of this stream: its dtype and capacities are the
    stream's and its newest records are the source's (see the module's docstring). Otherwise
    NotAMirrorError, writing nothing; so also on the source's host when ``local`` is the
    source log's name. Positions are the source's: a gap in the stream (records the relay
    never got, or that were trimmed before this mirror read them) is skipped, and readers of
    the local log count it in ``missed``. ``stream`` defaults to ``stream_key(name)``;
    ``mode`` is the permissions of the log it makes: 0o600 (owner-only) unless told.
    """

    def __init__(
        self,
        url: str,
        name: str,
        *,
        local: str | None = None,
        stream: str | None = None,
        mode: int = DEFAULT_MODE,
    ) -> None:
        stream = stream if stream is not None else stream_key(name)
        self._local = check_name(local if local is not None else name)
        super().__init__(stream, url, f"mirror of {stream!r} to {self._local!r}")
        self._mode = mode
        self._meta: Meta | None = None
        self._writer: Writer | None = None
        self._target: AtomicLog | None = None
        self._next_id = "0-0"
        self._written = 0
        self._said_waiting = False

    @property
    def position(self) -> int | None:
        """The position the local log's next record gets (None before it exists)."""
        return None if self._writer is None else self._writer.end

    @property
    def written(self) -> int:
        """How many records this mirror has written into the local log."""
        return self._written

    def run(self) -> None:
        """Mirror until ``stop()``; the local log stays. Raises RedisUnavailableError if
        Redis does not answer at the start, StreamContentError if the stream holds what no
        relay writes, NotAMirrorError if the local log is not a mirror of the stream; the
        last two before writing anything."""
        link = self._link
        try:
            with self._running():
                synced = False
                while not link.stopping:
                    try:
                        if not synced:
                            synced = self._sync()
                            continue
                        self._follow()
                    except LINK_ERRORS as exc:
                        synced = False
                        link.reconnect(exc)
        finally:
            if self._writer is not None:
                self._writer.close()
            if self._target is not None:
                self._target.close()
            self._writer = self._target = None

    def _refusal(self, why: str) -> NotAMirrorError:
        return NotAMirrorError(self._local, self._stream, f"{why}; nothing written")

    def _sync(self) -> bool:
        """Read and check the stream's metadata and newest entry, open the local log if it
        exists, and read on after the local log's end. False while no relay wrote yet."""
        stream, client = self._stream, self._link.client
        pipe = client.pipeline(transaction=False)
        pipe.xrevrange(stream, "+", "-", count=1)  # before the metadata: a relay writes it first
        pipe.hgetall(meta_key(stream))
        try:
            raw_last, raw_meta = pipe.execute()
        except COMMAND_ERROR as exc:  # WRONGTYPE
            raise StreamContentError(stream, f"stream {stream!r}: {exc}; nothing written") from None
        last = first_entry(raw_last)
        if not raw_meta:
            if last is not None:
                raise StreamContentError(
                    stream,
                    f"stream {stream!r} has entries but no {meta_key(stream)}: no atomic-log relay "
                    "wrote it; nothing written",
                )
            if not self._said_waiting:
                log.warning("%s: waiting for a relay to write the stream", self._link.what)
                self._said_waiting = True
            self._link.pause(IDLE)
            return False
        meta, source = parse_meta(stream, raw_meta)
        if source.is_here(self._local):
            raise self._refusal(
                f"stream {stream!r} is relayed from {source}, this host: a mirror here must write "
                "another log (name it with --as LOCAL; in Python, Mirror(..., local=...))"
            )
        if last is not None:
            entry(stream, meta.dtype.itemsize, *last)
        if self._target is None:
            self._open_existing(meta)
        elif meta != self._meta:
            raise StreamContentError(
                stream,
                f"stream {stream!r} now carries {meta}; log {self._local!r} holds {self._meta}: "
                "nothing written",
            )
        self._meta = meta
        if self._writer is not None:
            self._next_id = f"{self._writer.end}-{MAX_SEQ}"  # entries holding a position >= end
            log.info("%s: resuming at position %s", self._link.what, f"{self._writer.end:,}")
        else:
            log.info("%s: reading the stream from its oldest entry", self._link.what)
        return True

    def _open_existing(self, meta: Meta) -> None:
        """Continue the local log if it exists and is a mirror of this stream, claiming its
        writer; otherwise it is made at the first entry."""
        try:
            target = AtomicLog.attach(self._local)
        except FileNotFoundError:
            return
        with target:
            found = Meta.of(target)
            if found != meta:
                raise self._refusal(
                    f"stream {self._stream!r} carries {meta}; the existing log {self._local!r} holds "
                    f"{found} (mirror into another log with --as)"
                )
            snapshot = target.snapshot()
            self._check_newest(meta, snapshot.chunks())
            checked = snapshot.end
            del snapshot
        self._writer, self._target = AtomicLog.new_claimed(
            retained=meta.retained, segment=meta.segment, dtype=meta.dtype, name=self._local, exist_ok=True
        )  # ClaimHeldError if another process (another mirror?) writes to it
        if self._writer.end != checked:
            raise self._refusal(f"log {self._local!r} was written to while this mirror checked it")

    def _check_newest(self, meta: Meta, chunks: Iterable[Chunk]) -> None:
        """NotAMirrorError unless the local log's newest records (``chunks``, a snapshot's)
        are the stream's at those positions; nothing to compare (no record, or the stream
        no longer holds the newest) passes, said on the log."""
        held = list(chunks)
        if not held:
            return
        newest = held[-1].start + len(held[-1]) - 1
        # The first entry whose END is above `newest`: the one holding it, if any does.
        found = first_entry(self._link.client.xrange(self._stream, f"{newest + 1}-0", "+", count=1))
        if found is not None:
            first, _, data = entry(self._stream, meta.dtype.itemsize, *found)
        if found is None or first > newest:
            log.warning(
                "%s: the stream no longer holds position %s, the newest record of %r: nothing to "
                "compare it with; continuing it",
                self._link.what,
                f"{newest:,}",
                self._local,
            )
            return
        theirs = np.frombuffer(data, meta.dtype)
        for chunk in reversed(held):
            low, high = max(first, chunk.start), min(newest + 1, chunk.start + len(chunk))
            if low >= high:
                break
            mine = chunk.values[low - chunk.start : high - chunk.start]
            if mine.tobytes() != theirs[low - first : high - first].tobytes():
                raise self._refusal(
                    f"the existing log {self._local!r} holds other records than stream "
                    f"{self._stream!r} at positions {low:,} to {high - 1:,}: it is not this stream's "
                    f"mirror (mirror into another log with --as, or remove it: atomic-log rm {self._local})"
                )

    def _follow(self) -> None:
        stream, client = self._stream, self._link.client
        meta = self._meta
        assert meta is not None
        while not self._link.stopping:
            reply: Any = client.xread({stream: self._next_id}, count=_READ_COUNT, block=int(IDLE * 1000))
            if not reply:
                continue
            entries: list[tuple[bytes, dict[bytes, bytes]]] = reply[0][1]
            # Check them all before writing any: bad content writes nothing.
            batches = [entry(stream, meta.dtype.itemsize, *found) for found in entries]
            for first, count, data in batches:
                self._write(meta, first, count, data)
            self._next_id = entries[-1][0].decode()

    def _write(self, meta: Meta, first: int, count: int, data: bytes) -> None:
        writer = self._writer
        if writer is None:
            try:
                writer, self._target = AtomicLog.new_claimed(
                    retained=meta.retained,
                    segment=meta.segment,
                    dtype=meta.dtype,
                    name=self._local,
                    mode=self._mode,
                    start=first,
                )
                log.info("%s: made the log, from position %s", self._link.what, f"{first:,}")
            except LogExistsError:  # made by someone else since _sync(): checked as any existing log
                self._open_existing(meta)
                if self._writer is None:
                    gone = f"log {self._local!r} came and went while this mirror made it"
                    raise self._refusal(gone) from None
                writer = self._writer
            self._writer = writer
        end = writer.end
        if first + count <= end:
            return  # held already
        if first > end:  # never in the stream, or trimmed before we read it
            writer.skip_to(first)
            self._losses.add(end, first - end)
        values = np.frombuffer(data, dtype=writer.log.dtype)  # the log's own dtype: extend's fast path
        if first < end:
            values = values[end - first :]
        writer.extend(values)
        self._written += len(values)
