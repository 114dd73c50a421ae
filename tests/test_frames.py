"""Records by name in, frames out: dicts, lists of dicts, mappings of columns and pandas
DataFrames follow the conversion rule of tuples (``_records``, tested value by value in
test_conversions.py), field by field; ``chunks()`` and ``since()`` are ``Chunks``, lists
that copy their records into one array or one DataFrame."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atomic_log_shm import AtomicLog, Chunk, Chunks, InvalidRecordError, Writer

pd = pytest.importorskip("pandas")

Names = Callable[[], str]

TELEMETRY = np.dtype(
    [("ts", "<f8"), ("service", "S16"), ("cpu", "<f4"), ("mem", "<f4"), ("latency_ms", "<f4")]
)  # no struct format (a bytes field): numpy converts
FIELDS = "ts, service, cpu, mem, latency_ms"
NUMBERS = np.dtype([("ts", "<f8"), ("n", "<i8"), ("small", "<i2"), ("x", "<f4")])  # a struct format
PAIR = np.dtype([("a", "<i8"), ("b", "<i8")])  # a struct format
NESTED = np.dtype([("ts", "<f8"), ("pos", [("x", "<i4"), ("y", "<f4")]), ("pair", "<f4", (2,))])


def sample(i: int) -> dict[str, Any]:
    return {"ts": 1000.0 + i, "service": b"api", "cpu": i / 8, "mem": 0.5, "latency_ms": 2.0 * i}


@pytest.fixture
def log_of(log_name: Names) -> Iterator[Callable[..., tuple[Writer, AtomicLog]]]:
    """Makes a log of a dtype (32 records in segments of 8, unless told) and its writer;
    closes and removes them after the test."""
    made: list[tuple[Writer, AtomicLog]] = []

    def make(dtype: Any, retained: int = 32, segment: int = 8) -> tuple[Writer, AtomicLog]:
        made.append(AtomicLog.new_claimed(retained=retained, segment=segment, dtype=dtype, name=log_name()))
        return made[-1]

    yield make
    for writer, log in made:
        writer.close()
        log.close()
        log.unlink()


def records(log: AtomicLog) -> list[Any]:
    return log.snapshot().to_numpy().tolist()


def refused(store: Callable[[], object], log: AtomicLog, *phrases: str) -> str:
    """Run ``store``: it must raise InvalidRecordError saying each of ``phrases``, and leave
    the log as it was. Returns the message."""
    before = log.snapshot().to_numpy().tobytes()
    with pytest.raises(InvalidRecordError) as raised:
        store()
    message = str(raised.value)
    for phrase in phrases:
        assert phrase in message, f"{phrase!r} is not in {message!r}"
    assert log.snapshot().to_numpy().tobytes() == before, "a refused value changed the log"
    return message


# ---------------------------------------------------------------------------------------
# In: records by name


@pytest.mark.parametrize("dtype", [TELEMETRY, NUMBERS], ids=["numpy", "struct"])
def test_a_dict_is_stored_by_name_in_any_order(log_of: Any, dtype: np.dtype[Any]) -> None:
    writer, log = log_of(dtype)
    values = {name: np.zeros(1, dtype)[0][name].item() for name in dtype.names}
    values.update({"ts": 5.5} | ({"service": b"db"} if "service" in values else {"n": -3, "small": 7}))
    writer.append(tuple(values.values()))
    writer.append(dict(reversed(values.items())))
    writer.append(values)
    stored = records(log)
    assert stored == [stored[0]] * 3 and stored[0][0] == 5.5


def test_missing_and_extra_names_are_refused_saying_what_to_pass(log_of: Any) -> None:
    writer, log = log_of(TELEMETRY)
    good = sample(0)
    missing = {k: v for k, v in good.items() if k != "mem"}
    extra = good | {"host": b"a"}
    renamed = missing | {"memory": 0.5}
    for store in (writer.append, lambda r: writer.extend([sample(1), r])):
        refused(lambda s=store: s(missing), log, "missing 'mem'", f"pass exactly the fields {FIELDS}")
        refused(lambda s=store: s(extra), log, "not fields: 'host'", FIELDS)
        refused(lambda s=store: s(renamed), log, "missing 'mem'", "not fields: 'memory'", FIELDS)
    frame = pd.DataFrame([sample(1)])
    refused(lambda: writer.extend(frame.drop(columns="mem")), log, "missing 'mem'", FIELDS)
    refused(lambda: writer.extend(frame.assign(host=b"x")), log, "not fields: 'host'", FIELDS)
    refused(lambda: writer.extend(frame.rename(columns={"mem": 0})), log, "missing 'mem'", "not fields: 0")
    refused(lambda: writer.extend(dict(frame.to_dict("list"), mem=[1.0, 2.0])), log, "differ in length")
    assert records(log) == []


def test_a_batch_by_name_names_the_record_that_does_not_fit(log_of: Any) -> None:
    writer, log = log_of(TELEMETRY)
    batch = [sample(0), sample(1), sample(2) | {"cpu": "high"}]
    refused(lambda: writer.extend(batch), log, "record 2 of the batch", "field 'cpu'")


@pytest.mark.parametrize("dtype", [PAIR, np.dtype([("a", "<i8"), ("b", "S4")])], ids=["struct", "numpy"])
@pytest.mark.parametrize("keys", [(1, 3), (0, 1), ("b", "a", "c")])
def test_a_dict_is_never_stored_as_its_keys(log_of: Any, dtype: np.dtype[Any], keys: tuple[Any, ...]) -> None:
    """``struct`` unpacks a dict's keys: {1: 2, 3: 4} must not become the record (1, 3)."""
    writer, log = log_of(dtype)
    value = dict.fromkeys(keys, 2)
    for store in (writer.append, lambda v: writer.extend([v])):
        refused(lambda s=store: s(value), log, "pass exactly the fields a, b")
    assert records(log) == []


