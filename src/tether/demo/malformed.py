"""Hostile and malformed JSON Lines that intake must dead-letter (never blank lines)."""

from __future__ import annotations

import random
from collections.abc import Callable

import orjson

from tether.demo.catalog import TASKS_BY_NAME
from tether.demo.encoding import IdMint
from tether.demo.script import Event, Roster, Script
from tether.demo.workflow import benign

Mutator = Callable[[random.Random, Event], bytes]

_CALL, _START, _GRANT, _DONE = (
    "tool_call.intent",
    "workflow.started",
    "delegation.granted",
    "workflow.completed",
)
_INVALID_UTF8 = (b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80")
_MARK = "@@INVALID-UTF8@@"


def _dump(ev: Event) -> bytes:
    return orjson.dumps(ev)


def _set(path: str, value: object) -> Mutator:
    """Set a (dotted) field to `value`."""
    *parents, leaf = path.split(".")

    def mutate(_: random.Random, ev: Event) -> bytes:
        node = ev
        for key in parents:
            node = node[key]
        node[leaf] = value
        return _dump(ev)

    return mutate


def _drop(path: str) -> Mutator:
    """Remove a (dotted) field."""
    *parents, leaf = path.split(".")

    def mutate(_: random.Random, ev: Event) -> bytes:
        node = ev
        for key in parents:
            node = node[key]
        del node[leaf]
        return _dump(ev)

    return mutate


def _naive(path: str) -> Mutator:
    """Strip the UTC offset from a (dotted) timestamp field."""
    *parents, leaf = path.split(".")

    def mutate(_: random.Random, ev: Event) -> bytes:
        node = ev
        for key in parents:
            node = node[key]
        node[leaf] = node[leaf][:19]
        return _dump(ev)

    return mutate


def _raw(line: bytes) -> Mutator:
    return lambda _rng, _ev: line


def _truncated(rng: random.Random, ev: Event) -> bytes:
    line = _dump(ev)
    return line[: rng.randrange(1, len(line) - 1)]


def _invalid_utf8(rng: random.Random, ev: Event) -> bytes:
    ev["action"]["resource"] = _MARK
    return _dump(ev).replace(_MARK.encode(), b"crm://" + rng.choice(_INVALID_UTF8))


def _nan_version(_: random.Random, ev: Event) -> bytes:
    return _dump(ev).replace(b'"schema_version":1', b'"schema_version":NaN', 1)


def _wrapped(_: random.Random, ev: Event) -> bytes:
    return b"[" + _dump(ev) + b"]"


_CASES: tuple[tuple[str, str, Mutator], ...] = (
    ("truncated", _CALL, _truncated),
    ("truncated_started", _START, _truncated),
    ("not_json", _CALL, _raw(b"tool_call.intent wf-42 crm.search allow")),
    ("single_quoted", _CALL, _raw(b"{'schema_version': 1, 'event_type': 'tool_call.intent'}")),
    ("empty_object", _CALL, _raw(b"{}")),
    ("json_array", _CALL, _raw(b"[]")),
    ("json_number", _CALL, _raw(b"42")),
    ("json_string", _CALL, _raw(b'"tool_call.intent"')),
    ("json_null", _CALL, _raw(b"null")),
    ("json_bool", _CALL, _raw(b"true")),
    ("event_in_array", _CALL, _wrapped),
    ("invalid_utf8", _CALL, _invalid_utf8),
    ("schema_version_2", _CALL, _set("schema_version", 2)),
    ("schema_version_string", _CALL, _set("schema_version", "1")),
    ("schema_version_float", _CALL, _set("schema_version", 1.0)),
    ("schema_version_bool", _CALL, _set("schema_version", True)),
    ("schema_version_nan", _CALL, _nan_version),
    ("missing_schema_version", _CALL, _drop("schema_version")),
    ("missing_event_type", _CALL, _drop("event_type")),
    ("missing_event_id", _CALL, _drop("event_id")),
    ("missing_occurred_at", _CALL, _drop("occurred_at")),
    ("missing_workflow_id", _CALL, _drop("workflow_id")),
    ("missing_agent", _CALL, _drop("agent")),
    ("missing_workload_id", _CALL, _drop("agent.workload_id")),
    ("missing_credential", _CALL, _drop("credential")),
    ("missing_token_id", _CALL, _drop("credential.token_id")),
    ("missing_action", _CALL, _drop("action")),
    ("missing_tool", _CALL, _drop("action.tool")),
    ("missing_grant", _START, _drop("grant")),
    ("missing_grant_scopes", _START, _drop("grant.scopes")),
    ("missing_delegation", _GRANT, _drop("delegation")),
    ("missing_to_workload_id", _GRANT, _drop("delegation.to_workload_id")),
    ("missing_outcome", _DONE, _drop("outcome")),
    ("naive_occurred_at", _CALL, _naive("occurred_at")),
    ("naive_expires_at", _CALL, _naive("credential.expires_at")),
    ("naive_not_after", _START, _naive("grant.not_after")),
    ("naive_delegation_expiry", _GRANT, _naive("delegation.expires_at")),
    ("timestamp_words", _CALL, _set("occurred_at", "yesterday afternoon")),
    ("timestamp_impossible", _CALL, _set("occurred_at", "2026-02-30T25:61:00Z")),
    ("timestamp_epoch_number", _CALL, _set("occurred_at", 1795874400)),
    ("scopes_not_list", _CALL, _set("credential.scopes", "crm:read")),
    ("agent_not_object", _CALL, _set("agent", "spiffe://acme.example/agent/planner")),
    ("action_not_object", _CALL, _set("action", ["crm.search", "read"])),
    ("workflow_id_not_string", _CALL, _set("workflow_id", 42)),
    ("bad_event_type", _CALL, _set("event_type", "tool_call.executed")),
    ("bad_operation", _CALL, _set("action.operation", "nuke")),
    ("bad_sensitivity", _CALL, _set("action.data_sensitivity", "top-secret")),
    ("bad_autonomy", _START, _set("grant.autonomy", "unbounded")),
    ("bad_outcome", _DONE, _set("outcome", "exploded")),
    ("event_id_too_long", _CALL, _set("event_id", "e" * 129)),
    ("workflow_id_too_long", _CALL, _set("workflow_id", "w" * 257)),
    ("empty_event_id", _CALL, _set("event_id", "")),
    ("empty_workflow_id", _CALL, _set("workflow_id", "")),
    ("empty_tool", _CALL, _set("action.tool", "")),
    ("empty_workload_id", _CALL, _set("agent.workload_id", "")),
)

#: Names of the malformed-line cases, in declaration order.
MALFORMED_CASES = tuple(name for name, _, _ in _CASES)


def _templates(seed: int) -> dict[str, Event]:
    """One valid event of each type, from a small benign workflow with a delegation."""
    rng = random.Random(f"tether-fleet:{seed}:malformed-templates")
    script = Script(Roster(seed), rng, IdMint(0, rng))
    task = TASKS_BY_NAME["support_ticket_triage"]
    while True:
        benign(script, task, "wf-template", 1_795_874_400_000, min_hops=1)
        found = {ev["event_type"]: ev for _, ev, _ in script.finish()}
        if "credential" in found[_DONE]:
            return found


def malformed_cases(seed: int, n: int) -> list[tuple[str, bytes]]:
    """`n` named malformed lines; every case appears once in each run of len(MALFORMED_CASES)."""
    rng = random.Random(f"tether-fleet:{seed}:malformed")
    templates = {k: _dump(v) for k, v in _templates(seed).items()}
    out: list[tuple[str, bytes]] = []
    order: list[tuple[str, str, Mutator]] = []
    for i in range(n):
        if not order:
            order = list(_CASES)
            rng.shuffle(order)
        name, kind, mutate = order.pop()
        ev: Event = orjson.loads(templates[kind])
        ev["event_id"] = f"dlq-{seed}-{i:05d}"
        ev["workflow_id"] = f"wf-malformed-{i:05d}"
        out.append((name, mutate(rng, ev)))
    return out


def malformed_lines(seed: int, n: int) -> list[bytes]:
    """`n` hostile or malformed JSON Lines (no newline inside, none blank) for dead-letter tests."""
    return [line for _, line in malformed_cases(seed, n)]
