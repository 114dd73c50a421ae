"""The command line: ``atomic-log`` (also ``python -m atomic_log_shm``).

    atomic-log demo [--duration S] [--readers N]   a live writer and readers, then clean up
    atomic-log inspect NAME [--json]               a log's header, in words
    atomic-log tail NAME [-n N] [--fields A,B]     print the newest records, then follow
    atomic-log ls [--wide] [--json]                the logs on this host
    atomic-log dashboard [NAME ...] [--port P]     a live dashboard of them in the browser
    atomic-log rm [--stale] [PATTERN ...]          remove logs (crash leftovers included)
    atomic-log rm --redis REDIS_URL NAME ...       remove relayed streams from Redis
    atomic-log bench [ARGS ...]                    the quick benchmark (atomic_log_shm.bench)
    atomic-log export NAME ... [--port P]          serve Prometheus metrics (atomic_log_shm.prometheus)
    atomic-log relay NAME REDIS_URL [--stream KEY] relay a log to a Redis stream (atomic_log_shm.relay)
    atomic-log mirror REDIS_URL NAME [--as LOCAL]  mirror a relayed log into a log on this host

Everything here goes through the public API (attach, cursor, ``info()``, ``list_logs()``,
``remove_log()``): the command line never stores to shared memory, so it can look at a live
log without disturbing its writer. ``ls`` and ``inspect`` are formatting of ``LogInfo``.

Exit status: 0 ok, 1 a runtime error (one line on stderr, no traceback), 2 bad usage.
This module imports nothing beyond the library's own dependencies; ``rich`` is imported
only by the demo's live view, and only if it is installed.
"""

from __future__ import annotations

import argparse
import datetime
import fnmatch
import importlib
import json
import math
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt

from . import __version__, _shm
from ._cursor import Cursor, Poll
from ._errors import AtomicLogError, LogNotFoundError
from ._info import LogInfo, list_logs
from ._log import AtomicLog, remove_log

PROG = "atomic-log"


# Words for numbers -------------------------------------------------------------------------


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    size = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        size /= 1024
        if size < 1024 or unit == "GiB":
            break
    return f"{size:.1f} {unit}"


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"


def _short_dtype(dtype: np.dtype[Any]) -> str:
    if dtype.names is None:
        return str(dtype)
    names = ",".join(dtype.names)
    return f"{names if len(names) <= 24 else names[:21] + '...'} ({dtype.itemsize} B)"


def _dtype_text(dtype: np.dtype[Any]) -> str:
    if dtype.names is None:
        return str(dtype)
    fields = dtype.fields
    assert fields is not None
    return ", ".join(f"{name}: {_type_text(fields[name][0])}" for name in dtype.names)


def _type_text(dtype: np.dtype[Any]) -> str:
    return dtype.str[1:] if dtype.kind in "SU" else str(dtype)  # "S8", where str() says "|S8"


def _segments_text(info: LogInfo) -> str:
    segments = info.segments
    if not segments:
        return "none"
    *older, head = segments
    parts = []
    if older:
        first, last = older[0].sequence, older[-1].sequence
        full = all(s.published == info.segment_capacity for s in older)
        held = "full" if full else f"{sum(s.published for s in older):,} records"
        parts.append(f"{first}..{last} {held}" if first != last else f"{first} {held}")
    parts.append(f"{head.sequence} (head) holds {head.published:,} of {info.segment_capacity:,}")
    return f"{len(segments)} retained: " + ", ".join(parts)


def _inspect_text(info: LogInfo, out: TextIO) -> None:
    segment_bytes = info.segment_capacity * info.dtype.itemsize
    age = time.time() - info.created.timestamp()
    rows = [
        ("log", info.name),
        ("dtype", f"{_dtype_text(info.dtype)}  ({info.dtype.itemsize} bytes a record)"),
        (
            "capacity",
            f"retains at least {info.retained_capacity:,} records, in segments of "
            f"{info.segment_capacity:,} ({_size(segment_bytes)}); {info.slot_count} slots",
        ),
        ("head segment", str(info.head_segment)),
        ("segments", _segments_text(info)),
        (
            "positions",
            f"{info.oldest:,} .. {info.newest:,} ({info.records:,} records)"
            if info.oldest is not None and info.newest is not None
            else "none yet",
        ),
        ("writer", info.writer_status),
        ("memory", f"{_size(info.memory_bytes)} in {info.regions} shared-memory regions"),
        ("created", f"{info.created.isoformat('T', 'seconds')} ({_age(age)} ago)"),
    ]
    for key, value in rows:
        print(f"{key:<13} {value}", file=out)


