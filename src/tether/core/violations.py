"""Violations (what a check found) and the graded response that turns them into records."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from tether.core.codes import TASK_COMPLETED
from tether.core.config import DetectionConfig
from tether.core.context import FindingContext
from tether.core.ids import derive_id
from tether.core.rules import rule_doc
from tether.models.common import SEVERITY_RANK, Severity
from tether.models.events import InputEvent, Trust
from tether.models.outputs import Decision, Finding, Response, Revocation, Target, TargetKind


@dataclass(slots=True)
class Violation:
    """One broken rule, with the facts its response needs. ``key`` names the cause."""

    code: str
    key: tuple[str, ...]
    workflow_id: str
    workload_id: str
    event_time: float
    evidence: tuple[str, ...]
    summary: str
    token_id: str | None = None
    token_expires: float | None = None
    token_issuer: str | None = None  # the credential's iss, when the violating event carried it
    delegation_id: str | None = None
    delegation_expires: float | None = None
    workflow_not_after: float | None = None
    severity: Severity | None = None
    policy_ids: tuple[str, ...] = ()
    trust: Trust | None = None  # the causing event's source and what it may not cause
    context: FindingContext | None = None  # where it happened (tool, credential, chain)

    @property
    def finding_id(self) -> str:
        """Derived from the code and the cause key only: stable across replays and duplicates."""
        return derive_id("f-", self.code, *self.key)


@dataclass(frozen=True, slots=True)
class Failure:
    """An event (or a workflow's due checks) whose processing raised: the drivers dead-letter
    it with reason ``internal_error`` and go on with every other event."""

    workflow_id: str
    error: str
    event: InputEvent | None = None  # None: a workflow's due checks, not one event

    @classmethod
    def of(cls, workflow_id: str, exc: BaseException, event: InputEvent | None = None) -> Failure:
        """From the exception raised."""
        return cls(workflow_id, f"internal error: {exc!r}"[:2000], event)


@dataclass(slots=True)
class Outbox:
    """Collects what one step produced, in production order."""

    findings: list[Finding] = field(default_factory=list)
    revocations: list[Revocation] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    def extend(self, other: Outbox) -> None:
        """Append everything ``other`` holds."""
        self.findings.extend(other.findings)
        self.revocations.extend(other.revocations)
        self.decisions.extend(other.decisions)
        self.failures.extend(other.failures)

    def __len__(self) -> int:
        return len(self.findings) + len(self.revocations) + len(self.decisions) + len(self.failures)


MIN_T: Final = datetime.min.replace(tzinfo=UTC).timestamp()
"""The earliest instant a record can carry (0001-01-01T00:00:00Z), in POSIX seconds."""
MAX_T: Final = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()
"""The latest whole second a record can carry (9999-12-31T23:59:59Z), in POSIX seconds."""


def ts(t: float) -> datetime:
    """POSIX seconds to an aware UTC datetime, saturated to the range a datetime can hold.

    Every time the core derives (an expiry plus the revocation margin, an event time plus a
    24 h quarantine, a watermark before the first event) goes through here, and a valid input
    may sit at either end of the range (``expires_at`` 9999-12-31T23:59:59Z, ``occurred_at``
    0001-01-01T00:30:00+01:00): a derived time beyond the end is the end (a revocation "until
    the end of time" is what such an expiry asks for), never an error.
    """
    if MIN_T <= t <= MAX_T:
        return datetime.fromtimestamp(t, UTC)
    return _MAX_DT if t > MAX_T else _MIN_DT  # NaN cannot come from a datetime


_MIN_DT: Final = datetime.min.replace(tzinfo=UTC)
_MAX_DT: Final = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)

Stamp = datetime | float
"""When a record is stamped: a datetime, or POSIX seconds converted only if a record is made."""


def as_datetime(now: Stamp) -> datetime:
    """The stamp as an aware datetime."""
    return now if isinstance(now, datetime) else ts(now)


def emit(v: Violation, cfg: DetectionConfig, stamp: Stamp, out: Outbox) -> None:
    """Materialise a violation as a Finding plus the revocations its graded response calls for."""
    now = as_datetime(stamp)
    rule = cfg.rule(v.code)
    severity = v.severity or rule.severity
    finding_id = v.finding_id
    trust = v.trust
    withheld = [a for a in rule.response if a in trust.withhold] if trust is not None else None
    doc = rule_doc(v.code)
    c = v.context or _NO_CONTEXT
    shadow = cfg.shadowed(v.code)
    # an exception is judged at the later of event and detection time: a backdated event
    # cannot bring an expired exception back
    excepted = cfg.exception_for(
        v.code,
        v.workload_id,
        c.tool,
        v.workflow_id,
        max(v.event_time, now.timestamp()),
        authenticated=trust.authenticated if trust is not None else None,
    )
    # Built whole before anything is appended: a finding never leaves without its revocations.
    finding = Finding(
        finding_id=finding_id,
        code=v.code,
        severity=severity,
        workflow_id=v.workflow_id,
        workload_id=v.workload_id,
        token_id=v.token_id,
        summary=v.summary,
        evidence=list(v.evidence),
        event_time=ts(v.event_time),
        detected_at=now,
        response=list(rule.response),
        owasp=list(rule.owasp),
        shadow=shadow,
        authenticated=trust.authenticated if trust is not None else None,
        source=trust.source if trust is not None else None,
        credential_verified=trust.credential_verified if trust is not None else None,
        withheld=withheld or None,
        # what an analyst reads first: the rule's words, then where it happened
        title=doc.title,
        description=doc.description or None,
        remediation=doc.remediation or None,
        atlas=list(doc.atlas) or None,
        event_type=c.event_type,
        tool=c.tool,
        operation=c.operation,
        resource=c.resource,
        destination=c.destination,
        credential_subject=c.credential_subject,
        credential_issuer=c.credential_issuer,
        initiator=c.initiator,
        delegation_chain=list(c.delegation_chain) or None,
        delegation_ids=list(c.delegation_ids) or None,
        exception=excepted.id if excepted is not None else None,
        tuning_revision=cfg.tuning_revision,
    )
    revocations: list[Revocation] = []
    actions: tuple[Response, ...] = () if shadow or excepted is not None else rule.response
    if withheld and actions:
        actions = tuple(a for a in actions if a not in withheld)
        if (
            "revoke_workflow" in withheld
            and severity == "critical"
            and "quarantine_workload" not in actions
        ):
            # the workflow is not the actor's to lose: the response falls on the actor, whom
            # its source speaks for (an intrusion into someone else's workflow)
            actions = (*actions, "quarantine_workload")
    for action in actions:
        target = _target(action, v, cfg)
        if target is None:
            continue
        kind, target_id, not_after = target
        revocations.append(
            Revocation(
                revocation_id=derive_id("r-", finding_id, kind, target_id),
                target=Target(kind=kind, id=target_id),
                reason=v.code,
                severity=severity,
                finding_id=finding_id,
                workflow_id=v.workflow_id,
                issued_at=now,
                not_after=ts(not_after),
                evidence=list(v.evidence),
                token_issuer=v.token_issuer if kind == "token" else None,
            )
        )
    out.findings.append(finding)
    out.revocations.extend(revocations)


_NO_CONTEXT = FindingContext()


_TargetSpec = tuple[TargetKind, str, float]


def _target(action: Response, v: Violation, cfg: DetectionConfig) -> _TargetSpec | None:  # noqa: PLR0911  # one return per response kind reads best
    margin = cfg.revocation_margin_s
    t = v.event_time
    if action == "revoke_token":
        if v.token_id is None:
            return None
        return ("token", v.token_id, max(v.token_expires or t, t) + margin)
    if action == "revoke_workflow":
        if v.workflow_not_after is None:
            return ("workflow", v.workflow_id, t + cfg.workflow_revocation_s)
        return ("workflow", v.workflow_id, max(v.workflow_not_after, t) + margin)
    if action == "quarantine_workload":
        return ("workload", v.workload_id, t + cfg.quarantine_s)
    if action == "revoke_delegation":
        if v.delegation_id is None:
            return None
        return ("delegation", v.delegation_id, max(v.delegation_expires or t, t) + margin)
    return None


def completion_revocation(
    workflow_id: str,
    token_id: str,
    token_expires: float,
    completed_at: float,
    evidence: str,
    cfg: DetectionConfig,
    stamp: Stamp,
    *,
    token_issuer: str | None = None,
) -> Revocation:
    """``workflow.completed`` revokes a credential used in the workflow (reason task_completed)."""
    now = as_datetime(stamp)
    return Revocation(
        revocation_id=derive_id("r-", TASK_COMPLETED, workflow_id, token_id),
        target=Target(kind="token", id=token_id),
        reason=TASK_COMPLETED,
        severity="info",
        workflow_id=workflow_id,
        issued_at=now,
        not_after=ts(max(token_expires, completed_at) + cfg.revocation_margin_s),
        evidence=[evidence],
        token_issuer=token_issuer,
    )


def worst(severities: list[Severity]) -> Severity:
    """The highest of the given severities."""
    return max(severities, key=SEVERITY_RANK.__getitem__)
