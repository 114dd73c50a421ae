"""The ordering audit: every pairing of docs/design.md's "Memory ordering" table, checked
on the paths that run it, on any CPU.

x86-64 keeps stores in order and loads in order, so a release or acquire fence that is
missing changes nothing there, and no test that merely runs the protocol can notice it;
aarch64 would. So this file checks the code, not the CPU. It runs the writer's and the
readers' paths with every shared word they touch passed through a recorder (the header's
words, the atomicshm cells: the count's store, the wait region's ``signal`` and
``waiting``; the writer's record stores, the header bytes the creator writes and ``attach``
reads, and the kernel locks that take part in a pairing), and with every fence recorded
where it is called. A trace is the list of those events in program order, each tagged with
the role that made it (writer, reader, remover: one thread each here, so program order is
the order of the list).

``RULES`` is the table written as "after X, before Y, a fence of at least order Z", and
every trace is checked against every rule of its role, so a new path gets every check. An
access through an atomicshm cell carries its own order, which counts for that access only
(``_kept_by_their_orders``): a release store is a release fence and the store in one, so
it keeps every access before it before itself (a sequentially consistent store or
read-modify-write is one too), never before a later access; and a sequentially consistent
store is kept before a later sequentially consistent load, as if a full fence stood between
those two (the single order of such operations), but not before any other load. An acquire
load's own order is not counted: no pairing of the table rests on one. For the reader, a
load that sees a value it has seen before (the epoch of a slot it already checked, the
head it holds) observes nothing new: the rules that pair with a publication count the load
that first saw its value.

Then each ordering site (found in the source: calls of ``fence``, calls that pass a memory
order, and the calls that take atomicshm's default order, sequentially consistent:
``SEQ_CST_BY_DEFAULT``) is dropped in turn (a fence left out, an access made relaxed), and
some check must fail: a site that no check misses would protect nothing the table names,
or the table would miss a rule. ``SPARE`` names the sites whose order no pairing needs, and
why; each of them must stay uncaught, so the list stays true. ``KNOWN_GAPS`` would hold a
pairing the code does not keep yet, waived where it is known (none is, today).

What it cannot show: that the CPU keeps the order (atomicshm's fences and orders on
aarch64, the kernel's locks and system calls are taken as documented); loads and stores
that bypass the objects recorded here (``read_nonce`` on a fresh map, ``_shm.read_region``:
neither pairs; the futex word as the kernel reads it); paths no test here runs (an
interrupt's ``_resync``, a reader lapped mid-read, the asyncio waker's thread).

Last, no shared word is stored with ``struct.pack_into``: CPython's struct zeroes its
destination before it packs, so a concurrent reader could load 0.
"""

from __future__ import annotations

import ast
import contextlib
import fcntl
import functools
import itertools
import mmap
import os
import pathlib
import signal
import struct
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any, NamedTuple

import numpy as np
import pytest
from atomicshm import ACQ_REL, RELAXED

import atomic_log_shm
from atomic_log_shm import (
    AtomicLog,
    Snapshot,
    Writer,
    _claim,
    _header,
    _platform,
    _reader,
    _segment,
    _shm,
    _wait,
)
from atomic_log_shm._header import (
    CREATED_WORD,
    FIXED,
    GONE,
    HEAD_WORD,
    HELD_WORD,
    MAGIC,
    NO_SEGMENT,
    PID_WORD,
    RELEASED_WORD,
    WORD,
    Layout,
)
from atomic_log_shm._platform import ACQUIRE, RELEASE, SEQ_CST
from atomic_log_shm._reader import Reader

PACKAGE = pathlib.Path(atomic_log_shm.__file__).resolve().parent
DESIGN = PACKAGE.parent / "docs" / "design.md"
ORDER_NAMES = {ACQUIRE: "acquire", RELEASE: "release", ACQ_REL: "acq_rel", SEQ_CST: "seq_cst"}
# What a fence of each order keeps in order (docs/design.md, "The CPU keeps the order the
# fences ask for"): the orders that give at least what a rule needs.
AT_LEAST = {
    ACQUIRE: {ACQUIRE, ACQ_REL, SEQ_CST},
    RELEASE: {RELEASE, ACQ_REL, SEQ_CST},
    SEQ_CST: {SEQ_CST},
}
DEFAULT_ORDER = SEQ_CST  # atomicshm's, for a cell access that passes no order
# The calls that access a cell with that default order: no order argument shows them.
SEQ_CST_BY_DEFAULT = frozenset({"_store_count", "_waiting"})

RETAINED, SEGMENT = 6, 3  # three slots: rollovers retire slots and reuse spares within a few records
SLOT_COUNT = _header.slot_count(RETAINED, SEGMENT)
SLOT_WORDS = ("start", "count", "token")
HEADER_WORDS = frozenset(
    {"head", "pid", "created", "released", "held", "epoch", *SLOT_WORDS, "word0", "fixed"}
)


