"""The command line, run as a user runs it: ``python -m atomic_log_shm`` in a subprocess,
against logs that another process writes."""

from __future__ import annotations

import datetime
import json
import os
import pty
import queue
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from support import SHM, regions_of

from atomic_log_shm import AtomicLog, _cli

CLI = [sys.executable, "-m", "atomic_log_shm"]
TIMEOUT = 60  # seconds for any one command; nothing here should take more than a few

# A writer process: creates the log (retain 8, segments of 4: 3 slots), then appends as
# many records as each line of its stdin says and answers with how many it has written.
WRITER = r"""
import sys
import numpy as np
from atomic_log_shm import AtomicLog

dt = np.dtype([("ts", "f8"), ("sym", "S4"), ("price", "f4"), ("qty", "i4")])
writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=dt, name=sys.argv[1])
n = 0
print("ready", flush=True)
for line in sys.stdin:
    for _ in range(int(line)):
        writer.append((n * 0.5, b"AB", 100 + n, n))
        n += 1
    print(n, flush=True)
writer.close()
log.close()  # the log stays: the test removes it
"""


def local_time(seconds: float) -> str:
    """How ``tail`` shows a time: ISO 8601, local, to the millisecond."""
    return datetime.datetime.fromtimestamp(seconds).astimezone().isoformat(timespec="milliseconds")


def record(n: int) -> str:
    return f"#{n} ts={local_time(n * 0.5)} sym=AB price={100.0 + n} qty={n}"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=TIMEOUT)


