"""The synthetic fleet: contract-shaped, deterministic, bounded disorder, truthful labels."""

from __future__ import annotations

import itertools
import re
import tracemalloc
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.demo.fleet import (
    CODES,
    AttackKind,
    FleetConfig,
    FleetEvent,
    generate,
    ground_truth,
    iter_json_lines,
    malformed_lines,
)
from tether.demo.malformed import MALFORMED_CASES, malformed_cases

Event = dict[str, Any]

# -- a strict reading of the input contract (docs/contract.md) ---------------------------------

_TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
_TYPES = ("workflow.started", "tool_call.intent", "delegation.granted", "workflow.completed")
_OPERATIONS = ("read", "write", "delete", "execute", "transfer", "admin")
_SENSITIVITY = ("public", "internal", "confidential", "restricted")
_RANK = {s: i for i, s in enumerate(_SENSITIVITY)}
_MAX_CHAIN = 3


class ContractError(ValueError):
    """An event that breaks the schema_version 1 input contract."""


def _need(ok: bool, why: str) -> None:
    if not ok:
        raise ContractError(why)


def _text(obj: Event, key: str, hi: int = 1024) -> str:
    value = obj.get(key)
    _need(isinstance(value, str) and 1 <= len(value) <= hi, f"{key}: string of 1..{hi} chars")
    assert isinstance(value, str)
    return value


def _ts(obj: Event, key: str) -> datetime:
    value = _text(obj, key, 64)
    _need(bool(_TS.match(value)), f"{key}: RFC 3339 with offset")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ContractError(f"{key}: {exc}") from exc
    _need(parsed.utcoffset() is not None, f"{key}: offset")
    return parsed


def _strings(obj: Event, key: str, *, allow_empty: bool = True) -> list[str]:
    value = obj.get(key)
    _need(isinstance(value, list), f"{key}: list")
    assert isinstance(value, list)
    _need(allow_empty or bool(value), f"{key}: non-empty")
    _need(all(isinstance(v, str) and v for v in value), f"{key}: non-empty strings")
    return value


def _obj(obj: Event, key: str) -> Event:
    value = obj.get(key)
    _need(isinstance(value, dict), f"{key}: object")
    assert isinstance(value, dict)
    return value


def _check_credential(cred: Event) -> None:
    for key in ("token_id", "issuer", "subject"):
        _text(cred, key)
    _strings(cred, "scopes")
    _ts(cred, "issued_at")
    _ts(cred, "expires_at")


def _check_payload(ev: Event, kind: str) -> None:
    if kind == "workflow.started":
        grant = _obj(ev, "grant")
        for key in ("task_type", "purpose"):
            _text(grant, key)
        for key in ("scopes", "tools", "destinations"):
            _strings(grant, key)
        _need(grant.get("max_sensitivity") in _SENSITIVITY, "grant.max_sensitivity")
        _need(grant.get("autonomy") in ("low", "medium", "high"), "grant.autonomy")
        _ts(grant, "not_after")
    elif kind == "tool_call.intent":
        action = _obj(ev, "action")
        for key in ("tool", "resource", "destination"):
            _text(action, key)
        _need(action.get("operation") in _OPERATIONS, "action.operation")
        _need(action.get("data_sensitivity") in _SENSITIVITY, "action.data_sensitivity")
        if "delegation_id" in ev:
            _text(ev, "delegation_id")
    elif kind == "delegation.granted":
        dlg = _obj(ev, "delegation")
        _text(dlg, "delegation_id")
        _text(dlg, "to_workload_id")
        _strings(dlg, "scopes")
        _ts(dlg, "expires_at")
    else:
        _need(ev.get("outcome") in ("success", "failure", "cancelled"), "outcome")


def check_event(ev: object) -> None:
    """Raise ContractError unless `ev` is a valid schema_version 1 input event."""
    _need(isinstance(ev, dict), "event is an object")
    assert isinstance(ev, dict)
    version = ev.get("schema_version")
    _need(type(version) is int and version == 1, "schema_version is the JSON integer 1")
    kind = ev.get("event_type")
    _need(kind in _TYPES, "event_type")
    assert isinstance(kind, str)
    _text(ev, "event_id", 128)
    _ts(ev, "occurred_at")
    _text(ev, "workflow_id", 256)
    agent = _obj(ev, "agent")
    _text(agent, "workload_id")
    if "instance_id" in agent:
        _text(agent, "instance_id")
    if kind != "workflow.completed" or "credential" in ev:
        _check_credential(_obj(ev, "credential"))
    _check_payload(ev, kind)


