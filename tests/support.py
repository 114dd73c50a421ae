"""What the test files share: how they look at a log from outside (its regions in /dev/shm,
its mappings in a process, the records a snapshot shows), records that check themselves,
child processes that report back, bystanders, interrupts at every line, waiters. Only what
two test files or more need lives here; nothing imports a test module.

A log ``NAME`` owns the header region ``NAME`` and, for the nonce (16 hex digits) drawn
when it was made, segment regions ``NAME@<nonce>.<seq>.<token>`` (the token: 16 hex
digits drawn for each region), a wait region ``NAME@<nonce>.wait`` and a claim region
``NAME@<nonce>.claim``. These helpers spell that out on their own rather than ask the
library, so that a mistake in its naming shows up in the tests.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import itertools
import json
import multiprocessing
import os
import pickle
import pwd
import re
import struct
import subprocess
import sys
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from types import FrameType
from typing import Any, NamedTuple

import numpy as np

from atomic_log_shm import AtomicLog, AtomicLogError, Chunk, LogNotFoundError, _segment
from atomic_log_shm._header import FIXED, SLOT

SHM = "/dev/shm"


def unique_name() -> str:
    """A log name no other test uses; conftest.py's leak check counts it as this session's."""
    return f"alstest-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def regions_of(name: str) -> list[str]:
    """The /dev/shm entries of log ``name``, sorted: its header, segments and wait region, any nonce."""
    return sorted(e for e in os.listdir(SHM) if e == name or e.startswith(name + "@"))


def segment_number(name: str, entry: str) -> int | None:
    """The number of the segment if ``entry`` is a segment region of log ``name``, else None."""
    m = re.fullmatch(re.escape(name) + r"@[0-9a-f]{16}\.([0-9]+)\.[0-9a-f]{16}", entry)
    return int(m[1]) if m else None


def segments_of(name: str) -> list[tuple[int, str]]:
    """(number, entry) of each segment region of log ``name`` in /dev/shm, any nonce, by entry."""
    return [(seq, e) for e in regions_of(name) if (seq := segment_number(name, e)) is not None]


def values(snap: Any) -> list[int]:
    """The records a snapshot of int records shows, oldest first, as Python ints."""
    return [int(v) for v in snap]


class Mapping(NamedTuple):
    """One line of /proc/<pid>/maps."""

    start: int
    end: int
    perms: str  # e.g. "r--s": read, no write, no execute, shared
    inode: int
    path: str  # "... (deleted)" once the region's name is gone

    def holds(self, address: int) -> bool:
        return self.start <= address < self.end

    @property
    def region(self) -> str:
        """The name the mapped region has, or had, in /dev/shm."""
        return self.path.removesuffix(" (deleted)").removeprefix(SHM + "/")


def mappings_of(name: str, pid: int | str = "self") -> list[Mapping]:
    """Every mapping, in process ``pid``, of a region of log ``name`` (its header, segments
    or wait region), whether or not the region still has its name."""
    header = f"{SHM}/{name}"
    found = []
    with open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) < 6:
                continue
            path = fields[5].rstrip("\n")
            region = path.removesuffix(" (deleted)")
            if region == header or region.startswith(header + "@"):
                start, end = (int(x, 16) for x in fields[0].split("-"))
                found.append(Mapping(start, end, fields[1], int(fields[4]), path))
    return found


def mappings_and_fds(name: str) -> tuple[int, int]:
    """How many mappings of log ``name``'s regions, and how many descriptors, this process holds."""
    return len(mappings_of(name)), len(os.listdir("/proc/self/fd"))


OTHER_USER = "alsnobody"  # an unprivileged local user, for tests of what other users can do


def other_user() -> int:
    """The uid of ``OTHER_USER``, made once (tests that use it run as root only)."""
    try:
        return pwd.getpwnam(OTHER_USER).pw_uid
    except KeyError:
        subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", OTHER_USER], check=True)
        return pwd.getpwnam(OTHER_USER).pw_uid


def become(uid: int | None) -> None:
    """In a forked child: drop root for user ``uid`` (its own group, no others); None: stay."""
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)


# -- Records that check themselves ---------------------------------------------------------
#
# Record ``pos`` carries ``check = pos * GOLDEN mod 2**64`` (a bijection, so a torn or foreign
# record shows), and because every segment is filled before the next one is made, record
# ``i`` of segment ``s`` has ``pos == s * segment_capacity + i``.

DTYPE = np.dtype([("pos", "<i8"), ("check", "<u8")])
GOLDEN = 0x9E3779B97F4A7C15
MASK = (1 << 64) - 1


def check_of(pos: np.ndarray) -> np.ndarray:
    """The check field of the records at positions ``pos``."""
    return pos.astype(np.uint64) * np.uint64(GOLDEN)  # wraps modulo 2**64


