"""How values become records: the one rule that ``append()`` and ``extend()`` both follow.

A value is stored only if each field takes it without a change of kind or a loss:

    field kind          takes                                         refuses (examples)
    integer (i, u)      int, bool, numpy integer or bool, in range    3.9, 3.0, "7", 2**70
    float (f)           int, float, bool, numpy integer/float/bool    "1.5", 1j, 1e300 into f4
    bytes (S)           bytes, numpy bytes, that fit                  "api" (a str), 7, nan,
                                                                      b"x" * 20 into S16
    text (U)            str, numpy str, that fit                      b"api", 7, "x" * 9 into U8
    structured          a tuple (or list) with one value per field,   5.0 (no broadcast), a
                        a mapping (a dict) of every field's name to   tuple of the wrong length,
                        its value, or a record (np.void)              a dict missing a field or
                                                                      with a name not a field
    sub-array           a value of the field's shape                  5.0 into a field of (2,)
    anything else       what numpy casts ``same_kind`` (bool, complex, datetimes)

A nested record field takes a record by the same rule: a tuple, a dict or a record.

Batches (``extend()``) are records one by one (a sequence, any iterable), an array, or
columns by name. An array is cast by the rule; a structured array is taken field by field,
by name when its fields have the log's names (in any order), else by position as numpy
casts (same number of fields). Columns by name are a mapping (a dict) of every field's name
to its column (a sequence or an array of values), or a pandas DataFrame (its index is
ignored). A column fills one field: as an array of its values' own kind (one value at a
time where the values mix types, so that numpy never turns a NaN beside bytes into b"nan").

Values are refused before anything is stored, so a refused value leaves the log as it was.

How the rule is applied. Where the dtype's bytes are exactly a ``struct`` format
(little-endian integers and floats, at their offsets), ``struct`` packs tuples and lists
straight into bytes: it refuses a float for an integer field, a string for a number and an
out-of-range integer by itself, and is faster than numpy's store of a structured scalar.
Anything else (other dtypes, and records that are not tuples or lists: ``struct`` would
unpack a dict's keys) is converted a field at a time, as columns: numpy's cast
(``same_kind``, but integers into integers by value) plus the checks above, on a whole
column at once. A record alone is not worth a column: each of its values is taken as it is
where a test of its Python type and range shows that the rule takes it (an int in range
into an integer field, bytes that fit into a bytes field...), and goes through the rule on
a column of one otherwise.
"""

from __future__ import annotations

import functools
import itertools
import math
import operator
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

_STRUCT_CODES = {
    ("i", 1): "b", ("i", 2): "h", ("i", 4): "i", ("i", 8): "q",
    ("u", 1): "B", ("u", 2): "H", ("u", 4): "I", ("u", 8): "Q",
    ("f", 2): "e", ("f", 4): "f", ("f", 8): "d",
}  # fmt: skip
_TUPLES = frozenset({tuple, list})  # the records that ``struct`` unpacks one value per field
_STRINGS = {"S": "bytes", "U": "str"}
_STRING_TYPES = {"S": bytes, "U": str}
_EXACT_INTEGERS = {4: 2**24, 8: 2**53}  # a float of this many bytes holds every integer up to
_INTEGERS = frozenset({int, bool})
_FROM_THE_OTHER_STRING = {"S": " (encode it: 'api'.encode())", "U": " (decode it: b'api'.decode())"}
_CHARACTERS = {"S": (1, "bytes"), "U": (4, "characters")}  # (bytes a character takes, what it is)
VALUE_ERRORS = (TypeError, ValueError, OverflowError, struct.error)  # what a refused conversion raises


def struct_for(dtype: np.dtype[Any]) -> struct.Struct | None:
    """The ``struct`` format whose bytes are exactly ``dtype``'s records, or None."""
    fields = [(dtype, 0)] if dtype.names is None else [dtype.fields[n][:2] for n in dtype.names]  # type: ignore[index]
    parts, at = ["<"], 0
    for field, offset in sorted(fields, key=lambda f: f[1]):
        code = _STRUCT_CODES.get((field.kind, field.itemsize))
        if code is None or field.byteorder == ">" or field.shape or offset < at:
            return None
        parts.append("x" * (offset - at) + code)
        at = offset + field.itemsize
    parts.append("x" * (dtype.itemsize - at))
    packer = struct.Struct("".join(parts))
    order = [offset for _, offset in fields]
    if packer.size != dtype.itemsize or order != sorted(order):  # fields out of offset order
        return None
    return packer


