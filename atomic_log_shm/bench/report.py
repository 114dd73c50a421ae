"""What a run reports: the table of results against their targets, the details below it,
the JSON form of the results, and PNG charts (with matplotlib, if installed).

Each row of the table is one comparison: ours, its baseline in the same run, the ratio,
the target the ratio is held to, and whether it was met.
"""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from .dashboards import FAST_TARGET, LATE_SLACK, RESPONSIVE, UNSUPPORTED, WAKE_SLACK
from .peers import optional
from .suite import Suite
from .workload import C_FOLLOWERS, F_SKIP, FEW_NEW, LABEL, S_SEGMENT


def rows(suite: Suite) -> list[dict[str, Any]]:
    """The table's rows: one comparison each, from the medians in ``suite.scenarios``."""
    rows: list[dict[str, Any]] = []
    sc = suite.scenarios

    def row(
        scenario: str, ours: str, baseline: str, ratio: float | None, target: str, met: bool | None
    ) -> None:
        rows.append(
            {
                "scenario": scenario,
                "ours": ours,
                "baseline": baseline,
                "ratio": ratio,
                "target": target,
                "met": met,
            }
        )

    t = sc.get("T", {}).get("rates", {})
    for n in (0, 1, 4):
        ours, floor = t.get(f"ours/{n}"), t.get(f"floor/{n}")
        if ours is None:
            continue
        target = "≥0.80x" if n else "-"
        ratio = ours / floor if floor else None
        met = None if not n or ratio is None else ratio >= 0.8
        row(f"T append, {n} readers (rec/s)", _rate(ours), f"floor {_rate(floor)}", ratio, target, met)
        for peer in suite.peers if n else ():
            other = t.get(f"{peer}/{n}")
            if other is not None:
                row(
                    f"T append, {n} readers (rec/s)",
                    _rate(ours),
                    f"{LABEL[peer]} {_rate(other)}",
                    ours / other,
                    ">1x",
                    ours > other,
                )
    if t.get("ours/4") and t.get("ours/0"):
        ratio = t["ours/4"] / t["ours/0"]
        floor_ratio = t["floor/4"] / t["floor/0"] if t.get("floor/4") and t.get("floor/0") else None
        base = f"floor 4v0: {floor_ratio:.2f}x" if floor_ratio else "-"
        row("T 4 readers vs 0 (ours)", f"{ratio:.2f}x", base, ratio, "≥0.90x", ratio >= 0.9)
    for n in (1, 4):  # what waiting readers cost the writer: a futex wake per publication
        waited, alone = t.get(f"ours_wait/{n}"), t.get("ours/0")
        if waited and alone:
            row(
                f"T append cost, {n} readers in wait()",
                f"{1e9 / waited:.0f} ns",
                f"no reader: {1e9 / alone:.0f} ns",
                alone / waited,
                "-",
                None,
            )
    b = sc.get("B", {}).get("rates", {})
    if "ours" in b:
        ratio = b["ours"] / b["floor"] if b.get("floor") else None
        row(
            "B extend x1000 (rec/s)",
            _rate(b["ours"]),
            f"floor {_rate(b.get('floor'))}",
            ratio,
            "≥0.80x",
            None if ratio is None else ratio >= 0.8,
        )
    lat = sc.get("L", {}).get("stats", {})
    if "ours" in lat:
        ours, floor = lat["ours"], lat.get("floor")
        ratio = ours["p50"] / floor["p50"] if floor else None
        row(
            "L p50 latency",
            _time(ours["p50"]),
            f"floor {_time(floor and floor['p50'])}",
            ratio,
            "≤2x",
            None if ratio is None else ratio <= 2,
        )
        iox = lat.get("iox2")
        if iox:
            ratio = ours["p99"] / iox["p99"]
            row(
                "L p99 latency",
                _time(ours["p99"]),
                f"iceoryx2 {_time(iox['p99'])}",
                ratio,
                "≤1x",
                ratio <= 1,
            )
        else:
            row("L p99 latency", _time(ours["p99"]), "iceoryx2: not run", None, "≤1x", None)
        waits = lat.get("ours_wait")
        if waits and floor:
            row(
                "L p50 latency, ours reader in wait()",
                _time(waits["p50"]),
                f"floor {_time(floor['p50'])}",
                waits["p50"] / floor["p50"],
                "-",
                None,
            )
        if floor:
            row(
                "L p99.9 latency",
                _time(ours["p999"]),
                f"floor {_time(floor['p999'])}",
                ours["p999"] / floor["p999"],
                "-",
                None,
            )
    w = sc.get("W", {})
    if "ours_copy" in w:
        ratio = w["ours_copy"] / w["floor_copy"]
        row(
            "W newest 100k, copy",
            _time(w["ours_copy"]),
            f"floor {_time(w['floor_copy'])}",
            ratio,
            "≤1.5x",
            ratio <= 1.5,
        )
        if "iox2" in w:
            row(
                "W newest 100k, copy",
                _time(w["ours_copy"]),
                f"iceoryx2 history {_time(w['iox2']['copy'])}",
                w["ours_copy"] / w["iox2"]["copy"],
                "-",
                None,
            )
        per_big = w["ours_view"] / w["ours_view_chunks"]
        per_small = w["ours_view_small"] / w["ours_view_small_chunks"]
        scales = per_big <= 3 * per_small
        row(
            f"W newest 100k, zero-copy ({w['ours_view_chunks']:.0f} chunks)",
            _time(w["ours_view"]),
            f"floor views {_time(w['floor_view'])}",
            w["ours_view"] / w["floor_view"],
            "O(segments)",
            scales,
        )
        row(
            f"W newest 1k, zero-copy ({w['ours_view_small_chunks']:.0f} chunk)",
            _time(w["ours_view_small"]),
            f"floor views {_time(w['floor_view_small'])}",
            w["ours_view_small"] / w["floor_view_small"],
            "O(segments)",
            scales,
        )
    r = sc.get("R", {})
    if "nothing_1k" in r:
        for label in ("1k", "1M"):
            v = r[f"nothing_{label}"]
            row(
                f"R refresh, nothing new, window {label}",
                _time(v),
                f"floor load {_time(r['floor_nothing'])}",
                v / r["floor_nothing"],
                "≤3 µs",
                v <= 3e-6,
            )
        ratio = r["nothing_1M"] / r["nothing_1k"]
        row("R nothing new: 1M vs 1k", f"{ratio:.2f}x", "window 1k", ratio, "same (≤1.5x)", ratio <= 1.5)
        for label in ("1k", "1M"):
            row(
                f"R refresh, {FEW_NEW} new, window {label}",
                _time(r[f"few_{label}"]),
                "-",
                None,
                "-",
                None,
            )
    s = sc.get("S", {})
    if "ours" in s:
        ours, floor = s["ours"], s.get("floor", {})
        ratio = ours["p999"] / ours["p50"]
        row("S append p50", _time(ours["p50"]), f"floor {_time(floor.get('p50'))}", None, "-", None)
        row("S append p99.9", _time(ours["p999"]), f"floor {_time(floor.get('p999'))}", None, "-", None)
        row("S append max", _time(ours["max"]), f"floor {_time(floor.get('max'))}", None, "-", None)
        if "rollover_p50" in ours:
            row(
                f"S rollover appends, p50 (max {_time(ours['rollover_max'])})",
                _time(ours["rollover_p50"]),
                "vs append p50",
                ours["rollover_p50"] / ours["p50"],
                "-",
                None,
            )
        row(
            f"S p99.9 / p50 ({ours['rollovers']:.0f} rollovers, segment {S_SEGMENT})",
            f"{ratio:.1f}x",
            f"floor {floor['p999'] / floor['p50']:.1f}x" if floor else "-",
            ratio,
            "≤10x",
            ratio <= 10,
        )
    f = sc.get("F", {}).get("stats", {})
    if "wait" in f:
        wait, poll = f["wait"], f.get("poll")
        row(
            "F p99, follower in cursor.wait()",
            _time(wait["p99"]),
            "-",
            None,
            "≤500 µs",
            wait["p99"] <= 500e-6,
        )
        if poll:
            ratio = wait["p99"] / poll["p99"]
            row(
                "F p99, waiting vs polling",
                _time(wait["p99"]),
                f"polling {_time(poll['p99'])}",
                ratio,
                "≤3x",
                ratio <= 3,
            )
        for name, st in (("waiting", wait), ("polling", poll)):
            if st:
                row(
                    f"F {name}: p50 / p99.9 / max",
                    f"{_time(st['p50'])} / {_time(st['p999'])} / {_time(st['max'])}",
                    f"of {st['observed']} records",
                    None,
                    "-",
                    None,
                )
        for limit, key, target in (("10 ms", "over_10ms", "0"), ("1 ms", "over_1ms", "-")):
            row(
                f"F records later than {limit}, waiting",
                f"{wait[key]} of {wait['observed']}",
                f"polling: {poll[key]} of {poll['observed']}" if poll else "-",
                None,
                target,
                wait[key] == 0 if target == "0" else None,
            )
    c = sc.get("C", {})
    if "ratio" in c:
        rates = c["rates"]
        row(
            f"C append, {C_FOLLOWERS} copying followers vs 0",
            _rate(rates[str(C_FOLLOWERS)]),
            f"0 followers {_rate(rates['0'])}",
            c["ratio"],
            "≥0.80x",
            c["ratio"] >= 0.8,
        )
    a = sc.get("A", {})
    if "ratio" in a:
        rates = a["rates"]
        row(
            "A append, no reader (rec/s)",
            _rate(rates["ours"]),
            f"floor {_rate(rates['floor'])}",
            a["ratio"],
            "≥0.90x",
            a["ratio"] >= 0.9,
        )
    if "ratio_struct" in a:
        row(
            "A append, no reader (rec/s)",
            _rate(a["rates"]["ours"]),
            f"struct.pack_into {_rate(a['rates']['floor_struct'])}",
            a["ratio_struct"],
            "≥0.90x",
            a["ratio_struct"] >= 0.9,
        )
    d = sc.get("D", {})
    if d:
        paced, fast, many = d["paced"], d["fast"], d["many"]
        for n in d["followers"]:
            base = paced.get(f"{n}/0", {})
            for lat in d["latencies"]:
                st = paced.get(f"{n}/{lat:g}", {})
                name = f"D {n} followers, latency {lat:g}"
                if not st:
                    row(name, _absent(d, lat), "-", None, "-", None)
                    continue
                ratio = st["cores"] / base["cores"] if lat and base.get("cores") else None
                row(
                    f"{name}: followers' CPU",
                    f"{st['cores']:.2f} cores",
                    f"latency 0: {base['cores']:.2f} cores" if ratio is not None else "-",
                    ratio,
                    "-",
                    None,
                )
                wakes = st["wakes_per_s"]
                row(
                    f"{name}: CPU per wake-up",
                    f"{_time(st['cpu_per_wake'])} ({wakes:,.0f} wake-ups/s each)",
                    "-",
                    None,
                    f"≤{1 / lat:g} wake-ups/s" if lat else "-",
                    wakes <= WAKE_SLACK / lat if lat else None,
                )
                row(
                    f"{name}: lateness p50 / p99 / max",
                    f"{_time(st['p50'])} / {_time(st['p99'])} / {_time(st['max'])}",
                    "-",
                    None,
                    f"p99 ≤{_time(lat + LATE_SLACK)}" if lat else "-",
                    st["p99"] <= lat + LATE_SLACK if lat else None,
                )
        runs = [st for st in paced.values() if st]
        row(
            "D paced: every follower saw every record",
            f"{sum(st['seen_all'] for st in runs)} of {len(runs)} configurations",
            f"missed {sum(st['missed'] for st in runs)}, died {sum(st['died'] for st in runs)}",
            None,
            "all",
            all(st["seen_all"] for st in runs),
        )
        for n in d["fast_followers"]:
            for lat in d["latencies"]:
                st = fast.get(f"{n}/{lat:g}", {})
                name = f"D fast writer, {n} followers, latency {lat:g}"
                if "ratio" not in st:
                    row(name, _absent(d, lat), "-", None, "-", None)
                    continue
                row(
                    name,
                    _rate(st["rate"]),
                    f"alone {_rate(st['alone'])}",
                    st["ratio"],
                    f"≥{FAST_TARGET:.2f}x" if lat else "-",
                    st["ratio"] >= FAST_TARGET if lat else None,
                )
        if many["latency"] != many["asked"]:
            row(
                f"D many: latency {many['asked']:g}",
                UNSUPPORTED,
                f"ran at {many['latency']:g}",
                None,
                "-",
                None,
            )
        if many.get("memory"):
            name = f"D many: {many['followers']} followers, latency {many['latency']:g}"
            mem, probe = many["memory"], many["probe_memory"]
            for key, label in (("pss", "PSS"), ("rss", "RSS")):
                row(
                    f"{name}: {label} per follower",
                    _bytes(mem[key]),
                    f"probe (no log) {_bytes(probe.get(key))}",
                    mem[key] / probe[key] if probe.get(key) else None,
                    "-",
                    None,
                )
            row(f"{name}: followers' CPU", f"{many['cores']:.2f} cores", "-", None, "-", None)
            idle = paced.get("0/0", {}).get("probe_p99")
            row(
                f"{name}: probe sleep(10 ms) overshoot p99",
                _time(many["probe_p99"]),
                f"0 followers {_time(idle)}",
                many["probe_p99"] / idle if idle else None,
                f"≤{_time(RESPONSIVE)}",
                many["probe_p99"] <= RESPONSIVE,
            )
            row(
                f"{name}: every record to every follower",
                "yes" if many["seen_all"] else "NO",
                f"missed {many['missed']}, died {many['died']}, short {many['short']}",
                None,
                "all",
                many["seen_all"],
            )
    return rows


