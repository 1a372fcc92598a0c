"""Coverage records: what the checks could not see, counted per reason, per workflow and source.

A span that lacks what a check needs is never silently treated as compliant. The checks it
supports run; for the others, a ``coverage`` record says how many tool calls went without
(e.g. "12 tool calls, 0 with a credential: credential and identity checks not applied"). The
adapter publishes one per workflow each time it maps part of a trace, on ``tether.coverage``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import ClassVar, Final, Literal

from pydantic import AwareDatetime

from tether.models.common import Record


class Reason(StrEnum):
    """Why a check was not applied (or applied to a stand-in value), as counted in coverage."""

    NO_CREDENTIAL = "no_credential"
    CREDENTIAL_WITHOUT_SUBJECT = "credential_without_subject"
    CREDENTIAL_WITHOUT_SCOPES = "credential_without_scopes"
    CREDENTIAL_WITHOUT_EXPIRY = "credential_without_expiry"
    NO_GRANT = "no_grant"
    GRANT_FROM_MAPPING = "grant_from_mapping"
    NO_SENSITIVITY = "no_sensitivity"
    NO_AGENT = "no_agent"
    ANCESTRY_INCOMPLETE = "ancestry_incomplete"
    DELEGATION_SCOPES_INFERRED = "delegation_scopes_inferred"
    INVALID_ATTRIBUTE = "invalid_attribute"
    EVICTED = "evicted"


CHECKS_NOT_APPLIED: Final[dict[str, str]] = {
    Reason.NO_CREDENTIAL: "credential and identity checks not applied (scope_escalation, "
    "credential_expired, identity_mismatch, inherited_credential, credential_reuse)",
    Reason.CREDENTIAL_WITHOUT_SUBJECT: "identity_mismatch and inherited_credential not applied",
    Reason.CREDENTIAL_WITHOUT_SCOPES: "scope_escalation not applied",
    Reason.CREDENTIAL_WITHOUT_EXPIRY: "credential_expired not applied",
    Reason.NO_GRANT: "no workflow.started: grant, delegation and policy checks not applied "
    "(unknown_workflow is reported instead)",
    Reason.GRANT_FROM_MAPPING: "the grant is the mapping file's, not the workflow's own",
    Reason.NO_SENSITIVITY: "sensitivity_exceeded judged on the mapping's default sensitivity",
    Reason.NO_AGENT: "the tool call names no agent: not checked at all",
    Reason.ANCESTRY_INCOMPLETE: "the agent came from a fallback: the parent chain had a gap",
    Reason.DELEGATION_SCOPES_INFERRED: "delegated scopes not stated: taken from the "
    "delegatee's credential (delegation_amplification compares those)",
    Reason.INVALID_ATTRIBUTE: "a tether.* attribute had the wrong type or value and was ignored",
    Reason.EVICTED: "the trace was flushed early (adapter bounds): ancestry may be incomplete",
}


class CoverageRecord(Record):
    """On ``tether.coverage``, key ``workflow_id``: one per workflow per mapped part of a trace
    (sum them per workflow for totals)."""

    kind: Literal["coverage"] = "coverage"
    source: str
    workflow_id: str
    trace_ids: list[str]
    spans: int
    tool_calls: int
    tool_calls_with_credential: int
    merged_tool_spans: int
    agents: int
    delegations: int
    workflow_started: bool
    workflow_completed: bool
    rejected: int
    not_applied: dict[str, int]
    summary: str
    emitted_at: AwareDatetime


@dataclass(slots=True)
class Coverage:
    """Counters gathered while mapping (mutable); :meth:`finish` makes the record."""

    MAX_TRACES: ClassVar[int] = 16

    source: str
    workflow_id: str
    trace_ids: list[str] = field(default_factory=list)
    spans: int = 0
    tool_calls: int = 0
    tool_calls_with_credential: int = 0
    merged_tool_spans: int = 0
    agents: int = 0
    delegations: int = 0
    workflow_started: bool = False
    workflow_completed: bool = False
    rejected: int = 0
    not_applied: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        """One sentence, e.g. "12 tool calls, 0 with a credential: credential and identity ..."."""
        head = f"{self.tool_calls} tool calls, {self.tool_calls_with_credential} with a credential"
        gaps = [
            f"{CHECKS_NOT_APPLIED.get(reason, reason)} ({count}x {reason})"
            for reason, count in sorted(self.not_applied.items())
        ]
        return head + (": " + "; ".join(gaps) if gaps else ": every check applied")

    def finish(self, now: float) -> CoverageRecord:
        """The record, stamped ``now`` (POSIX seconds, the caller's clock)."""
        return CoverageRecord(
            source=self.source,
            workflow_id=self.workflow_id,
            trace_ids=list(self.trace_ids),
            spans=self.spans,
            tool_calls=self.tool_calls,
            tool_calls_with_credential=self.tool_calls_with_credential,
            merged_tool_spans=self.merged_tool_spans,
            agents=self.agents,
            delegations=self.delegations,
            workflow_started=self.workflow_started,
            workflow_completed=self.workflow_completed,
            rejected=self.rejected,
            not_applied={str(k): v for k, v in sorted(self.not_applied.items())},
            summary=self.summary(),
            emitted_at=datetime.fromtimestamp(now, UTC),
        )
