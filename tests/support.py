"""How the tests look at a log from outside: its regions in /dev/shm, its mappings in a
process, the records a snapshot shows. Only what two test files or more need lives here.

A log ``NAME`` owns the header region ``NAME`` and, for the nonce (16 hex digits) drawn
when it was made, segment regions ``NAME@<nonce>.<seq>.<token>`` (the token: 16 hex
digits drawn for each region), a wait region ``NAME@<nonce>.wait`` and a claim region
``NAME@<nonce>.claim``. These helpers spell that out on their own rather than ask the
library, so that a mistake in its naming shows up in the tests.
"""

from __future__ import annotations

import os
import pwd
import re
import subprocess
import uuid
from typing import Any, NamedTuple

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
