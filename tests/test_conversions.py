"""append() and extend() follow one rule for turning values into records (``_records``):
no float into an integer field, no string into a number and no number into a string, no
number spread over a record's fields, nothing out of range or cut short. A table of values
and dtypes: for each, append stores what extend stores, or both refuse with
InvalidRecordError and change nothing. Records by name (dicts) follow the same rule: see
test_frames.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from atomic_log_shm import AtomicLog, InvalidRecordError

TICK = np.dtype([("ts", "<f8"), ("seq", "<i8"), ("price", "<f8"), ("qty", "<i8")])  # a struct format
MIXED = np.dtype([("ok", "?"), ("sym", "S4"), ("n", "<i4")])  # no struct format: numpy's path
SMALL = np.dtype([("a", "<i2"), ("b", "<f4")])
TEXT = np.dtype([("raw", "S4"), ("text", "<U3"), ("pair", "<f4", (2,))])  # no struct format
UNSIGNED = np.dtype([("u", "u1"), ("big", "<u8"), ("s", "S2")])  # no struct format
NAN = float("nan")

REFUSED = {
    np.dtype(np.int64): [3.9, 3.0, "7", b"7", 2**70, -(2**64), None, 1j, np.float64(2.0), [1], (1,)],
    np.dtype(np.int8): [128, -129, 1.5, "1"],
    np.dtype(np.uint16): [-1, 65536, 2.0],
    np.dtype(np.float64): ["1.5", None, 1j, b"x"],
    np.dtype(np.float32): [1e300, "1"],
    TICK: [5.0, 5, (1.0, 2.5, 3.0, 4), (1.0, "2", 3.0, 4), (1.0, 2, 3.0), (1.0, 2, 3.0, 4, 5), "abcd", None],
    MIXED: [1, (True, b"ab", 1.5), (True, b"ab"), (True, b"ab", "3")],
    SMALL: [(1.5, 2.0), (70000, 1.0), (1, 1e300), 3],
    np.dtype("S4"): ["ab", 7, 1.5, NAN, True, b"abcde", None],
    np.dtype("<U3"): [b"ab", 7, NAN, "abcd", None],
    TEXT: [
        ("ab", "x", (1, 2)),  # str into bytes
        (b"ab", b"x", (1, 2)),  # bytes into str
        (NAN, "x", (1, 2)),  # a missing value is no text
        (b"abcde", "x", (1, 2)),  # cut short
        (b"ab", "wxyz", (1, 2)),
        (b"ab", "x", 1.0),  # a number is no pair
        (b"ab", "x", (1, 2, 3)),
        (b"ab", "x", ("1", 2)),
    ],
    UNSIGNED: [(256, 0, b""), (-1, 0, b""), (0, -1, b""), (0, 2**64, b""), (1.0, 0, b""), (0, 0.0, b"")],
}
STORED = {
    np.dtype(np.int64): [3, True, np.int64(5), np.int8(-3), np.uint32(7), 2**63 - 1, -(2**63)],
    np.dtype(np.int8): [127, -128, np.int8(5)],
    np.dtype(np.uint16): [0, 65535, False],
    np.dtype(np.float64): [1.5, 3, True, np.float32(1.25), np.int64(9), 2**70],
    np.dtype(np.float32): [1.5, 3, np.float32(2.5)],
    TICK: [(1.0, 2, 3.0, 4), [1.5, 2, 3.5, 4], (1, True, 3, np.int64(4)), np.zeros(1, TICK)[0]],
    MIXED: [(True, b"ab", 3), (False, b"abcd", np.int8(-1))],
    SMALL: [(1, 2.0), (np.int16(7), 2)],
    np.dtype("S4"): [b"ab", b"abcd", np.bytes_(b"x"), b""],
    np.dtype("<U3"): ["ab", "été", np.str_("x")],
    TEXT: [(b"ab", "x", (1, 2)), (b"abcd", "xyz", [1.5, np.float32(2)]), (b"", "", np.ones(2))],
    UNSIGNED: [(5, 2**64 - 1, b"a"), (255, 2**63, b""), (np.int64(7), np.uint64(1), b""), (True, False, b"")],
}
CASES = [(d, v, "refused") for d, vs in REFUSED.items() for v in vs] + [
    (d, v, "stored") for d, vs in STORED.items() for v in vs
]


def outcome(store: Callable[[], object], log: AtomicLog) -> Any:
    before = log.snapshot().to_numpy().tobytes()
    try:
        store()
    except InvalidRecordError:
        assert log.snapshot().to_numpy().tobytes() == before, "a refused value changed the log"
        return "refused"
    return log.snapshot().to_numpy()[-1:].tobytes()


@pytest.mark.parametrize(("dtype", "value", "expected"), CASES, ids=[f"{d}-{v!r}"[:60] for d, v, _ in CASES])
@pytest.mark.parametrize("head", ["fits", "rolls over"])
def test_append_and_extend_agree(dtype: np.dtype[Any], value: Any, expected: str, head: str) -> None:
    results = []
    for store in ("append", "extend"):
        writer, log = AtomicLog.new_claimed(retained=4, segment=2, dtype=dtype)
        with log, writer:
            if head == "rolls over":
                writer.extend(np.zeros(2, dtype))  # the next record takes a new segment
            arg = value if store == "append" else [value]
            results.append(outcome(lambda w=writer, s=store, a=arg: getattr(w, s)(a), log))
    assert results[0] == results[1], f"append gave {results[0]!r}, extend gave {results[1]!r}"
    assert (results[0] == "refused") == (expected == "refused"), results[0]


def test_arrays_follow_the_same_rule() -> None:
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=np.int64)
    with log, writer:
        for bad in (np.array([3.9]), np.array(["7"]), np.array([2**63], dtype=np.uint64)):
            with pytest.raises(InvalidRecordError):
                writer.extend(bad)
        writer.extend(np.array([1, 2], dtype=np.int32))
        writer.extend(np.array([True]))
        assert [int(v) for v in log.snapshot()] == [1, 2, 1]
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype="S4")
    with log, writer:  # each value by its own kind: numpy would make b"nan" of a NaN beside bytes
        for bad in ([b"a", float("nan")], [b"a", 7], [b"a", "b"], np.array([b"abcde"])):
            with pytest.raises(InvalidRecordError):
                writer.extend(bad)
        writer.extend([b"a", np.bytes_(b"bc")])
        assert log.snapshot().to_numpy().tolist() == [b"a", b"bc"]
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=np.uint8)
    with log, writer:  # signed into unsigned: the values decide, not their type
        for bad in (np.array([-1]), np.array([256]), np.array([1.0])):
            with pytest.raises(InvalidRecordError):
                writer.extend(bad)
        writer.extend(np.array([0, 255], dtype=np.int64))
        assert [int(v) for v in log.snapshot()] == [0, 255]


def test_arrays_of_records_follow_the_same_rule_field_by_field() -> None:
    """numpy's own cast of records wraps integers and cuts bytes short: a structured array
    is taken a field at a time, by name when it has the log's field names (in any order),
    else by position."""
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=MIXED)
    with log, writer:
        for bad in (
            np.array([(True, b"ab", 2**40)], [("ok", "?"), ("sym", "S4"), ("n", "<i8")]),
            np.array([(True, b"abcde", 1)], [("ok", "?"), ("sym", "S5"), ("n", "<i8")]),
            np.array([(True, "ab", 1)], [("ok", "?"), ("sym", "U4"), ("n", "<i8")]),
            np.array([(1, b"ab", True)], [("n", "<f8"), ("sym", "S4"), ("ok", "?")]),  # by name: 1.0 into n
            np.array([(True, b"ab")], [("ok", "?"), ("sym", "S4")]),
        ):
            with pytest.raises(InvalidRecordError):
                writer.extend(bad)
        assert len(log.snapshot()) == 0
        writer.extend(np.array([(7, b"ab", True)], [("n", "<i2"), ("sym", "S2"), ("ok", "?")]))  # by name
        writer.extend(np.array([(False, b"cd", 8)], [("a", "?"), ("b", "S4"), ("c", "<i1")]))  # by position
        assert log.snapshot().to_numpy().tolist() == [(True, b"ab", 7), (False, b"cd", 8)]