# --- 1. The trace ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One memory operation (or kernel lock operation) of one role, in program order.

    ``op``: load, store, rmw, fence, lock (a kernel lock taken), look (a kernel lock asked
    about), enter and leave (a call of the function ``what``). ``what``: the word (head,
    epoch, start, count, token, held, signal, waiting, ...), ``magic`` or ``fields`` (header
    bytes), ``record``, the lock. ``source`` tells the mappings of one role apart (each
    handle maps the header anew)."""

    role: str
    op: str
    what: str
    source: int = 0
    slot: int | None = None
    value: int | None = None
    seq: int | None = None  # records: the segment
    lo: int = 0  # records: indices [lo, hi) in the segment
    hi: int = 0
    order: int | None = None  # a fence's; an atomicshm access's own (None: plain, or relaxed)
    site: str = ""  # a fence's or an ordered access's call, "module.py:line"

    def __str__(self) -> str:
        if self.op == "fence":
            return f"{self.role} {ORDER_NAMES[self.order or SEQ_CST]} fence at {self.site}"
        where = f"[{self.slot}]" if self.slot is not None else ""
        if self.what == "record":
            return f"{self.role} {self.op} records [{self.lo}, {self.hi}) of segment {self.seq}"
        value = f" = {self.value}" if self.value is not None else ""
        order = f"{ORDER_NAMES[self.order]} at {self.site}, " if self.order is not None else ""
        return f"{self.role} {self.op} {self.what}{where}{value} ({order}mapping {self.source})"


def _site(frame: FrameType) -> str:
    return f"{os.path.relpath(frame.f_code.co_filename, PACKAGE)}:{frame.f_lineno}"


def _header_names(slot_count: int) -> dict[int, tuple[str, int | None]]:
    """What each header word is, by the indices ``_header`` gives."""
    layout = Layout(0, 1, 1, slot_count, np.dtype(np.int64), 0)  # only slot_count matters here
    names: dict[int, tuple[str, int | None]] = {
        0: ("word0", None),  # the magic, loaded as a word only to learn that a handle is closed
        HEAD_WORD: ("head", None),
        PID_WORD: ("pid", None),
        CREATED_WORD: ("created", None),
        RELEASED_WORD: ("released", None),
        HELD_WORD: ("held", None),
    }
    for k in range(slot_count):
        names[layout.epoch_word(k)] = ("epoch", k)
        names[layout.start_word(k)] = ("start", k)
        names[layout.count_word(k)] = ("count", k)
        names[layout.token_word(k)] = ("token", k)
    return names


_SLOT_COUNT_WORD = int(FIXED.fields["slot_count"][1]) // WORD
# Functions whose calls the trace marks (enter, leave): rules and gaps that hold within them.
MARKED = ((Reader, "retained"), (Reader, "end"), (Snapshot, "_refresh_incremental"))


class Recorder:
    """Collects the events of the roles acting now (``acting``) and drops the order of the
    sites in ``neutralised``; ``reached`` is every ordering site that was called."""

    def __init__(self, neutralised: frozenset[str] = frozenset()) -> None:
        self.events: list[Event] = []
        self.reached: set[str] = set()
        self.neutralised = neutralised
        self.role: str | None = None
        self.sources = itertools.count(1)

    @contextlib.contextmanager
    def acting(self, role: str) -> Iterator[None]:
        self.role = role
        try:
            yield
        finally:
            self.role = None

    def add(self, op: str, what: str, **fields: Any) -> None:
        if self.role is not None:
            self.events.append(Event(self.role, op, what, **fields))

    def ordered(self, frame: FrameType, order: int) -> tuple[int, str]:
        """The order that the call in ``frame`` gets (``order``, or RELAXED if its site is
        neutralised), and its site."""
        if order == RELAXED:
            return RELAXED, ""
        site = _site(frame)
        if self.role is not None:
            self.reached.add(site)
        return (RELAXED if site in self.neutralised else order), site

    def install(self, patch: pytest.MonkeyPatch) -> None:
        """Put the recorder between the library and shared memory, for the life of ``patch``."""
        rec = self
        real_fence = _platform.fence

        def fence(order: int) -> None:
            kept, site = rec.ordered(sys._getframe(1), order)
            if kept != RELAXED:
                rec.add("fence", "fence", order=kept, site=site)
                real_fence(kept)

        patched = [m for n, m in sorted(sys.modules.items()) if n.startswith("atomic_log_shm.")]
        for module in patched:
            if getattr(module, "fence", None) is real_fence:
                patch.setattr(module, "fence", fence)

        real_reader_init, real_reader_close = Reader.__init__, Reader.close

        def reader_init(reader: Reader, name: str, nonce: int | None = None) -> None:
            real_reader_init(reader, name, nonce)
            names = _header_names(reader.layout.slot_count)
            reader.words = _Words(rec, reader.words, names, next(rec.sources))

        def reader_close(reader: Reader) -> None:
            if isinstance(reader.words, _Words):
                reader.words = reader.words.real
            real_reader_close(reader)

        patch.setattr(Reader, "__init__", reader_init)
        patch.setattr(Reader, "close", reader_close)

        def marked(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(real)
            def call(*args: Any) -> Any:
                rec.add("enter", name)
                try:
                    return real(*args)
                finally:
                    rec.add("leave", name)

            return call

        for cls, function in MARKED:
            patch.setattr(cls, function, marked(f"{cls.__name__}.{function}", getattr(cls, function)))

        real_claim_init = _claim.Claim.__init__

        def claim_init(claim: _claim.Claim, *args: Any) -> None:
            real_claim_init(claim, *args)
            names = _header_names(claim.words[_SLOT_COUNT_WORD])
            claim.words = _Words(rec, claim.words, names, next(rec.sources))
            claim.view = _AtomicView(claim.view, claim.words)

        patch.setattr(_claim.Claim, "__init__", claim_init)

        real_wait_init = _wait.WaitRegion.__init__

        def wait_init(region: _wait.WaitRegion, *args: Any) -> None:
            real_wait_init(region, *args)
            source = next(rec.sources)
            region.signal = _Cell(rec, region.signal, "signal", source)
            region.waiting = _Cell(rec, region.waiting, "waiting", source)

        patch.setattr(_wait.WaitRegion, "__init__", wait_init)

        real_enter = Writer._enter_segment

        def enter_segment(writer: Writer, seq: int, *args: Any) -> None:
            real_enter(writer, seq, *args)
            words = writer._claim.words
            if isinstance(words, _Words):
                slot = seq % writer._layout.slot_count
                writer._map = _Records(rec, writer._map, seq, slot, writer._itemsize, words.source)
                writer._data = _Records(rec, writer._data, seq, slot, 1, words.source)

        patch.setattr(Writer, "_enter_segment", enter_segment)

        real_write_header, real_read_layout = _header.write_header, _header.read_layout
        patch.setattr(_header, "write_header", lambda region, *a: real_write_header(_Bytes(rec, region), *a))
        patch.setattr(
            _reader, "read_layout", lambda region, what: real_read_layout(_Bytes(rec, region), what)
        )

        def pread(fd: int, size: int, offset: int) -> bytes:
            data = os.pread(fd, size, offset)
            rec.add("load", _part(offset, size))
            return data

        patch.setattr(_reader, "os", _Module(os, pread=pread))

        real_mark_gone = _header.mark_gone

        def mark_gone(region: mmap.mmap) -> None:
            real_mark_gone(region)
            at = HEAD_WORD * WORD
            rec.add("store", "head", value=int.from_bytes(region[at : at + WORD], "little", signed=True))

        patch.setattr(_header, "mark_gone", mark_gone)

        def flock(fd: int, operation: int) -> None:
            fcntl.flock(fd, operation)
            if operation & fcntl.LOCK_EX:
                rec.add("lock", "claim")

        patch.setattr(_claim, "fcntl", _Module(fcntl, flock=flock))

        def lock_exclusive(fd: int) -> bool:
            taken = _shm.lock_exclusive(fd)
            rec.add("lock", "held-lock")
            return taken

        patch.setattr(_claim, "_shm", _Module(_shm, lock_exclusive=lock_exclusive))

        def lock_shared(fd: int) -> bool:
            taken = _shm.lock_shared(fd)
            if taken:
                rec.add("lock", "shared-lock")
            return taken

        def unshared(fd: int) -> bool:
            rec.add("look", "lock-test")
            return _shm.unshared(fd)

        patch.setattr(_segment, "_shm", _Module(_shm, lock_shared=lock_shared, unshared=unshared))

        def held(name: str, nonce: int, token: int) -> bool:
            rec.add("look", "held-look")
            return _claim.held(name, nonce, token)

        patch.setattr(_reader, "_claim", _Module(_claim, held=held))


class _Module:
    """A module as one other module sees it (through its global name), some functions replaced."""

    def __init__(self, real: Any, **replaced: Any) -> None:
        self.__dict__.update(replaced)
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class _Words:
    """Shared int64 words (a memoryview cast to "q"), passed through, each load and store
    recorded with the name of the word."""

    def __init__(
        self, rec: Recorder, real: Any, names: dict[int, tuple[str, int | None]], source: int
    ) -> None:
        self.rec, self.real, self.names, self.source = rec, real, names, source

    def __getitem__(self, index: int) -> int:
        value = self.real[index]
        self.record("load", index, value)
        return int(value)

    def __setitem__(self, index: int, value: int) -> None:
        self.real[index] = value
        self.record("store", index, value)

    def record(self, op: str, index: int, value: int) -> None:
        what, slot = self.names.get(index, ("fixed", None))
        self.rec.add(op, what, source=self.source, slot=slot, value=int(value))

    def __getattr__(self, name: str) -> Any:  # release(), ...
        return getattr(self.real, name)


class _AtomicView:
    """The claim's ``atomicshm.AtomicView``: the cells it makes (the count's) recorded as
    the header words at their offsets."""

    def __init__(self, real: Any, words: _Words) -> None:
        self.real, self.words = real, words

    def cell_u64(self, offset: int) -> _Cell:
        what, slot = self.words.names.get(offset // WORD, ("fixed", None))
        return _Cell(self.words.rec, self.real.cell_u64(offset), what, self.words.source, slot)

    def __getattr__(self, name: str) -> Any:  # close(), address, ...
        return getattr(self.real, name)


class _Cell:
    """An atomicshm cell (one shared word, accessed with a memory order), passed through:
    each access recorded with its own order, and made relaxed where its site is dropped."""

    def __init__(self, rec: Recorder, real: Any, what: str, source: int, slot: int | None = None) -> None:
        self.rec, self.real, self.what, self.source, self.slot = rec, real, what, source, slot

    def _record(self, op: str, value: int, order: int, site: str) -> None:
        own = None if order == RELAXED else order
        self.rec.add(op, self.what, source=self.source, slot=self.slot, value=value, order=own, site=site)

    def load(self, order: int = DEFAULT_ORDER) -> int:
        kept, site = self.rec.ordered(sys._getframe(1), order)
        value = int(self.real.load(kept))
        self._record("load", value, kept, site)
        return value

    def store(self, value: int, order: int = DEFAULT_ORDER) -> None:
        kept, site = self.rec.ordered(sys._getframe(1), order)
        self.real.store(value, kept)
        self._record("store", value, kept, site)

    def fetch_add(self, value: int, order: int = DEFAULT_ORDER) -> int:
        kept, site = self.rec.ordered(sys._getframe(1), order)
        old = int(self.real.fetch_add(value, kept))
        self._record("rmw", old + value, kept, site)
        return old

    def __getattr__(self, name: str) -> Any:  # address, offset, ...
        return getattr(self.real, name)


class _Records:
    """The writer's head segment (its mapping, in bytes of ``size`` per record, or its
    array), passed through; each store recorded as records of segment ``seq``."""

    def __init__(self, rec: Recorder, real: Any, seq: int, slot: int, size: int, source: int) -> None:
        self.rec, self.real, self.seq, self.slot, self.size, self.source = rec, real, seq, slot, size, source

    def __setitem__(self, key: int | slice, value: Any) -> None:
        self.real[key] = value
        lo, hi = (key.start // self.size, key.stop // self.size) if isinstance(key, slice) else (key, key + 1)
        self.rec.add("store", "record", source=self.source, slot=self.slot, seq=self.seq, lo=lo, hi=hi)

    def __getitem__(self, key: Any) -> Any:
        return self.real[key]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def _part(offset: int, size: int) -> str:
    return "magic" if (offset, size) == (0, len(MAGIC)) else "fields"


class _Bytes:
    """A header region's bytes, passed through; each slice recorded as the magic or fields."""

    def __init__(self, rec: Recorder, real: Any) -> None:
        self.rec, self.real = rec, real

    def __len__(self) -> int:
        return len(self.real)

    def __getitem__(self, key: slice) -> bytes:
        data: bytes = self.real[key]
        self.rec.add("load", _part(key.start or 0, len(data)))
        return data

    def __setitem__(self, key: slice, data: bytes) -> None:
        self.real[key] = data
        self.rec.add("store", _part(key.start or 0, len(data)))


