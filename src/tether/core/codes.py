"""The detection catalogue: every finding code with its default severity, response and OWASP map."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from tether.models.common import Severity
from tether.models.outputs import Response


@dataclass(frozen=True, slots=True)
class Rule:
    """A detection's stable identity and defaults (all tunable through ``DetectionConfig``)."""

    code: str
    severity: Severity
    response: tuple[Response, ...]
    owasp: tuple[str, ...]
    title: str


SCOPE_ESCALATION: Final = "scope_escalation"
TOOL_NOT_GRANTED: Final = "tool_not_granted"
SENSITIVITY_EXCEEDED: Final = "sensitivity_exceeded"
DESTINATION_NOT_GRANTED: Final = "destination_not_granted"
CREDENTIAL_EXPIRED: Final = "credential_expired"
TASK_WINDOW_EXCEEDED: Final = "task_window_exceeded"
IDENTITY_MISMATCH: Final = "identity_mismatch"
INHERITED_CREDENTIAL: Final = "inherited_credential"
CREDENTIAL_REUSE: Final = "credential_reuse"
CREDENTIAL_SHARED: Final = "credential_shared_across_workflows"
UNDELEGATED_ACTOR: Final = "undelegated_actor"
DELEGATION_AMPLIFICATION: Final = "delegation_amplification"
DELEGATION_EXPIRED: Final = "delegation_expired"
DELEGATION_DEPTH_EXCEEDED: Final = "delegation_depth_exceeded"
ACTIVITY_AFTER_COMPLETION: Final = "activity_after_completion"
UNKNOWN_WORKFLOW: Final = "unknown_workflow"
POLICY_DENIED: Final = "policy_denied"
CREDENTIAL_INVALID: Final = "credential_invalid"
WORKFLOW_LIMITS_EXCEEDED: Final = "workflow_limits_exceeded"
GRANT_CONFLICT: Final = "grant_conflict"
TASK_COMPLETED: Final = "task_completed"  # a revocation reason, not a finding

# OWASP Top 10 for Agentic Applications: ASI02 tool misuse, ASI03 identity and privilege abuse,
# ASI07 insecure inter-agent communication, ASI08 cascading failures, ASI10 rogue agents.
RULES: Final[dict[str, Rule]] = {
    r.code: r
    for r in (
        Rule(
            SCOPE_ESCALATION,
            "high",
            ("revoke_token",),
            ("ASI03",),
            "credential wider than the actor's entitlement",
        ),
        Rule(TOOL_NOT_GRANTED, "medium", ("revoke_token",), ("ASI02",), "tool outside the grant"),
        Rule(
            SENSITIVITY_EXCEEDED,
            "high",
            ("revoke_token",),
            ("ASI02", "ASI03"),
            "data more sensitive than the grant allows",
        ),
        Rule(
            DESTINATION_NOT_GRANTED,
            "high",
            ("revoke_token",),
            ("ASI02",),
            "destination outside the grant",
        ),
        Rule(
            CREDENTIAL_EXPIRED,
            "high",
            ("revoke_token",),
            ("ASI03",),
            "credential used after expiry",
        ),
        Rule(
            TASK_WINDOW_EXCEEDED,
            "medium",
            ("revoke_workflow",),
            ("ASI03",),
            "activity after the grant's not_after",
        ),
        Rule(
            IDENTITY_MISMATCH,
            "critical",
            ("revoke_token", "quarantine_workload"),
            ("ASI03", "ASI10"),
            "credential issued to another identity",
        ),
        Rule(
            INHERITED_CREDENTIAL,
            "high",
            ("revoke_token",),
            ("ASI03", "ASI07"),
            "delegatee presents its delegator's credential",
        ),
        Rule(
            CREDENTIAL_REUSE,
            "critical",
            ("revoke_token",),
            ("ASI03",),
            "one token presented by two workloads",
        ),
        Rule(
            CREDENTIAL_SHARED, "medium", ("alert",), ("ASI03",), "one token used in two workflows"
        ),
        Rule(
            UNDELEGATED_ACTOR,
            "critical",
            ("revoke_token", "revoke_workflow"),
            ("ASI03", "ASI07", "ASI10"),
            "actor with no handoff",
        ),
        Rule(
            DELEGATION_AMPLIFICATION,
            "critical",
            ("revoke_delegation", "revoke_workflow"),
            ("ASI03", "ASI07"),
            "delegation wider than the delegator's entitlement",
        ),
        Rule(
            DELEGATION_EXPIRED,
            "high",
            ("revoke_token",),
            ("ASI03", "ASI07"),
            "delegatee acts after its delegation expired",
        ),
        Rule(
            DELEGATION_DEPTH_EXCEEDED,
            "medium",
            ("alert",),
            ("ASI07", "ASI08"),
            "delegation chain too long",
        ),
        Rule(
            ACTIVITY_AFTER_COMPLETION,
            "high",
            ("revoke_token",),
            ("ASI03", "ASI10"),
            "tool call after the workflow completed",
        ),
        Rule(
            UNKNOWN_WORKFLOW,
            "medium",
            ("alert",),
            ("ASI10",),
            "tool call in a workflow never started",
        ),
        Rule(
            POLICY_DENIED, "high", ("revoke_token",), ("ASI02",), "per-call policy forbids the call"
        ),
        Rule(  # no token revocation: an invalid token's id is only the presenter's word
            CREDENTIAL_INVALID,
            "critical",
            ("quarantine_workload",),
            ("ASI03", "ASI10"),
            "presented token fails verification",
        ),
        Rule(
            WORKFLOW_LIMITS_EXCEEDED,
            "high",
            ("revoke_workflow",),
            ("ASI08", "ASI10"),
            "workflow state past its caps (resource exhaustion)",
        ),
        Rule(
            GRANT_CONFLICT,
            "high",
            ("revoke_workflow",),
            ("ASI03", "ASI10"),
            "a second workflow.started with a different grant or initiator",
        ),
    )
}
