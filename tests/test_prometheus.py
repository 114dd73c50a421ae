"""Prometheus metrics of logs (``atomic_log_shm.prometheus``, ``atomic-log export``).

The collector is read in this process against real logs; the command runs in a
subprocess on a free port and is scraped with urllib; and a real Prometheus server
(Debian's ``prometheus``) scrapes the command every second while records are appended,
and is asked for the values back through its query API.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import support
from support import SHM, mappings_of, regions_of

pytest.importorskip("prometheus_client")

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from atomic_log_shm import (
    AtomicLog,
    InvalidArgumentError,
    InvalidNameError,
    LogClosedError,
    remove_log,
)
from atomic_log_shm.prometheus import DEFAULT_HOST, DEFAULT_PORT, Exporter, LogCollector

Names = Callable[[], str]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

CLI = [sys.executable, "-m", "atomic_log_shm"]
TIMEOUT = 60.0  # the longest any one wait may take before the test fails (a busy machine)
PROMETHEUS = shutil.which("prometheus")
HEAD_OFFSET = 64  # the header's head word (docs/design.md, "The header")

TICK = np.dtype([("ts", "<f8"), ("sym", "S4"), ("price", "<f4"), ("qty", "<i8"), ("ok", "?"), ("seq", "<i4")])
TICK_NUMERIC = ["ts", "price", "qty", "ok", "seq"]


def samples(collector: LogCollector) -> Samples:
    """One scrape: every sample, by name and labels."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in collector.collect()
        for s in family.samples
    }


def of(found: Samples, name: str, **labels: str) -> float | None:
    """The value of series ``name{labels}`` in a scrape, None if it is absent."""
    return found.get((name, frozenset(labels.items())))


def series_of(found: Samples, log: str) -> set[str]:
    """The names of the series of log ``log`` in a scrape."""
    return {name for name, labels in found if ("log", log) in labels}


def latest(found: Samples, log: str) -> dict[tuple[tuple[str, str], ...], float]:
    """``atomic_log_latest`` of log ``log``: {sorted labels but ``log``: value}."""
    return {
        tuple(sorted((k, v) for k, v in labels if k != "log")): value
        for (name, labels), value in found.items()
        if name == "atomic_log_latest" and ("log", log) in labels
    }


def tick(i: int, sym: bytes = b"AB") -> tuple[Any, ...]:
    return (i * 0.5, sym, 100.0 + i, i * 7, i % 2 == 0, i)


@pytest.fixture
def collectors() -> Iterator[Callable[..., LogCollector]]:
    """Makes LogCollectors; closes them after the test."""
    made: list[LogCollector] = []

    def make(*args: Any, **kwargs: Any) -> LogCollector:
        made.append(LogCollector(*args, **kwargs))
        return made[-1]

    yield make
    for collector in made:
        collector.close()


# ---------------------------------------------------------------------------------------
# The collector, against real logs


def test_every_metric_of_a_log_of_records(log_name: Names, collectors: Callable[..., LogCollector]) -> None:
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=TICK, name=log_name())
    name = log.name
    collector = collectors([name])
    for i in range(14):
        writer.append(tick(i))
    found = samples(collector)
    # Segments of 4, ceil(8 / 4) + 1 = 3 retained: 4..7, 8..11, 12..13.
    assert of(found, "atomic_log_up", log=name) == 1
    assert of(found, "atomic_log_records_total", log=name) == 14
    assert of(found, "atomic_log_retained_records", log=name) == 10
    assert of(found, "atomic_log_segments", log=name) == 3
    assert of(found, "atomic_log_bytes", log=name) == sum(
        os.stat(f"{SHM}/{r}").st_size for r in regions_of(name)
    )
    assert of(found, "atomic_log_writer_active", log=name) == 1
    newest = tick(13)
    assert latest(found, name) == {
        (("field", "ts"),): newest[0],
        (("field", "price"),): newest[2],
        (("field", "qty"),): newest[3],
        (("field", "ok"),): float(newest[4]),
        (("field", "seq"),): newest[5],
    }
    writer.append(tick(14))
    writer.close()
    found = samples(collector)
    assert of(found, "atomic_log_records_total", log=name) == 15
    assert of(found, "atomic_log_writer_active", log=name) == 0
    assert of(found, "atomic_log_latest", log=name, field="qty") == 14 * 7
    log.close()