# --- 2. The rules: docs/design.md's table, as "after X, before Y, a fence of order Z" -------


Match = Callable[[Event], bool]


def _matches(op: str) -> Callable[..., Match]:
    def matcher(*whats: str, value: Callable[[int], bool] | None = None) -> Match:
        def match(e: Event) -> bool:
            return e.op == op and e.what in whats and (value is None or value(e.value or 0))

        return match

    return matcher


loads, stores, rmw, locks, looks = (_matches(op) for op in ("load", "store", "rmw", "lock", "look"))


def _by_slot(e: Event) -> Hashable:
    return (e.source, e.slot)


def _by_mapping(e: Event) -> Hashable:
    return e.source


def _anywhere(e: Event) -> Hashable:
    return None


WRITERS = frozenset({"writer", "remover"})
READERS = frozenset({"reader"})


@dataclass(frozen=True)
class Rule:
    """After an event that ``after`` matches, before the next that ``before`` matches with
    the same ``key``, a fence of at least ``order``, in the same role (or the two accesses'
    own orders: ``_kept_by_their_orders``).

    With ``first_sight``, only a load that sees a value of its word for the first time
    counts as X: the load that observes a publication (epochs and the head only grow, so a
    value seen again was published before the first sight, and fenced after it).
    ``within``: the rule holds inside each call of that function only (one of ``MARKED``).
    ``row``: the row of docs/design.md's table of pairings (its "publishes" column), if any."""

    name: str
    row: str | None
    roles: frozenset[str]
    after: Match
    before: Match
    order: int
    key: Callable[[Event], Hashable] = _anywhere
    first_sight: bool = False
    within: str | None = None


EPOCH_SET = stores("epoch", value=lambda v: v >= 0)
EPOCH_RETIRED = stores("epoch", value=lambda v: v == NO_SEGMENT)
HEAD_SET = stores("head", value=lambda v: v >= 0)
GONE_MARK = stores("head", value=lambda v: v == GONE)
WAITING_CLEARED = stores("waiting", value=lambda v: v == 0)
WAITING_SET = stores("waiting", value=lambda v: v == 1)
COVERING = "count before the records it covers"  # checked by _check_covering: see there
TO_A_WAITER = "the count, to a waiter"  # the Dekker pairing of "Waiting: why no wake-up is lost"

