"""The writer: appends records to the head segment and publishes them.

Publication protocol (the argument is in docs/design.md, "Memory ordering"):

* append: store the record at index ``count`` of the head segment, then store
  ``count + 1`` in the head's slot. Readers load the count before the records, so every
  record below a count they loaded is complete.
* rollover (the append that finds the head full, or ``skip_to``): make the next segment,
  retire the slot it takes over (epoch := NO_SEGMENT, count := 0, start := its first
  position, token := its region's token, epoch := seq), publish ``head := seq``,
  then take the oldest segment's name away (``_segment.WriterSegments``). Readers
  validate a slot's epoch before and after loading its count, so a retired slot is never
  read as the segment it used to describe.

Records at indices >= count are never shown, so a failed or interrupted store there (a bad
value, a SIGKILL) is invisible and simply overwritten by the next append.
"""

from __future__ import annotations

import mmap
import os
import struct
import weakref
from collections.abc import Callable
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
from ._header import GONE, HEAD_WORD, NO_SEGMENT, Layout

_VALUE_ERRORS = (TypeError, ValueError, OverflowError, struct.error)


_NOBODY_WAITS = memoryview(bytearray(16)).cast("q")
_WAITING = _wait.WAITING_WORD
_NO_MAP = mmap.mmap(-1, 1)


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


def _release(segments: _segment.WriterSegments, waits: _wait.WaitRegion | None, claim: _claim.Claim) -> None:
    """Let go of everything a writer holds, the claim whatever else fails or is interrupted.
    Safe to call again: each step is idempotent."""
    try:
        segments.close()
        if waits is not None:
            waits.close()
    finally:
        claim.release()


