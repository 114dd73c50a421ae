"""The stream format: what a relay writes to Redis and a mirror reads back.

Stream format 1 (``FORMAT``), for a stream key ``KEY`` (``atomic-log:NAME`` by default):

    key       type    holds                                              written
    KEY:meta  hash    format    "atomic-log-shm/1"                       by the relay, at each
                      descr     numpy's description of the dtype         connection (so before
                                (dtype_to_descr, as a Python literal:    its first entry)
                                what .npy files hold)
                      itemsize  bytes a record
                      retained  the source log's capacities
                      segment
                      source    the source log's name
                      host      the source's host name                   (absent in metas of
                      host_id   "machine-id:<id>" or "boot-id:<id>"      older relays)
    KEY       stream  one entry per batch of consecutive records:        by the relay (XADD,
                        ID "END-COUNT": END the position after its last  trimmed MINID ~)
                          record, COUNT how many records it holds (>= 1)
                        field "d": the records' bytes, COUNT x itemsize

Why the position is the entry's ID: IDs must grow, and batches never overlap, so they do;
``XREAD`` from ``E-<max>`` returns exactly the entries holding a position >= E (a batch a
mirror has half of included); ``XREVRANGE + - COUNT 1`` says where a restarted relay
resumes; XADD refuses an ID at or below the last, so a retried write is never stored twice;
and ``MINID ~ END-retained`` trims to about the log's retained capacity in records, whatever
the batch sizes (``MAXLEN`` counts entries, and an entry holds 1 to 32,768 records).

The format is this package's own: the dtype is described with numpy's public
``numpy.lib.format`` functions and read back with ``ast.literal_eval`` (literals only, never
code: what comes from Redis is data). Everything read from Redis is checked here, so the
relay and the mirror act only on entries and metadata that a relay can have written.
"""

from __future__ import annotations

import ast
import socket
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from numpy.lib import format as npformat

from .. import AtomicLog, AtomicLogError, StreamContentError
from .._header import check_dtype  # the library's rule for what a log can hold

FORMAT_FAMILY = "atomic-log-shm/"  # what the format field of every version starts with
FORMAT = FORMAT_FAMILY + "1"
"""The stream format a relay writes and a mirror reads: the ``format`` field of ``KEY:meta``."""
DATA = b"d"  # the field of an entry that holds its records
END_MAX = (1 << 63) - 1  # positions are int64 in a log: an entry ends at this one at most
MAX_SEQ = (1 << 64) - 1  # the largest sequence part of a stream ID
_DESCR_MAX = 1 << 16  # a longer dtype description is taken as damage, not parsed
# Where a host's identity is read, best first: machine-id survives reboots (logs do not,
# but a stream's metadata may); a container without one still has the kernel's boot id.
_HOST_IDS = (("machine-id", "/etc/machine-id"), ("boot-id", "/proc/sys/kernel/random/boot_id"))


def stream_key(name: str) -> str:
    """The stream a relay of log ``name`` writes to unless told otherwise."""
    return f"atomic-log:{name}"


def meta_key(stream: str) -> str:
    """The key of the hash holding ``stream``'s metadata."""
    return f"{stream}:meta"


@dataclass(frozen=True)
class Meta:
    """What a stream's records are: the source log's dtype and capacities. A stream, the
    log it is relayed from and the log it is mirrored into must all agree on these."""

    dtype: np.dtype[Any]
    retained: int
    segment: int

    @classmethod
    def of(cls, log: AtomicLog) -> Meta:
        return cls(log.dtype, log.retained_capacity, log.segment_capacity)

    def fields(self) -> dict[str, str | int]:
        return {
            "format": FORMAT,
            "descr": repr(npformat.dtype_to_descr(self.dtype)),
            "itemsize": self.dtype.itemsize,
            "retained": self.retained,
            "segment": self.segment,
        }

    def __str__(self) -> str:
        return f"records of {self.dtype} (retained {self.retained:,}, segments of {self.segment:,})"