def check_line(line: bytes) -> None:
    """Raise ContractError unless `line` decodes to a valid input event."""
    try:
        ev = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ContractError(str(exc)) from exc
    check_event(ev)


# -- a strict, offline reading of the contract's detections (the test oracle) -------------------


def _ms(value: str) -> int:
    return int(datetime.fromisoformat(value).timestamp() * 1000)


@dataclass
class _Grant:
    to: str
    by: str
    granted: int
    expires: int
    scopes: frozenset[str]
    depth: int


@dataclass
class _Flow:
    started: Event | None = None
    completed_at: int | None = None
    delegations: list[_Grant] = field(default_factory=list)


def _covering(flow: _Flow, actor: str, t: int) -> tuple[list[_Grant], list[_Grant]]:
    granted = [d for d in flow.delegations if d.to == actor and d.granted <= t]
    return granted, [d for d in granted if t <= d.expires]


def _delegators(flow: _Flow, actor: str, t: int) -> set[str]:
    found: set[str] = set()
    frontier = {actor}
    while frontier:
        nxt = {d.by for d in flow.delegations if d.to in frontier and d.granted <= t}
        frontier = nxt - found
        found |= nxt
    return found


def _entitlement(flow: _Flow, actor: str, t: int, codes: set[str], acting: bool) -> set[str] | None:
    assert flow.started is not None
    if actor == flow.started["agent"]["workload_id"]:
        return set(flow.started["grant"]["scopes"])
    granted, live = _covering(flow, actor, t)
    if live:
        return set().union(*(d.scopes for d in live))
    if acting:
        codes.add("delegation_expired" if granted else "undelegated_actor")
    return None


class Oracle:
    """Finding codes per event, computed offline from every event at once, by event time."""

    def __init__(self, events: Iterable[Event]) -> None:
        unique: dict[str, Event] = {}
        for ev in events:
            unique.setdefault(ev["event_id"], ev)
        self.events = sorted(unique.values(), key=lambda e: _ms(e["occurred_at"]))
        self.flows: dict[str, _Flow] = defaultdict(_Flow)
        for ev in self.events:
            flow = self.flows[ev["workflow_id"]]
            if ev["event_type"] == "workflow.started":
                flow.started = ev
            elif ev["event_type"] == "workflow.completed":
                flow.completed_at = _ms(ev["occurred_at"])
        self.presenters: dict[str, dict[str, set[str]]] = defaultdict(dict)
        self.by_event: dict[str, set[str]] = {}
        for ev in self.events:
            self.by_event[ev["event_id"]] = self._codes(ev)

    def by_workflow(self) -> dict[str, frozenset[str]]:
        """Union of the codes raised in each workflow."""
        out: dict[str, set[str]] = defaultdict(set)
        for ev in self.events:
            out[ev["workflow_id"]] |= self.by_event[ev["event_id"]]
        return {wf: frozenset(codes) for wf, codes in out.items()}

    def _codes(self, ev: Event) -> set[str]:
        codes: set[str] = set()
        flow = self.flows[ev["workflow_id"]]
        t, actor = _ms(ev["occurred_at"]), ev["agent"]["workload_id"]
        kind = ev["event_type"]
        acting = kind in ("tool_call.intent", "delegation.granted")
        entitled: set[str] | None = None
        if flow.started is None:
            if kind == "tool_call.intent":
                codes.add("unknown_workflow")
        else:
            entitled = _entitlement(flow, actor, t, codes, acting)
            self._grant_checks(ev, flow, t, codes)
            if kind == "delegation.granted":
                self._delegation_checks(ev, flow, actor, t, entitled, codes)
        if "credential" in ev:
            self._credential_checks(ev, flow, actor, t, entitled, codes)
        return codes

    def _grant_checks(self, ev: Event, flow: _Flow, t: int, codes: set[str]) -> None:
        assert flow.started is not None
        grant = flow.started["grant"]
        acting = ev["event_type"] in ("tool_call.intent", "delegation.granted")
        if acting and t > _ms(grant["not_after"]):
            codes.add("task_window_exceeded")
        if ev["event_type"] != "tool_call.intent":
            return
        action = ev["action"]
        if grant["tools"] and action["tool"] not in grant["tools"]:
            codes.add("tool_not_granted")
        if _RANK[action["data_sensitivity"]] > _RANK[grant["max_sensitivity"]]:
            codes.add("sensitivity_exceeded")
        if grant["destinations"] and action["destination"] not in grant["destinations"]:
            codes.add("destination_not_granted")
        if flow.completed_at is not None and t > flow.completed_at:
            codes.add("activity_after_completion")

    def _delegation_checks(
        self,
        ev: Event,
        flow: _Flow,
        actor: str,
        t: int,
        entitled: set[str] | None,
        codes: set[str],
    ) -> None:
        assert flow.started is not None
        dlg = ev["delegation"]
        scopes = frozenset(dlg["scopes"])
        if entitled is not None and not scopes <= entitled:
            codes.add("delegation_amplification")
        if actor == flow.started["agent"]["workload_id"]:
            depth = 1
        else:
            _, live = _covering(flow, actor, t)
            depth = 1 + min((d.depth for d in live), default=_MAX_CHAIN)
        if depth > _MAX_CHAIN:
            codes.add("delegation_depth_exceeded")
        flow.delegations.append(
            _Grant(dlg["to_workload_id"], actor, t, _ms(dlg["expires_at"]), scopes, depth)
        )

    def _credential_checks(
        self,
        ev: Event,
        flow: _Flow,
        actor: str,
        t: int,
        entitled: set[str] | None,
        codes: set[str],
    ) -> None:
        cred = ev["credential"]
        inherited = False
        if cred["subject"] != actor:
            if flow.started is not None and cred["subject"] in _delegators(flow, actor, t):
                codes.add("inherited_credential")
                inherited = True
            else:
                codes.add("identity_mismatch")
        if entitled is not None and not set(cred["scopes"]) <= entitled:
            codes.add("scope_escalation")
        if t > _ms(cred["expires_at"]):
            codes.add("credential_expired")
        seen = self.presenters[cred["token_id"]]
        if not inherited and any(w != actor for w in seen):
            codes.add("credential_reuse")
        if seen.get(actor, set()) - {ev["workflow_id"]}:
            codes.add("credential_shared_across_workflows")
        seen.setdefault(actor, set()).add(ev["workflow_id"])


