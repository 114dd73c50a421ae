"""Crash tests: kill the writer anywhere, load readers hard, kill readers; what must still hold.

Every test runs real processes (fork) and is bounded in time. ATOMIC_LOG_SOAK_SECONDS sets
the length of each soak; by default 60 s of writer kills, 10 s of readers under load and
6 s of reader kills. Run with ``-s`` to see the figures.

Records check themselves: record ``pos`` carries ``check = pos * GOLDEN mod 2**64`` (a
bijection, so a torn or foreign record shows), and because every segment is filled before
the next one is made, record ``i`` of segment ``s`` has ``pos == s * segment_capacity + i``.
A torn, lost, repeated, moved or changed record breaks one of these; so does a writer that
resumes anywhere but right after the last published record.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from collections import Counter, deque
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import pytest
from support import (
    DTYPE,
    GOLDEN,
    JOIN_TIMEOUT,
    MASK,
    SHM,
    check_of,
    header_state,
    joined,
    reaping,
    receive,
    records,
    regions_of,
    segments_of,
    soak_seconds,
    start,
    view_problems,
)

from atomic_log_shm import AtomicLog, Chunk, LogNotFoundError, Snapshot
from atomic_log_shm._header import NO_SEGMENT

START_TIMEOUT = 20.0  # a forked child attaches and claims in milliseconds; the machine is shared
CHILD_GIVE_UP = 60.0  # a child whose parent vanished stops by itself


def changed_between(old: np.ndarray, new: np.ndarray) -> int:
    """How many positions two consecutive views both hold with different contents."""
    if not len(old) or not len(new):
        return 0
    first = max(int(old["pos"][0]), int(new["pos"][0]))
    last = min(int(old["pos"][-1]), int(new["pos"][-1]))
    if first > last:
        return 0
    a = old[first - int(old["pos"][0]) : last - int(old["pos"][0]) + 1]
    b = new[first - int(new["pos"][0]) : last - int(new["pos"][0]) + 1]
    return int(np.count_nonzero((a["pos"] != b["pos"]) | (a["check"] != b["check"])))


def last_pos(chunks: list[Chunk]) -> int:
    return int(chunks[-1].values["pos"][-1]) if chunks else -1


def shown(snapshot: Snapshot) -> np.ndarray:
    return joined(list(snapshot.chunks()))


def segment_files(name: str) -> dict[int, int]:
    """{segment number: size in bytes} of every segment region of log ``name`` in /dev/shm."""
    found = {}
    for seq, entry in segments_of(name):
        with contextlib.suppress(FileNotFoundError):
            found[seq] = os.stat(os.path.join(SHM, entry)).st_size
    return found


def errors_sent(conn: Connection) -> list[str]:
    """Whatever error reports a (now dead) child managed to send."""
    sent = []
    with contextlib.suppress(EOFError, OSError):
        while conn.poll(0):
            message = conn.recv()
            if isinstance(message, dict) and "error" in message:
                sent.append(str(message["error"]))
    return sent


def write_records(
    writer: Any, segment_capacity: int, start_pos: int, seed: int, until: float
) -> Iterator[tuple[int, float]]:
    """Append and extend (randomly mixed single records and batches of 0..3 segments) from
    ``start_pos`` until time.time() passes ``until``. Every 512 calls it yields the next
    position and the longest any one call took so far, in seconds."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(0, 3 * segment_capacity + 1, size=512).tolist()
    single = (rng.random(512) < 0.5).tolist()
    pos = start_pos
    slowest = 0.0
    clock = time.perf_counter
    while time.time() < until:
        for size, one in zip(sizes, single, strict=True):
            began = clock()
            if one:
                writer.append((pos, pos * GOLDEN & MASK))
                pos += 1
            else:
                writer.extend(records(pos, size))
                pos += size
            slowest = max(slowest, clock() - began)
        yield pos, slowest


# --- 1. The writer killed anywhere ---------------------------------------------------------

# Where a dead writer stopped, as told by what it left behind.
BETWEEN = "between rollovers"
KEPT_AHEAD = "between rollovers, a reclaimed segment's region kept for reuse as the next"
REGION_BEING_MADE = "rollover 1: next segment's region opened, not yet sized"
REGION_MADE = "rollover 2: next segment's region made, its slot not yet retired"
RETIRING = "rollover 3: the oldest segment's slot being retired"
RETIRED = "rollover 4: slot ready, new head not yet published"
NOT_UNLINKED = "rollover 5: new head published, oldest segment not yet reclaimed"
STAGES = (BETWEEN, KEPT_AHEAD, REGION_BEING_MADE, REGION_MADE, RETIRING, RETIRED, NOT_UNLINKED)


