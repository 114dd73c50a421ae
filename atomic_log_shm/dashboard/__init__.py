"""A live dashboard of this host's logs, in a browser: ``atomic-log dashboard [NAME ...]``.

    with Dashboard(["sensors"], port=8765) as board:   # or Dashboard() for every log
        print(board.url)                                # http://127.0.0.1:8765/
        board.run()                                     # until board.stop()

The page lists the logs (what ``atomic-log ls`` shows, or the NAMEs given) and plots the
numeric fields of the one chosen over the last N seconds, with the record rate and the
writer's state, updated live as records arrive. It loads nothing from the internet: its
one library, uPlot (MIT, a 50 KB canvas chart), is vendored under ``static/uplot/``.

Why the standard library's ``http.server`` (threads) and Server-Sent Events. The server
does three things: serve a few static files, answer a JSON list, and push frames to a
handful of local browsers. Every push comes from a reader that sleeps in the library's
blocking ``Snapshot.wait()``; a thread per open page is the natural home for that, costs
nothing while the log is quiet, and needs no event loop. Data flows one way, server to
page, which is what SSE is (the browser's ``EventSource`` reconnects by itself); the page
changes what it watches by opening a new stream, so no WebSocket is needed. An async
framework (aiohttp, starlette and uvicorn) or a plotting server (Bokeh, Panel) would bring
megabytes of dependencies, an extra to install, and an event loop to bridge to, for no gain
at this scale; with the standard library the command works wherever the library does.

What goes over the wire, and why: ``_window`` (each frame is the window brought down to
a min and a max per pixel column). The endpoints and the streams' pacing: ``_server``.
Bound to 127.0.0.1 unless told otherwise; it then answers only requests that name a
loopback host.
"""

from ._server import DEFAULT_PORT, Dashboard

__all__ = ["DEFAULT_PORT", "Dashboard"]
