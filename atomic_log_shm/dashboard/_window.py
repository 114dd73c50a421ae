"""What the dashboard plots of a log: which fields, along which axis, over which window,
and that window brought down to what a plot of ``columns`` pixel columns can show.

The axis. A float field named ``ts`` or ``time`` (seconds since the epoch), else the first
datetime64 field, else the record's position. The window is the last N seconds up to the
newest record, so a log whose writer stopped still shows its last N seconds. With no time
field, it is the records published in the N seconds up to the last publication this
reader saw (``Arrivals``); positions published before the reader first looked count as
within the window until it has watched for N seconds, since their times are unknown.

The reduction. A window of 100,000 records is 100,000 points per field, redrawn several
times a second: too much to send and to draw, and more than a plot W pixels wide can
show. Each frame splits the window's x range into W columns and sends, per non-empty
column, two points per field: the column's minimum (at its first record's x) and its
maximum (at its last record's x). A line through them covers, in each pixel column, the
same vertical span as a line through every record would, spikes included (a mean or a
stride would hide them). A window of at most 2W records is sent as it is. The cost is a
pass over the window per frame (a copy of the plotted fields, a search per column edge and
one ``reduceat`` per field) in the server; the browser gets at most 2W points per field
whatever the window. Sending only what is new would keep the server's work smaller but
leave the browser holding and redrawing every record of the window, each frame.
"""

from __future__ import annotations

import base64
import bisect
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .._snapshot import Snapshot

TIME_FIELDS = ("ts", "time")  # float fields taken as seconds since the epoch, in this order
PLOTTED_KINDS = "biuf"  # bool, ints, floats: one number a record, drawn as a line
RATE_SPAN = 2.0  # seconds of arrivals the record rate is averaged over
MOST_RECORDS = 1_000_000  # a window is cut to its newest this many records
NS = 1e9


@dataclass(frozen=True)
class Plan:
    """What to plot of records of one dtype."""

    axis: str | None
    """The time field; None: the record's position."""
    axis_is_datetime: bool
    series: tuple[str, ...]
    """The fields plotted, in the dtype's order; ``("value",)`` for a log of plain numbers."""
    plain: bool
    """Records are plain values, not fields."""

    @classmethod
    def of(cls, dtype: np.dtype[Any]) -> Plan:
        names = dtype.names
        if names is None:
            numbers = dtype.kind in PLOTTED_KINDS and not dtype.shape
            return cls(None, False, ("value",) if numbers else (), plain=True)
        fields = {name: dtype[name] for name in names if not dtype[name].shape and dtype[name].names is None}
        axis = next((n for n in TIME_FIELDS if n in fields and fields[n].kind == "f"), None)
        if axis is None:
            axis = next((n for n, t in fields.items() if t.kind == "M"), None)
        series = tuple(n for n, t in fields.items() if n != axis and t.kind in PLOTTED_KINDS)
        return cls(axis, axis is not None and fields[axis].kind == "M", series, plain=False)

    def describe(self) -> dict[str, Any]:
        """The axis and series, JSON-ready, for the page."""
        kind = "position" if self.axis is None else "time"
        return {"axis": self.axis, "axis_kind": kind, "series": list(self.series)}


class Arrivals:
    """When one reader saw a log's end move: (monotonic time, end) at each change.

    Gives the record rate and, for logs without a time field, where the window of the
    last N seconds starts. Holds only what those need (``forget``)."""

    def __init__(self) -> None:
        self._times: deque[float] = deque()
        self._ends: deque[int] = deque()

    def note(self, now: float, end: int) -> None:
        """The log's end is ``end`` at ``now``."""
        if not self._ends or self._ends[-1] != end:
            self._times.append(now)
            self._ends.append(end)

    def forget(self, now: float, seconds: float) -> None:
        """Drop what ``rate(now)`` and ``window_start(seconds)`` do not need."""
        if not self._times:
            return
        horizon = min(now - RATE_SPAN, self._times[-1] - seconds)
        while len(self._times) > 1 and self._times[1] <= horizon:
            self._times.popleft()
            self._ends.popleft()

    def _end_at(self, moment: float) -> int | None:
        """The end at ``moment``; None if this reader had not looked yet."""
        k = bisect.bisect_right(self._times, moment)
        return self._ends[k - 1] if k else None

    def rate(self, now: float) -> float | None:
        """Records a second over the last ``RATE_SPAN`` seconds; None before a first look."""
        if not self._ends:
            return None
        before = self._end_at(now - RATE_SPAN)
        if before is not None:
            return (self._ends[-1] - before) / RATE_SPAN
        watched = now - self._times[0]
        return (self._ends[-1] - self._ends[0]) / watched if watched > 0 else None

    def window_start(self, seconds: float) -> int | None:
        """The first position published in the ``seconds`` before the last change seen;
        None if this reader has not watched that long (every retained record may be)."""
        return self._end_at(self._times[-1] - seconds) if self._times else None


