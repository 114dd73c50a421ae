"""The relay: follows a log with a cursor and appends each batch it finds to a Redis stream
as one entry (the format: ``_format``). Also the way to remove such a stream."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from .. import AtomicLog, Cursor, Poll, RedisUnavailableError, StreamContentError, StreamNotFoundError
from ._endpoint import COMMAND_ERROR, IDLE, LINK_ERRORS, Endpoint, Link, log, redacted
from ._format import DATA, FORMAT_FAMILY, Meta, Source, entry, first_entry, meta_key, parse_meta, stream_key

_ENTRY_BYTES = 1 << 20  # the most one entry carries (fewer records if a record is larger)
_PIPELINE_BYTES = 8 << 20  # the most the relay sends before it waits for the replies
# A relay that finds _BUSY records or more at a look sends them, then lets 10 us a record
# found (5 ms at most) pass since that look before it looks again: at high rates it makes
# fewer, larger entries and leaves the CPU to the writer (W in bench/relay.py: 0.8x the
# writer's rate with 1 ms, 0.9x with 5 ms, on a busy 2-core machine); at low rates (a
# record or a few at a look) each record goes at once.
_BUSY = 16
_LINGER_PER_RECORD = 10e-6
_LINGER_MAX = 0.005


class Relay(Endpoint):
    """Follows log ``name`` on this host and appends what it finds to a Redis stream.

    ``url`` is a Redis URL (``redis://[[user]:password@]host:port/db``, ``rediss://`` for
    TLS, ``unix://``); ``stream`` defaults to ``stream_key(name)``. ``run()`` relays until
    ``stop()``: each batch the cursor finds becomes an entry (at most 1 MiB; bigger batches
    are split), sent in one round trip. It resumes after the last position the stream holds
    (from the oldest retained record if the stream is empty or new). Records that left the
    window before the relay read them are counted in ``missed`` and reported on the log.
    At each connection it writes the stream's metadata: the records' dtype and capacities,
    and which log on which host it relays (what a mirror checks so as never to write into
    the source log itself).
    """

    def __init__(self, name: str, url: str, *, stream: str | None = None) -> None:
        stream = stream if stream is not None else stream_key(name)
        super().__init__(stream, url, f"relay of {name!r} to {stream!r}")
        self._log = AtomicLog.attach(name)
        self._meta = Meta.of(self._log)
        self._source = Source.here(self._log.name)
        self._itemsize = self._log.dtype.itemsize
        self._entry_records = max(1, _ENTRY_BYTES // self._itemsize)
        self._cursor: Cursor | None = None
        self._pending: deque[tuple[int, int, npt.NDArray[Any]]] = deque()  # (end, count, records)
        self._position: int | None = None
        self._sent = 0

    @property
    def position(self) -> int | None:
        """The position after the last record this relay has seen the stream hold (None
        before it connected)."""
        return self._position

    @property
    def sent(self) -> int:
        """How many records this relay has added to the stream."""
        return self._sent

    def run(self) -> None:
        """Relay until ``stop()``. Raises RedisUnavailableError if Redis does not answer at
        the start, StreamContentError (writing nothing) if the stream holds anything but
        this log's records. Closes the handle on the log when it returns."""
        link = self._link
        try:
            with self._running():
                try:
                    self._sync()
                except LINK_ERRORS as exc:
                    lost = f"lost Redis at {redacted(link.url)} at once: {exc}"
                    raise RedisUnavailableError(lost) from None
                assert self._cursor is not None
                log.info("%s: resuming at position %s", link.what, f"{self._cursor.position:,}")
                while not link.stopping:
                    try:
                        self._follow()
                    except LINK_ERRORS as exc:
                        if link.reconnect(exc):
                            self._sync_after_loss()
        finally:
            self._pending.clear()
            self._cursor = None
            self._log.close()

    def _sync_after_loss(self) -> None:
        while not self._link.stopping:
            try:
                self._sync()
                return
            except LINK_ERRORS as exc:
                self._link.reconnect(exc)

    def _sync(self) -> None:
        """Check the stream's metadata and learn the stream's end, then write the metadata;
        a new relay resumes after the end, a reconnected one drops what it already holds."""
        stream, client = self._stream, self._link.client
        pipe = client.pipeline(transaction=False)
        pipe.hgetall(meta_key(stream))
        pipe.xrevrange(stream, "+", "-", count=1)
        try:
            raw_meta, raw_last = pipe.execute()
        except COMMAND_ERROR as exc:  # WRONGTYPE: the key is not a stream (or a hash)
            raise StreamContentError(stream, f"stream {stream!r}: {exc}; nothing written") from None
        if raw_meta:
            found, _ = parse_meta(stream, raw_meta)
            if found != self._meta:
                raise StreamContentError(
                    stream,
                    f"stream {stream!r} carries {found}; log {self._log.name!r} holds {self._meta}: "
                    "nothing written (use another --stream, or remove the stream: atomic-log rm --redis)",
                )
        last = first_entry(raw_last)
        end = None
        if last is not None:
            first, count, _ = entry(stream, self._itemsize, *last)
            end = first + count
            published = self._log.snapshot().end
            if end > published:
                raise StreamContentError(
                    stream,
                    f"stream {stream!r} holds positions up to {end - 1:,}, beyond log "
                    f"{self._log.name!r} (which has published {published:,}): it carries another "
                    "log; nothing written",
                )
        # At each connection: the records' format (again, if Redis lost it in a restart) and
        # which log on which host writes the stream now (mirrors check it before writing).
        fields = {**self._meta.fields(), **self._source.fields()}
        client.hset(meta_key(stream), mapping=cast(Any, fields))
        cursor = self._cursor
        if cursor is None:
            self._cursor = self._log.cursor(end if end is not None else "oldest")
        elif end is not None:
            self._drop_held(end)
            if end > cursor.position:  # the stream got ahead of us: another relay writes to it?
                log.warning("%s: the stream already holds up to position %s", self._link.what, f"{end:,}")
                self._cursor = self._log.cursor(end)
        self._position = end

    def _drop_held(self, end: int) -> None:
        """Forget the unsent records that the stream holds already (positions < end)."""
        pending = self._pending
        while pending and pending[0][0] <= end:
            pending.popleft()
        if pending and pending[0][0] - pending[0][1] < end:
            entry_end, count, records = pending.popleft()
            keep = entry_end - end
            pending.appendleft((entry_end, keep, records[count - keep :]))

    def _follow(self) -> None:
        cursor = self._cursor
        assert cursor is not None
        pending = self._pending
        while not self._link.stopping:
            linger_until = 0.0
            if not pending:
                if not cursor.wait(IDLE):
                    continue
                batch = cursor.poll()
                if batch.missed:
                    self._losses.add(batch.start - batch.missed, batch.missed)
                found = len(batch)
                if found >= _BUSY:  # a busy log: let the next batch grow for a while
                    linger_until = time.perf_counter() + min(_LINGER_MAX, found * _LINGER_PER_RECORD)
                pending.extend(self._entries(batch))
            self._send()
            pause = linger_until - time.perf_counter()
            if pause > 0:
                time.sleep(pause)

    def _entries(self, batch: Poll) -> Iterator[tuple[int, int, npt.NDArray[Any]]]:
        """The stream entries a batch makes: one per segment it touched, split to fit 1 MiB.
        The arrays are views of shared memory, valid for as long as they are held."""
        position = batch.start
        step = self._entry_records
        for values in batch.arrays:
            for i in range(0, len(values), step):
                part = values[i : i + step]
                position += len(part)
                yield position, len(part), part

    def _send(self) -> None:
        """XADD the pending entries (up to 8 MiB of them, in one round trip) and forget them
        once Redis has them. One entry, the usual case at low rates, skips the pipeline:
        half the CPU per entry (the relay's cost per record when records come one by one)."""
        stream, retained = self._stream, self._meta.retained
        commands: list[tuple[Any, ...]] = []
        size = 0
        for end, count, records in self._pending:
            if commands and size + records.nbytes > _PIPELINE_BYTES:
                break
            # MINID ~: trim to about the log's window, in records (see _format's docstring).
            trim = f"{max(0, end - retained)}-0"
            data = records.view(np.uint8).data  # no copy: the socket reads shared memory
            commands.append(("XADD", stream, "MINID", "~", trim, f"{end}-{count}", DATA, data))
            size += records.nbytes
        client = self._link.client
        try:
            if len(commands) == 1:
                client.execute_command(*commands[0])  # type: ignore[no-untyped-call]
            else:
                pipe = client.pipeline(transaction=False)
                for command in commands:
                    pipe.execute_command(*command)  # type: ignore[no-untyped-call]
                pipe.execute()
        except COMMAND_ERROR as exc:
            if "equal or smaller" not in str(exc):
                raise
            # Already there: a write retried after a lost reply, or another relay. Learn
            # where the stream ends and go on from there.
            log.warning("%s: %s; the stream holds these records already", self._link.what, exc)
            self._sync()
            return
        sent = len(commands)
        for _ in range(sent):
            end, count, _records = self._pending.popleft()
            self._sent += count
            self._position = end


def remove_stream(url: str, name: str, *, stream: str | None = None) -> list[str]:
    """Remove the stream a relay of log ``name`` writes (``stream``, default
    ``stream_key(name)``) and its ``:meta`` hash from the Redis at ``url``, whether or not
    a log of that name exists; returns the keys removed (the stream first).

    Removes only what a relay writes: a key of another type, a stream without the metadata
    a relay writes before its first entry, or metadata of another format is a
    StreamContentError, and nothing is removed. StreamNotFoundError if neither key exists,
    RedisUnavailableError if Redis does not answer. A relay still running writes the stream
    again at its next batch: stop it first.
    """
    key = stream if stream is not None else stream_key(name)
    keys = (key, meta_key(key))
    with Link(url, f"removing {key!r}").connected() as client:
        pipe = client.pipeline(transaction=False)
        for k in keys:
            pipe.type(k)
        kinds = [kind.decode() for kind in pipe.execute()]
        if kinds == ["none", "none"]:
            raise StreamNotFoundError(key, f"no stream {key!r} in Redis at {redacted(url)}")
        if kinds[1] == "hash":
            found = client.hget(keys[1], "format")
            ours = isinstance(found, bytes) and found.startswith(FORMAT_FAMILY.encode())
        else:
            ours = False
        if not ours or kinds[0] not in ("stream", "none"):
            shown = ", ".join(
                f"{k} {'is a ' + kind if kind != 'none' else 'is missing'}"
                for k, kind in zip(keys, kinds, strict=True)
            )
            raise StreamContentError(key, f"{shown}: not what an atomic-log relay writes; nothing removed")
        present = [k for k, kind in zip(keys, kinds, strict=True) if kind != "none"]
        client.delete(*present)
    return present
