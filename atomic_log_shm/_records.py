"""How values become records: the one rule that ``append()`` and ``extend()`` both follow.

A value is stored only if each field takes it without a change of kind or a loss:

    field kind          takes                                         refuses (examples)
    integer (i, u)      int, bool, numpy integer or bool, in range    3.9, 3.0, "7", 2**70
    float (f)           int, float, bool, numpy integer/float/bool    "1.5", 1j, 1e300 into f4
    structured          a tuple (or list) with one value per field,   5.0 (no broadcast), a
                        or a record (np.void) of fitting fields       tuple of the wrong length
    anything else       what numpy casts ``same_kind`` (bool, complex, strings, datetimes)

Numbers are refused before anything is stored, so a refused value leaves the log as it was.

Two ways of applying it, chosen once per dtype. Where the dtype's bytes are exactly a
``struct`` format (little-endian integers and floats, at their offsets), ``struct`` packs
the values straight into the segment: it refuses a float for an integer field, a string for
a number and an out-of-range integer by itself, and is faster than numpy's store of a
structured scalar. Other dtypes go through numpy, with the same rule applied as a cast
(``same_kind``) plus range checks.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

_STRUCT_CODES = {
    ("i", 1): "b", ("i", 2): "h", ("i", 4): "i", ("i", 8): "q",
    ("u", 1): "B", ("u", 2): "H", ("u", 4): "I", ("u", 8): "Q",
    ("f", 2): "e", ("f", 4): "f", ("f", 8): "d",
}  # fmt: skip

PackInto = Callable[..., None]


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
    """``values`` (a sequence of records, or an array) as a 1-d array of ``dtype``; raises
    TypeError, ValueError or OverflowError for anything the rule above refuses."""
    if isinstance(values, np.ndarray):
        return _cast(values, dtype)
    if packer is not None and not isinstance(values, str | bytes):
        pack = packer.pack
        packed = map(pack, values) if dtype.names is None else itertools.starmap(pack, values)
        return np.frombuffer(b"".join(packed), dtype)
    if dtype.names is None:
        return _cast(np.asarray(values), dtype)  # the values' own kind first, then the rule
    records = list(values) if not isinstance(values, list) else values
    for record in records:
        check_record(record, dtype)
    return np.asarray(records, dtype=dtype)


def check_record(value: Any, dtype: np.dtype[Any]) -> None:
    """Raise unless ``value`` is one record of the structured ``dtype`` by the rule above."""
    names = dtype.names
    assert names is not None
    if isinstance(value, np.void):
        _cast(np.asarray(value).reshape(1), dtype)
        return
    if not isinstance(value, tuple | list):
        raise TypeError(f"a record of {len(names)} fields is a tuple, not {type(value).__name__}")
    if len(value) != len(names):
        raise ValueError(f"a record has {len(names)} fields ({', '.join(names)}), not {len(value)}")
    for name, item in zip(names, value, strict=True):
        field: np.dtype[Any] = dtype.fields[name][0]  # type: ignore[index]
        if field.names is not None:
            check_record(item, field)
        elif not field.shape:
            _cast(np.asarray(item).reshape(1), field)


def _cast(values: npt.NDArray[Any], dtype: np.dtype[Any]) -> npt.NDArray[Any]:
    if values.dtype == dtype:
        return values
    records = values.astype(dtype, casting="same_kind")  # TypeError for a change of kind
    if dtype.kind in "iu" and not (
        np.array_equal(records.astype(values.dtype), values) and ((records < 0) == (values < 0)).all()
    ):  # a round trip alone misses uint64 2**63 -> int64 -2**63 -> uint64 2**63
        raise OverflowError(f"a value is out of the range of {dtype}")
    if dtype.kind == "f" and values.dtype.kind == "f" and (np.isinf(records) != np.isinf(values)).any():
        raise OverflowError(f"a value is out of the range of {dtype}")
    return records


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
