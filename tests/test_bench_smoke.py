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

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCENARIOS = ("T", "B", "L", "W", "R", "S", "F", "C", "A")


def test_bench_quick_reports_every_scenario(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "bench.json"
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "atomic_log_shm.bench", "--quick", "--json", str(out)],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: the readers go with it on a timeout
    )
    try:
        output, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"the quick bench did not finish in 120 s:\n{output[-4000:]}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # stragglers, if any
    assert proc.returncode == 0, output[-4000:]

    data = json.loads(out.read_text())
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
    assert {"F", "C", "A"} <= {row["scenario"][0] for row in data["rows"]}
    assert data["rows"] and data["machine"]["usable_cpus"] >= 1
    assert "scenario" in output and "target" in output  # the table was printed