# fmt: off
RULES = [
    # The writer (and the remover): after X, before the store that publishes, a fence.
    #    name                                        table row
    #    after X                  before Y                 order    key
    Rule("records before their count",               "count", WRITERS,
         stores("record"),        stores("count"),         RELEASE, _by_slot),
    Rule("slot words before its epoch",              "epoch `s`", WRITERS,
         stores(*SLOT_WORDS),     EPOCH_SET,               RELEASE, _by_slot),
    Rule("retirement before the slot's next words",  "the slot's next values", WRITERS,
         EPOCH_RETIRED,           stores(*SLOT_WORDS),     RELEASE, _by_slot),
    Rule("slot before the head",                     "head", WRITERS,
         stores("epoch", *SLOT_WORDS), HEAD_SET,           RELEASE, _by_mapping),
    Rule("retirement before the reuse test",         "the region's reuse", WRITERS,
         stores("epoch"),         looks("lock-test"),      SEQ_CST),
    Rule("fields before the magic",                  "magic", WRITERS,
         stores("fields"),        stores("magic"),         RELEASE),
    Rule("held region locked before its token",      "`held_token`", WRITERS,
         locks("held-lock"),      stores("held"),          RELEASE),
    # W: the count store before the load of `waiting` (P before L): both sequentially
    # consistent, or a full fence between.
    Rule("count before the waiting load",            TO_A_WAITER, WRITERS,
         stores("count"),         loads("waiting"),        SEQ_CST),
    Rule("waiting cleared before the bump",          "signal", WRITERS,
         WAITING_CLEARED,         rmw("signal"),           SEQ_CST, _by_mapping),
    Rule("claim before the header's words",          "the header", WRITERS,
         locks("claim"),          loads(*HEADER_WORDS),    ACQUIRE),
    # "Waiting" and "Lifetime and cleanup": the remover's mark before its wake-up.
    Rule("gone mark before the bump",                None, WRITERS,
         GONE_MARK,               rmw("signal"),           SEQ_CST),
    # The reader: after the load that observes, a fence, then what depends on it.
    Rule(COVERING,                                   "count", READERS,
         loads("count"),          loads("record"),         ACQUIRE),
    Rule("epoch before the slot's words",            "epoch `s`", READERS,
         loads("epoch"),          loads(*SLOT_WORDS),      ACQUIRE, _by_slot, first_sight=True),
    Rule("slot's words before the epoch's re-check", "the slot's next values", READERS,
         loads(*SLOT_WORDS),      loads("epoch"),          ACQUIRE, _by_slot),
    Rule("head before the slots",                    "head", READERS,
         loads("head"),           loads("epoch"),          ACQUIRE, _by_mapping, first_sight=True),
    Rule("lock before the epoch's re-check",         "the region's reuse", READERS,
         locks("shared-lock"),    loads("epoch"),          SEQ_CST),
    Rule("magic before the fields",                  "magic", READERS,
         loads("magic"),          loads("fields"),         ACQUIRE),
    Rule("held token before the look at its region", "`held_token`", READERS,
         loads("held"),           looks("held-look"),      ACQUIRE),
    # The waiter: the flag (W2), a full fence (W3), then its last look at the log (W4).
    Rule("waiting flag before the last look",        TO_A_WAITER, READERS,
         WAITING_SET,             loads(*HEADER_WORDS),    SEQ_CST),
    # The signal load (W1) before the flag (W2): the table's "`waiting` store, a release".
    Rule("signal before the waiting flag",           "signal", READERS,
         loads("signal"),         stores("waiting"),       RELEASE, _by_mapping),
    # Reader.retained() loads the head again after the slots, to return them "as one reading".
    Rule("slots before the head's re-check",         None, READERS,
         loads("epoch"),          loads("head"),           ACQUIRE, _by_mapping, within="Reader.retained"),
]
# fmt: on


@dataclass(frozen=True)
class Gap:
    """A pairing of ``rule`` that the code does not keep yet where its Y is inside a call of
    ``within`` (one of ``MARKED``): waived there, with the reason, until its fence is in;
    the mutation test then requires that fence to be caught."""

    rule: str
    within: str
    why: str


KNOWN_GAPS: list[Gap] = []

# Ordering sites whose order no pairing of the table needs: (module, call) -> why. Each must
# stay uncaught when dropped (else it goes from here), every other site must be caught.
SPARE = {
    ("_wait.py", "self.signal.load(SEQ_CST)"): (
        "the waiting store's release keeps this load before it (the table's signal row: "
        "signal load; waiting store, a release), and the full fence after that store keeps "
        "it before the look"
    ),
    ("_wait.py", "self.waiting.store(0, SEQ_CST)"): (
        "the clear must come before the bump, which the bump's own order keeps; nothing "
        "before the clear needs to be seen before it"
    ),
}


def _fences(rule: Rule, e: Event) -> bool:
    return e.op == "fence" and e.order in AT_LEAST[rule.order]


def _kept_by_their_orders(rule: Rule, x: Event, y: Event) -> bool:
    """Whether X and Y keep the rule's order by their own: Y a store or read-modify-write
    of at least the rule's order (a release store is a release fence and the store in one,
    for that store only), or X a store and Y a load, both sequentially consistent (kept in
    order as by a full fence between those two only: on x86-64 an ``xchg`` then a ``mov``,
    on aarch64 an ``stlr`` then an ``ldar``)."""
    if y.op in ("store", "rmw") and y.order is not None and y.order in AT_LEAST[rule.order]:
        return True
    return x.op in ("store", "rmw") and y.op in ("load", "rmw") and x.order == y.order == SEQ_CST


def _check_rule(rule: Rule, events: list[Event]) -> tuple[list[tuple[Event, str]], int]:
    """The pairs of ``rule`` that nothing keeps in order (Y, what is wrong), and how many
    pairs there were."""
    pending: dict[Hashable, tuple[int, Event]] = {}  # X not yet followed by a fence, by key
    seen: set[Hashable] = set()  # keys of every X so far
    sighted: set[tuple[Any, ...]] = set()
    problems, pairs = [], 0
    for i, e in enumerate(events):
        if e.op == "fence":
            if _fences(rule, e):
                pending.clear()
            continue
        if rule.before(e):
            key = rule.key(e)
            pairs += key in seen
            if key in pending and not _kept_by_their_orders(rule, pending[key][1], e):
                j, x = pending.pop(key)
                problems.append(
                    (e, f"event {j} ({x}), then event {i} ({e}), no {ORDER_NAMES[rule.order]} fence between")
                )
        if rule.after(e):
            if rule.first_sight:
                word = (e.source, e.what, e.slot, e.value)
                if word in sighted:
                    continue
                sighted.add(word)
            pending[rule.key(e)] = (i, e)
            seen.add(rule.key(e))
    return problems, pairs