def as_records(values: Any, dtype: np.dtype[Any], packer: struct.Struct | None) -> npt.NDArray[Any]:
    """``values`` (records one by one, an array, or columns by name) as a 1-d array of
    ``dtype``; raises TypeError, ValueError or OverflowError for anything the rule above
    refuses, saying what to pass."""
    if isinstance(values, np.ndarray):
        return _from_array(values, dtype)
    if not isinstance(values, list | tuple):
        if is_columns(values):
            return _from_columns(values, dtype)
        if isinstance(values, str | bytes):
            return _cast(np.asarray(values), dtype)  # one value: the caller says it is not a batch
        if hasattr(values, "__array__"):  # a pandas Series, any array-like: numpy converts it whole
            array = np.asarray(values)
            if array.dtype != object:
                return _from_array(array, dtype)
        values = list(values)
    if dtype.names is None:
        return _plain(values, dtype, packer)
    types = set(map(type, values))
    if packer is not None and types <= _TUPLES:
        return np.frombuffer(b"".join(itertools.starmap(packer.pack, values)), dtype)
    if len(values) > 1 and (types <= _TUPLES or all(issubclass(t, Mapping) for t in types)):
        # Converted a field at a time: the rule on a column is vectorized.
        return _from_columns(_columns_of_records(values, dtype.names), dtype)
    return np.asarray([_record(record, dtype) for record in values], dtype=dtype)


def is_columns(values: Any) -> bool:
    """Whether ``values`` are columns by name: a mapping, or a pandas DataFrame (known by
    its class, so that pandas is never imported here; pandas 3 says its module is "pandas",
    earlier versions "pandas.core.frame")."""
    return isinstance(values, Mapping) or any(
        cls.__name__ == "DataFrame" and cls.__module__.partition(".")[0] == "pandas"
        for cls in type(values).__mro__
    )


def _plain(values: list[Any], dtype: np.dtype[Any], packer: struct.Struct | None) -> npt.NDArray[Any]:
    try:
        if packer is not None:
            return np.frombuffer(b"".join(map(packer.pack, values)), dtype)
        return _column(values, dtype)  # the values of a plain log are one column
    except VALUE_ERRORS:
        if any(isinstance(value, Mapping) for value in values):
            raise TypeError(f"{_no_fields(dtype)}: pass a value, not a mapping (a dict)") from None
        raise


def _no_fields(dtype: np.dtype[Any]) -> str:
    return f"a log of plain {dtype} values has no fields to name"


def _by_name(values: Mapping[Any, Any], names: tuple[str, ...]) -> tuple[Any, ...]:
    """The values of a mapping in the order of ``names``, or ValueError saying which names
    are missing and which are not fields."""
    if len(values) == len(names):
        try:
            return tuple([values[name] for name in names])
        except KeyError:
            pass
    missing = [name for name in names if name not in values]
    extra = [key for key in values if key not in names]
    found = [f"missing {', '.join(map(repr, missing))}"] if missing else []
    found += [f"not fields: {', '.join(map(repr, extra))}"] if extra else []
    raise ValueError(f"{'; '.join(found)}; pass exactly the fields {', '.join(names)}")


def _columns_of_records(values: list[Any], names: tuple[str, ...]) -> dict[str, list[Any]]:
    """Records, all tuples and lists or all mappings, as columns; ValueError for the first
    record that has not one value for each field."""
    by_name = isinstance(values[0], Mapping)
    if set(map(len, values)) == {len(names)}:
        getters = map(operator.itemgetter, names if by_name else range(len(names)))
        try:  # C loops: no Python call per record
            return {name: list(map(get, values)) for name, get in zip(names, getters, strict=True)}
        except KeyError:
            pass
    for record in values:
        if by_name:
            _by_name(record, names)
        else:
            _check_length(record, names)
    raise AssertionError("unreachable: a record has not one value for each field")


def _check_length(record: Sequence[Any], names: tuple[str, ...]) -> None:
    if len(record) != len(names):
        raise ValueError(f"a record has {len(names)} fields ({', '.join(names)}), not {len(record)}")


def _record(value: Any, dtype: np.dtype[Any]) -> Any:
    """``value`` as one record of the structured ``dtype`` that numpy stores as it is (a
    tuple, or a record of ``dtype``); raises unless the rule above takes it."""
    names = dtype.names
    assert names is not None
    if isinstance(value, np.void):
        return _from_array(np.asarray(value).reshape(1), dtype)[0]
    if isinstance(value, Mapping):
        value = _by_name(value, names)
    elif not isinstance(value, tuple | list):
        raise TypeError(
            f"a record of {len(names)} fields is a tuple or a dict of them ({', '.join(names)}), "
            f"not {type(value).__name__}"
        )
    else:
        _check_length(value, names)
    items = []
    for name, item, fits in zip(names, value, _quick_checks(dtype), strict=True):
        if fits(item):
            items.append(item)
            continue
        field: np.dtype[Any] = dtype.fields[name][0]  # type: ignore[index]
        try:
            if field.names is not None:
                item = _record(item, field)
            else:  # the rule's own value: numpy might round a Python int differently
                item = _column(np.asarray(item).reshape(1, *np.shape(item)), field)[0]
        except VALUE_ERRORS as exc:
            raise ValueError(f"field {name!r} ({field}): {exc}") from None
        items.append(item)
    return tuple(items)


