"""Every timestamp field takes exactly RFC 3339 with an offset, in a bounded range (issue 18,
items 12 and 2): anything else is a ``schema_violation`` dead letter naming the field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from builders import call, completed, delegate, started
from tether.models.codec import Rejected, decode_event

# (event, dotted path of a timestamp field, the path pydantic names in its error)
FIELDS: list[tuple[dict[str, Any], str, str]] = [
    (call("wf-1", "planner", "tok-1"), "occurred_at", "tool_call.intent.occurred_at"),
    (call("wf-1", "planner", "tok-1"), "credential.issued_at", "credential.issued_at"),
    (call("wf-1", "planner", "tok-1"), "credential.expires_at", "credential.expires_at"),
    (started("wf-1", "planner", "tok-1"), "grant.not_after", "grant.not_after"),
    (started("wf-1", "planner", "tok-1"), "occurred_at", "workflow.started.occurred_at"),
    (delegate("wf-1", "planner", "w", "tok-1"), "delegation.expires_at", "delegation.expires_at"),
    (completed("wf-1", "planner", "tok-1"), "credential.expires_at", "credential.expires_at"),
]

NOT_RFC3339: list[object] = [
    "1795860001",  # pydantic reads a digit string as Unix seconds, even in strict mode
    "99999999999",  # ... or as milliseconds when it is large: 1973
    "1795860001000",
    "0",
    "-1",
    "1795860001.5",
    1795860001,
    1795860001.5,
    True,
    None,
    ["2026-11-28T14:00:00Z"],
    {"t": "2026-11-28T14:00:00Z"},
    "",
    "2026-11-28T14:00Z",  # no seconds
    "2026-11-28T14Z",
    "2026-11-28T14:00:00+0000",  # offset without a colon
    "2026-11-28T14:00:00+01",
    "2026-11-28T14:00:00,5Z",  # comma decimal
    "2026-11-28T14:00:00.Z",  # empty fraction
    "2026-11-28",  # a date alone
    "2026-11-28T14:00:00",  # no offset
    "2026-11-28 14:00:00Z",  # a space for the T (outside the RFC's grammar)
    "2026-11-28_14:00:00Z",
    "20261128T140000Z",  # ISO 8601 basic format
    "2026-W48-6T14:00:00Z",  # ISO week date
    "2026-332T14:00:00Z",  # ordinal date
    "+2026-11-28T14:00:00Z",
    " 2026-11-28T14:00:00Z",
    "2026-11-28T14:00:00Z ",
    "2026-11-28T14:00:00Z\n",
    "2026-11-28T14:00:00 Z",
    "2026-11-28T14:00:00UTC",
    "2026-11-28T14:00:00GMT+1",
    "2026-11-28T14:00:00+01:00:00",
    "2026-11-28T14:00:00.5",
    "2026-1-28T14:00:00Z",
    "2026-11-28T4:00:00Z",
    "\uff12\uff10\uff12\uff16-11-28T14:00:00Z",  # full-width digits
    "2026-11-28T14:00:00\u200bZ",
    "Sat, 28 Nov 2026 14:00:00 GMT",
    "2026-11-28T24:00:00Z",  # invalid values in the right shape
    "2026-11-28T14:60:00Z",
    "2026-11-28T14:00:61Z",
    "2026-11-28T14:00:60Z",  # a leap second: datetime cannot hold it
    "2026-02-29T14:00:00Z",
    "2026-13-01T14:00:00Z",
    "2026-00-10T14:00:00Z",
    "2026-11-00T14:00:00Z",
    "2026-11-28T14:00:00+24:00",
    "2026-11-28T14:00:00+05:60",
    "0000-01-01T00:00:00Z",
]

OUT_OF_RANGE: list[str] = [
    "9999-12-31T23:59:59Z",  # the crash: + a margin overflows datetime
    "9999-12-31T23:59:59.999999-23:59",
    "0001-01-01T00:30:00+01:00",  # the other crash: before datetime.min in UTC
    "0001-01-01T00:00:00Z",
    "1969-12-31T23:59:59.999999Z",
    "1970-01-01T00:30:00+01:00",  # 1969-12-31T23:30:00Z
    "9000-01-01T00:00:00Z",
    "8999-12-31T23:30:00-01:00",  # 9000-01-01T00:30:00Z
    "5000000-01-01T00:00:00Z",
]


def _set(doc: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    doc = orjson.loads(orjson.dumps(doc))
    *parents, leaf = path.split(".")
    node = doc
    for p in parents:
        node = node[p]
    node[leaf] = value
    return doc


def _cases(values: list[Any]) -> list[Any]:
    return [
        pytest.param(ev, path, named, v, id=f"{ev['event_type']}.{path}={v!r}")
        for ev, path, named in FIELDS
        for v in values
    ]


@pytest.mark.parametrize(("event", "path", "named", "value"), _cases(NOT_RFC3339 + OUT_OF_RANGE))
def test_a_timestamp_that_is_not_rfc3339_in_range_is_a_dead_letter_naming_its_field(
    event: dict[str, Any], path: str, named: str, value: object
) -> None:
    got = decode_event(orjson.dumps(_set(event, path, value)))
    assert isinstance(got, Rejected), f"{value!r} accepted in {path}"
    assert got.reason == "schema_violation"
    assert named in got.error, got.error
    assert got.workflow_id == "wf-1"


def test_a_digit_string_is_not_read_as_unix_time() -> None:
    """The issue's reproduction: these raised findings, and a far-future expiry became 1973."""
    for path, value in [("occurred_at", "1795860001"), ("credential.expires_at", "99999999999")]:
        got = decode_event(orjson.dumps(_set(call("wf-1", "a", "t"), path, value)))
        assert isinstance(got, Rejected)
        assert path in got.error