def details(suite: Suite) -> list[str]:
    """Lines below the table: T's rates for every contender, L's and F's latencies."""
    lines = []
    t = suite.scenarios.get("T", {}).get("rates", {})
    if t:
        seen = suite.scenarios["T"].get("seen", {})
        lines.append("T writer records/s by number of readers (median of repeats; in brackets, the share")
        lines.append("  of the records the slowest reader received; ours and the floor show all of them):")
        for kind in ("ours", "floor", *suite.extras, *suite.peers):
            cells = [
                f"{n}: {_rate(t[key]):>6}" + (f" ({seen[key]:4.0%})" if key in seen else " " * 7)
                for n in (0, 1, 4)
                if (key := f"{kind}/{n}") in t
            ]
            if cells:
                lines.append(f"  {LABEL[kind]:<12} " + "   ".join(cells))
    lat = suite.scenarios.get("L", {}).get("stats", {})
    if lat:
        lines.append(f"L publish-to-observe latency at {suite.p.l_rate}/s for {suite.p.l_seconds:g} s:")
        for kind, st in lat.items():
            lines.append(
                f"  {LABEL[kind]:<12} p50 {_time(st['p50']):>9}  p99 {_time(st['p99']):>9}  "
                f"p99.9 {_time(st['p999']):>9}  observed {st['observed']:.0f}/{st['expected']}"
            )
    f = suite.scenarios.get("F", {}).get("stats", {})
    if f:
        lines.append(
            f"F publish-to-observe latency at {suite.p.f_rate}/s for {suite.p.f_seconds:g} s, "
            f"{suite.p.repeats} run(s) together, the first {F_SKIP} records of each left out:"
        )
        for name, st in f.items():
            lines.append(
                f"  {name:<7} p50 {_time(st['p50']):>9}  p99 {_time(st['p99']):>9}  "
                f"p99.9 {_time(st['p999']):>9}  max {_time(st['max']):>9}"
                f"  >1 ms {st['over_1ms']}  >10 ms {st['over_10ms']}"
                f"  observed {st['observed']}/{st['expected']}  missed {st['missed']}"
            )
    d = suite.scenarios.get("D", {})
    if d:
        lines.append(
            f"D dashboards ({d['start_method']} processes; medians of {d['repeats']} run(s), lateness of "
            "all runs' records together; cores = followers' CPU / the writer's run):"
        )
        lines.append(f"  paced writer at {d['rate']:,} records/s for {d['seconds']:g} s:")
        lines.append(
            "    followers latency   cores  CPU/wake-up  wake-ups/s each  lateness p50 / p99 / max"
            "        lost (missed/died/short)  probe p99  writer's cores"
        )
        for key, st in d["paced"].items():
            n, lat = key.split("/")
            if not st:
                lines.append(f"    {n:>9} {lat:>7}   {_absent(d, float(lat))}")
                continue
            late = f"{_time(st['p50'])} / {_time(st['p99'])} / {_time(st['max'])}" if int(n) else "-"
            lost = f"{st['missed']}/{st['died']}/{st['short']}"
            wakes = f"{st['wakes_per_s']:,.0f}" if int(n) else "-"
            lines.append(
                f"    {n:>9} {lat if int(n) else '-':>7} {st['cores']:>7.2f}  {_time(st['cpu_per_wake']):>11}"
                f"  {wakes:>15}  {late:<30}  {lost:<24}  {_time(st['probe_p99']):>9}"
                f"  {st['writer_cores']:.2f}"
            )
        lines.append(f"  fast writer (append), {d['fast_seconds']:g} s a run, each right after a run alone:")
        lines.append(
            "    followers latency    rate  vs alone  writer's cores  followers' cores  wake-ups/s each"
            "  lost (missed/died/short)"
        )
        for key, st in d["fast"].items():
            n, lat = ("0", "-") if key == "alone" else key.split("/")
            if not st:
                lines.append(f"    {n:>9} {lat:>7}   {_absent(d, float(lat))}")
                continue
            lost = f"{st['missed']}/{st['died']}/{st['short']}"
            wakes = f"{st['wakes_per_s']:,.0f}" if int(n) else "-"
            lines.append(
                f"    {n:>9} {lat:>7} {_rate(st['rate']):>7}  {st.get('ratio', 1.0):>7.2f}x"
                f"  {st['writer_cores']:>14.2f}  {st['cores']:>16.2f}  {wakes:>15}  {lost}"
            )
        many = d["many"]
        if "memory" in many:
            asked = "" if many["latency"] == many["asked"] else f" ({many['asked']:g}: {UNSUPPORTED})"
            mem, top, probe = many["memory"], many["memory_max"], many["probe_memory"]
            lines.append(
                f"  many: {many['followers']} followers, latency {many['latency']:g}{asked}: attached in "
                f"{many['attach']:.1f} s, followed {d['seconds']:g} s, all ended {many['detach']:.1f} s "
                "after the stop"
            )
            kinds = ("pss", "rss", "uss")
            if mem:
                lines.append(
                    "    memory per follower, median (max): "
                    + ", ".join(f"{k.upper()} {_bytes(mem[k])} ({_bytes(top[k])})" for k in kinds)
                    + "; the probe: "
                    + ", ".join(f"{k.upper()} {_bytes(probe.get(k))}" for k in kinds)
                )
            pr = many["probe"]
            lines.append(
                f"    followers' CPU {many['cores']:.2f} cores, {_time(many['cpu_per_wake'])} a wake-up, "
                f"{many['wakes_per_s']:,.1f} wake-ups/s each; lateness p50 {_time(many['p50'])}, p99 "
                f"{_time(many['p99'])}, max {_time(many['max'])}; probe overshoot p50 "
                f"{_time(pr['p50'])}, p99 {_time(pr['p99'])}, max {_time(pr['max'])}; "
                f"missed {many['missed']}, died {many['died']}, short {many['short']}"
            )
    return lines