def kill_stage(name: str, head: int, slots: np.ndarray, segments: dict[int, int]) -> str:
    n = len(slots)
    nxt = head + 1
    epoch = int(slots[nxt % n]["epoch"])
    if head - n in segments:
        return NOT_UNLINKED
    if epoch == nxt:
        return RETIRED
    if nxt >= n and epoch == NO_SEGMENT:
        return RETIRING
    if nxt not in segments:
        return BETWEEN
    if segments[nxt] < DTYPE.itemsize:
        return REGION_BEING_MADE
    # A region made in a rollover is zeroed; one kept from a reclaimed segment holds records
    # (its last one has pos > 0). The writer is dead: opening the region disturbs nobody.
    (path,) = [e for seq, e in segments_of(name) if seq == nxt]
    with open(os.path.join(SHM, path), "rb") as f:
        f.seek(segments[nxt] - DTYPE.itemsize)
        return REGION_MADE if not any(f.read()) else KEPT_AHEAD


def claim_and_report(name: str, conn: Connection) -> tuple[AtomicLog, Any, dict[str, Any]] | None:
    """In a new writer process: claim, then send what the claim left in /dev/shm and the
    last position published (where to resume), before anything is written."""
    log = AtomicLog.attach(name)
    writer = log.try_claim_writer()
    first_try = writer is not None
    deadline = time.monotonic() + START_TIMEOUT
    while writer is None and time.monotonic() < deadline:
        time.sleep(0.005)
        writer = log.try_claim_writer()
    if writer is None:
        conn.send({"error": f"could not claim the writer within {START_TIMEOUT} s"})
        return None
    head, _ = header_state(name)
    started = {
        "first_try": first_try,
        "last": last_pos(list(log.snapshot().chunks())),
        "head": head,
        "segments": sorted(segment_files(name)),
    }
    conn.send(started)
    return log, writer, started


def _claim_and_write_until_killed(name: str, seed: int, conn: Connection) -> None:
    try:
        claimed = claim_and_report(name, conn)
        if claimed is None:
            return
        log, writer, started = claimed
        give_up = time.time() + CHILD_GIVE_UP
        for _ in write_records(writer, log.segment_capacity, started["last"] + 1, seed, give_up):
            pass
        conn.send({"error": f"not killed within {CHILD_GIVE_UP} s"})
    except BaseException as exc:
        with contextlib.suppress(Exception):
            conn.send({"error": repr(exc)})
        raise


def check_claim(started: dict[str, Any], last: int, slot_count: int, where: str) -> None:
    """(c) the new writer claimed at once, its predecessor being reaped, and found the last
    record published where it was; (d) its claim removed what the dead writer left."""
    assert started["first_try"], f"{where}: try_claim_writer() failed after the killed writer was reaped"
    assert started["last"] == last, (
        f"{where}: the new writer found last position {started['last']}, "
        f"but {last} was published before the kill: records lost or repeated"
    )
    assert len(started["segments"]) <= slot_count and max(started["segments"]) <= started["head"], (
        f"{where}: after the claim /dev/shm holds segments {started['segments']} "
        f"(head {started['head']}, {slot_count} slots)"
    )


def check_writer_killed(
    name: str, retained: int, segment: int, before: list[Chunk], where: str
) -> tuple[str, np.ndarray, np.ndarray]:
    """What must hold once a writer was SIGKILLed and reaped, before another one claims.

    Returns where the writer stopped, the records a reader attaching now sees, and those of
    ``before``, a view taken before the kill.
    """
    n = math.ceil(retained / segment) + 1
    segment_bytes = segment * DTYPE.itemsize
    head, slots = header_state(name)
    segments = segment_files(name)
    stage = kill_stage(name, head, slots, segments)
    # At most one segment beyond the head (half made), and one the writer did not reclaim.
    assert len(segments) <= n + 1 and max(segments) <= head + 1, (
        f"{where} ({stage}): segments {sorted(segments)} in /dev/shm with head {head}"
    )
    # A slot naming head + 1 means a rollover was cut short after its slot was retired: the
    # region must then have been made whole first. It may be gone, though: when an earlier
    # writer died there and the next one was killed before its own first rollover, that
    # one's claim removed the half-made region and left the slot as it was (readers take
    # the slot's old segment as reclaimed). The order itself is pinned down by
    # test_writer_sigkilled_at_each_step_of_a_rollover_...
    if int(slots[(head + 1) % n]["epoch"]) == head + 1 and head + 1 in segments:
        assert segments[head + 1] == segment_bytes, (
            f"{where}: the slot of segment {head + 1} was retired before its region was made"
        )
    # (a) a reader attaching now sees a whole, consistent window, nothing beyond the head.
    fresh = AtomicLog.attach(name)
    try:
        after = list(fresh.snapshot().chunks())
    finally:
        fresh.close()
    view, problems = view_problems(after, segment)
    assert not problems, f"{where} ({stage}): a reader attaching after the kill found {dict(problems)}"
    assert all(c.sequence <= head for c in after), (
        f"{where} ({stage}): a segment beyond head {head} was shown: {[c.sequence for c in after]}"
    )
    assert len(view) >= min(retained, last_pos(after) + 1), (
        f"{where} ({stage}): only {len(view)} records readable, {retained} are retained"
    )
    # (b) nothing seen published before the kill is lost or changed.
    seen, problems = view_problems(before, segment)
    assert not problems, f"{where}: the view taken before the kill had {dict(problems)}"
    assert last_pos(after) >= last_pos(before), (
        f"{where} ({stage}): position {last_pos(before)} was seen published before the kill, "
        f"only {last_pos(after)} after it"
    )
    assert changed_between(seen, view) == 0, f"{where} ({stage}): published records changed"
    return stage, view, seen


