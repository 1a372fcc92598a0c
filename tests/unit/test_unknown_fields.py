"""Unknown fields are ignored whatever they hold; only known fields are validated (issue 18,
item 5). A valid event carrying a hostile unknown field (nested past any parser's depth limit, a
lone surrogate, a number no float or int conversion takes) decodes to the same event; the same
thing in a known field is still a dead letter naming the field."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builders import call, completed, delegate, started
from tether.models.codec import MAX_RECORD_BYTES, Rejected, decode_event
from tether.models.known_fields import JsonFault, _skip_deep

BASES: dict[str, dict[str, Any]] = {
    "started": started("wf-1", "planner", "tok-1"),
    "call": call("wf-1", "planner", "tok-1"),
    "delegate": delegate("wf-1", "planner", "worker", "tok-1"),
    "completed": completed("wf-1", "planner", "tok-1"),
    "completed-no-credential": completed("wf-1", "planner"),
}
# Where an unknown field can go: the record and every nested object of its event type.
OBJECTS: dict[str, list[str]] = {
    "started": ["", "agent", "credential", "grant"],
    "call": ["", "agent", "credential", "action"],
    "delegate": ["", "agent", "credential", "delegation"],
    "completed": ["", "agent", "credential"],
    "completed-no-credential": ["", "agent"],
}


def with_raw(doc: dict[str, Any], where: str, key: str, raw: bytes) -> bytes:
    """``doc`` as JSON with ``"key": raw`` (raw JSON text) added to the object at ``where``."""
    marker = "\x00marker\x00"
    copy = orjson.loads(orjson.dumps(doc))
    node = copy
    for part in filter(None, where.split(".")):
        node = node[part]
    node[key] = marker
    return orjson.dumps(copy).replace(orjson.dumps(marker), raw)


def deep(levels: int, open_: bytes = b"[", close: bytes = b"]", inner: bytes = b"1") -> bytes:
    return open_ * levels + inner + close * levels


HOSTILE: dict[str, bytes] = {
    "array nested 201 deep": deep(201),
    "array nested 1,025 deep": deep(1025),
    "array nested 5,000 deep": deep(5000),
    "array nested 30,000 deep": deep(30000),
    "object nested 201 deep": deep(201, b'{"a":', b"}"),
    "object nested 3,000 deep": deep(3000, b'{"a":', b"}"),
    "mixed nesting 2,000 deep": deep(1000, b'[{"k":[', b"]}]", b'"\\ud800"'),
    "lone high surrogate": b'"\\ud800"',
    "lone low surrogate": b'"\\udfff"',
    "reversed surrogate pair": b'"\\udc00\\ud800"',
    "surrogate in a nested key": b'{"\\ud800":1}',
    "4,400-digit integer": b"1" * 4400,
    "-5,000-digit integer": b"-" + b"9" * 5000,
    "integer beyond 64 bits": b"18446744073709551616",
    "huge float": b"1e400",
    "huge negative float": b"-1e400",
    "tiny float": b"1e-400",
    "4,400-digit float": b"1" * 4400 + b".5",
    "long exponent": b"1e" + b"9" * 4400,
    "a fraction of 5,000 digits": b"0." + b"3" * 5000,
    "all of them in an array": b"["
    + b",".join([deep(500), b'"\\ud800"', b"1" * 4400, b"1e400", b'{"\\udfff":[]}'])
    + b"]",
    # not JSON, but pydantic's parser takes them (in unknown fields), so the second look does too
    "NaN": b"NaN",
    "Infinity": b"[Infinity,-Infinity]",
    "NaN nested 3,000 deep": deep(3000, inner=b"NaN"),
    "a key that is a known field's name": b'{"occurred_at":"1795860001","schema_version":2}',
    "escaped quotes and backslashes": b'"\\"}]\\\\"',
    "empty containers": b'[{},[],{"":{}}]',
}


def _placements() -> list[Any]:
    return [
        pytest.param(base, where, raw, id=f"{base}.{where or '(record)'}: {name}")
        for base, wheres in OBJECTS.items()
        for where in wheres
        for name, raw in HOSTILE.items()
    ]


@pytest.mark.parametrize(("base", "where", "raw"), _placements())
def test_a_hostile_unknown_field_never_diverts_a_valid_event(
    base: str, where: str, raw: bytes
) -> None:
    expected = decode_event(orjson.dumps(BASES[base]))
    assert not isinstance(expected, Rejected)
    data = with_raw(BASES[base], where, "x_unknown", raw)
    assert len(data) <= MAX_RECORD_BYTES
    got = decode_event(data)
    assert not isinstance(got, Rejected), got.error
    assert got == expected


@pytest.mark.parametrize(
    ("where", "key"),
    [("", "grant"), ("", "delegation"), ("", "outcome"), ("action", "scopes"), ("agent", "tool")],
)
def test_a_field_known_only_to_other_event_types_is_unknown_here(where: str, key: str) -> None:
    """``grant`` on a tool call is an unknown field of a tool call: ignored, whatever it holds."""
    expected = decode_event(orjson.dumps(BASES["call"]))
    for raw in (deep(300), b'"\\ud800"', b"1" * 4400):
        got = decode_event(with_raw(BASES["call"], where, key, raw))
        assert got == expected, getattr(got, "error", got)


# The same values in a known field: still a dead letter, with the field named.
KNOWN: list[tuple[str, str, bytes, str, str]] = [
    ("call", "action.tool", b'"\\ud800"', "schema_violation", "action.tool"),
    ("call", "action.resource", b'"ok \\udc00"', "schema_violation", "action.resource"),
    ("call", "workflow_id", b'"\\ud800"', "schema_violation", "workflow_id"),
    ("call", "credential.scopes", b'["\\ud800"]', "schema_violation", "credential.scopes"),
    ("call", "credential.scopes", deep(300), "schema_violation", "credential.scopes"),
    ("call", "credential.audience", deep(5000), "schema_violation", "credential.audience"),
    ("call", "credential", deep(2000, b'{"a":', b"}"), "schema_violation", "credential"),
    ("call", "occurred_at", b"1" * 4400, "schema_violation", "occurred_at"),
    ("call", "action.operation", b"1e400", "schema_violation", "action.operation"),
    ("completed-no-credential", "credential", b"1e400", "schema_violation", "credential"),
    ("completed-no-credential", "credential", deep(300), "schema_violation", "credential"),
    ("call", "schema_version", b"1" * 4400, "unsupported_schema_version", "schema_version"),
    ("call", "schema_version", b"1e400", "unsupported_schema_version", "schema_version"),
    ("call", "event_type", b'"\\ud800"', "unknown_event_type", "event_type"),
    ("call", "event_id", deep(300), "schema_violation", "event_id"),
]


@pytest.mark.parametrize(
    ("base", "path", "raw", "reason", "named"), KNOWN, ids=[f"{k[1]}={k[2][:12]!r}" for k in KNOWN]
)
def test_the_same_values_in_a_known_field_are_a_dead_letter_naming_it(
    base: str, path: str, raw: bytes, reason: str, named: str
) -> None:
    where, _, key = path.rpartition(".")
    doc = orjson.loads(orjson.dumps(BASES[base]))
    node = doc
    for part in filter(None, where.split(".")):
        node = node[part]
    node.pop(key, None)
    got = decode_event(with_raw(doc, where, key, raw))
    assert isinstance(got, Rejected)
    readable_id = None if named == "workflow_id" else "wf-1"
    assert (got.reason, got.workflow_id) == (reason, readable_id), got.error
    assert named in got.error, got.error


# A record that is not JSON is not an event, wherever the fault is.
NOT_JSON: list[bytes] = [
    b"[1,,2]",
    b"[1,2",
    b'{"a" 1}',
    b"01",
    b"1.",
    b".5",
    b"+1",
    b"'single'",
    b'"tab\there"',
    b'"\\x41"',
    b'"\\u12"',
    b"tru",
    deep(5000, inner=b"1,"),
    deep(5000, inner=b"]"),
    deep(3000, b'{"a":', b"}", b"1,}"),
    deep(3000, b"{", b"}", b""),
]


@pytest.mark.parametrize("raw", NOT_JSON, ids=[r[:16].decode() for r in NOT_JSON])
def test_malformed_json_in_an_unknown_field_is_still_invalid_json(raw: bytes) -> None:
    got = decode_event(with_raw(BASES["call"], "", "x", raw))
    assert isinstance(got, Rejected)
    assert got.reason == "invalid_json", got.error


def test_trailing_data_and_duplicate_top_level_objects_are_invalid_json() -> None:
    good = orjson.dumps(BASES["call"])
    for data in (good + b"x", good + good, good[:-1] + b',"x":' + deep(3000) + b"}}"):
        got = decode_event(data)
        assert isinstance(got, Rejected), data[-20:]
        assert got.reason == "invalid_json", data[-20:]


def test_duplicate_keys_are_read_as_the_fast_path_reads_them() -> None:
    """With a hostile unknown field present (slow path) the last duplicate wins, as without."""
    doc = BASES["call"]
    data = orjson.dumps(doc)
    dup = data[:-1] + b',"workflow_id":"wf-2"}'
    fast = decode_event(dup)
    slow = decode_event(dup[:-1] + b',"x":' + deep(300) + b"}")
    assert not isinstance(fast, Rejected)
    assert fast.workflow_id == "wf-2"
    assert slow == fast


# --- the property: any unknown field, any JSON value --------------------------------------------

_KNOWN_NAMES = {
    "schema_version", "event_type", "event_id", "occurred_at", "workflow_id", "agent",
    "credential", "grant", "action", "delegation", "delegation_id", "outcome", "workload_id",
    "instance_id", "token_id", "issuer", "subject", "scopes", "issued_at", "expires_at",
    "audience", "task_type", "purpose", "tools", "max_sensitivity", "destinations", "not_after",
    "autonomy", "tool", "operation", "resource", "destination", "data_sensitivity",
    "to_workload_id",
}  # fmt: skip

_escape = st.sampled_from(
    ["\\ud800", "\\udfff", "\\udbff\\udfff", "\\u0000", '\\"', "\\\\", "\\n", "\\/", "\\u00e9"]
)
_text = st.lists(
    st.one_of(
        st.text(alphabet=st.characters(blacklist_categories=["Cs", "Cc"]), max_size=5).map(
            lambda s: s.replace("\\", "").replace('"', "")
        ),
        _escape,
    ),
    max_size=4,
).map(lambda parts: ('"' + "".join(parts) + '"').encode())
_number = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30).map(lambda i: str(i).encode()),
    st.integers(min_value=1, max_value=6000).map(lambda n: b"7" * n),
    st.integers(min_value=1, max_value=6000).map(lambda n: b"-1" + b"0" * n + b".5e-3"),
    st.sampled_from([b"1e400", b"-1e400", b"1e-400", b"0.0", b"-0", b"5E+308", b"2.5e-324"]),
)
_leaf = st.one_of(_text, _number, st.sampled_from([b"true", b"false", b"null"]))


def _containers(children: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    arrays = st.lists(children, max_size=4).map(lambda xs: b"[" + b",".join(xs) + b"]")
    objects = st.lists(st.tuples(_text, children), max_size=4).map(
        lambda kvs: b"{" + b",".join(k + b":" + v for k, v in kvs) + b"}"
    )
    return st.one_of(arrays, objects)


_json = st.recursive(_leaf, _containers, max_leaves=12)
_deep = st.tuples(
    st.integers(min_value=150, max_value=6000), st.sampled_from([(b"[", b"]"), (b'{"":', b"}")])
).flatmap(lambda d: _json.map(lambda inner: d[1][0] * d[0] + inner + d[1][1] * d[0]))
_hostile = st.one_of(_json, _deep)
_key = st.text(max_size=12).filter(lambda k: k not in _KNOWN_NAMES)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    base=st.sampled_from(sorted(BASES)),
    data=st.data(),
    fields=st.lists(st.tuples(_key, _hostile), min_size=1, max_size=3),
)
def test_any_unknown_field_never_changes_the_classification_or_the_event(
    base: str, data: st.DataObject, fields: list[tuple[str, bytes]]
) -> None:
    doc = BASES[base]
    expected = decode_event(orjson.dumps(doc))
    record = orjson.dumps(doc)
    for key, raw in fields:
        where = data.draw(st.sampled_from(OBJECTS[base]))
        record = _insert(record, where, key, raw)
    if len(record) > MAX_RECORD_BYTES:
        return
    assert decode_event(record) == expected


_BROKEN: list[tuple[str, bytes]] = [
    ("occurred_at", b'"1795860001"'),
    ("occurred_at", b'"2026-11-28T14:00Z"'),
    ("credential.expires_at", b'"9999-12-31T23:59:59Z"'),
    ("credential.expires_at", b"1" * 4400),
    ("action.tool", b'"\\ud800"'),
    ("action.tool", b"[]"),
    ("agent", b"7"),
    ("agent", deep(300)),
    ("schema_version", b"2"),
    ("event_type", b'"tool_call"'),
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(broken=st.sampled_from(_BROKEN), fields=st.lists(st.tuples(_key, _hostile), max_size=3))
def test_unknown_fields_never_change_a_rejection(
    broken: tuple[str, bytes], fields: list[tuple[str, bytes]]
) -> None:
    path, value = broken
    where, _, key = path.rpartition(".")
    doc = orjson.loads(orjson.dumps(BASES["call"]))
    node = doc
    for part in filter(None, where.split(".")):
        node = node[part]
    node.pop(key)
    bad = with_raw(doc, where, key, value)
    expected = decode_event(bad)
    assert isinstance(expected, Rejected)
    record = bad
    for name, raw in fields:
        record = _insert(record, where, name, raw)
    if len(record) > MAX_RECORD_BYTES:
        return
    got = decode_event(record)
    assert isinstance(got, Rejected)
    assert (got.reason, got.error, got.workflow_id) == (
        expected.reason,
        expected.error,
        expected.workflow_id,
    )


def _insert(record: bytes, where: str, key: str, raw: bytes) -> bytes:
    """Add ``"key": raw`` as the first member of the object at ``where`` in ``record`` (JSON
    written by orjson, so the nested object's opening brace follows its quoted key)."""
    member = orjson.dumps(key) + b":" + raw
    if not where:
        return b"{" + member + b"," + record[1:]
    anchor = orjson.dumps(where) + b":{"
    i = record.index(anchor) + len(anchor)
    return record[:i] + member + b"," + record[i:]


# --- the deep skipper agrees with Python's json on what is JSON ---------------------------------


def _accepts_json(text: str) -> bool:
    try:
        json.loads(text, parse_int=lambda _: 0, parse_float=lambda _: 0.0)
    except (ValueError, RecursionError):
        return False
    return True


def _accepts_skip(text: str) -> bool:
    try:
        return _skip_deep(text, 0) == len(text.rstrip(" \t\n\r"))
    except JsonFault:
        return False


# (spaces only: inserted inside a string too, where a newline would be a raw control character)
_spaces = st.sampled_from(["", " ", "  "])
_json_with_ws = st.tuples(_json, _spaces, _spaces).map(
    lambda t: t[0].decode().replace(",", f"{t[1]},{t[2]}").replace(":", f"{t[2]}:{t[1]}")
)
_mutations = st.sampled_from(["", ",", "]", "}", "[", "{", ":", '"', "1", "x", " ", "\\"])


@settings(max_examples=600, deadline=None)
@given(doc=_json_with_ws, depth=st.integers(0, 1500), at=st.floats(0, 1), insert=_mutations)
def test_the_deep_skipper_accepts_exactly_json(
    doc: str, depth: int, at: float, insert: str
) -> None:
    text = "[" * depth + doc + "]" * depth
    assert _accepts_skip(text), text[depth : depth + 80]
    i = int(at * len(text))
    mutated = text[:i] + insert + text[i + 1 :]
    if depth < 900:  # Python's json answers only below its recursion limit
        assert _accepts_skip(mutated) == _accepts_json(mutated), mutated[max(0, i - 40) : i + 40]


@pytest.mark.parametrize(
    "name",
    [
        b'"\\ud800"',
        b'"\\udfff\\ud800"',
        b'"\\u0000"',
        b'""',
        b'"occurred\\u005fat_"',
        b'"' + b"k" * 30000 + b'"',
    ],
    ids=["lone surrogate", "reversed pair", "NUL", "empty", "escaped near-known", "30k chars"],
)
def test_an_unknown_member_name_is_ignored_whatever_it_is(name: bytes) -> None:
    expected = decode_event(orjson.dumps(BASES["call"]))
    data = orjson.dumps(BASES["call"])
    for where in (b"{", b'"credential":{', b'"action":{'):
        i = data.index(where) + len(where)
        got = decode_event(data[:i] + name + b':{"deep":' + deep(2000) + b"}," + data[i:])
        assert got == expected, getattr(got, "error", got)


def test_a_known_member_name_written_with_escapes_is_the_known_field() -> None:
    """``"occurred\\u005fat"`` is ``occurred_at``, on the fast path and on the second look."""
    data = orjson.dumps(BASES["call"]).replace(b'"occurred_at"', b'"occurred\\u005fat"')
    fast = decode_event(data)
    slow = decode_event(data[:-1] + b',"x":' + deep(2000) + b"}")
    assert not isinstance(fast, Rejected)
    assert slow == fast
    bad = data.replace(b'"2026-11-28T14:00:01Z"', b'"1795860001"')
    for record in (bad, bad[:-1] + b',"x":' + deep(2000) + b"}"):
        got = decode_event(record)
        assert isinstance(got, Rejected)
        assert "occurred_at" in got.error


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    raw=st.sampled_from(list(HOSTILE.values())),
    edits=st.lists(
        st.tuples(st.floats(0, 1), st.integers(0, 2), st.binary(min_size=0, max_size=3)),
        min_size=1,
        max_size=4,
    ),
)
def test_decoding_never_raises_on_a_mangled_hostile_record(
    raw: bytes, edits: list[tuple[float, int, bytes]]
) -> None:
    """``decode_event`` never raises on bad input: hostile records with random byte edits."""
    data = with_raw(BASES["call"], "credential", "x", raw)
    for at, cut, insert in edits:
        i = int(at * len(data))
        data = data[:i] + insert + data[i + cut :]
    got = decode_event(data)
    assert isinstance(got, Rejected) or got.workflow_id


