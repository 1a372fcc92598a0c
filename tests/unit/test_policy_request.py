"""How a tool call maps to a Cedar request, and how policy sources are split into statements."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from tether.policy import PolicyRequest
from tether.policy.source import Statement, statements

NOON = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)  # a Saturday


def call(**overrides: Any) -> PolicyRequest:
    facts: dict[str, Any] = {
        "workload_id": "spiffe://acme.example/agent/summarizer",
        "operation": "read",
        "tool": "crm.search",
        "resource": "crm://accounts/123",
        "destination": "crm.internal",
        "data_sensitivity": "confidential",
        "occurred_at": NOON,
        "is_initiator": True,
        "task_type": "summarize",
        "purpose": "weekly",
        "autonomy": "low",
        "max_sensitivity": "restricted",
        "granted_destinations": ["crm.internal"],
    }
    facts.update(overrides)
    return PolicyRequest.for_call(**facts)


def test_a_call_maps_to_every_context_field() -> None:
    assert call().context() == {
        "task_type": "summarize",
        "purpose": "weekly",
        "autonomy": "low",
        "data_sensitivity": "confidential",
        "sensitivity_level": 2,
        "max_sensitivity_level": 3,
        "destination": "crm.internal",
        "destination_granted": True,
        "resource_scheme": "crm",
        "hour_utc": 12,
        "weekday": 5,
        "delegation_depth": 0,
        "is_initiator": True,
        "delegated": False,
    }


@pytest.mark.parametrize(
    ("resource", "scheme"),
    [
        ("crm://accounts/1", "crm"),
        ("HTTPS://api.example/x", "https"),
        ("mailto:ops@acme.example", "mailto"),
        ("s3+v2://bucket/key", "s3+v2"),
        ("accounts/1", ""),
        ("", ""),
        ("://nothing", ""),
    ],
)
def test_only_the_resource_scheme_is_kept(resource: str, scheme: str) -> None:
    assert call(resource=resource).resource_scheme == scheme


@pytest.mark.parametrize(
    ("occurred_at", "hour", "weekday"),
    [
        (NOON, 12, 5),
        # 23:30 on Saturday in New York is 04:30 on Sunday in UTC.
        (datetime(2026, 11, 28, 23, 30, tzinfo=timezone(timedelta(hours=-5))), 4, 6),
        (datetime(2026, 11, 30, 0, 0, tzinfo=timezone(timedelta(hours=1))), 23, 6),
    ],
)
def test_event_time_becomes_hour_and_weekday_in_utc(
    occurred_at: datetime, hour: int, weekday: int
) -> None:
    req = call(occurred_at=occurred_at)
    assert (req.hour_utc, req.weekday) == (hour, weekday)


@pytest.mark.parametrize(
    ("destinations", "granted"),
    [(["crm.internal"], True), (["mail.internal"], False), ([], True), (None, False)],
)
def test_destination_granted_follows_the_grant(
    destinations: list[str] | None, *, granted: bool
) -> None:
    assert call(granted_destinations=destinations).destination_granted is granted


def test_no_grant_known_grants_nothing() -> None:
    req = PolicyRequest.for_call(
        workload_id="w",
        operation="write",
        tool="t",
        resource="r",
        destination="d",
        data_sensitivity="public",
        occurred_at=NOON,
        is_initiator=False,
    )
    assert (req.task_type, req.autonomy, req.max_sensitivity_level, req.destination_granted) == (
        "",
        "",
        -1,
        False,
    )
    assert (req.is_initiator, req.delegated, req.delegation_depth) == (False, False, 0)


def test_a_delegatee_is_delegated() -> None:
    req = call(is_initiator=False, delegation_depth=2)
    assert (req.is_initiator, req.delegated, req.delegation_depth) == (False, True, 2)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"operation": "launch"}, "unknown operation"),
        ({"data_sensitivity": "secret"}, "unknown sensitivity"),
        ({"max_sensitivity": "top"}, "unknown sensitivity"),
        ({"autonomy": "full"}, "unknown autonomy"),
        ({"occurred_at": datetime(2026, 11, 28, 12)}, "offset"),  # noqa: DTZ001 -- the point
        ({"delegation_depth": -1, "is_initiator": False}, "delegation_depth"),
        ({"delegation_depth": 1, "is_initiator": True}, "delegation_depth"),
    ],
)
def test_impossible_calls_are_rejected(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(**overrides)


def test_the_cache_key_is_the_whole_request() -> None:
    a, b = call(), call(resource="crm://accounts/999", occurred_at=NOON + timedelta(minutes=5))
    assert a.cache_key == b.cache_key  # same scheme, same hour: one cache entry
    assert hash(a.cache_key) == hash(b.cache_key)
    assert call(tool="crm.update").cache_key != a.cache_key
    assert len(a.cache_key) == len(PolicyRequest.__slots__)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("", []),
        ("// only a comment; with a semicolon\n", []),
        (
            (
                '@id("a")\npermit (principal, action, resource);\n\n'
                '// next; one\n@id("b;c") forbid (principal, action, resource)\n'
                'when { context.purpose == "x\\";y" };\n'
            ),
            [(1, '@id("a")'), (5, '@id("b;c")')],
        ),
        (
            'permit (principal, action, resource) when { context.x == "a\nb" };\nforbid',
            [
                (1, "permit"),
                (3, "forbid"),
            ],
        ),
    ],
)
def test_statements_start_at_their_first_token(
    source: str, expected: list[tuple[int, str]]
) -> None:
    found = statements(source)
    assert [(s.line, s.text.split()[0]) for s in found] == [
        (line, text.split()[0]) for line, text in expected
    ]
    assert all(isinstance(s, Statement) for s in found)
