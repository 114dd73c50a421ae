"""Prometheus metrics of logs, read at each scrape: a collector and a small server.

    registry.register(LogCollector(["ticks"], label="symbol"))   # in your application
    Exporter(["ticks"], port=9464).run()                          # or on its own, until stop()

``atomic-log export NAME ...`` runs an ``Exporter`` (docs/monitoring.md). Needs the
``prometheus`` extra: ``pip install 'atomic-log-shm[prometheus]'``.

Metrics, each series labelled ``log="NAME"``:

    name                          type     value
    atomic_log_up                 gauge    1 if the log could be read at this scrape, else 0
                                           (missing, removed, damaged): then the series
                                           below are absent for it
    atomic_log_records_total      counter  the log's end position: records appended since
                                           it was made, positions the writer skipped included
    atomic_log_retained_records   gauge    records retained now (the window)
    atomic_log_segments           gauge    segments retained now, the head included
    atomic_log_bytes              gauge    bytes of shared memory the log's regions take
    atomic_log_writer_active      gauge    1 while a writer holds the log's claim
    atomic_log_latest             gauge    the newest value in the window of each numeric
                                           field F, labelled ``field="F"`` (``"value"`` for
                                           a log of plain values); with a label field L, one
                                           series per distinct value V of L in the window,
                                           labelled ``L="V"``, from V's newest record

Numeric fields are booleans (0 or 1), integers and floats; strings, bytes, datetimes,
timedeltas, complex numbers, sub-arrays and nested records are not exported (a label
field may be any of them but a sub-array or a nested record). Label values are the text
of the value; bytes are decoded as UTF-8 (bad bytes replaced) with NULs removed, and two
values that read alike are one label value, carrying the newer record.

How it reads. Each log is attached once and read at each scrape through the public API:
the snapshot kept from the last scrape is refreshed (two loads when nothing changed) and
``info()`` is taken; nothing is copied between scrapes and no thread runs. Like every
reader it stores nothing to shared memory and never makes the writer wait; like every
reader holding a snapshot, it keeps the segments of its last view mapped until the next
scrape, so a rollover that would reuse one of those regions makes a fresh one instead.
With a label field, the distinct values and the position of each one's newest record are
found with numpy over that field's column (one copy of one field of the window, then one
sort): a few ms of CPU for 100,000 records (docs/monitoring.md, "What it costs").

What can go wrong with a log never fails a scrape: a log that is missing, removed,
replaced, damaged or unreadable reads as ``atomic_log_up`` 0 and is attached again at the
next scrape that finds it readable (a replacement of another dtype too). Changes of a
log's state are said once each on the logger ``atomic_log_shm.prometheus`` (WARNING).
A label field that a log lacks when the collector is made is an InvalidArgumentError; a
log that appears or is replaced later without it is exported without the label (its
series then lack it, which PromQL matches as ``{L=""}``), said once on the logger.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt

from ._errors import (
    AtomicLogError,
    InvalidArgumentError,
    InvalidNameError,
    LogClosedError,
    LogNotFoundError,
    MissingDependencyError,
)
from ._info import LogInfo
from ._log import AtomicLog
from ._snapshot import Snapshot

try:
    import prometheus_client
    from prometheus_client.core import Metric
    from prometheus_client.registry import Collector, CollectorRegistry
except ImportError:  # pragma: no cover - depends on the installation
    raise MissingDependencyError(
        "exporting Prometheus metrics needs prometheus-client, which is not installed: "
        "pip install 'atomic-log-shm[prometheus]'"
    ) from None

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "Exporter", "LogCollector"]

DEFAULT_HOST = "127.0.0.1"
"""Where ``Exporter`` listens unless told otherwise: this host only."""
DEFAULT_PORT = 9464
"""The port ``Exporter`` listens on unless told otherwise (the one OpenTelemetry's
Prometheus exporters use by default)."""

# Every metric, in the order a scrape exposes them: name (a counter's samples add _total),
# type, help.
_METRICS = (
    ("atomic_log_up", "gauge", "1 if the log could be read at this scrape, 0 if not (missing, damaged)"),
    ("atomic_log_records", "counter", "The log's end position: records appended since it was made"),
    ("atomic_log_retained_records", "gauge", "Records the log retains now"),
    ("atomic_log_segments", "gauge", "Segments the log retains now, the head included"),
    ("atomic_log_bytes", "gauge", "Bytes of shared memory the log's regions take"),
    ("atomic_log_writer_active", "gauge", "1 while a writer holds the log's claim"),
    ("atomic_log_latest", "gauge", "The newest value of each numeric field in the retained window"),
)
_NUMERIC = "biuf"  # bool, signed and unsigned integers, floats: what a sample's float holds
_VALUE = "value"  # the field label of a log of plain values
_OURS = ("log", "field")  # the labels every series of atomic_log_latest carries already
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")  # Prometheus's rule for label names
_IDLE = 0.25  # seconds Exporter.run() sleeps between looks at stop()
_PORT_MAX = 65535
_UP = "up"  # a log's state when it was read at the last scrape

_log = logging.getLogger(__name__)


def _check_label(label: str) -> str:
    if not isinstance(label, str) or not _LABEL_NAME.fullmatch(label):
        raise InvalidArgumentError(
            f"label {label!r} cannot name a Prometheus label: it must match [a-zA-Z_][a-zA-Z0-9_]*"
        )
    if label in _OURS or label.startswith("__"):
        raise InvalidArgumentError(
            f"label {label!r} is taken: the series carry the labels {', '.join(_OURS)} already, "
            "and names starting with __ are Prometheus's own"
        )
    return label


def _label_problem(dtype: np.dtype[Any], label: str) -> str | None:
    """Why field ``label`` of records of ``dtype`` cannot label series; None if it can."""
    fields = dtype.fields
    if fields is None or label not in fields:
        has = f"its fields are {', '.join(dtype.names)}" if dtype.names else f"its records are plain {dtype}"
        return f"has no field {label!r} to label by ({has})"
    field = fields[label][0]
    if field.shape or field.names is not None:
        return f"has a field {label!r} of {field}: a sub-array or a nested record cannot label series"
    return None


def _numeric_fields(dtype: np.dtype[Any], label: str | None) -> list[str | None]:
    """The fields ``atomic_log_latest`` exports (None: the plain values themselves)."""
    fields = dtype.fields
    if fields is None:
        return [None] if dtype.kind in _NUMERIC else []
    return [
        name
        for name in dtype.names or ()
        if name != label and fields[name][0].kind in _NUMERIC and not fields[name][0].shape
    ]


def _label_text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.replace(b"\0", b"").decode("utf-8", "replace")
    return str(value).replace("\0", "")


def _newest_by_value(snap: Snapshot, label: str) -> dict[str | None, Any]:
    """For each distinct value of field ``label`` in the view, as label text, its newest
    record. One copy of the field's column, one sort of it, and Python only once per
    distinct value."""
    chunks = list(snap.chunks())
    column: npt.NDArray[Any] = np.concatenate([chunk.values[label] for chunk in chunks])
    # Values of a fixed-width field are equal when their bytes are (texts that read alike
    # merge below): sorted as unsigned ints where they fit one, they sort 2-3x faster than
    # as bytes. A stable sort keeps equal values in window order: a run's last is its newest.
    size = column.dtype.itemsize
    keys = column.view(f"<u{size}" if size in (1, 2, 4, 8) else f"V{size}")
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    last = np.append(np.flatnonzero(ordered[1:] != ordered[:-1]), len(ordered) - 1)
    newest = np.sort(order[last])  # in the window, oldest first: the newer of two alike wins
    ends = np.cumsum([len(chunk) for chunk in chunks])
    which = np.searchsorted(ends, newest, side="right")
    records: dict[str | None, Any] = {}
    for value, k, i in zip(column[newest].tolist(), which.tolist(), newest.tolist(), strict=True):
        chunk = chunks[k]
        records[_label_text(value)] = chunk.values[i - (int(ends[k]) - len(chunk))]
    return records


class _Watched:
    """One log as the collector reads it: attached (a handle and the snapshot kept from the
    last scrape) or not (missing, removed, damaged), and what was last said about it."""

    __slots__ = ("_fields", "_label", "_log", "_said", "_snap", "label", "label_problem", "name")

    def __init__(self, name: str, label: str | None) -> None:
        self.name = name
        self.label = label  # the label field asked for
        self._label: str | None = None  # the label field of the log attached, if it has it
        self.label_problem: str | None = None  # why the log attached cannot be labelled by it
        self._log: AtomicLog | None = None
        self._snap: Snapshot | None = None
        self._fields: list[str | None] = []
        self._said: str | None = None  # the state last logged: _UP, or why the log is down

    def attach(self) -> None:
        """Attach to the log of this name now (raises what ``AtomicLog.attach`` raises)."""
        log = AtomicLog.attach(self.name)
        try:
            snap = log.snapshot()
        except BaseException:
            log.close()
            raise
        self._log, self._snap = log, snap
        problem = None if self.label is None else _label_problem(log.dtype, self.label)
        self.label_problem = problem
        self._label = self.label if problem is None else None
        self._fields = _numeric_fields(log.dtype, self._label)

    def detach(self) -> None:
        if self._log is not None:
            self._log.close()
        self._log = self._snap = None

    def down(self, exc: AtomicLogError | OSError) -> None:
        """Let go of the log, which cannot be read (``exc`` says why); say so if it is news."""
        self.detach()
        state = f"log {self.name!r} cannot be read: {exc}; its series are absent until it can"
        if state != self._said:
            _log.warning("%s", state)
        self._said = state

    def _read(self) -> tuple[LogInfo, Snapshot] | None:
        """The log's info and a view refreshed now; None if it cannot be read. Says on the
        logger what changed since the last scrape."""
        fresh = self._snap is None
        replaced = False
        try:
            if self._snap is None:
                self.attach()
            else:
                try:
                    self._snap.look_if_gone()  # a removal its remover could not mark
                    self._snap.refresh()
                except LogNotFoundError:  # removed or replaced: a new log of that name may be there
                    self.detach()
                    fresh = True
                    self.attach()
                    replaced = True
            assert self._log is not None and self._snap is not None
            info = self._log.info()
        except (AtomicLogError, OSError) as exc:
            self.down(exc)
            return None
        if replaced or self._said != _UP:
            say = _log.info if self._said is None else _log.warning  # news, but at the start
            how = "was replaced; the new one holds" if replaced else "is read:"
            say("log %r %s records of %s", self.name, how, info.dtype)
            self._said = _UP
        if fresh and self.label_problem is not None:
            _log.warning("log %r %s; its series carry no %s label", self.name, self.label_problem, self.label)
        return info, self._snap

    def sample(self, families: dict[str, Metric]) -> None:
        """Add this log's samples, read now, to ``families``."""
        by_log = {"log": self.name}
        found = self._read()
        families["atomic_log_up"].add_sample("atomic_log_up", by_log, 1.0 if found else 0.0)
        if found is None:
            return
        info, snap = found
        for name, value in (
            ("atomic_log_records_total", info.end),
            ("atomic_log_retained_records", info.records),
            ("atomic_log_segments", len(info.segments)),
            ("atomic_log_bytes", info.memory_bytes),
            ("atomic_log_writer_active", info.writer_active),
        ):
            families[name.removesuffix("_total")].add_sample(name, by_log, float(value))
        if not len(snap) or not self._fields:
            return
        latest = families["atomic_log_latest"]
        label = self._label
        newest = {None: snap[-1]} if label is None else _newest_by_value(snap, label)
        for text, record in newest.items():
            labels = by_log if label is None or text is None else {**by_log, label: text}
            for field in self._fields:
                value = record if field is None else record[field]
                latest.add_sample("atomic_log_latest", {**labels, "field": field or _VALUE}, float(value))


