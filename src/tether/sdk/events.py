"""Outgoing input events for the SDK: validated builders and time-ordered event ids."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

import orjson
from pydantic import BaseModel

from tether.models.codec import Rejected, decode_event
from tether.models.common import Outcome
from tether.models.events import (
    Agent,
    DelegationGranted,
    ToolCallIntent,
    WorkflowCompleted,
    WorkflowStarted,
)

_CROCKFORD: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_E = TypeVar("_E", bound=BaseModel)
Event = WorkflowStarted | ToolCallIntent | DelegationGranted | WorkflowCompleted
Part = BaseModel | Mapping[str, Any]
"""A nested part of an event: its model, or a mapping of its fields (timestamps may be strings)."""


class InvalidEventError(ValueError):
    """An outgoing event does not satisfy the contract (nothing was sent)."""


def new_event_id() -> str:
    """A 26-character ULID: 48-bit millisecond timestamp + 80 random bits, Crockford base32.

    Sorts by creation time, which makes streams and logs easy to scan.
    """
    value = (time.time_ns() // 1_000_000) << 80 | secrets.randbits(80)
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def new_workflow_started(
    *,
    workflow_id: str,
    agent: Agent | str,
    credential: Part,
    grant: Part,
    event_id: str | None = None,
    occurred_at: datetime | None = None,
) -> WorkflowStarted:
    """A validated ``workflow.started`` event (``agent`` may be just the workload id)."""
    fields = {"credential": credential, "grant": grant}
    return _build(
        WorkflowStarted, "workflow.started", workflow_id, agent, event_id, occurred_at, fields
    )


def new_tool_call_intent(
    *,
    workflow_id: str,
    agent: Agent | str,
    credential: Part,
    action: Part,
    delegation_id: str | None = None,
    event_id: str | None = None,
    occurred_at: datetime | None = None,
) -> ToolCallIntent:
    """A validated ``tool_call.intent`` event."""
    fields = {"credential": credential, "action": action, "delegation_id": delegation_id}
    return _build(
        ToolCallIntent, "tool_call.intent", workflow_id, agent, event_id, occurred_at, fields
    )


def new_delegation_granted(
    *,
    workflow_id: str,
    agent: Agent | str,
    credential: Part,
    delegation: Part,
    event_id: str | None = None,
    occurred_at: datetime | None = None,
) -> DelegationGranted:
    """A validated ``delegation.granted`` event (``agent`` is the delegator)."""
    fields = {"credential": credential, "delegation": delegation}
    return _build(
        DelegationGranted, "delegation.granted", workflow_id, agent, event_id, occurred_at, fields
    )


def new_workflow_completed(
    *,
    workflow_id: str,
    agent: Agent | str,
    outcome: Outcome,
    credential: Part | None = None,
    event_id: str | None = None,
    occurred_at: datetime | None = None,
) -> WorkflowCompleted:
    """A validated ``workflow.completed`` event."""
    fields = {"outcome": outcome, "credential": credential}
    return _build(
        WorkflowCompleted, "workflow.completed", workflow_id, agent, event_id, occurred_at, fields
    )


def _build(
    model: type[_E],
    event_type: str,
    workflow_id: str,
    agent: Agent | str,
    event_id: str | None,
    occurred_at: datetime | None,
    fields: Mapping[str, object],
) -> _E:
    raw: dict[str, object] = {
        "schema_version": 1,
        "event_type": event_type,
        "event_id": event_id or new_event_id(),
        "occurred_at": _iso(occurred_at or datetime.now(UTC)),
        "workflow_id": workflow_id,
        "agent": {"workload_id": agent} if isinstance(agent, str) else agent,
    }
    raw.update({name: value for name, value in fields.items() if value is not None})
    event = _validated(raw, f"invalid {event_type} event")
    if not isinstance(event, model):  # pragma: no cover  # event_type above picks the model
        raise InvalidEventError(f"invalid {event_type} event: read as {event.event_type}")
    return event


def _iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise InvalidEventError("occurred_at must carry a UTC offset (a timezone-aware datetime)")
    return moment.isoformat()


def _default(value: object) -> object:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_none=True)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot serialize {type(value).__name__}")


def _dumps(obj: object) -> bytes:
    """JSON for ``obj``: orjson, or Python's json for what orjson refuses (integers beyond 64
    bits, lone surrogates, nesting past 254) so that an unknown field holding one is ignored
    here as the pipeline ignores it."""
    try:
        return orjson.dumps(obj, default=_default)
    except orjson.JSONEncodeError:
        pass
    try:
        return json.dumps(obj, default=_default, allow_nan=True).encode()
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidEventError(f"cannot serialize the event as JSON: {exc}") from exc


def _validated(raw: object, what: str) -> Event:
    """``raw`` read exactly as the pipeline reads a record (``codec.decode_event``)."""
    decoded = decode_event(_dumps(raw))
    if isinstance(decoded, Rejected):
        raise InvalidEventError(f"{what}: {decoded.error}")
    return decoded


def validate_event(event: Event | Mapping[str, Any]) -> Event:
    """A typed event as is, or a mapping in the contract's JSON shape validated into one.

    Raises:
        InvalidEventError: the mapping breaks the contract.
    """
    if isinstance(event, BaseModel):
        return event
    return _validated(event, "invalid event")
