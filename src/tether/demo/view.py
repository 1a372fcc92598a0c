"""The demo's screen: a calm rich live view on a terminal, plain lines anywhere else."""

from __future__ import annotations

import re
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from tether.models.outputs import Finding, Revocation, Target

#: Revocation reason for credentials retired with their workflow (routine, not an alarm).
TASK_COMPLETED = "task_completed"
DEAD = "dead"

_SEVERITY_STYLE = {
    "critical": "bold white on red",
    "high": "bold red",
    "medium": "yellow",
    "low": "cyan",
    "info": "dim",
    DEAD: "magenta",
}
_SEVERITY_LABEL = {"critical": "CRIT", "high": "HIGH", "medium": "MED", "low": "LOW"}
_SPIFFE = re.compile(r"spiffe://[^\s,;]*/([^/\s,;]+)")
_TARGET_WIDTH = 26
_FIXED_LINES = 11  # header panel, panel borders and table headers, one spare line
_MAX_FEED = 18
_MAX_SIDE = 14


def workload_name(workload_id: str) -> str:
    """The last path segment of a SPIFFE id (``spiffe://acme.example/agent/coder`` → ``coder``)."""
    return workload_id.rstrip("/").rsplit("/", 1)[-1] or workload_id


def tidy(text: str) -> str:
    """Shorten every SPIFFE id in ``text`` to its workload name."""
    return _SPIFFE.sub(r"\1", text)


def shorten(text: str, width: int) -> str:
    """Elide the middle of ``text`` to fit ``width`` characters (ids keep both ends)."""
    if len(text) <= width:
        return text
    keep = width - 1
    return f"{text[: keep - keep // 2]}…{text[len(text) - keep // 2 :]}"


def target_label(target: Target) -> str:
    """``kind:id``, with a SPIFFE id reduced to its workload name, elided to fit a column."""
    ident = workload_name(target.id) if target.id.startswith("spiffe://") else target.id
    return shorten(f"{target.kind}:{ident}", _TARGET_WIDTH)