class LogCollector(Collector):
    """Prometheus metrics of the logs ``names`` (one name, or several), read at each scrape.

    Register it in a ``prometheus_client`` registry (``registry.register(collector)``); every
    scrape then reads each log anew, as the module docstring says, and never fails because
    of a log. ``label`` names a field whose distinct values in each log's window split
    ``atomic_log_latest`` into one series per value (a label of that name).

    Raises InvalidNameError for a name no log can have, and InvalidArgumentError for no
    names, for a ``label`` that cannot name a Prometheus label (``log`` and ``field`` are
    taken), and for one that a log existing now lacks (or holds sub-arrays or nested
    records in). Logs that are missing now are not an error: they read as down until they
    appear. Scrapes from several threads take turns. ``close()`` closes the handles.
    """

    def __init__(self, names: str | Iterable[str], *, label: str | None = None) -> None:
        unique = list(dict.fromkeys([names] if isinstance(names, str) else names))
        if not unique:
            raise InvalidArgumentError("LogCollector needs the name of at least one log")
        if label is not None:
            label = _check_label(label)
        self._lock = threading.Lock()
        self._closed = False
        self._logs = [_Watched(name, label) for name in unique]
        try:
            for watched in self._logs:
                try:
                    watched.attach()
                except InvalidNameError:
                    raise
                except (AtomicLogError, OSError) as exc:  # missing or unreadable now: no error,
                    watched.down(exc)  # said at once, and tried again at each scrape
                    continue
                if watched.label_problem is not None:
                    raise InvalidArgumentError(f"log {watched.name!r} {watched.label_problem}")
        except BaseException:
            self.close()
            raise

    @property
    def names(self) -> list[str]:
        """The names of the logs this collector reads, each once, in the order given."""
        return [watched.name for watched in self._logs]

    def describe(self) -> list[Metric]:
        """The metric families a scrape yields, without samples: registering a collector
        checks their names against the registry's other collectors, and reads no log."""
        return [Metric(name, text, kind) for name, kind, text in _METRICS]

    def collect(self) -> list[Metric]:
        """Read every log now: its metric families, with the samples of every log.

        Raises LogClosedError after ``close()``."""
        with self._lock:
            if self._closed:
                raise LogClosedError("this LogCollector was closed; unregister it from its registry")
            families = {metric.name: metric for metric in self.describe()}
            for watched in self._logs:
                watched.sample(families)
            return list(families.values())

    def close(self) -> None:
        """Close the handles on the logs; a later ``collect()`` raises. Idempotent."""
        with self._lock:
            self._closed = True
            for watched in self._logs:
                watched.detach()

    def __enter__(self) -> LogCollector:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<LogCollector of {', '.join(map(repr, self.names))} {state}>"


