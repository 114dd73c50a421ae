"""The dashboard's HTTP server: the page, the list of logs, and one event stream per plot.

    GET /                  the page (static/index.html) and its files, /static/...
    GET /api/logs          the logs shown: JSON {"names": [...] or null, "logs": [...]}
    GET /api/stream?log=NAME&seconds=S&columns=W
                           Server-Sent Events, one stream per plot the page shows:
                           "frame"  the plot of the last S seconds, W pixel columns wide
                                    (``_window.frame``), with the state below;
                           "state"  the log's state alone: "live" (and the writer, the
                                    rate), "missing" (no such log yet), "gone" (removed or
                                    replaced while shown), "unreadable" (and why).

Each stream is a thread with its own handle and snapshot on the log. It sleeps in
``Snapshot.wait()`` (a futex: no CPU while the log is quiet), then sends a frame at most
every ``UPDATE_EVERY`` seconds, and only when the log grew; the writer's state (``info()``,
which lists /dev/shm) is read once every ``INFO_EVERY`` seconds. A frame that took much
CPU spaces the next ones out (``BUSY_SHARE``), so a page on a huge window costs at most a
fifth of a core. A log that is removed, replaced or was never there is a state
the page shows, and the stream attaches again when a log of that name appears.
"""

from __future__ import annotations

import http.server
import ipaddress
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from contextlib import closing, suppress
from importlib import resources
from typing import Any

from .._errors import AtomicLogError, InvalidArgumentError, InvalidNameError, LogNotFoundError
from .._info import LogInfo, list_logs
from .._log import AtomicLog
from ._window import Arrivals, Plan, frame

UPDATE_EVERY = 0.25  # seconds between two frames of one stream, at least: 4 a second
INFO_EVERY = 1.0  # seconds between two looks at the writer's state
WAIT_SLICE = 0.5  # the longest a stream sleeps before it looks at stop() and the writer again
RETRY_EVERY = 1.0  # seconds between two attempts to attach a log that is not there
BUSY_SHARE = 0.2  # a stream spends at most this share of a core (CPU time) on its frames
SOCKET_TIMEOUT = 30.0  # a browser that neither sends nor reads for this long is dropped
SECONDS_RANGE = (0.1, 7 * 86400.0)  # the window a page may ask for
COLUMNS_RANGE = (16, 8192)  # pixel columns a page may ask for
DEFAULT_PORT = 8765
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}

LATENCY = UPDATE_EVERY / 2
"""The stream's freshness budget (``Snapshot.wait``): its wake-ups batched within it, and the
writer does nothing for it."""

# Every file the page loads, under static/ (package data): its URL is /static/<path>.
STATIC_FILES = (
    "index.html",
    "dashboard.js",
    "dashboard.css",
    "uplot/uPlot.iife.min.js",  # uPlot 1.6.32 (MIT, uplot/LICENSE), from the npm registry
    "uplot/uPlot.min.css",
    "uplot/LICENSE",
)
_TYPES = {"html": "text/html", "js": "text/javascript", "css": "text/css"}
# The page loads nothing from elsewhere: no CDN, no fonts, no images but data: URLs.
_POLICY = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'"


_Send = Callable[[str, dict[str, Any]], None]  # sends one event (its kind, its data) to the page


class _StreamClosed(Exception):
    """The browser went away (or the dashboard stops): end this stream."""


def _static_files() -> dict[str, tuple[bytes, str]]:
    """The files of ``STATIC_FILES`` by URL path (and the page at /): bytes, content type."""
    static = resources.files("atomic_log_shm.dashboard").joinpath("static")
    files = {}
    for path in STATIC_FILES:
        kind = _TYPES.get(path.rpartition(".")[2], "text/plain")
        files[f"/static/{path}"] = (static.joinpath(*path.split("/")).read_bytes(), f"{kind}; charset=utf-8")
    files["/"] = files["/static/index.html"]
    return files