def _check_covering(events: list[Event]) -> tuple[list[tuple[Event, str]], int]:
    """``COVERING``: each record a reader loads, after an acquire fence that follows the
    count load that first covered it (a count of its segment: of its slot, loaded while the
    epoch last loaded from that slot named the segment). The count loads that only see
    what an earlier one saw (the refresh that finds nothing new) need no fence."""
    epoch: dict[tuple[int, int | None], int | None] = {}
    counts: dict[tuple[int, int | None], list[tuple[int, int]]] = defaultdict(list)  # (value, at)
    last_fence = -1
    problems, pairs = [], 0
    for i, e in enumerate(events):
        if e.op == "fence" and e.order in AT_LEAST[ACQUIRE]:
            last_fence = i
        elif e.op == "load" and e.what == "epoch":
            epoch[(e.source, e.slot)] = e.value
        elif e.op == "load" and e.what == "count":
            counts[(e.source, epoch.get((e.source, e.slot)))].append((e.value or 0, i))
        elif e.op == "load" and e.what == "record":
            covered = 0
            for value, at in counts[(e.source, e.seq)]:
                if value > covered:
                    if value > e.lo and covered < e.hi:  # it first covered some of these records
                        pairs += 1
                        if last_fence < at:
                            problems.append(
                                (
                                    e,
                                    f"event {at} (count {value} of segment {e.seq}), then event {i} ({e}), "
                                    "no acquire fence between",
                                )
                            )
                    covered = value
            if covered < e.hi:
                problems.append((e, f"event {i} ({e}): records no count load covered"))
    return problems, pairs


def _calls(events: list[Event], function: str) -> list[list[Event]]:
    """The events inside each call of ``function``, one list per call."""
    calls: list[list[Event]] = []
    depth = 0
    for e in events:
        if e.what == function and e.op in ("enter", "leave"):
            depth += 1 if e.op == "enter" else -1
            if e.op == "enter" and depth == 1:
                calls.append([])
        elif depth:
            calls[-1].append(e)
    return calls


def check(
    events: list[Event], rules: list[Rule] = RULES, gaps: list[Gap] = KNOWN_GAPS
) -> tuple[list[tuple[str, str]], Counter[str]]:
    """Every pairing of ``rules`` in ``events`` but the ``gaps``: the problems (the rule's
    name, what is wrong), and how many pairs of each rule the events hold."""
    problems: list[tuple[str, str]] = []
    pairs: Counter[str] = Counter()
    for role in sorted({e.role for e in events}):
        mine = [e for e in events if e.role == role]
        for rule in rules:
            if role not in rule.roles:
                continue
            waived = {
                id(e)
                for gap in gaps
                if gap.rule == rule.name
                for call in _calls(mine, gap.within)
                for e in call
            }
            for part in _calls(mine, rule.within) if rule.within else [mine]:
                found, n = _check_covering(part) if rule.name == COVERING else _check_rule(rule, part)
                problems += [
                    (rule.name, f"{rule.name}: [{role}] {p}") for y, p in found if id(y) not in waived
                ]
                pairs[rule.name] += n
    return problems, pairs


# --- 3. The paths ---------------------------------------------------------------------------

Names = Callable[[], str]


def _claimed(rec: Recorder, names: Names) -> tuple[Writer, AtomicLog]:
    """A new log (made and claimed as the writer), its records int64 positions."""
    with rec.acting("writer"):
        return AtomicLog.new_claimed(name=names(), retained=RETAINED, segment=SEGMENT, dtype=np.int64)


def _append(rec: Recorder, writer: Writer, count: int) -> None:
    with rec.acting("writer"):
        for _ in range(count):
            writer.append(writer.end)


def _shown(rec: Recorder, reader: Reader, seq: int, values: Any, lo: int, first: int) -> None:
    """The caller's loads of records ``[lo, lo + len(values))`` of segment ``seq`` (a
    snapshot's or a poll's arrays, which view shared memory), recorded and checked: each
    record holds its position, ``first`` for the first one."""
    with rec.acting("reader"):
        rec.add("load", "record", source=reader.words.source, seq=seq, lo=lo, hi=lo + len(values))
        assert [int(v) for v in values] == list(range(first, first + len(values)))


def _read(rec: Recorder, snap: atomic_log_shm.Snapshot) -> None:
    for chunk in snap.chunks():
        _shown(rec, snap._reader, chunk.sequence, chunk.values, 0, chunk.start)


def _refreshed(rec: Recorder, snap: atomic_log_shm.Snapshot) -> None:
    with rec.acting("reader"):
        snap.refresh()
    _read(rec, snap)


def _snapshot(rec: Recorder, log: AtomicLog) -> atomic_log_shm.Snapshot:
    with rec.acting("reader"):
        snap = log.snapshot()
    _read(rec, snap)
    return snap


def path_append(rec: Recorder, names: Names) -> None:
    writer, log = _claimed(rec, names)
    with log, writer:
        snap = _snapshot(rec, log)
        _append(rec, writer, 2)  # the fast path: room in the head
        _refreshed(rec, snap)


def path_append_rollover(rec: Recorder, names: Names) -> None:
    writer, log = _claimed(rec, names)
    with log, writer:
        snap = _snapshot(rec, log)
        # Past the window and one more: slots retired, a spare made and tested for reuse.
        _append(rec, writer, SEGMENT * (SLOT_COUNT + 2) + 1)
        _refreshed(rec, snap)


def path_extend(rec: Recorder, names: Names) -> None:
    writer, log = _claimed(rec, names)
    with log, writer:
        snap = _snapshot(rec, log)
        with rec.acting("writer"):
            writer.extend(np.arange(SEGMENT - 1, dtype=np.int64))  # fits in the head
        _refreshed(rec, snap)


def path_extend_across(rec: Recorder, names: Names) -> None:
    writer, log = _claimed(rec, names)
    with log, writer:
        snap = _snapshot(rec, log)
        with rec.acting("writer"):
            writer.extend(np.arange(SEGMENT * (SLOT_COUNT + 2) - 1, dtype=np.int64))
        _refreshed(rec, snap)