@pytest.mark.parametrize("dtype", ["<i8", "<f4", "S4"])
def test_a_log_of_plain_values_refuses_names(log_of: Any, dtype: str) -> None:
    writer, log = log_of(dtype)
    refused(lambda: writer.append({1: 2}), log, "no fields", "not a mapping")
    refused(lambda: writer.append({"value": 2}), log, "no fields")
    refused(lambda: writer.extend([{"value": 2}]), log, "no fields")
    refused(lambda: writer.extend({"value": [1, 2]}), log, "no fields", "not columns")
    refused(lambda: writer.extend(pd.DataFrame({"value": [1, 2]})), log, "no fields", "not columns")


def test_each_field_follows_the_rule_by_name(log_of: Any) -> None:
    writer, log = log_of(TELEMETRY)
    for field, value, says in [
        ("cpu", "high", "field 'cpu'"),
        ("ts", None, "field 'ts'"),
        ("service", "api", "encode it"),  # str into bytes: as in a tuple
        ("service", float("nan"), "holds bytes, not float64"),  # a missing value is no name
        ("service", 7, "holds bytes"),
        ("service", b"x" * 17, "longer than the 16 bytes"),
        ("mem", 1e300, "out of the range of float32"),
    ]:
        refused(lambda f=field, v=value: writer.append(sample(0) | {f: v}), log, says)
        refused(lambda f=field, v=value: writer.extend([sample(0) | {f: v}]), log, says)
        refused(lambda f=field, v=value: writer.extend(pd.DataFrame([sample(0) | {f: v}])), log, says)


def test_nested_records_by_name(log_of: Any) -> None:
    writer, log = log_of(NESTED)
    writer.append({"ts": 1.0, "pos": {"y": 2.5, "x": 3}, "pair": [1.0, 2.0]})
    writer.append((2.0, {"x": 4, "y": 0.5}, (3.0, 4.0)))
    writer.append({"ts": 3.0, "pos": (5, 1.5), "pair": np.array([5.0, 6.0])})
    writer.extend([{"ts": 4.0, "pos": {"x": 6, "y": 1.0}, "pair": (7, 8)}])
    writer.extend(pd.DataFrame({"ts": [5.0], "pos": [{"x": 7, "y": 2.0}], "pair": [[9.0, 10.0]]}))
    stored = log.snapshot().to_numpy()
    assert [(r["ts"], r["pos"].item(), r["pair"].tolist()) for r in stored] == [
        (1.0, (3, 2.5), [1.0, 2.0]),
        (2.0, (4, 0.5), [3.0, 4.0]),
        (3.0, (5, 1.5), [5.0, 6.0]),
        (4.0, (6, 1.0), [7.0, 8.0]),
        (5.0, (7, 2.0), [9.0, 10.0]),
    ]
    for value, says in [
        ({"ts": 1.0, "pos": {"x": 1}, "pair": [1, 2]}, ("field 'pos'", "missing 'y'")),
        ({"ts": 1.0, "pos": {"x": 1.5, "y": 1}, "pair": [1, 2]}, ("field 'pos'", "field 'x'")),
        ({"ts": 1.0, "pos": (1, 1.0), "pair": 1.0}, ("field 'pair'", "shape")),  # no broadcast
    ]:
        refused(lambda v=value: writer.append(v), log, *says)
        refused(lambda v=value: writer.extend([v]), log, *says)


