"""The header region: the one place that knows the byte layout of a log.

A log named ``NAME`` is one header region ``/NAME`` plus one region per live segment
(see ``_shm.py`` for their names). The header is written in full by the creator before the
magic is stored; after that only ``head``, ``writer_pid``, ``released_ns`` and the slots
ever change, and only the writer changes them (``_writer`` the slots and ``head``, its
claim, ``_claim``, ``writer_pid``, ``released_ns`` and ``held_token``), except that whoever
removes the log stores ``GONE`` in ``head`` once its names are gone (``mark_gone``).
Readers map it read-only and load its words through ``_reader``, ``_snapshot`` (the
refresh's hot path) and ``_info``, at the indices this module gives.

    offset        size  field              written by          read by
    0             8     magic              creator (last)      attach
    8             4     version            creator             attach
    12            4     header_size        creator             attach
    16            8     nonce              creator             segment names, claim
    24            8     retained_capacity  creator             everyone
    32            8     segment_capacity   creator             everyone
    40            8     slot_count         creator             everyone
    48            8     itemsize           creator             attach (checks the dtype)
    56            8     dtype_size         creator             attach
    64            8     head               writer, rollover;   every read (_reader)
                                           remover (GONE)
    72            8     writer_pid         claim               info() only
    80            8     created_ns         creator             info() only
    88            8     released_ns        claim, at release   info() only (0: never)
    96            8     held_token         claim               writer_active (0: none)
    104           24    reserved (zero)    -                   -
    128           32*n  slots[n]           writer              every read (_reader)
        +0        8       epoch            writer, rollover    validated before and after
        +8        8       start            writer, rollover    the position of record 0
        +16       8       count            writer, append      the published prefix
        +24       8       token            writer, rollover    a reader mapping the segment
    128+32*n      d     dtype description  creator             attach
                        (UTF-8 repr of numpy's descr, padded to 8 bytes)

Slot ``s % n`` describes segment ``s`` while its epoch equals ``s``; ``n`` is
``ceil(retained_capacity / segment_capacity) + 1``. Record ``i`` of segment ``s`` is at
position ``start + i``; a segment's start is at least its predecessor's start plus count
(more after ``Writer.skip_to``: positions never written). A segment's region is named
with its ``token`` (``_shm.segment_path``), 64 random bits drawn by the writer when it
made or renamed the region, so nobody can guess, and plant, a segment's name before it
exists (docs/design.md, "Regions"). Integers are little-endian int64
and 8-byte aligned, so each is stored and loaded by one machine instruction
(docs/design.md). Another version (``VERSION`` says what each was) is refused with
VersionMismatchError: every process of a log must run the same release.
"""

from __future__ import annotations

import ast
import mmap
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.lib import format as npformat

from ._errors import CorruptLogError, NotALogError, UnsupportedDtypeError, VersionMismatchError
from ._platform import ACQUIRE, RELEASE, fence

MAGIC = b"ALOGSHM\x00"
VERSION = 3
"""The layout's version: 3 since the held region and the wake-up by atomics (a process of
another release would disagree with this one on both); 2 had no ``held_token``; 1 had
16-byte slots, ``start`` implied by ``seq * segment_capacity``."""

FIXED = np.dtype(
    [
        ("magic", "S8"),
        ("version", "<u4"),
        ("header_size", "<u4"),
        ("nonce", "<u8"),
        ("retained_capacity", "<i8"),
        ("segment_capacity", "<i8"),
        ("slot_count", "<i8"),
        ("itemsize", "<i8"),
        ("dtype_size", "<i8"),
        ("head", "<i8"),
        ("writer_pid", "<i8"),
        ("created_ns", "<i8"),
        ("released_ns", "<i8"),
        ("held_token", "<i8"),
        ("reserved", "<i8", (3,)),
    ]
)
SLOT = np.dtype([("epoch", "<i8"), ("start", "<i8"), ("count", "<i8"), ("token", "<i8")])
assert FIXED.itemsize == 128 and SLOT.itemsize == 32


