"""The writer: appends records to the head segment and publishes them.

State. A writer is OPEN (its head mapped: appends go straight to it), ROLLING (a rollover,
or the recovery from one that an exception cut short, is under way, or was interrupted:
the next call takes the state from the header again, ``_resync``) or CLOSED (``close()``,
garbage collection, a failed recovery, a removed log, or a writer inherited by a forked
child; final). The hot paths test one number, ``_limit``: the head's capacity while OPEN,
0 otherwise, set together with the state in one statement (``_become``). So no store lands
in a segment unless the writer is OPEN and the head has room, whatever the record size.

Publication protocol (the argument is in docs/design.md, "Memory ordering"). Every write
ends with one step, ``_publish(count)``: store ``count`` in the head's slot, then wake the
followers asleep on the log, if any.

* append: store the record at index ``count`` of the head segment, then publish
  ``count + 1``. Readers load the count before the records, so every record below a count
  they loaded is complete.
* rollover (the append that finds the head full, or ``skip_to``): make the next segment,
  retire the slot it takes over (epoch := NO_SEGMENT, count := 0, start := its first
  position, token := its region's token, epoch := seq), publish ``head := seq``,
  then take the oldest segment's name away (``_segment.WriterSegments``). Readers
  validate a slot's epoch before and after loading its count, so a retired slot is never
  read as the segment it used to describe. The append then publishes its record;
  ``skip_to`` publishes the new head's count of 0, which wakes followers for the skip.

Records at indices >= count are never shown, so a failed or interrupted store there (a bad
value, a SIGKILL) is invisible and simply overwritten by the next append.
"""

from __future__ import annotations

import contextlib
import enum
import os
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from . import _claim, _records, _segment, _shm, _wait
from ._errors import (
    CorruptLogError,
    InvalidArgumentError,
    InvalidRecordError,
    LogNotFoundError,
    NotPicklableError,
    WriterClosedError,
)
from ._header import GONE, HEAD_WORD, MAX_POSITION, NO_SEGMENT, WORD, Layout
from ._platform import RELEASE, fence

_VALUE_ERRORS = _records.VALUE_ERRORS


def _nobody_waits() -> int:
    """The waiting flag of a writer that could not map its log's wait region."""
    return 0


class _State(enum.Enum):
    OPEN = "open"
    ROLLING = "rolling"
    CLOSED = "closed"


OPEN, ROLLING, CLOSED = _State.OPEN, _State.ROLLING, _State.CLOSED


