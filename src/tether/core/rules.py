"""What an analyst reads about each finding code: title, meaning, what to do, and framework maps.

One table, as data, so that the finding record, the OCSF mapper, the alert sinks, the console
and the docs (docs/soc.md) all say the same thing. ``codes.RULES`` keeps the detection defaults
(severity, response, OWASP); this table adds the analyst's side and is checked against it by a
unit test: every code that can be raised has an entry here.

Framework references, and why each is the one named:

- **OWASP Top 10 for Agentic Applications** (ASIxx): kept from ``codes.RULES``.
- **MITRE ATLAS** technique ids, only where one fits the behaviour tether saw: AML.T0053 *AI Agent
  Tool Invocation* (a tool call outside what the agent was given), AML.T0086 *Exfiltration via
  AI Agent Tool Invocation* (data sent where the grant does not allow), AML.T0012 *Valid
  Accounts* (a real credential used by or for the wrong party), AML.T0055 *Unsecured
  Credentials* (a credential that travelled to a party it was not issued to), AML.T0029 *Denial
  of AI Service* (a workflow grown to exhaust the monitor). Empty where no
  technique describes the condition (a chain merely too long, an invalid token).
- **CSA MAESTRO** layer where the weakness lives: 3 *Agent Frameworks* (the agent's own tool
  use), 5 *Evaluation and Observability* (the monitor itself under attack), 6 *Security and
  Compliance* (identity, credentials, authorization), 7 *Agent Ecosystem* (handoffs between
  agents).
- **NIST AI RMF** function (Manage when tether responds by revoking, Measure when it only
  reports) and **NIST CSF 2.0** categories (DE.CM continuous monitoring, DE.AE adverse event
  analysis, PR.AA identity and access control, RS.MI incident mitigation when tether revokes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from tether.core import codes as C

ATLAS_TOOL_INVOCATION: Final = "AML.T0053"
ATLAS_TOOL_EXFILTRATION: Final = "AML.T0086"
ATLAS_VALID_ACCOUNTS: Final = "AML.T0012"
ATLAS_UNSECURED_CREDENTIALS: Final = "AML.T0055"
ATLAS_DENIAL_OF_SERVICE: Final = "AML.T0029"

MAESTRO_AGENT_FRAMEWORKS: Final = "L3 Agent Frameworks"
MAESTRO_OBSERVABILITY: Final = "L5 Evaluation and Observability"
MAESTRO_SECURITY: Final = "L6 Security and Compliance"
MAESTRO_ECOSYSTEM: Final = "L7 Agent Ecosystem"


@dataclass(frozen=True, slots=True)
class RuleDoc:
    """The analyst's view of one finding code."""

    code: str
    title: str
    description: str
    remediation: str
    atlas: tuple[str, ...]
    maestro: tuple[str, ...]
    ai_rmf: str
    csf: tuple[str, ...]


_MANAGE = "MANAGE"
_MEASURE = "MEASURE"
_REVOKE_CSF = ("DE.CM", "PR.AA", "RS.MI")
_ALERT_CSF = ("DE.CM", "DE.AE")


def _doc(
    code: str,
    title: str,
    description: str,
    remediation: str,
    atlas: tuple[str, ...],
    maestro: tuple[str, ...],
    *,
    revokes: bool = True,
) -> RuleDoc:
    return RuleDoc(
        code=code,
        title=title,
        description=description,
        remediation=remediation,
        atlas=atlas,
        maestro=maestro,
        ai_rmf=_MANAGE if revokes else _MEASURE,
        csf=_REVOKE_CSF if revokes else _ALERT_CSF,
    )


