"""The out-of-room scenarios of test_hostile.py (item 5), run as a program of its own.

test_hostile.py's ``out_of_space`` fixture runs it as ``unshare --mount -- python
tests/hostile_out_of_space.py``: in that mount namespace /dev/shm is a fresh tmpfs of a few
pages, and each phase mounts a new one over the last, so nothing the host sees is touched.
It prints what it saw as one line of JSON; the tests check it. A SIGBUS anywhere would end
it with -SIGBUS instead of that report. ``... hostile_out_of_space.py control`` is the
control: a plain region stored to past the room there is, which must get a SIGBUS.
"""

from __future__ import annotations

import errno
import json
import mmap
import os
import subprocess
import sys
import traceback
from typing import Any

import numpy as np
import posix_ipc
from support import SHM, values

import atomic_log_shm as al

PAGE = os.sysconf("SC_PAGE_SIZE")
facts: dict[str, Any] = {}


def tmpfs(options: str) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", SHM], check=True)


def entries() -> list[str]:
    return sorted(os.listdir(SHM))


def free() -> int:
    st = os.statvfs(SHM)
    return st.f_bavail * st.f_frsize


def fill_leaving(room: int) -> None:
    # Take all the room but `room` bytes with a file that is no log. A writer making a
    # segment ahead may take room meanwhile: then take what is left.
    fd = os.open(SHM + "/ballast", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        for _ in range(100):
            size = os.fstat(fd).st_size + free() - room
            if size <= os.fstat(fd).st_size:
                return
            try:
                os.posix_fallocate(fd, 0, size)
                return
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    finally:
        os.close(fd)


def error(exc: BaseException) -> dict[str, Any]:
    return {
        "mro": [c.__name__ for c in type(exc).__mro__],
        "errno": getattr(exc, "errno", None),
        "published": getattr(exc, "published", None),
    }


def rollover() -> None:
    # Segments of 1024 int64 records (two pages); the tmpfs keeps less than one free.
    tmpfs("size=1m")
    seg = 1024
    writer, log = al.AtomicLog.new_claimed(retained=2 * seg, segment=seg, dtype=np.int64, name="oos")
    reader = al.AtomicLog.attach("oos")
    snap = reader.snapshot()
    n = seg + 10
    writer.extend(np.arange(n))
    fill_leaving(seg * 8 - PAGE)
    # extend() across a segment boundary: the records that fit the head are published, the
    # rollover fails. A writer that makes segments ahead may have one more made already.
    for _ in range(4):
        room = -n % seg
        before = entries()
        try:
            writer.extend(np.arange(n, n + room + 3))
        except al.OutOfSpaceError as exc:
            facts["extend"] = dict(error(exc), room=room)
            n += exc.published
            break
        n += room + 3
    snap.refresh()
    facts["extend_left_no_region"] = entries() == before
    facts["extend_published_contiguous"] = values(snap) == list(range(values(snap)[0], n))
    # append() that rolls over, twice: each fails and changes nothing.
    facts["append"] = []
    for _ in range(2):
        before, shown, seen = entries(), values(snap), {"mro": []}
        try:
            writer.append(n)
        except al.OutOfSpaceError as exc:
            seen = error(exc)
        snap.refresh()
        seen.update(
            left_no_region=entries() == before,
            snapshot_unchanged=values(snap) == shown,
            fresh_snapshot_same=values(al.AtomicLog.attach("oos").snapshot()) == shown,
        )
        facts["append"].append(seen)
    # Room made: the same append succeeds, and the log goes on (rollovers, reclaiming).
    os.unlink(SHM + "/ballast")
    writer.append(n)
    n += 1
    snap.refresh()
    facts["retry_shows_record"] = values(snap)[-1] == n - 1
    writer.extend(np.arange(n, n + 10 * seg))
    n += 10 * seg
    snap.refresh()
    facts["after_retry_contiguous"] = values(snap) == list(range(n - len(snap), n)) and len(snap) > 2 * seg
    writer.close()
    log.unlink()
    facts["after_unlink"] = entries()


def new_too_big() -> None:
    tmpfs("size=64k")
    try:
        al.AtomicLog.new(retained=1 << 15, segment=1 << 14, dtype=np.int64, name="big")  # 128 KiB segments
    except al.OutOfSpaceError as exc:
        facts["new_segment_too_big"] = error(exc)
    facts["new_segment_too_big_left"] = entries()
    fill_leaving(PAGE)  # room for the header, not for segment 0
    try:
        al.AtomicLog.new(retained=2048, segment=1024, dtype=np.int64, name="half")
    except al.OutOfSpaceError as exc:
        facts["new_header_only"] = error(exc)
    facts["new_header_only_left"] = entries()
    fill_leaving(0)
    try:
        al.AtomicLog.new(retained=4, segment=2, dtype=np.int64, name="none")
    except al.OutOfSpaceError as exc:
        facts["new_no_room"] = error(exc)
    facts["new_no_room_left"] = entries()


def plain_region_stored_to() -> None:
    """The control, in a process of its own: a region sized by ftruncate only, each page stored to."""
    shm = posix_ipc.SharedMemory("/control", posix_ipc.O_CREX, size=1 << 20)
    region = mmap.mmap(shm.fd, 1 << 20)
    for at in range(0, 1 << 20, 4096):
        region[at] = 1


def sigbus_control() -> None:
    # The same tmpfs without posix_fallocate: a store to a page that cannot be had.
    tmpfs("size=64k")
    facts["control_returncode"] = subprocess.run([sys.executable, __file__, "control"], timeout=60).returncode


def out_of_inodes() -> None:
    tmpfs("size=1m")
    writer, log = al.AtomicLog.new_claimed(retained=4, segment=2, dtype=np.int64, name="ino")
    writer.extend(np.arange(4))  # segments 0 and 1; segment 2 will need a new inode
    st = os.statvfs(SHM)
    subprocess.run(["mount", "-o", f"remount,nr_inodes={st.f_files - st.f_ffree}", SHM], check=True)
    snap = log.snapshot()
    before, shown = entries(), values(snap)
    try:
        writer.append(4)
    except Exception as exc:
        facts["inodes"] = error(exc)
    snap.refresh()
    facts["inodes"].update(left_no_region=entries() == before, snapshot_unchanged=values(snap) == shown)


def main() -> None:
    try:
        subprocess.run(["mount", "--make-rprivate", "/"], check=True, capture_output=True)
        tmpfs("size=64k")
    except (OSError, subprocess.CalledProcessError) as exc:
        print(json.dumps({"cannot_mount": str(exc)}))
        sys.exit(0)
    for phase in (rollover, new_too_big, sigbus_control, out_of_inodes):
        try:
            phase()
        except BaseException:
            facts[phase.__name__ + "_failed"] = traceback.format_exc()
    print(json.dumps(facts))


if __name__ == "__main__":
    if sys.argv[1:] == ["control"]:
        plain_region_stored_to()
    else:
        main()
