"""What the demo shows: running counts, the latest findings and revocations, as plain lines too."""

from __future__ import annotations

import re
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

from tether.models.outputs import Finding, Revocation, Target

#: Revocation reason for credentials retired with their workflow (routine, not an alarm).
TASK_COMPLETED = "task_completed"
DEAD = "dead"

_SPIFFE = re.compile(r"spiffe://[^\s,;]*/([^/\s,;]+)")
TARGET_WIDTH = 26
MAX_FEED = 40  # findings and dead letters kept for the feed
MAX_REVOKED = 10  # revocations kept for their panel


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
    return shorten(f"{target.kind}:{ident}", TARGET_WIDTH)


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
            f.detected_at,
            f.severity,
            f.code,
            f.workflow_id,
            workload_name(f.workload_id),
            tidy(f.summary),
        )

    def plain(self) -> str:
        """The row as one plain line."""
        kind = "deadletter" if self.severity == DEAD else "finding"
        return (
            f"{self.at:%H:%M:%S}  {kind:<10}  {self.severity.upper():<8}  {self.code:<26}"
            f"  {self.workflow:<18}  {self.workload or '-':<12}  {self.summary}"
        )


def revocation_line(r: Revocation) -> str:
    """A revocation as one plain line."""
    return (
        f"{r.issued_at:%H:%M:%S}  {'revocation':<10}  {r.severity.upper():<8}  "
        f"{target_label(r.target):<26}  {r.reason:<26}  until {r.not_after:%Y-%m-%d %H:%M:%S}"
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
    running: int = 0
    revocations: int = 0
    completions: int = 0
    rate: float = 0.0
    elapsed: float = 0.0
    clock: datetime | None = None
    findings: Counter[str] = field(default_factory=Counter)
    severity: dict[str, str] = field(default_factory=dict)
    feed: deque[Row] = field(default_factory=lambda: deque(maxlen=MAX_FEED))
    revoked: deque[Revocation] = field(default_factory=lambda: deque(maxlen=MAX_REVOKED))

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