class Writer:
    """The exclusive right to append to one log, held by one process at a time.

    Obtained from ``AtomicLog.new_claimed()`` or ``AtomicLog.try_claim_writer()``. The claim
    ends with ``close()``, the end of a ``with`` block, garbage collection of the writer or
    the death of its process; the log and its history stay. A writer is not thread-safe:
    use it from one thread at a time.
    """

    __slots__ = (
        "__weakref__",
        "_capacity",
        "_claim",
        "_closed_because",
        "_count",
        "_count_word",
        "_data",
        "_exact",
        "_finalizer",
        "_itemsize",
        "_layout",
        "_log",
        "_map",
        "_name",
        "_pack",
        "_packer",
        "_rolling",
        "_same_dtype",
        "_segments",
        "_seq",
        "_start",
        "_waiting",
        "_waits",
        "_words",
    )

    def __init__(self, name: str, layout: Layout, log: Any, claim: _claim.Claim, mode: int) -> None:
        self._log = log
        self._name = name
        self._layout = layout
        self._claim = claim
        self._closed_because = ""
        self._itemsize = layout.dtype.itemsize
        self._same_dtype: np.dtype[Any] | None = layout.dtype  # an object known to equal the log's
        self._packer = packer = _records.struct_for(layout.dtype)
        # pack(*value) into bytes, then a slice store: a call of pack_into(map, offset, *value)
        # has to build its argument tuple anew, which costs more than the bytes object.
        self._pack = packer.pack if packer is not None and layout.dtype.names else None
        self._exact = _records.exact_types(layout.dtype)
        try:
            self._words = claim.words
            head, count, start = self._published_head()
            region = self._open_head(head)
        except BaseException:
            claim.release()
            raise
        self._segments = segments = _segment.WriterSegments(self._name, layout, mode, region)
        self._waits = waits = _wait.WaitRegion.open(self._name, layout.nonce)
        if waits is not None:
            waits.register_writer()  # waiters fence against this process from now on
        self._waiting = _NOBODY_WAITS if waits is None else waits.words
        self._finalizer = weakref.finalize(self, _release, segments, waits, claim)
        self._enter_segment(head, region, count, start)
        _claim.track(self)

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
        writer disarmed, and the next call does it again; if it fails otherwise, close."""
        if self._closed_because:
            return
        self._disarm()
        try:
            head, count, start = self._published_head()
            self._segments.close()  # the spare and any half-made segment lose their names
            region = self._open_head(head)
            self._segments.reset(region)
        except Exception as exc:
            self._close(f"it was interrupted part-way through a rollover and could not recover: {exc!r}")
            self._let_go()
            raise
        self._enter_segment(head, region, count, start)

    def _disarm(self) -> None:
        """Send every append() and extend() to the slow path until ``_enter_segment`` arms
        the writer again. Done before anything that changes more than a count, so a fast
        path never runs on a head that an exception (an interrupt) left half-changed: the
        slow path then takes the state from the header again (``_check_open``)."""
        self._rolling = True
        self._capacity = -1  # extend()'s fast test, and append()'s after a failed pack
        self._same_dtype = None  # extend()'s identity test
        self._data = np.empty(0, self._layout.dtype)  # append()'s numpy store
        self._map = _NO_MAP  # append()'s pack and extend()'s copy

    def _enter_segment(self, seq: int, region: _segment.Region, count: int, start: int) -> None:
        """Make segment ``seq`` the head, with ``count`` records from position ``start``, and
        arm the fast paths: each handle last, after everything it is used with."""
        self._seq = seq
        self._start = start
        self._count = count
        self._count_word = self._layout.count_word(seq)
        self._map = region.map  # extend() copies bytes into the mapping itself
        self._data = region.array
        self._capacity = self._layout.segment_capacity
        self._same_dtype = self._layout.dtype
        self._rolling = False

    def append(self, value: Any) -> None:
        """Publish one record: a number for a plain dtype, a tuple (one value per field) or
        a numpy record for a structured one.

        The record is visible to every reader once this returns. A value is converted by
        the rules of ``extend()`` (no float into an integer field, no string into a number,
        no number spread over a record's fields: see ``_records``); if it does not fit,
        InvalidRecordError is raised and the log is exactly as it was.
        """
        i = self._count
        # Unpublished until the count store below. Each branch applies _records' rule, and
        # finds a full head (or a closed writer) by the error of its store, not a test.
        try:
            pack = self._pack
            size = self._itemsize
            if pack is not None:  # a struct format: it refuses what the rule refuses
                at = i * size
                self._map[at : at + size] = pack(*value)
            elif type(value) in self._exact:  # a plain dtype takes these types losslessly
                self._data[i] = value
            else:
                self._map[i * size : (i + 1) * size] = self._convert((value,))  # type: ignore[call-overload]
        except IndexError:  # numpy's store, or the slice, found no room
            pass
        except _VALUE_ERRORS as exc:
            if i < self._capacity:
                raise self._bad_value(value, exc) from None
        else:
            i += 1
            self._count = i
            # Publish: after the record store above; pairs with the count load in
            # _reader.Reader.slot(), which readers make before loading any record.
            self._words[self._count_word] = i
            # After the count store; pairs with the waiter's waiting store + membarrier (_wait.py).
            if self._waiting[_WAITING]:
                self._waits.wake()  # type: ignore[union-attr]
            return
        # No room (or a closed writer): outside the except clauses, so that no internal
        # error shows under the slow path's.
        self._append_rolling(value)

    def extend(self, values: Any) -> None:
        """Publish a sequence of records (any array-like), one publication per segment.

        The whole batch is converted first, so a bad value raises InvalidRecordError before
        anything is published. If shared memory runs out part-way (OutOfSpaceError), the
        records in segments already filled stay published; ``exc.published`` says how many.
        """
        if (
            type(values) is np.ndarray
            and values.dtype is self._same_dtype  # None once closed
            and values.ndim == 1
            and values.flags.c_contiguous
        ):
            records = values  # the hot path: an array like the last one, taken as it is
        else:
            self._check_open()
            records = np.ascontiguousarray(self._as_records(values))
            if type(values) is np.ndarray and values.dtype == self._layout.dtype:
                self._same_dtype = values.dtype  # the next such array passes an identity check
        # Copy bytes through the mapping: mmap slice assignment copies a contiguous buffer
        # as it is, where numpy would copy structured records field by field (15x slower).
        i = self._count
        end = i + len(records)
        if end <= self._capacity:  # the batch fits in the head: one copy, one publication
            size = self._itemsize
            # Unpublished until the count store below. (typeshed's mmap wants a Buffer.)
            self._map[i * size : end * size] = records  # type: ignore[call-overload]
            self._count = end
            self._words[self._count_word] = end  # publish; pairs with Reader.slot()
            if self._waiting[_WAITING]:  # after the count store; pairs with the waiter's store + fence
                self._waits.wake()  # type: ignore[union-attr]
        else:
            self._extend_across(records)

    def _extend_across(self, records: npt.NDArray[Any]) -> None:
        """extend() of a batch that does not fit in the head: a copy per segment touched.
        Whatever escapes part-way leaves the writer as the header says (``_resync``) at
        once, so ``end`` is right straight after; the disarm in ``_roll`` is the backstop
        for an interrupt that lands inside this recovery itself."""
        try:
            self._extend_across_unguarded(records)
        except BaseException:
            self._resync()
            raise

    def _extend_across_unguarded(self, records: npt.NDArray[Any]) -> None:
        size = self._itemsize
        total = len(records)
        done = 0
        while done < total:
            i = self._count
            if i >= self._capacity:
                try:
                    self._roll(self._start + i)
                except Exception as exc:
                    exc.published = done  # type: ignore[attr-defined]
                    raise
                i = 0
            end = min(self._capacity, i + total - done)
            n = end - i
            self._map[i * size : end * size] = records[done : done + n]  # type: ignore[call-overload]
            done += n
            self._count = end
            self._words[self._count_word] = end  # publish; pairs with Reader.slot()
            if self._waiting[_WAITING]:  # after the count store; pairs with the waiter's store + fence
                self._waits.wake()  # type: ignore[union-attr]

    def _append_rolling(self, value: Any) -> None:
        self._check_open()
        if self._count < self._capacity:  # a disarmed writer was re-armed, and the head has room
            self.append(value)
            return
        try:
            record = self._convert((value,))  # check the value before the rollover changes the log
        except _VALUE_ERRORS as exc:
            raise self._bad_value(value, exc) from None
        try:
            self._append_first(record)
        except BaseException:
            self._resync()
            raise

    def _append_first(self, record: npt.NDArray[Any]) -> None:
        """Roll over and publish ``record`` as the new head's first."""
        self._roll(self._start + self._count)
        self._data[0:1] = record
        self._count = 1
        self._words[self._count_word] = 1  # publish; pairs with Reader.slot()
        if self._waiting[_WAITING]:  # after the count store; pairs with the waiter's store + fence
            self._waits.wake()  # type: ignore[union-attr]

    def skip_to(self, position: int) -> None:
        """Make ``position`` the position of the next record appended (``end`` at least).

        The positions in between are never written: readers count them as missed, as they
        count records reclaimed before they looked. A skip starts a new segment (unless
        nothing is skipped), so the window holds fewer records until it has moved on.
        """
        if isinstance(position, bool) or not isinstance(position, int):
            raise InvalidArgumentError(f"skip_to() takes a position (an int), not {type(position).__name__}")
        self._check_open()
        end = self._start + self._count
        if position < end:
            raise InvalidArgumentError(
                f"log {self._name!r}: cannot skip back to position {position}; the next is {end}"
            )
        if position > end:
            try:
                self._roll(position)
            except BaseException:
                self._resync()
                raise

    @property
    def end(self) -> int:
        """The position the next record appended will get (the log's length, in positions)."""
        return self._start + self._count

    def _roll(self, start: int) -> None:
        """Make segment ``head + 1`` the head, its record 0 at position ``start``, then
        reclaim the oldest segment."""
        layout = self._layout
        if os.fstat(self._claim.fileno()).st_nlink == 0:
            self._close("the log was unlinked")
            raise LogNotFoundError(f"log {self._name!r} was unlinked; its writer is closed")
        seq = self._seq + 1
        self._disarm()  # until _enter_segment below: an exception in between is recovered from
        region = self._segments.take(seq)  # may raise: nothing published has changed yet
        words = self._words
        epoch_word = layout.epoch_word(seq)
        token_word = layout.token_word(seq)
        oldest = seq - layout.slot_count
        retiring = words[token_word]  # the name of segment seq - n, reclaimed below
        # Retire the slot of segment seq - n in ordered stores; a reader that loaded the
        # old epoch and then loads it again (after its start and count loads, in
        # _reader.Reader.slot, or its token load, in Reader.segment) sees it changed.
        words[epoch_word] = NO_SEGMENT
        words[layout.count_word(seq)] = 0
        words[layout.start_word(seq)] = start  # pairs with the start load in Reader.slot
        words[token_word] = region.token  # pairs with the token load in Reader.segment
        words[epoch_word] = seq
        # Publish the new head after its slot is ready: pairs with the head load in
        # Reader.consistent() and Snapshot.refresh(), made before loading any slot.
        words[HEAD_WORD] = seq
        if os.fstat(self._claim.fileno()).st_nlink == 0:
            # Removed while this rollover ran: the remover's GONE (stored after it unlinked
            # the claim) may have come before the head store above; store it again.
            self._mark_gone_if_removed()
        # Reclaim the segment pushed out of the window: readers can no longer open it by its
        # name; those that have it mapped keep it, unchanged.
        self._segments.retire(oldest, retiring, seq + 1)
        self._enter_segment(seq, region, 0, start)

    def _mark_gone_if_removed(self) -> None:
        """Store GONE in the head if the header's name no longer refers to this log's header
        (a removal, not a bystander deleting the claim region alone)."""
        if _shm.identity(_shm.header_path(self._name)) != self._claim.header:
            self._words[HEAD_WORD] = GONE

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

    def _check_open(self) -> None:
        """Raise WriterClosedError if closed; finish a rollover an exception cut short."""
        if self._rolling and not self._closed_because:
            self._resync()
        if self._closed_because:
            self._let_go()  # a close that an interrupt cut short lets the claim go now
            raise WriterClosedError(
                f"this writer of {self._name!r} is closed ({self._closed_because}); "
                "claim a new one with log.try_claim_writer()"
            )

    def _close(self, because: str) -> None:
        if not self._closed_because:
            self._closed_because = because
            self._disarm()  # every later call takes the slow path, which raises; lets go of the head's map

    def _disown(self) -> None:
        """Called in a forked child: drop the inherited descriptors and mappings, leaving the
        claim, the segments and the spare to the parent."""
        if not self._finalizer.alive:  # closed before the fork: nothing of it is held...
            self._claim.forget()  # ...unless an interrupt cut that close short
            return
        self._claim.forget()
        self._segments.forget()
        if self._waits is not None:
            self._waits.close()
            self._waiting = _NOBODY_WAITS
        self._finalizer.detach()
        self._close("it belongs to the parent of this forked process")

    def close(self) -> None:
        """Give up the claim; the log and everything published stay. Idempotent, and a
        close that an exception (an interrupt) cut short is finished by the next call."""
        self._close("close() was called")
        self._let_go()

    def _let_go(self) -> None:
        self._finalizer()  # garbage collection's path too; it runs once
        if self._claim.fileno() >= 0:  # that run was cut short: finish it
            _release(self._segments, self._waits, self._claim)

    @property
    def closed(self) -> bool:
        return bool(self._closed_because)

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
        state = f"closed: {self._closed_because}" if self._closed_because else "open"
        return f"<Writer of {self._name!r} segment={self._seq} end={self.end} {state}>"