def path_skip_to(rec: Recorder, names: Names) -> None:
    writer, log = _claimed(rec, names)
    with log, writer:
        snap = _snapshot(rec, log)
        _append(rec, writer, 1)
        for _ in range(SLOT_COUNT + 1):  # every slot retired once, and spares tested
            with rec.acting("writer"):
                writer.skip_to(writer.end + SEGMENT + 1)
            _append(rec, writer, 1)
        _refreshed(rec, snap)


def _resumed(rec: Recorder, log: AtomicLog) -> None:
    """A new writer claims the log and appends: it goes on from what the header says."""
    with rec.acting("writer"):
        writer = log.try_claim_writer()
    assert writer is not None
    with writer:
        end = writer.end
        _append(rec, writer, SEGMENT + 1)
        snap = _snapshot(rec, log)
        assert snap.end == end + SEGMENT + 1


def path_claim_after_close(rec: Recorder, names: Names) -> None:
    writer, log = _claimed(rec, names)
    with log:
        with writer:
            _append(rec, writer, SEGMENT + 1)
        _resumed(rec, log)


def path_claim_after_crash(rec: Recorder, names: Names) -> None:
    with rec.acting("writer"):
        log = AtomicLog.new(name=names(), retained=RETAINED, segment=SEGMENT, dtype=np.int64)
    with log:
        pid = os.fork()
        if pid == 0:  # the writer that dies: it appends (rolling over once), then SIGKILL
            try:
                writer = log.try_claim_writer()
                assert writer is not None
                for _ in range(SEGMENT + 1):
                    writer.append(writer.end)
                os.kill(os.getpid(), signal.SIGKILL)
            finally:
                os._exit(1)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
        _resumed(rec, log)


def path_refresh_grown(rec: Recorder, names: Names) -> None:
    writer, log = _claimed(rec, names)
    with log, writer:
        _append(rec, writer, 1)
        snap = _snapshot(rec, log)
        _refreshed(rec, snap)  # nothing new: the two loads of the hot path
        _append(rec, writer, 1)
        _refreshed(rec, snap)  # the same head, grown
        assert len(snap) == 2


def path_refresh_new_segments(rec: Recorder, names: Names) -> None:
    writer, log = _claimed(rec, names)
    with log, writer:
        _append(rec, writer, 1)
        snap = _snapshot(rec, log)
        _append(rec, writer, SEGMENT * (SLOT_COUNT - 2) + 1)  # the head moves on by less than the window
        _refreshed(rec, snap)
        assert snap.missed == 0 and len(snap) == SEGMENT * (SLOT_COUNT - 2) + 2


def path_refresh_rebuild(rec: Recorder, names: Names) -> None:
    writer, log = _claimed(rec, names)
    with log, writer:
        _append(rec, writer, 1)
        snap = _snapshot(rec, log)
        _append(rec, writer, SEGMENT * (SLOT_COUNT + 1))  # beyond the window: rebuilt
        _refreshed(rec, snap)
        assert snap.missed > 0


def _polled(rec: Recorder, cursor: atomic_log_shm.Cursor, end: int) -> None:
    """A poll, and the loads of the records it hands out, up to ``end``."""
    with rec.acting("reader"):
        batch = cursor.poll()
    position = batch.start
    for array in batch.arrays:  # where each array is in its segment: the snapshot's chunks say
        chunk = next(c for c in cursor._snapshot.chunks() if c.start <= position < c.start + len(c))
        _shown(rec, cursor._reader, chunk.sequence, array, position - chunk.start, position)
        position += len(array)
    assert position == end


def path_cursor_poll(rec: Recorder, names: Names) -> None:
    writer, log = _claimed(rec, names)
    with log, writer:
        with rec.acting("reader"):
            cursor = log.cursor()
        for step in (1, 2, SEGMENT, SEGMENT * 2):
            _append(rec, writer, step)
            _polled(rec, cursor, writer.end)


def _attached(rec: Recorder, log: AtomicLog) -> AtomicLog:
    with rec.acting("reader"):
        return AtomicLog.attach(log.name)


def _slot_and_records(rec: Recorder, reader: Reader, seq: int) -> None:
    with rec.acting("reader"):
        slot = reader.slot(seq)
        array = reader.segment(seq)
    assert slot is not None and array is not None
    start, count = slot
    _shown(rec, reader, seq, array[:count], 0, start)


def path_reader_slot(rec: Recorder, names: Names) -> None:
    writer, log = _claimed(rec, names)
    with log, writer:
        _append(rec, writer, SEGMENT + 1)
        with _attached(rec, log) as other:
            for seq in (writer._seq - 1, writer._seq):
                _slot_and_records(rec, other._reader, seq)


def path_reader_segment(rec: Recorder, names: Names) -> None:
    writer, log = _claimed(rec, names)
    with log, writer:
        _append(rec, writer, SEGMENT + 1)
        with _attached(rec, log) as other:
            reader = other._reader
            with rec.acting("reader"):  # a first mapping, by a handle that has read no slot yet
                assert reader.segment(writer._seq) is not None
            _slot_and_records(rec, reader, writer._seq)


WAIT, WAITS = 0.02, 100  # seconds a follower waits for news that does not come; times it tries
LATENCY = 0.02  # a follower's freshness budget (seconds): it looks at the log this often


def _waited(rec: Recorder, log: AtomicLog) -> None:
    """A follower waits for news that does not come: it loads signal, sets ``waiting``,
    fences, looks at the log, sleeps on the futex until its timeout."""
    with rec.acting("reader"):
        cursor = log.cursor("newest")
    for _ in range(WAITS):
        with rec.acting("reader"):
            assert not cursor.wait(timeout=WAIT, linger=0)
        # On a busy machine the timeout may run out before the waiter got to the futex.
        if any(stores("waiting")(e) for e in rec.events):
            return
    raise AssertionError(f"{WAITS} waits of {WAIT} s never got as far as the futex")


def path_wait(rec: Recorder, names: Names) -> None:
    writer, log = _claimed(rec, names)
    with log, writer:
        _waited(rec, log)


def path_wake(rec: Recorder, names: Names) -> None:
    writer, log = _claimed(rec, names)
    with log, writer:
        _waited(rec, log)
        _append(rec, writer, 1)  # finds `waiting` set: clears it, bumps signal, wakes


def path_wait_paced(rec: Recorder, names: Names) -> None:
    """A follower with a freshness budget: its looks are ``Reader.end()``'s loads (the
    first of them sees a new head), and it never asks to be woken."""
    writer, log = _claimed(rec, names)
    with log, writer:
        with rec.acting("reader"):
            cursor = log.cursor("newest")
        _append(rec, writer, SEGMENT + 1)  # a new head, which the follower's next look sees first
        with rec.acting("reader"):
            assert cursor.wait(timeout=None, latency=LATENCY)
        _polled(rec, cursor, writer.end)
        with rec.acting("reader"):  # no news: it looks every LATENCY seconds until the timeout
            assert not cursor.wait(timeout=2 * LATENCY, latency=LATENCY)
    touched = [str(e) for e in rec.events if e.role == "reader" and e.what in ("signal", "waiting")]
    assert not touched, f"a follower with a budget used the wait region: {touched}"
    looks = _calls([e for e in rec.events if e.role == "reader"], "Reader.end")
    assert len(looks) >= 2, f"{len(looks)} looks of the paced follower went through Reader.end()"