# Formatting records -----------------------------------------------------------------------


def _column(values: npt.NDArray[Any], as_json: bool) -> list[Any]:
    """One field of some records as printable (or JSON-ready) Python values."""
    kind = values.dtype.kind
    if kind == "S":
        return [b.decode("utf-8", "replace") for b in values.tolist()]
    if kind in "iubU" and values.ndim == 1:
        return list(values.tolist())
    # str() of a numpy float is the shortest text that reads back as the same float32 or
    # float64: "50.12" where float() of a float32 would print 50.119998931884766.
    texts = [str(v) for v in values]
    if kind == "f" and values.ndim == 1 and as_json:
        floats = [float(t) for t in texts]
        return [f if math.isfinite(f) else None for f in floats]  # JSON has no NaN
    return texts  # floats in text; datetimes, complex, nested records, sub-arrays as numpy shows them


def _times(values: npt.NDArray[Any]) -> list[str]:
    """Seconds since the epoch as ISO 8601 local times to the millisecond; a value that is
    no time (NaN, out of range) as it is."""
    texts = []
    for value in values:
        try:
            when = datetime.datetime.fromtimestamp(float(value)).astimezone()
            texts.append(when.isoformat(timespec="milliseconds"))
        except (ValueError, OverflowError, OSError):
            texts.append(str(value))  # numpy's shortest text for its type, as _column shows it
    return texts


def _lines(
    values: npt.NDArray[Any], first: int, fields: Sequence[str], times: frozenset[str], as_json: bool
) -> list[str]:
    """One line per record: ``#position field=value ...`` for ``fields`` (those in
    ``times`` as times), or a JSON object."""
    if values.dtype.names:
        columns = [_times(values[n]) if n in times else _column(values[n], as_json) for n in fields]
    else:
        columns = [_column(values, as_json)]
    keys = list(fields) if values.dtype.names else ["value"]
    rows = zip(*columns, strict=True)
    if as_json:
        return [
            json.dumps({"position": first + i, **dict(zip(keys, row, strict=True))})
            for i, row in enumerate(rows)
        ]
    if values.dtype.names:
        return [
            f"#{first + i} " + " ".join(f"{k}={v}" for k, v in zip(keys, row, strict=True))
            for i, row in enumerate(rows)
        ]
    return [f"#{first + i} {row[0]}" for i, row in enumerate(rows)]


# Commands -------------------------------------------------------------------------------


def _cmd_inspect(args: argparse.Namespace) -> int:
    with closing(AtomicLog.attach(args.name)) as log:
        info = log.info()
    if args.json:
        print(json.dumps(info.as_dict(), indent=2))
    else:
        _inspect_text(info, sys.stdout)
    return 0


def _batches(cursor: Cursor, name: str, latency: float) -> Iterator[Poll]:
    """What ``cursor`` finds, batch by batch, as records are published. The one place
    ``tail`` waits, with a freshness budget of ``latency`` seconds (``Cursor.wait``): it
    prints at most about once per ``latency``, a burst as one batch, and the writer does
    nothing for it. Ends when the log's name goes away (removed, or replaced by another log
    of that name): the log will never grow again.
    """
    path = os.path.join(_shm.SHM_DIR, name)
    inode = os.stat(path).st_ino
    next_check = time.monotonic() + 1.0
    while True:
        batch = cursor.poll()
        if batch.arrays or batch.missed:
            yield batch
        try:
            cursor.wait(timeout=1.0, latency=latency)
        except LogNotFoundError:  # unlinked or replaced while we slept
            return
        if time.monotonic() >= next_check:
            next_check = time.monotonic() + 1.0
            try:
                if os.stat(path).st_ino != inode:
                    return
            except FileNotFoundError:
                return


_TIME_NAMES = ("ts", "time")  # float fields tail shows as times unless told another


