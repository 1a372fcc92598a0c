"""The demo's verdict: injected attacks against what was found, and the closing summary."""

from __future__ import annotations

import itertools
import math
import textwrap
from collections import Counter
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass

from tether.demo.kinds import CODES

_KIND_OF = {codes: kind.value for kind, codes in CODES.items()}
_SHOW_MISSED = 5
_WIDTH = 96
_INDENT = 22

Line = tuple[str, str]  # text, rich style ("" for none)


@dataclass(frozen=True, slots=True)
class KindScore:
    """One attack kind: how many were injected and how many caught (every expected code)."""

    kind: str
    codes: str
    injected: int
    caught: int
    missed: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Card:
    """The attack scorecard."""

    kinds: tuple[KindScore, ...]
    benign: Mapping[str, Set[str]]

    @property
    def injected(self) -> int:
        """Attacks injected (in scored workflows)."""
        return sum(k.injected for k in self.kinds)

    @property
    def caught(self) -> int:
        """Attacks caught with every code they must raise."""
        return sum(k.caught for k in self.kinds)

    @property
    def passed(self) -> bool:
        """Every attack caught and no benign workflow raised anything."""
        return self.caught == self.injected and not self.benign


def score(
    truth: Mapping[str, frozenset[str]],
    found: Mapping[str, Set[str]],
    scored: Callable[[str], bool] | None = None,
) -> Card:
    """Compare the ground truth with the codes found per workflow.

    Args:
        truth: Workflow id to the codes it must raise (empty for benign workflows).
        found: Workflow id to the codes it raised.
        scored: Which attacked workflows to score (all when None; an interrupted run scores
            those whose checks have had time to fire). A finding on a benign workflow always
            counts: the core never fires early, so it is wrong whenever it appears.
    """
    rows: dict[str, tuple[frozenset[str], int, int, list[str]]] = {}
    benign: dict[str, Set[str]] = {}
    for wf, expected in truth.items():
        raised = found.get(wf, set())
        if not expected:
            if raised:
                benign[wf] = raised
            continue
        if scored is not None and not scored(wf):
            continue
        kind = _KIND_OF.get(expected, "+".join(sorted(expected)))
        _, injected, caught, missed = rows.get(kind, (expected, 0, 0, []))
        if expected <= raised:
            caught += 1
        else:
            missed.append(wf)
        rows[kind] = (expected, injected + 1, caught, missed)
    for wf, raised in found.items():
        if wf not in truth and raised:
            benign[wf] = raised
    kinds = tuple(
        KindScore(k, " + ".join(sorted(e)), i, c, tuple(m))
        for k, (e, i, c, m) in sorted(rows.items())
    )
    return Card(kinds, benign)


@dataclass(frozen=True, slots=True)
class Report:
    """Everything the closing summary states."""

    wall_s: float
    fleet_s: float
    speedup: float | None
    events: int
    duplicates: int
    dead_reasons: Counter[str]
    workflows: int
    findings: Counter[str]
    targets: Counter[str]
    completions: int
    event_latency: Sequence[float]
    processing: Sequence[tuple[float, bool]]
    grace_s: float
    card: Card
    interrupted: bool


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in [0, 1]); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _secs(s: float) -> str:
    if math.isnan(s):
        return "-"
    return f"{s * 1000:.0f} ms" if abs(s) < 1 else f"{s:.1f} s"


def _ms(ms: float) -> str:
    if math.isnan(ms):
        return "-"
    return f"{ms:.2f} ms" if ms < 1 else f"{ms:.1f} ms" if ms < 10 else f"{ms:,.0f} ms"


def _duration(s: float) -> str:
    minutes, seconds = divmod(round(s), 60)
    return f"{minutes}m {seconds:02d}s" if minutes else f"{seconds}s"


def _counts(counter: Mapping[str, int]) -> str:
    ranked = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{k} {n:,}" for k, n in ranked) or "none"


def _field(label: str, text: str, style: str = "") -> list[Line]:
    """``label`` in a column of its own, ``text`` wrapped beside it."""
    wrapped = textwrap.wrap(text, _WIDTH - _INDENT) or [""]
    first = f"  {label:<{_INDENT - 2}}{wrapped[0]}"
    return [(first, style)] + [(" " * _INDENT + more, style) for more in wrapped[1:]]