def claim_here_after_last_kill(log: AtomicLog, last: int, where: str) -> None:
    """This process claims after the last kill: it cleans up, continues at ``last + 1``."""
    writer = log.try_claim_writer()
    assert writer is not None, f"{where}: try_claim_writer() failed after the last writer was reaped"
    with writer:
        head, _ = header_state(log.name)
        segments = sorted(segment_files(log.name))
        n = math.ceil(log.retained_capacity / log.segment_capacity) + 1
        assert len(segments) <= n and max(segments) <= head, (
            f"{where}: after the claim /dev/shm holds segments {segments} (head {head}, {n} slots)"
        )
        writer.extend(records(last + 1, 2 * log.segment_capacity + 1))
    chunks = list(log.snapshot().chunks())
    _, problems = view_problems(chunks, log.segment_capacity)
    assert not problems and last_pos(chunks) == last + 2 * log.segment_capacity + 1, (
        f"{where}: after writing on from {last + 1} the view has {dict(problems)}, ends at {last_pos(chunks)}"
    )


def kill_writer_repeatedly(
    name: str, retained: int, segment: int, seconds: float, rng: np.random.Generator, totals: Counter[str]
) -> None:
    """Fork writers on a new log and SIGKILL each at a random moment, checking after each kill."""
    n = math.ceil(retained / segment) + 1
    tag = f"log {retained}/{segment}"
    with (
        AtomicLog.new(retained=retained, segment=segment, dtype=DTYPE, name=name) as log,
        reaping() as processes,
    ):
        snap = log.snapshot()  # one long-lived reader, refreshed across every kill
        last = -1  # the last position published, as seen after the previous kill
        recent: deque[tuple[list[Chunk], np.ndarray]] = deque(maxlen=4)
        held: list[tuple[list[Chunk], np.ndarray]] = []
        kills = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            where = f"{tag}, after {kills} kills survived"
            child, conn = start(processes, _claim_and_write_until_killed, name, int(rng.integers(1 << 62)))
            try:
                started = receive(conn, START_TIMEOUT, f"writer #{kills + 1} of {tag}")
                time.sleep(rng.uniform(0, 0.02))
                snap.refresh()
                before = list(snap.chunks())  # the last view before the kill: held from now on
                os.kill(child.pid, signal.SIGKILL)
                child.join(JOIN_TIMEOUT)
                assert child.exitcode == -signal.SIGKILL, (
                    f"{where}: the writer ended by itself (exit code {child.exitcode}): {errors_sent(conn)}"
                )
            finally:
                conn.close()
                if child.is_alive():
                    child.kill()
                    child.join(JOIN_TIMEOUT)
            processes.remove(child)
            check_claim(started, last, n, where)
            stage, view, seen = check_writer_killed(name, retained, segment, before, where)
            kills += 1
            totals[stage] += 1
            # The long-lived snapshot, refreshed, agrees with the fresh one.
            snap.refresh()
            refreshed, problems = view_problems(list(snap.chunks()), segment)
            assert not problems, f"{where} ({stage}): the refreshed long-lived snapshot had {dict(problems)}"
            assert (
                changed_between(refreshed, view) == 0
                and refreshed["pos"][-1:].tolist() == view["pos"][-1:].tolist()
            ), f"{where} ({stage}): the refreshed snapshot disagrees with a fresh one"
            # Views held across kills and rollovers never change.
            recent.append((before, seen))
            if kills % 25 == 1:
                held.append((before, seen))
            for chunks, copy in recent:
                assert np.array_equal(joined(chunks), copy), (
                    f"{where}: a view held from an earlier kill changed"
                )
            totals["records checked"] += len(view) + len(seen) + len(refreshed)
            totals["views checked"] += 3
            last = int(view["pos"][-1]) if len(view) else -1

        claim_here_after_last_kill(log, last, f"{tag}, after {kills} kills")
        last += 2 * segment + 1
        for chunks, copy in held:
            assert np.array_equal(joined(chunks), copy), f"{tag}: a view held since early on changed"
        totals["views held and re-checked"] += len(held)
        totals["kills"] += kills
        totals["records published"] += last + 1
    # The log's owner unlinked it: nothing of the log or its dead writers stays.
    assert regions_of(name) == [], f"{tag}: left in /dev/shm after unlink: {regions_of(name)}"