def _shown_fields(dtype: np.dtype[Any], args: argparse.Namespace) -> tuple[list[str], frozenset[str]] | str:
    """The fields ``tail`` prints and those it prints as times; or why the options do not
    fit the log's dtype (one line)."""
    names = list(dtype.names or ())
    fields: Mapping[str, Any] = dtype.fields or {}
    if not names and (args.fields or args.time_field):
        return f"log {args.name!r} holds plain {dtype} records, without fields"
    fields_text = ", ".join(names)
    chosen = [f for f in args.fields.split(",") if f] if args.fields else names
    for name in [*chosen, *([args.time_field] if args.time_field else [])]:
        if name not in fields:
            return f"log {args.name!r} has no field {name!r}; its fields: {fields_text}"
    if args.time_field:
        kind = fields[args.time_field][0].kind
        if kind not in "fiuM":
            return f"field {args.time_field!r} is {fields[args.time_field][0]}, not seconds since the epoch"
        times = {args.time_field} if kind != "M" else set()  # datetime64 shows as ISO already
    else:
        times = {n for n in _TIME_NAMES if n in fields and fields[n][0].kind == "f"}
    return chosen, frozenset() if args.json else frozenset(times)


def _cmd_tail(args: argparse.Namespace) -> int:
    out = sys.stdout
    with closing(AtomicLog.attach(args.name)) as log:
        shown = _shown_fields(log.dtype, args)
        if isinstance(shown, str):
            print(f"{PROG}: {shown}", file=sys.stderr)
            return 2
        fields, times = shown
        snap = log.snapshot()
        cursor = log.cursor(max(snap.start, snap.end - args.n))
        del snap
        try:
            for batch in _batches(cursor, log.name, args.interval):
                if batch.missed:  # reclaimed before we looked: say how much is lost
                    print(f"... {batch.missed:,} records missed ...", file=sys.stderr if args.json else out)
                position = batch.start
                for values in batch.arrays:
                    out.write("\n".join(_lines(values, position, fields, times, args.json)) + "\n")
                    position += len(values)
                out.flush()
        except KeyboardInterrupt:
            return 0  # Ctrl-C is how tail is meant to end
    print(f"{PROG}: log {args.name!r} was removed; stopping", file=sys.stderr)
    return 0


def _cmd_ls(args: argparse.Namespace) -> int:
    infos = {info.name: info for info in list_logs()}
    headers = _shm.log_names()
    rows: list[dict[str, Any]] = []
    table = [("NAME", "DTYPE", "RECORDS", "SIZE", "AGE", "WRITER")]
    for name in headers:
        info = infos.get(name)
        if info is None:  # not readable by us: say why
            try:
                with closing(AtomicLog.attach(name)) as log:
                    log.info()
                why = "changed while listed; list again"
            except AtomicLogError as exc:
                why = str(exc)
            regions, size = _shm.footprint(name, None)
            rows.append({"name": name, "error": why, "regions": regions, "memory_bytes": size})
            table.append((name, "?", "-", _size(size), "-", why))
            continue
        keys = ("name", "dtype", "records", "regions", "memory_bytes", "created_ns", "created", "writer")
        full = info.as_dict()
        rows.append({key: full[key] for key in keys})
        age = _age(time.time() - info.created.timestamp())
        records, memory = f"{info.records:,}", _size(info.memory_bytes)
        wide = f"{_dtype_text(info.dtype)} ({info.dtype.itemsize} B)"
        dtype = wide if args.wide else _short_dtype(info.dtype)
        table.append((name, dtype, records, memory, age, info.writer_status))
    for name in sorted(_shm.region_owners() - set(headers)):
        regions, size = _shm.footprint(name, None)
        rows.append({"name": name, "orphaned": True, "regions": regions, "memory_bytes": size})
        note = f"orphaned segments (a crashed log): '{PROG} rm {name}' removes them"
        table.append((name, "-", "-", _size(size), "-", note))
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print(f"no logs in {_shm.SHM_DIR}")
    else:
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
        for row in table:
            cells = [
                c.rjust(w) if i == 2 else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=False))
            ]
            print("  ".join([*cells, row[-1]]))
    return 0


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from .dashboard import DEFAULT_PORT, Dashboard  # the page and its server: only when asked for

    port = DEFAULT_PORT if args.port is None else args.port
    board = Dashboard(args.names, host=args.host, port=port)
    print(f"{PROG} dashboard: {board.url} (Ctrl-C stops)", flush=True)
    return _run_until_signal(board, "dashboard")


def _info_of(name: str) -> LogInfo | None:
    """Log ``name``'s info; None for an orphan, a damaged log or one we may not read."""
    try:
        with closing(AtomicLog.attach(name)) as log:
            return log.info()
    except AtomicLogError:
        return None