class Dashboard:
    """A live dashboard of this host's logs (or of ``names`` only), served over HTTP.

    Binds ``host``:``port`` at once (port 0: any free port; ``url`` says which); ``run()``
    serves until ``stop()``. Reads logs through the public API only: attach, snapshot,
    refresh, since, wait, info, list_logs. It stores nothing to a log's shared memory
    (waiting sets the wait region's flag, as every waiting reader does) and never holds
    up a writer. Raises InvalidNameError for a name no log can have, OSError if the
    address cannot be bound, InvalidArgumentError for a port outside 0..65535.
    """

    def __init__(
        self, names: Sequence[str] | None = None, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT
    ) -> None:
        self.names = list(dict.fromkeys(names)) if names else None
        for name in self.names or []:
            try:
                AtomicLog.attach(name).close()
            except InvalidNameError:
                raise
            except AtomicLogError:
                pass  # missing or unreadable now, perhaps not later: the page says which
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise InvalidArgumentError(f"a port is 0..65535 (0: any free port), not {port!r}")
        self._stopping = threading.Event()
        self._files = _static_files()
        try:
            self._server = _Server((host, port), _Handler, self)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None

    @property
    def url(self) -> str:
        """Where the page is: ``http://HOST:PORT/``."""
        host, port = self._server.server_address[:2]
        assert isinstance(host, str)  # an IP address, for AF_INET and AF_INET6
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"

    def run(self) -> None:
        """Serve until ``stop()``; then end every stream and close the socket."""
        self._server.timeout = WAIT_SLICE
        try:
            while not self._stopping.is_set():
                self._server.handle_request()  # one request, or WAIT_SLICE without one
        finally:
            self.close()

    def stop(self) -> None:
        """Make ``run()`` return soon (within about a second). Safe from a signal handler."""
        self._stopping.set()

    def close(self) -> None:
        """Stop serving: end every stream (waiting for their threads) and close the socket."""
        self._stopping.set()
        self._server.server_close()

    def __enter__(self) -> Dashboard:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # What the handlers serve ------------------------------------------------------------

    def file(self, path: str) -> tuple[bytes, str] | None:
        return self._files.get(path)

    def logs(self) -> dict[str, Any]:
        """The logs the page lists: every log this process may read, or ``names``, each
        with its state ("live", "missing" or "unreadable")."""
        if self.names is None:
            return {"names": None, "logs": [_described(info) for info in list_logs()]}
        rows = []
        for name in self.names:
            try:
                with closing(AtomicLog.attach(name)) as log:
                    rows.append(_described(log.info()))
            except LogNotFoundError as exc:
                rows.append({"name": name, "state": "missing", "message": str(exc)})
            except (AtomicLogError, OSError) as exc:
                rows.append({"name": name, "state": "unreadable", "message": str(exc)})
        return {"names": self.names, "logs": rows}

    def shows(self, name: str) -> bool:
        return self.names is None or name in self.names

    def stream(self, name: str, seconds: float, columns: int, send: _Send) -> None:
        """Send the states and frames of log ``name`` until the dashboard stops or
        ``send`` raises _StreamClosed. Never raises an AtomicLogError: a log that cannot
        be shown is a state."""
        shown = False  # a log of that name was shown: its absence is "gone", not "missing"
        while not self._stopping.is_set():
            try:
                with closing(AtomicLog.attach(name)) as log:
                    shown = True
                    self._follow(log, seconds, columns, send)
            except LogNotFoundError as exc:  # never there, or removed or replaced while shown
                send("state", {"log": name, "state": "gone" if shown else "missing", "message": str(exc)})
            except (AtomicLogError, OSError) as exc:  # damaged, not a log, not ours to read
                send("state", {"log": name, "state": "unreadable", "message": str(exc)})
            self._stopping.wait(RETRY_EVERY)

    def _follow(self, log: AtomicLog, seconds: float, columns: int, send: _Send) -> None:
        """Frames of ``log`` as it grows, until the dashboard stops."""
        snap = log.snapshot()
        plan = Plan.of(log.dtype)
        arrivals = Arrivals()
        info: LogInfo | None = None
        info_due = 0.0
        drawn = -1  # the end of the snapshot the last frame showed
        while not self._stopping.is_set():
            began, cpu = time.monotonic(), time.thread_time()
            snap.refresh()
            arrivals.note(began, snap.end)
            arrivals.forget(began, seconds)
            news = began >= info_due
            if news:
                info, info_due = log.info(), began + INFO_EVERY
            assert info is not None
            state = {
                "log": log.name,
                "state": "live",
                "dtype": str(log.dtype),
                "writer": {"active": info.writer_active, "status": info.writer_status},
                "rate": arrivals.rate(began),
                "records": len(snap),
                "start": snap.start,
                "end": snap.end,
            }
            if snap.end != drawn:
                send("frame", {**state, **frame(snap, plan, seconds, columns, arrivals)})
                drawn = snap.end
            elif news:
                send("state", state)
            spent = time.thread_time() - cpu  # this stream's CPU for this frame
            snap.wait(WAIT_SLICE, latency=LATENCY)  # news, or the time to look at the writer again
            pause = max(UPDATE_EVERY, spent / BUSY_SHARE) - (time.monotonic() - began)
            if pause > 0:
                self._stopping.wait(pause)


