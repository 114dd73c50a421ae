"""Shared fixtures. Every test gets unique log names and must leave /dev/shm as it found it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

import pytest
from support import SHM, unique_name

from atomic_log_shm import LogNotFoundError, remove_log


def _entries() -> set[str]:
    return {e for e in os.listdir(SHM) if not e.startswith("sem.")}


@pytest.fixture(autouse=True)
def no_shm_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail any test that leaves new entries in /dev/shm.

    They are reported, not removed: on a shared machine they may belong to someone else.
    """
    before = _entries()
    yield
    leaked = sorted(_entries() - before)
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