def clock_label(at: datetime, today: datetime | None = None) -> str:
    """``HH:MM:SS``, with the date in front when ``at`` is not on ``today``'s date."""
    if today is not None and at.date() != today.date():
        return at.strftime("%m-%d %H:%M")
    return at.strftime("%H:%M:%S")


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the feed: a finding, or a dead letter (severity ``dead``)."""

    at: datetime
    severity: str
    code: str
    workflow: str
    workload: str
    summary: str

    @classmethod
    def of(cls, f: Finding) -> Row:
        """The feed row of a finding."""
        return cls(
            f.detected_at, f.severity, f.code, f.workflow_id, workload_name(f.workload_id),
            tidy(f.summary),
        )  # fmt: skip

    def plain(self) -> str:
        """The row as one plain line."""
        kind = "deadletter" if self.severity == DEAD else "finding"
        return (
            f"{self.at:%H:%M:%S}  {kind:<10}  {self.severity.upper():<8}  {self.code:<25}"
            f"  {self.workflow:<18}  {self.workload or '-':<12}  {self.summary}"
        )


def revocation_line(r: Revocation) -> str:
    """A revocation as one plain line."""
    return (
        f"{r.issued_at:%H:%M:%S}  {'revocation':<10}  {r.severity.upper():<8}  "
        f"{target_label(r.target):<26}  {r.reason:<25}  until {r.not_after:%Y-%m-%d %H:%M:%S}"
    )


@dataclass(slots=True)
class Board:
    """Everything the live view shows; the driver updates it, ``render`` draws it."""

    title: str
    total: int
    speedup: float | None
    events: int = 0
    duplicates: int = 0
    deadletters: int = 0
    active: int = 0
    revocations: int = 0
    completions: int = 0
    rate: float = 0.0
    elapsed: float = 0.0
    clock: datetime | None = None
    findings: Counter[str] = field(default_factory=Counter)
    severity: dict[str, str] = field(default_factory=dict)
    feed: deque[Row] = field(default_factory=lambda: deque(maxlen=_MAX_FEED))
    revoked: deque[Revocation] = field(default_factory=lambda: deque(maxlen=_MAX_SIDE))

    def finding(self, f: Finding) -> Row:
        """Count a finding and put it on the feed."""
        self.findings[f.code] += 1
        self.severity[f.code] = f.severity
        row = Row.of(f)
        self.feed.append(row)
        return row

    def revocation(self, r: Revocation) -> bool:
        """Count a revocation; True when it is an alarm (not a routine task completion)."""
        self.revocations += 1
        if r.reason == TASK_COMPLETED:
            self.completions += 1
            return False
        self.revoked.append(r)
        return True

    def dead_letter(self, reason: str, error: str, workflow_id: str | None) -> Row:
        """Count a dead letter and put it on the feed."""
        self.deadletters += 1
        at = self.clock or datetime.now(UTC)
        row = Row(at, DEAD, reason, workflow_id or "-", "", error)
        self.feed.append(row)
        return row


def render(board: Board, height: int) -> RenderableType:
    """The whole frame, sized to ``height`` lines so it never scrolls or jumps."""
    room = max(height - _FIXED_LINES, 8)
    feed_rows = min(_MAX_FEED, max(4, room * 3 // 5))
    side_rows = min(_MAX_SIDE, max(4, room - feed_rows))
    bottom = Table.grid(expand=True)
    bottom.add_column(ratio=1)
    bottom.add_column(width=38)
    bottom.add_row(_revocations(board, side_rows), _codes(board, side_rows))
    return Group(_header(board), _feed(board, feed_rows), bottom)


def _header(b: Board) -> Panel:
    done = b.events + b.deadletters
    pct = f"{100 * done / b.total:3.0f}%" if b.total else "100%"
    clock = f"{b.clock:%H:%M:%S}" if b.clock else "--:--:--"
    speed = f" (x{b.speedup:,.0f})" if b.speedup and b.speedup >= 1.5 else ""  # noqa: PLR2004
    top = Text.assemble(
        ("fleet clock ", "dim"), (clock, "bold"), (speed, "dim"),
        ("   elapsed ", "dim"), f"{b.elapsed:4.0f}s",
        ("   progress ", "dim"), pct, ("   events/s ", "dim"), (f"{b.rate:,.0f}", "bold"),
    )  # fmt: skip
    bottom = Text.assemble(
        ("events ", "dim"), (f"{b.events:,}", "bold"),
        ("   active workflows ", "dim"), (f"{b.active:,}", "bold"),
        ("   findings ", "dim"), (f"{sum(b.findings.values()):,}", "bold red"),
        ("   revocations ", "dim"), (f"{b.revocations:,}", "bold"),
        ("   dead letters ", "dim"), (f"{b.deadletters:,}", "magenta"),
    )  # fmt: skip
    return Panel(
        Group(top, bottom), title=Text(b.title, "bold"), title_align="left",
        border_style="blue", box=box.ROUNDED,
    )  # fmt: skip


def _table(*columns: tuple[str, dict[str, object]]) -> Table:
    table = Table(box=None, expand=True, padding=(0, 1), pad_edge=False, header_style="dim")
    for name, options in columns:
        table.add_column(name, no_wrap=True, overflow="ellipsis", **options)  # type: ignore[arg-type]
    return table


def _feed(b: Board, rows: int) -> Panel:
    table = _table(
        ("time", {"width": 8}), ("sev", {"width": 4}), ("code", {"width": 24}),
        ("workflow", {"width": 17}), ("workload", {"width": 11}), ("summary", {"ratio": 1}),
    )  # fmt: skip
    shown = list(b.feed)[-rows:]
    for row in shown:
        style = _SEVERITY_STYLE.get(row.severity, "")
        label = "DEAD" if row.severity == DEAD else _SEVERITY_LABEL.get(row.severity, "INFO")
        table.add_row(
            Text(f"{row.at:%H:%M:%S}", "dim"), Text(label, style),
            Text(row.code, "magenta" if row.severity == DEAD else "bold"),
            row.workflow, Text(row.workload, "cyan"), Text(row.summary, "dim" if row.severity == DEAD else ""),
        )  # fmt: skip
    if not shown:
        table.add_row("", "", Text("watching the fleet… no findings yet", "dim"), "", "", "")
    for _ in range(rows - max(len(shown), 1)):
        table.add_row("", "", "", "", "", "")
    return Panel(
        table, title="latest findings and dead letters", title_align="left",
        border_style="red" if b.findings else "blue",
    )  # fmt: skip


def _revocations(b: Board, rows: int) -> Panel:
    table = _table(
        ("target", {"width": _TARGET_WIDTH}), ("reason", {"ratio": 1}), ("not after", {"width": 11})
    )
    shown = list(b.revoked)[-rows:]
    for r in shown:
        table.add_row(
            Text(target_label(r.target), "bold"), Text(r.reason, _SEVERITY_STYLE.get(r.severity, "")),
            Text(clock_label(r.not_after, b.clock), "dim"),
        )  # fmt: skip
    for _ in range(rows - len(shown)):
        table.add_row("", "", "")
    note = f"+ {b.completions:,} task_completed (credentials retired with their workflow)"
    return Panel(
        table, title="latest revocations", title_align="left", border_style="blue",
        subtitle=Text(note, "dim"), subtitle_align="left",
    )  # fmt: skip


def _codes(b: Board, rows: int) -> Panel:
    table = _table(("code", {"ratio": 1}), ("count", {"width": 6, "justify": "right"}))
    ranked = sorted(b.findings.items(), key=lambda kv: (-kv[1], kv[0]))
    if len(ranked) > rows:
        rest = sum(n for _, n in ranked[rows - 1 :])
        ranked = [*ranked[: rows - 1], (f"{len(ranked) - rows + 1} more codes", rest)]
    for code, n in ranked:
        table.add_row(Text(code, _SEVERITY_STYLE.get(b.severity.get(code, ""), "dim")), f"{n:,}")
    for _ in range(rows - len(ranked)):
        table.add_row("", "")
    return Panel(table, title="findings by code", title_align="left", border_style="blue")