class WriterProcess:
    def __init__(self, name: str) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, name], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.lines = _lines_of(self.proc.stdout)
        assert self.lines.get(timeout=TIMEOUT) == "ready"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def append(self, count: int) -> int:
        """Have the writer append ``count`` records; returns how many it has written."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{count}\n")
        self.proc.stdin.flush()
        return int(self.lines.get(timeout=TIMEOUT))

    def stop(self) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _lines_of(stream: object) -> queue.Queue[str]:
    """Lines of a pipe, collected by a thread so a test can wait for each with a timeout."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:  # type: ignore[attr-defined]
            lines.put(line.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    return lines


@pytest.fixture
def writer(log_name: Callable[[], str]) -> Iterator[WriterProcess]:
    w = WriterProcess(log_name())
    yield w
    w.stop()


def test_inspect_says_the_header_in_words(writer: WriterProcess) -> None:
    writer.append(13)  # segments 1..3 retained: positions 4..12
    result = cli("inspect", writer.name)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert f"log           {writer.name}" in text
    assert "ts: float64, sym: S4, price: float32, qty: int32  (20 bytes a record)" in text
    assert "retains at least 8 records, in segments of 4 (80 B); 3 slots" in text
    assert "head segment  3" in text
    assert "3 retained: 1..2 full, 3 (head) holds 1 of 4" in text
    assert "positions     4 .. 12 (9 records)" in text
    assert f"writer        held by pid {writer.pid}" in text
    assert f"in {len(regions_of(writer.name))} shared-memory regions" in text


def test_inspect_json(writer: WriterProcess) -> None:
    writer.append(13)
    result = cli("inspect", writer.name, "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["name"] == writer.name
    assert info["descr"] == [["ts", "<f8"], ["sym", "|S4"], ["price", "<f4"], ["qty", "<i4"]]
    assert (info["retained_capacity"], info["segment_capacity"], info["slot_count"]) == (8, 4, 3)
    assert info["head"] == 3
    assert info["segments"] == [
        {"sequence": 1, "start": 4, "published": 4},
        {"sequence": 2, "start": 8, "published": 4},
        {"sequence": 3, "start": 12, "published": 1},
    ]
    assert (info["first_position"], info["last_position"], info["records"]) == (4, 12, 9)
    assert info["writer"] == {"held": True, "pid": writer.pid, "status": f"held by pid {writer.pid}"}
    sizes = [os.stat(f"{SHM}/{e}").st_size for e in regions_of(writer.name)]
    assert info["memory_bytes"] == sum(sizes) and info["regions"] == len(sizes)
    assert abs(info["created_ns"] / 1e9 - time.time()) < TIMEOUT


def test_inspect_tells_a_crashed_writer_from_a_closed_one(writer: WriterProcess) -> None:
    writer.append(2)
    writer.proc.kill()  # SIGKILL: the claim is released, its pid stays in the header
    writer.proc.wait(timeout=TIMEOUT)
    info = json.loads(cli("inspect", writer.name, "--json").stdout)
    assert info["writer"] == {
        "held": False,
        "pid": writer.pid,
        "status": f"free (last writer pid {writer.pid} exited)",
    }
    assert info["records"] == 2


def test_inspect_of_an_empty_log_after_its_writer_closed(writer: WriterProcess) -> None:
    writer.stop()
    result = cli("inspect", writer.name)
    assert result.returncode == 0, result.stderr
    assert "positions     none yet" in result.stdout
    assert "writer        free since 20" in result.stdout  # closed cleanly: since when


def start_tail(*args: str) -> tuple[subprocess.Popen[str], queue.Queue[str]]:
    proc = subprocess.Popen(
        [*CLI, "tail", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # Ctrl-C must reach it as KeyboardInterrupt even when this test runs in the
        # background, where SIGINT is ignored and children would inherit that.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    return proc, _lines_of(proc.stdout)


def interrupt(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


def take(lines: queue.Queue[str], count: int) -> list[str]:
    return [lines.get(timeout=TIMEOUT) for _ in range(count)]


def test_tail_prints_the_newest_then_each_new_record_until_ctrl_c(writer: WriterProcess) -> None:
    writer.append(6)
    proc, lines = start_tail(writer.name, "-n", "3", "--interval", "0.01")
    try:
        assert take(lines, 3) == [record(3), record(4), record(5)]
        writer.append(2)
        assert take(lines, 2) == [record(6), record(7)]
        writer.append(1)  # a rollover: the head moves to segment 2
        assert take(lines, 1) == [record(8)]
    finally:
        status = interrupt(proc)
    assert status == 0
    assert lines.empty()  # and no traceback


def test_tail_json_and_records_missed(writer: WriterProcess) -> None:
    writer.append(2)
    proc, lines = start_tail(writer.name, "--json", "--interval", "0.3")
    try:
        first = [json.loads(line) for line in take(lines, 2)]
        assert first == [
            {"position": 0, "ts": 0.0, "sym": "AB", "price": 100.0, "qty": 0},
            {"position": 1, "ts": 0.5, "sym": "AB", "price": 101.0, "qty": 1},
        ]
        total = writer.append(40)  # between two looks: far more than the window of 12
        printed, missed = [], 0
        while not printed or printed[-1] != total - 1:
            line = lines.get(timeout=TIMEOUT)
            if line.startswith("..."):  # the note goes to stderr with --json (merged here)
                missed += int(line.split()[1].replace(",", ""))
            else:
                printed.append(json.loads(line)["position"])
        assert missed > 0
        assert printed == sorted(printed) and missed + len(printed) == total - 2
    finally:
        assert interrupt(proc) == 0


def test_tail_prints_the_fields_asked_for_and_times_readably(log_name: Callable[[], str]) -> None:
    dt = np.dtype([("ts", "f8"), ("when", "M8[ms]"), ("sent", "f8"), ("count", "i4"), ("time", "f4")])
    writer, log = AtomicLog.new_claimed(retained=8, segment=4, dtype=dt, name=log_name())
    now = 1_796_189_116.4743407
    with log, writer:
        writer.append((now, np.datetime64("2026-11-30T12:34:56.789", "ms"), now - 1.25, 7, 1e30))
        shown = {
            (): f"#0 ts={local_time(now)} when=2026-11-30T12:34:56.789 sent={now - 1.25} count=7 time=1e+30",
            ("--fields", "count,ts"): f"#0 count=7 ts={local_time(now)}",
            ("--time-field", "sent", "--fields", "ts,sent"): f"#0 ts={now} sent={local_time(now - 1.25)}",
            ("--time-field", "when", "--fields", "when"): "#0 when=2026-11-30T12:34:56.789",
        }
        for options, line in shown.items():
            proc, lines = start_tail(log.name, *options)
            try:
                assert take(lines, 1) == [line], options
            finally:
                assert interrupt(proc) == 0
        proc, lines = start_tail(log.name, "--json", "--fields", "ts,when")
        try:  # the raw numbers: what a program reading JSON wants
            raw = {"position": 0, "ts": now, "when": "2026-11-30T12:34:56.789"}
            assert json.loads(take(lines, 1)[0]) == raw
        finally:
            assert interrupt(proc) == 0


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (["--fields", "ts,volume"], "log {name!r} has no field 'volume'; its fields: ts, sym, price, qty"),
        (["--time-field", "stamp"], "log {name!r} has no field 'stamp'; its fields: ts, sym, price, qty"),
        (["--time-field", "sym"], "field 'sym' is |S4, not seconds since the epoch"),
    ],
)
def test_tail_of_a_field_the_log_lacks_is_one_line_and_exit_2(
    writer: WriterProcess, options: list[str], says: str
) -> None:
    result = cli("tail", writer.name, *options)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == "atomic-log: " + says.format(name=writer.name) + "\n"


def test_tail_stops_when_the_log_is_removed(writer: WriterProcess) -> None:
    writer.append(1)
    proc, lines = start_tail(writer.name)
    try:
        assert take(lines, 1) == [record(0)]
        writer.stop()
        assert cli("rm", writer.name).returncode == 0
        assert proc.wait(timeout=TIMEOUT) == 0
        assert "was removed" in lines.get(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            interrupt(proc)


def test_ls_lists_the_log(writer: WriterProcess) -> None:
    writer.append(5)
    text = cli("ls")
    assert text.returncode == 0, text.stderr
    row = next(line for line in text.stdout.splitlines() if line.startswith(writer.name + " "))
    assert "ts,sym,price,qty (20 B)" in row and f"held by pid {writer.pid}" in row
    rows = json.loads(cli("ls", "--json").stdout)
    ours = next(r for r in rows if r["name"] == writer.name)
    assert ours["records"] == 5 and ours["writer"]["pid"] == writer.pid


def test_ls_wide_and_json_show_the_whole_dtype(log_name: Callable[[], str]) -> None:
    dt = np.dtype([("ts", "f8"), ("service", "S16"), ("cpu", "f4"), ("mem", "f4"), ("load_1m", "f4")])
    with AtomicLog.new(retained=8, segment=4, dtype=dt, name=log_name()) as log:
        def row(*options: str) -> str:
            return next(line for line in cli("ls", *options).stdout.splitlines() if line.startswith(log.name))

        assert "ts,service,cpu,mem,lo... (36 B)" in row()
        whole = "ts: float64, service: S16, cpu: float32, mem: float32, load_1m: float32 (36 B)"
        assert whole in row("--wide")
        ours = next(r for r in json.loads(cli("ls", "--json").stdout) if r["name"] == log.name)
        assert ours["dtype"] == str(dt)  # numpy's full description
        log.unlink()


def test_ls_and_rm_handle_segments_a_crashed_log_left_behind(writer: WriterProcess) -> None:
    writer.append(5)
    writer.stop()
    os.unlink(f"{SHM}/{writer.name}")  # the header gone, its segments left: an orphan
    rows = json.loads(cli("ls", "--json").stdout)
    orphan = next(r for r in rows if r["name"] == writer.name)
    assert orphan["orphaned"] and orphan["regions"] == len(regions_of(writer.name)) >= 2
    result = cli("rm", writer.name)
    assert result.returncode == 0, result.stderr
    assert regions_of(writer.name) == []


def test_rm_removes_the_log_and_leaves_nothing(writer: WriterProcess) -> None:
    writer.append(9)
    writer.stop()
    assert regions_of(writer.name)
    result = cli("rm", writer.name)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"removed {writer.name} (")
    assert regions_of(writer.name) == []
    assert writer.name not in cli("ls").stdout


@pytest.mark.parametrize("command", [["inspect"], ["inspect", "--json"], ["tail"], ["rm"]])
def test_a_missing_log_is_one_line_on_stderr_and_exit_1(command: list[str]) -> None:
    result = cli(command[0], "no-such-log-here", *command[1:])
    assert result.returncode == 1
    assert result.stderr.startswith("atomic-log: no log named 'no-such-log-here'")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    "args",
    [
        ["frobnicate"],
        ["inspect"],
        ["tail", "x", "-n", "-1"],
        ["demo", "--readers", "0"],
        ["ls", "extra"],
        ["rm"],
        ["rm", "--redis", "redis://127.0.0.1:1/0"],
        ["rm", "--redis", "redis://127.0.0.1:1/0", "--stale", "x"],
        ["tail", "x", "--fields"],
    ],
)
def test_bad_usage_exits_2(args: list[str]) -> None:
    result = cli(*args)
    assert result.returncode == 2
    assert "usage: atomic-log" in result.stderr and "Traceback" not in result.stderr


def test_version_and_help() -> None:
    assert cli("--version").stdout.startswith("atomic-log 0.")
    assert "inspect" in cli("--help").stdout
    alone = cli()  # what a newcomer types first
    assert alone.returncode == 0 and alone.stderr == ""
    assert alone.stdout == cli("--help").stdout and "follow until Ctrl-C" in alone.stdout


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str], list[str]]:
    status = _cli.main(list(args))
    out, err = capsys.readouterr()
    return status, out.splitlines(), err.splitlines()