def test_only_numeric_fields_are_exported(log_name: Names, collectors: Callable[..., LogCollector]) -> None:
    dtype = np.dtype(
        [("n", "<i2"), ("pair", "<f4", (2,)), ("xy", [("x", "<i4"), ("y", "<i4")]), ("t", "<M8[ns]"),
         ("z", "<c16"), ("text", "<U3"), ("raw", "S2"), ("u", "<u1")]
    )  # fmt: skip
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=dtype, name=log_name())
    writer.append((-3, (1.0, 2.0), (4, 5), np.datetime64(7, "ns"), 1j, "abc", b"xy", np.uint8(250)))
    assert latest(samples(collectors(log.name)), log.name) == {(("field", "n"),): -3, (("field", "u"),): 250}
    writer.close()
    log.close()


def test_plain_values_are_field_value_and_an_empty_log_has_no_latest(
    log_name: Names, collectors: Callable[..., LogCollector]
) -> None:
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=np.float32, name=log_name(), start=100)
    text_writer, text_log = AtomicLog.new_claimed(retained=8, segment=4, dtype="S8", name=log_name())
    collector = collectors([log.name, text_log.name])
    found = samples(collector)
    assert of(found, "atomic_log_records_total", log=log.name) == 100  # its first record gets position 100
    assert of(found, "atomic_log_retained_records", log=log.name) == 0
    assert latest(found, log.name) == {}
    writer.extend([1.5, 2.5])
    text_writer.append(b"hello")
    found = samples(collector)
    assert latest(found, log.name) == {(("field", "value"),): 2.5}
    assert of(found, "atomic_log_records_total", log=log.name) == 102
    assert of(found, "atomic_log_up", log=text_log.name) == 1
    assert latest(found, text_log.name) == {}  # text is not a value
    for w, lg in ((writer, log), (text_writer, text_log)):
        w.close()
        lg.close()


def test_label_by_a_bytes_field(log_name: Names, collectors: Callable[..., LogCollector]) -> None:
    writer, log = AtomicLog.new_claimed(retained=2_000, segment=256, dtype=TICK, name=log_name())
    name = log.name
    syms = [b"S%02d" % k for k in range(20)]
    records = np.array([tick(i, syms[(i * 7) % 20] if i >= 2_500 else b"OLD") for i in range(5_000)], TICK)
    writer.extend(records)
    collector = collectors([name], label="sym")
    found = samples(collector)
    window = log.snapshot().to_numpy()
    expected: dict[tuple[tuple[str, str], ...], float] = {}
    for record in window:  # the reference: the newest record of each value, the slow way
        for field in TICK_NUMERIC:
            expected[(("field", field), ("sym", record["sym"].decode()))] = float(record[field])
    assert len(expected) == 20 * len(TICK_NUMERIC)  # b"OLD" left the window
    assert latest(found, name) == expected
    assert "sym" not in {f for labels in latest(found, name) for k, f in labels if k == "field"}
    writer.close()
    log.close()


def test_label_values_are_decoded_without_nuls_and_alike_values_merge(
    log_name: Names, collectors: Callable[..., LogCollector]
) -> None:
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=TICK, name=log_name())
    writer.append(tick(1, b"A\x00B"))  # an embedded NUL
    writer.append(tick(2, b"\xff"))  # not UTF-8
    writer.append(tick(3, "é".encode()))
    writer.append(tick(4, b"\xfe"))  # not UTF-8 either: reads like b"\xff", and is newer
    writer.append(tick(5, b"AB"))  # reads like b"A\x00B", and is newer
    found = samples(collectors([log.name], label="sym"))
    assert {
        labels: value for labels, value in latest(found, log.name).items() if labels[0] == ("field", "qty")
    } == {
        (("field", "qty"), ("sym", "AB")): 5 * 7,
        (("field", "qty"), ("sym", "\ufffd")): 4 * 7,
        (("field", "qty"), ("sym", "é")): 3 * 7,
    }
    writer.close()
    log.close()


