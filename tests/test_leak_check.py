"""The leak check of conftest.py judges only the logs this test session made.

Each test runs a small test file in a pytest of its own (pytester), with this suite's
conftest.py and support.py: once while another program keeps making and removing entries of
every kind in /dev/shm, where every test must pass; once with tests that each leave one of
our names behind, where every one must be caught.
"""

from __future__ import annotations

import multiprocessing
import os
import secrets
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import SHM, regions_of

from atomic_log_shm import AtomicLog

pytest_plugins = ["pytester"]

TESTS = Path(__file__).resolve().parent
NO_SUCH_PID = 9_999_999  # above the largest pid_max Linux allows (2**22): a program long gone


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    """A test directory with this suite's conftest.py and support.py."""
    pytester.makeconftest((TESTS / "conftest.py").read_text())
    pytester.makepyfile(support=(TESTS / "support.py").read_text())
    return pytester


def another_program(stop: Any, made: Any) -> None:
    """Make an entry in /dev/shm every 10 ms and remove it 0.1 to 0.5 s later, until ``stop``.

    In turn: a log under the library's default name (``alog-<this pid>-...``: header,
    segment, wait region), a plain file, what looks like the logs of the process that
    started this one and of programs long gone, and the names of another test session.
    """
    kept: list[tuple[float, AtomicLog | str]] = []
    try:
        while not stop.is_set():
            tag, kind = secrets.token_hex(6), made.value % 6
            thing: AtomicLog | str
            if kind == 0:
                thing = AtomicLog.new(retained=4, segment=2, dtype=np.int64)
            else:
                names = (
                    f"foreign-{tag}",
                    f"alog-{os.getppid()}-{tag}",
                    f"alog-{NO_SUCH_PID}-{tag}@{secrets.token_hex(8)}.0",
                    f"alstest-{NO_SUCH_PID}-{tag}",
                    f"alstest-{os.getpid()}-{tag}",
                )
                thing = f"{SHM}/{names[kind - 1]}"
                open(thing, "wb").close()
            made.value += 1
            kept.append((time.monotonic() + 0.1 * (1 + made.value % 5), thing))
            now = time.monotonic()
            for _, gone in [k for k in kept if k[0] <= now]:
                remove(gone)
            kept = [k for k in kept if k[0] > now]
            time.sleep(0.01)
    finally:
        for _, gone in kept:
            remove(gone)


def remove(thing: AtomicLog | str) -> None:
    if isinstance(thing, AtomicLog):
        thing.unlink()
    else:
        with suppress(FileNotFoundError):
            os.unlink(thing)


MEANWHILE = """
import os, subprocess, sys, time
import numpy as np
import pytest
from support import SHM
from atomic_log_shm import AtomicLog

CHILD = "import atomic_log_shm as al; al.AtomicLog.new(retained=4, segment=2, dtype='i8').unlink()"


@pytest.mark.parametrize("i", range(3))
def test_an_entry_of_another_program_appears_and_outlives_this_test(i):
    before = set(os.listdir(SHM))
    deadline = time.monotonic() + 30
    while not set(os.listdir(SHM)) - before:
        assert time.monotonic() < deadline, "the other program made nothing"
        time.sleep(0.002)


@pytest.mark.parametrize("i", range(40))
def test_our_logs_are_made_and_removed(log_name, i):
    writer, log = AtomicLog.new_claimed(retained=4, segment=2, dtype=np.int64, name=log_name())
    with log, writer:
        writer.extend(np.arange(9))
    with AtomicLog.new(retained=4, segment=2, dtype=np.int64):
        time.sleep(0.02)


def test_a_child_makes_and_removes_a_log_under_its_default_name():
    subprocess.run([sys.executable, "-c", CHILD], check=True)
"""


def test_the_suite_passes_while_another_program_makes_and_removes_entries_in_dev_shm(
    suite: pytest.Pytester,
) -> None:
    suite.makepyfile(test_meanwhile=MEANWHILE)
    ctx = multiprocessing.get_context("fork")
    stop, made = ctx.Event(), ctx.Value("i", 0)
    other = ctx.Process(target=another_program, args=(stop, made), daemon=True)
    other.start()
    try:
        result = suite.runpytest_subprocess(timeout=120)
    finally:
        stop.set()
        other.join(30)
    assert other.exitcode == 0
    assert made.value > 50, made.value
    result.assert_outcomes(passed=44)


LEAKS = """
import os, subprocess, sys
import numpy as np
from support import SHM, regions_of, unique_name
from atomic_log_shm import AtomicLog

CHILD = "import atomic_log_shm as al; print(al.AtomicLog.new(retained=4, segment=2, dtype='i8').name)"


def leave(name=None):
    log = AtomicLog.new(retained=4, segment=2, dtype=np.int64, name=name)
    with open("left.txt", "a") as left:
        print(log.name, file=left)
    return log.name


def test_leaves_a_log_named_by_unique_name():
    leave(unique_name())


def test_leaves_a_log_under_the_default_name():
    leave()


def test_a_child_process_leaves_a_log_under_its_default_name():
    name = subprocess.run([sys.executable, "-c", CHILD], check=True, capture_output=True, text=True).stdout
    with open("left.txt", "a") as left:
        print(name.strip(), file=left)


def test_a_forked_child_leaves_a_log_under_its_default_name():
    pid = os.fork()
    if pid == 0:
        try:
            leave()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def test_leaves_only_the_wait_region_of_a_log():
    name = leave(unique_name())
    for entry in regions_of(name):
        if not entry.endswith(".wait"):
            os.unlink(f"{SHM}/{entry}")
"""


def test_a_leak_of_any_of_our_names_is_caught(suite: pytest.Pytester) -> None:
    suite.makepyfile(test_leaks=LEAKS)
    try:
        result = suite.runpytest_subprocess(timeout=120)
    finally:
        left = (suite.path / "left.txt").read_text().split()
        for name in left:
            for entry in regions_of(name):
                os.unlink(f"{SHM}/{entry}")
    result.assert_outcomes(passed=5, errors=5)
    assert len(left) == 5 and left[0].startswith("alstest-") and left[2].startswith("alog-"), left
    caught = [
        line.split(" left ", 1)[1] for line in result.outlines if line.startswith("E ") and " left " in line
    ]
    assert len(caught) == 5, caught  # in the order of the tests, as ``left`` is
    for name, leak in zip(left[:4], caught[:4], strict=True):  # header, segment 0, claim, wait
        assert leak.startswith(f"4 entries in {SHM}: ['{name}', '{name}@"), leak
    wait_region_only = caught[4]
    assert wait_region_only.startswith(f"1 entries in {SHM}: ['{left[4]}@"), wait_region_only
    assert wait_region_only.endswith(".wait']"), wait_region_only
