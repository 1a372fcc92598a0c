"""The codec: strict validation, classified rejections, unknown fields ignored."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from builders import call, completed, started
from tether.models import ToolCallIntent, WorkflowCompleted
from tether.models.codec import Rejected, decode_event


def enc(obj: Any) -> bytes:
    return orjson.dumps(obj)


def with_(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``base`` with ``path`` (dotted) set to ``value``; ``...`` deletes it."""
    doc = orjson.loads(orjson.dumps(base))
    *parents, leaf = path.split(".")
    node = doc
    for p in parents:
        node = node[p]
    if value is ...:
        del node[leaf]
    else:
        node[leaf] = value
    return doc


CALL = call("wf-1", "planner", "tok-1")


def test_valid_event_decodes() -> None:
    ev = decode_event(enc(CALL))
    assert isinstance(ev, ToolCallIntent)
    assert ev.action.tool == "crm.search"


def test_unknown_fields_are_ignored_not_rejected() -> None:
    doc = with_(CALL, "x_attacker_field", {"nested": [1, 2, 3]})
    doc["action"]["extra"] = "ignored"
    assert isinstance(decode_event(enc(doc)), ToolCallIntent)


def test_completed_without_credential_is_valid() -> None:
    assert isinstance(decode_event(enc(completed("wf-1", "planner"))), WorkflowCompleted)


REJECTIONS: list[tuple[str, bytes, str]] = [
    ("empty record", b"", "empty_record"),
    ("truncated json", enc(CALL)[:40], "invalid_json"),
    ("invalid utf-8", b'{"a":"\xff"}', "invalid_utf8"),
    ("array", b"[1,2,3]", "not_an_object"),
    ("string", b'"hello"', "not_an_object"),
    ("schema_version 2", enc(with_(CALL, "schema_version", 2)), "unsupported_schema_version"),
    ("schema_version '1'", enc(with_(CALL, "schema_version", "1")), "unsupported_schema_version"),
    ("schema_version true", enc(with_(CALL, "schema_version", True)), "unsupported_schema_version"),
    ("schema_version 1.0", enc(with_(CALL, "schema_version", 1.0)), "unsupported_schema_version"),
    ("event_type unknown", enc(with_(CALL, "event_type", "tool_call.done")), "unknown_event_type"),
    ("naive timestamp", enc(with_(CALL, "occurred_at", "2026-11-28T14:00:00")), "schema_violation"),
    ("numeric timestamp", enc(with_(CALL, "occurred_at", 1764338400)), "schema_violation"),
    ("date only", enc(with_(CALL, "occurred_at", "2026-11-28")), "schema_violation"),
    ("missing credential", enc(with_(CALL, "credential", ...)), "schema_violation"),
    ("empty workload", enc(with_(CALL, "agent.workload_id", "")), "schema_violation"),
    ("empty tool", enc(with_(CALL, "action.tool", "")), "schema_violation"),
    ("bad operation", enc(with_(CALL, "action.operation", "sudo")), "schema_violation"),
    ("bad sensitivity", enc(with_(CALL, "action.data_sensitivity", "secret")), "schema_violation"),
    ("scopes not a list", enc(with_(CALL, "credential.scopes", "crm:read")), "schema_violation"),
    ("scope not a string", enc(with_(CALL, "credential.scopes", [1])), "schema_violation"),
    ("event_id too long", enc(with_(CALL, "event_id", "e" * 129)), "schema_violation"),
    ("workflow_id too long", enc(with_(CALL, "workflow_id", "w" * 257)), "schema_violation"),
    ("too many scopes", enc(with_(CALL, "credential.scopes", ["s"] * 257)), "schema_violation"),
    ("oversized record", enc(with_(CALL, "action.resource", "r" * 70000)), "oversized"),
    (
        "missing grant",
        enc(with_(started("wf-1", "planner", "t"), "grant", ...)),
        "schema_violation",
    ),
    # JSON, and "a" is an unknown field: no event fields at all (see test_unknown_fields.py)
    ("deeply nested", b'{"a":' * 2000 + b"1" + b"}" * 2000, "schema_violation"),
    ("deeply nested, broken", b'{"a":' * 2000 + b"1" + b"}" * 1999, "invalid_json"),
]


@pytest.mark.parametrize(("name", "data", "reason"), REJECTIONS, ids=[r[0] for r in REJECTIONS])
def test_rejections_are_classified(name: str, data: bytes, reason: str) -> None:
    got = decode_event(data)
    assert isinstance(got, Rejected)
    assert got.reason == reason
    assert got.error


def test_rejection_keeps_readable_workflow_id() -> None:
    got = decode_event(enc(with_(CALL, "action.operation", "sudo")))
    assert isinstance(got, Rejected)
    assert (got.workflow_id, got.event_id) == ("wf-1", CALL["event_id"])
    assert "action.operation" in got.error