def _this_host() -> tuple[str, str]:
    """This host's name and identity (``kind:id``; empty if the system shows none)."""
    for kind, path in _HOST_IDS:
        try:
            with open(path) as file:
                found = file.read().strip()
        except OSError:
            continue
        if found:
            return socket.gethostname(), f"{kind}:{found}"
    return socket.gethostname(), ""


@dataclass(frozen=True)
class Source:
    """Which log a stream carries: its name and its host, as the relay that wrote the
    metadata last says. None where a relay of an older version said nothing."""

    name: str | None
    host: str | None
    host_id: str | None

    @classmethod
    def here(cls, name: str) -> Source:
        """Log ``name`` on this host."""
        return cls(name, *_this_host())

    def fields(self) -> dict[str, str]:
        return {"source": self.name or "", "host": self.host or "", "host_id": self.host_id or ""}

    def is_here(self, name: str) -> bool:
        """Whether this is log ``name`` on this host (False if the metadata does not say)."""
        return self.host is not None and self == Source.here(name)

    def __str__(self) -> str:
        where = f" on host {self.host}" if self.host else ""
        return f"log {self.name!r}{where}" if self.name else "an unnamed log"


def parse_meta(stream: str, raw: dict[bytes, bytes]) -> tuple[Meta, Source]:
    """The metadata in ``raw`` (HGETALL of ``stream``'s meta key), or StreamContentError."""
    try:
        if raw.get(b"format") != FORMAT.encode():
            raise ValueError(f"format {raw.get(b'format')!r}, not {FORMAT!r}")
        descr = raw[b"descr"]
        if len(descr) > _DESCR_MAX:
            raise ValueError("a dtype description too long to be one")
        # literal_eval evaluates literals only, never code: Redis content cannot run anything.
        dtype = check_dtype(npformat.descr_to_dtype(ast.literal_eval(descr.decode())))
        retained, segment = int(raw[b"retained"]), int(raw[b"segment"])
        if int(raw[b"itemsize"]) != dtype.itemsize or retained < 1 or segment < 1:
            raise ValueError("itemsize or capacities out of range")
        name, host, host_id = (raw.get(key) for key in (b"source", b"host", b"host_id"))
        source = Source(*(None if text is None else text.decode() for text in (name, host, host_id)))
    except (KeyError, ValueError, TypeError, SyntaxError, MemoryError, RecursionError, AtomicLogError) as exc:
        raise StreamContentError(
            stream, f"stream {stream!r}: {meta_key(stream)} is not an atomic-log relay's ({exc})"
        ) from None
    return Meta(dtype, retained, segment), source


def entry(stream: str, itemsize: int, entry_id: bytes, fields: dict[bytes, bytes]) -> tuple[int, int, bytes]:
    """``(first position, count, records' bytes)`` of a stream entry, or StreamContentError
    if it is not a batch of ``itemsize``-byte records at positions a log can hold."""
    end_text, _, count_text = entry_id.partition(b"-")
    data = fields.get(DATA)
    count = int(count_text) if count_text.isdigit() else 0
    end = int(end_text) if end_text.isdigit() else 0
    if len(fields) != 1 or data is None or not 1 <= count <= end or len(data) != count * itemsize:
        shown = sorted(k.decode("utf-8", "replace") for k in fields)
        raise StreamContentError(
            stream,
            f"stream {stream!r}: entry {entry_id.decode('utf-8', 'replace')} (fields {shown}) is not a "
            f"batch of {itemsize}-byte records from an atomic-log relay; nothing written",
        )
    if end > END_MAX:
        raise StreamContentError(
            stream,
            f"stream {stream!r}: entry {entry_id.decode()} holds positions up to {end - 1:,}, beyond "
            f"the last a log can hold ({END_MAX - 1:,}); nothing written",
        )
    return end - count, count, data


def first_entry(raw: Any) -> tuple[bytes, dict[bytes, bytes]] | None:
    """The (ID, fields) of an XRANGE or XREVRANGE reply of COUNT 1, if it has an entry."""
    entries = cast("list[tuple[bytes, dict[bytes, bytes]]]", raw)
    return entries[0] if entries else None