def test_label_by_an_int_field(log_name: Names, collectors: Callable[..., LogCollector]) -> None:
    dtype = np.dtype([("sensor", "<u2"), ("temp", "<f8")])
    writer, log = AtomicLog.new_claimed(retained=64, segment=16, dtype=dtype, name=log_name())
    writer.extend([(i % 3, 20.0 + i) for i in range(30)])
    found = samples(collectors(log.name, label="sensor"))
    assert latest(found, log.name) == {
        (("field", "temp"), ("sensor", "0")): 47.0,
        (("field", "temp"), ("sensor", "1")): 48.0,
        (("field", "temp"), ("sensor", "2")): 49.0,
    }
    writer.close()
    log.close()


def test_a_log_removed_then_recreated_with_another_dtype(
    log_name: Names, collectors: Callable[..., LogCollector], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "atomic_log_shm.prometheus")
    name = log_name()
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=TICK, name=name)
    writer.extend([tick(i) for i in range(6)])
    collector = collectors([name])
    assert of(samples(collector), "atomic_log_latest", log=name, field="seq") == 5
    assert mappings_of(name)  # the collector keeps its handle between scrapes
    writer.close()
    log.close()
    remove_log(name)
    found = samples(collector)
    assert of(found, "atomic_log_up", log=name) == 0
    assert series_of(found, name) == {"atomic_log_up"}
    assert mappings_of(name) == []  # it closed its handle when the log went
    samples(collector)

    writer, log = AtomicLog.new_claimed(retained=16, segment=8, dtype=np.int64, name=name)
    writer.extend([10, 11, 12])
    found = samples(collector)
    assert of(found, "atomic_log_up", log=name) == 1
    assert latest(found, name) == {(("field", "value"),): 12}
    assert of(found, "atomic_log_records_total", log=name) == 3

    # Replaced between two scrapes: the next scrape reads the new one.
    writer.close()
    log.close()
    remove_log(name)
    writer, log = AtomicLog.new_claimed(retained=16, segment=8, dtype=TICK, name=name)
    writer.append(tick(42))
    found = samples(collector)
    assert of(found, "atomic_log_up", log=name) == 1
    assert of(found, "atomic_log_latest", log=name, field="qty") == 42 * 7
    writer.close()
    log.close()
    said = [r.getMessage() for r in caplog.records]
    assert len([m for m in said if "cannot be read" in m]) == 1  # said once, not at every scrape
    assert len([m for m in said if "is read" in m]) == 2  # at first, and when it came back
    assert len([m for m in said if "was replaced; the new one holds records of [('ts'" in m]) == 1


def test_a_missing_log_reads_as_down_until_it_appears(
    log_name: Names, collectors: Callable[..., LogCollector], caplog: pytest.LogCaptureFixture
) -> None:
    name = log_name()
    collector = collectors([name], label="sym")  # a missing log is no error, nor is its label
    for _ in range(3):
        found = samples(collector)
        assert of(found, "atomic_log_up", log=name) == 0
        assert series_of(found, name) == {"atomic_log_up"}
    assert [r.levelname for r in caplog.records if name in r.getMessage()] == ["WARNING"]
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=TICK, name=name)
    writer.append(tick(1, b"XY"))
    found = samples(collector)
    assert of(found, "atomic_log_up", log=name) == 1
    assert of(found, "atomic_log_latest", log=name, field="qty", sym="XY") == 7
    writer.close()
    log.close()


def test_a_log_that_comes_back_without_the_label_field(
    log_name: Names, collectors: Callable[..., LogCollector], caplog: pytest.LogCaptureFixture
) -> None:
    name = log_name()
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=TICK, name=name)
    writer.append(tick(1, b"XY"))
    collector = collectors([name], label="sym")
    assert of(samples(collector), "atomic_log_latest", log=name, field="qty", sym="XY") == 7
    writer.close()
    log.close()
    remove_log(name)
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=[("qty", "<i8")], name=name)
    writer.append((9,))
    for _ in range(2):
        found = samples(collector)
        assert of(found, "atomic_log_up", log=name) == 1
        assert latest(found, name) == {(("field", "qty"),): 9}  # no sym label
    warned = [
        r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "'sym'" in r.getMessage()
    ]
    assert warned == [
        f"log {name!r} has no field 'sym' to label by (its fields are qty); its series carry no sym label"
    ]
    writer.close()
    log.close()