# ---------------------------------------------------------------------------------------
# In: DataFrames, lists of dicts, columns, arrays by name

KINDS = np.dtype(
    [
        ("i1", "i1"), ("u2", "<u2"), ("i8", "<i8"), ("f4", "<f4"), ("f8", "<f8"), ("ok", "?"),
        ("raw", "S8"), ("text", "<U6"), ("when", "<M8[us]"), ("took", "<m8[us]"), ("z", "<c16"),
    ]
)  # fmt: skip


def test_a_dataframe_of_every_kind_is_stored_by_name_whatever_its_index(log_of: Any) -> None:
    writer, log = log_of(KINDS)
    when = np.array(["2024-05-01T12:00:00", "2024-05-01T12:00:01.5"], "M8[us]")
    frame = pd.DataFrame(
        {
            "z": [1 + 2j, 3j],
            "text": ["héllo", "a"],
            "raw": [b"api", b"12345678"],
            "i1": np.array([-128, 127], np.int64),  # wider columns that fit
            "u2": pd.array([0, 65535], dtype="UInt16"),
            "i8": pd.array([2**62, -5], dtype="Int64"),
            "f4": np.array([1.5, -2.0], np.float64),
            "f8": np.array([7, 8], np.int32),  # integers into a float field
            "ok": [True, False],
            "when": when,
            "took": when - when[0],
        },
        index=["a", "b"],  # ignored: records are stored in the frame's order
    )
    writer.extend(frame)
    writer.extend(frame.iloc[::-1])
    expected = np.zeros(2, KINDS)
    for name in KINDS.names:
        expected[name] = frame[name].to_numpy()
    stored = log.snapshot().to_numpy()
    assert stored.tolist() == expected.tolist() + expected[::-1].tolist()


def test_a_dataframe_column_that_does_not_fit_is_refused_naming_it(log_of: Any) -> None:
    writer, log = log_of(NUMBERS)
    good = pd.DataFrame({"ts": [1.0, 2.0], "n": [1, 2], "small": [3, 4], "x": [0.5, 1.5]})
    refused(lambda: writer.extend(good.assign(n=[1.0, np.nan])), log, "field 'n'", "NaN", "fill or drop")
    refused(lambda: writer.extend(good.assign(n=pd.array([1, None], dtype="Int64"))), log, "field 'n'", "NaN")
    refused(lambda: writer.extend(good.assign(n=[1.5, 2.0])), log, "field 'n'", "float64")
    refused(lambda: writer.extend(good.assign(small=[1, 70000])), log, "field 'small'", "range of int16")
    refused(lambda: writer.extend(good.assign(x=["1.5", "2"])), log, "field 'x'")
    days = pd.to_datetime(["2024-01-01", "2024-01-02"])
    refused(lambda: writer.extend(good.assign(ts=days)), log, "field 'ts'")
    writer.extend(good.iloc[:0])  # no rows: nothing to store
    writer.extend(good[["x", "small", "n", "ts"]])
    assert records(log) == [(1.0, 1, 3, 0.5), (2.0, 2, 4, 1.5)]


def test_a_column_of_strings_into_bytes_is_refused_until_encoded(log_of: Any) -> None:
    """One rule with tuples: a str is not bytes (append((1.0, "api", ...)) is refused too)."""
    writer, log = log_of(TELEMETRY)
    frame = pd.DataFrame([sample(0), sample(1)]).assign(service=["api", "db"])
    refused(lambda: writer.extend(frame), log, "field 'service'", "holds bytes", "encode it")
    refused(lambda: writer.extend(frame.assign(service=[b"api", None])), log, "field 'service'")
    refused(lambda: writer.extend(frame.assign(service=[b"api", np.nan])), log, "row 1, nan", "holds bytes")
    refused(lambda: writer.extend(frame.assign(service=[b"api", b"x" * 17])), log, "longer than the 16 bytes")
    writer.extend(frame.assign(service=frame["service"].str.encode("utf-8")))
    assert [r[1] for r in records(log)] == [b"api", b"db"]