def _matching(patterns: list[str], stale: bool) -> tuple[list[str], list[str]]:
    """The log names ``rm`` removes, in order, and one error line per pattern that matched
    no log. A name without wildcards is taken as it is (its own error if there is no such
    log); with ``stale``, no pattern means every log."""
    known = sorted(set(_shm.log_names()) | _shm.region_owners())
    names: list[str] = []
    errors: list[str] = []
    for pattern in patterns or ["*"]:
        if not any(c in pattern for c in "*?["):
            found = [pattern]
        else:
            found = fnmatch.filter(known, pattern)
            if not found and not stale:
                errors.append(f"{PROG}: no log matches {pattern!r} ('{PROG} ls' lists them)")
        names += [name for name in found if name not in names]
    return names, errors


def _cmd_rm(args: argparse.Namespace) -> int:
    if args.redis is not None:
        return _cmd_rm_streams(args)
    names, errors = _matching(args.patterns, args.stale)
    for line in errors:
        print(line, file=sys.stderr)
    status = 1 if errors else 0
    headers = set(_shm.log_names()) if args.stale else set()
    removed_any = False
    for name in names:
        info = _info_of(name)
        holder = info.writer_pid if info is not None and info.writer_active else None
        # Stale: a readable log no writer holds, or segments without a header (an orphan).
        # A log that cannot be read might have a live writer: --stale leaves it alone.
        stale = not info.writer_active if info is not None else name not in headers
        if args.stale and not stale:
            continue
        try:
            removed = remove_log(name)
        except AtomicLogError as exc:
            print(f"{PROG}: {exc}", file=sys.stderr)
            status = 1
            continue
        removed_any = True
        print(f"removed {name} ({removed} shared-memory regions)")
        if holder:
            print(f"  note: pid {holder} still writes to it; its writer stops at its next rollover")
    if args.stale and not removed_any and not errors:
        print("no stale logs to remove")
    return status


def _cmd_rm_streams(args: argparse.Namespace) -> int:
    """``rm --redis URL NAME ...``: the relayed stream of each NAME and its metadata."""
    from . import relay  # redis-py only when asked for (MissingDependencyError without it)

    status = 0
    for name in args.patterns:
        try:
            removed = relay.remove_stream(args.redis, name)
        except (relay.StreamNotFoundError, relay.StreamContentError) as exc:
            print(f"{PROG}: {exc}", file=sys.stderr)
            status = 1
            continue
        print(f"removed {' and '.join(removed)}")
    return status


def _cmd_demo(args: argparse.Namespace) -> int:
    from . import _demo  # spawns processes and may import rich: only when asked for

    return _demo.run(args.duration, args.readers, args.rate, args.name)


def _cmd_bench(args: argparse.Namespace) -> int:
    try:
        bench = importlib.import_module("atomic_log_shm.bench")
    except ModuleNotFoundError as exc:
        if exc.name != "atomic_log_shm.bench":
            raise
        print(
            f"{PROG}: the benchmark (atomic_log_shm.bench) is not part of this installation", file=sys.stderr
        )
        return 1
    result = bench.main(args.bench_args or ["--quick"], prog=f"{PROG} bench")
    return int(result or 0)


# Prometheus metrics (atomic_log_shm.prometheus; needs the prometheus extra) ----------------


def _cmd_export(args: argparse.Namespace) -> int:
    from . import prometheus  # prometheus-client only when asked for (MissingDependencyError without it)
    from ._errors import InvalidArgumentError

    try:
        exporter = prometheus.Exporter(args.names, host=args.host, port=args.port, label=args.label)
    except InvalidArgumentError as exc:  # --label that a log lacks: bad usage
        print(f"{PROG} export: {exc}", file=sys.stderr)
        return 2
    print(f"{PROG} export: serving metrics of {', '.join(args.names)} at {exporter.url}", flush=True)
    return _run_until_signal(exporter, "export")


def _add_export_command(commands: Any) -> None:
    export = commands.add_parser(
        "export",
        help="serve Prometheus metrics of logs",
        description="Serve Prometheus metrics of the logs NAME ... at http://HOST:PORT/metrics, each "
        "log read at each scrape: its state and the newest value of each numeric field. A log that is "
        "missing or damaged reads as atomic_log_up 0 until it can be read again. Runs until SIGINT or "
        "SIGTERM (exit status 0). See docs/monitoring.md.",
    )
    export.add_argument("names", nargs="+", metavar="NAME")
    export.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1)")
    export.add_argument("--port", type=int, default=9464, help="the port to listen on (default 9464; 0: any)")
    export.add_argument(
        "--label",
        metavar="FIELD",
        help="one series per distinct value of this field in the window, labelled FIELD=value",
    )
    export.set_defaults(run=_cmd_export)


