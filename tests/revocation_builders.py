"""Builders for revocation-feed tests: a fake clock, revocations and heartbeats."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tether.models.outputs import Heartbeat, Revocation, Target, TargetKind

T0 = datetime(2026, 11, 28, 14, 0, tzinfo=UTC)


class FakeClock:
    """Epoch seconds that only move when told to."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start.timestamp()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def revocation(
    kind: TargetKind = "token",
    ident: str = "jti-1",
    *,
    lasts: float = 600.0,
    rid: str = "rv-1",
    start: datetime = T0,
) -> Revocation:
    """A revocation of ``kind:ident`` issued at ``start``, in force for ``lasts`` seconds."""
    return Revocation(
        revocation_id=rid,
        target=Target(kind=kind, id=ident),
        reason="scope_escalation",
        severity="high",
        workflow_id="wf-42",
        issued_at=start,
        not_after=start + timedelta(seconds=lasts),
        evidence=["e1"],
    )


def heartbeat(at: datetime = T0, source: str = "w1") -> Heartbeat:
    """A heartbeat emitted at ``at``."""
    return Heartbeat(emitted_at=at, source=source)
