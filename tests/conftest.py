"""Shared fixtures. Every test gets unique log names and must leave /dev/shm as it found it,
as far as the logs this test session made go."""

from __future__ import annotations

import contextlib
import multiprocessing.process
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support import SHM, unique_name

from atomic_log_shm import LogNotFoundError, remove_log

# The names this session's processes give logs: unique_name() (the ``log_name`` fixture),
# the library's default name, and the benchmark's regions, each ``<prefix>-<pid>-...``.
OUR_NAMES = re.compile(r"(?:alstest|alog|alogbench)-([0-9]+)-")


def start_time(pid: int) -> str | None:
    """When process ``pid`` started, in clock ticks after boot; None if there is none."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[19]  # field 22; the name may hold ")"
    except OSError:
        return None


# This process and every process it started: {pid: its start time}. A start time tells our
# process from a later one that got its pid (pids are reused, at 32768 on some machines).
started = {os.getpid(): start_time(os.getpid())}


def record(pid: int) -> None:
    started[pid] = start_time(pid)


@pytest.fixture(scope="session", autouse=True)
def started_processes_recorded() -> Iterator[None]:
    """Record the pid of every process this session starts, for ``no_shm_leaks``.

    Processes are started three ways here: ``os.fork`` (multiprocessing's fork context goes
    through it too), ``subprocess.Popen`` (``subprocess.run`` and pytester too), and
    ``multiprocessing`` Process.start (spawn and forkserver, pools, executors). A pid is
    recorded when it is started (a child cannot have been reaped yet), so it is known after
    the process is gone.
    """
    fork, popen_init = os.fork, subprocess.Popen.__init__
    process_start = multiprocessing.process.BaseProcess.start

    def recording_fork() -> int:
        pid = fork()
        if pid:
            record(pid)
        return pid

    def recording_popen_init(self: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> None:
        popen_init(self, *args, **kwargs)
        record(self.pid)

    def recording_process_start(self: multiprocessing.process.BaseProcess) -> None:
        process_start(self)
        if self.pid is not None:
            record(self.pid)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "fork", recording_fork)
        patch.setattr(subprocess.Popen, "__init__", recording_popen_init)
        patch.setattr(multiprocessing.process.BaseProcess, "start", recording_process_start)
        yield


def is_ours(entry: str) -> bool:
    """Whether /dev/shm ``entry`` belongs to a log (or benchmark region) this session made.

    A log's regions are ``NAME`` and ``NAME@...``: the entry is judged by its NAME.
    """
    m = OUR_NAMES.match(entry.partition("@")[0])
    pid = int(m[1]) if m else 0
    if pid not in started:
        return False
    now = start_time(pid)
    return now is None or now == started[pid]  # gone, or still the process we started


@pytest.fixture(autouse=True)
def no_shm_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail any test that leaves in /dev/shm a region of a log this session made.

    Only our names are judged: on a shared machine other programs make and remove entries
    in /dev/shm all the time, their logs too, and those are neither our leaks nor ours to
    remove. A name is ours when its ``<pid>`` (see ``OUR_NAMES``) is this process or one it
    started (``started_processes_recorded``), unless that pid now belongs to a process
    started later. Why pids: the library names a log after the process that makes it
    (``alog-<pid>-<hex>``), and the tests' children make logs under that default name
    (forked or spawned children, the examples, the demo, the benchmark), where no fixture
    can hand them a name. Why pids recorded at the start: a process that leaked is often
    gone by the end of the test, and a dead process can no longer be traced to its parent.
    Not seen: a process a child starts by itself (none makes a log today), and another
    program that gets the pid of one of ours after it exited, makes a log and exits too.
    For our names the check is as strict as ever: header, segments and wait regions alike.

    Leaks are reported, not removed, so that the evidence stays for whoever looks.
    """
    before = set(os.listdir(SHM))
    yield
    leaked = sorted(e for e in set(os.listdir(SHM)) - before if is_ours(e))
    if leaked:
        pytest.fail(f"{request.node.nodeid} left {len(leaked)} entries in {SHM}: {leaked[:5]}")


@pytest.fixture
def log_name() -> Iterator[Callable[[], str]]:
    """A factory of unique log names; whatever they name is removed after the test."""
    names: list[str] = []

    def make() -> str:
        names.append(unique_name())
        return names[-1]

    yield make
    for name in names:
        with contextlib.suppress(LogNotFoundError):
            remove_log(name)