def _chain(depth: int, before: list[bytes], after: list[bytes], kinds: list[bool]) -> str:
    """A value nested ``depth`` deep, each level an array or object (``kinds``) with scalars
    before and after its child: the shapes the skipper reads as runs of units."""
    out, close = [], []
    for level in range(depth):
        is_object = kinds[level % len(kinds)]
        pre = before[level % len(before)]
        post = after[level % len(after)]
        if is_object:
            out.append(b'{"p":' + pre + b',"c":' if pre else b'{"c":')
            close.append((b',"q":' + post if post else b"") + b"}")
        else:
            out.append(b"[" + (pre + b"," if pre else b""))
            close.append((b"," + post if post else b"") + b"]")
    return (b"".join(out) + b"0" + b"".join(reversed(close))).decode()


_scalar_text = st.one_of(st.just(b""), _number, _text, st.sampled_from([b"true", b"null"]))


@settings(max_examples=400, deadline=None)
@given(
    depth=st.integers(1, 1200),
    before=st.lists(_scalar_text, min_size=1, max_size=3),
    after=st.lists(_scalar_text, min_size=1, max_size=3),
    kinds=st.lists(st.booleans(), min_size=1, max_size=3),
    at=st.floats(0, 1),
    insert=_mutations,
)
def test_the_deep_skipper_reads_interleaved_chains_exactly(
    depth: int,
    before: list[bytes],
    after: list[bytes],
    kinds: list[bool],
    at: float,
    insert: str,
) -> None:
    text = _chain(depth, before, after, kinds)
    assert _accepts_skip(text)
    i = int(at * len(text))
    mutated = text[:i] + insert + text[i + 1 :]
    if depth < 900:
        assert _accepts_skip(mutated) == _accepts_json(mutated), mutated[max(0, i - 40) : i + 40]
