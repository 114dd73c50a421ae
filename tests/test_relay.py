"""Relaying a log through Redis Streams and mirroring it, against a real ``redis-server``.

Each test module run starts its own server (Debian's ``redis-server``) on a free loopback
port, persistence off, in a temporary directory, and stops it; the end-to-end test starts
one of its own, as it restarts it. Records carry their own position (``seq``) and fields
computed from it, so any process can tell whether what it sees at a position is the
source's record there.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import support

redis = pytest.importorskip("redis")

from atomic_log_shm import (  # noqa: E402
    AtomicLog,
    NotAMirrorError,
    RedisUnavailableError,
    StreamContentError,
    StreamNotFoundError,
)
from atomic_log_shm.relay import FORMAT, Mirror, Relay, remove_stream, stream_key  # noqa: E402

REDIS_SERVER = shutil.which("redis-server")
pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="needs redis-server (apt-get install it)")

CLI = [sys.executable, "-m", "atomic_log_shm"]
TIMEOUT = 30.0  # the longest any one wait may take before the test fails
DTYPE = np.dtype([("ts", "<f8"), ("seq", "<i8"), ("price", "<f8"), ("qty", "<i8")])


def records(first: int, count: int) -> np.ndarray[Any, np.dtype[Any]]:
    """The source's records at positions ``first`` .. ``first + count - 1``."""
    out = np.empty(count, DTYPE)
    positions = np.arange(first, first + count)
    out["ts"] = positions * 0.5
    out["seq"] = positions
    out["price"] = positions % 1000 + 0.25
    out["qty"] = positions * 7
    return out


def are_the_sources(values: np.ndarray[Any, np.dtype[Any]], first: int) -> bool:
    return bool(np.array_equal(values, records(first, len(values))))


def stream_end(client: Any, key: str) -> int:
    """The position after the last record stream ``key`` holds (0 if it has none)."""
    last = client.xrevrange(key, "+", "-", count=1)
    return int(last[0][0].split(b"-")[0]) if last else 0


def end_of(name: str) -> int | None:
    """The end of log ``name`` (None while there is no such log)."""
    try:
        with AtomicLog.attach(name) as log:
            return log.snapshot().end
    except FileNotFoundError:
        return None


until = functools.partial(support.until, timeout=TIMEOUT)  # a wait that only a hang makes long