def _offset(dt: np.dtype[Any], field: str) -> int:
    fields = dt.fields
    assert fields is not None
    return int(fields[field][1])


WORD = 8  # every integer of the header is an int64

# Word indices into the header viewed as int64 (memoryview.cast("q")): the hot paths
# index words directly instead of going through numpy field access.
HEAD_WORD = _offset(FIXED, "head") // WORD
PID_WORD = _offset(FIXED, "writer_pid") // WORD
CREATED_WORD = _offset(FIXED, "created_ns") // WORD
RELEASED_WORD = _offset(FIXED, "released_ns") // WORD
HELD_WORD = _offset(FIXED, "held_token") // WORD
_SLOTS_WORD = FIXED.itemsize // WORD
_WORDS_PER_SLOT = SLOT.itemsize // WORD
_EPOCH = _offset(SLOT, "epoch") // WORD
_START = _offset(SLOT, "start") // WORD
_COUNT = _offset(SLOT, "count") // WORD
_TOKEN = _offset(SLOT, "token") // WORD

NO_SEGMENT = -1  # epoch of a slot that describes no segment (never made, or being retired)
GONE = -2
"""``head`` of a removed log: every read then raises LogNotFoundError, with no cost to the
hot paths (a refresh that finds the head moved takes its slow path, which says why)."""

MAX_POSITION = (1 << 63) - 1
"""Positions are int64: a log's end (one past its last record) is at most this."""
MAX_DTYPE_SIZE = 1 << 16  # a larger description is taken as damage, not parsed
MAX_SEGMENT_BYTES = 1 << 40
MAX_SLOTS = 1 << 20


class Words(Protocol):
    """The header seen as int64 words: a memoryview cast to "q" (or a closed stand-in)."""

    def __getitem__(self, index: int, /) -> int: ...


@dataclass(frozen=True)
class Layout:
    """The immutable part of a header: what every handle needs to know about a log."""

    nonce: int
    retained_capacity: int
    segment_capacity: int
    slot_count: int
    dtype: np.dtype[Any]
    header_size: int

    @property
    def segment_bytes(self) -> int:
        return self.segment_capacity * self.dtype.itemsize

    def epoch_word(self, seq: int) -> int:
        """The header word of the epoch of segment ``seq``'s slot."""
        return _SLOTS_WORD + _WORDS_PER_SLOT * (seq % self.slot_count) + _EPOCH

    def start_word(self, seq: int) -> int:
        """The header word of the start (position of record 0) of segment ``seq``'s slot."""
        return _SLOTS_WORD + _WORDS_PER_SLOT * (seq % self.slot_count) + _START

    def count_word(self, seq: int) -> int:
        """The header word of the published count of segment ``seq``'s slot."""
        return _SLOTS_WORD + _WORDS_PER_SLOT * (seq % self.slot_count) + _COUNT

    def token_word(self, seq: int) -> int:
        """The header word of the token (the random part of its region's name) of segment
        ``seq``'s slot."""
        return _SLOTS_WORD + _WORDS_PER_SLOT * (seq % self.slot_count) + _TOKEN