def test_lists_of_dicts_columns_and_arrays_are_taken_by_name(log_of: Any) -> None:
    writer, log = log_of(TELEMETRY)
    rows = [sample(i) for i in range(3)]
    expected = [tuple(r.values()) for r in rows]
    writer.extend(rows)
    writer.extend([dict(reversed(r.items())) for r in rows])
    writer.extend({name: [r[name] for r in rows] for name in reversed(TELEMETRY.names)})
    writer.extend({name: np.array([r[name] for r in rows]) for name in TELEMETRY.names})
    shuffled = np.dtype([(n, TELEMETRY[n]) for n in ("mem", "cpu", "ts", "latency_ms", "service")])
    array = np.zeros(3, shuffled)
    for name in TELEMETRY.names:
        array[name] = [r[name] for r in rows]
    writer.extend(array)
    writer.extend(pd.DataFrame(rows).to_records(index=False))  # numpy records with an object field
    frame = log.snapshot().to_pandas()
    assert frame.index.name == "position"
    writer.extend(frame.iloc[:3])  # what to_pandas() gives goes back as it is
    stored = [tuple(pytest.approx(v) if isinstance(v, float) else v for v in r) for r in records(log)]
    assert stored == expected * 7


def test_a_series_is_a_batch_of_values_or_records(log_of: Any) -> None:
    writer, log = log_of(np.float32)
    writer.extend(pd.Series([1.5, 2], index=[7, 3]))
    refused(lambda: writer.extend(pd.Series([1e300])), log, "record 0", "float32")
    refused(lambda: writer.extend(pd.Series(["1.5"])), log)
    assert records(log) == [1.5, 2.0]
    writer, log = log_of(TELEMETRY)
    writer.extend(pd.Series([sample(0), tuple(sample(1).values())]))
    assert [r[0] for r in records(log)] == [1000.0, 1001.0]


def test_a_dataframe_with_repeated_column_names_is_refused(log_of: Any) -> None:
    writer, log = log_of(TELEMETRY)
    frame = pd.DataFrame([[*sample(0).values(), 1.0]], columns=[*TELEMETRY.names, "cpu"])
    refused(lambda: writer.extend(frame), log, "column names repeat", "'cpu'")


def test_extend_of_a_mapping_refuses_one_record(log_of: Any) -> None:
    writer, log = log_of(TELEMETRY)
    refused(lambda: writer.extend(sample(0)), log, "field 'ts'", "not float", "pass the dict to append()")


# Whatever the values, a record stored by name is the record stored by position, and a
# batch by name (a list of dicts, columns, a DataFrame) is stored or refused as the tuples
# are. Values of the wrong kind, out of range or too long are drawn too. MIXED goes through
# numpy; NUMERIC has a struct format, so tuples go through struct.
MIXED = np.dtype([("n", "<i2"), ("u", "u1"), ("x", "<f4"), ("ok", "?"), ("raw", "S3"), ("text", "<U2")])
NUMERIC = np.dtype([("n", "<i2"), ("u", "u1"), ("x", "<f4"), ("d", "<f8"), ("q", "<i8")])
_ANY_VALUE = st.one_of(
    st.integers(-(2**63), 2**63 - 1),  # beyond int64, struct and numpy differ (see test_conversions)
    st.integers(-300, 300),
    st.floats(width=32),
    st.floats(),
    st.booleans(),
    st.binary(max_size=4),
    st.text(max_size=3),
    st.none(),
)