UTC_1400 = datetime(2026, 11, 28, 14, 0, tzinfo=UTC)
VALID: list[tuple[str, datetime]] = [
    ("2026-11-28T14:00:00Z", UTC_1400),
    ("2026-11-28t14:00:00z", UTC_1400),  # RFC 3339: "T" and "Z" may be lower case
    ("2026-11-28T14:00:00+00:00", UTC_1400),
    ("2026-11-28T14:00:00-00:00", UTC_1400),  # "unknown local offset": still UTC
    ("2026-11-28T15:00:00+01:00", UTC_1400),
    ("2026-11-28T19:30:00+05:30", UTC_1400),
    ("2026-11-28T00:01:00-13:59", UTC_1400),
    ("2026-11-28T14:00:00.5Z", UTC_1400 + timedelta(milliseconds=500)),
    ("2026-11-28T14:00:00.000001Z", UTC_1400 + timedelta(microseconds=1)),
    ("2026-11-28T14:00:00.123456789Z", UTC_1400 + timedelta(microseconds=123456)),  # truncated
    ("2028-02-29T23:59:59Z", datetime(2028, 2, 29, 23, 59, 59, tzinfo=UTC)),
    ("1970-01-01T00:00:00Z", datetime(1970, 1, 1, tzinfo=UTC)),
    ("1969-12-31T23:30:00-01:00", datetime(1970, 1, 1, 0, 30, tzinfo=UTC)),
    ("8999-12-31T23:59:59.999999Z", datetime(8999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
    ("9000-01-01T00:30:00+01:00", datetime(8999, 12, 31, 23, 30, tzinfo=UTC)),
]


@pytest.mark.parametrize(("text", "instant"), VALID, ids=[v[0] for v in VALID])
@pytest.mark.parametrize(
    ("event", "path", "named"), FIELDS, ids=[f"{f[0]['event_type']}.{f[1]}" for f in FIELDS]
)
def test_rfc3339_timestamps_with_an_offset_are_accepted(
    event: dict[str, Any], path: str, named: str, text: str, instant: datetime
) -> None:
    got = decode_event(orjson.dumps(_set(event, path, text)))
    assert not isinstance(got, Rejected), got.error
    node: Any = got
    for part in path.split("."):
        node = getattr(node, part)
    assert node == instant
    assert node.utcoffset() == (instant.utcoffset() if text[-1] in "Zz" else node.utcoffset())


def test_the_offset_is_kept_and_posix_time_is_exact() -> None:
    got = decode_event(orjson.dumps(_set(call("wf-1", "a", "t"), "occurred_at", VALID[5][0])))
    assert not isinstance(got, Rejected)
    assert got.occurred_at.utcoffset() == timezone(timedelta(hours=5, minutes=30)).utcoffset(None)
    assert got.t == UTC_1400.timestamp()


def test_the_json_schemas_state_the_grammar() -> None:
    from tether.models.common import TIMESTAMP_PATTERN
    from tether.schemas import generate

    docs = generate()
    text = docs["input-event.schema.json"].decode()
    assert text.count('"format": "date-time"') >= 5
    assert orjson.dumps(TIMESTAMP_PATTERN).decode() in text
