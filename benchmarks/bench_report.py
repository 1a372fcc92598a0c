"""The harness's outputs: the figures beside their targets (table), the JSON file, the plot."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

P1_TARGET = 50_000
P2_TARGET, P2_STRETCH = 10_000, 25_000
P3_P50_MS, P3_P99_MS = 15.0, 100.0
P4_TARGET_US = 2.0
P5_TARGET_B = 4096
P6_TARGET_S = 15.0
QUICK_NOTE = (
    "quick run: fewer events and sessions, shorter steps and a coarser rate search than the "
    "targets are defined on; its verdicts only indicate (run without --quick for the figures of "
    "record)"
)


@dataclass
class Row:
    """One line of the table."""

    figure: str
    label: str
    value: str
    target: str = ""
    status: str = "info"


def _ok(passed: bool | None) -> str:
    return "n/a" if passed is None else ("PASS" if passed else "FAIL")


def _ms(v: float | None) -> str:
    return "lost" if v is None else (f"{v:.1f} ms" if v < 100 else f"{v:,.0f} ms")


def _rate(v: float | None) -> str:
    return "—" if v is None else f"{v:,.0f}/s"


def rows(results: dict[str, Any]) -> list[Row]:  # noqa: PLR0912, PLR0915  # one row per figure
    """The table: every figure the issue asks for, in its order, with target and verdict."""
    out: list[Row] = []
    p1 = results.get("P1")
    p1_rate = p1["events_per_s"] if p1 else None
    if p1:
        out.append(
            Row(
                "P1",
                f"core replay, 1 core, {p1['events']:,} fleet events, default Cedar pack",
                _rate(p1_rate),
                f">= {P1_TARGET:,}/s",
                _ok(p1_rate >= P1_TARGET),
            )
        )
    if p1 and p1.get("events_per_cpu_s"):
        out.append(
            Row(
                "P1",
                "  the same per CPU-second of the replaying process",
                _rate(p1["events_per_cpu_s"]),
            )
        )
    p2 = results.get("P2", {})
    worker = p2.get("worker") or results.get("P3", {}).get("sweep")
    if worker:
        best = worker["max_sustainable_per_s"]
        limited = (
            f" (search stopped by the {worker['search_limited_by']})"
            if worker["search_limited_by"]
            else ""
        )
        out.append(
            Row(
                "P2",
                f"tether worker, max sustainable intents/s{limited}",
                _rate(best),
                f">= {P2_TARGET:,}/s (stretch {P2_STRETCH:,})",
                _ok(best >= P2_TARGET) + (" +stretch" if best >= P2_STRETCH else ""),
            )
        )
        out.append(
            Row(
                "P2",
                "tether worker, peak processed rate in any step",
                _rate(worker["peak_processed_per_s"]),
            )
        )
        if worker.get("cpu_us_per_event_at_max"):
            out.append(
                Row(
                    "P2",
                    "  worker CPU per event at that rate (-> events per CPU-second)",
                    f"{worker['cpu_us_per_event_at_max']:.0f} µs (-> {worker['events_per_cpu_s_at_max']:,}/s)",
                )
            )
        if p1_rate:
            out.append(
                Row("P2", "P2 / P1 (worker max sustainable / core)", f"{best / p1_rate:.3f}")
            )
    naive = p2.get("naive")
    if naive:
        out.append(
            Row(
                "P2",
                "naive faust agent (one event at a time), max sustainable",
                _rate(naive["max_sustainable_per_s"]),
            )
        )
        if p1_rate:
            out.append(Row("P2", "naive / P1", f"{naive['max_sustainable_per_s'] / p1_rate:.3f}"))
    p3 = results.get("P3")
    if p3 and not p3.get("levels"):
        out.append(Row("P3", "load levels not run (P2 found no sustainable rate)", "—", "", "n/a"))
    if p3:
        for level in p3.get("levels", []):
            lat, pct = level["latency"], level["load_pct"]
            where = f"@ {pct}% ({level['offered_achieved']:,}/s, n={lat['n']}, lost {lat['lost']})"
            if pct == 50:
                out.append(
                    Row(
                        "P3",
                        f"detection p50 {where}",
                        _ms(lat["p50_ms"]),
                        f"<= {P3_P50_MS:.0f} ms",
                        _ok(lat["p50_ms"] is not None and lat["p50_ms"] <= P3_P50_MS),
                    )
                )
                out.append(
                    Row(
                        "P3",
                        f"detection p99 {where}",
                        _ms(lat["p99_ms"]),
                        f"<= {P3_P99_MS:.0f} ms",
                        _ok(lat["p99_ms"] is not None and lat["p99_ms"] <= P3_P99_MS),
                    )
                )
                out.append(Row("P3", f"detection p99.9 {where}", _ms(lat["p999_ms"])))
            else:
                out.append(
                    Row(
                        "P3",
                        f"detection p50 / p99 / p99.9 {where}",
                        " / ".join(_ms(lat[k]) for k in ("p50_ms", "p99_ms", "p999_ms")),
                    )
                )
        idle = p3.get("idle")
        if idle:
            out.append(
                Row(
                    "P3",
                    f"first violation after {idle['idle_s'] / 60:.1f} idle minutes",
                    _ms(idle["first_ms"]),
                    "",
                    "info",
                )
            )
            out.append(
                Row(
                    "P3",
                    "  ... the five violations right after it (p50)",
                    _ms(idle["next_five_p50_ms"]),
                )
            )
    p4 = results.get("P4")
    if p4:
        worst = max(p4["token_hit_us"], p4["token_miss_us"], p4["three_ids_miss_us"])
        out.append(
            Row(
                "P4",
                f"Watcher.is_revoked, {p4['live_revocations']:,} live (worst case: 3 ids, miss)",
                f"{worst:.2f} µs",
                f"<= {P4_TARGET_US:.0f} µs",
                _ok(worst <= P4_TARGET_US),
            )
        )
        out.append(
            Row(
                "P4",
                "  token hit / token miss",
                f"{p4['token_hit_us']:.2f} / {p4['token_miss_us']:.2f} µs",
            )
        )
    p5 = results.get("P5")
    if p5:
        b = p5["bytes_per_session"]
        out.append(
            Row(
                "P5",
                f"bytes per active session at {p5['sessions']:,} (worker RSS)",
                f"{b:,} B",
                f"<= {P5_TARGET_B:,} B",
                _ok(b <= P5_TARGET_B),
            )
        )
        core = p5.get("core")
        if core:
            out.append(
                Row(
                    "P5",
                    f"  core state per session + its tokens (tracemalloc, {core['sessions']:,})",
                    f"{core['bytes_per_session']:,} B",
                )
            )
        if "bytes_per_session_after_recovery" in p5:
            out.append(
                Row(
                    "P5",
                    "  the same, worker restarted after P6 (recovered state, no transients)",
                    f"{p5['bytes_per_session_after_recovery']:,} B",
                )
            )
        if "serialized_bytes_per_session" in p5:
            out.append(
                Row(
                    "P5",
                    "  session + its tokens, serialized (changelog)",
                    f"{p5['serialized_bytes_per_session']:,} B",
                )
            )
        if "table_sessions_after_completion" in p5:
            out.append(
                Row(
                    "P5",
                    "sessions held after completion + retention (of "
                    f"{p5['table_sessions_loaded']:,})",
                    f"{p5['table_sessions_after_completion']:,}",
                    f"= the {p5['expected_after_completion']} tick workflows",
                    _ok(p5["no_accumulation"]),
                )
            )
        for note in p5.get("notes", []):
            out.append(Row("P5", f"  note: {note}", ""))
    p6 = results.get("P6")
    if p6:
        rec = p6["recovery_s"]
        out.append(
            Row(
                "P6",
                f"kill -9 -> processing again, {p6['sessions']:,} sessions",
                "never" if rec is None else f"{rec:.1f} s",
                f"<= {P6_TARGET_S:.0f} s",
                _ok(rec is not None and rec <= P6_TARGET_S and p6["state_restored"]),
            )
        )
        out.append(
            Row(
                "P6",
                "  state restored (checked sessions decided from restored state)",
                f"{p6['checks_restored']}/{p6['checks']}",
                "all",
                _ok(p6["state_restored"]),
            )
        )
    for problem in results.get("errors", []):
        out.append(Row("!", f"did not run to the end: {problem}"[:140], "", "", "ERROR"))
    if results.get("run", {}).get("quick"):
        # smaller sizes, shorter steps, a coarser rate search than the targets are defined on:
        # a smoke test whose verdicts only indicate
        for row in out:
            if row.status in {"PASS", "FAIL"}:
                row.status = f"{row.status} (quick)"
    return out


def table(rows_: list[Row]) -> str:
    """The rows as an aligned plain-text table."""
    head = Row("", "figure", "measured", "target", "result")
    width = [
        max(len(getattr(r, a)) for r in [head, *rows_])
        for a in ("figure", "label", "value", "target")
    ]
    lines = []
    for i, r in enumerate([head, *rows_]):
        lines.append(
            f"{r.figure:<{width[0]}}  {r.label:<{width[1]}}  {r.value:>{width[2]}}  "
            f"{r.target:<{width[3]}}  {r.status}".rstrip()
        )
        if i == 0:
            lines.append("-" * len(lines[0]))
    return "\n".join(lines)


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by None (JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def write_json(results: dict[str, Any], out: Path, stamp: str) -> Path:
    """``results-<stamp>.json`` and ``latest.json`` in ``out``."""
    path = out / f"results-{stamp}.json"
    text = json.dumps(_finite(results), indent=1, default=str, allow_nan=False)
    path.write_text(text)
    (out / "latest.json").write_text(text)
    return path


_COLORS = {"tether worker": "tab:blue", "naive faust agent": "tab:orange"}


def _sweeps(results: dict[str, Any]) -> dict[str, Any]:
    p2 = results.get("P2", {})
    return {
        "tether worker": p2.get("worker") or results.get("P3", {}).get("sweep"),
        "naive faust agent": p2.get("naive"),
    }


def _latency_panel(ax: Any, results: dict[str, Any]) -> None:
    for name, sweep in _sweeps(results).items():
        if not sweep:
            continue
        steps = sorted(sweep["steps"], key=lambda s: s["offered_achieved"])
        xs = [s["offered_achieved"] for s in steps]
        for key, style in (("p50_ms", "-o"), ("p99_ms", "--s")):
            ys = [s["latency"][key] if s["latency"][key] is not None else math.nan for s in steps]
            ax.plot(xs, ys, style, color=_COLORS[name], label=f"{name} {key[:3]}", markersize=5)
        for s in steps:
            if not s["sustainable"]:
                x = s["offered_achieved"]
                ax.axvspan(x * 0.98, x * 1.02, color=_COLORS[name], alpha=0.08)
    levels = results.get("P3", {}).get("levels", [])
    for level in levels:
        lat, x = level["latency"], level["offered_achieved"]
        for key, marker in (("p50_ms", "*"), ("p99_ms", "P"), ("p999_ms", "X")):
            if lat[key] is not None:
                ax.plot([x], [lat[key]], marker, color="black", markersize=10)
        ax.annotate(
            f"P3 {level['load_pct']}%",
            (x, lat["p50_ms"] or 1),
            textcoords="offset points",
            xytext=(4, -12),
            fontsize=8,
        )
    if levels:
        for marker, name in (("*", "P3 p50"), ("P", "P3 p99"), ("X", "P3 p99.9")):
            ax.plot([], [], marker, color="black", label=name)
    ax.axhline(P3_P50_MS, color="green", linewidth=0.8, linestyle=":", label="target p50 15 ms")
    ax.axhline(P3_P99_MS, color="red", linewidth=0.8, linestyle=":", label="target p99 100 ms")
    ax.set_yscale("log")
    ax.set_xlabel("offered rate (events/s, achieved)")
    ax.set_ylabel("intent produced -> gateway holds revocation (ms)")
    ax.set_title("P3 detection latency vs offered rate (shaded: not sustainable)")
    ax.legend(fontsize=7)


def _throughput_panel(ax: Any, results: dict[str, Any]) -> None:
    top = 1
    for name, sweep in _sweeps(results).items():
        if not sweep:
            continue
        steps = sorted(sweep["steps"], key=lambda s: s["offered_achieved"])
        xs = [s["offered_achieved"] for s in steps]
        top = max(top, *xs)
        ys = [s["processed_per_s"] or 0 for s in steps]
        ax.plot(xs, ys, "-o", color=_COLORS[name], label=f"{name} processed")
        best = sweep["max_sustainable_per_s"]
        if best:
            label = f"{name} max sustainable {best:,}/s"
            ax.axvline(best, color=_COLORS[name], linestyle=":", label=label)
    ax.plot([0, top], [0, top], color="grey", linewidth=0.8, label="processed = offered")
    if results.get("P1"):
        rate = results["P1"]["events_per_s"]
        ax.axhline(rate, color="purple", linestyle="--", linewidth=0.8, label="P1 core (1 core)")
    ax.axhline(P2_TARGET, color="red", linewidth=0.8, linestyle=":", label="P2 target 10,000/s")
    ax.set_xlabel("offered rate (events/s, achieved)")
    ax.set_ylabel("processed (committed) events/s")
    ax.set_title("P2 throughput vs offered rate")
    ax.legend(fontsize=7)


def plot(results: dict[str, Any], out: Path, stamp: str) -> Path | None:
    """Detection latency and processed rate against the offered rate, per pipeline."""
    try:
        import matplotlib  # noqa: PLC0415  # optional: `pip install -e '.[dev]'`

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return None
    fig, (lat_ax, thr_ax) = plt.subplots(1, 2, figsize=(13, 5.2))
    _latency_panel(lat_ax, results)
    _throughput_panel(thr_ax, results)
    run = results.get("run", {})
    fig.suptitle(
        f"tether benchmarks {stamp}  ({run.get('cpus')} CPUs, load avg {run.get('loadavg_before')}"
        f" -> {run.get('loadavg_after')}{', quick' if run.get('quick') else ''})",
        fontsize=10,
    )
    fig.tight_layout()
    path = out / f"latency-vs-rate-{stamp}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    shutil.copyfile(path, out / "latency-vs-rate.png")
    return path