@functools.cache
def _quick_checks(dtype: np.dtype[Any]) -> tuple[Callable[[Any], bool], ...]:
    """For each field of ``dtype``, a test that a Python value is one the rule takes and
    that numpy stores exactly as the rule on a column would (so that a record alone costs
    no numpy call per field): False sends the value to the rule itself."""
    return tuple(_quick_check(dtype.fields[name][0]) for name in dtype.names or ())  # type: ignore[index]


def _quick_check(field: np.dtype[Any]) -> Callable[[Any], bool]:
    kind, size = field.kind, field.itemsize
    if field.shape or field.names is not None or field.byteorder == ">":
        return _never
    if kind in "iu":
        low, high = int(np.iinfo(field).min), int(np.iinfo(field).max)
        return lambda v: type(v) is bool or (type(v) is int and low <= v <= high)
    if kind == "f" and size in _EXACT_INTEGERS:
        # Integers only where exact: numpy rounds a larger int through a double on the way.
        top, largest = _EXACT_INTEGERS[size], float(np.finfo(field).max)
        return lambda v: (type(v) is float and not largest < abs(v) < math.inf) or (
            type(v) in _INTEGERS and -top <= v <= top
        )
    if kind == "b":
        return lambda v: type(v) is bool
    if kind in _STRINGS:
        room = size // _CHARACTERS[kind][0]
        string = _STRING_TYPES[kind]
        return lambda v: type(v) is string and len(v) <= room
    return _never


def _never(value: Any) -> bool:
    return False


def _from_array(values: npt.NDArray[Any], dtype: np.dtype[Any]) -> npt.NDArray[Any]:
    """An array as records of ``dtype``: a structured one field by field (numpy's own cast
    of records wraps integers out of range and truncates bytes)."""
    names = values.dtype.names
    if names is None or dtype.names is None or values.dtype == dtype:
        return _cast(values, dtype)
    if sorted(names) == sorted(dtype.names):
        return _from_columns({name: values[name] for name in names}, dtype)
    if len(names) != len(dtype.names):
        raise ValueError(
            f"an array of records with the fields {', '.join(names)} has no value for each field "
            f"of {', '.join(dtype.names)}"
        )
    by_position = zip(names, dtype.names, strict=True)
    return _from_columns({mine: values[theirs] for theirs, mine in by_position}, dtype)


def _from_columns(columns: Any, dtype: np.dtype[Any]) -> npt.NDArray[Any]:
    names = dtype.names
    if names is None:
        raise TypeError(f"{_no_fields(dtype)}: pass the values as a sequence or an array, not columns")
    if not isinstance(columns, Mapping):  # a pandas DataFrame
        labels = list(columns.columns)
        if len(set(labels)) != len(labels):
            raise ValueError(f"the DataFrame's column names repeat: {', '.join(map(repr, labels))}")
        columns = {label: columns[label].to_numpy() for label in labels}
    arrays = []
    for name, column in zip(names, _by_name(columns, names), strict=True):
        field: np.dtype[Any] = dtype.fields[name][0]  # type: ignore[index]
        try:
            arrays.append(_column(column, field))
        except VALUE_ERRORS as exc:
            raise ValueError(f"field {name!r} ({field}): {exc}") from None
    lengths = {len(array) for array in arrays}
    if len(lengths) > 1:
        shown = ", ".join(f"{name}: {len(array)}" for name, array in zip(names, arrays, strict=True))
        raise ValueError(f"the columns differ in length ({shown})")
    records = np.zeros(lengths.pop(), dtype)  # zeros: no stray bytes in the padding
    for name, array in zip(names, arrays, strict=True):
        records[name] = array
    return records


