"""Beyond one host: relay a log through a Redis stream, and mirror it into logs elsewhere.

    Relay("ticks", "redis://hub:6379/0").run()     # on the writer's host, until stop()
    Mirror("redis://hub:6379/0", "ticks").run()    # on any host: a local log "ticks"

The relay follows a log with a cursor and appends each batch it gets to a Redis stream as
one entry; a mirror reads the stream (``XREAD BLOCK``) and writes the batches into a local
log of the same dtype and capacities, so readers there use the very same API. The command
line runs both (``atomic-log relay``, ``atomic-log mirror``). Needs the ``redis`` extra:
``pip install 'atomic-log-shm[redis]'``. Guide and measurements: docs/redis.md.

Stream format 1 (``FORMAT``), for a stream key ``KEY`` (``atomic-log:NAME`` by default):

    key       type    holds                                               written
    KEY:meta  hash    format, descr (numpy's dtype description, a         by the relay, before
                      Python literal as in .npy files), itemsize,         its first entry and
                      retained, segment (capacities), source (log name)   at each connection
    KEY       stream  one entry per batch of consecutive records:         by the relay (XADD,
                        ID "END-COUNT": END the position after its last   trimmed MINID ~)
                          record, COUNT how many records it holds (>= 1)
                        field "d": the records' bytes, COUNT x itemsize

Why the position is the entry's ID: IDs must grow, and batches never overlap, so they do;
``XREAD`` from ``E-<max>`` returns exactly the entries holding a position >= E (a batch a
mirror has half of included); ``XREVRANGE + - COUNT 1`` says where a restarted relay
resumes; XADD refuses an ID at or below the last, so a retried write is never stored twice;
and ``MINID ~ END-retained`` trims to about the log's retained capacity in records, whatever
the batch sizes (``MAXLEN`` counts entries, and an entry holds 1 to 32,768 records).

Guarantees. Positions are global: a mirror's position p holds the source's record p. What a
mirror never got (the relay started late or fell behind the window, Redis lost or trimmed
entries, the mirror was away too long) is skipped with ``Writer.skip_to``, so its readers
count it in ``missed``, exactly, and never see other data there. A relay resumes after the
last position the stream holds; a mirror after its own log's end. A lost connection is
retried with backoff and reported (logger ``atomic_log_shm.relay``; WARNING, so it reaches
stderr even unconfigured); the connection at start is not: ``RedisUnavailableError``.
Stream content that no relay of this log writes raises ``StreamContentError`` before
anything is written. One relay per stream: two relays of one log would interleave batches.
"""

from __future__ import annotations

import logging
import time
import urllib.parse
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from . import _header, _shm
from ._cursor import Cursor, Poll
from ._errors import (
    AtomicLogError,
    InvalidArgumentError,
    MissingDependencyError,
    RedisUnavailableError,
    StreamContentError,
)
from ._log import AtomicLog
from ._writer import Writer

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError:  # pragma: no cover - depends on the installation
    raise MissingDependencyError(
        "relaying a log through Redis needs redis-py, which is not installed: "
        "pip install 'atomic-log-shm[redis]'"
    ) from None

__all__ = [
    "FORMAT",
    "Mirror",
    "RedisUnavailableError",
    "Relay",
    "StreamContentError",
    "stream_key",
]

FORMAT = "atomic-log-shm/1"
"""The stream format a relay writes and a mirror reads: the ``format`` field of ``KEY:meta``."""
_DATA = b"d"
_ENTRY_BYTES = 1 << 20  # the most one entry carries (fewer records if a record is larger)
_PIPELINE_BYTES = 8 << 20  # the most the relay sends before it waits for the replies
_READ_COUNT = 16  # entries a mirror takes per XREAD
# A relay that finds _BUSY records or more at a look sends them, then lets 10 us a record
# found (5 ms at most) pass since that look before it looks again: at high rates it makes
# fewer, larger entries and leaves the CPU to the writer (W in bench/relay.py: 0.8x the
# writer's rate with 1 ms, 0.9x with 5 ms, on a busy 2-core machine); at low rates (a
# record or a few at a look) each record goes at once.
_BUSY = 16
_LINGER_PER_RECORD = 10e-6
_LINGER_MAX = 0.005
_IDLE = 0.25  # seconds a relay or mirror waits for news before it looks at stop() again
_CONNECT_TIMEOUT = 2.0
_SOCKET_TIMEOUT = 5.0  # longer than any XREAD BLOCK
_BACKOFF_FIRST, _BACKOFF_MAX = 0.1, 2.0
_REPORT_EVERY = 1.0  # seconds between two reports of lost records
_MAX_SEQ = (1 << 64) - 1  # the largest sequence part of a stream ID
_DESCR_MAX = _header.MAX_DTYPE_SIZE