def path_unlink(rec: Recorder, names: Names) -> None:
    writer, log = _claimed(rec, names)
    with log, writer:
        _append(rec, writer, 1)
        with rec.acting("remover"):
            log.unlink()  # marks the header gone, then wakes


def path_remove_log(rec: Recorder, names: Names) -> None:
    writer, log = _claimed(rec, names)
    with log, writer:
        _append(rec, writer, 1)
        with rec.acting("remover"):
            atomic_log_shm.remove_log(log.name)


def path_info(rec: Recorder, names: Names) -> None:
    writer, log = _claimed(rec, names)
    with log, writer:
        _append(rec, writer, 1)
        with rec.acting("reader"):
            assert log.info().writer_active


def path_attach(rec: Recorder, names: Names) -> None:
    writer, log = _claimed(rec, names)  # the creator writes the header, the magic last
    with log, writer, _attached(rec, log) as other:  # magic, then fields
        _snapshot(rec, other)


class AuditPath(NamedTuple):
    run: Callable[[Recorder, Names], None]
    pairings: tuple[str, ...]  # the rules the path must run at least once


PUBLISH = ("records before their count", "count before the waiting load")  # every publication
PATHS = {
    "append": AuditPath(path_append, (*PUBLISH, "count before the records it covers")),
    "append, rolling over": AuditPath(
        path_append_rollover,
        (
            *PUBLISH,
            "retirement before the slot's next words",
            "slot words before its epoch",
            "slot before the head",
            "retirement before the reuse test",
        ),
    ),
    "extend, fits": AuditPath(path_extend, (*PUBLISH, "count before the records it covers")),
    "extend, across segments": AuditPath(
        path_extend_across, (*PUBLISH, "slot before the head", "retirement before the reuse test")
    ),
    "skip_to": AuditPath(
        path_skip_to,
        (
            "count before the waiting load",
            "slot words before its epoch",
            "slot before the head",
            "retirement before the reuse test",
        ),
    ),
    "claim after a close": AuditPath(
        path_claim_after_close, ("claim before the header's words", "held region locked before its token")
    ),
    "claim after a crash": AuditPath(
        path_claim_after_crash, ("claim before the header's words", "held region locked before its token")
    ),
    "refresh, same head grown": AuditPath(
        path_refresh_grown, ("count before the records it covers", "slot's words before the epoch's re-check")
    ),
    "refresh, new segments": AuditPath(
        path_refresh_new_segments, ("head before the slots", "epoch before the slot's words")
    ),
    "refresh, rebuilt": AuditPath(
        path_refresh_rebuild, ("head before the slots", "lock before the epoch's re-check")
    ),
    "Cursor.poll": AuditPath(
        path_cursor_poll, ("count before the records it covers", "head before the slots")
    ),
    "Reader.slot": AuditPath(
        path_reader_slot, ("epoch before the slot's words", "slot's words before the epoch's re-check")
    ),
    "Reader.segment, a first mapping": AuditPath(
        path_reader_segment, ("epoch before the slot's words", "lock before the epoch's re-check")
    ),
    "wait": AuditPath(path_wait, ("signal before the waiting flag", "waiting flag before the last look")),
    "wake": AuditPath(path_wake, ("count before the waiting load", "waiting cleared before the bump")),
    "wait, paced": AuditPath(
        path_wait_paced,
        (
            "head before the slots",
            "epoch before the slot's words",
            "slot's words before the epoch's re-check",
            "count before the records it covers",
        ),
    ),
    "log.unlink": AuditPath(path_unlink, ("gone mark before the bump", "waiting cleared before the bump")),
    "remove_log": AuditPath(path_remove_log, ("gone mark before the bump",)),
    "info().writer_active": AuditPath(
        path_info, ("held token before the look at its region", "slots before the head's re-check")
    ),
    "attach": AuditPath(path_attach, ("fields before the magic", "magic before the fields")),
}


def audit(path: AuditPath, names: Names, neutralised: frozenset[str] = frozenset()) -> Recorder:
    """Run ``path`` with the recorder in place (and the orders of ``neutralised`` dropped)."""
    rec = Recorder(neutralised)
    with pytest.MonkeyPatch.context() as patch:
        rec.install(patch)
        path.run(rec, names)
    return rec


@pytest.mark.parametrize("name", list(PATHS))
def test_every_pairing_of_the_table_has_its_fence_on_the_path(name: str, log_name: Names) -> None:
    rec = audit(PATHS[name], log_name)
    problems, pairs = check(rec.events)
    told = "\n".join(text for _, text in problems[:20])
    assert not problems, f"{name}: {len(problems)} pairings without their fence:\n{told}"
    unrun = [rule for rule in PATHS[name].pairings if not pairs[rule]]
    assert not unrun, f"{name} never ran {unrun}: the path does not do what it is named for"


def test_the_rules_follow_the_design_table() -> None:
    """Every row of docs/design.md's table of pairings has its rules, the writer's side and
    the reader's, so the two stay in step. (The last row's publishing side is the kernel's,
    the release of a dead or closed writer's flock, and its observer is the next writer.)"""
    text = DESIGN.read_text()
    lines = text[text.index("The pairings, each at one place") :].splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = list(itertools.takewhile(lambda line: line.startswith("|"), lines[first:]))
    rows = [line.split("|")[2].strip() for line in table[2:]]  # after the heading and its rule
    assert len(rows) == 10 and rows[-1] == "the header" and TO_A_WAITER in rows, rows
    for row in rows:
        sides = {rule.roles for rule in RULES if rule.row == row}
        assert sides == ({WRITERS} if row == "the header" else {WRITERS, READERS}), (row, sides)
    assert {rule.row for rule in RULES} - {None} == set(rows)


# --- 4. Each ordering site dropped makes the audit fail -----------------------------------


def _library() -> Iterator[tuple[str, ast.Module]]:
    """Each module of the library, by its path in the package, parsed. Not the benchmark
    (``bench/``), which uses the public API and measures its own transports."""
    for path in sorted(PACKAGE.rglob("*.py")):
        where = path.relative_to(PACKAGE)
        if where.parts[0] != "bench":
            yield str(where), ast.parse(path.read_text())


