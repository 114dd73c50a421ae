"""What the lock-free protocol needs from the machine: the platforms it runs on, their
system call numbers, and the memory fences placed at every pairing.

The protocol runs on Linux, 64-bit, on x86-64 and aarch64 (docs/design.md, "Memory
ordering" and "Other CPUs"). Elsewhere ``check()`` raises UnsupportedPlatformError before
anything is created or mapped.

Fences come from ``atomicshm`` (a small C extension): ``fence(RELEASE)`` before a publishing
store, ``fence(ACQUIRE)`` after an observing load, ``fence(SEQ_CST)`` where a store must be
seen before a later load; release stores and atomic read-modify-writes through
``AtomicView``. Each call site says which operation of the other side it pairs with. On
x86-64, whose stores and loads are already kept in order (TSO), a release or acquire fence
emits no instruction: the call only keeps the compiler from moving memory accesses across
it; on aarch64 it is a ``dmb``.
"""

from __future__ import annotations

import platform
import sys
from typing import NamedTuple

from atomicshm import ACQUIRE, RELEASE, SEQ_CST, AtomicView, fence

from ._errors import UnsupportedPlatformError

__all__ = ["ACQUIRE", "RELEASE", "SEQ_CST", "SYSCALLS", "AtomicView", "check", "fence"]


class Syscalls(NamedTuple):
    """The system call numbers the wait protocol calls through libc's ``syscall()``."""

    futex: int


_SUPPORTED = {
    "x86_64": Syscalls(futex=202),  # arch/x86/entry/syscalls/syscall_64.tbl
    "aarch64": Syscalls(futex=98),  # include/uapi/asm-generic/unistd.h
}
_ALIASES = {"amd64": "x86_64", "arm64": "aarch64"}

MACHINE = _ALIASES.get(platform.machine().lower(), platform.machine().lower())
_SUPPORTED_HERE = sys.platform.startswith("linux") and sys.maxsize > 2**32 and MACHINE in _SUPPORTED
SYSCALLS = _SUPPORTED.get(MACHINE, _SUPPORTED["x86_64"])
"""This machine's numbers (x86-64's where the log does not run: ``check()`` refuses first)."""


def check() -> None:
    """Raise UnsupportedPlatformError unless this is 64-bit Linux on x86-64 or aarch64."""
    if not _SUPPORTED_HERE:
        bits = 64 if sys.maxsize > 2**32 else 32
        raise UnsupportedPlatformError(
            f"atomic-log-shm runs on 64-bit Linux on x86-64 or aarch64, not {sys.platform} on "
            f"{platform.machine() or 'an unknown CPU'} ({bits}-bit): its lock-free protocol needs "
            "their memory ordering with the fences it places, and their system calls (see "
            "docs/design.md, 'Other CPUs')"
        )