def summary_lines(r: Report) -> list[Line]:
    """The closing summary, one (text, style) pair per line, at most 96 columns wide."""
    speed = f" (x{r.speedup:,.0f})" if r.speedup else ""
    dead = sum(r.dead_reasons.values())
    title = "tether demo: summary" + (" (interrupted)" if r.interrupted else "")
    lines: list[Line] = [("", ""), (title, "bold")]
    lines += _field(
        "run", f"{r.wall_s:.1f} s of wall time, {_duration(r.fleet_s)} of fleet time{speed}"
    )
    lines += _field("events", f"{r.events:,} processed")
    lines += _field("", f"{r.duplicates:,} duplicate deliveries, ignored by event_id", "dim")
    lines += _field("dead letters", f"{dead:,}: {_counts(r.dead_reasons)}")
    lines += _field("workflows", f"{r.workflows:,}")
    lines += _field("findings", f"{sum(r.findings.values()):,}")
    ranked = sorted(r.findings.items(), key=lambda kv: (-kv[1], kv[0]))
    half = math.ceil(len(ranked) / 2)
    for (code, n), right in itertools.zip_longest(ranked[:half], ranked[half:]):
        cell = f"    {code:<34}{n:>5,}"
        if right is not None:
            cell += f"      {right[0]:<34}{right[1]:>5,}"
        lines.append((cell, ""))
    lines += _field("revocations", f"{sum(r.targets.values()):,}; by target: {_counts(r.targets)}")
    lines += _field(
        "", f"{r.completions:,} task_completed: credentials retired as their workflow ended", "dim"
    )
    lines += _latency_lines(r)
    lines += _card_lines(r)
    return lines


def _latency_lines(r: Report) -> list[Line]:
    lat = r.event_latency
    every = [ms for ms, _ in r.processing]
    arrival = [ms for ms, now in r.processing if now]
    waited = len(every) - len(arrival)
    return [
        *_field(
            "detection latency",
            f"p50 {_secs(percentile(lat, 0.5))}   p99 {_secs(percentile(lat, 0.99))}",
        ),
        *_field("", "event time to finding, on the fleet clock (includes delivery delay)", "dim"),
        *_field(
            "processing latency",
            f"p50 {_ms(percentile(every, 0.5))}   p99 {_ms(percentile(every, 0.99))}",
        ),
        *_field("", "wall time from handing the event to the monitor to the finding", "dim"),
        *_field(
            "",
            f"{len(arrival):,} decided on arrival (p99 {_ms(percentile(arrival, 0.99))}); "
            f"{waited:,} waited for late events (grace {r.grace_s:g} s of event time)",
            "dim",
        ),
    ]


def _attacks(n: int) -> str:
    return f"{n:,} injected attack" + ("" if n == 1 else "s")


def _card_lines(r: Report) -> list[Line]:
    card = r.card
    lines: list[Line] = [("", ""), ("attack scorecard", "bold")]
    if r.interrupted:
        lines.append(("  (attacks whose events had all arrived, with time to decide)", "dim"))
    lines.append((f"  {'attack':<27}{'injected':>9}{'caught':>8}   must raise", "dim"))
    for k in card.kinds:
        ok = k.caught == k.injected
        row = f"  {k.kind:<27}{k.injected:>9,}{k.caught:>8,}   {k.codes}"
        lines.append((row, "" if ok else "bold red"))
        if not ok:
            lines += _field("", "missed: " + ", ".join(k.missed[:_SHOW_MISSED]), "red")
    total_ok = card.caught == card.injected
    total = f"  {'all attacks':<27}{card.injected:>9,}{card.caught:>8,}"
    lines.append((total, "bold green" if total_ok else "bold red"))
    benign = f"  benign workflows with findings: {len(card.benign):,}"
    lines.append((benign, "bold red" if card.benign else "bold green"))
    for wf, codes in sorted(card.benign.items())[:_SHOW_MISSED]:
        lines.append((f"    {wf}: {', '.join(sorted(codes))}", "red"))
    lines.append(("", ""))
    if r.interrupted:
        verdict = (
            "INTERRUPTED: the summary covers what arrived before Ctrl-C (nothing was flushed)",
            "bold yellow",
        )
    elif card.passed:
        verdict = (
            f"PASS: {card.caught:,} of {_attacks(card.injected)} caught; "
            "no benign workflow raised a finding",
            "bold green",
        )
    else:
        verdict = (
            f"FAIL: {card.injected - card.caught:,} of {_attacks(card.injected)} missed; "
            f"{len(card.benign):,} benign workflow(s) raised findings",
            "bold red",
        )
    lines.append(verdict)
    return lines