# Relay and mirror through Redis (atomic_log_shm.relay; needs the redis extra) -------------


def _run_until_signal(runner: Any, command: str) -> int:
    """``runner.run()`` until SIGINT or SIGTERM (exit status 0), saying on stderr what it
    does: reconnections, lost records, where it resumed."""
    import logging
    import signal

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PROG} {command}: %(message)s"))
    logger = logging.getLogger("atomic_log_shm.relay")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    previous = {sig: signal.signal(sig, lambda *_: runner.stop()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        runner.run()
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        logger.removeHandler(handler)
    return 0


def _cmd_relay(args: argparse.Namespace) -> int:
    from . import relay  # redis-py only when asked for (MissingDependencyError without it)

    return _run_until_signal(relay.Relay(args.name, args.url, stream=args.stream), "relay")


def _cmd_mirror(args: argparse.Namespace) -> int:
    from . import relay

    mirror = relay.Mirror(args.url, args.name, local=args.local, stream=args.stream)
    return _run_until_signal(mirror, "mirror")


def _add_relay_commands(commands: Any) -> None:
    relay = commands.add_parser(
        "relay",
        help="relay a log to a Redis stream",
        description="Follow the log NAME and append what it publishes to a Redis stream, a batch "
        "per entry, trimmed to about the log's retained capacity; resume after the last position "
        "the stream holds. Reconnects with backoff when Redis goes away, and says so on stderr. "
        "Runs until SIGINT or SIGTERM (exit status 0). See docs/redis.md.",
    )
    relay.add_argument("name", metavar="NAME")
    relay.add_argument(
        "url", metavar="REDIS_URL", help="redis://[[user]:password@]host[:port][/db], rediss://"
    )
    relay.add_argument("--stream", metavar="KEY", help="the stream's key (default atomic-log:NAME)")
    relay.set_defaults(run=_cmd_relay)

    mirror = commands.add_parser(
        "mirror",
        help="mirror a relayed log into a log on this host",
        description="Read the Redis stream a relay writes and write its records into a log on this "
        "host, made with the source's dtype and capacities (or continued, if it exists and "
        "matches). Positions are the source's; records the stream never had are counted missed by "
        "readers. Runs until SIGINT or SIGTERM (exit status 0). See docs/redis.md.",
    )
    mirror.add_argument(
        "url", metavar="REDIS_URL", help="redis://[[user]:password@]host[:port][/db], rediss://"
    )
    mirror.add_argument("name", metavar="NAME", help="the source log's name")
    mirror.add_argument("--as", dest="local", metavar="LOCAL", help="the local log's name (default NAME)")
    mirror.add_argument("--stream", metavar="KEY", help="the stream's key (default atomic-log:NAME)")
    mirror.set_defaults(run=_cmd_mirror)


# The parser -------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _non_negative(kind: type[int] | type[float]) -> Any:
    def parse(text: str) -> int | float:
        value = kind(text)
        if not value >= 0:  # also refuses NaN
            raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its "invalid value" error
    return parse


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Look at, follow and manage atomic-log-shm logs on this host; run the live demo.",
        epilog="Exit status: 0 ok, 1 runtime error (e.g. no such log), 2 bad usage.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = commands.add_parser(
        "demo",
        help="a writer process and reader processes, live, then clean up",
        description="Run a writer process publishing telemetry and a pool of reader processes following "
        "it; show rates, window, lag and missed records live, then stop them all and remove the log.",
    )
    demo.add_argument(
        "--duration", type=_non_negative(float), default=3.0, help="seconds (default 3; 0: until Ctrl-C)"
    )
    demo.add_argument("--readers", type=_positive_int, default=3, help="reader processes (default 3)")
    demo.add_argument(
        "--rate", type=_non_negative(float), default=200_000.0, help="records a second (default 200000)"
    )
    demo.add_argument("--name", help="the log's name (default: a unique one)")
    demo.set_defaults(run=_cmd_demo)

    inspect = commands.add_parser(
        "inspect", help="a log's header in words", description="Describe a log: its header, in words."
    )
    inspect.add_argument("name", metavar="NAME")
    inspect.add_argument("--json", action="store_true", help="one JSON object")
    inspect.set_defaults(run=_cmd_inspect)

    tail = commands.add_parser(
        "tail",
        help="print the newest records, then follow until Ctrl-C",
        description="Print the newest records, then each record as it is published, until Ctrl-C "
        "(exit status 0) or until the log is removed. Waits for the writer without using CPU. "
        "Records that were reclaimed before tail could print them are noted as "
        "'... N records missed ...' (on stderr with --json). Times (a float field 'ts' or 'time', "
        "or --time-field) show as ISO 8601 local times, datetime64 fields as ISO 8601; --json "
        "prints the raw numbers. An unknown field is exit status 2.",
    )
    tail.add_argument("name", metavar="NAME")
    tail.add_argument(
        "-n", type=_non_negative(int), default=10, metavar="N", help="start with the N newest (default 10)"
    )
    tail.add_argument(
        "--fields", metavar="A,B", help="print only these fields, in this order (comma-separated)"
    )
    tail.add_argument(
        "--time-field",
        metavar="F",
        help="show field F (seconds since the epoch) as an ISO 8601 local time to the millisecond; "
        "by default a float field named 'ts' or 'time' is shown so",
    )
    tail.add_argument(
        "--json", action="store_true", help="one JSON object a line; numbers as they are (times too)"
    )
    tail.add_argument(
        "--interval",
        type=_non_negative(float),
        default=0.05,
        metavar="S",
        help="freshness budget: prints at most about once per S seconds, a burst as one batch (default 0.05)",
    )
    tail.set_defaults(run=_cmd_tail)

    ls = commands.add_parser(
        "ls", help="the logs on this host", description=f"List the logs in {_shm.SHM_DIR}."
    )
    ls.add_argument("--wide", action="store_true", help="every field of the dtype, with its type")
    ls.add_argument("--json", action="store_true", help="a JSON array (the full dtype included)")
    ls.set_defaults(run=_cmd_ls)

    dashboard = commands.add_parser(
        "dashboard",
        help="a live dashboard of the logs, in the browser",
        description="Serve a page that lists the logs on this host (or the NAMEs given) and plots "
        "the numeric fields of the one chosen over the last N seconds, with its record rate and its "
        "writer's state, live. Prints the page's URL; runs until SIGINT or SIGTERM (exit status 0). "
        "See docs/monitoring.md.",
    )
    dashboard.add_argument("names", nargs="*", metavar="NAME", help="show only these logs")
    dashboard.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1)")
    dashboard.add_argument(
        "--port", type=_non_negative(int), help="the port (default 8765; 0: any free port)"
    )
    dashboard.set_defaults(run=_cmd_dashboard)

    rm = commands.add_parser(
        "rm",
        help="remove logs",
        description="Remove logs from the system, with any segments crashed writers left behind, "
        "and print each name removed. A PATTERN may hold shell-style wildcards ('sensors-*'; quote "
        "it); a pattern that matches no log is an error (exit status 1). With --redis, remove "
        "relayed streams from Redis instead.",
    )
    rm.add_argument("patterns", nargs="*", metavar="PATTERN", help="log names or shell-style patterns")
    rm.add_argument(
        "--stale",
        action="store_true",
        help="remove only logs no writer holds (a writer that closed or died), and orphaned "
        "segments; without PATTERN, every such log",
    )
    rm.add_argument(
        "--redis",
        metavar="REDIS_URL",
        help="remove the Redis stream a relay of each NAME writes (atomic-log:NAME) and its :meta "
        "hash from this Redis, whether or not a log NAME exists here; the logs stay",
    )
    rm.set_defaults(run=_cmd_rm)

    bench = commands.add_parser(
        "bench",
        help="run the quick benchmark",
        add_help=False,  # --help goes to the benchmark's own parser
        description="Run atomic_log_shm.bench with ARGS (default: --quick).",
    )
    bench.set_defaults(run=_cmd_bench)
    _add_export_command(commands)
    _add_relay_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    parser = _parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:  # what a newcomer types first: the help, not an error
        parser.print_help()
        return 0
    args, extra = parser.parse_known_args(argv)
    if args.command == "rm" and not (args.patterns or args.stale):
        parser.error("rm takes a log NAME or PATTERN, or --stale")
    if args.command == "rm" and args.redis is not None and (args.stale or not args.patterns):
        parser.error("rm --redis takes the NAMEs of relayed logs, not --stale")
    if args.command == "bench":
        args.bench_args = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.run(args))
    except AtomicLogError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Whoever read our output stopped (``| head``): not an error. Point stdout at
        # /dev/null so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # e.g. permission denied on another user's log
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
