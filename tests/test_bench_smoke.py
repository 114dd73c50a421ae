"""The benchmark suite runs end to end in its quick mode and reports every scenario.

No timing is asserted: this machine's numbers are the bench's business, not the tests'. The
autouse fixture in conftest.py checks that the run left none of its logs and regions in
/dev/shm (``alog-<pid>-...`` and ``alogbench-<pid>-...``, the pid of the bench process).
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import signal
import subprocess
import sys
from typing import Any

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCENARIOS = ("T", "B", "L", "W", "R", "S", "F", "C", "A", "D")


def run_bench(*args: str, out: pathlib.Path, timeout: float = 120) -> tuple[dict[str, Any], str]:
    """Run the benchmark with ``args`` in a process group of its own; its JSON and output."""
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "atomic_log_shm.bench", *args, "--json", str(out)],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: the readers go with it on a timeout
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"the bench {args} did not finish in {timeout:.0f} s:\n{output[-4000:]}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # stragglers, if any
    assert proc.returncode == 0, output[-4000:]
    return json.loads(out.read_text()), output


def test_bench_quick_reports_every_scenario(tmp_path: pathlib.Path) -> None:
    data, output = run_bench("--quick", out=tmp_path / "bench.json", timeout=180)
    scenarios = data["scenarios"]
    assert set(SCENARIOS) <= set(scenarios), sorted(scenarios)
    # Our measurement, and the floor's, is there for each scenario.
    assert {"ours/0", "ours/1", "ours/4", "floor/0", "floor/1", "floor/4"} <= set(scenarios["T"]["rates"])
    assert {"ours", "floor"} <= set(scenarios["B"]["rates"])
    assert {"ours", "floor"} <= set(scenarios["L"]["stats"])
    assert {"ours_copy", "ours_view", "ours_view_small", "floor_copy"} <= set(scenarios["W"])
    assert {"nothing_1k", "nothing_1M", "few_1k", "few_1M"} <= set(scenarios["R"])
    assert {"ours", "floor"} <= set(scenarios["S"])
    # F: both followers' tails and their p99 ratio; C: 0 and 4 followers; A: ours and the floor.
    tail = {"p50", "p99", "p999", "max", "over_1ms", "over_10ms"}
    assert all(tail <= set(scenarios["F"]["stats"][follower]) for follower in ("wait", "poll"))
    assert "wait_vs_poll_p99" in scenarios["F"]
    assert {"0", "4"} <= set(scenarios["C"]["rates"]) and "ratio" in scenarios["C"]
    assert {"ours", "floor"} <= set(scenarios["A"]["rates"]) and "ratio" in scenarios["A"]
    assert {"F", "C", "A", "D"} <= {row["scenario"][0] for row in data["rows"]}
    assert data["rows"] and data["machine"]["usable_cpus"] >= 1
    assert "scenario" in output and "target" in output  # the table was printed


def test_bench_many_followers_reports_every_part(tmp_path: pathlib.Path) -> None:
    """D, tiny: 2 followers for 0.5 s in each part; every figure it promises is there."""
    data, output = run_bench(
        "--quick", "--only", "D", "--followers", "2", "--fast-followers", "2", "--many-followers", "2",
        "--follow-seconds", "0.5", out=tmp_path / "bench.json",
    )  # fmt: skip
    d = data["scenarios"]["D"]
    assert set(d) >= {"latency_supported", "start_method", "paced", "fast", "many"}
    # paced: the baseline of no follower, then 2 followers at each latency; those the library
    # cannot run (no latency= in this version) are there, empty, and said so in the table.
    assert set(d["paced"]) == {"0/0", "2/0", "2/0.1"}
    figures = {"cores", "cpu_per_wake", "wakes_per_s", "p50", "p99", "max", "probe_p99", "seen_all", "missed"}
    ran = [key for key in ("2/0", "2/0.1") if d["paced"][key]]
    assert ran == (["2/0", "2/0.1"] if d["latency_supported"] else ["2/0"])
    for key in ran:
        st = d["paced"][key]
        assert figures <= set(st), sorted(st)
        assert st["runs"] and {"followers_cpu", "wall", "died", "memory"} <= set(st["runs"][0])
        assert st["observed"] == 2 * st["runs"][0]["records"] * len(st["runs"])  # each record, twice
    # fast: the writer alone and with followers, as a ratio of pairs.
    assert {"alone", "2/0", "2/0.1"} <= set(d["fast"])
    assert {"rate", "ratio", "alone", "pairs"} <= set(d["fast"]["2/0"])
    # many: memory per follower against the probe, the probe's overshoot, nothing lost.
    many = d["many"]
    assert many["followers"] == 2 and many["latency"] == (1.0 if d["latency_supported"] else 0.0)
    assert {"pss", "rss", "uss"} <= set(many["memory"]) and {"pss", "rss"} <= set(many["probe_memory"])
    assert {"p50", "p99", "max"} <= set(many["probe"])
    assert {"seen_all", "missed", "died", "attach", "detach"} <= set(many)
    assert data["dashboards"]["followers"] == [2]
    rows = [row["scenario"] for row in data["rows"]]
    assert all(name.startswith("D ") for name in rows), rows
    assert any("PSS per follower" in name for name in rows) and any("fast writer" in name for name in rows)
    if not d["latency_supported"]:
        assert "not supported by this version" in output
    assert "paced writer at 2,000 records/s" in output  # the readable table was printed