def test_a_region_that_is_not_a_log_reads_as_down(
    log_name: Names, collectors: Callable[..., LogCollector], caplog: pytest.LogCaptureFixture
) -> None:
    name = log_name()
    path = Path(SHM, name)
    path.write_bytes(bytes(4096))  # something else's shared memory, by that name
    try:
        collector = collectors([name])
        found = samples(collector)
        assert of(found, "atomic_log_up", log=name) == 0
        assert series_of(found, name) == {"atomic_log_up"}
        assert any("not" in r.getMessage() and name in r.getMessage() for r in caplog.records)
    finally:
        path.unlink()
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=TICK, name=name)
    writer.append(tick(3))
    assert of(samples(collector), "atomic_log_up", log=name) == 1
    writer.close()
    log.close()


def test_a_damaged_header_reads_as_down_and_back_up_once_repaired(
    log_name: Names, collectors: Callable[..., LogCollector], caplog: pytest.LogCaptureFixture
) -> None:
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=TICK, name=log_name())
    name = log.name
    writer.extend([tick(i) for i in range(5)])
    collector = collectors([name])
    assert of(samples(collector), "atomic_log_up", log=name) == 1
    with open(f"{SHM}/{name}", "r+b") as header:  # the head word, made nonsense
        header.seek(HEAD_OFFSET)
        head = header.read(8)
        header.seek(HEAD_OFFSET)
        header.write((-5).to_bytes(8, "little", signed=True))
    for _ in range(2):  # the handle it had, then a fresh one
        found = samples(collector)
        assert of(found, "atomic_log_up", log=name) == 0
        assert series_of(found, name) == {"atomic_log_up"}
    assert any("head segment -5" in r.getMessage() for r in caplog.records)
    with open(f"{SHM}/{name}", "r+b") as header:
        header.seek(HEAD_OFFSET)
        header.write(head)
    found = samples(collector)
    assert of(found, "atomic_log_up", log=name) == 1
    assert of(found, "atomic_log_latest", log=name, field="seq") == 4
    writer.close()
    log.close()


def test_bad_labels_and_names_are_typed_errors(log_name: Names) -> None:
    name = log_name()
    dtype = np.dtype([("sym", "S4"), ("pair", "<f4", (2,)), ("xy", [("x", "<i4")]), ("qty", "<i8")])
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=dtype, name=name)
    ours = mappings_of(name)  # the writer's and this handle's
    with pytest.raises(InvalidArgumentError, match=rf"{name}.*no field 'nope'.*sym, pair, xy, qty"):
        LogCollector([name], label="nope")
    with pytest.raises(InvalidArgumentError, match=rf"{name}.*'pair'.*sub-array"):
        LogCollector([name], label="pair")
    with pytest.raises(InvalidArgumentError, match=rf"{name}.*'xy'.*nested record"):
        LogCollector([name], label="xy")
    for bad in ("log", "field", "__sym", "1x", "a-b", ""):
        with pytest.raises(InvalidArgumentError, match="label"):
            LogCollector([name], label=bad)
    with pytest.raises(InvalidArgumentError, match="at least one"):
        LogCollector([])
    with pytest.raises(InvalidNameError):
        LogCollector([name, "no/slashes"])
    with pytest.raises(InvalidArgumentError, match="port"):
        Exporter([name], port=70_000)
    assert mappings_of(name) == ours  # what the failed collectors attached, they closed
    writer.close()
    log.close()


def test_registered_in_an_application_registry(log_name: Names) -> None:
    name = log_name()
    registry = CollectorRegistry()
    with LogCollector([name, name], label="sym") as collector:  # registered before the log exists
        registry.register(collector)
        assert collector.names == [name]
        writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=TICK, name=name)
        writer.append(tick(2, b"QQ"))
        text = generate_latest(registry).decode()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        assert families["atomic_log_records"].type == "counter"
        assert [(s.name, s.value) for s in families["atomic_log_records"].samples] == [
            ("atomic_log_records_total", 1.0)
        ]
        (price,) = [s for s in families["atomic_log_latest"].samples if s.labels["field"] == "price"]
        assert price.labels == {"log": name, "field": "price", "sym": "QQ"}
        assert price.value == 102.0
    with pytest.raises(LogClosedError):
        collector.collect()
    writer.close()
    log.close()
    assert mappings_of(name) == []  # nor the collector's