# What a lost connection looks like (a server restarting, a network drop, a failover that
# made our server a replica); worth retrying with backoff once a relay or mirror runs.
_LINK_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ReadOnlyError)

_log = logging.getLogger(__name__)


def stream_key(name: str) -> str:
    """The stream a relay of log ``name`` writes to unless told otherwise."""
    return f"atomic-log:{name}"


def _redacted(url: str) -> str:
    """``url`` without its password, for messages."""
    try:
        parts = original = urllib.parse.urlsplit(url)
        if parts.password is not None:
            host = parts.netloc.rpartition("@")[2]
            parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}")
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        if any(key == "password" for key, _ in query):
            hidden = [(key, "***" if key == "password" else value) for key, value in query]
            parts = parts._replace(query=urllib.parse.urlencode(hidden, safe="*/"))
        return url if parts == original else urllib.parse.urlunsplit(parts)
    except ValueError:
        return "<a malformed URL>"


@dataclass(frozen=True)
class _Meta:
    """What a stream's ``KEY:meta`` hash says about the records of its entries."""

    dtype: np.dtype[Any]
    retained: int
    segment: int

    @classmethod
    def of(cls, log: AtomicLog) -> _Meta:
        return cls(log.dtype, log.retained_capacity, log.segment_capacity)

    def fields(self, source: str) -> dict[str, str | int]:
        return {
            "format": FORMAT,
            "descr": _header._describe(self.dtype).decode(),
            "itemsize": self.dtype.itemsize,
            "retained": self.retained,
            "segment": self.segment,
            "source": source,
        }

    @classmethod
    def parse(cls, stream: str, raw: dict[bytes, bytes]) -> _Meta:
        """The metadata in ``raw`` (HGETALL of ``stream``'s meta key), or StreamContentError."""
        try:
            if raw.get(b"format") != FORMAT.encode():
                raise ValueError(f"format {raw.get(b'format')!r}, not {FORMAT!r}")
            descr = raw[b"descr"]
            if len(descr) > _DESCR_MAX:
                raise ValueError("a dtype description too long to be one")
            dtype = _header.check_dtype(_header._parse_dtype(descr))
            retained, segment = int(raw[b"retained"]), int(raw[b"segment"])
            if int(raw[b"itemsize"]) != dtype.itemsize or retained < 1 or segment < 1:
                raise ValueError("itemsize or capacities out of range")
        except (KeyError, ValueError, SyntaxError, AtomicLogError) as exc:
            raise StreamContentError(
                stream, f"stream {stream!r}: {_meta_key(stream)} is not an atomic-log relay's ({exc})"
            ) from None
        return cls(dtype, retained, segment)

    def __str__(self) -> str:
        return f"records of {self.dtype} (retained {self.retained:,}, segments of {self.segment:,})"


def _meta_key(stream: str) -> str:
    return f"{stream}:meta"


def _entry(stream: str, itemsize: int, entry_id: bytes, fields: dict[bytes, bytes]) -> tuple[int, int, bytes]:
    """``(first position, count, records' bytes)`` of a stream entry, or StreamContentError."""
    end_text, _, count_text = entry_id.partition(b"-")
    data = fields.get(_DATA)
    count = int(count_text) if count_text.isdigit() else 0
    end = int(end_text) if end_text.isdigit() else 0
    if len(fields) != 1 or data is None or not 1 <= count <= end or len(data) != count * itemsize:
        shown = sorted(k.decode("utf-8", "replace") for k in fields)
        raise StreamContentError(
            stream,
            f"stream {stream!r}: entry {entry_id.decode('utf-8', 'replace')} (fields {shown}) is not a "
            f"batch of {itemsize}-byte records from an atomic-log relay; nothing written",
        )
    return end - count, count, data


