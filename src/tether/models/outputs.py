"""Output records: findings, revocations, heartbeats, decisions and dead letters."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, Field

from tether.models.common import Record, Severity

TargetKind = Literal["token", "workflow", "workload", "delegation"]
Response = Literal[
    "alert", "revoke_token", "revoke_workflow", "quarantine_workload", "revoke_delegation"
]


class Finding(Record):
    """One detection. ``finding_id`` derives from the cause, so a duplicate is recognisable."""

    kind: Literal["finding"] = "finding"
    finding_id: str
    code: str
    severity: Severity
    workflow_id: str
    workload_id: str
    token_id: str | None = None
    summary: str
    evidence: list[str] = Field(description="event_ids that caused the finding")
    event_time: AwareDatetime
    detected_at: AwareDatetime
    response: list[Response]
    owasp: list[str]
    shadow: bool = Field(
        default=False, description="true when the response was reported but not enforced"
    )
    authenticated: bool | None = Field(
        None,
        description="with a source registry: whether the event that caused it was authenticated "
        "and authorized (absent without a registry)",
    )
    source: str | None = Field(None, description="the telemetry source that emitted the cause")
    credential_verified: bool | None = Field(
        None, description="whether the credential was verified (a JWT) or only asserted"
    )
    withheld: list[Response] | None = Field(
        None,
        description="responses not enforced because the cause's source may not cause them "
        "(docs/SECURITY.md)",
    )
    # What an analyst reads first (docs/soc.md): the rule, then where it happened.
    title: str | None = Field(None, description="the finding code's title (docs/soc.md)")
    description: str | None = Field(None, description="what the finding code means")
    remediation: str | None = Field(None, description="what to do about it")
    atlas: list[str] | None = Field(None, description="MITRE ATLAS technique ids that fit")
    event_type: str | None = Field(None, description="the causing event's type")
    tool: str | None = None
    operation: str | None = None
    resource: str | None = None
    destination: str | None = None
    credential_subject: str | None = Field(None, description="the presented credential's sub")
    credential_issuer: str | None = Field(None, description="the presented credential's iss")
    initiator: str | None = Field(None, description="the workload that started the workflow")
    delegation_chain: list[str] | None = Field(
        None,
        description="workloads from the initiator down to the actor along the delegations in "
        "force when it acted; starts with '…' when the chain was cut (a loop, or too long)",
    )
    delegation_ids: list[str] | None = Field(None, description="the delegations of that chain")
    exception: str | None = Field(
        None,
        description="the id of the tuning exception that matched: reported, but none of its "
        "response enforced (docs/tuning.md)",
    )
    tuning_revision: str | None = Field(
        None, description="the revision of the tuning that shaped it (docs/tuning.md)"
    )


class Target(Record):
    """What a revocation applies to."""

    kind: TargetKind
    id: str

    @property
    def key(self) -> str:
        """The Kafka key of the compacted revocations topic: ``<kind>:<id>``."""
        return f"{self.kind}:{self.id}"


class Revocation(Record):
    """An instruction to enforcement points: deny ``target`` until ``not_after``."""

    kind: Literal["revocation"] = "revocation"
    revocation_id: str
    target: Target
    reason: str = Field(description="a finding code, or task_completed")
    severity: Severity
    finding_id: str | None = None
    workflow_id: str
    issued_at: AwareDatetime
    not_after: AwareDatetime
    evidence: list[str]
    token_issuer: str | None = Field(
        default=None,
        description="for a token target: the iss of the revoked token, as the event that "
        "caused the revocation presented it (the jwt_id subject of its SET names it)",
    )
    by: str | None = Field(
        default=None,
        description="an operator's revocation (reason 'operator'): who revoked by hand, as "
        "`tether revoke --by` named them (docs/operators.md)",
    )
    note: str | None = Field(
        default=None, description="an operator's revocation: why, as `tether revoke --reason` said"
    )


class Reinstatement(Record):
    """An operator lifts the revocations of ``target`` issued at or before ``issued_at``.

    Signed only with an operator key (docs/operators.md): the worker never emits one. A
    revocation issued after ``issued_at`` (a later violation) is not lifted. ``not_after`` is
    how long appliers remember the lift, so a lifted revocation read again late is not applied.
    """

    kind: Literal["reinstatement"] = "reinstatement"
    reinstatement_id: str
    target: Target
    by: str = Field(description="the operator who reinstated (`tether reinstate --by`)")
    reason: str = Field(description="why (`tether reinstate --reason`, required)")
    issued_at: AwareDatetime = Field(
        description="lifts the target's revocations issued at or before this instant"
    )
    not_after: AwareDatetime = Field(description="appliers remember the lift until then")
    token_issuer: str | None = None


class Heartbeat(Record):
    """Liveness on the revocations topic, so a gateway can tell "nothing revoked" from "dead"."""

    kind: Literal["heartbeat"] = "heartbeat"
    emitted_at: AwareDatetime
    source: str = Field(description="the worker that emitted it")
    sequence: int = 0
    watermark: AwareDatetime | None = Field(
        default=None, description="the greatest event time this worker has applied"
    )
    interval_s: float = Field(default=1.0, description="seconds until the next heartbeat")
    partition: int | None = Field(
        default=None,
        description="the partition of the revocations topic it was published to (a worker "
        "beats on every partition, so a watcher can tell each partition's freshness)",
    )
    input_lag_s: float | None = Field(
        default=None,
        ge=0,
        description="how long, at most, the worker's oldest unapplied input has waited: 0 while "
        "it keeps up (an upper bound; from the last moment each input partition was caught up)",
    )
    input_lag_records: int | None = Field(
        default=None,
        ge=0,
        description="records not yet taken on the worker's most lagging input partition",
    )


DecisionValue = Literal["allow", "deny", "pending"]
DecisionReason = Literal["revoked", "awaiting_checks"]


class Decision(Record):
    """The per-call verdict, written to the audit log: what a gateway consulting tether at that
    moment does with the call (``deny`` once one of its targets is revoked), with the findings
    the call raised. Several may be written for one intent (a ``pending`` one, the final one,
    an update when a later finding names the call): a reader keeps the last per ``event_id``."""

    kind: Literal["decision"] = "decision"
    event_id: str
    workflow_id: str
    workload_id: str
    tool: str
    decision: DecisionValue = Field(
        description="deny: one of the call's targets is revoked at evaluated_at (what every "
        "gateway does); pending: not revoked, and a check waits for its grace period; allow: "
        "neither"
    )
    findings: list[str]
    policy_ids: list[str]
    policy_revision: str | None = None
    evaluated_at: AwareDatetime
    authenticated: bool | None = None
    source: str | None = None
    credential_verified: bool | None = None
    tuning_revision: str | None = Field(
        None, description="the revision of the tuning that shaped it (docs/tuning.md)"
    )
    reason: DecisionReason | None = Field(
        None, description="revoked (with deny), awaiting_checks (with pending); none with allow"
    )
    revoked_targets: list[str] = Field(
        default_factory=list,
        description="the call's targets revoked at evaluated_at, as <kind>:<id> (sorted)",
    )
    token_id: str | None = Field(None, description="the presented credential's jti")
    delegation_ids: list[str] = Field(
        default_factory=list,
        description="the delegations the caller acts under (its chain from the initiator)",
    )
    final: bool = Field(
        True, description="false while a check waits (a later decision for the event follows)"
    )


class Source(Record):
    """Where a dead-lettered record came from: a Kafka position or a file line."""

    topic: str
    partition: int | None = None
    offset: int | None = None
    line: int | None = None


DeadLetterReason = Literal[
    "empty_record",
    "oversized",
    "invalid_utf8",
    "invalid_json",
    "not_an_object",
    "unsupported_schema_version",
    "unknown_event_type",
    "schema_violation",
    "clock_skew",
    "output_rejected",
    "unauthenticated_source",
    "unauthorized_assertion",
    "internal_error",
    "otlp_undecodable",  # tether ingest otlp: not an OTLP traces record, or spans with bad ids
    "otlp_unmappable",  # tether ingest otlp: a span maps to an event the contract refuses
]


class DeadLetter(Record):
    """A record that could not be processed, kept with its reason: nothing is silently lost."""

    kind: Literal["deadletter"] = "deadletter"
    reason: DeadLetterReason
    error: str
    source: Source
    received_at: AwareDatetime
    payload: str = Field(description="the record as received (base64 when not valid UTF-8)")
    payload_encoding: Literal["utf-8", "base64"] = "utf-8"
    workflow_id: str | None = Field(
        default=None, description="the workflow, when it could still be read from the record"
    )
    event_id: str | None = None


OutputRecord = Finding | Revocation | Decision | DeadLetter | Heartbeat