def _column(values: Any, field: np.dtype[Any]) -> npt.NDArray[Any]:
    """``values`` (a column: a sequence, an array, or what numpy takes as one, such as a
    pandas Series) as an array of the field ``field``, one value of it per row; raises
    unless the rule above takes every value."""
    if hasattr(values, "__array__") and not isinstance(values, np.ndarray):
        values = np.asarray(values)
    if isinstance(values, str | bytes | Mapping) or not hasattr(values, "__len__") or np.ndim(values) == 0:
        raise TypeError(
            f"a column is a sequence or an array of values, not {type(values).__name__} "
            "(to store one record by name, pass the dict to append())"
        )
    if field.names is not None:  # a column of records: tuples, dicts, records, an array
        return as_records(values.tolist() if _objects(values) else values, field, None)
    if not isinstance(values, np.ndarray) or values.dtype == object:
        values = _own_kind(values, field)
    if values.shape[1:] != field.shape:
        raise ValueError(f"values of shape {values.shape[1:]} do not fill a field of shape {field.shape}")
    try:
        return _cast(values, field.base)
    except (TypeError, ValueError):
        if field.kind in "iu" and values.dtype.kind == "f" and np.isnan(values).any():
            raise TypeError(
                f"a column of {values.dtype} holding NaN (missing values?) does not go into "
                f"{field.base} without loss: fill or drop them first"
            ) from None
        raise


def _objects(values: Any) -> bool:
    return isinstance(values, np.ndarray) and values.dtype == object


def _own_kind(values: Any, field: np.dtype[Any]) -> npt.NDArray[Any]:
    """Python objects (a sequence, or an array of objects) as an array of their own kind:
    numpy's, when they are of one type; checked one at a time against ``field`` when they
    mix types (numpy would make text of numbers beside strings, a float of an int beside
    floats)."""
    types = set(map(type, values))
    if not types:
        return np.empty((0, *field.shape), field.base)
    if len(types) > 1:
        for row, value in enumerate(values):
            try:
                _cast(np.asarray(value).reshape(1, *np.shape(value)), field.base)
            except VALUE_ERRORS as exc:
                raise ValueError(f"row {row}, {value!r}: {exc}") from None
        return np.array(list(values), dtype=field.base)
    if types == {_STRING_TYPES.get(field.kind)}:
        # Strings of the field's kind, sized by the longest: twice as fast as numpy's sizing.
        return np.array(values, dtype=f"{field.kind}{max(max(map(len, values)), 1)}")
    return np.asarray(values.tolist() if _objects(values) else values)


def _cast(values: npt.NDArray[Any], dtype: np.dtype[Any]) -> npt.NDArray[Any]:
    if values.dtype == dtype:
        return values
    if dtype.kind in _STRINGS:
        _check_strings(values, dtype)
    # TypeError for a change of kind. Integers into integers: numpy's same_kind refuses
    # signed into unsigned whatever the values, so the range check below decides.
    casting: Literal["unsafe", "same_kind"] = (
        "unsafe" if dtype.kind in "iu" and values.dtype.kind in "biu" else "same_kind"
    )
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is refused below, not warned of
        records = values.astype(dtype, casting=casting)
    if dtype.kind in "iu" and not (
        np.array_equal(records.astype(values.dtype), values) and ((records < 0) == (values < 0)).all()
    ):  # a round trip alone misses uint64 2**63 -> int64 -2**63 -> uint64 2**63
        raise OverflowError(f"a value is out of the range of {dtype}")
    if dtype.kind == "f" and values.dtype.kind == "f" and (np.isinf(records) != np.isinf(values)).any():
        raise OverflowError(f"a value is out of the range of {dtype}")
    return records


def _check_strings(values: npt.NDArray[Any], dtype: np.dtype[Any]) -> None:
    """Raise unless a string field of ``dtype`` takes ``values`` by the rule: strings of its
    own kind (numpy would make text of numbers, and encode or decode), none too long for
    it (numpy would cut them short)."""
    kind, theirs = dtype.kind, values.dtype.kind
    if theirs != kind:
        how = _FROM_THE_OTHER_STRING[kind] if theirs in _STRINGS else ""
        raise TypeError(f"{dtype} holds {_STRINGS[kind]}, not {values.dtype} values{how}")
    size, unit = _CHARACTERS[kind]
    room = dtype.itemsize // size
    if values.itemsize > dtype.itemsize and values.size and int(np.char.str_len(values).max()) > room:
        raise OverflowError(f"a value is longer than the {room} {unit} {dtype} holds")


def exact_types(dtype: np.dtype[Any]) -> frozenset[type]:
    """The Python types a plain ``dtype`` takes as they are, by the rule above, from
    numpy's own store (which then still refuses an integer out of range)."""
    if dtype.names is not None:
        return frozenset()
    if dtype.kind in "iu":
        return frozenset({int, bool})
    if dtype.kind == "f":  # a float is exact only in float64: a float32 store would round 1e300 to inf
        return frozenset({int, float, bool}) if dtype.itemsize == 8 else frozenset({int, bool})
    return frozenset()