def _absent(d: dict[str, Any], latency: float) -> str:
    """What a D configuration without a result shows: the library has no latency=, or it failed."""
    return UNSUPPORTED if latency and not d["latency_supported"] else "failed"


def _bytes(v: float | None) -> str:
    return "n/a" if v is None else f"{v / (1 << 20):.1f} MiB"


def _rate(v: float | None) -> str:
    if v is None:
        return "n/a"
    return f"{v / 1e6:.2f}M" if v >= 1e6 else f"{v / 1e3:.0f}k"


def _time(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if v < 1e-6:
        return f"{v * 1e9:.0f} ns"
    if v < 1e-3:
        return f"{v * 1e6:.2f} µs" if v < 1e-5 else f"{v * 1e6:.1f} µs"
    if v < 1:
        return f"{v * 1e3:.2f} ms"
    return f"{v:.2f} s"


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    head = ("scenario", "ours", "baseline", "ratio", "target", "met?")
    cells = [
        (
            r["scenario"],
            r["ours"],
            r["baseline"],
            "-" if r["ratio"] is None else f"{r['ratio']:.2f}",
            r["target"],
            {True: "yes", False: "NO", None: "-"}[r["met"]],
        )
        for r in rows
    ]
    widths = [max(len(str(c[i])) for c in [head, *cells]) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(head, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def write_charts(suite: Suite, directory: str) -> list[str]:
    """PNG charts of T, L and S with matplotlib (if installed); returns the files written."""
    matplotlib = optional("matplotlib")
    if matplotlib is None:
        print("charts skipped: matplotlib is not installed (pip install matplotlib)")
        return []
    matplotlib.use("Agg")
    plt = importlib.import_module("matplotlib.pyplot")
    os.makedirs(directory, exist_ok=True)
    written = []
    t = suite.scenarios.get("T", {}).get("rates", {})
    if t:
        fig, ax = plt.subplots(figsize=(8, 4))
        kinds = [
            k
            for k in ("ours", "floor", *suite.extras, *suite.peers)
            if any(f"{k}/{n}" in t for n in (0, 1, 4))
        ]
        for j, n in enumerate((0, 1, 4)):
            xs = [i + (j - 1) * 0.27 for i in range(len(kinds))]
            ax.bar(xs, [t.get(f"{k}/{n}", 0) / 1e6 for k in kinds], width=0.27, label=f"{n} readers")
        ax.set_xticks(range(len(kinds)), [LABEL[k] for k in kinds])
        ax.set_ylabel("writer M records/s")
        ax.set_title("T: one record per publish")
        ax.legend()
        written.append(_save(fig, plt, directory, "T_throughput.png"))
    samples: dict[str, Any] = getattr(suite, "_l_samples", {})
    if samples:
        fig, ax = plt.subplots(figsize=(8, 4))
        for kind, lat in samples.items():
            if len(lat):
                us = np.sort(lat) * 1e6
                ax.plot(us, np.linspace(0, 1, len(us)), label=LABEL[kind])
        ax.set_xscale("log")
        ax.set_xlabel("publish-to-observe latency (µs)")
        ax.set_ylabel("fraction of records")
        ax.set_title(f"L: {suite.p.l_rate}/s, one reader (last repeat)")
        ax.legend()
        written.append(_save(fig, plt, directory, "L_latency_cdf.png"))
    s_samples: dict[str, Any] = getattr(suite, "_s_samples", {})
    if s_samples:
        fig, ax = plt.subplots(figsize=(8, 4))
        for kind, ns in s_samples.items():
            us = np.sort(ns) / 1e3
            ax.plot(us, 1 - np.arange(len(us)) / len(us), label=LABEL[kind])
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("append latency (µs)")
        ax.set_ylabel("fraction slower")
        ax.set_title(f"S: appends across segment rollovers (segment {S_SEGMENT})")
        ax.legend()
        written.append(_save(fig, plt, directory, "S_append_latency.png"))
    return written


def _save(fig: Any, plt: Any, directory: str, name: str) -> str:
    path = os.path.join(directory, name)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return None  # raw samples stay out of the JSON
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