RULE_DOCS: Final[dict[str, RuleDoc]] = {
    d.code: d
    for d in (
        _doc(
            C.SCOPE_ESCALATION,
            "Credential wider than the actor's entitlement",
            "The agent presented a credential whose scopes exceed what the workflow's grant "
            "(or, for a delegatee, its delegation) entitles it to.",
            "Check which token service minted the wider token and why; reissue the agent a "
            "token limited to the grant's scopes.",
            (ATLAS_VALID_ACCOUNTS,),
            (MAESTRO_SECURITY,),
        ),
        _doc(
            C.TOOL_NOT_GRANTED,
            "Tool outside the grant",
            "The agent is about to call a tool that the workflow's grant does not list.",
            "Review the prompt and inputs that led the agent to this tool (possible injection); "
            "if the tool is legitimately needed, add it to the task type's grant.",
            (ATLAS_TOOL_INVOCATION,),
            (MAESTRO_AGENT_FRAMEWORKS,),
        ),
        _doc(
            C.SENSITIVITY_EXCEEDED,
            "Data more sensitive than the grant allows",
            "The tool call touches data classified above the grant's max_sensitivity.",
            "Confirm what data was read or written at the resource; if the task needs it, raise "
            "the task type's max_sensitivity deliberately, else investigate the agent's inputs.",
            (ATLAS_TOOL_INVOCATION,),
            (MAESTRO_AGENT_FRAMEWORKS, MAESTRO_SECURITY),
        ),
        _doc(
            C.DESTINATION_NOT_GRANTED,
            "Destination outside the grant",
            "The tool call sends data to a destination the grant does not list: a possible "
            "exfiltration path.",
            "Block the destination at the egress point, check whether data left, and look for "
            "the instruction that named the destination.",
            (ATLAS_TOOL_EXFILTRATION, ATLAS_TOOL_INVOCATION),
            (MAESTRO_AGENT_FRAMEWORKS,),
        ),
        _doc(
            C.CREDENTIAL_EXPIRED,
            "Credential used after expiry",
            "A credential was presented after its expires_at: either a replay or a resource "
            "server that does not check expiry.",
            "Find the resource server that accepted it and make it check expiry; rotate the "
            "agent's token.",
            (ATLAS_VALID_ACCOUNTS,),
            (MAESTRO_SECURITY,),
        ),
        _doc(
            C.TASK_WINDOW_EXCEEDED,
            "Activity after the grant's window",
            "The workflow is still acting after its grant's not_after.",
            "Check whether the task is stuck or looping; extend the grant only through a new "
            "workflow.",
            (),
            (MAESTRO_AGENT_FRAMEWORKS,),
        ),
        _doc(
            C.IDENTITY_MISMATCH,
            "Credential issued to another identity",
            "The acting workload presented a credential whose subject is another workload.",
            "Treat the actor as compromised: it holds another identity's token. Find how the "
            "token reached it, rotate the subject's credentials, and keep the actor quarantined.",
            (ATLAS_VALID_ACCOUNTS, ATLAS_UNSECURED_CREDENTIALS),
            (MAESTRO_SECURITY, MAESTRO_ECOSYSTEM),
        ),
        _doc(
            C.INHERITED_CREDENTIAL,
            "Delegatee presents its delegator's credential",
            "A delegated agent acts with the token of the agent that delegated to it instead of "
            "one minted for itself (token passthrough).",
            "Have the orchestrator mint the delegatee its own token (token exchange) rather than "
            "forwarding the delegator's.",
            (ATLAS_UNSECURED_CREDENTIALS,),
            (MAESTRO_ECOSYSTEM, MAESTRO_SECURITY),
        ),
        _doc(
            C.CREDENTIAL_REUSE,
            "One token presented by two workloads",
            "The same token id was presented by two different workloads: one of them holds a "
            "copy it should not have.",
            "Rotate the token's subject credentials and find where the token was copied (logs, "
            "prompts, shared memory).",
            (ATLAS_VALID_ACCOUNTS, ATLAS_UNSECURED_CREDENTIALS),
            (MAESTRO_SECURITY,),
        ),
        _doc(
            C.CREDENTIAL_SHARED,
            "One token used in two workflows",
            "The same token was used by one workload in two workflows: authority leaking across "
            "tasks.",
            "Mint one token per workflow; check whether the second workflow should have had "
            "this authority.",
            (),
            (MAESTRO_SECURITY,),
            revokes=False,
        ),
        _doc(
            C.UNDELEGATED_ACTOR,
            "Actor with no handoff",
            "A workload acts in a workflow that neither it started nor anyone delegated to it.",
            "Treat it as an intrusion into the workflow: identify the workload, and how it "
            "learned the workflow id and obtained a token.",
            (ATLAS_VALID_ACCOUNTS,),
            (MAESTRO_ECOSYSTEM,),
        ),
        _doc(
            C.DELEGATION_AMPLIFICATION,
            "Delegation wider than the delegator's entitlement",
            "An agent delegated more scopes than it holds itself: a handoff that amplifies "
            "authority.",
            "Fix the orchestrator so a delegation is always a subset of the delegator's scopes; "
            "review what the delegatee did with the extra scopes.",
            (),
            (MAESTRO_ECOSYSTEM,),
        ),
        _doc(
            C.DELEGATION_EXPIRED,
            "Delegatee acts after its delegation expired",
            "A delegated agent keeps acting after the delegation's expires_at.",
            "Make the delegatee's runtime stop at expiry; re-delegate explicitly if the work "
            "must continue.",
            (),
            (MAESTRO_ECOSYSTEM,),
        ),
        _doc(
            C.DELEGATION_DEPTH_EXCEEDED,
            "Delegation chain too long",
            "Authority was handed on more times than the configured maximum chain depth.",
            "Check for a delegation loop or runaway fan-out between agents; flatten the design "
            "or raise the limit deliberately.",
            (),
            (MAESTRO_ECOSYSTEM,),
            revokes=False,
        ),
        _doc(
            C.ACTIVITY_AFTER_COMPLETION,
            "Tool call after the workflow completed",
            "An agent acted in a workflow after workflow.completed: its authority had ended.",
            "Find why the agent kept running (a leaked token, an orphaned job) and stop it.",
            (ATLAS_VALID_ACCOUNTS,),
            (MAESTRO_AGENT_FRAMEWORKS, MAESTRO_SECURITY),
        ),
        _doc(
            C.UNKNOWN_WORKFLOW,
            "Tool call in a workflow never started",
            "Tool calls arrived for a workflow id with no workflow.started: unmonitored "
            "activity, or a start event lost upstream.",
            "Check the emitter's pipeline for a lost start event; otherwise identify the "
            "workload acting outside any grant.",
            (),
            (MAESTRO_AGENT_FRAMEWORKS,),
            revokes=False,
        ),
        _doc(
            C.POLICY_DENIED,
            "Per-call policy forbids the call",
            "A Cedar policy forbids this tool call (operation, resource or context).",
            "Read the policy ids in the summary; decide whether the call or the policy is wrong.",
            (ATLAS_TOOL_INVOCATION,),
            (MAESTRO_AGENT_FRAMEWORKS, MAESTRO_SECURITY),
        ),
        _doc(
            C.CREDENTIAL_INVALID,
            "Presented token fails verification",
            "The access token presented does not verify against any trusted issuer: forged, "
            "tampered, or from an unknown issuer.",
            "Treat the presenting workload as compromised (it is quarantined); check the "
            "issuer registry if a legitimate issuer is missing.",
            (),
            (MAESTRO_SECURITY,),
        ),
        _doc(
            C.WORKFLOW_LIMITS_EXCEEDED,
            "Workflow state past its caps",
            "The workflow's state (events, delegations, tokens) grew past tether's per-workflow "
            "caps: a runaway agent, or an attempt to exhaust the monitor.",
            "Find the agent flooding the workflow (the evidence events) and stop it; raise the "
            "caps only for a known, legitimate workload.",
            (ATLAS_DENIAL_OF_SERVICE,),
            (MAESTRO_OBSERVABILITY, MAESTRO_AGENT_FRAMEWORKS),
        ),
        _doc(
            C.GRANT_CONFLICT,
            "Conflicting workflow start",
            "A second workflow.started for the same workflow id carries a different grant or "
            "initiator: an attempt to rewrite the workflow's authority or to take it over.",
            "Check which source sent the second start; workflow ids must be unique, and starts "
            "come from the orchestrator only.",
            (),
            (MAESTRO_ECOSYSTEM, MAESTRO_SECURITY),
        ),
    )
}


def rule_doc(code: str) -> RuleDoc:
    """The entry for ``code``, or a generic one for a code this table does not know yet."""
    doc = RULE_DOCS.get(code)
    if doc is not None:
        return doc
    return RuleDoc(code, code.replace("_", " "), "", "", (), (), _MEASURE, _ALERT_CSF)