def fence_sites() -> dict[str, tuple[str, str]]:
    """Every place in the library that orders memory, "module.py:line" -> (module, the
    call): the fences, the calls that pass a memory order (the wait region's cells), and
    the calls that take atomicshm's default order (``SEQ_CST_BY_DEFAULT``: the count's
    store, the writer's load of ``waiting``)."""
    orders = {"ACQUIRE", "RELEASE", "ACQ_REL", "SEQ_CST"}
    sites: dict[tuple[str, int], str] = {}
    for where, tree in _library():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            called = (
                func.id
                if isinstance(func, ast.Name)
                else func.attr
                if isinstance(func, ast.Attribute)
                else ""
            )
            args = [*node.args, *(k.value for k in node.keywords)]
            ordered = any(isinstance(a, ast.Name) and a.id in orders for a in args)
            if called == "fence" or called in SEQ_CST_BY_DEFAULT or ordered:
                sites[where, node.lineno] = ast.unparse(node)
    return {f"{where}:{line}": (where, call) for (where, line), call in sorted(sites.items())}


def test_each_fence_removed_in_turn_makes_the_audit_fail(log_name: Names) -> None:
    """Every ordering site of the library is reached by some path, and each one dropped
    (the recorder leaves out its fence, or makes its access relaxed: ``Recorder.ordered``)
    makes some check fail, but the ``SPARE`` ones, which must not. The sites, and the
    rules that catch each, are printed (``pytest -s``)."""
    sites = fence_sites()
    began = time.monotonic()
    baseline = {name: audit(path, log_name) for name, path in PATHS.items()}
    for name, rec in baseline.items():
        assert not check(rec.events)[0], f"{name} fails with every fence in place: see its own test"
    reached = set().union(*(rec.reached for rec in baseline.values()))
    assert reached == set(sites), (
        f"sites called but not found in the source: {sorted(reached - set(sites))}; "
        f"found but never called by any path: {sorted(set(sites) - reached)}"
    )
    assert set(SPARE) <= set(sites.values()), (
        f"SPARE names sites that are gone: {set(SPARE) - set(sites.values())}"
    )
    caught: dict[str, Counter[str]] = {}
    for site in sites:
        failed: Counter[str] = Counter()
        for name, path in PATHS.items():
            if site in baseline[name].reached:
                problems, _ = check(audit(path, log_name, frozenset({site})).events)
                failed.update(rule for rule, _ in problems)
        caught[site] = failed
    needed = [site for site in sites if sites[site] not in SPARE]
    print(
        f"\n{len(sites)} ordering sites, {sum(bool(caught[s]) for s in needed)} of {len(needed)} caught, "
        f"{len(sites) - len(needed)} spare ({time.monotonic() - began:.1f} s):"
    )
    for site, (module, call) in sites.items():
        told = ", ".join(sorted(caught[site])) or ("spare" if (module, call) in SPARE else "NOT CAUGHT")
        print(f"  {site:<18} {call:<44} {told}")
    missed = [f"{site} {sites[site][1]}" for site in needed if not caught[site]]
    assert not missed, f"ordering sites whose removal no check notices: {missed}"
    needless = [
        f"{site} {sites[site][1]}: {sorted(caught[site])}"
        for site in sites
        if sites[site] in SPARE and caught[site]
    ]
    assert not needless, f"SPARE sites that a rule needs after all (take them out of SPARE): {needless}"


# --- 5. No shared word stored with struct.pack_into --------------------------------------------


def test_no_shared_word_is_stored_with_pack_into() -> None:
    """CPython's struct zeroes its destination before it packs: a concurrent reader of a
    word stored that way may load 0. The library never calls it (docs/design.md, "Memory
    ordering"); the test below shows what it would cost."""
    found = [
        f"{where}:{node.lineno}: {ast.unparse(node)}"
        for where, tree in _library()
        for node in ast.walk(tree)
        if "pack_into" in (getattr(node, "attr", None), getattr(node, "id", None))
    ]
    assert not found, f"struct's pack_into in the library: {found}"


A, B = 0x1111111111111111, 0x2222222222222222  # every byte nonzero: a torn or zeroed load shows
SAMPLE = 0.25  # seconds each way of storing runs against the reader


def _odd_loads(store: Callable[[mmap.mmap, memoryview, Any, int], None]) -> tuple[int, int, int]:
    """Store A and B in turn into a shared word for ``SAMPLE`` seconds while another
    process loads it as fast as it can: (loads of neither A nor B, of which 0, loads)."""
    region = mmap.mmap(-1, mmap.PAGESIZE)  # anonymous and shared: the child sees the stores
    words = memoryview(region).cast("q")
    view = _platform.AtomicView(region)
    words[0] = A
    out, into = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            odd = zeros = loads = 0
            words[2] = 1  # ready
            while not words[1]:
                value = words[0]
                loads += 1
                if value != A and value != B:
                    odd += 1
                    zeros += value == 0
            os.write(into, struct.pack("<3q", odd, zeros, loads))
        finally:
            os._exit(0)
    os.close(into)
    try:
        while not words[2]:
            time.sleep(0.001)
        end = time.monotonic() + SAMPLE
        while time.monotonic() < end:
            for _ in range(1000):
                store(region, words, view, A)
                store(region, words, view, B)
    finally:
        words[1] = 1
        with os.fdopen(out, "rb") as result:
            found = result.read(24)
        os.waitpid(pid, 0)
        view.close()
        words.release()
        region.close()
    odd, zeros, loads = struct.unpack("<3q", found)
    return odd, zeros, loads


def _header_store(region: mmap.mmap, words: memoryview, view: Any, value: int) -> None:
    words[0] = value  # how the writer stores a header word


def _cell_store(region: mmap.mmap, words: memoryview, view: Any, value: int) -> None:
    view.cell_u64(0).store(value)  # how the writer stores a count (Writer._publish)


def _packed(region: mmap.mmap, words: memoryview, view: Any, value: int) -> None:
    struct.pack_into("<q", region, 0, value)


def test_the_library_stores_a_word_whole_where_pack_into_may_not() -> None:
    """A reader in another process never loads anything but a value stored, through the
    library's two ways of storing a word; ``struct.pack_into``'s zeroed or half-packed
    word is reported (how often depends on the machine and its load), not asserted."""
    seen = {
        how: _odd_loads(store)
        for how, store in [
            ("memoryview store", _header_store),
            ("cell store", _cell_store),
            ("pack_into", _packed),
        ]
    }
    for how, (odd, zeros, loads) in seen.items():
        print(f"\n  {how}: {odd:,} of {loads:,} loads saw neither value stored ({zeros:,} saw 0)", end="")
    assert seen["memoryview store"][0] == 0 and seen["cell store"][0] == 0, seen