def _policy_violations(ev: Event, depth: int, autonomy: str) -> list[str]:
    """What the default Cedar pack forbids, read more strictly (no delete by any delegatee)."""
    action = ev.get("action")
    if action is None:
        return []
    bad = []
    level = _RANK[action["data_sensitivity"]]
    if action["operation"] == "admin":
        bad.append("admin")
    if action["operation"] == "transfer" and level >= 2:
        bad.append("transfer of confidential+")
    if action["operation"] == "delete" and depth > 0:
        bad.append("delete by a delegatee")
    if action["resource"].split(":")[0] in ("vault", "secret"):
        bad.append("secret material")
    when = datetime.fromisoformat(ev["occurred_at"]).astimezone(UTC)
    after_hours = when.weekday() >= 5 or not 6 <= when.hour < 20
    if level == 3 and autonomy == "high" and after_hours:
        bad.append("restricted data in a high-autonomy workflow after hours")
    return bad


# -- fixtures --------------------------------------------------------------------------------

_ATTACKED = FleetConfig(seed=11, workflows=420, concurrency=24, attack_rate=0.4)
_BENIGN = FleetConfig(seed=5, workflows=400, concurrency=24, attack_rate=0.0)


@pytest.fixture(scope="module")
def attacked() -> list[FleetEvent]:
    return list(generate(_ATTACKED))


@pytest.fixture(scope="module")
def benign() -> list[FleetEvent]:
    return list(generate(_BENIGN))


# -- tests -----------------------------------------------------------------------------------


def test_same_seed_same_bytes_and_other_seed_differs() -> None:
    config = FleetConfig(seed=3, workflows=60, concurrency=8, attack_rate=0.3)
    first = b"\n".join(iter_json_lines(config))
    assert first == b"\n".join(iter_json_lines(config))
    assert first != b"\n".join(iter_json_lines(FleetConfig(seed=4, workflows=60, concurrency=8)))
    assert ground_truth(config) == ground_truth(config)


def test_json_lines_match_generate() -> None:
    config = FleetConfig(seed=2, workflows=30, concurrency=4)
    assert list(iter_json_lines(config)) == [orjson.dumps(e.event) for e in generate(config)]


def test_every_event_meets_the_input_contract(attacked: list[FleetEvent]) -> None:
    for delivery in attacked:
        check_line(orjson.dumps(delivery.event))


