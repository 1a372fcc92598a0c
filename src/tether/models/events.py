"""Input events (schema_version 1): what agents and token services emit to ``tether.intents``."""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import Field, TypeAdapter
from pydantic.json_schema import SkipJsonSchema

from tether.models.common import (
    MAX_LIST,
    Autonomy,
    Contract,
    EventId,
    Identity,
    Name,
    NameList,
    Operation,
    OptionalName,
    Outcome,
    SchemaVersion,
    Sensitivity,
    Text,
    Timestamp,
    TokenId,
    WorkflowId,
    derived,
)


class Agent(Contract):
    """The acting workload."""

    workload_id: Identity
    instance_id: OptionalName | None = None


class Credential(Contract):
    """The credential presented with an event; ``token_id`` is the token's ``jti``."""

    token_id: TokenId
    issuer: Identity
    subject: Identity
    scopes: NameList
    issued_at: Timestamp
    expires_at: Timestamp
    audience: Identity | Annotated[list[Identity], Field(max_length=MAX_LIST)] | None = None

    @derived
    def expires_t(self) -> float:
        """``expires_at`` as POSIX seconds (computed once: the hot path compares it often)."""
        return self.expires_at.timestamp()


class Grant(Contract):
    """The baseline permission set of a task. Empty ``tools``/``destinations`` mean unrestricted."""

    task_type: Name
    purpose: Text
    scopes: NameList
    tools: NameList
    max_sensitivity: Sensitivity
    destinations: NameList
    not_after: Timestamp
    autonomy: Autonomy


class Action(Contract):
    """What a tool call intends to do."""

    tool: Name
    operation: Operation
    resource: Text
    destination: OptionalName
    data_sensitivity: Sensitivity


class Delegation(Contract):
    """Authority handed from the event's agent (the delegator) to another workload."""

    delegation_id: Name
    to_workload_id: Identity
    scopes: NameList
    expires_at: Timestamp


MAX_PROOF: Final = 4096  # a compact JWS: header, empty payload, signature
MAX_PRESENTED_TOKEN: Final = 16 * 1024  # an access token (JWT)


class Trust(Contract):
    """How far tether believes one event: set by the source gate after decoding, never read
    from an emitter (the decoder drops whatever an input record says here).

    It travels with the event (a check that waits for a delegation keeps the event in the
    session's state) so that what the event causes later is still scoped and labelled.
    """

    source: str | None = None
    authenticated: bool = False
    credential_verified: bool = False
    withhold: list[str] = Field(
        default_factory=list, description="responses this event's source may not cause"
    )

    @derived
    def token_trusted(self) -> bool:
        """Whether the credential may be revoked on this event's word (verified, or reported by
        a source trusted to check credentials)."""
        return "revoke_token" not in self.withhold


class _Event(Contract):
    schema_version: SchemaVersion
    event_id: EventId
    occurred_at: Timestamp
    workflow_id: WorkflowId
    agent: Agent
    proof: Annotated[str, Field(max_length=MAX_PROOF)] | None = Field(
        None,
        description="a JWS by the emitting telemetry source over the record's bytes without this "
        "member, which must be the record's last (docs/SECURITY.md)",
    )
    presented_token: Annotated[str, Field(max_length=MAX_PRESENTED_TOKEN)] | None = Field(
        None,
        description="the access token presented (a JWT): when it verifies against a trusted "
        "issuer, the credential is taken from it",
    )
    trust: SkipJsonSchema[Trust | None] = None

    @derived
    def t(self) -> float:
        """``occurred_at`` as POSIX seconds (computed once)."""
        return self.occurred_at.timestamp()


class WorkflowStarted(_Event):
    """A workflow begins under its baseline grant; the starting agent is the initiator."""

    event_type: Literal["workflow.started"]
    credential: Credential
    grant: Grant


class ToolCallIntent(_Event):
    """An agent is about to call a tool."""

    event_type: Literal["tool_call.intent"]
    credential: Credential
    action: Action
    delegation_id: OptionalName | None = None


class DelegationGranted(_Event):
    """The agent hands (part of) its authority in this workflow to another workload."""

    event_type: Literal["delegation.granted"]
    credential: Credential
    delegation: Delegation


class WorkflowCompleted(_Event):
    """The workflow ended; its authority ends with it."""

    event_type: Literal["workflow.completed"]
    credential: Credential | None = None
    outcome: Outcome


InputEvent = Annotated[
    WorkflowStarted | ToolCallIntent | DelegationGranted | WorkflowCompleted,
    Field(discriminator="event_type"),
]
EVENT_TYPES: tuple[str, ...] = (
    "workflow.started",
    "tool_call.intent",
    "delegation.granted",
    "workflow.completed",
)
EVENT_MODELS: dict[str, type[_Event]] = {
    "workflow.started": WorkflowStarted,
    "tool_call.intent": ToolCallIntent,
    "delegation.granted": DelegationGranted,
    "workflow.completed": WorkflowCompleted,
}
input_event_adapter: TypeAdapter[InputEvent] = TypeAdapter(InputEvent)
