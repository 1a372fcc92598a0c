"""A hand-made violation to place at a known input offset: a workflow whose initiator calls a tool
its grant does not list (``tool_not_granted``: decided on arrival, revokes the token)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import orjson

ORG = "spiffe://acme.example/agent/"


def _event(kind: str, eid: str, wf: str, token: str, t: datetime, **body: Any) -> bytes:
    return orjson.dumps(
        {
            "schema_version": 1,
            "event_type": kind,
            "event_id": eid,
            "occurred_at": t.isoformat(),
            "workflow_id": wf,
            "agent": {"workload_id": ORG + "planner"},
            "credential": {
                "token_id": token,
                "issuer": "https://sts.acme.example",
                "subject": ORG + "planner",
                "scopes": ["crm:read"],
                "issued_at": (t - timedelta(seconds=30)).isoformat(),
                "expires_at": (t + timedelta(minutes=30)).isoformat(),
            },
            **body,
        }
    )


def violation(tag: str, t: datetime) -> tuple[bytes, bytes]:
    """``workflow.started`` at ``t`` granting only ``crm.search``, then a ``crm.export`` call by
    the initiator 100 ms later. Ids carry ``tag``; the workflow id is the Kafka key."""
    wf, token = f"wf-fault-{tag}", f"jti-fault-{tag}"
    start = _event(
        "workflow.started",
        f"{tag}-start",
        wf,
        token,
        t,
        grant={
            "task_type": "triage",
            "purpose": "answer a ticket",
            "scopes": ["crm:read"],
            "tools": ["crm.search"],
            "max_sensitivity": "internal",
            "destinations": [],
            "not_after": (t + timedelta(hours=1)).isoformat(),
            "autonomy": "low",
        },
    )
    call = _event(
        "tool_call.intent",
        f"{tag}-call",
        wf,
        token,
        t + timedelta(milliseconds=100),
        action={
            "tool": "crm.export",
            "operation": "read",
            "resource": "crm://accounts/1",
            "destination": "crm.internal",
            "data_sensitivity": "internal",
        },
    )
    return start, call


def latest_time(lines: list[bytes]) -> datetime:
    """The greatest ``occurred_at`` among ``lines``."""
    return max(datetime.fromisoformat(orjson.loads(line)["occurred_at"]) for line in lines)