def _described(info: LogInfo) -> dict[str, Any]:
    plan = Plan.of(info.dtype)
    return {
        "name": info.name,
        "state": "live",
        "dtype": str(info.dtype),
        "records": info.records,
        "writer": {"active": info.writer_active, "status": info.writer_status},
        **plan.describe(),
    }


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class _Server(http.server.ThreadingHTTPServer):
    # Stream threads end within WAIT_SLICE of stop(), so close() waits for them.
    daemon_threads = False
    block_on_close = True

    def __init__(self, address: tuple[str, int], handler: type[_Handler], dashboard: Dashboard) -> None:
        host = address[0]
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)
        self.dashboard = dashboard
        # Bound to loopback, answer only requests addressed to a loopback name: a web page
        # elsewhere that points a name of its own at 127.0.0.1 (DNS rebinding) gets nothing.
        self.allowed_hosts = LOOPBACK_NAMES | {host} if _loopback(host) else None


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    timeout = SOCKET_TIMEOUT
    server_version = "atomic-log-dashboard"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # no line per request on stderr: the page polls

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        allowed = self.server.allowed_hosts
        host = urllib.parse.urlsplit("//" + self.headers.get("Host", "")).hostname
        if allowed is not None and host not in allowed:
            self._send(403, b"requests to this dashboard must name a loopback host\n", "text/plain")
            return
        dashboard = self.server.dashboard
        if url.path == "/api/logs":
            self._send(200, json.dumps(dashboard.logs()).encode(), "application/json")
        elif url.path == "/api/stream":
            self._stream(urllib.parse.parse_qs(url.query))
        elif (found := dashboard.file(url.path)) is not None:
            self._send(200, *found)
        else:
            self._send(404, b"not found\n", "text/plain")

    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Content-Security-Policy", _POLICY)
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, query: dict[str, list[str]]) -> None:
        try:
            name = query["log"][-1]
            seconds = _within(float(query.get("seconds", ["60"])[-1]), SECONDS_RANGE)
            columns = int(_within(int(query.get("columns", ["800"])[-1]), COLUMNS_RANGE))
        except (KeyError, ValueError) as exc:
            self._send(400, f"bad stream request: {exc}\n".encode(), "text/plain")
            return
        if not self.server.dashboard.shows(name):
            self._send(404, f"this dashboard does not show log {name!r}\n".encode(), "text/plain")
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()

        def send(kind: str, payload: dict[str, Any]) -> None:
            data = json.dumps(payload, separators=(",", ":"))
            try:
                self.wfile.write(f"event: {kind}\ndata: {data}\n\n".encode())
                self.wfile.flush()
            except OSError:  # the page was closed or reloaded: a broken pipe, a reset, a timeout
                raise _StreamClosed from None

        with suppress(_StreamClosed):
            self.server.dashboard.stream(name, seconds, columns, send)


def _within(value: float, bounds: tuple[float, float]) -> float:
    low, high = bounds
    if not low <= value <= high:  # also refuses NaN
        raise ValueError(f"{value} is not within {low:g}..{high:g}")
    return value
