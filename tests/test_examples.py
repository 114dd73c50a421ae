"""Every script in examples/ runs to completion, as a new user would run it, and cleans up
(the autouse fixture fails a test that leaves a log in /dev/shm: a script's logs bear its pid)."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
    "dashboard_dash.py": ["--duration", "2", "--port", "0"],
}
NEEDS = {"dashboard_dash.py": "dash"}  # an optional extra: the test skips without it


def run(script: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=TIMEOUT, cwd=cwd
    )


@pytest.mark.parametrize("script", sorted(EXAMPLES.glob("*.py")), ids=lambda p: p.name)
def test_example_runs(script: Path, tmp_path: Path) -> None:
    if script.name in NEEDS:
        pytest.importorskip(NEEDS[script.name])
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


def test_the_dash_dashboard_serves_the_last_seconds_of_a_log(
    log_name: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("dash")
    from werkzeug.serving import make_server

    spec = importlib.util.spec_from_file_location("dashboard_dash", EXAMPLES / "dashboard_dash.py")
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "dashboard_dash", example)  # Dash finds its app by module name
    spec.loader.exec_module(example)

    dtype = example.TELEMETRY
    writer, log = AtomicLog.new_claimed(retained=10_000, segment=1024, dtype=dtype, name=log_name())
    records = np.zeros(3000, dtype)
    records["ts"] = time.time() - 3 + np.arange(3000) / 1000  # the last 3 s
    records["load"] = 0.5
    records["load"][1234] = 9.0  # a spike the min..max band must keep
    with log, writer:
        writer.extend(records)
        server = make_server("127.0.0.1", 0, example.make_app(log).server, threaded=True)
        thread = threading.Thread(target=server.serve_forever)
        thread.start()
        try:
            url = f"http://127.0.0.1:{server.port}/"
            with urllib.request.urlopen(url, timeout=TIMEOUT) as page:
                assert b"_dash-config" in page.read()  # the page; its scripts come from the server, not a CDN
            response = update(url, seconds=60)
            assert f"held by pid {os.getpid()}" in response["status"]["children"]
            assert "3,000 in the last 60 s" in response["status"]["children"]
            traces = response["charts"]["figure"]["data"]  # a band and a line per field
            assert len(traces) == 2 * 3
            band = values(traces[0]["y"])
            assert band.max() == 9.0 and band.min() == 0.5
            later = records[-1:].copy()
            later["ts"] += 0.001
            writer.extend(later)
            assert "3,001 in the last 60 s" in update(url, seconds=60)["status"]["children"]
            ts = np.append(records["ts"], later["ts"])
            newest = int((ts >= ts[-1] - 1).sum())  # the last second up to the newest record
            assert f"{newest:,} in the last 1 s" in update(url, seconds=1)["status"]["children"]
        finally:
            server.shutdown()
            thread.join(TIMEOUT)


def update(url: str, seconds: int) -> dict[str, Any]:
    """What the page's callback returns for a tick with a window of ``seconds``, asked as the
    browser asks (POST /_dash-update-component), from what /_dash-dependencies says."""
    with urllib.request.urlopen(url + "_dash-dependencies", timeout=TIMEOUT) as r:
        (callback,) = json.load(r)
    given = {"tick": 1, "window": seconds}
    body = {
        "output": callback["output"],
        "outputs": [
            dict(zip(("id", "property"), out.split("."), strict=True))
            for out in callback["output"].strip(".").split("...")
        ],
        "inputs": [{**i, "value": given[i["id"]]} for i in callback["inputs"]],
        "changedPropIds": ["tick.n_intervals"],
        "state": [],
    }
    request = urllib.request.Request(
        url + "_dash-update-component", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT) as r:
        return dict(json.load(r)["response"])


def values(y: Any) -> np.ndarray:
    """A trace's values: a list, or numpy's bytes in base64 (Plotly 6 and later)."""
    if isinstance(y, dict):
        return np.frombuffer(base64.b64decode(y["bdata"]), y["dtype"])
    return np.asarray(y, dtype=float)
