"""The live dashboard (``atomic-log dashboard``): what it plots of a log, its server (the
page, the list of logs, one event stream per plot, a log that is missing or goes away),
its command, and the page itself in a real headless Chromium (tests/cdp.py)."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cdp import chromium
from support import SHM, mappings_of

from atomic_log_shm import AtomicLog, Writer
from atomic_log_shm.dashboard import Dashboard
from atomic_log_shm.dashboard._server import STATIC_FILES
from atomic_log_shm.dashboard._window import Arrivals, Plan, reduce

TIMEOUT = 60  # seconds for anything to happen; a few are needed on an idle machine
CLI = [sys.executable, "-m", "atomic_log_shm", "dashboard"]
TICK = np.dtype([("ts", "f8"), ("price", "f4"), ("qty", "i4"), ("sym", "S4")])

# What the page last drew, as the tests read it (dashboard.js keeps it up to date).
LAST = "window.atomicLogDashboard && atomicLogDashboard.last"


def ticks(first: int, count: int) -> np.ndarray:
    """Records ``first .. first+count-1``: one every 0.1 s from ts=1000, price 100+i."""
    i = np.arange(first, first + count)
    out = np.zeros(count, TICK)
    out["ts"], out["price"], out["qty"], out["sym"] = 1000 + i * 0.1, 100 + i, i, b"AB"
    return out


def unpack(packed: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(packed), "<f8")


# What it plots -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "axis", "series"),
    [
        (TICK, "ts", ("price", "qty")),
        ([("seq", "u8"), ("time", "f4"), ("ok", "?")], "time", ("seq", "ok")),
        ([("when", "M8[us]"), ("load", "f8"), ("ts", "i8")], "when", ("load", "ts")),  # ts: not a float
        ([("a", "f8"), ("v", "f4", (3,)), ("b", "i2")], None, ("a", "b")),  # a sub-array: not plotted
        (np.int64, None, ("value",)),
        ("S8", None, ()),
    ],
)
def test_the_axis_is_ts_or_time_or_a_datetime_field_else_the_position(
    dtype: Any, axis: str | None, series: tuple[str, ...]
) -> None:
    plan = Plan.of(np.dtype(dtype))
    assert (plan.axis, plan.series) == (axis, series)


def test_a_large_window_is_brought_down_to_each_pixel_columns_min_and_max() -> None:
    rng = np.random.default_rng(7)
    x = np.sort(rng.uniform(0, 100, 100_000))
    y = rng.normal(0, 1, 100_000)
    y[[10, 50_000]] = [-40.0, 55.0]  # spikes a mean or a stride would hide
    y[99] = np.nan  # a gap in the data is ignored
    xs, (ys,) = reduce(x, [y], 250)
    assert len(xs) == len(ys) <= 2 * 250
    assert np.all(np.diff(xs) >= 0)
    assert np.nanmin(ys) == -40.0 and np.nanmax(ys) == 55.0
    edges = np.searchsorted(x, x[0] + (x[-1] - x[0]) * np.arange(251) / 250)
    edges[-1] = len(x)
    for k in range(0, 250, 37):  # each column holds its records' min and max, at its ends
        low, high = edges[k], edges[k + 1]
        assert xs[2 * k : 2 * k + 2].tolist() == [x[low], x[high - 1]]
        assert ys[2 * k : 2 * k + 2].tolist() == [np.nanmin(y[low:high]), np.nanmax(y[low:high])]


def test_a_small_window_is_sent_as_it_is() -> None:
    x, y = np.arange(10.0), np.arange(10, dtype=np.int16) ** 2
    xs, (ys,) = reduce(x, [y], 5)
    assert xs is x and ys.dtype == np.float64 and ys.tolist() == (np.arange(10) ** 2).tolist()


def test_arrivals_give_the_rate_and_where_the_last_seconds_start() -> None:
    arrivals = Arrivals()
    assert arrivals.rate(0.0) is None and arrivals.window_start(60) is None
    for t in range(11):  # 100 records a second for 10 s
        arrivals.note(float(t), 100 * t)
    assert arrivals.rate(10.0) == 100.0
    assert arrivals.window_start(4) == 600  # what came in the 4 s up to the last news
    assert arrivals.window_start(60) is None  # watched for 10 s only: everything may be
    assert arrivals.rate(20.0) == 0.0  # nothing new for 10 s
    arrivals.forget(20.0, 5)
    assert arrivals.window_start(4) == 600


# The server, in this process ---------------------------------------------------------------


@contextmanager
def serving(names: list[str] | None) -> Iterator[str]:
    """A dashboard of ``names`` on a free port, served by a thread; its URL."""
    board = Dashboard(names, port=0)
    thread = threading.Thread(target=board.run)
    thread.start()
    try:
        yield board.url
    finally:
        board.stop()
        thread.join(TIMEOUT)
        assert not thread.is_alive(), "the dashboard did not stop"


def get(url: str, host: str | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def events(url: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """The (kind, data) events of a stream, as they come."""
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        kind = ""
        for raw in response:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                yield kind, json.loads(line.removeprefix("data: "))


def next_event(
    stream: Iterator[tuple[str, dict[str, Any]]], wanted: Callable[[str, dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    deadline = time.monotonic() + TIMEOUT
    for kind, data in stream:
        if wanted(kind, data):
            return data
        if time.monotonic() > deadline:
            break
    pytest.fail(f"no {what} within {TIMEOUT} s")


def test_the_page_and_its_files_come_from_the_package() -> None:
    with serving(None) as url:
        for path in ["", *(f"static/{f}" for f in STATIC_FILES)]:
            status, headers, body = get(url + path)
            assert status == 200 and body, path
            assert headers["Content-Security-Policy"].startswith("default-src 'self'")  # nothing from a CDN
        _, headers, page = get(url)
        assert headers["Content-Type"].startswith("text/html") and b"uPlot.iife.min.js" in page
        assert b"MIT License" in get(url + "static/uplot/LICENSE")[2]
        assert get(url + "static/../_server.py")[0] == 404


def test_the_list_has_the_names_given_missing_ones_too(log_name: Callable[[], str]) -> None:
    here, missing = log_name(), log_name()
    writer, log = AtomicLog.new_claimed(retained=100, segment=16, dtype=TICK, name=here)
    with log, writer, serving([here, missing]) as url:
        writer.extend(ticks(0, 5))
        listing = json.loads(get(url + "api/logs")[2])
    assert listing["names"] == [here, missing]
    shown, absent = listing["logs"]
    assert shown["name"] == here and shown["state"] == "live" and shown["records"] == 5
    assert shown["writer"] == {"active": True, "status": f"held by pid {os.getpid()}"}
    assert (shown["axis"], shown["series"]) == ("ts", ["price", "qty"])
    assert absent["state"] == "missing" and "no log named" in absent["message"]


def test_a_stream_sends_the_last_seconds_of_the_log_as_it_grows(log_name: Callable[[], str]) -> None:
    writer, log = AtomicLog.new_claimed(retained=1000, segment=64, dtype=TICK, name=log_name())
    with log, writer, serving([log.name]) as url:
        writer.extend(ticks(0, 100))
        stream = events(f"{url}api/stream?log={log.name}&seconds=2&columns=100")
        with closing(stream):  # type: ignore[type-var]
            frame = next_event(stream, lambda kind, _: kind == "frame", "frame")
            assert (frame["end"], frame["records"], frame["state"]) == (100, 100, "live")
            assert frame["writer"]["active"] and frame["axis_kind"] == "time"
            ts = ticks(0, 100)["ts"]
            newest = ts[ts >= ts[-1] - 2]  # the last 2 s up to the newest record: 21 records
            assert frame["window_records"] == len(newest) == 21 and not frame["downsampled"]
            assert unpack(frame["x"]).tolist() == newest.tolist()
            assert unpack(frame["y"][0]).tolist() == (100 + np.arange(79, 100)).tolist()
            writer.extend(ticks(100, 3))
            frame = next_event(stream, lambda kind, data: kind == "frame" and data["end"] == 103, "news")
            assert unpack(frame["x"])[-1] == ticks(102, 1)["ts"][0] and unpack(frame["y"][1])[-1] == 102


def test_a_log_without_a_time_field_is_plotted_by_position(log_name: Callable[[], str]) -> None:
    writer, log = AtomicLog.new_claimed(retained=100, segment=16, dtype=np.int16, name=log_name())
    with log, writer, serving(None) as url:
        writer.extend(np.arange(40, dtype=np.int16) * 3)
        stream = events(f"{url}api/stream?log={log.name}&seconds=60&columns=100")
        with closing(stream):  # type: ignore[type-var]
            frame = next_event(stream, lambda kind, _: kind == "frame", "frame")
    assert (frame["axis_kind"], frame["series"]) == ("position", ["value"])
    assert unpack(frame["x"]).tolist() == list(range(40))
    assert unpack(frame["y"][0]).tolist() == [3 * i for i in range(40)]


def test_a_100000_record_window_arrives_as_two_points_per_pixel_column(log_name: Callable[[], str]) -> None:
    writer, log = AtomicLog.new_claimed(retained=120_000, segment=8192, dtype=TICK, name=log_name())
    with log, writer, serving([log.name]) as url:
        records = ticks(0, 110_000)
        records["ts"] = 1000 + np.arange(110_000) * (50 / 110_000)  # 50 s of records
        records["price"][[5, 77_777]] = [-1.0, 1e6]
        writer.extend(records)
        stream = events(f"{url}api/stream?log={log.name}&seconds=60&columns=300")
        with closing(stream):  # type: ignore[type-var]
            frame = next_event(stream, lambda kind, _: kind == "frame", "frame")
    window = frame["window_records"]
    assert window == frame["records"] >= 100_000 and frame["downsampled"]
    assert frame["points"] <= 2 * 300
    price = unpack(frame["y"][0])
    assert price.min() == -1.0 and price.max() == 1e6  # no spike lost


def test_a_stream_says_when_the_log_is_missing_gone_back_or_not_a_log(log_name: Callable[[], str]) -> None:
    name = log_name()
    with serving([name]) as url:
        stream = events(f"{url}api/stream?log={name}&seconds=60&columns=100")
        with closing(stream):  # type: ignore[type-var]
            state = next_event(stream, lambda kind, _: kind == "state", "state")
            assert state["state"] == "missing" and "no log named" in state["message"]
            writer, log = AtomicLog.new_claimed(retained=100, segment=16, dtype=TICK, name=name)
            with writer, log:
                writer.extend(ticks(0, 3))
                next_event(stream, lambda kind, data: kind == "frame" and data["end"] == 3, "the log")
                log.unlink()
                gone = next_event(stream, lambda _, data: data["state"] != "live", "the log gone")
            assert gone["state"] == "gone"
            writer, log = AtomicLog.new_claimed(retained=100, segment=16, dtype=np.float32, name=name)
            with writer, log:
                writer.append(1.5)
                back = next_event(
                    stream, lambda kind, data: kind == "frame" and data["end"] == 1, "its successor"
                )
                assert back["series"] == ["value"] and unpack(back["y"][0]).tolist() == [1.5]
                log.unlink()
            next_event(stream, lambda _, data: data["state"] == "gone", "the successor gone")
            with open(f"{SHM}/{name}", "wb") as f:  # a region of that name that is not a log
                f.write(b"not a log" * 100)
            try:
                odd = next_event(stream, lambda _, data: data["state"] == "unreadable", "an unreadable log")
            finally:
                os.unlink(f"{SHM}/{name}")
            assert "log" in odd["message"]


def test_bad_requests_and_foreign_hosts_are_refused(log_name: Callable[[], str]) -> None:
    name = log_name()
    with serving([name]) as url:
        stream = f"{url}api/stream?log={name}"
        for query in ["", "&seconds=0", "&seconds=nan", "&seconds=1e9", "&columns=wide", "&columns=2"]:
            status, _, body = get(stream.replace(f"log={name}", "") if not query else stream + query)
            assert status == 400 and body.startswith(b"bad stream request"), query
        assert get(f"{url}api/stream?log=other")[0] == 404  # not one of the names given
        assert get(url + "nothing-here")[0] == 404
        # DNS rebinding: a page of another site, its name pointed at 127.0.0.1, gets nothing.
        status, _, body = get(url + "api/logs", host="attacker.example:80")
        assert status == 403 and b"loopback" in body
        assert get(url + "api/logs", host="localhost")[0] == 200


# The command ------------------------------------------------------------------------------


@contextmanager
def dashboard_process(*names: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``atomic-log dashboard NAMES --port 0`` and its URL; never outlives the ``with``."""
    proc = subprocess.Popen(
        [*CLI, *names, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # SIGINT must reach it even when this test runs in the background, where it is ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the first thing it says: where the page is
        assert line.startswith("atomic-log dashboard: http://127.0.0.1:"), line + proc.communicate()[1]
        yield proc, line.split()[2]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=TIMEOUT)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_the_command_serves_until_a_signal_then_exits_0(log_name: Callable[[], str], sig: int) -> None:
    name = log_name()
    with dashboard_process(name) as (proc, url):
        assert json.loads(get(url + "api/logs")[2])["names"] == [name]
        stream = events(f"{url}api/stream?log={name}")  # an open stream must not hold it up
        with closing(stream):  # type: ignore[type-var]
            next_event(stream, lambda _, data: data["state"] == "missing", "missing")
            proc.send_signal(sig)
            assert proc.wait(timeout=TIMEOUT) == 0


def test_the_dashboard_maps_the_log_read_only(log_name: Callable[[], str]) -> None:
    writer, log = AtomicLog.new_claimed(retained=100, segment=16, dtype=TICK, name=log_name())
    with log, writer, dashboard_process(log.name) as (proc, url):
        writer.extend(ticks(0, 40))
        stream = events(f"{url}api/stream?log={log.name}")
        with closing(stream):  # type: ignore[type-var]
            next_event(stream, lambda kind, data: kind == "frame" and data["end"] == 40, "a frame")
            maps = mappings_of(log.name, proc.pid)
    assert maps
    # Header and segments read-only; only the wait region is writable (a waiter's flag).
    assert all(m.perms == "r--s" for m in maps if not m.region.endswith(".wait")), maps


def test_the_command_refuses_a_bad_name_and_a_busy_port() -> None:
    result = subprocess.run([*CLI, "no/slash"], capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        result = subprocess.run([*CLI, "--port", port], capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 1 and "cannot listen on 127.0.0.1:" in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1


def test_the_dashboards_benchmark_runs() -> None:
    bench = [sys.executable, "-m", "atomic_log_shm.bench.dashboard", "--quick"]
    result = subprocess.run(bench, capture_output=True, text=True, timeout=10 * TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr
    c, w, m = result.stdout.splitlines()
    assert c.startswith("C: no_client_cpu_pct=") and "w25s_frames_per_s=" in c
    assert w.startswith("W: alone_per_s=") and "streamed_per_s=" in w
    assert m.startswith("M: alone_per_s=") and "exporter_cpu=" in m


# The page, in a headless Chromium ----------------------------------------------------------


def test_the_page_plots_records_as_they_are_appended(log_name: Callable[[], str]) -> None:
    writer, log = AtomicLog.new_claimed(retained=1000, segment=64, dtype=TICK, name=log_name())
    with log, writer, dashboard_process(log.name) as (_, url), chromium() as page:
        writer.extend(ticks(0, 50))
        page.navigate(f"{url}#log={log.name}&seconds=60")
        last = page.wait_for(f"{LAST} && {LAST}.end === 50 && {LAST}", TIMEOUT, "drawn")
        assert last["x"] == pytest.approx(1004.9) and last["y"] == {"price": 149.0, "qty": 49.0}
        assert page.evaluate("document.querySelectorAll('#charts canvas').length") >= 2  # a chart a field
        assert page.evaluate("document.getElementById('state').textContent") == "writing"
        end = 50
        for count in (1, 1, 10):
            writer.extend(ticks(end, count))
            end += count
            last = page.wait_for(f"{LAST} && {LAST}.end === {end} && {LAST}", TIMEOUT, f"at {end}")
            assert last["x"] == pytest.approx(1000 + (end - 1) * 0.1) and last["y"]["price"] == 100 + end - 1
        assert page.errors() == []


def test_the_page_shows_a_log_that_is_missing_idle_then_removed(log_name: Callable[[], str]) -> None:
    name = log_name()
    badge = "document.getElementById('state').textContent"
    with dashboard_process(name) as (_, url), chromium() as page:
        page.navigate(url)  # the first log listed is chosen: the one named, not there yet
        page.wait_for(f"{badge} === 'no such log'", TIMEOUT, "shown missing")
        writer, log = AtomicLog.new_claimed(retained=100, segment=16, dtype=TICK, name=name)
        with log:
            with writer:
                writer.extend(ticks(0, 5))
                page.wait_for(f"{badge} === 'writing' && {LAST} && {LAST}.end === 5", TIMEOUT, "live")
            page.wait_for(f"{badge} === 'no writer'", TIMEOUT, "shown without a writer")
            log.unlink()
        page.wait_for(f"{badge} === 'removed'", TIMEOUT, "shown removed")
        assert page.evaluate(f"{LAST}.end") == 5  # the last plot stays
        assert page.errors() == []


SERVICES = ("api", "db", "cache")
TELEMETRY = np.dtype(
    [("ts", "f8")]
    + [(f"{s}_cpu", "f4") for s in SERVICES]
    + [(f"{s}_mem_mb", "f4") for s in SERVICES]
    + [(f"{s}_p99_ms", "f4") for s in SERVICES]
)


def telemetry(ts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Three services' cpu (%), memory (MB) and p99 latency (ms) at times ``ts``."""
    out = np.empty(len(ts), TELEMETRY)
    out["ts"] = ts
    for k, service in enumerate(SERVICES):
        wave = np.sin(ts / (9 + 4 * k) + k)
        drift = np.sin(ts / (40 + 15 * k))
        out[f"{service}_cpu"] = 30 + 12 * k + 10 * wave + rng.normal(0, 1, len(ts))
        out[f"{service}_mem_mb"] = 400 * (k + 1) + 30 * (k + 1) * drift + rng.normal(0, 1, len(ts))
        out[f"{service}_p99_ms"] = 5 + 6 * k + 3 * wave**2 + rng.exponential(0.5 + k / 2, len(ts))
    return out


@contextmanager
def writing_telemetry(writer: Writer, rate: int, history: float) -> Iterator[None]:
    """A thread appending telemetry at ``rate`` records a second, with timestamps from
    ``history`` seconds ago (written at once) to now, and on, until the ``with`` ends."""
    stop = threading.Event()
    rng = np.random.default_rng(11)
    start = time.time() - history

    def write() -> None:
        written = 0
        while not stop.is_set():
            due = int((time.time() - start) * rate)
            writer.extend(telemetry(start + np.arange(written, due) / rate, rng))
            written = due
            stop.wait(0.01)

    thread = threading.Thread(target=write)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def test_the_page_of_a_realistic_log_and_its_screenshot(log_name: Callable[[], str], tmp_path: Path) -> None:
    """Writes the screenshot to $DASHBOARD_PNG if set (docs/img/dashboard.png is made so)."""
    writer, log = AtomicLog.new_claimed(retained=300_000, segment=16_384, dtype=TELEMETRY, name=log_name())
    with log, writer, dashboard_process(log.name) as (_, url), chromium(1600, 1000) as page:
        with writing_telemetry(writer, rate=4000, history=60):
            page.navigate(f"{url}#log={log.name}&seconds=60")
            page.wait_for(f"{LAST} && {LAST}.points > 0", TIMEOUT, "drawn")
            rate = "atomicLogDashboard.state.rate"  # over the last 2 s: once past the history
            page.wait_for(f"{rate} > 2000 && {rate} < 8000", TIMEOUT, "about 4,000 records/s")
            listed = "document.querySelector('#logs .meta').textContent"
            page.wait_for(f"!{listed}.startsWith('0 records')", TIMEOUT, "listed with its records")
            assert page.evaluate("document.querySelectorAll('#charts canvas').length") == 9
            png = page.screenshot()
        assert page.errors() == []
    assert png.startswith(b"\x89PNG")
    (tmp_path / "dashboard.png").write_bytes(png)
    if os.environ.get("DASHBOARD_PNG"):
        Path(os.environ["DASHBOARD_PNG"]).write_bytes(png)
