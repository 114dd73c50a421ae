"""What both ends of a stream share: a Redis connection retried with backoff once it
worked, a count of the records lost on the way, and ``stop()``.

``stop()`` only sets a flag (safe from a signal handler or another thread); every wait here
and in the loops of the relay and the mirror is at most ``IDLE`` long, so they notice it soon.
Messages go to the logger ``atomic_log_shm.relay`` (lost connections and records at WARNING,
so they reach stderr even unconfigured).
"""

from __future__ import annotations

import contextlib
import logging
import time
import urllib.parse
from collections.abc import Iterator

from .. import AtomicLogError, InvalidArgumentError, MissingDependencyError, RedisUnavailableError

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError:  # pragma: no cover - depends on the installation
    raise MissingDependencyError(
        "relaying a log through Redis needs redis-py, which is not installed: "
        "pip install 'atomic-log-shm[redis]'"
    ) from None

IDLE = 0.25  # seconds a relay or mirror waits for news before it looks at stop() again
_CONNECT_TIMEOUT = 2.0
_SOCKET_TIMEOUT = 5.0  # longer than any XREAD BLOCK
_BACKOFF_FIRST, _BACKOFF_MAX = 0.1, 2.0
_REPORT_EVERY = 1.0  # seconds between two reports of lost records

# What a lost connection looks like (a server restarting, a network drop, a failover that
# made our server a replica); worth retrying with backoff once a relay or mirror runs.
LINK_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ReadOnlyError)
# What Redis answers to a command it will not run here: WRONGTYPE, an ID not above the last.
COMMAND_ERROR = redis.ResponseError

log = logging.getLogger("atomic_log_shm.relay")


def redacted(url: str) -> str:
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


class Link:
    """A Redis connection, retried with backoff once it worked."""

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
            raise InvalidArgumentError(f"{redacted(url)} is not a Redis URL: {exc}") from None

    def connect(self) -> None:
        """The first contact: RedisUnavailableError unless Redis answers."""
        try:
            # One connection, kept: a third less CPU a command than taking one from the pool.
            self.client = redis.Redis(connection_pool=self._pool, single_connection_client=True)
            self.client.ping()
        except (redis.RedisError, OSError) as exc:
            self._pool.disconnect()
            raise RedisUnavailableError(f"cannot reach Redis at {redacted(self.url)}: {exc}") from None

    @contextlib.contextmanager
    def connected(self) -> Iterator[redis.Redis]:
        """The client, connected (RedisUnavailableError if Redis does not answer), closed on
        the way out. Redis errors come out typed: a lost connection that nobody retried as
        RedisUnavailableError, a refusal (NOPERM, OOM) as an AtomicLogError."""
        self.connect()
        try:
            yield self.client
        except LINK_ERRORS as exc:
            raise RedisUnavailableError(f"{self.what}: lost Redis at {redacted(self.url)}: {exc}") from exc
        except redis.RedisError as exc:
            raise AtomicLogError(f"{self.what}: Redis refused: {exc}") from exc
        finally:
            self.close()

    def pause(self, seconds: float) -> bool:
        """Sleep ``seconds`` in short naps; False if stop() came meanwhile."""
        deadline = time.monotonic() + seconds
        while not self.stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            time.sleep(min(left, IDLE))
        return False

    def reconnect(self, exc: Exception) -> bool:
        """After ``exc`` lost the connection: retry with backoff until Redis answers (True)
        or stop() is called (False), saying so on the log."""
        log.warning("%s: lost Redis at %s (%s); reconnecting", self.what, redacted(self.url), exc)
        began = time.monotonic()
        delay = _BACKOFF_FIRST
        while self.pause(delay):
            try:
                self.client.ping()
            except LINK_ERRORS:
                delay = min(2 * delay, _BACKOFF_MAX)
                continue
            after = time.monotonic() - began
            log.warning("%s: reconnected to Redis at %s after %.1f s", self.what, redacted(self.url), after)
            return True
        return False

    def close(self) -> None:
        if hasattr(self, "client"):
            self.client.close()
        self._pool.disconnect()


class Losses:
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
            log.warning(
                "%s: %s records lost (positions %s to %s); %s in all",
                self._what,
                f"{self._unreported:,}",
                f"{self._first:,}",
                f"{self._last:,}",
                f"{self.total:,}",
            )
            self._unreported = 0


class Endpoint:
    """One end of a stream (a Relay or a Mirror): its key, its link to Redis, its losses."""

    def __init__(self, stream: str, url: str, what: str) -> None:
        self._stream = stream
        self._link = Link(url, what)
        self._losses = Losses(what)

    @property
    def stream(self) -> str:
        """The stream's key."""
        return self._stream

    @property
    def missed(self) -> int:
        """How many records never made it through this end, counted exactly: for a relay,
        those that left the log's window before it read them; for a mirror, the positions
        it skipped (records it never found in the stream)."""
        return self._losses.total

    def stop(self) -> None:
        """Make ``run()`` return soon (within about 0.25 s). Safe from a signal handler."""
        self._link.stopping = True

    @contextlib.contextmanager
    def _running(self) -> Iterator[redis.Redis]:
        """``run()``'s frame: connected to Redis, and on the way out the losses reported
        and the connection closed."""
        try:
            with self._link.connected() as client:
                yield client
        finally:
            self._losses.report()
