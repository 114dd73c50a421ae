"""A headless Chromium for the tests, driven through the DevTools protocol (CDP).

    with chromium() as page:                       # skips the test if there is no chromium
        page.navigate("http://127.0.0.1:8765/")
        page.evaluate("document.title")            # a JSON value
        page.errors()                              # console errors and uncaught exceptions

Why our own client and not Playwright: the tests need five protocol calls (enable, navigate,
evaluate, screenshot, set the window size) and the console's errors, over one websocket.
That is the small client below, on the standard library; Playwright for Python would be a
~40 MB dependency with a Node driver of its own, for the same five calls. Debian's
``chromium`` package is the browser (Playwright's bundled download cannot be used here).

No process of the browser outlives the ``with``: it is started in a session of its own,
with HOME and the XDG folders in its own temporary folder, so that every process it starts
(renderers, the GPU process, and the crash handlers, which leave its session) names that
folder on its command line; on exit they are all terminated, then killed, and the exit
waits until none is left.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

BINARY = "/usr/bin/chromium"  # Debian's package: apt-get install -y chromium
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # Without these the browser calls home at start; this machine's network refuses it.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",  # any free port: the browser writes it to DevToolsActivePort
]
START_TIMEOUT = 60.0  # seconds for the browser to come up (generous: a busy machine)
CALL_TIMEOUT = 60.0  # seconds for one protocol call to be answered
EXIT_TIMEOUT = 10.0  # seconds the browser's processes get to end after SIGTERM


class _WebSocket:
    """A websocket client (RFC 6455), text messages only: what the protocol uses."""

    def __init__(self, url: str, timeout: float) -> None:
        rest = url.removeprefix("ws://")
        address, _, path = rest.partition("/")
        host, _, port = address.rpartition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET /{path} HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            more = self.sock.recv(4096)
            if not more:
                raise ConnectionError("the browser closed the websocket during the handshake")
            head += more
        status, _, self.buffer = head.partition(b"\r\n\r\n")
        if b" 101 " not in status.split(b"\r\n")[0]:
            raise ConnectionError(f"websocket handshake refused: {status.decode(errors='replace')}")

    def send(self, text: str) -> None:
        payload = text.encode()
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x81, 0x80 | n)
        elif n < 1 << 16:
            header = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
        mask = os.urandom(4)  # a client masks every frame it sends
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def _exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            more = self.sock.recv(1 << 16)
            if not more:
                raise ConnectionError("the browser closed the websocket")
            self.buffer += more
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def receive(self) -> str:
        """The next text message (frames joined); answers pings. Raises TimeoutError."""
        parts = []
        while True:
            first, second = self._exactly(2)
            opcode, n = first & 0x0F, second & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", self._exactly(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", self._exactly(8))
            payload = self._exactly(n)
            if opcode == 0x9:  # ping: answer with the same payload, masked
                mask = os.urandom(4)
                masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
                self.sock.sendall(struct.pack("!BB", 0x8A, 0x80 | n) + mask + masked)
                continue
            if opcode == 0x8:
                raise ConnectionError("the browser closed the websocket")
            parts.append(payload)
            if first & 0x80:  # the final frame of the message
                return b"".join(parts).decode()

    def close(self) -> None:
        with suppress(OSError):
            self.sock.close()


class Page:
    """One page of the browser, through its DevTools websocket."""

    def __init__(self, url: str) -> None:
        self._ws = _WebSocket(url, CALL_TIMEOUT)
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        for domain in ("Runtime", "Log", "Page"):
            self.call(f"{domain}.enable")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one command and return its result; events meanwhile go to ``events``."""
        self._next_id += 1
        ident = self._next_id
        self._ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.receive())
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))
            if "method" in message:
                self.events.append(message)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-like)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def navigate(self, url: str) -> None:
        """Load ``url`` and return once its load event fired (its scripts have run)."""
        seen = len(self.events)
        self.call("Page.navigate", url=url)
        while not any(e["method"] == "Page.loadEventFired" for e in self.events[seen:]):
            message = json.loads(self._ws.receive())
            if "method" in message:
                self.events.append(message)

    def resize(self, width: int, height: int) -> None:
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )

    def screenshot(self) -> bytes:
        return base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])

    def wait_for(self, expression: str, timeout: float, what: str) -> Any:
        """The value of ``expression`` once it is truthy; fails the test after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                pytest.fail(f"after {timeout} s, still not {what}: {expression} is {value!r}")
            time.sleep(0.1)

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and browser log errors seen so far."""
        self.call("Runtime.evaluate", expression="0")  # takes in the events sent until now
        found = []
        for event in self.events:
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                found.append(
                    f"exception: {details.get('exception', {}).get('description') or details['text']}"
                )
            elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                found.append(f"console.{params['type']}: {[a.get('value') for a in params['args']]}")
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(f"log: {params['entry']['text']} ({params['entry'].get('url', '')})")
        return found

    def close(self) -> None:
        self._ws.close()


def _processes_naming(folder: str) -> list[int]:
    """The pids of the processes whose command line names ``folder``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if folder.encode() in f.read():
                        found.append(int(entry))
            except OSError:
                continue  # gone meanwhile
    return found


def _end(browser: subprocess.Popen[bytes], folder: str) -> None:
    """Terminate, then kill, every process of the browser; return once none is left."""
    with suppress(ProcessLookupError):
        os.killpg(browser.pid, signal.SIGTERM)
    deadline = time.monotonic() + EXIT_TIMEOUT
    while _processes_naming(folder) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in _processes_naming(folder):
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with suppress(subprocess.TimeoutExpired):
        browser.wait(timeout=EXIT_TIMEOUT)
    deadline = time.monotonic() + EXIT_TIMEOUT
    while (left := _processes_naming(folder)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"browser processes {left} outlived the test"


@contextmanager
def chromium(width: int = 1280, height: int = 800) -> Iterator[Page]:
    """A page of a new headless browser, ``width`` x ``height`` CSS pixels; skips the test
    if Chromium is not installed."""
    if not os.access(BINARY, os.X_OK):
        pytest.skip(f"no Chromium at {BINARY} (Debian: apt-get install -y chromium)")
    folder = tempfile.mkdtemp(prefix="chromium-test-")
    env = {
        **os.environ,
        "HOME": folder,
        "XDG_CONFIG_HOME": f"{folder}/config",
        "XDG_CACHE_HOME": f"{folder}/cache",
    }
    command = [BINARY, *FLAGS, f"--user-data-dir={folder}/profile", f"--window-size={width},{height}"]
    browser = subprocess.Popen(
        [*command, "about:blank"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    page = None
    try:
        port = _devtools_port(Path(folder, "profile", "DevToolsActivePort"), browser)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=CALL_TIMEOUT) as r:
            targets = json.load(r)
        url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        page = Page(url)
        page.resize(width, height)
        yield page
    finally:
        if page is not None:
            page.close()
        _end(browser, folder)
        shutil.rmtree(folder, ignore_errors=True)


def _devtools_port(path: Path, browser: subprocess.Popen[bytes]) -> int:
    """The port the browser listens on for DevTools, once it says so."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if browser.poll() is not None:
            raise RuntimeError(f"chromium exited at start with status {browser.returncode}")
        with suppress(FileNotFoundError, ValueError, IndexError):  # not yet, or half written
            return int(path.read_text().split()[0])
        time.sleep(0.1)
    raise TimeoutError(f"chromium did not open its DevTools port within {START_TIMEOUT} s")
