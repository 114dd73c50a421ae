// The dashboard page: lists the logs (GET /api/logs, every LIST_EVERY_MS), and plots the
// chosen one from its event stream (GET /api/stream): one uPlot chart per numeric field,
// redrawn with each "frame" event. The server sends at most two points per pixel column
// (see atomic_log_shm/dashboard/_window.py), so the page asks for the charts' width in
// device pixels and reopens the stream when it changes. Log names come from the host:
// they are put in the page as text only, never as HTML.
"use strict";

(() => {
  const LIST_EVERY_MS = 2000;
  const CHART_HEIGHT = 190;
  const CHART_MIN_WIDTH = 400; // as #charts' grid-template-columns in dashboard.css
  const GRID_GAP = 12; // px, as #charts' gap (0.8em of 14px, rounded down)
  const RESIZE_SETTLE_MS = 300;
  const X_TICK_SPACE = 90; // px at least between two x ticks: room for "12:34:56"
  const COLORS = ["#1f6feb", "#cf222e", "#1a7f37", "#8250df", "#bc4c00", "#0a7ea4", "#9a6700", "#bf3989"];
  const number = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
  const $ = (id) => document.getElementById(id);

  const view = { log: null, seconds: 60, source: null, charts: [], key: null, columns: 0, listed: [] };
  // What the page last drew, for whoever looks from outside (the tests, a console).
  const board = (window.atomicLogDashboard = { frames: 0, states: 0, last: null, state: null });

  function fromHash() {
    const params = new URLSearchParams(location.hash.slice(1));
    const seconds = parseFloat(params.get("seconds"));
    if (seconds > 0) view.seconds = seconds;
    return params.get("log");
  }

  function toHash() {
    const params = new URLSearchParams({ log: view.log, seconds: String(view.seconds) });
    history.replaceState(null, "", "#" + params.toString());
  }

  // The list of logs -------------------------------------------------------------------

  function describe(row) {
    if (row.state !== "live") return row.message;
    const writer = row.writer.active ? row.writer.status : "no writer: " + row.writer.status;
    return `${number.format(row.records)} records · ${writer}`;
  }

  function drawList(listing) {
    const list = $("logs");
    list.replaceChildren(
      ...listing.logs.map((row) => {
        const item = document.createElement("li");
        const name = document.createElement("span");
        const meta = document.createElement("span");
        name.className = "name";
        meta.className = "meta";
        name.textContent = row.name;
        meta.textContent = describe(row);
        item.append(name, meta);
        item.classList.toggle("chosen", row.name === view.log);
        item.addEventListener("click", () => choose(row.name));
        return item;
      }),
    );
    const named = listing.names !== null;
    $("logs-note").textContent = named
      ? "the logs named on the command line"
      : listing.logs.length
        ? ""
        : "no logs on this host yet";
  }

  async function refreshList() {
    try {
      const response = await fetch("/api/logs");
      const listing = await response.json();
      view.listed = listing.logs.map((row) => row.name);
      drawList(listing);
      if (view.log === null && listing.logs.length) choose(listing.logs[0].name);
    } catch (error) {
      $("logs-note").textContent = "the dashboard server does not answer";
    }
  }

  // The charts -------------------------------------------------------------------------

  function chartWidth() {
    const width = $("charts").clientWidth;
    const across = Math.max(1, Math.floor((width + GRID_GAP) / (CHART_MIN_WIDTH + GRID_GAP)));
    return Math.max(100, Math.floor((width - (across - 1) * GRID_GAP) / across) - 8);
  }

  const pad = (n, width = 2) => String(n).padStart(width, "0");

  // Local time of ``seconds`` since the epoch, to the precision a span of ``span`` s needs.
  function clock(seconds, span) {
    const d = new Date(seconds * 1000);
    const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
    if (span > 86400) return `${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time.slice(0, 5)}`;
    return span < 10 ? `${time}.${pad(d.getMilliseconds(), 3)}` : time;
  }

  function unpack(packed) {
    const bytes = Uint8Array.from(atob(packed), (c) => c.charCodeAt(0));
    return new Float64Array(bytes.buffer);
  }

  function buildCharts(frame) {
    for (const chart of view.charts) chart.destroy();
    view.charts = [];
    const holder = $("charts");
    holder.replaceChildren();
    const time = frame.axis_kind === "time";
    frame.series.forEach((name, i) => {
      const box = document.createElement("div");
      const title = document.createElement("h3");
      box.className = "chart";
      title.textContent = name;
      box.append(title);
      holder.append(box);
      const options = {
        width: chartWidth(),
        height: CHART_HEIGHT,
        scales: { x: { time } },
        series: [
          time
            ? { label: frame.axis, value: (u, v) => (v === null ? "--" : clock(v, 0)) }
            : { label: "position" },
          { label: name, stroke: COLORS[i % COLORS.length], width: 1, points: { show: false } },
        ],
        axes: [
          time
            ? { space: X_TICK_SPACE, values: (u, splits) => splits.map((v) => clock(v, u.scales.x.max - u.scales.x.min)) }
            : { space: X_TICK_SPACE },
          { size: 64 },
        ],
        cursor: { sync: { key: "atomic-log" } },
        legend: { show: true },
      };
      view.charts.push(new uPlot(options, [[], []], box));
    });
    if (!frame.series.length) {
      const empty = document.createElement("p");
      empty.className = "note";
      empty.textContent = "This log has no numeric fields to plot.";
      holder.append(empty);
    }
  }

  function axisNote(frame) {
    if (frame.axis_kind === "time") {
      return `x: the field ${frame.axis} (as seconds since the epoch); the window is the last ` +
        `${frame.seconds} s up to the newest record.`;
    }
    return "x: the record's position (this log has no float field named ts or time, nor a " +
      "datetime64 field); the window is what was published in the last " +
      `${frame.seconds} s as this page saw it, all retained records until it has watched that long.`;
  }

  function windowText(frame) {
    const records = number.format(frame.window_records);
    const cut = frame.cut_to ? ` (the newest ${number.format(frame.cut_to)} drawn)` : "";
    const drawn = frame.downsampled
      ? `, drawn as the min and max of each of ${number.format(frame.points / 2)} pixel columns`
      : "";
    return `window: ${records} records${cut}${drawn}`;
  }

  // The stream of the chosen log --------------------------------------------------------

  function showState(message) {
    const badge = $("state");
    let word = message.state;
    if (message.state === "live") word = message.writer.active ? "live" : "idle";
    badge.className = "badge " + word;
    badge.textContent = {
      live: "writing",
      idle: "no writer",
      missing: "no such log",
      gone: "removed",
      unreadable: "unreadable",
    }[word];
    if (message.state === "live") {
      $("writer").textContent = "writer: " + message.writer.status;
      $("rate").textContent =
        message.rate === null ? "" : `${number.format(message.rate)} records/s`;
    } else {
      $("writer").textContent = message.message;
      $("rate").textContent = "";
      $("window").textContent = "";
    }
    board.states += 1;
    board.state = message;
  }

  function onFrame(event) {
    const frame = JSON.parse(event.data);
    showState(frame);
    const key = `${frame.log}|${frame.axis_kind}|${frame.series.join(",")}`;
    if (key !== view.key) {
      buildCharts(frame);
      view.key = key;
    }
    const x = Array.from(unpack(frame.x));
    const ys = frame.y.map((packed) => Array.from(unpack(packed), (v) => (Number.isNaN(v) ? null : v)));
    view.charts.forEach((chart, i) => chart.setData([x, ys[i]]));
    $("window").textContent = windowText(frame);
    $("axis-note").textContent = axisNote(frame);
    board.frames += 1;
    board.last = {
      log: frame.log,
      end: frame.end,
      points: x.length,
      x: x.length ? x[x.length - 1] : null,
      y: Object.fromEntries(frame.series.map((name, i) => [name, ys[i].length ? ys[i][ys[i].length - 1] : null])),
    };
  }

  function openStream() {
    if (view.source) view.source.close();
    view.columns = Math.round(chartWidth() * (window.devicePixelRatio || 1));
    const params = new URLSearchParams({ log: view.log, seconds: String(view.seconds), columns: String(view.columns) });
    const source = new EventSource("/api/stream?" + params.toString());
    source.addEventListener("frame", onFrame);
    source.addEventListener("state", (event) => showState(JSON.parse(event.data)));
    source.addEventListener("error", () => {
      if (view.source !== source) return;
      const badge = $("state");
      badge.className = "badge offline";
      badge.textContent = "offline";
      $("writer").textContent = "lost the dashboard server; reconnecting";
    });
    view.source = source;
  }

  function choose(name) {
    if (name !== view.log) {
      view.log = name;
      view.key = null;
      for (const chart of view.charts) chart.destroy();
      view.charts = [];
      $("charts").replaceChildren();
      $("axis-note").textContent = "";
      $("window").textContent = "";
    }
    $("title").textContent = name;
    for (const item of $("logs").children) {
      item.classList.toggle("chosen", item.querySelector(".name").textContent === name);
    }
    toHash();
    openStream();
  }

  // Wiring -----------------------------------------------------------------------------

  $("seconds").addEventListener("change", () => {
    const seconds = parseFloat($("seconds").value);
    if (!(seconds >= 0.1 && seconds <= 604800)) {
      $("seconds").value = String(view.seconds);
      return;
    }
    view.seconds = seconds;
    if (view.log !== null) choose(view.log);
  });

  let settle = null;
  window.addEventListener("resize", () => {
    clearTimeout(settle);
    settle = setTimeout(() => {
      const width = chartWidth();
      for (const chart of view.charts) chart.setSize({ width, height: CHART_HEIGHT });
      const columns = Math.round(width * (window.devicePixelRatio || 1));
      if (view.log !== null && Math.abs(columns - view.columns) > view.columns / 10) openStream();
    }, RESIZE_SETTLE_MS);
  });

  const wanted = fromHash();
  $("seconds").value = String(view.seconds);
  if (wanted) choose(wanted);
  refreshList();
  setInterval(refreshList, LIST_EVERY_MS);
})();