Part = tuple[int, npt.NDArray[Any]]
"""Records at consecutive positions: the first one's position, and a zero-copy view of them."""


def window(snap: Snapshot, plan: Plan, seconds: float, arrivals: Arrivals) -> list[Part]:
    """The records of the last ``seconds`` the snapshot shows, oldest first, zero-copy."""
    chunks = list(snap.chunks())
    if not chunks:
        return []
    if plan.axis is not None:
        newest = chunks[-1].values[plan.axis][-1]
        span = np.timedelta64(round(seconds * NS), "ns") if plan.axis_is_datetime else seconds
        return [(c.start, c.values) for c in snap.since(plan.axis, newest - span)]
    first = arrivals.window_start(seconds) or 0
    skips = [max(0, first - c.start) for c in chunks]
    return [(c.start + k, c.values[k:]) for c, k in zip(chunks, skips, strict=True) if k < len(c)]


def _newest(parts: list[Part], most: int) -> list[Part]:
    """The newest ``most`` records of ``parts``."""
    kept: list[Part] = []
    for start, values in reversed(parts):
        if most <= 0:
            break
        skip = max(0, len(values) - most)
        kept.append((start + skip, values[skip:]))
        most -= len(values) - skip
    kept.reverse()
    return kept


def _joined(parts: list[Part]) -> npt.NDArray[Any]:
    """The records of ``parts`` in one array: one copy of their bytes (numpy would join
    structured records field by field, several times slower)."""
    return np.concatenate([np.frombuffer(v, np.uint8) for _, v in parts]).view(parts[0][1].dtype)


def _seconds(values: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    """A time field as float64 seconds since the epoch; NaT becomes NaN (a gap)."""
    if values.dtype.kind != "M":
        return values.astype(np.float64)
    seconds = values.astype("datetime64[ns]").astype(np.int64) / NS
    seconds[np.isnat(values)] = np.nan
    return seconds


def _positions(parts: list[Part]) -> npt.NDArray[np.float64]:
    return np.concatenate([np.arange(start, start + len(v), dtype=np.float64) for start, v in parts])


def _column_starts(x: npt.NDArray[np.float64], columns: int) -> npt.NDArray[np.intp]:
    """The index of the first record of each non-empty column of ``x``'s range, split in
    ``columns`` equal columns (``x`` ascending, as a time field or positions are)."""
    low, high = x[0], x[-1]
    edges = low + (high - low) * (np.arange(1, columns) / columns)
    cuts = np.searchsorted(x, edges, side="left")
    starts = np.unique(np.concatenate(([0], cuts)))
    return starts[starts < len(x)]


def reduce(
    x: npt.NDArray[np.float64], ys: list[npt.NDArray[Any]], columns: int
) -> tuple[npt.NDArray[np.float64], list[npt.NDArray[np.float64]]]:
    """``x`` and ``ys`` (numbers, strided views welcome) brought down to two points per
    pixel column (each column's min and max of each y, NaN ignored), or as they are if
    they hold at most two per column; the ys as float64."""
    if len(x) <= 2 * columns:
        return x, [y.astype(np.float64) for y in ys]
    starts = _column_starts(x, columns)
    ends = np.append(starts[1:], len(x)) - 1
    xs = np.empty(2 * len(starts))
    xs[0::2], xs[1::2] = x[starts], x[ends]
    reduced = []
    for y in ys:
        pair = np.empty(2 * len(starts))
        pair[0::2] = np.fmin.reduceat(y, starts)
        pair[1::2] = np.fmax.reduceat(y, starts)
        reduced.append(pair)
    return xs, reduced


def _packed(values: npt.NDArray[np.float64]) -> str:
    """Little-endian float64s in base64: exact, NaN included (JSON has no NaN)."""
    return base64.b64encode(values.astype("<f8").tobytes()).decode("ascii")


def frame(snap: Snapshot, plan: Plan, seconds: float, columns: int, arrivals: Arrivals) -> dict[str, Any]:
    """The plot of the last ``seconds`` the snapshot shows, for ``columns`` pixel columns,
    JSON-ready: ``x`` and one ``y`` per series, packed (``_packed``)."""
    parts = window(snap, plan, seconds, arrivals)
    records = sum(len(v) for _, v in parts)
    cut = records > MOST_RECORDS
    if cut:
        parts = _newest(parts, MOST_RECORDS)
    if parts and plan.series:
        joined = _joined(parts)
        x = _positions(parts) if plan.axis is None else _seconds(joined[plan.axis])
        xs, ys = reduce(x, [joined if plan.plain else joined[name] for name in plan.series], columns)
    else:
        xs, ys = np.empty(0), [np.empty(0) for _ in plan.series]
    return {
        **plan.describe(),
        "seconds": seconds,
        "window_records": records,
        "cut_to": MOST_RECORDS if cut else None,
        "points": len(xs),
        "downsampled": len(xs) < min(records, MOST_RECORDS),
        "x": _packed(xs),
        "y": [_packed(y) for y in ys],
    }