def fitting(field: np.dtype[Any]) -> st.SearchStrategy[Any]:
    """Values of the field's own kind, that fit (to get past the first refusal)."""
    if field.kind in "iu":
        return st.integers(int(np.iinfo(field).min), int(np.iinfo(field).max))
    if field.kind == "f":
        return st.floats(width=8 * field.itemsize) | st.integers(-(2**24), 2**24)
    if field.kind == "S":
        return st.binary(max_size=field.itemsize)
    if field.kind == "U":
        return st.text(st.characters(codec="utf-8"), max_size=field.itemsize // 4)
    assert field.kind == "b"
    return st.booleans()


def rows_of(dtype: np.dtype[Any]) -> st.SearchStrategy[list[dict[str, Any]]]:
    names: list[str] = list(dtype.names or ())
    anything = st.fixed_dictionaries(dict.fromkeys(names, _ANY_VALUE))
    fits = st.fixed_dictionaries({name: fitting(dtype[name]) for name in names})
    return st.lists(anything | fits, min_size=1, max_size=4)


class Refused(Exception):
    """An append refused a record after others were stored: the batch would be refused."""


def one_by_one(append: Callable[[Any], None], records: list[Any]) -> None:
    for record in records:
        try:
            append(record)
        except InvalidRecordError:
            raise Refused from None


def outcome(store: Callable[[], object], log: AtomicLog) -> Any:
    """What ``store`` left in the log: its records' bytes, or "refused" (nothing changed)."""
    before = log.snapshot().to_numpy().tobytes()
    try:
        store()
    except InvalidRecordError:
        assert log.snapshot().to_numpy().tobytes() == before, "a refused batch changed the log"
        return "refused"
    except Refused:
        return "refused"
    return log.snapshot().to_numpy().tobytes()


@pytest.mark.parametrize("dtype", [MIXED, NUMERIC], ids=["numpy", "struct"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_by_name_is_by_position(log_name: Names, dtype: np.dtype[Any], data: st.DataObject) -> None:
    rows = data.draw(rows_of(dtype))
    names = list(dtype.names or ())
    frame = pd.DataFrame(rows, columns=names)
    tuples = [tuple(r[name] for name in names) for r in rows]
    ways: dict[str, Callable[[Writer], object]] = {
        "tuples": lambda w: one_by_one(w.append, tuples),
        "dicts": lambda w: one_by_one(w.append, rows),
        "list of tuples": lambda w: w.extend(tuples),
        "list of dicts": lambda w: w.extend(rows),
        "columns": lambda w: w.extend({name: [r[name] for r in rows] for name in names}),
        # pandas makes its own values of these (None becomes NaN in a column of numbers):
        # the frame is stored as the records it holds are.
        "frame": lambda w: w.extend(frame),
        "its records": lambda w: w.extend(frame.to_dict("records")),
    }
    results: dict[str, Any] = {}
    for way, store in ways.items():
        writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=dtype, name=log_name())
        with log, writer:
            results[way] = outcome(lambda w=writer, s=store: s(w), log)
    by_position = {results[way] for way in ("tuples", "dicts", "list of tuples", "list of dicts", "columns")}
    assert len(by_position) == 1, results
    assert results["frame"] == results["its records"], results


# ---------------------------------------------------------------------------------------
# Out: Chunks


def test_chunks_and_since_are_lists_that_copy_out_in_one_step(log_of: Any) -> None:
    writer, log = log_of(TELEMETRY, retained=32, segment=4)
    writer.extend([sample(i) for i in range(10)])
    snap = log.snapshot()
    chunks = snap.chunks()
    assert isinstance(chunks, Chunks) and isinstance(chunks, list)
    assert len(chunks) == 3 and all(isinstance(c, Chunk) for c in chunks)
    assert [(c.start, len(c)) for c in chunks] == [(0, 4), (4, 4), (8, 2)]
    assert chunks[-1].start == 8 and chunks[1:][0] is chunks[1]
    assert chunks.dtype == TELEMETRY
    assert snap.chunks() is not snap.chunks(), "a new list each call: changing one changes no view"
    chunks.clear()
    assert len(snap.chunks()) == 3
    assert snap.chunks().to_numpy().tobytes() == snap.to_numpy().tobytes()

    recent = snap.since("ts", 1005.0)
    assert isinstance(recent, Chunks)
    assert [(c.start, len(c)) for c in recent] == [(5, 3), (8, 2)]
    array = recent.to_numpy()
    assert array.dtype == TELEMETRY and array.flags.writeable and array.flags.c_contiguous
    assert array["ts"].tolist() == [1005.0 + i for i in range(5)]

    frame = snap.since("ts", 1005.0).to_pandas()
    rows = [sample(i) for i in range(5, 10)]
    expected = pd.DataFrame(
        {name: np.array([r[name] for r in rows], TELEMETRY[name]) for name in TELEMETRY.names},
        index=pd.Index(np.arange(5, 10, dtype=np.int64), name="position"),
    )
    pd.testing.assert_frame_equal(frame, expected)
    pd.testing.assert_frame_equal(snap.since("ts", 0).to_pandas(), snap.to_pandas())

    none = snap.since("ts", 1e12)
    assert isinstance(none, Chunks) and len(none) == 0
    assert none.to_numpy().dtype == TELEMETRY and len(none.to_numpy()) == 0
    empty = none.to_pandas()
    assert list(empty.columns) == list(TELEMETRY.names) and len(empty) == 0


def test_a_polls_records_copy_out_as_a_snapshots_do(log_of: Any) -> None:
    writer, log = log_of(np.int64, retained=16, segment=4)
    cursor = log.cursor()
    writer.extend(range(10))
    batch = cursor.poll()
    assert batch.to_numpy().tolist() == list(range(10))
    assert batch.to_pandas()["value"].tolist() == list(range(10))
    nothing = cursor.poll()
    assert nothing.to_numpy().dtype == np.int64 and len(nothing.to_numpy()) == 0
