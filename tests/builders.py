"""Event builders for tests: compact, readable scenarios in the contract (docs/contract.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

import orjson

from tether.models import InputEvent, input_event_adapter

T0 = datetime(2026, 11, 28, 14, 0, 0, tzinfo=UTC)
ORG = "spiffe://acme.example/agent/"
_ids = count(1)


def at(seconds: float) -> str:
    """T0 + seconds as RFC 3339."""
    return (T0 + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def wl(name: str) -> str:
    """A SPIFFE workload id."""
    return ORG + name


def cred(
    holder: str,
    token: str,
    scopes: list[str],
    *,
    issued: float = -60,
    expires: float = 600,
) -> dict[str, Any]:
    """A credential issued to ``holder`` (a short workload name)."""
    return {
        "token_id": token,
        "issuer": "https://sts.acme.example",
        "subject": wl(holder),
        "scopes": scopes,
        "issued_at": at(issued),
        "expires_at": at(expires),
    }


def started(
    wf: str,
    agent: str,
    token: str,
    *,
    t: float = 0,
    scopes: list[str] | None = None,
    tools: list[str] | None = None,
    destinations: list[str] | None = None,
    max_sensitivity: str = "confidential",
    not_after: float = 3600,
    cred_scopes: list[str] | None = None,
    eid: str | None = None,
) -> dict[str, Any]:
    """A workflow.started event."""
    scopes = ["crm:read", "crm:write", "docs:read"] if scopes is None else scopes
    return {
        "schema_version": 1,
        "event_type": "workflow.started",
        "event_id": eid or f"e{next(_ids)}",
        "occurred_at": at(t),
        "workflow_id": wf,
        "agent": {"workload_id": wl(agent)},
        "credential": cred(agent, token, scopes if cred_scopes is None else cred_scopes),
        "grant": {
            "task_type": "support_triage",
            "purpose": "answer a customer ticket",
            "scopes": scopes,
            "tools": ["crm.search", "crm.update", "docs.read"] if tools is None else tools,
            "max_sensitivity": max_sensitivity,
            "destinations": ["crm.internal", "docs.internal"]
            if destinations is None
            else destinations,
            "not_after": at(not_after),
            "autonomy": "medium",
        },
    }


def call(
    wf: str,
    agent: str,
    token: str,
    *,
    t: float = 1,
    holder: str | None = None,
    scopes: list[str] | None = None,
    tool: str = "crm.search",
    operation: str = "read",
    destination: str = "crm.internal",
    sensitivity: str = "internal",
    expires: float = 600,
    eid: str | None = None,
) -> dict[str, Any]:
    """A tool_call.intent event."""
    return {
        "schema_version": 1,
        "event_type": "tool_call.intent",
        "event_id": eid or f"e{next(_ids)}",
        "occurred_at": at(t),
        "workflow_id": wf,
        "agent": {"workload_id": wl(agent)},
        "credential": cred(holder or agent, token, scopes or ["crm:read"], expires=expires),
        "action": {
            "tool": tool,
            "operation": operation,
            "resource": "crm://accounts/123",
            "destination": destination,
            "data_sensitivity": sensitivity,
        },
    }


def delegate(
    wf: str,
    frm: str,
    to: str,
    token: str,
    *,
    t: float = 0.5,
    did: str | None = None,
    scopes: list[str] | None = None,
    expires: float = 900,
    holder_scopes: list[str] | None = None,
    eid: str | None = None,
) -> dict[str, Any]:
    """A delegation.granted event from ``frm`` to ``to``."""
    scopes = ["crm:read"] if scopes is None else scopes
    return {
        "schema_version": 1,
        "event_type": "delegation.granted",
        "event_id": eid or f"e{next(_ids)}",
        "occurred_at": at(t),
        "workflow_id": wf,
        "agent": {"workload_id": wl(frm)},
        "credential": cred(frm, token, holder_scopes or scopes),
        "delegation": {
            "delegation_id": did or f"d-{frm}-{to}",
            "to_workload_id": wl(to),
            "scopes": scopes,
            "expires_at": at(expires),
        },
    }


def completed(
    wf: str,
    agent: str,
    token: str | None = None,
    *,
    t: float = 10,
    eid: str | None = None,
    scopes: list[str] | None = None,
) -> dict[str, Any]:
    """A workflow.completed event."""
    ev: dict[str, Any] = {
        "schema_version": 1,
        "event_type": "workflow.completed",
        "event_id": eid or f"e{next(_ids)}",
        "occurred_at": at(t),
        "workflow_id": wf,
        "agent": {"workload_id": wl(agent)},
        "outcome": "success",
    }
    if token is not None:
        ev["credential"] = cred(agent, token, scopes or ["crm:read"])
    return ev


def parse(raw: dict[str, Any]) -> InputEvent:
    """Validate a builder dict into a model, through JSON as in production."""
    return input_event_adapter.validate_json(orjson.dumps(raw))
