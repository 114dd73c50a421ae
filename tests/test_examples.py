"""Every script in examples/ runs to completion, as a new user would run it, and cleans up
(the autouse fixture fails a test that leaves a log in /dev/shm: a script's logs bear its pid)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from atomic_log_shm import AtomicLog

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TIMEOUT = 120
# Shorter runs than the defaults, where a script has a length; any other script runs as is.
ARGS = {
    "demo.py": ["--duration", "1", "--readers", "2"],
    "ticker.py": ["--duration", "1"],
    "pool.py": ["--rounds", "2"],
    "dashboard.py": ["--frames", "2", "--every", "0.2"],
}


def run(script: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=TIMEOUT, cwd=cwd
    )


@pytest.mark.parametrize("script", sorted(EXAMPLES.glob("*.py")), ids=lambda p: p.name)
def test_example_runs(script: Path, tmp_path: Path) -> None:
    result = run(script, *ARGS.get(script.name, []), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout  # each says what it did


def test_dashboard_draws_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "window.png"
    result = run(EXAMPLES / "dashboard.py", *ARGS["dashboard.py"], "--png", str(png), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert png.read_bytes().startswith(b"\x89PNG")


def test_dashboard_attaches_to_an_existing_log(log_name: Callable[[], str], tmp_path: Path) -> None:
    dt = np.dtype([("ts", "f8"), ("load", "f4")])
    writer, log = AtomicLog.new_claimed(retained=100, segment=32, dtype=dt, name=log_name())
    with log, writer:
        writer.extend([(i, np.sin(i / 10)) for i in range(200)])
        args = ["--attach", log.name, "--field", "load", "--frames", "1", "--every", "0"]
        result = run(EXAMPLES / "dashboard.py", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    # ceil(100 / 32) + 1 = 5 segments retained: 2..5 full, and 8 records in segment 6.
    assert "frame 1: 136 records" in result.stdout
