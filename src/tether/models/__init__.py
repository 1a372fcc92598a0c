"""Pydantic v2 contracts: input events, output records, and the codec between them and bytes."""

from tether.models.events import (
    EVENT_TYPES,
    Action,
    Agent,
    Credential,
    Delegation,
    DelegationGranted,
    Grant,
    InputEvent,
    ToolCallIntent,
    WorkflowCompleted,
    WorkflowStarted,
    input_event_adapter,
)
from tether.models.outputs import (
    DeadLetter,
    Decision,
    Finding,
    Heartbeat,
    OutputRecord,
    Revocation,
    Source,
    Target,
)

__all__ = [
    "EVENT_TYPES",
    "Action",
    "Agent",
    "Credential",
    "DeadLetter",
    "Decision",
    "Delegation",
    "DelegationGranted",
    "Finding",
    "Grant",
    "Heartbeat",
    "InputEvent",
    "OutputRecord",
    "Revocation",
    "Source",
    "Target",
    "ToolCallIntent",
    "WorkflowCompleted",
    "WorkflowStarted",
    "input_event_adapter",
]