def test_rm_takes_shell_patterns_and_says_what_it_removed(
    log_name: Callable[[], str], capsys: pytest.CaptureFixture[str]
) -> None:
    base = log_name()
    for suffix in ("x1", "x2", "y"):
        AtomicLog.new(retained=4, segment=2, dtype=np.int64, name=f"{base}-{suffix}").close()
    status, out, err = run_main(capsys, "rm", f"{base}-x*")
    assert status == 0 and err == []
    assert [line.split(" (")[0] for line in out] == [f"removed {base}-x1", f"removed {base}-x2"]
    assert regions_of(f"{base}-x1") == regions_of(f"{base}-x2") == [] and regions_of(f"{base}-y")
    status, out, err = run_main(capsys, "rm", f"{base}-z?", f"{base}-[y]")
    assert status == 1 and err == [f"atomic-log: no log matches '{base}-z?' ('atomic-log ls' lists them)"]
    assert [line.split(" (")[0] for line in out] == [f"removed {base}-y"]


def test_rm_stale_removes_only_logs_no_writer_holds(
    log_name: Callable[[], str], capsys: pytest.CaptureFixture[str]
) -> None:
    base = log_name()
    live_writer, live = AtomicLog.new_claimed(retained=4, segment=2, dtype=np.int64, name=f"{base}-live")
    closed_writer, closed = AtomicLog.new_claimed(retained=4, segment=2, dtype=np.int64, name=f"{base}-gone")
    orphan_writer, orphan = AtomicLog.new_claimed(retained=4, segment=2, dtype=np.int64, name=f"{base}-orph")
    with live, live_writer, closed, orphan:
        for writer in (closed_writer, orphan_writer):
            writer.extend(range(5))
            writer.close()
        os.unlink(f"{SHM}/{base}-orph")  # the header gone, its segments left
        status, out, err = run_main(capsys, "rm", "--stale", f"{base}-*")
        assert status == 0 and err == []
        assert [line.split(" (")[0] for line in out] == [f"removed {base}-gone", f"removed {base}-orph"]
        assert regions_of(f"{base}-gone") == regions_of(f"{base}-orph") == []
        assert regions_of(f"{base}-live")  # its writer is alive
        assert run_main(capsys, "rm", "--stale", f"{base}-*") == (0, ["no stale logs to remove"], [])
        live_writer.append(1)
    live.unlink()


