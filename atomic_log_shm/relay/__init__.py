"""Beyond one host: relay a log through a Redis stream, and mirror it into logs elsewhere.

    Relay("ticks", "redis://hub:6379/0").run()                    # on the writer's host, until stop()
    Mirror("redis://hub:6379/0", "ticks", local="ticks-hub").run()  # on any host: a local log

The relay follows a log with a cursor and appends each batch it gets to a Redis stream as
one entry; a mirror reads the stream (``XREAD BLOCK``) and writes the batches into a local
log of the same dtype and capacities, so readers there use the very same API. The command
line runs both (``atomic-log relay``, ``atomic-log mirror``) and removes a stream
(``atomic-log rm --redis``). Needs the ``redis`` extra: ``pip install 'atomic-log-shm[redis]'``.
Guide and measurements: docs/redis.md.

One module per concept: ``_format`` (the stream and its metadata, as Redis holds them),
``_endpoint`` (what both ends share: the Redis link, lost records, ``stop()``), ``_relay``
and ``_mirror``. They use the library's public API only, and two of its rules (what a log
name and a log's dtype may be).

Guarantees. Positions are global: a mirror's position p holds the source's record p. What a
mirror never got (the relay started late or fell behind the window, Redis lost or trimmed
entries, the mirror was away too long) is skipped with ``Writer.skip_to``, so its readers
count it in ``missed``, exactly, and never see other data there. A relay resumes after the
last position the stream holds; a mirror after its own log's end. A lost connection is
retried with backoff and reported (logger ``atomic_log_shm.relay``; WARNING, so it reaches
stderr even unconfigured); the connection at start is not: ``RedisUnavailableError``.
Stream content that no relay of this log writes raises ``StreamContentError`` before
anything is written; a local log that is not a mirror of the stream (the source log itself,
or another log of that name) ``NotAMirrorError``. One relay per stream: two relays of one
log would interleave batches.
"""

from .. import NotAMirrorError, RedisUnavailableError, StreamContentError, StreamNotFoundError
from ._format import FORMAT, stream_key
from ._mirror import Mirror
from ._relay import Relay, remove_stream

__all__ = [
    "FORMAT",
    "Mirror",
    "NotAMirrorError",
    "RedisUnavailableError",
    "Relay",
    "StreamContentError",
    "StreamNotFoundError",
    "remove_stream",
    "stream_key",
]