def test_benign_traffic_raises_nothing(benign: list[FleetEvent]) -> None:
    oracle = Oracle(d.event for d in benign)
    raised = {wf: codes for wf, codes in oracle.by_workflow().items() if codes}
    assert raised == {}
    assert all(d.label is None for d in benign)
    assert set(oracle.by_workflow()) == set(ground_truth(_BENIGN))


def test_oracle_agrees_with_ground_truth(attacked: list[FleetEvent]) -> None:
    oracle = Oracle(d.event for d in attacked)
    assert oracle.by_workflow() == ground_truth(_ATTACKED)


def test_labels_mark_exactly_the_offending_events(attacked: list[FleetEvent]) -> None:
    oracle = Oracle(d.event for d in attacked)
    for delivery in attacked:
        codes = oracle.by_event[delivery.event["event_id"]]
        assert bool(codes) == (delivery.label is not None), delivery.event
        if delivery.label is not None:
            assert codes <= CODES[AttackKind(delivery.label)]


def test_every_attack_kind_is_injected(attacked: list[FleetEvent]) -> None:
    truth = ground_truth(_ATTACKED)
    assert {codes for codes in truth.values() if codes} == set(CODES.values())
    assert {d.label for d in attacked} - {None} == set(AttackKind)
    attacked_share = sum(1 for c in truth.values() if c) / _ATTACKED.workflows
    assert 0.3 < attacked_share < 0.5


def test_no_event_breaks_the_org_policy_pack(attacked: list[FleetEvent]) -> None:
    grants = {
        d.event["workflow_id"]: d.event
        for d in attacked
        if d.event["event_type"] == "workflow.started"
    }
    high_autonomy_log_reads_after_hours = 0
    for delivery in attacked:
        ev = delivery.event
        started = grants.get(ev["workflow_id"])
        autonomy = started["grant"]["autonomy"] if started else ""
        initiator = started["agent"]["workload_id"] if started else None
        depth = 0 if ev["agent"]["workload_id"] == initiator else 1
        assert _policy_violations(ev, depth, autonomy) == [], ev
        if autonomy == "high" and ev.get("action", {}).get("tool") == "logs.search":
            high_autonomy_log_reads_after_hours += 1
    # The default start is a Saturday: the after-hours rule was exercised and held.
    assert high_autonomy_log_reads_after_hours > 0


def test_benign_tokens_belong_to_one_workload_in_one_workflow(benign: list[FleetEvent]) -> None:
    owners: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for d in benign:
        if cred := d.event.get("credential"):
            owners[cred["token_id"]].add((d.event["workflow_id"], d.event["agent"]["workload_id"]))
            assert cred["subject"] == d.event["agent"]["workload_id"]
    assert all(len(v) == 1 for v in owners.values())


def test_benign_fleet_has_realistic_structure(benign: list[FleetEvent]) -> None:
    events = [d.event for d in benign if not d.duplicate]
    types = Counter(e["event_type"] for e in events)
    assert types["workflow.started"] == types["workflow.completed"] == _BENIGN.workflows
    assert types["delegation.granted"] > 50
    ops = Counter(e["action"]["operation"] for e in events if "action" in e)
    assert ops["read"] > ops["write"] > ops["execute"] > 0
    grants = [e["grant"] for e in events if e["event_type"] == "workflow.started"]
    assert any(not g["tools"] for g in grants)
    assert any(not g["destinations"] for g in grants)
    per_wf = Counter(e["workflow_id"] for e in events)
    assert max(per_wf.values()) > 150  # long batch jobs
    tokens_per_wf: dict[str, set[str]] = defaultdict(set)
    for e in events:
        if e["event_type"] == "tool_call.intent" and "delegation_id" not in e:
            tokens_per_wf[e["workflow_id"]].add(e["credential"]["token_id"])
    assert sum(1 for v in tokens_per_wf.values() if len(v) > 1) > 20  # refreshes
    suffixes = Counter(e["occurred_at"][23:] for e in events)
    assert suffixes["Z"] > 0  # most emitters write "Z", some write an offset
    assert len(suffixes) > 2


def test_delegations_sometimes_arrive_after_their_first_use(benign: list[FleetEvent]) -> None:
    granted_at: dict[str, int] = {}
    late = 0
    for position, d in enumerate(benign):
        if d.event["event_type"] == "delegation.granted":
            granted_at.setdefault(d.event["delegation"]["delegation_id"], position)
    first_use: dict[str, int] = {}
    for position, d in enumerate(benign):
        if dlg := d.event.get("delegation_id"):
            first_use.setdefault(dlg, position)
    late = sum(1 for dlg, pos in first_use.items() if pos < granted_at[dlg])
    assert late > 0