def _last_entry(stream: str, raw: Any) -> tuple[bytes, dict[bytes, bytes]] | None:
    """The (ID, fields) of an XREVRANGE COUNT 1 reply, if the stream has an entry."""
    entries = cast("list[tuple[bytes, dict[bytes, bytes]]]", raw)
    return entries[0] if entries else None


class _Losses:
    """Records lost on the way: counted exactly, reported on the log at most once a second."""

    __slots__ = ("_first", "_last", "_next_report", "_unreported", "_what", "total")

    def __init__(self, what: str) -> None:
        self._what = what
        self.total = 0
        self._unreported = 0
        self._first = self._last = 0
        self._next_report = 0.0

    def add(self, first: int, count: int) -> None:
        if not self._unreported:
            self._first = first
        self._unreported += count
        self._last = first + count - 1
        self.total += count
        if time.monotonic() >= self._next_report:
            self.report()

    def report(self) -> None:
        """Say what was lost since the last report (at the latest when a run ends)."""
        if self._unreported:
            self._next_report = time.monotonic() + _REPORT_EVERY
            _log.warning(
                "%s: %s records lost (positions %s to %s); %s in all",
                self._what,
                f"{self._unreported:,}",
                f"{self._first:,}",
                f"{self._last:,}",
                f"{self.total:,}",
            )
            self._unreported = 0


class _Link:
    """A Redis connection that is retried with backoff once it worked; shared by both ends.

    ``stop()`` only sets a flag (safe from a signal handler or another thread); every wait
    here and in the loops that use a link is at most ``_IDLE`` long, so they notice it soon.
    """

    client: redis.Redis  # once connect() succeeded

    def __init__(self, url: str, what: str) -> None:
        self.url = url
        self.what = what
        self.stopping = False
        # AUTH and TLS (rediss://) settings in the URL are passed through; redis-py's own
        # retries are off: ours say so on stderr. Nothing is sent yet.
        try:
            self._pool = redis.ConnectionPool.from_url(
                url,
                socket_connect_timeout=_CONNECT_TIMEOUT,
                socket_timeout=_SOCKET_TIMEOUT,
                retry=Retry(NoBackoff(), 0),
            )
        except ValueError as exc:
            raise InvalidArgumentError(f"{_redacted(url)} is not a Redis URL: {exc}") from None

    def connect(self) -> None:
        """The first contact: RedisUnavailableError unless Redis answers."""
        try:
            # One connection, kept: a third less CPU a command than taking one from the pool.
            self.client = redis.Redis(connection_pool=self._pool, single_connection_client=True)
            self.client.ping()
        except (redis.RedisError, OSError) as exc:
            self._pool.disconnect()
            raise RedisUnavailableError(f"cannot reach Redis at {_redacted(self.url)}: {exc}") from None

    def pause(self, seconds: float) -> bool:
        """Sleep ``seconds`` in short naps; False if stop() came meanwhile."""
        deadline = time.monotonic() + seconds
        while not self.stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            time.sleep(min(left, _IDLE))
        return False

    def reconnect(self, exc: Exception) -> bool:
        """After ``exc`` lost the connection: retry with backoff until Redis answers (True)
        or stop() is called (False), saying so on the log."""
        _log.warning("%s: lost Redis at %s (%s); reconnecting", self.what, _redacted(self.url), exc)
        began = time.monotonic()
        delay = _BACKOFF_FIRST
        while self.pause(delay):
            try:
                self.client.ping()
            except _LINK_ERRORS:
                delay = min(2 * delay, _BACKOFF_MAX)
                continue
            after = time.monotonic() - began
            _log.warning("%s: reconnected to Redis at %s after %.1f s", self.what, _redacted(self.url), after)
            return True
        return False

    def close(self) -> None:
        if hasattr(self, "client"):
            self.client.close()
        self._pool.disconnect()