def test_writer_sigkilled_anywhere_loses_repeats_tears_and_leaks_nothing(log_name: Any) -> None:
    # (retained, segment): small segments make rollovers frequent; tiny ones make most
    # kills land inside one.
    geometries = [(100, 16), (100, 64), (100, 32), (10, 2), (3, 1), (7, 4)]
    seconds = soak_seconds(60.0)
    rng = np.random.default_rng()
    totals: Counter[str] = Counter()
    began = time.monotonic()
    for retained, segment in geometries:
        kill_writer_repeatedly(log_name(), retained, segment, seconds / len(geometries), rng, totals)
    elapsed = time.monotonic() - began
    stages = {stage: totals[stage] for stage in STAGES}
    print(
        f"\nwriter killed anywhere: {totals['kills']} SIGKILLs survived on {len(geometries)} logs in "
        f"{elapsed:.1f} s; {totals['records published']} records published, "
        f"{totals['records checked']} records in {totals['views checked']} views checked, "
        f"{totals['views held and re-checked']} views held across kills re-checked; where the kills "
        f"landed: {stages}"
    )
    assert totals["kills"] >= len(geometries), f"only {totals['kills']} kills in {elapsed:.1f} s"


class _SigkillAtStore:
    """The writer's header words, passed through, except that the process SIGKILLs itself
    just before its ``before``-th store or just after its ``after``-th. It also stands in
    for the claim's atomic view, whose cells make the writer's release stores of a count
    (``cell_u64``): those are counted as stores too."""

    def __init__(self, words: Any, *, before: int = 0, after: int = 0) -> None:
        self._words = words
        self._before = before
        self._after = after
        self._stores = 0

    def __getitem__(self, index: int) -> int:
        return int(self._words[index])

    def __setitem__(self, index: int, value: int) -> None:
        self._stores += 1
        if self._stores == self._before:
            sigkill_myself()
        self._words[index] = value
        if self._stores == self._after:
            sigkill_myself()

    def cell_u64(self, offset: int) -> Any:
        words = self

        class Cell:
            def store(self, value: int, order: int = 0) -> None:
                words[offset // 8] = value

        return Cell()


def sigkill_myself(*_: Any) -> None:
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(CHILD_GIVE_UP)


# Each step of a rollover, and where the writer stopped as told by what it left. The header
# stores of a rolling append, in order: the retired slot's epoch := -1, its count := 0, its
# start, its token (the new region's name); its epoch := the new segment; head := the new
# segment; (reclaim the oldest;) count := 1.
KILL_POINTS = {
    "before its region is sized": REGION_BEING_MADE,
    "before the slot's epoch := -1": REGION_MADE,
    "after the slot's epoch := -1": RETIRING,
    "after the slot's count := 0": RETIRING,
    "after the slot's start := its position": RETIRING,
    "after the slot's token := its region's": RETIRING,
    "after the slot's epoch := new": RETIRED,
    "after head := new, before the oldest is reclaimed": NOT_UNLINKED,
    "before the first record's count": BETWEEN,
}
AT_STORE = {
    "before the slot's epoch := -1": {"before": 1},
    "after the slot's epoch := -1": {"after": 1},
    "after the slot's count := 0": {"after": 2},
    "after the slot's start := its position": {"after": 3},
    "after the slot's token := its region's": {"after": 4},
    "after the slot's epoch := new": {"after": 5},
    "after head := new, before the oldest is reclaimed": {"after": 6},
    "before the first record's count": {"before": 7},
}


def _sigkill_inside_a_rollover(name: str, point: str, by_extend: bool, conn: Connection) -> None:
    """Claim, fill the head segment, then roll over and SIGKILL this process at ``point``."""
    try:
        claimed = claim_and_report(name, conn)
        if claimed is None:
            return
        log, writer, started = claimed
        segment = log.segment_capacity
        following = started["last"] + 1
        rolls_at = (started["head"] + 1) * segment  # the first position of the next segment
        writer.extend(records(following, rolls_at - following))
        if point == "before its region is sized":
            os.posix_fallocate = sigkill_myself  # this process only: it dies in there
        else:
            writer._words = writer._claim.view = _SigkillAtStore(writer._words, **AT_STORE[point])
        if by_extend:
            writer.extend(records(rolls_at, segment + 2))
        else:
            writer.append((rolls_at, rolls_at * GOLDEN & MASK))
        conn.send({"error": f"survived the rollover, to be killed {point}"})
    except BaseException as exc:
        with contextlib.suppress(Exception):
            conn.send({"error": repr(exc)})
        raise


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_writer_sigkilled_at_each_step_of_a_rollover_loses_nothing_and_next_claim_cleans_up(
    log_name: Any, point: str
) -> None:
    kills = 0
    for retained, segment in [(4, 4), (10, 4)]:  # 2 slots, and 4
        n = math.ceil(retained / segment) + 1
        name = log_name()
        tag = f"log {retained}/{segment}, killed {point}"
        with (
            AtomicLog.new(retained=retained, segment=segment, dtype=DTYPE, name=name) as log,
            reaping() as processes,
        ):
            last = -1
            for i in range(2 * n + 1):  # the first rollovers find slots never used; later ones retire
                where = f"{tag}, kill {i + 1}"
                before = list(log.snapshot().chunks())
                child, conn = start(processes, _sigkill_inside_a_rollover, name, point, bool(i % 2))
                try:
                    started = receive(conn, START_TIMEOUT, where)
                    child.join(JOIN_TIMEOUT)
                    assert child.exitcode == -signal.SIGKILL, (
                        f"{where}: the writer lived on (exit code {child.exitcode}): {errors_sent(conn)}"
                    )
                finally:
                    conn.close()
                processes.remove(child)
                check_claim(started, last, n, where)
                stage, view, _ = check_writer_killed(name, retained, segment, before, where)
                new_head = started["head"] + 1
                expected = KILL_POINTS[point]
                if expected == RETIRING and new_head < n:
                    expected = REGION_MADE  # a slot never used has epoch -1 already
                if expected == NOT_UNLINKED and new_head < n:
                    expected = BETWEEN  # there was no segment to reclaim yet
                assert stage == expected, f"{where}: the kill left the log {stage!r}"
                last = int(view["pos"][-1])
                kills += 1
            claim_here_after_last_kill(log, last, tag)
        assert regions_of(name) == [], f"{tag}: left in /dev/shm after unlink: {regions_of(name)}"
    print(f" [{kills} kills {point}]", end="")


# --- 2. Readers under load -----------------------------------------------------------------


def _write_until(name: str, until: float, seed: int, conn: Connection) -> None:
    try:
        log = AtomicLog.attach(name)
        writer = log.try_claim_writer()
        if writer is None:
            conn.send({"error": "the log already has a writer"})
            return
        rng = np.random.default_rng(seed)
        first = last_pos(list(log.snapshot().chunks())) + 1
        # Count the regions made (each is reserved with posix_fallocate): the other rollovers
        # reused the pages of a reclaimed segment, which readers must never see change.
        made = Counter[str]()
        fallocate = os.posix_fallocate

        def counted(fd: int, offset: int, length: int) -> None:
            made["regions"] += 1
            fallocate(fd, offset, length)

        os.posix_fallocate = counted  # in this writer process only
        wrote = {"first": first, "next": first, "calls": 0, "slowest_call_s": 0.0}
        for pos, slowest in write_records(writer, log.segment_capacity, first, seed, until):
            wrote.update(next=pos, calls=wrote["calls"] + 512, slowest_call_s=slowest)
            if rng.random() < 0.3:  # vary the pace: readers also see a head that grows slowly
                time.sleep(rng.uniform(0, 0.002))
        writer.close()
        segment = log.segment_capacity
        wrote.update(
            rollovers=(wrote["next"] - 1) // segment - first // segment, regions_made=made["regions"]
        )
        conn.send(wrote)
    except BaseException as exc:
        with contextlib.suppress(Exception):
            conn.send({"error": repr(exc)})
        raise


def _read_and_verify_until(name: str, segment: int, until: float, seed: int, conn: Connection) -> None:
    """Refresh (mostly), re-snapshot or re-attach in a loop, checking every view, and hold a
    few snapshots to the end; send the counts of what was checked and of every violation."""
    try:
        rng = np.random.default_rng(seed)
        counts: Counter[str] = Counter()
        problems: Counter[str] = Counter()
        examples: list[str] = []
        log = AtomicLog.attach(name)
        snap = log.snapshot()
        previous = np.empty(0, DTYPE)
        held: list[tuple[Snapshot, np.ndarray]] = []
        held_arrays: list[tuple[Any, np.ndarray]] = []  # bare chunk arrays, slices, records
        while time.time() < until:
            choice = rng.random()
            if choice < 0.9:
                snap.refresh()
                counts["refreshes"] += 1
            elif choice < 0.97:
                snap = log.snapshot()
                counts["snapshots"] += 1
            else:
                log.close()  # the snapshots taken stay readable
                log = AtomicLog.attach(name)
                snap = log.snapshot()
                counts["attaches"] += 1
            chunks = list(snap.chunks())
            view, found = view_problems(chunks, segment)
            if len(view) and len(previous):
                found["window went back"] += int(
                    view["pos"][0] < previous["pos"][0] or view["pos"][-1] < previous["pos"][-1]
                )
            found["changed (seen before with other content)"] += changed_between(previous, view)
            found = +found
            if found and len(examples) < 10:
                examples.append(f"view of segments {[c.sequence for c in chunks]}: {dict(found)}")
            problems.update(found)
            counts["views"] += 1
            counts["records"] += len(view)
            previous = view
            if counts["views"] % 400 == 0 and len(held) < 12:
                kept = log.snapshot()
                held.append((kept, shown(kept)))
                if chunks:  # the oldest segment is the next to be reclaimed (and reused)
                    oldest = chunks[0].values
                    held_arrays += [(x, np.array(x)) for x in (oldest, oldest[1:3], next(iter(snap)))]
            if choice < 0.02:  # fall behind now and then: refresh then rebuilds
                time.sleep(rng.uniform(0, 0.005))
        newest = last_pos(list(snap.chunks()))
        for kept, copy in held:
            view, found = view_problems(list(kept.chunks()), segment)
            found["held snapshot changed"] += not np.array_equal(view, copy)
            problems.update(+found)
            if len(copy):
                counts["held rollovers"] = max(
                    counts["held rollovers"], (newest - int(copy["pos"][-1])) // segment
                )
            counts["held records re-checked"] += len(view)
        counts["held snapshots re-checked"] = len(held)
        for kept_values, copy in held_arrays:
            if np.array(kept_values).tobytes() != copy.tobytes():
                problems["held array or record changed"] += 1
        counts["held arrays re-checked"] = len(held_arrays)
        conn.send({"counts": dict(counts), "problems": dict(+problems), "examples": examples})
    except BaseException as exc:
        with contextlib.suppress(Exception):
            conn.send({"error": repr(exc)})
        raise


def test_readers_under_load_never_see_torn_reordered_changed_duplicated_or_missing_records(
    log_name: Any,
) -> None:
    seconds = soak_seconds(10.0)
    readers = 4
    retained, segment = 256, 32
    name = log_name()
    with AtomicLog.new(retained=retained, segment=segment, dtype=DTYPE, name=name), reaping() as processes:
        until = time.time() + seconds
        _, writer_conn = start(processes, _write_until, name, until, 1)
        reader_conns = [
            start(processes, _read_and_verify_until, name, segment, until, 100 + i)[1] for i in range(readers)
        ]
        wrote = receive(writer_conn, seconds + START_TIMEOUT, "the writer")
        results = [receive(c, seconds + START_TIMEOUT, f"reader {i}") for i, c in enumerate(reader_conns)]
        for p in processes:
            p.join(JOIN_TIMEOUT)
            assert p.exitcode == 0, f"{p.name} exited with {p.exitcode}"
    counts: Counter[str] = Counter()
    problems: Counter[str] = Counter()
    for result in results:
        counts.update(result["counts"])
        problems.update(result["problems"])
    counts["held rollovers"] = max(r["counts"].get("held rollovers", 0) for r in results)
    published = wrote["next"] - wrote["first"]
    summary = (
        f"{readers} readers under load for {seconds:.0f} s: {counts['views']} views checked "
        f"({counts['refreshes']} refreshes, {counts['snapshots']} new snapshots, {counts['attaches']} "
        f"re-attaches), {counts['records']} records checked; {counts['held snapshots re-checked']} "
        f"snapshots and {counts['held arrays re-checked']} bare chunk arrays, slices and records "
        f"held across up to {counts['held rollovers']} rollovers re-checked unchanged; "
        f"the writer published {published} records ({published / seconds:.0f}/s) over "
        f"{wrote['rollovers']} rollovers ({wrote['rollovers'] - wrote['regions_made']} reused the "
        f"pages of a reclaimed segment), slowest of its "
        f"{wrote['calls']} calls {wrote['slowest_call_s'] * 1000:.1f} ms; violations: {dict(problems) or 0}"
    )
    print("\n" + summary)
    examples = [e for r in results for e in r["examples"]]
    assert not problems, f"{summary}; examples: {examples}"
    assert all(r["counts"]["views"] > 0 for r in results), summary
    assert published > 10 * retained, summary


# --- 3. Readers that die --------------------------------------------------------------------


def _hold_and_refresh_until_killed(name: str, segment: int, conn: Connection) -> None:
    """Hold snapshots and chunk arrays while refreshing and checking; report any violation."""
    try:
        log = AtomicLog.attach(name)
        snap = log.snapshot()
        held = []
        deadline = time.monotonic() + CHILD_GIVE_UP
        views = 0
        while time.monotonic() < deadline:
            snap.refresh()
            chunks = list(snap.chunks())
            _, problems = view_problems(chunks, segment)
            if problems:
                conn.send({"error": f"view of segments {[c.sequence for c in chunks]}: {dict(problems)}"})
            views += 1
            if views % 20 == 0 and len(held) < 50:
                held.append((log.snapshot(), [c.values for c in chunks]))
            if views == 100:
                conn.send("holding")
    except BaseException as exc:
        with contextlib.suppress(Exception):
            conn.send({"error": repr(exc)})
        raise


def test_readers_sigkilled_holding_snapshots_stop_nothing_and_leave_nothing(log_name: Any) -> None:
    seconds = soak_seconds(6.0)
    retained, segment = 128, 16
    name = log_name()
    rng = np.random.default_rng()
    killed = 0
    stalls: list[float] = []
    with (
        AtomicLog.new(retained=retained, segment=segment, dtype=DTYPE, name=name) as log,
        reaping() as processes,
    ):
        until = time.time() + seconds
        _, writer_conn = start(processes, _write_until, name, until, 2)
        survivor_conns = [
            start(processes, _read_and_verify_until, name, segment, until, 200 + i)[1] for i in range(2)
        ]
        snap = log.snapshot()

        def kill_readers_holding_snapshots(count: int) -> None:
            nonlocal killed
            victims = [start(processes, _hold_and_refresh_until_killed, name, segment) for _ in range(count)]
            for i, (_, conn) in enumerate(victims):
                assert receive(conn, START_TIMEOUT, f"reader {killed + i} to be killed") == "holding"
            time.sleep(rng.uniform(0, 0.03))
            for victim, _ in victims:
                os.kill(victim.pid, signal.SIGKILL)
            for victim, conn in victims:
                victim.join(JOIN_TIMEOUT)
                errors = errors_sent(conn)
                assert victim.exitcode == -signal.SIGKILL, f"a reader ended by itself: {errors}"
                assert not errors, f"a reader found violations before it was killed: {errors}"
                conn.close()
                processes.remove(victim)
            killed += count

        while time.time() < until - 1.5:
            kill_readers_holding_snapshots(3)
            # The writer goes on: what it publishes next becomes visible promptly.
            snap.refresh()
            before = last_pos(list(snap.chunks()))
            waited = time.monotonic()
            while last_pos(list(snap.chunks())) <= before and time.monotonic() - waited < 5:
                time.sleep(0.001)
                snap.refresh()
            stalls.append(time.monotonic() - waited)
            assert last_pos(list(snap.chunks())) > before, (
                f"after {killed} readers were killed the writer published nothing for 5 s"
            )

        wrote = receive(writer_conn, seconds + START_TIMEOUT, "the writer")
        results = [
            receive(c, seconds + START_TIMEOUT, f"surviving reader {i}") for i, c in enumerate(survivor_conns)
        ]
        # The writer is gone now; the last readers die too, holding their snapshots.
        kill_readers_holding_snapshots(3)
        for p in processes:
            p.join(JOIN_TIMEOUT)
        snap_records = shown(snap)
        del snap

        # A log whose readers all died re-attaches, re-claims and continues where it was.
        again = AtomicLog.attach(name)
        try:
            chunks = list(again.snapshot().chunks())
            view, problems = view_problems(chunks, segment)
            assert not problems and changed_between(snap_records, view) == 0
            assert last_pos(chunks) == wrote["next"] - 1, "the last record published is not the last shown"
            writer = again.try_claim_writer()
            assert writer is not None, "no writer could claim a log whose readers were all killed"
            with writer:
                writer.extend(records(wrote["next"], 3 * segment))
            chunks = list(again.snapshot().chunks())
            view, problems = view_problems(chunks, segment)
            assert not problems and last_pos(chunks) == wrote["next"] + 3 * segment - 1
        finally:
            again.close()
        log.unlink()
        assert regions_of(name) == [], f"left in /dev/shm after unlink: {regions_of(name)}"
        with pytest.raises(LogNotFoundError):
            AtomicLog.attach(name)
    # ... and its name can carry a new log at once.
    writer, log = AtomicLog.new_claimed(retained=retained, segment=segment, dtype=DTYPE, name=name)
    with log, writer:
        writer.extend(records(0, 5))
        assert last_pos(list(AtomicLog.attach(name).snapshot().chunks())) == 4
    assert regions_of(name) == []

    problems = Counter()
    views = records_checked = 0
    for result in results:
        problems.update(result["problems"])
        views += result["counts"]["views"]
        records_checked += result["counts"]["records"]
    published = wrote["next"] - wrote["first"]
    summary = (
        f"readers killed: {killed} readers SIGKILLed holding snapshots over {seconds:.0f} s; the writer "
        f"published {published} records meanwhile over {wrote['rollovers']} rollovers "
        f"({wrote['rollovers'] - wrote['regions_made']} reused reclaimed pages; slowest of its "
        f"{wrote['calls']} calls {wrote['slowest_call_s'] * 1000:.1f} ms, longest wait for progress "
        f"after a kill {max(stalls, default=0) * 1000:.1f} ms); 2 surviving readers checked {views} views, "
        f"{records_checked} records; violations: {dict(problems) or 0}"
    )
    print("\n" + summary)
    assert not problems, summary
    assert killed >= 6, summary


def _wait_poll_and_verify(name: str, conn: Connection) -> None:
    """Follow the log with a cursor, blocking in wait() between polls; report every wake-up."""
    try:
        log = AtomicLog.attach(name)
        cursor = log.cursor("newest")
        give_up = time.monotonic() + CHILD_GIVE_UP
        while time.monotonic() < give_up:
            conn.send(("waiting", cursor.position))
            cursor.wait(timeout=CHILD_GIVE_UP)
            woke = time.monotonic()  # CLOCK_MONOTONIC: comparable across processes
            polled = cursor.poll()
            got = np.concatenate(polled.arrays) if polled.arrays else np.empty(0, DTYPE)
            wrong = int(np.count_nonzero(got["pos"] != polled.start + np.arange(len(got))))
            wrong += int(np.count_nonzero(got["check"] != check_of(got["pos"])))
            conn.send(("woke", woke, polled.start, len(got), wrong + polled.missed))
    except BaseException as exc:
        with contextlib.suppress(Exception):
            conn.send({"error": repr(exc)})
        raise


def waiting_flag(name: str) -> int:
    """The 'waiting' word of the log's wait region (see atomic_log_shm/_wait.py)."""
    (path,) = [e for e in regions_of(name) if e.endswith(".wait")]
    return int(np.fromfile(os.path.join(SHM, path), "<i8", count=2)[1])


def test_readers_sigkilled_asleep_in_wait_cost_the_writer_one_wake_and_others_still_wake(
    log_name: Any,
) -> None:
    name = log_name()
    rounds = 5
    slowest_publication = 0.0
    wake_latencies: list[float] = []
    writer, log = AtomicLog.new_claimed(retained=64, segment=16, dtype=DTYPE, name=name)
    with log, writer, reaping() as processes:
        pos = 0

        def publish(count: int) -> None:
            nonlocal pos, slowest_publication
            began = time.perf_counter()
            writer.extend(records(pos, count))
            slowest_publication = max(slowest_publication, time.perf_counter() - began)
            pos += count

        def start_waiters(count: int) -> list[tuple[Any, Connection]]:
            waiters = [start(processes, _wait_poll_and_verify, name) for _ in range(count)]
            for _, conn in waiters:
                assert receive(conn, START_TIMEOUT, "a waiter")[0] == "waiting"
            return waiters

        def asleep() -> None:
            deadline = time.monotonic() + START_TIMEOUT
            while not waiting_flag(name) and time.monotonic() < deadline:
                time.sleep(0.001)
            assert waiting_flag(name) == 1, "the waiters never set 'waiting'"
            time.sleep(0.05)  # now in FUTEX_WAIT, or about to be

        def sigkill(waiters: list[tuple[Any, Connection]]) -> None:
            for waiter, _ in waiters:
                os.kill(waiter.pid, signal.SIGKILL)
            for waiter, conn in waiters:
                waiter.join(JOIN_TIMEOUT)
                assert waiter.exitcode == -signal.SIGKILL, f"a waiter ended by itself: {errors_sent(conn)}"
                conn.close()
                processes.remove(waiter)

        publish(5)
        # Waiters killed asleep: the next publication wakes nobody, so the writer clears
        # 'waiting' and goes back to publishing without any system call.
        for _ in range(rounds):
            victims = start_waiters(3)
            asleep()
            sigkill(victims)
            publish(1 + int(pos % 7))
            assert waiting_flag(name) == 0, "after waking nobody the writer left 'waiting' set"
            publish(40)  # and a rollover or two, with nobody waiting
        # Waiters killed while others wait too: the survivors still wake at once.
        survivors = start_waiters(2)
        for _ in range(rounds):
            victims = start_waiters(3)
            asleep()
            sigkill(victims)
            published_at = time.monotonic()
            first = pos
            publish(1)  # one publication: each survivor wakes once and gets just this record
            for _, conn in survivors:
                kind, woke, start_pos, count, wrong = receive(conn, START_TIMEOUT, "a surviving waiter")
                assert kind == "woke" and wrong == 0, f"a surviving waiter got {count} records, {wrong} wrong"
                assert (start_pos, count) == (first, 1), f"a surviving waiter got {count} from {start_pos}"
                wake_latencies.append(woke - published_at)
                assert receive(conn, START_TIMEOUT, "a surviving waiter")[0] == "waiting"
        sigkill(survivors)
        publish(1)
        assert waiting_flag(name) == 0
    assert regions_of(name) == []
    print(
        f"\nwaiters killed: {rounds * 6} readers SIGKILLed asleep in wait(); the writer's slowest "
        f"publication {slowest_publication * 1000:.2f} ms; surviving waiters woke "
        f"{max(wake_latencies) * 1000:.1f} ms after the publication at worst "
        f"(median {float(np.median(wake_latencies)) * 1000:.1f} ms)"
    )
    assert max(wake_latencies) < 2.0, "a surviving waiter slept on after the publication"
