"""The Cedar call policy: the default pack, loading errors, evaluation and the decision cache."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cedarpy
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.policy import (
    PolicyError,
    PolicyEvaluator,
    PolicyRequest,
    PolicyResult,
    load_default_pack,
    load_policy_dir,
)
from tether.policy.loader import build_pack, load_builtin_pack
from tether.policy.schema import cedar_request, default_schema_source

PERMIT_ALL = "tether.base.permit-all"
TUESDAY_10 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
SATURDAY_23 = datetime(2026, 12, 5, 23, 30, tzinfo=UTC)

PACK = load_builtin_pack("strict")  # every guardrail, so each forbid can be tested
EVALUATOR = PolicyEvaluator(PACK)


def call(**overrides: Any) -> PolicyRequest:
    """A benign call: an initiator reading internal data from a granted destination."""
    facts: dict[str, Any] = {
        "workload_id": "spiffe://acme.example/agent/summarizer",
        "operation": "read",
        "tool": "crm.search",
        "resource": "crm://accounts/123",
        "destination": "crm.internal",
        "data_sensitivity": "internal",
        "occurred_at": TUESDAY_10,
        "is_initiator": True,
        "delegation_depth": 0,
        "task_type": "summarize",
        "purpose": "weekly account summary",
        "autonomy": "medium",
        "max_sensitivity": "confidential",
        "granted_destinations": ["crm.internal", "mail.internal"],
    }
    facts.update(overrides)
    return PolicyRequest.for_call(**facts)


DELEGATEE = {"is_initiator": False, "delegation_depth": 1}
DEEP_DELEGATEE = {"is_initiator": False, "delegation_depth": 2}


def write_pack(directory: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (directory / name).write_text(text, encoding="utf-8")
    return directory


# ---------------------------------------------------------------------------- the default pack


def test_default_pack_forbids_only_moving_secrets() -> None:
    assert set(load_default_pack().policy_ids) == {PERMIT_ALL, "tether.data.secret-transfer"}


def test_unknown_builtin_pack_is_a_clear_error() -> None:
    with pytest.raises(PolicyError, match="unknown policy pack"):
        load_builtin_pack("nope")


def test_strict_pack_loads_with_annotated_policies() -> None:
    assert set(PACK.policy_ids) == {
        PERMIT_ALL,
        "tether.admin.high-autonomy",
        "tether.admin.initiator-only",
        "tether.data.sensitive-transfer-ungranted",
        "tether.data.secret-transfer",
        "tether.data.restricted-after-hours",
        "tether.delegation.deep-delete",
    }
    assert PERMIT_ALL not in PACK.severities
    assert set(PACK.severities.values()) <= {"low", "medium", "high", "critical"}
    assert len(PACK.revision) == 12


def test_strict_pack_directory_validates_like_the_packaged_pack() -> None:
    directory = Path(__file__).parents[2] / "src/tether/policy/strict"
    assert load_policy_dir(directory).revision == PACK.revision


BENIGN = [
    ("initiator reads internal", {}),
    ("initiator writes confidential", {"operation": "write", "data_sensitivity": "confidential"}),
    ("delegatee reads public at night", {**DELEGATEE, "occurred_at": SATURDAY_23}),
    ("deep delegatee writes", {**DEEP_DELEGATEE, "operation": "write"}),
    (
        "high autonomy reads confidential on a weekend night",
        {"autonomy": "high", "data_sensitivity": "confidential", "occurred_at": SATURDAY_23},
    ),
    ("unrestricted destinations", {"granted_destinations": [], "destination": "anywhere.example"}),
    (
        "transfer of confidential to a granted destination",
        {
            "operation": "transfer",
            "data_sensitivity": "confidential",
            "destination": "mail.internal",
        },
    ),
    ("transfer of internal data anywhere", {"operation": "transfer", "destination": "x.example"}),
    ("admin by a low-autonomy initiator", {"operation": "admin", "autonomy": "low"}),
    ("delete by a direct delegatee", {**DELEGATEE, "operation": "delete"}),
    (
        "execute restricted by high autonomy in office hours",
        {"operation": "execute", "autonomy": "high", "data_sensitivity": "restricted"},
    ),
    (
        "restricted at night by medium autonomy",
        {"data_sensitivity": "restricted", "occurred_at": SATURDAY_23},
    ),
    ("no grant known yet", {"autonomy": "", "max_sensitivity": None, "granted_destinations": None}),
]


@pytest.mark.parametrize(("overrides"), [o for _, o in BENIGN], ids=[n for n, _ in BENIGN])
def test_benign_calls_are_allowed_by_the_base_permit(overrides: dict[str, Any]) -> None:
    assert EVALUATOR.evaluate(call(**overrides)) == PolicyResult(True, (PERMIT_ALL,))


@given(
    operation=st.sampled_from(["read", "write"]),
    sensitivity=st.sampled_from(["public", "internal", "confidential"]),
    autonomy=st.sampled_from(["low", "medium", "high"]),
    depth=st.integers(0, 5),
    at=st.datetimes(timezones=st.just(UTC)),
    destinations=st.sampled_from([[], ["crm.internal"]]),
)
def test_no_forbid_fires_on_ordinary_reads_and_writes(
    operation: str,
    sensitivity: str,
    autonomy: str,
    depth: int,
    at: datetime,
    destinations: list[str],
) -> None:
    req = call(
        operation=operation,
        data_sensitivity=sensitivity,
        autonomy=autonomy,
        is_initiator=depth == 0,
        delegation_depth=depth,
        occurred_at=at,
        granted_destinations=destinations,
    )
    assert EVALUATOR.evaluate(req).allowed


FORBIDDEN = [
    (
        "admin by high autonomy",
        {"operation": "admin", "autonomy": "high"},
        ("tether.admin.high-autonomy",),
        "high",
    ),
    (
        "admin by a delegatee",
        {**DELEGATEE, "operation": "admin"},
        ("tether.admin.initiator-only",),
        "high",
    ),
    (
        "admin by an undelegated actor",
        {"operation": "admin", "is_initiator": False},
        ("tether.admin.initiator-only",),
        "high",
    ),
    (
        "confidential transfer to an ungranted destination",
        {
            "operation": "transfer",
            "data_sensitivity": "confidential",
            "destination": "paste.example",
        },
        ("tether.data.sensitive-transfer-ungranted",),
        "critical",
    ),
    (
        "restricted transfer with no grant known",
        {"operation": "transfer", "data_sensitivity": "restricted", "granted_destinations": None},
        ("tether.data.sensitive-transfer-ungranted",),
        "critical",
    ),
    (
        "secret transfer to a granted destination",
        {"operation": "transfer", "resource": "vault://kv/db-password"},
        ("tether.data.secret-transfer",),
        "critical",
    ),
    (
        "restricted data, high autonomy, Saturday",
        {"data_sensitivity": "restricted", "autonomy": "high", "occurred_at": SATURDAY_23},
        ("tether.data.restricted-after-hours",),
        "medium",
    ),
    (
        "restricted data, high autonomy, Tuesday 05:59 UTC",
        {
            "data_sensitivity": "restricted",
            "autonomy": "high",
            "occurred_at": datetime(2026, 12, 1, 5, 59, tzinfo=UTC),
        },
        ("tether.data.restricted-after-hours",),
        "medium",
    ),
    (
        "delete by a sub-sub-agent",
        {**DEEP_DELEGATEE, "operation": "delete"},
        ("tether.delegation.deep-delete",),
        "high",
    ),
    (
        "several forbids: the highest severity wins",
        {
            **DEEP_DELEGATEE,
            "operation": "transfer",
            "resource": "secret://x",
            "data_sensitivity": "restricted",
            "autonomy": "high",
            "occurred_at": SATURDAY_23,
        },
        ("tether.data.restricted-after-hours", "tether.data.secret-transfer"),
        "critical",
    ),
]


@pytest.mark.parametrize(
    ("overrides", "policy_ids", "severity"),
    [case[1:] for case in FORBIDDEN],
    ids=[case[0] for case in FORBIDDEN],
)
def test_each_forbid_fires_naming_its_id_and_severity(
    overrides: dict[str, Any], policy_ids: tuple[str, ...], severity: str
) -> None:
    result = EVALUATOR.evaluate(call(**overrides))
    assert result == PolicyResult(False, policy_ids, severity)


def test_evaluation_matches_cedar_with_explicit_minimal_entities() -> None:
    """An empty entity store decides exactly as the principal and resource entities would."""
    requests = [call(**o) for _, o in BENIGN] + [call(**case[1]) for case in FORBIDDEN]
    for req in requests:
        entities = [
            {"uid": {"type": t, "id": i}, "attrs": {}, "parents": []}
            for t, i in [("Tether::Workload", req.workload_id), ("Tether::Tool", req.tool)]
        ]
        cedar = cedarpy.is_authorized(cedar_request(req), PACK.policy_set, entities, PACK.schema)
        result = EVALUATOR.evaluate(req)
        assert (cedar.allowed, not cedar.diagnostics.errors) == (result.allowed, True)
        assert tuple(sorted(cedar.diagnostics.reasons)) == result.policy_ids


# ---------------------------------------------------------------------------- loading errors

PERMIT = '@id("base")\npermit (principal, action, resource);\n'

BAD_PACKS = [
    (
        "syntax error",
        {
            "a.cedar": PERMIT,
            "b.cedar": '// x\n\n@id("b")\nforbid (principal, action, resource)\n'
            "when { context.hour_utc == };\n",
        },
        ["b.cedar: line 3: unexpected token `}`"],
    ),
    (
        "unknown context attribute",
        {
            "a.cedar": PERMIT + '@id("x")\nforbid (principal, action, resource)\n'
            'when { context.tenant == "acme" };\n'
        },
        ['a.cedar: line 3: policy "x": attribute `tenant` in context for'],
    ),
    (
        "unknown entity type",
        {
            "a.cedar": PERMIT,
            "b.cedar": '@id("y") forbid (principal is Tether::Ag, action, resource);',
        },
        ['b.cedar: line 1: policy "y": unrecognized entity type `Tether::Ag`'],
    ),
    (
        "type error",
        {
            "a.cedar": '@id("z") forbid (principal, action, resource) when { context.weekday == "" };'
        },
        ['a.cedar: line 1: policy "z": '],
    ),
    (
        "duplicate id across files",
        {"a.cedar": PERMIT, "b.cedar": "\n" + PERMIT},
        ['b.cedar: line 2: duplicate @id "base" (first in ', "a.cedar: line 1)"],
    ),
    (
        "missing id",
        {"a.cedar": "permit (principal, action, resource);"},
        ['a.cedar: line 1: every policy needs a non-empty @id("...") annotation'],
    ),
    (
        "unknown severity",
        {"a.cedar": '@id("s") @severity("urgent") forbid (principal, action, resource);'},
        ['a.cedar: line 1: policy "s": @severity must be one of low, medium, high, critical'],
    ),
    (
        "reserved id",
        {"a.cedar": '@id("tether:evaluation-error") permit (principal, action, resource);'},
        ['a.cedar: line 1: @id "tether:evaluation-error": ids starting "tether:" are reserved'],
    ),
    (
        "template",
        {"a.cedar": '@id("t") permit (principal == ?principal, action, resource);'},
        ["a.cedar: templates (policies with ?principal or ?resource) are not allowed"],
    ),
    (
        "bad schema",
        {"a.cedar": PERMIT, "s.cedarschema": "namespace Tether { entity Workload }"},
        ["s.cedarschema: error parsing schema"],
    ),
    (
        "schema that does not fit tether's requests",
        {"a.cedar": PERMIT, "s.cedarschema": default_schema_source().replace("weekday: Long,", "")},
        ["s.cedarschema: does not fit tether's requests", "`weekday` should not exist"],
    ),
    (
        "two schemas",
        {"a.cedar": PERMIT, "s.cedarschema": default_schema_source(), "t.cedarschema": "x"},
        ["more than one schema"],
    ),
    ("no policy files", {"README.md": "policies go here"}, ["no *.cedar policy files"]),
]


@pytest.mark.parametrize(
    ("files", "expected"), [c[1:] for c in BAD_PACKS], ids=[c[0] for c in BAD_PACKS]
)
def test_bad_packs_are_rejected_naming_the_file_and_problem(
    tmp_path: Path, files: dict[str, str], expected: list[str]
) -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy_dir(write_pack(tmp_path, files))
    problems = caught.value.problems
    assert all(p.startswith(str(tmp_path)) for p in problems), problems
    assert all(fragment in problems[0] for fragment in expected), problems
    assert str(caught.value) == "\n".join(problems)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    files = {
        "a.cedar": "permit (principal, action, resource);",
        "b.cedar": '@id("b") forbid (principal, action, resource) when { context.nope };',
        "c.cedar": "@id(",
    }
    with pytest.raises(PolicyError) as caught:
        load_policy_dir(write_pack(tmp_path, files))
    assert [Path(p.split(":")[0]).name for p in caught.value.problems] == [
        "a.cedar",
        "b.cedar",
        "c.cedar",
    ]


def test_a_missing_directory_is_a_policy_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="not a directory"):
        load_policy_dir(tmp_path / "nope")


def test_revision_follows_the_sources(tmp_path: Path) -> None:
    first = load_policy_dir(write_pack(tmp_path, {"a.cedar": PERMIT})).revision
    assert load_policy_dir(tmp_path).revision == first
    write_pack(tmp_path, {"a.cedar": PERMIT + "// a comment\n"})
    assert load_policy_dir(tmp_path).revision != first


# ---------------------------------------------------------------------------- evaluation outcomes


def evaluate_with(tmp_path: Path, files: dict[str, str], req: PolicyRequest) -> PolicyResult:
    return PolicyEvaluator(load_policy_dir(write_pack(tmp_path, files))).evaluate(req)


def test_an_evaluation_error_denies_and_carries_the_error(tmp_path: Path) -> None:
    overflow = (
        '@id("boom") forbid (principal, action, resource)\n'
        "when { context.hour_utc * 9223372036854775807 < 0 };\n"
    )
    result = evaluate_with(tmp_path, {"a.cedar": PERMIT + overflow}, call())
    assert (result.allowed, result.policy_ids, result.severity) == (
        False,
        ("tether:evaluation-error",),
        "high",
    )
    assert "boom" in result.errors[0]
    assert "overflow" in result.errors[0]


def test_no_matching_permit_is_a_default_deny(tmp_path: Path) -> None:
    only = '@id("reads") permit (principal, action == Tether::Action::"read", resource);'
    result = evaluate_with(tmp_path, {"a.cedar": only}, call(operation="write"))
    assert result == PolicyResult(False, ("tether:default-deny",), "high")


def test_an_unannotated_forbid_is_high(tmp_path: Path) -> None:
    forbid = '@id("no-crm") forbid (principal, action, resource == Tether::Tool::"crm.search");'
    result = evaluate_with(tmp_path, {"a.cedar": PERMIT + forbid}, call())
    assert result == PolicyResult(False, ("no-crm",), "high")


def test_action_groups_of_a_custom_schema_apply(tmp_path: Path) -> None:
    schema = default_schema_source().replace(
        'action "read", "write", "delete", "execute", "transfer", "admin" appliesTo {',
        'action "mutate";\n'
        'action "write", "delete" in ["mutate"] appliesTo {\n'
        "  principal: [Workload], resource: [Tool], context: CallContext\n"
        "};\n"
        'action "read", "execute", "transfer", "admin" appliesTo {',
    )
    assert '"mutate"' in schema
    forbid = '@id("ro") forbid (principal, action in Tether::Action::"mutate", resource);'
    files = {"s.cedarschema": schema, "a.cedar": PERMIT + forbid}
    assert evaluate_with(tmp_path, files, call(operation="write")).policy_ids == ("ro",)
    assert evaluate_with(tmp_path, files, call(operation="read")).allowed


def test_an_exception_from_the_binding_denies(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("binding exploded")

    monkeypatch.setattr(cedarpy, "is_authorized", broken)
    result = PolicyEvaluator(PACK).evaluate(call())
    assert result == PolicyResult(
        False, ("tether:evaluation-error",), "high", ("RuntimeError: binding exploded",)
    )


def test_packs_build_from_sources_in_memory() -> None:
    pack = build_pack([("mem.cedar", PERMIT)], ("mem.cedarschema", default_schema_source()))
    assert pack.policy_ids == ("base",)
    assert pack.origins == {"base": "mem.cedar: line 1"}
    assert PolicyEvaluator(pack).evaluate(call()).allowed


def test_unusual_ids_reach_cedar_verbatim() -> None:
    req = call(workload_id='spiffe://a/"quoted"\nline', tool="ünï::tool")
    assert EVALUATOR.evaluate(req).allowed


# ---------------------------------------------------------------------------- decision cache


def test_the_cache_returns_the_same_decision_and_counts_hits() -> None:
    evaluator = PolicyEvaluator(PACK)
    allowed, denied = call(), call(operation="admin", autonomy="high")
    first = [evaluator.evaluate(allowed), evaluator.evaluate(denied)]
    again = [evaluator.evaluate(allowed), evaluator.evaluate(replace(denied))]
    assert again == first
    assert again[0] is first[0]
    assert (evaluator.hits, evaluator.misses, evaluator.cached) == (2, 2, 2)


def test_the_cache_evicts_the_least_recently_used() -> None:
    evaluator = PolicyEvaluator(PACK, cache_size=2)
    a, b, c = call(tool="a"), call(tool="b"), call(tool="c")
    for req in (a, b, a, c, a, b):
        evaluator.evaluate(req)
    # a miss, b miss, a hit, c miss (evicts b), a hit, b miss (evicts c)
    assert (evaluator.hits, evaluator.misses, evaluator.cached) == (2, 4, 2)


def test_a_zero_cache_size_disables_the_cache() -> None:
    evaluator = PolicyEvaluator(PACK, cache_size=0)
    evaluator.evaluate(call())
    evaluator.evaluate(call())
    assert (evaluator.hits, evaluator.misses, evaluator.cached) == (0, 2, 0)
    with pytest.raises(ValueError, match="cache_size"):
        PolicyEvaluator(PACK, cache_size=-1)


@given(
    operation=st.sampled_from(["read", "write", "delete", "execute", "transfer", "admin"]),
    sensitivity=st.sampled_from(["public", "internal", "confidential", "restricted"]),
    autonomy=st.sampled_from(["", "low", "medium", "high"]),
    depth=st.integers(0, 3),
    hour=st.integers(0, 23),
)
def test_cached_and_uncached_decisions_agree(
    operation: str, sensitivity: str, autonomy: str, depth: int, hour: int
) -> None:
    req = call(
        operation=operation,
        data_sensitivity=sensitivity,
        autonomy=autonomy,
        is_initiator=depth == 0,
        delegation_depth=depth,
        occurred_at=TUESDAY_10.replace(hour=hour),
    )
    assert EVALUATOR.evaluate(req) == PolicyEvaluator(PACK, cache_size=0).evaluate(req)


@pytest.mark.parametrize("pack_name", ["default", "strict"])
def test_settled_operations_match_cedar(pack_name: str) -> None:
    """Operations the pack decides without looking at the request give Cedar's own answer."""
    pack = load_builtin_pack(pack_name)
    evaluator = PolicyEvaluator(pack, cache_size=0)
    if pack_name == "strict":  # its after-hours rule reads every action's context
        assert pack.settled_ops == {}
        return
    for op, ids in pack.settled_ops.items():
        for kwargs in ({}, DELEGATEE, DEEP_DELEGATEE, {"autonomy": "high"}):
            result = evaluator.evaluate(call(**{**kwargs, "operation": op}))
            assert result.allowed
            assert set(result.policy_ids) == set(ids)
    assert set(pack.settled_ops) == {"read", "write", "delete", "execute", "admin"}