def test_scrapes_from_several_threads_take_turns(
    log_name: Names, collectors: Callable[..., LogCollector]
) -> None:
    writer, log = AtomicLog.new_claimed(retained=256, segment=32, dtype=TICK, name=log_name())
    collector = collectors([log.name], label="sym")
    errors: list[BaseException] = []
    done = threading.Event()

    def scrape() -> None:
        try:
            while not done.is_set():
                found = samples(collector)
                assert of(found, "atomic_log_up", log=log.name) == 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=scrape) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(3_000):
        writer.append(tick(i, b"S%d" % (i % 5)))
    done.set()
    for t in threads:
        t.join(TIMEOUT)
    assert not errors
    assert of(samples(collector), "atomic_log_latest", log=log.name, field="seq", sym="S4") == 2999
    writer.close()
    log.close()


# ---------------------------------------------------------------------------------------
# The command


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """In a child before exec: SIGKILL if the test process dies, so no server outlives it."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@contextlib.contextmanager
def stopped_at_exit(proc: subprocess.Popen[Any]) -> Iterator[subprocess.Popen[Any]]:
    """``proc``, terminated (then killed) when the block ends, however it ends."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


until = functools.partial(support.until, timeout=TIMEOUT, every=0.1)


def export(*args: str, stderr: Any = subprocess.PIPE) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CLI, "export", *args],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        preexec_fn=_die_with_parent,
    )


def scrape_url(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=TIMEOUT) as answer:
        text = answer.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_the_command_serves_the_metrics_until_a_signal(log_name: Names) -> None:
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=TICK, name=log_name())
    missing = log_name()
    writer.extend([tick(1, b"AB"), tick(2, b"CD")])
    port = free_port()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with stopped_at_exit(export(log.name, missing, "--port", str(port), "--label", "sym")) as proc:
            assert proc.stdout is not None and proc.stderr is not None
            line = proc.stdout.readline()
            url = f"http://127.0.0.1:{port}/metrics"
            assert line == f"atomic-log export: serving metrics of {log.name}, {missing} at {url}\n"
            found = scrape_url(url)
            assert of(found, "atomic_log_up", log=log.name) == 1
            assert of(found, "atomic_log_up", log=missing) == 0
            assert of(found, "atomic_log_latest", log=log.name, field="price", sym="CD") == 102.0
            writer.append(tick(3, b"AB"))
            assert of(scrape_url(url), "atomic_log_latest", log=log.name, field="price", sym="AB") == 103.0
            proc.send_signal(sig)
            assert proc.wait(timeout=TIMEOUT) == 0
            assert proc.stdout.read() == ""
            said = proc.stderr.read()
            assert said.count("\n") == 1 and f"log {missing!r} cannot be read" in said  # said once
    writer.close()
    log.close()


def test_the_commands_errors_are_one_line(log_name: Names, tmp_path: Path) -> None:
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=TICK, name=log_name())

    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, "export", *args], capture_output=True, text=True, timeout=TIMEOUT, env=env
        )

    bad_label = run(log.name, "--label", "nope", "--port", "0")
    assert bad_label.returncode == 2
    assert bad_label.stderr == (
        f"atomic-log export: log {log.name!r} has no field 'nope' to label by "
        "(its fields are ts, sym, price, qty, ok, seq)\n"
    )
    assert run(log.name, "--port", "65536").returncode == 2
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        in_use = run(log.name, "--port", str(taken.getsockname()[1]))
    assert in_use.returncode == 1
    assert in_use.stderr.count("\n") == 1 and "Address already in use" in in_use.stderr

    # Without the extra: a prometheus_client that cannot be imported shadows the real one.
    (tmp_path / "prometheus_client.py").write_text("raise ImportError('not installed')\n")
    absent = run(
        log.name,
        env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"},
    )
    assert absent.returncode == 1
    assert absent.stderr.count("\n") == 1 and "pip install 'atomic-log-shm[prometheus]'" in absent.stderr
    writer.close()
    log.close()


def test_the_commands_defaults_are_the_modules() -> None:
    from atomic_log_shm import _cli

    args = _cli._parser().parse_args(["export", "x"])
    assert (args.host, args.port) == (DEFAULT_HOST, DEFAULT_PORT)