def slot_count(retained_capacity: int, segment_capacity: int) -> int:
    return -(-retained_capacity // segment_capacity) + 1  # exact ceiling, no float


def check_dtype(dtype: Any) -> np.dtype[Any]:
    """Return ``np.dtype(dtype)`` if its records can live in shared memory, else raise."""
    try:
        dt: np.dtype[Any] = np.dtype(dtype)
    except (TypeError, ValueError) as exc:
        raise UnsupportedDtypeError(f"{dtype!r} is not a numpy dtype: {exc}") from None
    if dt.hasobject:
        raise UnsupportedDtypeError(
            f"dtype {dt} holds Python objects, which cannot live in shared memory; "
            "use fixed-size fields (numbers, 'S'/'U' strings, datetimes)"
        )
    if dt.subdtype is not None:
        raise UnsupportedDtypeError(
            f"dtype {dt} is a sub-array; wrap it in a field, "
            f"e.g. [('values', {dt.subdtype[0].str!r}, {dt.shape})]"
        )
    if dt.itemsize == 0:
        raise UnsupportedDtypeError(f"dtype {dt} has no size; give strings and voids a length")
    try:
        faithful = _parse_dtype(_describe(dt)) == dt
    except (TypeError, ValueError) as exc:  # e.g. overlapping fields
        raise UnsupportedDtypeError(f"dtype {dt} cannot be stored in the header: {exc}") from None
    if not faithful:
        raise UnsupportedDtypeError(f"dtype {dt} cannot be described in the header faithfully")
    return dt


def _describe(dt: np.dtype[Any]) -> bytes:
    return repr(npformat.dtype_to_descr(dt)).encode()


def _parse_dtype(raw: bytes) -> np.dtype[Any]:
    # literal_eval evaluates literals only, never code: a damaged header cannot run anything.
    return np.dtype(npformat.descr_to_dtype(ast.literal_eval(raw.decode())))


def header_size(slots: int, dtype_size: int) -> int:
    return FIXED.itemsize + SLOT.itemsize * slots + -(-dtype_size // WORD) * WORD


def new_layout(nonce: int, retained_capacity: int, segment_capacity: int, dtype: np.dtype[Any]) -> Layout:
    slots = slot_count(retained_capacity, segment_capacity)
    return Layout(
        nonce=nonce,
        retained_capacity=retained_capacity,
        segment_capacity=segment_capacity,
        slot_count=slots,
        dtype=dtype,
        header_size=header_size(slots, len(_describe(dtype))),
    )


def write_header(region: mmap.mmap, layout: Layout, created_ns: int, start: int, token: int) -> None:
    """Fill a zeroed header region; the magic goes last so a half-written one never attaches."""
    descr = _describe(layout.dtype)
    fixed = np.zeros(1, FIXED)
    fixed["version"] = VERSION
    fixed["header_size"] = layout.header_size
    fixed["nonce"] = layout.nonce
    fixed["retained_capacity"] = layout.retained_capacity
    fixed["segment_capacity"] = layout.segment_capacity
    fixed["slot_count"] = layout.slot_count
    fixed["itemsize"] = layout.dtype.itemsize
    fixed["dtype_size"] = len(descr)
    fixed["head"] = 0
    fixed["created_ns"] = created_ns
    slots = np.zeros(layout.slot_count, SLOT)
    slots["epoch"] = NO_SEGMENT
    slots[0] = (0, start, 0, token)  # segment 0 exists from the start, empty, its record 0 at `start`
    body = fixed.tobytes() + slots.tobytes() + descr
    region[len(MAGIC) : len(body)] = body[len(MAGIC) :]
    # Everything above before the magic: pairs with the acquire fence after the magic's load
    # in read_layout().
    fence(RELEASE)
    region[0 : len(MAGIC)] = MAGIC  # last: attach() refuses the region until everything above is there


def read_nonce(region: bytes | mmap.mmap) -> int | None:
    """The nonce of the log whose header begins with ``region`` (a map, or its first bytes),
    or None if it carries no log header."""
    if len(region) < FIXED.itemsize or region[0:8] != MAGIC:
        return None
    at = _offset(FIXED, "nonce")
    return int.from_bytes(region[at : at + WORD], "little")


def mark_gone(region: mmap.mmap) -> None:
    """Store GONE in the head word of the header mapped read-write in ``region`` (which
    must be at least FIXED long), if it carries a log header."""
    if read_nonce(region) is None:
        return
    # One aligned 8-byte store: a reader loads the old head or GONE. The views are
    # temporaries, never locals, so they are gone however this ends (an interrupt too)
    # and the caller can close the map.
    memoryview(region)[: FIXED.itemsize].cast("q")[HEAD_WORD] = GONE


def declared_size(fixed: bytes) -> int:
    """The size of the header whose first ``FIXED.itemsize`` bytes are ``fixed``, as its
    fields declare it (``read_layout`` checks them); ``FIXED.itemsize`` if they declare
    nothing sensible, so that a reader maps no more than a header can be."""
    if len(fixed) < FIXED.itemsize:
        return FIXED.itemsize
    fields = np.frombuffer(fixed[: FIXED.itemsize], FIXED)[0]
    slots, dtype_size = int(fields["slot_count"]), int(fields["dtype_size"])
    if not (0 < slots <= MAX_SLOTS and 0 < dtype_size <= MAX_DTYPE_SIZE):
        return FIXED.itemsize
    return header_size(slots, dtype_size)


def read_layout(region: bytes | mmap.mmap, what: str) -> Layout:
    """Validate a mapped header and return its layout; raise if it is not a sound log header.

    ``what`` names the region in error messages. Every field is checked against the others
    before it is used, so a damaged header raises instead of steering reads out of bounds.
    """
    # Fields are copied out (slicing an mmap copies) before they are checked, so no numpy
    # view pins the mapping: the caller can close it whatever this function raises.
    if len(region) < FIXED.itemsize:
        raise NotALogError(f"{what} is {len(region)} bytes, too small to be a log header")
    magic = region[: len(MAGIC)]
    fence(ACQUIRE)  # the magic before the fields: pairs with the creator's fence in write_header()
    fixed = np.frombuffer(region[: FIXED.itemsize], FIXED)[0]
    if magic != MAGIC:
        raise NotALogError(
            f"{what} is not an atomic-log-shm log (wrong magic); if it is being created "
            "right now, attach again in a moment"
        )
    if int(fixed["version"]) != VERSION:
        raise VersionMismatchError(
            f"{what} has layout version {int(fixed['version'])}; this library reads version "
            f"{VERSION}: use the same atomic-log-shm release in every process"
        )
    retained = int(fixed["retained_capacity"])
    capacity = int(fixed["segment_capacity"])
    slots = int(fixed["slot_count"])
    itemsize = int(fixed["itemsize"])
    dtype_size = int(fixed["dtype_size"])

    def corrupt(detail: str) -> CorruptLogError:
        return CorruptLogError(f"{what} has a damaged header: {detail}")

    if retained <= 0 or capacity <= 0 or capacity * max(itemsize, 1) > MAX_SEGMENT_BYTES:
        raise corrupt(f"capacities {retained}/{capacity} are out of range")
    if slots != slot_count(retained, capacity) or slots > MAX_SLOTS:
        raise corrupt(f"{slots} slots do not match capacities {retained}/{capacity}")
    if not 0 < dtype_size <= MAX_DTYPE_SIZE:
        raise corrupt(f"dtype description of {dtype_size} bytes")
    size = header_size(slots, dtype_size)
    if int(fixed["header_size"]) != size or len(region) < size:
        raise corrupt(f"header size {int(fixed['header_size'])} (expected {size}, mapped {len(region)})")
    start = FIXED.itemsize + SLOT.itemsize * slots
    try:
        dtype = check_dtype(_parse_dtype(region[start : start + dtype_size]))
    except Exception as exc:  # any failure on damaged bytes is damage, whatever its type
        raise corrupt(f"unusable dtype description ({type(exc).__name__})") from None
    if dtype.itemsize != itemsize:
        raise corrupt(f"dtype {dtype} does not match item size {itemsize}")
    return Layout(
        nonce=int(fixed["nonce"]),
        retained_capacity=retained,
        segment_capacity=capacity,
        slot_count=slots,
        dtype=dtype,
        header_size=size,
    )