class Relay:
    """Follows log ``name`` on this host and appends what it finds to a Redis stream.

    ``url`` is a Redis URL (``redis://[[user]:password@]host:port/db``, ``rediss://`` for
    TLS, ``unix://``); ``stream`` defaults to ``stream_key(name)``. ``run()`` relays until
    ``stop()``: each batch the cursor finds becomes an entry (at most 1 MiB; bigger batches
    are split), sent in one round trip. It resumes after the last position the stream holds
    (from the oldest retained record if the stream is empty or new). Records that left the
    window before the relay read them are counted in ``missed`` and reported on the log.
    """

    def __init__(self, name: str, url: str, *, stream: str | None = None) -> None:
        self._stream = stream if stream is not None else stream_key(name)
        self._link = _Link(url, f"relay of {name!r} to {self._stream!r}")
        self._log = AtomicLog.attach(name)
        self._meta = _Meta.of(self._log)
        self._itemsize = self._log.dtype.itemsize
        self._entry_records = max(1, _ENTRY_BYTES // self._itemsize)
        self._cursor: Cursor | None = None
        self._pending: deque[tuple[int, int, npt.NDArray[Any]]] = deque()  # (end, count, records)
        self._position: int | None = None
        self._sent = 0
        self._losses = _Losses(self._link.what)

    @property
    def stream(self) -> str:
        """The stream's key."""
        return self._stream

    @property
    def position(self) -> int | None:
        """The position after the last record this relay has seen the stream hold (None
        before it connected)."""
        return self._position

    @property
    def sent(self) -> int:
        """How many records this relay has added to the stream."""
        return self._sent

    @property
    def missed(self) -> int:
        """How many records left the log's window before this relay read them."""
        return self._losses.total

    def stop(self) -> None:
        """Make ``run()`` return soon (within about 0.25 s). Safe from a signal handler."""
        self._link.stopping = True

    def run(self) -> None:
        """Relay until ``stop()``. Raises RedisUnavailableError if Redis does not answer at
        the start, StreamContentError (writing nothing) if the stream holds anything but
        this log's records. Closes the handle on the log when it returns."""
        link = self._link
        try:
            link.connect()
            try:
                self._sync()
            except _LINK_ERRORS as exc:
                raise RedisUnavailableError(f"lost Redis at {_redacted(link.url)} at once: {exc}") from None
            _log.info("%s: resuming at position %s", link.what, f"{self._cursor_position():,}")
            while not link.stopping:
                try:
                    self._follow()
                except _LINK_ERRORS as exc:
                    if link.reconnect(exc):
                        self._sync_after_loss()
        except redis.RedisError as exc:  # not a lost connection: e.g. NOPERM, OOM
            raise AtomicLogError(f"{link.what}: Redis refused: {exc}") from exc
        finally:
            self._losses.report()
            link.close()
            self._pending.clear()
            self._cursor = None
            self._log.close()

    def _cursor_position(self) -> int:
        assert self._cursor is not None
        return self._cursor.position

    def _sync_after_loss(self) -> None:
        while not self._link.stopping:
            try:
                self._sync()
                return
            except _LINK_ERRORS as exc:
                self._link.reconnect(exc)

    def _sync(self) -> None:
        """Check the stream's metadata (writing it when missing) and learn the stream's
        end; a new relay resumes after it, a reconnected one drops what it already holds."""
        stream, client = self._stream, self._link.client
        pipe = client.pipeline(transaction=False)
        pipe.hgetall(_meta_key(stream))
        pipe.xrevrange(stream, "+", "-", count=1)
        try:
            raw_meta, raw_last = pipe.execute()
        except redis.ResponseError as exc:  # WRONGTYPE: the key is not a stream (or a hash)
            raise StreamContentError(stream, f"stream {stream!r}: {exc}; nothing written") from None
        if raw_meta:
            found = _Meta.parse(stream, raw_meta)
            if found != self._meta:
                raise StreamContentError(
                    stream,
                    f"stream {stream!r} carries {found}; log {self._log.name!r} holds {self._meta}: "
                    "nothing written (use another --stream, or delete the stream and its :meta key)",
                )
        last = _last_entry(stream, raw_last)
        end = None
        if last is not None:
            first, count, _ = _entry(stream, self._itemsize, *last)
            end = first + count
        if not raw_meta:  # a new stream, or one Redis lost (restarted without persistence)
            client.hset(_meta_key(stream), mapping=cast(Any, self._meta.fields(self._log.name)))
        if end is not None:
            published = self._log.snapshot().end
            if end > published:
                raise StreamContentError(
                    stream,
                    f"stream {stream!r} holds positions up to {end - 1:,}, beyond log "
                    f"{self._log.name!r} (which has published {published:,}): it carries another "
                    "log; nothing written",
                )
        cursor = self._cursor
        if cursor is None:
            self._cursor = self._log.cursor(end if end is not None else "oldest")
        elif end is not None:
            self._drop_held(end)
            if end > cursor.position:  # the stream got ahead of us: another relay writes to it?
                _log.warning("%s: the stream already holds up to position %s", self._link.what, f"{end:,}")
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
                if not cursor.wait(_IDLE):
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
            # MINID ~: trim to about the log's window, in records (see the module docstring).
            trim = f"{max(0, end - retained)}-0"
            data = records.view(np.uint8).data  # no copy: the socket reads shared memory
            commands.append(("XADD", stream, "MINID", "~", trim, f"{end}-{count}", _DATA, data))
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
        except redis.ResponseError as exc:
            if "equal or smaller" not in str(exc):
                raise
            # Already there: a write retried after a lost reply, or another relay. Learn
            # where the stream ends and go on from there.
            _log.warning("%s: %s; the stream holds these records already", self._link.what, exc)
            self._sync()
            return
        sent = len(commands)
        for _ in range(sent):
            end, count, _records = self._pending.popleft()
            self._sent += count
            self._position = end


class Mirror:
    """Reads a stream that a Relay writes and writes its records into a log on this host.

    The local log (``local``, default ``name``) is made with the source's dtype and
    capacities when the first entry arrives, starting at that entry's first position, or
    continued if it exists and matches (StreamContentError if it does not, writing
    nothing). Positions are the source's: a gap in the stream (records the relay never got,
    or that were trimmed before this mirror read them) is skipped, and readers of the local
    log count it in ``missed``. ``stream`` defaults to ``stream_key(name)``.
    """

    def __init__(
        self, url: str, name: str, *, local: str | None = None, stream: str | None = None, mode: int = 0o600
    ) -> None:
        self._stream = stream if stream is not None else stream_key(name)
        self._local = _shm.check_name(local if local is not None else name)
        self._mode = mode
        self._link = _Link(url, f"mirror of {self._stream!r} to {self._local!r}")
        self._meta: _Meta | None = None
        self._writer: Writer | None = None
        self._target: AtomicLog | None = None
        self._next_id = "0-0"
        self._written = 0
        self._losses = _Losses(self._link.what)
        self._said_waiting = False

    @property
    def stream(self) -> str:
        """The stream's key."""
        return self._stream

    @property
    def position(self) -> int | None:
        """The position the local log's next record gets (None before it exists)."""
        return None if self._writer is None else self._writer.end

    @property
    def written(self) -> int:
        """How many records this mirror has written into the local log."""
        return self._written

    @property
    def missed(self) -> int:
        """How many positions this mirror skipped: records it never found in the stream."""
        return self._losses.total

    def stop(self) -> None:
        """Make ``run()`` return soon (within about 0.25 s). Safe from a signal handler."""
        self._link.stopping = True

    def run(self) -> None:
        """Mirror until ``stop()``; the local log stays. Raises RedisUnavailableError if
        Redis does not answer at the start, StreamContentError (writing nothing) if the
        stream holds what no relay writes or records the local log cannot take."""
        link = self._link
        try:
            link.connect()
            synced = False
            while not link.stopping:
                try:
                    if not synced:
                        synced = self._sync()
                        continue
                    self._follow()
                except _LINK_ERRORS as exc:
                    synced = False
                    link.reconnect(exc)
        except redis.RedisError as exc:  # not a lost connection: e.g. NOPERM
            raise AtomicLogError(f"{link.what}: Redis refused: {exc}") from exc
        finally:
            self._losses.report()
            link.close()
            if self._writer is not None:
                self._writer.close()
            if self._target is not None:
                self._target.close()
            self._writer = self._target = None

    def _sync(self) -> bool:
        """Read and check the stream's metadata and newest entry, open the local log if it
        exists, and read on after the local log's end. False while no relay wrote yet."""
        stream, client = self._stream, self._link.client
        pipe = client.pipeline(transaction=False)
        pipe.xrevrange(stream, "+", "-", count=1)  # before the metadata: a relay writes it first
        pipe.hgetall(_meta_key(stream))
        try:
            raw_last, raw_meta = pipe.execute()
        except redis.ResponseError as exc:  # WRONGTYPE
            raise StreamContentError(stream, f"stream {stream!r}: {exc}; nothing written") from None
        last = _last_entry(stream, raw_last)
        if not raw_meta:
            if last is not None:
                raise StreamContentError(
                    stream,
                    f"stream {stream!r} has entries but no {_meta_key(stream)}: no atomic-log relay "
                    "wrote it; nothing written",
                )
            if not self._said_waiting:
                _log.warning("%s: waiting for a relay to write the stream", self._link.what)
                self._said_waiting = True
            self._link.pause(_IDLE)
            return False
        meta = _Meta.parse(stream, raw_meta)
        if last is not None:
            _entry(stream, meta.dtype.itemsize, *last)
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
            self._next_id = f"{self._writer.end}-{_MAX_SEQ}"  # entries holding a position >= end
            _log.info("%s: resuming at position %s", self._link.what, f"{self._writer.end:,}")
        else:
            _log.info("%s: reading the stream from its oldest entry", self._link.what)
        return True

    def _open_existing(self, meta: _Meta) -> None:
        """Continue the local log if it exists (its dtype and capacities must be the
        stream's), claiming its writer; otherwise it is made at the first entry."""
        try:
            target = AtomicLog.attach(self._local)
        except FileNotFoundError:
            return
        found = _Meta.of(target)
        target.close()
        if found != meta:
            raise StreamContentError(
                self._stream,
                f"stream {self._stream!r} carries {meta}; the existing log {self._local!r} holds "
                f"{found}: nothing written (mirror into another log with --as)",
            )
        self._writer, self._target = AtomicLog.new_claimed(
            retained=meta.retained, segment=meta.segment, dtype=meta.dtype, name=self._local, exist_ok=True
        )  # ClaimHeldError if another process (another mirror?) writes to it

    def _follow(self) -> None:
        stream, client = self._stream, self._link.client
        meta = self._meta
        assert meta is not None
        while not self._link.stopping:
            reply: Any = client.xread({stream: self._next_id}, count=_READ_COUNT, block=int(_IDLE * 1000))
            if not reply:
                continue
            entries: list[tuple[bytes, dict[bytes, bytes]]] = reply[0][1]
            # Check them all before writing any: bad content writes nothing.
            batches = [_entry(stream, meta.dtype.itemsize, *entry) for entry in entries]
            for first, count, data in batches:
                self._write(meta, first, count, data)
            self._next_id = entries[-1][0].decode()

    def _write(self, meta: _Meta, first: int, count: int, data: bytes) -> None:
        writer = self._writer
        if writer is None:
            writer, self._target = AtomicLog.new_claimed(
                retained=meta.retained,
                segment=meta.segment,
                dtype=meta.dtype,
                name=self._local,
                mode=self._mode,
                start=first,
                exist_ok=True,
            )
            self._writer = writer
            _log.info("%s: made the log, from position %s", self._link.what, f"{first:,}")
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