def _shown(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def _shape(values: Any) -> tuple[int, ...]:
    """The shape numpy sees in ``values`` (the error path only); () if it sees none."""
    try:
        return np.shape(values)
    except Exception:  # ragged nesting, or an iterator spent by the failed conversion
        return ()


def _first_misfit(values: Any, convert: Callable[[Any], Any]) -> tuple[int, Any, BaseException] | None:
    for index, value in enumerate(values):
        try:
            convert((value,))
        except _VALUE_ERRORS as exc:
            return index, value, exc
    return None


class _Holdings:
    """What a writer holds in the system: the claim, its segments, its wait region. Let go
    of by ``release()`` (close(), or garbage collection of the writer), which is idempotent
    and finishes what a call that an exception cut short left; whatever it does not reach,
    the collector closes (each descriptor is owned by a file object)."""

    __slots__ = ("claim", "layout", "name", "segments", "waits")

    def __init__(self, name: str, layout: Layout, claim: _claim.Claim) -> None:
        self.name = name
        self.layout = layout
        self.claim = claim
        self.segments: _segment.WriterSegments | None = None
        self.waits: _wait.WaitRegion | None = None

    def release(self) -> None:
        """Give up the claim, unlink the spare segment and unmap; the log's segments stay,
        unless the log was removed: then whatever of it is left goes too."""
        try:
            if self.segments is not None:
                self.segments.close()
            if self.waits is not None:
                self.waits.close()
            if self.removed():
                self.remove_leftovers()
        finally:
            self.claim.release()

    def forget(self) -> None:
        """In a forked child: drop the inherited descriptors and mappings, leaving the
        claim, the segments and the spare to the parent."""
        self.claim.forget()
        if self.segments is not None:
            self.segments.forget()
        if self.waits is not None:
            self.waits.close()

    def unlinked(self) -> bool:
        """Whether the claim region lost its name: the log was removed, or a bystander
        deleted that one region (then nobody can claim the log again)."""
        fileno = self.claim.fileno()
        return fileno >= 0 and os.fstat(fileno).st_nlink == 0

    def removed(self) -> bool:
        """Whether the log was removed: its claim region is unlinked and the header's name
        no longer refers to this log's header (a bystander that deletes only the claim
        region removes nothing)."""
        return self.unlinked() and _shm.identity(_shm.header_path(self.name)) != self.claim.header

    def remove_leftovers(self) -> None:
        """Unlink every region named after this log's nonce: a remover lists the regions
        once, so the ones this writer made or renamed after that would stay."""
        nonce = self.layout.nonce
        for path in [p for n, _, p in _shm.regions(self.name) if n == nonce]:
            _shm.unlink_quietly(path)


class Writer:
    """The exclusive right to append to one log, held by one process at a time.

    Obtained from ``AtomicLog.new_claimed()`` or ``AtomicLog.try_claim_writer()``. The claim
    ends with ``close()``, the end of a ``with`` block, garbage collection of the writer or
    the death of its process; the log and its history stay. A writer is not thread-safe:
    use it from one thread at a time (``end``, ``closed`` and ``repr()`` only read, so
    another thread may look at them meanwhile).
    """

    __slots__ = (
        "__weakref__",
        "_capacity",
        "_claim",
        "_count",
        "_data",
        "_exact",
        "_finalizer",
        "_holdings",
        "_itemsize",
        "_layout",
        "_limit",
        "_log",
        "_map",
        "_name",
        "_pack",
        "_packer",
        "_same_dtype",
        "_seq",
        "_start",
        "_state",
        "_store_count",
        "_waiting",
        "_waits",
        "_why_closed",
        "_words",
    )

    def __init__(self, name: str, layout: Layout, log: Any, claim: _claim.Claim, mode: int) -> None:
        self._log = log
        self._name = name
        self._layout = layout
        self._claim = claim
        self._holdings = holdings = _Holdings(name, layout, claim)
        self._finalizer = weakref.finalize(self, holdings.release)
        self._state, self._limit, self._why_closed = ROLLING, 0, ""
        self._capacity = layout.segment_capacity
        self._itemsize = layout.dtype.itemsize
        self._same_dtype: np.dtype[Any] = layout.dtype  # an object known to equal the log's
        self._packer = packer = _records.struct_for(layout.dtype)
        # pack(*value) into bytes, then a slice store: a call of pack_into(map, offset, *value)
        # has to build its argument tuple anew, which costs more than the bytes object.
        self._pack = packer.pack if packer is not None and layout.dtype.names else None
        self._exact = _records.exact_types(layout.dtype)
        self._words = claim.words
        self._waiting: Callable[[], int] = _nobody_waits
        self._waits: _wait.WaitRegion | None = None
        try:
            head, count, start = self._published_head()
            region = self._open_head(head)
            holdings.segments = _segment.WriterSegments(name, layout, mode, region)
            holdings.waits = waits = _wait.WaitRegion.open(name, layout.nonce)
            if waits is not None:
                self._waits, self._waiting = waits, waits.waiting.load
        except BaseException:
            self._stop("it could not open the log")
            holdings.release()
            raise
        self._enter_segment(head, region, count, start)
        _claim.track(self)

    # -- the state ---------------------------------------------------------------------------

    def _become(self, state: _State) -> None:
        """Enter ``state`` (CLOSED is final). The hot paths' bound goes with it in one
        statement, so an interrupt comes before both stores or after both: the head's room
        while OPEN (its capacity, or less where int64 positions end), 0 otherwise."""
        if self._state is not CLOSED:
            room = min(self._capacity, MAX_POSITION - self._start) if state is OPEN else 0
            self._state, self._limit = state, room

    def _stop(self, why: str) -> None:
        """Become CLOSED, saying why (every later call raises WriterClosedError), and let go
        of the head's mapping: no path of a closed writer uses it, and a closed writer (in a
        forked child too) maps nothing of the log."""
        if self._state is not CLOSED:
            self._state, self._limit, self._why_closed = CLOSED, 0, why
        with contextlib.suppress(AttributeError):  # never mapped (a failed claim), or dropped already
            del self._map, self._data

    def _ready(self) -> None:
        """Make the writer OPEN, or raise WriterClosedError: the slow paths' first step.
        Finishes a rollover that an exception cut short (``_resync``), and a close too."""
        if self._state is ROLLING:
            self._resync()
        if self._state is CLOSED:
            self._holdings.release()  # a close that an interrupt cut short lets the claim go now
            raise WriterClosedError(
                f"this writer of {self._name!r} is closed ({self._why_closed}); "
                "claim a new one with log.try_claim_writer()"
            )

    def _enter_segment(self, seq: int, region: _segment.Region, count: int, start: int) -> None:
        """Make segment ``seq`` the head, with ``count`` records from position ``start``,
        and become OPEN: last, after everything the hot paths use."""
        # One statement: an interrupt leaves the old head's three or the new one's, so
        # ``end`` is never a mix of both.
        self._seq, self._start, self._count = seq, start, count
        # The release store of the head's count word: what _publish publishes with.
        self._store_count = self._claim.view.cell_u64(self._layout.count_word(seq) * WORD).store
        self._map = region.map  # extend() copies bytes into the mapping itself
        self._data = region.array
        self._become(OPEN)

    def _published_head(self) -> tuple[int, int, int]:
        """The head segment, its published count and its start, as the header says now."""
        words = self._words
        layout = self._layout
        head = words[HEAD_WORD]
        if head == GONE:
            raise LogNotFoundError(f"log {self._name!r} was removed")
        count = words[layout.count_word(head)]
        start = words[layout.start_word(head)]
        if (
            head < 0
            or words[layout.epoch_word(head)] != head
            or not 0 <= count <= layout.segment_capacity
            or start < 0
        ):
            raise CorruptLogError(
                f"log {self._name!r}: head segment {head} has no valid slot; "
                "remove the log with atomic_log_shm.remove_log() and create it anew"
            )
        return head, count, start

    def _open_head(self, head: int) -> _segment.Region:
        """Map the head read-write and remove every segment region of the log but those the
        slots of the window name."""
        words = self._words
        layout = self._layout
        live = {
            seq: words[layout.token_word(seq)]
            for seq in range(max(head - layout.slot_count + 1, 0), head + 1)
            if words[layout.epoch_word(seq)] == seq
        }
        region = _segment.open_writable(self._name, layout, head, live[head])
        # A writer that died (or was interrupted) may have left a half-made next segment, a
        # spare, or an old one it had not renamed yet: nobody else can be making segments
        # now, so remove them (only once the head proved real: a damaged head must not
        # cost the log).
        _segment.unlink_strays(self._name, layout, live)
        return region

    def _resync(self) -> None:
        """After an exception escaped a rollover or a publication part-way (a KeyboardInterrupt
        between two stores): take the in-process state from the header again, as a new
        claim does, dropping whatever was not published. An interrupt inside this leaves the
        writer ROLLING, and the next call does it again; if it fails otherwise, close."""
        if self._state is CLOSED:
            return
        self._become(ROLLING)
        segments = self._holdings.segments
        assert segments is not None  # made in __init__, before the writer was ever OPEN
        try:
            head, count, start = self._published_head()
            segments.close()  # the spare and any half-made segment lose their names
            region = self._open_head(head)
            segments.reset(region)
        except Exception as exc:
            self._stop(f"it was interrupted part-way through a rollover and could not recover: {exc!r}")
            self._holdings.release()
            raise
        self._enter_segment(head, region, count, start)

    # -- writing -----------------------------------------------------------------------------

    def _publish(self, count: int) -> None:
        """Show the head's records below ``count`` to every reader, then wake the followers
        asleep on the log: the one step that every write ends with."""
        self._count = count  # first: records below it are never stored again, even if cut short here
        # Publish: a sequentially consistent store (so a release), seen after every record
        # store before it; pairs with the count load and the acquire fence after it in
        # Reader.slot() and Snapshot.refresh(), which readers make before loading any record.
        self._store_count(count)
        # Sequentially consistent, after the count store: pairs with the waiter's waiting
        # store and fence, then look (_wait.WaitRegion.sleep_unless).
        if self._waiting():
            self._waits.wake()  # type: ignore[union-attr]

    def append(self, value: Any) -> None:
        """Publish one record: a number for a plain dtype; for a structured one, a tuple (one
        value per field), a dict of every field's name to its value, or a numpy record.

        The record is visible to every reader once this returns. A value is converted by
        the rules ``extend()`` follows (no float into an integer field, no string into a
        number, no number spread over a record's fields); if it does not fit,
        InvalidRecordError is raised and the log is exactly as it was.
        """
        i = self._count
        if i < self._limit:  # OPEN, with room: unpublished until _publish below
            try:  # each branch applies the conversion rule (_records)
                pack = self._pack
                # A struct format refuses what the rule refuses; a tuple only (a dict's keys
                # must never be packed as its values).
                if pack is not None and type(value) is tuple:
                    size = self._itemsize
                    at = i * size
                    self._map[at : at + size] = pack(*value)
                elif type(value) in self._exact:  # a plain dtype takes these types losslessly
                    self._data[i] = value
                else:
                    size = self._itemsize
                    self._map[i * size : (i + 1) * size] = self._convert((value,))  # type: ignore[call-overload]
            except _VALUE_ERRORS as exc:
                raise self._bad_value(value, exc) from None
            self._publish(i + 1)
        else:
            self._append_rolling(value)

    def _append_rolling(self, value: Any) -> None:
        """append() of a writer that is not OPEN with room: recover, refuse, or roll over."""
        self._ready()
        if self._count < self._limit:  # a recovery left room in the head
            self.append(value)
            return
        try:
            record = self._convert((value,))  # check the value before the rollover changes the log
        except _VALUE_ERRORS as exc:
            raise self._bad_value(value, exc) from None
        try:
            self._roll(self._start + self._count)
            self._map[0 : self._itemsize] = record  # type: ignore[call-overload]
            self._publish(1)
        except BaseException:
            self._resync()  # so that ``end`` is right at once; ROLLING is the backstop
            raise

    def extend(self, values: Any) -> None:
        """Publish a batch of records, one publication per segment.

        A batch is an array, a sequence of records (tuples, dicts by field name, numpy
        records), or columns by name: a mapping of every field's name to its column, or a
        pandas DataFrame (its index is not stored). A structured array whose fields have
        the log's names, in any order, is taken by name. Values are converted by the rules
        ``append()`` follows.

        The whole batch is converted first, so a bad value raises InvalidRecordError before
        anything is published. If shared memory runs out part-way (OutOfSpaceError), the
        records in segments already filled stay published; ``exc.published`` says how many.
        """
        if (
            type(values) is np.ndarray
            and values.dtype is self._same_dtype
            and values.ndim == 1
            and values.flags.c_contiguous
        ):
            records = values  # the hot path: an array like the last one, taken as it is
        else:
            self._ready()
            records = np.ascontiguousarray(self._as_records(values))
            if type(values) is np.ndarray and values.dtype == self._layout.dtype:
                self._same_dtype = values.dtype  # the next such array passes an identity check
        # Copy bytes through the mapping: mmap slice assignment copies a contiguous buffer
        # as it is, where numpy would copy structured records field by field (15x slower).
        i = self._count
        end = i + len(records)
        if i < end <= self._limit:  # OPEN, and the batch fits in the head: one copy, one publication
            size = self._itemsize
            # Unpublished until _publish below. (typeshed's mmap wants a Buffer.)
            self._map[i * size : end * size] = records  # type: ignore[call-overload]
            self._publish(end)
        else:
            self._extend_across(records)

    def _extend_across(self, records: npt.NDArray[Any]) -> None:
        """extend() of a batch that does not fit in the head (or of a writer not OPEN, or
        of no records): a copy and a publication per segment touched. Whatever escapes
        part-way leaves the writer as the header says (``_resync``) at once, so ``end`` is
        right straight after; ROLLING is the backstop for an interrupt inside the recovery."""
        self._ready()
        size = self._itemsize
        total = len(records)
        done = 0
        try:
            while done < total:
                i = self._count
                if i >= self._limit:
                    try:
                        self._roll(self._start + i)
                    except Exception as exc:
                        exc.published = done  # type: ignore[attr-defined]
                        raise
                    i = 0
                end = min(self._limit, i + total - done)
                self._map[i * size : end * size] = records[done : done + end - i]  # type: ignore[call-overload]
                done += end - i
                self._publish(end)
        except BaseException:
            self._resync()
            raise

    def skip_to(self, position: int) -> None:
        """Make ``position`` the position of the next record appended (``end`` at least).

        The positions in between are never written: readers count them as missed, as they
        count records reclaimed before they looked, and followers asleep in ``wait()`` are
        woken. A skip starts a new segment (unless nothing is skipped), so the window holds
        fewer records until it has moved on. Positions are int64: the last record a log
        can hold is at ``2**63 - 2``, so a log's ``end`` is at most ``2**63 - 1``.
        """
        if isinstance(position, bool) or not isinstance(position, int):
            raise InvalidArgumentError(f"skip_to() takes a position (an int), not {type(position).__name__}")
        self._ready()
        end = self._start + self._count
        if position < end:
            raise InvalidArgumentError(
                f"log {self._name!r}: cannot skip back to position {position}; the next is {end}"
            )
        if position > end:
            self._check_start(position)
            try:
                self._roll(position)
                self._publish(0)  # nothing new to show, but the end moved: wake the followers
            except BaseException:
                self._resync()
                raise

    @property
    def end(self) -> int:
        """The position the next record appended will get (the log's length, in positions).

        Only reads: another thread (a monitor of a ``Mirror``, say) may ask while this
        writer rolls over in its own thread."""
        if self._state is ROLLING:  # a rollover under way, or cut short by an exception:
            try:  # what is published counts (the next write resyncs to it)
                _, count, start = self._published_head()
            except (LogNotFoundError, CorruptLogError):  # the next write says so
                pass
            else:
                return start + count
        return self._start + self._count

    def _check_start(self, start: int) -> None:
        if start >= MAX_POSITION:
            raise InvalidArgumentError(
                f"log {self._name!r}: position {start} is out of range: positions are int64, so the "
                f"last record a log can hold is at {MAX_POSITION - 1}"
            )

    def _roll(self, start: int) -> None:
        """Make segment ``head + 1`` the head, its record 0 at position ``start``, then
        reclaim the oldest segment. Raises, changing nothing published, if the segment
        cannot be made or the log is gone."""
        self._check_start(start)
        if self._holdings.unlinked():
            self._leave_removed_log()
        layout = self._layout
        seq = self._seq + 1
        self._become(ROLLING)  # until _enter_segment below: an exception in between is recovered from
        segments = self._holdings.segments
        assert segments is not None
        region = segments.take(seq)  # may raise: nothing published has changed yet
        words = self._words
        epoch_word = layout.epoch_word(seq)
        token_word = layout.token_word(seq)
        oldest = seq - layout.slot_count
        retiring = words[token_word]  # the name of segment seq - n, reclaimed below
        # Retire the slot of segment seq - n, then describe seq in it: a seqlock whose
        # sequence is the epoch. A reader that loaded the old epoch and loads it again
        # (after its start and count loads, in _reader.Reader.slot, or its token load, in
        # Reader.segment) sees it changed.
        words[epoch_word] = NO_SEGMENT
        # The retirement before the slot's new words: pairs with the readers' acquire fence
        # before their second epoch load.
        fence(RELEASE)
        words[layout.count_word(seq)] = 0
        words[layout.start_word(seq)] = start  # pairs with the start load in Reader.slot
        words[token_word] = region.token  # pairs with the token load in Reader.segment
        # The slot's words before its epoch: pairs with the readers' acquire fence after
        # their first epoch load.
        fence(RELEASE)
        words[epoch_word] = seq
        # The slot (and the region made above) before the head: pairs with the acquire fence
        # after the head load in Reader.consistent().
        fence(RELEASE)
        words[HEAD_WORD] = seq
        if self._holdings.unlinked():
            # Removed while this rollover ran: the remover's GONE (stored after it unlinked
            # the claim) may have come before the head store above.
            self._leave_removed_log()
        # Reclaim the segment pushed out of the window: readers can no longer open it by its
        # name; those that have it mapped keep it, unchanged.
        segments.retire(oldest, retiring, seq + 1)
        self._enter_segment(seq, region, 0, start)

    def _leave_removed_log(self) -> None:
        """The claim region lost its name: close, and raise LogNotFoundError. If the log was
        removed, store GONE again (a removal that ran during a rollover may have marked the
        header before its head store) and remove what the remover could not see."""
        holdings = self._holdings
        self._stop("the log was unlinked")
        if holdings.removed():
            # One word, published with nothing: no fence. Every read in every process then
            # raises LogNotFoundError.
            self._words[HEAD_WORD] = GONE
        holdings.release()
        raise LogNotFoundError(f"log {self._name!r} was unlinked; its writer is closed")

    def _convert(self, values: Any) -> npt.NDArray[Any]:
        """``values`` as records of the log's dtype by ``_records``' rule (raises its errors)."""
        return _records.as_records(values, self._layout.dtype, self._packer)

    def _as_records(self, values: Any) -> npt.NDArray[Any]:
        """``values`` as a 1-d array of the log's dtype, or InvalidRecordError naming the
        first record that the rule refuses."""
        dtype = self._layout.dtype
        whole = isinstance(values, np.ndarray | np.generic | str | bytes) or not hasattr(values, "__iter__")
        if whole and np.ndim(values) != 1:  # an array, or a value numpy takes as one
            if np.ndim(values) == 0:
                raise InvalidRecordError("extend() takes a sequence of records; use append() for one")
            raise InvalidRecordError(
                f"extend() takes a 1-d sequence of records of {dtype}, got shape {np.shape(values)}"
            )
        try:
            records = self._convert(values)
        except _VALUE_ERRORS as exc:
            if _records.is_columns(values):  # by name, a field at a time: the error names the field
                what = "a mapping of columns" if isinstance(values, Mapping) else f"a {type(values).__name__}"
                raise InvalidRecordError(
                    f"log {self._name!r}: cannot store {what} as records of {dtype}: {exc}"
                ) from None
            if dtype.names is None and len(_shape(values)) > 1:
                raise InvalidRecordError(
                    f"extend() takes a 1-d sequence of records of {dtype}, got shape {_shape(values)}"
                ) from None
            if isinstance(values, np.ndarray) and isinstance(exc, TypeError):
                raise InvalidRecordError(
                    f"log {self._name!r}: an array of {values.dtype} does not convert to {dtype} "
                    f"without loss ({exc}); convert it first"
                ) from None
            raise self._bad_batch(values, str(exc)) from None
        if records.ndim != 1:
            raise InvalidRecordError(
                f"extend() takes a 1-d sequence of records of {dtype}, got shape {records.shape}"
            )
        return records

    def _bad_value(self, value: Any, exc: BaseException) -> InvalidRecordError:
        return InvalidRecordError(
            f"log {self._name!r}: cannot store {_shown(value)} as a record of {self._layout.dtype}: {exc}"
        )

    def _bad_batch(self, values: Any, why: str) -> InvalidRecordError:
        """Name the first record of a refused batch that does not fit (the error path only)."""
        dtype = self._layout.dtype
        try:
            misfit = _first_misfit(values, self._convert)
        except Exception:  # values cannot be walked again (an iterator): say what we know
            misfit = None
        if misfit is None:
            return InvalidRecordError(
                f"log {self._name!r}: cannot store {_shown(values)} as records of {dtype}: {why}"
            )
        index, value, exc = misfit
        return InvalidRecordError(
            f"log {self._name!r}: record {index} of the batch, {_shown(value)}, "
            f"is not a record of {dtype}: {exc}"
        )

    def close(self) -> None:
        """Give up the claim; the log and everything published stay. Idempotent, and a
        close that an exception (an interrupt) cut short is finished by the next call."""
        self._stop("close() was called")
        self._finalizer()  # what garbage collection would run, once
        self._holdings.release()  # idempotent: finishes a run an interrupt cut short

    def _disown(self) -> None:
        """Called in a forked child: drop the inherited descriptors and mappings, leaving the
        claim, the segments and the spare to the parent."""
        self._stop("it belongs to the parent of this forked process")
        self._finalizer.detach()
        self._holdings.forget()
        self._waits, self._waiting = None, _nobody_waits

    @property
    def closed(self) -> bool:
        """Whether this writer is closed (``close()``, or a reason ``repr()`` gives)."""
        return self._state is CLOSED

    @property
    def log(self) -> Any:
        """The log handle this writer was claimed from."""
        return self._log

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __reduce__(self) -> Any:
        raise NotPicklableError("a Writer cannot be pickled: send the log and call try_claim_writer() there")

    def __repr__(self) -> str:
        state = f"closed: {self._why_closed}" if self._state is CLOSED else self._state.value
        return f"<Writer of {self._name!r} segment={self._seq} end={self.end} {state}>"