class Exporter:
    """A ``LogCollector`` of ``names`` served over HTTP at ``url`` (``/metrics``, in
    Prometheus's text format), from when it is made until ``run()`` returns; what
    ``atomic-log export`` runs.

    The server listens on ``host`` (this host only by default) and ``port`` (0: a free one,
    see ``url``); each scrape is served on a thread of its own. Raises what LogCollector
    raises, InvalidArgumentError for a port out of range, and OSError when it cannot listen
    there (a port in use, an unknown host).
    """

    def __init__(
        self,
        names: str | Iterable[str],
        *,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        label: str | None = None,
    ) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= _PORT_MAX:
            raise InvalidArgumentError(f"port must be an int from 0 to {_PORT_MAX}, not {port!r}")
        collector = LogCollector(names, label=label)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(collector)
        try:
            served = prometheus_client.start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            collector.close()
            why = exc.strerror or exc
            raise OSError(exc.errno, f"cannot serve metrics at {host} port {port}: {why}") from None
        self._server, self._thread = served
        self.collector = collector
        """The collector it serves (``collector.names``: the logs)."""
        self._stopping = threading.Event()

    @property
    def url(self) -> str:
        """Where the metrics are: ``http://HOST:PORT/metrics``."""
        host, port = self._server.server_address[:2]
        host = str(host)
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/metrics"

    def stop(self) -> None:
        """Make ``run()`` return soon (within about 0.25 s). Safe from a signal handler."""
        self._stopping.set()

    def run(self) -> None:
        """Serve until ``stop()``, then stop serving and close the handles on the logs."""
        try:
            while not self._stopping.wait(_IDLE):
                pass
        finally:
            self.close()

    def close(self) -> None:
        """Stop serving and close the handles on the logs (``run()`` does it as it returns)."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self.collector.close()