def records(start: int, count: int) -> np.ndarray:
    """The ``count`` records from position ``start``, as the writer of these tests appends them."""
    out = np.empty(count, DTYPE)
    out["pos"] = np.arange(start, start + count)
    out["check"] = check_of(out["pos"])
    return out


def view_problems(chunks: list[Chunk], segment_capacity: int) -> tuple[np.ndarray, Counter[str]]:
    """Check one view: records intact, positions consecutive, chunks whole, in order, in place.

    Returns a copy of the records shown and how many violations of each kind it has.
    """
    problems: Counter[str] = Counter()
    if not chunks:
        return np.empty(0, DTYPE), problems
    for before, after in itertools.pairwise(chunks):
        problems["chunk out of sequence"] += after.sequence != before.sequence + 1
    for chunk in chunks[:-1]:
        problems["non-last chunk not full"] += len(chunk.values) != segment_capacity
    for chunk in chunks:
        problems["empty chunk"] += len(chunk.values) == 0
        where = chunk.sequence * segment_capacity + np.arange(len(chunk.values))
        problems["record not at its segment index"] += int(np.count_nonzero(chunk.values["pos"] != where))
    view = joined(chunks)
    pos = view["pos"]
    problems["torn (check field wrong)"] += int(np.count_nonzero(view["check"] != check_of(pos)))
    step = np.diff(pos)
    problems["duplicated in one view"] += int(np.count_nonzero(step == 0))
    problems["out of order"] += int(np.count_nonzero(step < 0))
    problems["gap inside a view"] += int(np.count_nonzero(step > 1))
    return view, +problems


def joined(chunks: list[Chunk]) -> np.ndarray:
    """A copy of the records of ``chunks``, in order."""
    return np.concatenate([c.values for c in chunks]) if chunks else np.empty(0, DTYPE)


def header_state(name: str) -> tuple[int, np.ndarray]:
    """The head and the slot table, read straight from the header region's bytes."""
    with open(os.path.join(SHM, name), "rb") as f:
        raw = f.read()
    fixed = np.frombuffer(raw, FIXED, count=1)[0]
    slots = np.frombuffer(raw, SLOT, count=int(fixed["slot_count"]), offset=FIXED.itemsize)
    return int(fixed["head"]), slots.copy()


# -- Forked children that send on a pipe ---------------------------------------------------

# fork: a child starts in milliseconds, which is what makes hundreds of kills affordable.
CTX = multiprocessing.get_context("fork")
JOIN_TIMEOUT = 10.0


def soak_seconds(default: float) -> float:
    """How long a soak runs: ATOMIC_LOG_SOAK_SECONDS, or ``default``."""
    value = os.environ.get("ATOMIC_LOG_SOAK_SECONDS")
    return float(value) if value else default


@contextlib.contextmanager
def reaping() -> Iterator[list[Any]]:
    """A list to put started processes in; whatever is still alive at the end is SIGKILLed."""
    processes: list[Any] = []
    try:
        yield processes
    finally:
        for p in processes:
            if p.is_alive():
                p.kill()
        for p in processes:
            p.join(JOIN_TIMEOUT)


def start(processes: list[Any], target: Any, *args: Any) -> tuple[Any, Connection]:
    """Fork ``target(*args, conn)``; return the process and the end of a pipe it sends on."""
    reading, sending = CTX.Pipe(duplex=False)
    process = CTX.Process(target=target, args=(*args, sending), daemon=True)
    process.start()
    processes.append(process)
    sending.close()
    return process, reading


def receive(conn: Connection, timeout: float, what: str) -> Any:
    """The next message from ``what`` within ``timeout`` seconds; a reported error fails the test."""
    assert conn.poll(timeout), f"no message from {what} within {timeout} s"
    message = conn.recv()
    assert not (isinstance(message, dict) and "error" in message), f"{what} failed: {message['error']}"
    return message


# -- Children that report back, spawned or forked -----------------------------------------

TIMEOUT = 20.0  # seconds any one wait for a child may take before the test fails


class ChildError(Exception):
    """The traceback of an exception raised in a child process."""


def _run_child(out: Any, fn: Callable[..., Any], *args: Any) -> None:
    """In the child: run ``fn(out, *args)`` and put what it returned, or raised, on ``out``."""
    try:
        message: tuple[Any, ...] = ("return", fn(out, *args))
    except BaseException as exc:
        text = traceback.format_exc()
        try:
            pickle.dumps(exc)
        except Exception:
            exc = RuntimeError(f"unpicklable {type(exc).__name__} in child")
        message = ("raise", exc, text)
    out.put(message)