# ---------------------------------------------------------------------------------------
# A redis-server of our own


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """``redis-server`` on a free loopback port, persistence off, files in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> Any:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=TIMEOUT)

    def start(self) -> None:
        assert REDIS_SERVER is not None
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        with open(self.directory / "redis.log", "ab") as out:
            self.proc = subprocess.Popen(
                [REDIS_SERVER, *args, "--dir", str(self.directory)], stdout=out, stderr=subprocess.STDOUT
            )

        def answers() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"redis-server exited: {(self.directory / 'redis.log').read_text()[-500:]}")
            try:
                return bool(self.client().ping())
            except redis.ConnectionError:
                return False

        until(answers, "redis-server to answer")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    srv = RedisServer(tmp_path_factory.mktemp("redis"))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def names(log_name: Callable[[], str], server: RedisServer) -> Iterator[Callable[[], str]]:
    """Unique log names; their logs and their streams (and :meta keys) go after the test."""
    made: list[str] = []

    def make() -> str:
        made.append(log_name())
        return made[-1]

    yield make
    client = server.client()
    for name in made:
        client.delete(stream_key(name), stream_key(name) + ":meta")


# ---------------------------------------------------------------------------------------
# Running relays and mirrors


class InThread:
    """A Relay or Mirror running in a thread of this process."""

    def __init__(self, runner: Relay | Mirror) -> None:
        self.runner = runner
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.runner.run()
        except BaseException as exc:
            self.error = exc

    def stop(self) -> None:
        self.runner.stop()
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error


@contextlib.contextmanager
def running(*runners: Relay | Mirror) -> Iterator[list[InThread]]:
    threads = [InThread(r) for r in runners]
    try:
        yield threads
    finally:
        for t in threads:
            t.stop()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=TIMEOUT)


class Command:
    """An ``atomic-log relay`` or ``mirror`` process; its stderr goes to a file."""

    def __init__(self, directory: Path, *args: str) -> None:
        self.args = args
        self.stderr_path = directory / f"{args[0]}-{time.monotonic_ns()}.err"
        with open(self.stderr_path, "w") as err:
            self.proc = subprocess.Popen([*CLI, *args], stdout=subprocess.DEVNULL, stderr=err)

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def said(self, *texts: str) -> bool:
        said = self.stderr
        return any(text in said for text in texts)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=TIMEOUT)

    def terminate(self) -> int:
        self.proc.terminate()
        return self.proc.wait(timeout=TIMEOUT)


# ---------------------------------------------------------------------------------------
# From Python


def test_a_mirror_shows_the_sources_records_at_the_sources_positions(
    server: RedisServer, names: Callable[[], str]
) -> None:
    source, local = names(), names()
    writer, log = AtomicLog.new_claimed(retained=1000, segment=100, dtype=DTYPE, name=source)
    with log, writer:
        writer.extend(records(0, 250))
        relay, mirror = Relay(source, server.url), Mirror(server.url, source, local=local)
        with running(relay, mirror):
            until(lambda: mirror.position == 250, "the first 250 records on the mirror")
            with AtomicLog.attach(local) as mirrored:
                cursor = mirrored.cursor("oldest")
                assert (mirrored.dtype, mirrored.retained_capacity, mirrored.segment_capacity) == (
                    DTYPE,
                    1000,
                    100,
                )
                seen = []
                for first in range(250, 1450, 300):  # the source rolls over; so does the mirror
                    writer.extend(records(first, 300))
                    until(lambda f=first: mirror.position == f + 300, "the batch on the mirror")
                    batch = cursor.poll()
                    assert batch.missed == 0
                    seen += batch.arrays
                assert are_the_sources(np.concatenate(seen), 0) and sum(map(len, seen)) == 1450
                snap = mirrored.snapshot()
                assert (snap.start, snap.end) == (log.snapshot().start, 1450)
                assert are_the_sources(snap.to_numpy(), snap.start)
        assert (relay.sent, relay.missed, mirror.written, mirror.missed) == (1450, 0, 1450, 0)


def test_what_the_relay_never_got_is_missed_on_the_mirror_counted_exactly(
    server: RedisServer, names: Callable[[], str]
) -> None:
    source, local = names(), names()
    writer, log = AtomicLog.new_claimed(retained=100, segment=50, dtype=DTYPE, name=source)
    with log, writer:
        writer.extend(records(0, 170))  # segments of 50, 3 kept: the window is 50..169
        mirror = Mirror(server.url, source, local=local)
        with running(mirror):
            relay = Relay(source, server.url)
            with running(relay):  # starts late: from the oldest retained record
                until(lambda: mirror.position == 170, "the window on the mirror")
            assert relay.missed == 0
            with AtomicLog.attach(local) as mirrored:
                cursor = mirrored.cursor("oldest")
                assert cursor.position == 50  # the mirror's log starts where its stream did
                assert are_the_sources(np.concatenate(cursor.poll().arrays), 50)
                writer.extend(records(170, 400))  # the window moves on with no relay running
                relay = Relay(source, server.url)
                with running(relay):
                    until(lambda: mirror.position == 570, "the rest on the mirror")
                # The relay resumed at 170 and found 170..449 reclaimed (the window is 450..569).
                assert relay.missed == 280 and mirror.missed == 280
                batch = cursor.poll()
                assert (batch.start, batch.missed) == (450, 280)
                assert are_the_sources(np.concatenate(batch.arrays), 450)


def test_a_relay_killed_and_restarted_stores_each_record_once(
    server: RedisServer, names: Callable[[], str], tmp_path: Path
) -> None:
    source = names()
    writer, log = AtomicLog.new_claimed(retained=100_000, segment=1000, dtype=DTYPE, name=source)
    client = server.client()
    with log, writer:
        for first in range(0, 30_000, 10_000):
            relay = Command(tmp_path, "relay", source, server.url)
            until(lambda r=relay: r.said("resuming at position"), "the relay to start")
            kill_after = random.randrange(first, first + 10_000, 500) if first < 20_000 else None
            for i in range(first, first + 10_000, 500):
                writer.extend(records(i, 500))
                time.sleep(0.002)  # many small entries, so the kill lands between some
                if i == kill_after:
                    relay.kill()  # the next relay resumes after what the stream holds
        until(lambda: stream_end(client, stream_key(source)) == 30_000, "the stream to hold all 30,000")
        relay.proc.send_signal(signal.SIGINT)  # Ctrl-C is how it is meant to end: status 0
        assert relay.proc.wait(timeout=TIMEOUT) == 0
    entries = client.xrange(stream_key(source))
    position = 0
    for entry_id, fields in entries:
        end, count = map(int, entry_id.split(b"-"))
        assert end - count == position, "each record once, in order, none left out"
        assert are_the_sources(np.frombuffer(fields[b"d"], DTYPE), position)
        position = end
    assert position == 30_000


# ---------------------------------------------------------------------------------------
# Errors: one line and exit status 1 from the command line, a typed error from Python


def test_no_server_or_a_bad_url_is_one_line_and_exit_status_1(
    server: RedisServer, names: Callable[[], str]
) -> None:
    source = names()
    writer, log = AtomicLog.new_claimed(retained=10, segment=5, dtype=DTYPE, name=source)
    with log, writer:
        down = f"redis://127.0.0.1:{free_port()}/0"
        for args, says in [
            (["relay", source, down], "cannot reach Redis at"),
            (["mirror", down, source, "--as", names()], "cannot reach Redis at"),
            (["relay", source, "http://127.0.0.1:1/"], "is not a Redis URL"),
            (["mirror", "redis://127.0.0.1:notaport", source], "is not a Redis URL"),
            (["relay", source, f"redis://ada:secret@127.0.0.1:{server.port}"], "redis://ada:***@127.0.0.1"),
        ]:
            result = cli(*args)
            assert result.returncode == 1, (args, result.stderr)
            assert result.stderr.count("\n") == 1 and says in result.stderr, (args, result.stderr)
            assert "secret" not in result.stderr
        with pytest.raises(RedisUnavailableError, match="cannot reach Redis"):
            Relay(source, down).run()
        with pytest.raises(RedisUnavailableError):
            Mirror(down, source).run()
    # Without redis-py: one line naming the extra to install.
    no_redis = "import sys; sys.modules['redis'] = None; import atomic_log_shm._cli as c; sys.exit(c.main())"
    result = subprocess.run(
        [sys.executable, "-c", no_redis, "mirror", server.url, source],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "pip install 'atomic-log-shm[redis]'" in result.stderr


def test_foreign_stream_content_is_a_typed_error_and_nothing_is_written(
    server: RedisServer, names: Callable[[], str]
) -> None:
    source, local = names(), names()
    key = stream_key(source)
    client = server.client()
    client.xadd(key, {"event": "login", "user": "ada"})  # someone else's stream
    mirror = cli("mirror", server.url, source, "--as", local)
    assert mirror.returncode == 1
    assert mirror.stderr.count("\n") == 1 and repr(key) in mirror.stderr, mirror.stderr
    assert not os.path.exists(f"/dev/shm/{local}")
    writer, log = AtomicLog.new_claimed(retained=10, segment=5, dtype=DTYPE, name=source)
    with log, writer:
        writer.extend(records(0, 3))
        with pytest.raises(StreamContentError, match="is not a batch of 32-byte records") as caught:
            Relay(source, server.url).run()
        assert caught.value.stream == key
        assert client.xlen(key) == 1 and not client.exists(key + ":meta")
        relay = cli("relay", source, server.url)
        assert relay.returncode == 1 and relay.stderr.count("\n") == 1 and repr(key) in relay.stderr
        client.delete(key)
        client.set(key, "not a stream")
        with pytest.raises(StreamContentError, match="WRONGTYPE"):
            Relay(source, server.url).run()
        client.delete(key)
        # Entries of our shape after good ones: the mirror writes none of the reply's.
        with running(Relay(source, server.url)):
            until(lambda: client.xlen(key) == 1, "the relay's first entry")
        client.xadd(key, {"d": b"x" * 32}, id="99-2")  # 2 records of 16 bytes
        with pytest.raises(StreamContentError, match="99-2"):
            Mirror(server.url, source, local=local).run()
        assert not os.path.exists(f"/dev/shm/{local}")


def test_a_dtype_mismatch_is_a_typed_error_naming_the_stream(
    server: RedisServer, names: Callable[[], str]
) -> None:
    source, other, local = names(), names(), names()
    writer, log = AtomicLog.new_claimed(retained=10, segment=5, dtype=DTYPE, name=source)
    with log, writer:
        writer.extend(records(0, 3))
        with running(Relay(source, server.url)):
            until(lambda: server.client().xlen(stream_key(source)) == 1, "the relay's entry")
        # Another log relayed into that stream: refused before anything is written.
        w2, log2 = AtomicLog.new_claimed(retained=10, segment=5, dtype=np.int64, name=other)
        with log2, w2:
            w2.extend(np.arange(5))
            with pytest.raises(StreamContentError, match="carries records of") as caught:
                Relay(other, server.url, stream=stream_key(source)).run()
            assert caught.value.stream == stream_key(source)
            assert server.client().xlen(stream_key(source)) == 1
        # A mirror into an existing log of another dtype: refused, the log untouched.
        w3, log3 = AtomicLog.new_claimed(retained=10, segment=5, dtype=np.int64, name=local)
        with log3:
            w3.close()
            result = cli("mirror", server.url, source, "--as", local)
            assert result.returncode == 1 and result.stderr.count("\n") == 1
            assert repr(stream_key(source)) in result.stderr and repr(local) in result.stderr
            with pytest.raises(NotAMirrorError, match="holds records of int64") as refused:
                Mirror(server.url, source, local=local).run()
            assert (refused.value.name, refused.value.stream) == (local, stream_key(source))
            assert log3.snapshot().end == 0


def test_positions_a_log_cannot_hold_are_stream_content_errors_and_nothing_is_written(
    server: RedisServer, names: Callable[[], str]
) -> None:
    """A stream made by hand (metadata as a relay of an older version wrote it, without the
    source's host): entries up to the last position a log holds are mirrored; one beyond it
    stops the mirror before it writes anything, and a relay before it adds anything."""
    source, local = names(), names()
    key, client = stream_key(source), server.client()
    old_meta = {
        "format": FORMAT,
        "descr": repr(np.lib.format.dtype_to_descr(DTYPE)),
        "itemsize": DTYPE.itemsize,
        "retained": 10,
        "segment": 5,
        "source": source,
    }
    client.hset(key + ":meta", mapping=old_meta)
    top = 2**63 - 1  # the end of the last record a log can hold (positions are int64)
    client.xadd(key, {"d": records(top - 3, 2).tobytes()}, id=f"{top - 1}-2")
    mirror = Mirror(server.url, source, local=local)
    beyond = pytest.raises(StreamContentError, match="beyond the last a log can hold")
    with beyond as caught, running(mirror) as (thread,):
        until(lambda: mirror.position == top - 1, "the hand-made entry on the mirror")
        before = AtomicLog.attach(local)
        client.xadd(key, {"d": bytes(3 * DTYPE.itemsize)}, id=f"{top + 2}-3")  # crosses 2**63
        until(lambda: not thread.thread.is_alive(), "the mirror to stop")
    assert caught.value.stream == key and mirror.written == 2
    with before:
        snap = before.snapshot()
        assert (snap.start, snap.end) == (top - 3, top - 1) and are_the_sources(snap.to_numpy(), top - 3)
    for entry_id in (f"{2**63 + 5}-1", f"{2**64 - 1}-1"):  # a first position beyond, the largest ID
        client.xadd(key, {"d": records(0, 1).tobytes()}, id=entry_id)
        with pytest.raises(StreamContentError, match=entry_id):
            Mirror(server.url, source, local=local).run()
        assert end_of(local) == top - 1
    writer, log = AtomicLog.new_claimed(retained=10, segment=5, dtype=DTYPE, name=source)
    with log, writer, pytest.raises(StreamContentError, match="beyond the last a log can hold"):
        Relay(source, server.url).run()
    assert client.xlen(key) == 4 and client.hgetall(key + ":meta") == {
        k.encode(): str(v).encode() for k, v in old_meta.items()
    }


# ---------------------------------------------------------------------------------------
# Which log a mirror writes


def state(log: AtomicLog) -> tuple[Any, ...]:
    """What a mirror that writes nothing leaves as it was: positions, segments, writer."""
    info = log.info()
    return info.end, info.segments, info.writer_status


def relay_all(server: RedisServer, source: str, end: int) -> None:
    """Relay log ``source`` until its stream holds the positions before ``end``."""
    client = server.client()
    with running(Relay(source, server.url)):
        until(lambda: stream_end(client, stream_key(source)) == end, f"the stream to reach {end}")


def test_on_the_sources_host_a_mirror_never_writes_the_source_log(
    server: RedisServer, names: Callable[[], str]
) -> None:
    source = names()
    writer, log = AtomicLog.new_claimed(retained=100, segment=50, dtype=DTYPE, name=source)
    with log:
        with writer:
            writer.extend(records(0, 30))
            relay_all(server, source, 30)
            meta = server.client().hgetall(stream_key(source) + ":meta")
            assert (meta[b"source"], meta[b"host"]) == (source.encode(), socket.gethostname().encode())
            assert meta[b"host_id"].startswith((b"machine-id:", b"boot-id:"))
            # While the producer writes: refused as the source, not a ClaimHeldError.
            with pytest.raises(NotAMirrorError, match="--as LOCAL") as caught:
                Mirror(server.url, source).run()
            assert (caught.value.name, caught.value.stream) == (source, stream_key(source))
        # The producer stopped, to be restarted: the mirror leaves its log alone all the same.
        before = state(log)
        result = cli("mirror", server.url, source)
        assert result.returncode == 1, result.stderr
        assert result.stderr.count("\n") == 1 and "--as LOCAL" in result.stderr, result.stderr
        with pytest.raises(NotAMirrorError):
            Mirror(server.url, source, local=source).run()
        assert state(log) == before
        restarted, again = AtomicLog.new_claimed(
            retained=100, segment=50, dtype=DTYPE, name=source, exist_ok=True
        )  # the producer takes its log back
        with again, restarted:
            restarted.extend(records(30, 1))


def test_a_mirror_killed_and_restarted_resumes_its_own_log_and_refuses_a_foreign_one(
    server: RedisServer, names: Callable[[], str], tmp_path: Path
) -> None:
    source, local, foreign = names(), names(), names()
    writer, log = AtomicLog.new_claimed(retained=100, segment=50, dtype=DTYPE, name=source)
    commands: list[Command] = []
    with log, writer:
        writer.extend(records(0, 40))
        try:
            commands.append(Command(tmp_path, "relay", source, server.url))
            commands.append(Command(tmp_path, "mirror", server.url, source, "--as", local))
            until(lambda: end_of(local) == 40, "the mirror to hold 40 records")
            commands[-1].kill()  # SIGKILL: its log stays, its claim goes with it
            writer.extend(records(40, 25))
            mirror = Command(tmp_path, "mirror", server.url, source, "--as", local)
            commands.append(mirror)
            until(lambda: end_of(local) == 65, "the restarted mirror to catch up")
            assert "resuming at position 40" in mirror.stderr and "nothing to compare" not in mirror.stderr
            with AtomicLog.attach(local) as mirrored:
                cursor = mirrored.cursor("oldest")
                batch = cursor.poll()
                assert (batch.start, batch.missed, len(batch)) == (0, 0, 65)
                assert are_the_sources(np.concatenate(batch.arrays), 0)
            assert mirror.terminate() == 0
        finally:
            for command in commands:
                if command.proc.poll() is None:
                    command.kill()
    # Another log of that name, of the same dtype and capacities, holding other records.
    other_writer, other = AtomicLog.new_claimed(retained=100, segment=50, dtype=DTYPE, name=foreign)
    with other:
        with other_writer:
            theirs = records(0, 50)
            theirs["price"] += 1
            other_writer.extend(theirs)
        before = state(other)
        result = cli("mirror", server.url, source, "--as", foreign)
        assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
        assert repr(foreign) in result.stderr and "not this stream's mirror" in result.stderr
        with pytest.raises(NotAMirrorError, match="other records than stream") as caught:
            Mirror(server.url, source, local=foreign).run()
        assert caught.value.name == foreign
        assert state(other) == before


def test_a_log_made_while_the_mirror_waited_for_entries_is_checked_like_any_other(
    server: RedisServer, names: Callable[[], str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="atomic_log_shm.relay")
    source, local = names(), names()
    writer, log = AtomicLog.new_claimed(retained=100, segment=50, dtype=DTYPE, name=source)
    with log, writer, running(Relay(source, server.url)):
        until(lambda: server.client().exists(stream_key(source) + ":meta"), "the relay's metadata")
        mirror = Mirror(server.url, source, local=local)
        with pytest.raises(NotAMirrorError, match="other records than stream"), running(mirror) as (thread,):
            until(lambda: "reading the stream from its oldest entry" in caplog.text, "the mirror to wait")
            other_writer, other = AtomicLog.new_claimed(retained=100, segment=50, dtype=DTYPE, name=local)
            theirs = records(0, 10)
            theirs["qty"] = -1
            other_writer.extend(theirs)
            other_writer.close()
            other.close()  # (leaving `with` would remove the log it made)
            writer.extend(records(0, 10))  # the mirror's first entry: its log is there already
            until(lambda: not thread.thread.is_alive(), "the mirror to stop")
    assert end_of(local) == 10 and mirror.written == 0


def test_a_mirror_away_longer_than_the_stream_keeps_continues_its_log_and_counts_the_gap(
    server: RedisServer, names: Callable[[], str], caplog: pytest.LogCaptureFixture
) -> None:
    source, local = names(), names()
    key, client = stream_key(source), server.client()
    writer, log = AtomicLog.new_claimed(retained=100, segment=50, dtype=DTYPE, name=source)
    with log, writer:
        writer.extend(records(0, 40))
        mirror = Mirror(server.url, source, local=local)
        with running(Relay(source, server.url)):
            with running(mirror):
                until(lambda: mirror.position == 40, "the mirror to hold 40 records")
            for end in (60, 100):  # while the mirror is away: entries 40..59 and 60..99
                writer.extend(records(end - (20 if end == 60 else 40), 20 if end == 60 else 40))
                until(lambda e=end: stream_end(client, key) == e, "the stream to grow")
        client.xtrim(key, minid="61-0", approximate=False)  # as MINID ~ does in time: 60..99 left
        mirror = Mirror(server.url, source, local=local)
        with running(mirror):
            until(lambda: mirror.position == 100, "the mirror to catch up")
        assert (mirror.written, mirror.missed) == (40, 20)
        assert "nothing to compare it with; continuing it" in caplog.text
        with AtomicLog.attach(local) as mirrored:
            batch = mirrored.cursor(40).poll()
            assert (batch.start, batch.missed) == (60, 20)
            assert are_the_sources(np.concatenate(batch.arrays), 60)


# ---------------------------------------------------------------------------------------
# Removing a relayed stream


def test_rm_redis_removes_a_relayed_stream_and_its_metadata(
    server: RedisServer, names: Callable[[], str]
) -> None:
    source, quiet = names(), names()
    key, client = stream_key(source), server.client()
    writer, log = AtomicLog.new_claimed(retained=10, segment=5, dtype=DTYPE, name=source)
    with writer:
        writer.extend(records(0, 3))
        relay_all(server, source, 3)
    log.unlink()  # the log goes; its stream stays until removed
    log.close()
    assert client.exists(key, key + ":meta") == 2
    result = cli("rm", "--redis", server.url, source)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"removed {key} and {key}:meta\n"
    assert client.exists(key, key + ":meta") == 0
    # A relay that found no record yet wrote only the metadata. A name with nothing is one
    # line and exit status 1; the other names are still removed.
    client.hset(stream_key(quiet) + ":meta", mapping={"format": FORMAT, "descr": "'<i8'"})
    result = cli("rm", "--redis", server.url, source, quiet)
    assert result.returncode == 1
    assert result.stderr == f"atomic-log: no stream {key!r} in Redis at {server.url}\n"
    assert result.stdout == f"removed {stream_key(quiet)}:meta\n"
    # What no relay writes is left alone.
    client.set(key, "someone else's")
    result = cli("rm", "--redis", server.url, source)
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "nothing removed" in result.stderr
    with pytest.raises(StreamContentError, match="is a string") as caught:
        remove_stream(server.url, source)
    assert caught.value.stream == key and client.get(key) == b"someone else's"
    client.delete(key)
    client.xadd(key, {"d": b"x"})
    with pytest.raises(StreamContentError, match=":meta is missing"):
        remove_stream(server.url, source)
    client.delete(key)
    with pytest.raises(StreamNotFoundError) as missing:
        remove_stream(server.url, source)
    assert missing.value.stream == key and isinstance(missing.value, LookupError)
    # From Python, with a key of one's own; and a Redis that does not answer.
    custom = f"custom:{source}"
    writer, log = AtomicLog.new_claimed(retained=10, segment=5, dtype=DTYPE, name=source)
    with log, writer:
        writer.extend(records(0, 3))
        with running(Relay(source, server.url, stream=custom)):
            until(lambda: client.exists(custom), "the relay's first entry")
    assert remove_stream(server.url, source, stream=custom) == [custom, custom + ":meta"]
    assert client.exists(custom, custom + ":meta") == 0
    down = cli("rm", "--redis", f"redis://127.0.0.1:{free_port()}/0", source)
    assert down.returncode == 1 and down.stderr.count("\n") == 1 and "cannot reach Redis" in down.stderr


# ---------------------------------------------------------------------------------------
# End to end, with processes, kills and a Redis restart

TOTAL = 500_000
BATCH = 500

SOURCE_WRITER = r"""
import sys, time
import numpy as np
from atomic_log_shm import AtomicLog
sys.path.insert(0, sys.argv[3])
from test_relay import records, DTYPE

writer, log = AtomicLog.new_claimed(retained=20_000, segment=2_000, dtype=DTYPE, name=sys.argv[1])
total, batch = int(sys.argv[2]), 500
print("ready", flush=True)
sys.stdin.readline()
began = time.monotonic()
for first in range(0, total, batch):
    writer.extend(records(first, batch))
    while time.monotonic() < began + (first + batch) / 50_000:  # 50,000 records a second
        time.sleep(0.001)
print("done", flush=True)
sys.stdin.readline()
"""

FOLLOWER = r"""
import json, sys, time
import numpy as np
from atomic_log_shm import AtomicLog
sys.path.insert(0, sys.argv[3])
from test_relay import are_the_sources

name, total = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 60
log = AtomicLog.attach(name, timeout=30)  # the mirror makes it at the first entry
cursor = log.cursor("oldest")
first = cursor.position
seen = missed = wrong = 0
position = first
while cursor.position < total and time.monotonic() < deadline:
    if not cursor.wait(timeout=0.5):
        continue
    batch = cursor.poll()
    missed += batch.missed
    assert batch.start == position + batch.missed, "positions only move on"
    position = batch.start
    for values in batch.arrays:
        wrong += not are_the_sources(values, position)
        seen += len(values)
        position += len(values)
print(json.dumps({"first": first, "seen": seen, "missed": missed, "wrong": wrong, "end": position}))
"""


def test_end_to_end_with_kills_and_a_redis_restart(log_name: Callable[[], str], tmp_path: Path) -> None:
    """A writer of 500,000 records, a relay, a mirror and a follower on the mirror, each a
    process; the relay and the mirror are killed (SIGKILL) at random points and restarted,
    Redis restarts (losing the stream) in the middle. Every position the follower sees holds
    the source's record there, and what it did not see it was told it missed."""
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    server = RedisServer(tmp_path)
    server.start()
    source, local = log_name(), log_name()
    here = str(Path(__file__).parent)
    writer = subprocess.Popen(
        [sys.executable, "-c", SOURCE_WRITER, source, str(TOTAL), here],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    follower = None
    commands: list[Command] = []
    try:
        assert writer.stdout is not None and writer.stdin is not None
        assert writer.stdout.readline().strip() == "ready"
        relay = Command(tmp_path, "relay", source, server.url)
        mirror = Command(tmp_path, "mirror", server.url, source, "--as", local)
        commands += [relay, mirror]
        follower = subprocess.Popen(
            [sys.executable, "-c", FOLLOWER, local, str(TOTAL), here], stdout=subprocess.PIPE, text=True
        )
        writer.stdin.write("go\n")
        writer.stdin.flush()
        # The writer takes 10 s; 7 disruptions in its first 8, each at a random point of its slot.
        plan = ["relay", "mirror", "redis", "relay", "both", "mirror", "relay"]
        for i, what in enumerate(plan):
            time.sleep(rng.uniform(0.4, 1.1))
            # Both started and connected (one that finds no server at the start exits 1).
            until(lambda r=relay: r.said("resuming at position"), "the relay to connect")
            until(lambda m=mirror: m.said("resuming at", "reading the stream"), "the mirror to connect")
            if what in ("relay", "both"):
                relay.kill()
                relay = Command(tmp_path, "relay", source, server.url)
                commands.append(relay)
            if what in ("mirror", "both"):
                mirror.kill()
                mirror = Command(tmp_path, "mirror", server.url, source, "--as", local)
                commands.append(mirror)
            if what == "redis":
                server.stop()
                time.sleep(0.3)
                server.start()
            assert relay.proc.poll() is None and mirror.proc.poll() is None, (i, relay.stderr, mirror.stderr)
        # The last ones restarted are running (a slow machine starts a process in seconds):
        # a SIGTERM before their handler is set would end them with -15, not the 0 asked.
        until(lambda r=relay: r.said("resuming at position"), "the last relay to connect")
        until(lambda m=mirror: m.said("resuming at", "reading the stream"), "the last mirror to connect")
        assert writer.stdout.readline().strip() == "done"
        out, _ = follower.communicate(timeout=60)
        result = json.loads(out)
        assert result["wrong"] == 0, (seed, result)
        assert result["end"] == TOTAL, (seed, result)
        assert result["seen"] + result["missed"] == TOTAL - result["first"], (seed, result)
        # It starts at the window it first finds: on a slow machine, late in the run.
        assert result["seen"] > 0, (seed, result)
        with AtomicLog.attach(local) as mirrored:
            snap = mirrored.snapshot()
            assert snap.end == TOTAL and are_the_sources(snap.to_numpy(), snap.start)
        assert relay.terminate() == 0 and mirror.terminate() == 0
        said = "".join(c.stderr for c in commands)
        assert "lost Redis at" in said and "reconnected to Redis" in said, said
        assert "Traceback" not in said, said
    finally:
        for c in commands:
            if c.proc.poll() is None:
                c.kill()
        for proc in (follower, writer):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        server.stop()


# ---------------------------------------------------------------------------------------
# The benchmark, in its quick mode


def test_the_relay_benchmark_runs_and_reports_every_scenario(tmp_path: Path) -> None:
    """No timing is asserted (that is the benchmark's business); it runs, starting and
    stopping its own redis-server, and reports X, T, L and W."""
    out = tmp_path / "relay-bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "atomic_log_shm.bench.relay", "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    results = json.loads(out.read_text())
    assert sorted(results) == ["L", "T", "W", "X"]
    assert results["T"]["burst_missed"] == 0 and results["L"]["missed"] == 0