def test_disorder_is_bounded_and_present(attacked: list[FleetEvent]) -> None:
    bound = int(_ATTACKED.disorder * 1000)
    newest = 0
    inversions = 0
    arrivals = [d.arrival for d in attacked]
    assert arrivals == sorted(arrivals)
    for d in attacked:
        t = _ms(d.event["occurred_at"])
        assert newest - t <= bound
        assert t <= d.arrival <= t + bound
        inversions += t < newest
        newest = max(newest, t)
    assert inversions > len(attacked) / 100


def test_duplicates_at_roughly_the_configured_rate() -> None:
    config = FleetConfig(seed=8, workflows=400, duplicate_rate=0.05)
    deliveries = list(generate(config))
    first: dict[str, FleetEvent] = {}
    dups = 0
    for d in deliveries:
        eid = d.event["event_id"]
        if d.duplicate:
            dups += 1
            assert first[eid].event == d.event  # original already delivered, same payload
        else:
            assert eid not in first
            first[eid] = d
    assert 0.035 < dups / len(first) < 0.065


def test_no_duplicates_or_disorder_when_disabled() -> None:
    config = FleetConfig(seed=1, workflows=100, disorder=0.0, duplicate_rate=0.0)
    deliveries = list(generate(config))
    times = [_ms(d.event["occurred_at"]) for d in deliveries]
    assert times == sorted(times)
    assert len({d.event["event_id"] for d in deliveries}) == len(deliveries)


@pytest.mark.slow
def test_memory_stays_flat_for_long_streams() -> None:
    stream = generate(FleetConfig(seed=9, workflows=10**9, concurrency=32))
    tracemalloc.start()
    try:
        for _ in itertools.islice(stream, 20_000):
            pass
        settled, _ = tracemalloc.get_traced_memory()
        for _ in itertools.islice(stream, 100_000):
            pass
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Holding on to 100k events would cost ~100 MB; the live window is a few MB.
    assert current < 1.5 * settled + 2_000_000
    assert peak < 32_000_000


def test_malformed_lines_are_all_rejected_and_never_blank() -> None:
    cases = malformed_cases(4, 3 * len(MALFORMED_CASES))
    assert {name for name, _ in cases} == set(MALFORMED_CASES)
    for name, line in cases:
        assert line.strip(), name
        assert b"\n" not in line, name
        assert b"\r" not in line, name
        with pytest.raises(ContractError):
            check_line(line)
    assert malformed_lines(4, 10) == [line for _, line in cases[:10]]


def test_config_rejects_what_would_break_the_contract() -> None:
    with pytest.raises(ValueError, match="disorder"):
        FleetConfig(disorder=5.0)
    with pytest.raises(ValueError, match="timezone"):
        FleetConfig(start=datetime(2026, 1, 1))  # noqa: DTZ001 - the point of the test
    with pytest.raises(ValueError, match="attack_rate"):
        FleetConfig(attack_rate=1.5)


def test_attack_kinds_may_be_named_by_string() -> None:
    config = FleetConfig(workflows=30, attack_rate=1.0, attack_kinds=("exfiltration",))
    assert config.attack_kinds == (AttackKind.EXFILTRATION,)
    assert set(ground_truth(config).values()) == {frozenset({"destination_not_granted"})}


def test_start_time_anchors_the_stream() -> None:
    start = datetime(2030, 5, 1, 9, 30, tzinfo=UTC)
    config = FleetConfig(seed=1, start=start, workflows=20)
    times = [_ms(d.event["occurred_at"]) for d in generate(config)]
    begin = int(start.timestamp() * 1000)
    assert begin <= min(times) < begin + int(timedelta(minutes=2).total_seconds() * 1000)


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**32), kinds=st.sets(st.sampled_from(list(AttackKind)), min_size=1))
def test_any_seed_any_attack_mix_is_truthful(seed: int, kinds: set[AttackKind]) -> None:
    config = FleetConfig(
        seed=seed, workflows=40, concurrency=6, attack_rate=0.5, attack_kinds=tuple(sorted(kinds))
    )
    deliveries = list(generate(config))
    assert Oracle(d.event for d in deliveries).by_workflow() == ground_truth(config)