def test_bench_without_the_benchmark_module_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "atomic_log_shm.bench", None)  # as if not installed
    assert _cli.main(["bench"]) == 1
    assert "atomic-log: the benchmark (atomic_log_shm.bench) is not part" in capsys.readouterr().err


def test_bench_passes_its_arguments_on(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    class FakeBench:
        @staticmethod
        def main(argv: list[str], prog: str) -> int:
            assert prog == "atomic-log bench"
            calls.append(argv)
            return 0

    monkeypatch.setitem(sys.modules, "atomic_log_shm.bench", FakeBench)
    assert _cli.main(["bench"]) == 0
    assert _cli.main(["bench", "--repeats", "2", "--help"]) == 0
    assert calls == [["--quick"], ["--repeats", "2", "--help"]]


def test_the_library_does_not_import_the_command_line_or_rich() -> None:
    code = "import sys, atomic_log_shm; assert not {'rich', 'atomic_log_shm._cli'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=TIMEOUT)


def test_demo_runs_and_leaves_nothing_behind() -> None:
    # The autouse fixture fails this test if the demo's log (named after its pid) is left in /dev/shm.
    result = cli("demo", "--duration", "1", "--readers", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "r0: lag" in result.stdout and "r1: lag" in result.stdout
    assert result.stdout.endswith("done: every process stopped, shared memory removed\n")


def test_demo_live_view_in_a_terminal() -> None:
    pytest.importorskip("rich")
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [*CLI, "demo", "--duration", "1", "--readers", "2"],
        stdout=secondary,
        stderr=secondary,
        stdin=secondary,
    )
    os.close(secondary)
    screen = b""
    deadline = time.monotonic() + TIMEOUT
    try:
        while time.monotonic() < deadline:
            if not select.select([primary], [], [], 1)[0]:
                continue
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the terminal closed with the process
                break
            if not chunk:
                break
            screen += chunk
        assert proc.wait(timeout=TIMEOUT) == 0, screen.decode(errors="replace")
    finally:
        os.close(primary)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = screen.decode(errors="replace")
    assert "looks" in text and "on publish" in text and "missed" in text  # the table
    assert "done: every process stopped, shared memory removed" in text