class Child:
    """A process running ``fn(out, *args)``; its messages are read with a timeout. The
    function may report intermediate steps with ``out.put(("step", value))``; its return
    value (or exception) reaches the test through the same queue. Used as a context
    manager, it is stopped at the end of the block."""

    def __init__(self, ctx: Any, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.out = ctx.Queue()
        self.process = ctx.Process(target=_run_child, args=(self.out, fn, *args), daemon=True)
        self.process.start()

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.process.pid

    def _next(self, kind: str) -> Any:
        """The child's next message, which must be a ``kind`` (its exception is raised here)."""
        message = self.out.get(timeout=TIMEOUT)
        if message[0] == "raise":
            exc = message[1]
            raise exc from ChildError(message[2])  # the child's traceback, as the cause
        assert message[0] == kind, f"expected a {kind} from the child, got {message!r}"
        return message[1]

    def step(self) -> Any:
        """The next value the child reported with ``out.put(("step", value))``."""
        return self._next("step")

    def result(self) -> Any:
        """What the child's function returned (its exception is raised here)."""
        return self._next("return")

    def join(self) -> int | None:
        """Wait for the child to exit; its exit code."""
        self.process.join(TIMEOUT)
        assert not self.process.is_alive(), "the child did not exit in time"
        return self.process.exitcode

    def stop(self) -> None:
        """Kill the child if it still runs, and let go of its queue."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join(TIMEOUT)
        self.out.close()
        self.out.join_thread()


def is_header_or_segment(path: str, name: str) -> bool:
    """Whether ``path`` is log ``name``'s header region or one of its segment regions."""
    region = path.removeprefix(f"{SHM}/")
    return region != path and (region == name or segment_number(name, region) is not None)


def log_mappings(pid: int, name: str) -> list[Mapping]:
    """Every mapping of log ``name``'s header or segments in process ``pid`` (not its wait region)."""
    everything = mappings_of(name, pid)
    return [m for m in everything if is_header_or_segment(m.path.removesuffix(" (deleted)"), name)]


def mapping_of(array: np.ndarray, name: str) -> Mapping:
    """The mapping of this process that ``array`` views."""
    [mapping] = [m for m in log_mappings(os.getpid(), name) if m.holds(array.ctypes.data)]
    return mapping


def segments_in_shm(name: str) -> dict[int, int]:
    """{segment number: inode} of the log's segments that still have a name in /dev/shm."""
    return {seq: os.stat(f"{SHM}/{entry}").st_ino for seq, entry in segments_of(name)}


def chunk_shape(snap: Any) -> list[tuple[int, int]]:
    """(segment number, record count) of each chunk a snapshot shows."""
    return [(c.sequence, len(c.values)) for c in snap.chunks()]


# -- Bystanders and a writer that counts the regions it makes -------------------------------

_FLOCK = struct.Struct("hhqqi4x")  # struct flock on Linux x86-64


def lock_everything(fd: int) -> None:
    """Take every lock a descriptor allows (flock, POSIX and OFD record locks), keep it."""
    for how in (fcntl.LOCK_EX, fcntl.LOCK_SH):
        with contextlib.suppress(OSError):
            fcntl.flock(fd, how | fcntl.LOCK_NB)
    for cmd in (fcntl.F_SETLK, fcntl.F_OFD_SETLK):
        for kind in (fcntl.F_WRLCK, fcntl.F_RDLCK):
            with contextlib.suppress(OSError):
                fcntl.fcntl(fd, cmd, _FLOCK.pack(kind, 0, 0, 0, 0))


def write_in_child(name: str, rollovers: int, segment: int) -> Callable[[], dict[str, Any] | None]:
    """Fork a writer that rolls over ``rollovers`` times (record value = its position).
    Returns a poll: None while it runs, then its wait status and how many regions it made."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(read_end)
            made = 0
            create = _segment.create

            def counting(*args: Any) -> _segment.Region:
                nonlocal made
                made += 1
                return create(*args)

            _segment.create = counting  # type: ignore[assignment]
            writer = AtomicLog.attach(name).try_claim_writer()
            assert writer is not None
            batch = np.arange(segment, dtype=np.int64)
            for _ in range(rollovers):
                writer.extend(batch + writer.end)
            writer.close()
            os.write(write_end, json.dumps({"made": made}).encode())
            status = 0
        except BaseException:
            os.write(write_end, json.dumps({"error": traceback.format_exc()}).encode())
        finally:
            os._exit(status)
    os.close(write_end)

    def poll() -> dict[str, Any] | None:
        done, status = os.waitpid(pid, os.WNOHANG)
        if not done:
            return None
        with os.fdopen(read_end, "rb") as f:
            out = f.read()
        return {"status": status, **(json.loads(out) if out else {})}

    return poll


def check_snapshot(log: AtomicLog) -> Any:
    """Every record a new snapshot shows must equal its position; returns the snapshot."""
    snap = log.snapshot()
    shown = snap.to_numpy()
    expected = np.arange(snap.start, snap.start + len(shown))
    assert np.array_equal(shown, expected), f"wrong records in {snap!r}"
    return snap


# -- An interrupt at every line ------------------------------------------------------------


class Interrupter:
    """A trace function that raises KeyboardInterrupt at the ``at``-th line event in
    ``files``; counts the events when ``at`` is None."""

    def __init__(self, files: set[str], at: int | None) -> None:
        self.files = files
        self.at = at
        self.lines = 0
        self.fired = False

    def __call__(self, frame: FrameType, event: str, arg: Any) -> Any:
        if frame.f_code.co_filename not in self.files or self.fired:
            return None
        return self.local

    def local(self, frame: FrameType, event: str, arg: Any) -> Any:
        if event == "line" and not self.fired:
            if self.lines == self.at:
                self.fired = True
                raise KeyboardInterrupt(f"line {self.lines}: {frame.f_code.co_name}:{frame.f_lineno}")
            self.lines += 1
        return self.local


def run_traced(op: Callable[[], None], tracer: Interrupter) -> bool:
    """Run ``op`` under ``tracer``; True if it was interrupted."""
    sys.settrace(tracer)
    try:
        op()
    except KeyboardInterrupt:
        interrupted = True
    else:
        interrupted = False
    finally:
        sys.settrace(None)
    if interrupted:
        _forget_handled_exception()
    return interrupted


def _forget_handled_exception() -> None:
    """A trace function that raises at the line of an ``except X:`` clause does so after
    CPython 3.11 made the caught exception the thread's handled one and before the clause
    can restore the previous one: the exception stays "handled" (sys.exc_info()) for the
    rest of the thread, and every later exception gets it as its __context__. A signal
    cannot raise there (signal handlers run only at calls and jumps); only this test's
    tracer can, so the test clears it."""
    set_handled = ctypes.pythonapi.PyErr_SetHandledException
    set_handled.argtypes = [ctypes.py_object]
    set_handled.restype = None
    set_handled(None)


def interrupt_at_every_line(once: Callable[[int | None], tuple[bool, int]], more_than: int) -> None:
    """``once(None)`` runs a case untraced and says how many line events it made; then
    ``once(at)`` runs it interrupted at each of them (``once`` checks the invariants, and
    says whether it was interrupted).

    A run may make a few line events fewer than the first, and then has none to interrupt
    at the last indices: ``unlink()`` and ``remove_log()`` go through every entry of
    /dev/shm, where other programs come and go. So the test asks only that the interrupts
    fired, not that every index found a line."""
    _, lines = once(None)
    assert lines > more_than
    interrupted = sum(once(at)[0] for at in range(lines))
    assert interrupted > more_than, f"{interrupted} of {lines} runs were interrupted"


# -- Waiters and a writer in another process -------------------------------------------------


def publish_later(name: str, delay: float) -> None:
    """In a child: claim log ``name``, wait ``delay`` seconds, append 42 and let go."""
    log = AtomicLog.attach(name)
    writer = log.try_claim_writer()
    assert writer is not None
    time.sleep(delay)
    writer.append(42)
    writer.close()


def wait_in_child(name: str, outcome: Any) -> None:
    """In a child: follow log ``name`` from its newest record and say on ``outcome`` (a
    queue) "ready", then "returned" or "LogNotFoundError <seconds it took>"."""
    log = AtomicLog.attach(name)
    cursor = log.cursor("newest")
    outcome.put("ready")
    began = time.monotonic()
    try:
        cursor.wait()
        outcome.put("returned")
    except LogNotFoundError:
        outcome.put(f"LogNotFoundError {time.monotonic() - began:.2f}")


# -- Races: only typed errors -------------------------------------------------------------------


def untyped_errors(step: Callable[[], object], seconds: float) -> list[str]:
    """Run ``step()`` again and again for ``seconds``: what it raised that is not an
    AtomicLogError (a typed error is an answer; anything else is a bug), stopping at the
    first such."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            step()
        except AtomicLogError:
            pass
        except BaseException as exc:
            return [repr(exc)]
    return []


def report_untyped_errors(step: Callable[[], object], seconds: float, out: Any) -> None:
    """In a (forked) child: ``untyped_errors(step, seconds)``, put on the queue ``out``."""
    out.put(untyped_errors(step, seconds))


def until(condition: Callable[[], Any], what: str, timeout: float, every: float = 0.02) -> Any:
    """Poll ``condition`` every ``every`` seconds until it is true (returning it), failing
    the test after ``timeout`` seconds: a wait for another process or thread that only a
    hang could make long."""
    import pytest

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(every)
    pytest.fail(f"timed out waiting for {what}")
