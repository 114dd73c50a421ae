"""A live dashboard of a log in the browser, written with Dash (Plotly's web framework).

    pip install 'atomic-log-shm[dash]'
    python examples/dashboard_dash.py                     # a writer of its own; open the URL printed
    python examples/dashboard_dash.py --attach NAME       # a log with a float field "ts"
    python examples/dashboard_dash.py --duration 5        # stop by itself after 5 s

Without ``--attach`` it starts a writer process of its own (telemetry: load, temperature
and latency, 5,000 records a second, timestamped in ``ts``) and shows that. Every second
the page asks for the last N seconds: a fresh snapshot, ``since("ts", newest - N)`` for
the window (zero-copy chunks found by binary search), pandas to bring it down to a few
hundred time buckets, and a Plotly chart per field: each bucket's mean as a line, its min
and max as a band, so that spikes stay visible. The library's own ``atomic-log dashboard``
does the same without Dash; this is what a dashboard of your own looks like.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import signal
import sys
import threading
import time
from typing import Any

import numpy as np

from atomic_log_shm import AtomicLog

try:
    import dash
    import pandas as pd
    import plotly.graph_objects as go
    from dash import dcc, html
    from plotly.subplots import make_subplots
    from werkzeug.serving import make_server
except ImportError:
    sys.exit("this example needs Dash and pandas: pip install 'atomic-log-shm[dash]'")

TELEMETRY = np.dtype([("ts", "f8"), ("load", "f4"), ("temp_c", "f4"), ("latency_ms", "f4")])
RATE = 5_000  # records a second, from the writer of its own
BUCKETS = 300  # time buckets a chart shows: a point per few pixels, whatever the window
WINDOWS = [10, 60, 300]  # seconds the page offers


def produce(log: AtomicLog, stop: Any) -> None:
    """The writer process: telemetry at RATE records a second, in batches of 100."""
    writer = log.try_claim_writer()
    assert writer is not None, "the dashboard's log already has a writer"
    rng = np.random.default_rng(5)
    with writer:
        while not stop.is_set():
            batch = np.empty(100, TELEMETRY)
            batch["ts"] = time.time() + np.arange(100) / RATE
            wave = np.sin(batch["ts"] / 10)
            batch["load"] = 0.5 + 0.3 * wave + rng.normal(0, 0.05, 100)
            batch["temp_c"] = 60 + 5 * wave + rng.normal(0, 0.3, 100)
            batch["latency_ms"] = 2 + rng.exponential(0.5, 100)
            writer.extend(batch)
            time.sleep(100 / RATE)


def last_seconds(log: AtomicLog, seconds: float) -> pd.DataFrame:
    """The records of the last ``seconds`` up to the newest, indexed by their time."""
    # A snapshot per call: Dash runs callbacks in threads, and a snapshot serves one thread.
    snap = log.snapshot()
    if not len(snap):
        return pd.DataFrame(index=pd.DatetimeIndex([], name="ts"))
    newest = snap[-1]["ts"]
    chunks = snap.since("ts", newest - seconds)
    frame = pd.DataFrame(np.concatenate([chunk.values for chunk in chunks]))
    frame.index = pd.to_datetime(frame.pop("ts"), unit="s")
    return frame.select_dtypes("number")


def figure(frame: pd.DataFrame, seconds: float) -> go.Figure:
    """A chart per field: each time bucket's mean as a line, its min..max as a band."""
    fields = list(frame.columns)
    fig = make_subplots(rows=max(len(fields), 1), cols=1, shared_xaxes=True, subplot_titles=fields)
    buckets = frame.resample(pd.Timedelta(seconds=seconds / BUCKETS))
    low, mean, high = buckets.min(), buckets.mean(), buckets.max()
    for row, field in enumerate(fields, start=1):
        full = mean[field].notna()  # buckets without records are left out
        t = mean.index[full]
        band_y = np.concatenate(
            [high[field][full], low[field][full][::-1]]
        )  # along the top, back along the bottom
        band = go.Scatter(x=t.append(t[::-1]), y=band_y, fill="toself", line=dict(width=0), hoverinfo="skip")
        fig.add_trace(band.update(fillcolor="rgba(31,111,235,0.25)"), row=row, col=1)
        fig.add_trace(
            go.Scatter(x=t, y=mean[field][full], name=field, line=dict(color="#1f6feb")), row=row, col=1
        )
    fig.update_layout(height=220 * max(len(fields), 1), margin=dict(l=50, r=20, t=40, b=30), showlegend=False)
    return fig


def make_app(log: AtomicLog) -> dash.Dash:
    app = dash.Dash(__name__, title=f"{log.name} - atomic-log")
    app.layout = html.Div(
        [
            html.H3(log.name),
            dcc.RadioItems(
                id="window",
                options=[{"label": f" last {s} s  ", "value": s} for s in WINDOWS],
                value=60,
                inline=True,
            ),
            html.Div(id="status"),
            dcc.Graph(id="charts"),
            dcc.Interval(id="tick", interval=1000),
        ],
        style={"fontFamily": "sans-serif", "margin": "1em"},
    )

    @app.callback(
        dash.Output("charts", "figure"),
        dash.Output("status", "children"),
        dash.Input("tick", "n_intervals"),
        dash.Input("window", "value"),
    )
    def refresh(_: int | None, seconds: int) -> tuple[go.Figure, str]:
        frame = last_seconds(log, seconds)
        info = log.info()
        status = (
            f"writer: {info.writer_status} · {info.records:,} records retained · "
            f"{len(frame):,} in the last {seconds} s"
        )
        return figure(frame, seconds), status

    return app


def serve(app: dash.Dash, port: int, duration: float) -> None:
    """Serve ``app`` on 127.0.0.1:``port`` until Ctrl-C, or for ``duration`` seconds if > 0."""
    # werkzeug's server, which app.run() starts too, made here so that it can be stopped.
    server = make_server("127.0.0.1", port, app.server, threaded=True)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a stop is a Ctrl-C: clean up
    print(f"dashboard of {app.title}: http://127.0.0.1:{server.port}/ (Ctrl-C stops)", flush=True)
    if duration:
        timer = threading.Timer(duration, server.shutdown)
        timer.daemon = True
        timer.start()
    server.serve_forever()  # returns on shutdown() or Ctrl-C


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--attach", metavar="NAME", help="show an existing log (with a float field ts)")
    parser.add_argument("--port", type=int, default=8050, help="the port (default 8050; 0: any free one)")
    parser.add_argument(
        "--duration", type=float, default=0, help="stop after this many seconds (default: Ctrl-C)"
    )
    args = parser.parse_args(argv)

    if args.attach:
        with AtomicLog.attach(args.attach) as log:
            serve(make_app(log), args.port, args.duration)
        return 0

    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    with AtomicLog.new(retained=2_000_000, segment=65_536, dtype=TELEMETRY) as log:
        writer = ctx.Process(target=produce, args=(log, stop))
        writer.start()
        try:
            serve(make_app(log), args.port, args.duration)
        finally:
            stop.set()
            writer.join(timeout=5)
            if writer.is_alive():
                writer.kill()
                writer.join()
    print("stopped; the writer is gone and the log removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