# ---------------------------------------------------------------------------------------
# A real Prometheus server


CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: atomic-log
    static_configs:
      - targets: ["127.0.0.1:{port}"]
"""


class Prometheus:
    """``prometheus`` on a free loopback port, its data in ``directory``, scraping ``target``
    every second; stopped (then killed) by ``stop()``."""

    def __init__(self, directory: Path, target: int) -> None:
        assert PROMETHEUS is not None
        self.port = free_port()
        config = directory / "prometheus.yml"
        config.write_text(CONFIG.format(port=target))
        self.log_path = directory / "prometheus.log"
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )

    def get(self, path: str) -> bytes:
        if self.proc.poll() is not None:
            pytest.fail(f"prometheus exited: {self.log_path.read_text()[-2000:]}")
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=TIMEOUT) as answer:
            return bytes(answer.read())

    def ready(self) -> bool:
        try:
            self.get("/-/ready")
        except (urllib.error.URLError, ConnectionError):
            return False
        return True

    def query(self, promql: str) -> dict[str, float]:
        """The instant vector ``promql`` evaluates to now: {its labels but name, job, instance,
        as ``k=v,...``: value}."""
        answer = json.loads(self.get("/api/v1/query?" + urllib.parse.urlencode({"query": promql})))
        assert answer["status"] == "success", answer
        found = {}
        for series in answer["data"]["result"]:
            labels = sorted(
                (k, v) for k, v in series["metric"].items() if k not in ("__name__", "instance", "job")
            )
            found[",".join(f"{k}={v}" for k, v in labels)] = float(series["value"][1])
        return found


@pytest.mark.skipif(PROMETHEUS is None, reason="needs Debian's prometheus (apt-get install prometheus)")
def test_a_prometheus_server_scrapes_the_command(log_name: Names, tmp_path: Path) -> None:
    writer, log = AtomicLog.new_claimed(retained=64, segment=16, dtype=TICK, name=log_name())
    name = log.name
    writer.extend([tick(1, b"AB"), tick(2, b"CD")])
    port = free_port()
    exporter = export(name, "--port", str(port), "--label", "sym", stderr=subprocess.DEVNULL)
    with stopped_at_exit(exporter):
        assert exporter.stdout is not None
        assert "serving metrics" in exporter.stdout.readline()
        prometheus = Prometheus(tmp_path, port)
        with stopped_at_exit(prometheus.proc):
            until(prometheus.ready, "prometheus to be ready")

            def price_of(sym: str, value: float) -> Callable[[], bool]:
                query = f'atomic_log_latest{{log="{name}", field="price", sym="{sym}"}}'
                return lambda: prometheus.query(query) == {f"field=price,log={name},sym={sym}": value}

            until(price_of("CD", 102.0), "the newest price of CD in prometheus")
            writer.extend([tick(i, b"AB") for i in range(3, 100)])
            until(price_of("AB", 199.0), "the newest price of AB, after more records")
            until(
                lambda: (
                    prometheus.query(f'atomic_log_records_total{{log="{name}"}}') == {f"log={name}": 99.0}
                ),
                "the record count",
            )
            assert prometheus.query(f'atomic_log_up{{log="{name}"}}') == {f"log={name}": 1.0}
            writer.close()
            log.close()
            remove_log(name)
            until(
                lambda: prometheus.query(f'atomic_log_up{{log="{name}"}}') == {f"log={name}": 0.0},
                "the log's removal in prometheus",
            )
            until(lambda: prometheus.query(f'atomic_log_latest{{log="{name}"}}') == {}, "the series to go")
        assert prometheus.proc.poll() is not None


def test_the_exporter_benchmark_runs_and_reports_every_scenario(tmp_path: Path) -> None:
    out = tmp_path / "prometheus.json"
    result = subprocess.run(
        [sys.executable, "-m", "atomic_log_shm.bench.prometheus", "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(out.read_text())
    assert sorted(found) == ["S", "W"]
    assert found["S"]["sym_series"] == found["S"]["sensor_series"] == 6 + 20 * 5  # 20 values, 5 fields
    assert found["W"]["alone_per_s"] > 0 and found["W"]["exported_per_s"] > 0
