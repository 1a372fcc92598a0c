"""Attacks by timing on the core (issue 18, items 2, 4, 13, 14, 15): each one reproduced.

Extreme but valid timestamps never crash or lose an output; one event's failure dead-letters
that event only; one forward-dated event cannot fire everyone's waiting checks in a replay;
event ids are remembered for the whole dedup window; a violation cannot be downgraded by dating
it just outside its workflow's lifetime; and a second ``workflow.started`` cannot make results
depend on arrival order.
"""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from builders import at, call, completed, delegate, parse, started
from scenarios import run
from tether.core import Context, DetectionConfig, Monitor, Outbox
from tether.core.handoff import Standing
from tether.core.ports import PolicyOutcome
from tether.models.events import ToolCallIntent
from tether.models.session import Session
from tether.replay import Replayer
from tether.security import SetSigner, generate_key
from worker_doubles import make_worker, records

FAR_FUTURE = "9999-12-31T23:59:59Z"
YEAR_ONE = "0001-01-01T00:30:00+01:00"


def _jsonl(events: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(e) + b"\n" for e in events)


def _replay(events: list[dict[str, Any]], ctx: Context | None = None) -> list[dict[str, Any]]:
    out = io.BytesIO()
    rep = Replayer(Monitor(ctx or Context(DetectionConfig())), out.write, decisions=True)
    rep.run(io.BytesIO(_jsonl(events)))
    return [orjson.loads(line) for line in out.getvalue().splitlines()]


def _codes(records: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return sorted((r["code"], r["workflow_id"]) for r in records if r["kind"] == "finding")


def _far_expiry(ev: dict[str, Any]) -> dict[str, Any]:
    ev["credential"]["expires_at"] = FAR_FUTURE
    return ev


# -- item 2: datetime edges, failure isolation ---------------------------------------------


def _escalation(wf: str, token: str, **kw: Any) -> list[dict[str, Any]]:
    return [
        started(wf, "planner", f"{token}-p", scopes=["crm:read"]),
        call(wf, "planner", token, t=1, scopes=["crm:read", "crm:admin"], **kw),
    ]


# Intake bounds the timestamps it accepts; the core must be safe by itself all the same, so
# these events reach it without validation (``model_copy`` does not validate).
FAR = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
EARLY = datetime(1, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1)))


def _edge(raw: dict[str, Any], *, credential: dict[str, Any] | None = None, **top: Any) -> Any:
    ev = parse(raw)
    if credential:
        top["credential"] = ev.credential.model_copy(update=credential)
    return ev.model_copy(update=top)


def _fold(events: list[Any]) -> Outbox:
    mon = Monitor(Context(DetectionConfig()))
    out = Outbox()
    for ev in events:
        out.extend(mon.process(ev if not isinstance(ev, dict) else parse(ev)))
    out.extend(mon.flush())
    assert not out.failures
    return out


def _found(out: Outbox) -> list[tuple[str, str]]:
    return sorted((f.code, f.workflow_id) for f in out.findings)


def test_a_token_that_expires_in_year_9999_is_revoked_not_a_crash() -> None:
    start, esc = _escalation("wf-far", "tok-far")
    out = _fold([start, _edge(esc, credential={"expires_at": FAR}), *_escalation("wf-ok", "tok")])
    assert _found(out) == [("scope_escalation", "wf-far"), ("scope_escalation", "wf-ok")]
    (far,) = [r for r in out.revocations if r.target.id == "tok-far"]
    assert far.not_after == FAR


def test_an_event_dated_in_year_one_is_judged_not_a_crash() -> None:
    early = _edge(call("wf-old", "planner", "tok-old", t=1), occurred_at=EARLY)
    out = _fold([early, *_escalation("wf-ok", "tok-ok")])
    assert ("scope_escalation", "wf-ok") in _found(out)
    (old,) = [f for f in out.findings if f.workflow_id == "wf-old"]
    assert old.code == "unknown_workflow"
    assert old.event_time == datetime(1, 1, 1, tzinfo=UTC)  # saturated, not an error


def test_a_far_future_grant_and_delegation_are_judged_not_a_crash() -> None:
    start = parse(started("wf-1", "planner", "tok-p", scopes=["crm:read"]))
    start = start.model_copy(update={"grant": start.grant.model_copy(update={"not_after": FAR})})
    hand = parse(
        delegate(
            "wf-1",
            "planner",
            "helper",
            "tok-p",
            scopes=["crm:read", "crm:admin"],
            holder_scopes=["crm:read"],
        )
    )
    hand = hand.model_copy(
        update={"delegation": hand.delegation.model_copy(update={"expires_at": FAR})}
    )
    late = _edge(call("wf-1", "helper", "tok-h", t=20), occurred_at=FAR)
    out = _fold([start, hand, late, completed("wf-1", "planner", "tok-p", t=10)])
    assert ("delegation_amplification", "wf-1") in _found(out)
    assert all(r.not_after <= FAR for r in out.revocations)


class _Exploding:
    """A per-call policy that fails on one tool (any unexpected error inside the core)."""

    armed = True

    def check(self, session: Session, event: ToolCallIntent, standing: Standing) -> PolicyOutcome:
        if self.armed and event.action.tool == "boom":
            raise RuntimeError("policy engine fell over")
        return PolicyOutcome(allowed=True)


def test_one_events_failure_dead_letters_it_and_spares_the_others() -> None:
    ctx = Context(DetectionConfig(), _Exploding())
    events = [
        *_escalation("wf-a", "tok-a"),
        call("wf-a", "planner", "tok-a-p", t=2, tool="boom", eid="bad"),
        *_escalation("wf-b", "tok-b"),
        call("wf-a", "planner", "tok-a-p", t=3, eid="after"),
    ]
    records = _replay(events, ctx)
    (dead,) = [r for r in records if r["kind"] == "deadletter"]
    assert dead["reason"] == "internal_error"
    assert dead["event_id"] == "bad"
    assert "policy engine fell over" in dead["error"]
    assert dead["source"]["line"] == 3
    assert _codes(records) == [("scope_escalation", "wf-a"), ("scope_escalation", "wf-b")]
    decided = {r["event_id"] for r in records if r["kind"] == "decision"}
    assert "after" in decided
    assert "bad" not in decided


def test_a_failed_event_loses_nothing_when_it_is_delivered_again() -> None:
    """The failure is the core's, not the event's: once the cause is gone, a redelivery of the
    event is judged afresh (its id is forgotten) and raises what it would have raised."""
    policy = _Exploding()
    mon = Monitor(Context(DetectionConfig(), policy))
    for ev in _escalation("wf-a", "tok-a"):
        mon.process(parse(ev))
    bad = call("wf-a", "planner", "tok-new", t=2, tool="boom", scopes=["crm:admin"], eid="bad")
    out = mon.process(parse(bad))
    assert [f.event.event_id for f in out.failures if f.event is not None] == ["bad"]
    assert not out.findings
    assert not out.decisions
    assert "bad" not in mon.sessions["wf-a"].seen
    policy.armed = False
    again = mon.process(parse(bad))
    assert sorted(f.code for f in again.findings) == ["scope_escalation", "tool_not_granted"]
    assert [d.event_id for d in again.decisions] == ["bad"]


@pytest.fixture(scope="module")
def signer() -> SetSigner:
    return SetSigner(generate_key("ES256"), issuer="https://tether.test", token_issuer="sts")


def test_the_worker_keeps_every_other_events_outputs(signer: SetSigner) -> None:
    published: list[Any] = []

    async def publish_many(entries: list[Any]) -> list[Any]:
        published.extend(entries)
        return []

    year_one = call("wf-old", "planner", "tok-old", t=1, scopes=["crm:admin"], eid="old")
    year_one["occurred_at"] = YEAR_ONE
    far = _escalation("wf-far", "tok-far")
    _far_expiry(far[1])
    batch = [*_escalation("wf-a", "tok-a"), year_one, *far, *_escalation("wf-b", "tok-b")]
    batch.append(completed("wf-a", "planner", "tok-a-p", t=4))

    async def scenario() -> None:
        w = make_worker(signer, publish_many=publish_many)
        await w.on_intents(records(*batch))
        await w.drain()

    asyncio.run(scenario())
    topics = [e[0] for e in published]
    assert topics.count("tether.revocations") >= 3  # two escalations and a completion
    findings = [orjson.loads(e[2]) for e in published if e[0] == "tether.findings"]
    assert {(f["code"], f["workflow_id"]) for f in findings} >= {
        ("scope_escalation", "wf-a"),
        ("scope_escalation", "wf-b"),
    }
    decisions = [orjson.loads(e[2]) for e in published if e[0] == "tether.decisions"]
    assert {d["workflow_id"] for d in decisions} >= {"wf-a", "wf-b"}


# -- item 4: a forward-dated event in a replay ---------------------------------------------


def test_one_forward_dated_event_does_not_fire_everyones_waiting_checks() -> None:
    honest = [
        started("wf-1", "planner", "tok-p"),
        call("wf-1", "helper", "tok-h", t=1.0),  # its delegation is 1 s late, as a hand-off can be
        started("wf-evil", "mallory", "tok-m", t=290),
        delegate("wf-1", "planner", "helper", "tok-p", t=0.5),
        call("wf-1", "planner", "tok-p", t=2.0),
    ]
    assert _codes(_replay(honest)) == []


def test_the_replay_watermark_still_follows_an_honest_stream() -> None:
    events = [started("wf-1", "planner", "tok-p"), started("wf-2", "planner", "tok-q", t=1)]
    events += [call(f"wf-{1 + i % 2}", "x", f"tok-x{i}", t=60 * i) for i in range(1, 6)]
    mon = Monitor(Context(DetectionConfig()))
    found = []
    for ev in events:
        found += [f.code for f in mon.process(parse(ev)).findings]
    assert found.count("undelegated_actor") >= 2  # fired as the stream moved on, not at the end


# -- item 13: event ids remembered for the dedup window ------------------------------------


def _benign(wf: str = "wf-1") -> list[dict[str, Any]]:
    return [
        started(wf, "planner", "tok-p"),
        call(wf, "planner", "tok-p", t=1, eid=f"{wf}-call"),
        completed(wf, "planner", "tok-p", t=10),
    ]


def _later(events: list[dict[str, Any]], *, clock_at: float) -> list[dict[str, Any]]:
    """Another workflow's event at ``clock_at`` moves event time on."""
    tick = started(f"wf-clock-{clock_at}", "other", f"tok-c{clock_at}", t=clock_at)
    tick["credential"]["expires_at"] = at(clock_at + 600)
    tick["grant"]["not_after"] = at(clock_at + 600)
    return [*events, tick]


def test_a_redelivery_30s_after_completion_is_still_a_duplicate() -> None:
    events = _later(_benign(), clock_at=40)
    events.append(_benign()[1])  # the call again
    decisions = [r for r in _replay(events) if r["kind"] == "decision"]
    assert [d["event_id"] for d in decisions] == ["wf-1-call"]


def test_a_redelivery_20min_after_completion_raises_nothing() -> None:
    events = _later(_benign(), clock_at=1200)
    events.append(_benign()[1])
    records = _replay(events)
    assert _codes(records) == []
    assert [d["event_id"] for d in records if d["kind"] == "decision"] == ["wf-1-call"]


def test_ids_survive_the_session_being_serialized_after_completion() -> None:
    from tether.models.state_codec import dump_session, load_session

    mon = Monitor(Context(DetectionConfig()))
    for ev in _later(_benign(), clock_at=40):
        mon.process(parse(ev))
    s = load_session(dump_session(mon.sessions["wf-1"]))
    assert "wf-1-call" in s.seen


# -- item 14: evasion by timing ------------------------------------------------------------


def test_a_call_20min_after_completion_is_activity_after_completion() -> None:
    events = _later(_benign(), clock_at=1200)
    events.append(call("wf-1", "planner", "tok-p", t=1205, scopes=["crm:admin"]))
    records = _replay(events)
    assert ("activity_after_completion", "wf-1") in _codes(records)
    assert ("unknown_workflow", "wf-1") not in _codes(records)
    revoked = {(r["target"]["id"], r["reason"]) for r in records if r["kind"] == "revocation"}
    assert ("tok-p", "activity_after_completion") in revoked


def test_a_workflow_is_remembered_while_its_credentials_are_valid() -> None:
    events = _benign()
    for ev in events:
        ev["credential"]["expires_at"] = at(3 * 3600)  # a long-lived token
    events = _later(events, clock_at=2 * 3600)  # past the dedup window and the retention
    events.append(call("wf-1", "planner", "tok-p", t=2 * 3600 + 5, expires=3 * 3600))
    codes = _codes(_replay(events))
    assert ("activity_after_completion", "wf-1") in codes
    assert ("unknown_workflow", "wf-1") not in codes


def test_a_violating_call_dated_before_the_start_is_not_downgraded() -> None:
    events = [
        started("wf-1", "planner", "tok-p", t=10, scopes=["crm:read"]),
        call("wf-1", "planner", "tok-p", t=9, scopes=["crm:read", "crm:admin"], tool="shell.exec"),
    ]
    codes = {c for c, _ in _codes(_replay(events))}
    assert {"scope_escalation", "tool_not_granted"} <= codes


def test_a_stranger_dated_before_the_start_is_undelegated() -> None:
    events = [
        started("wf-1", "planner", "tok-p", t=10),
        call("wf-1", "mallory", "tok-m", t=9),
    ]
    codes = {c for c, _ in _codes(_replay(events))}
    assert "undelegated_actor" in codes


def test_a_benign_call_dated_before_the_start_is_only_unknown_workflow() -> None:
    events = [started("wf-1", "planner", "tok-p", t=10), call("wf-1", "planner", "tok-p", t=9)]
    assert _codes(_replay(events)) == [("unknown_workflow", "wf-1")]


# -- item 15: a second workflow.started ----------------------------------------------------


def _two_starts() -> list[dict[str, Any]]:
    narrow = started("wf-1", "planner", "tok-p", t=0, scopes=["crm:read"], eid="s-narrow")
    wide = started("wf-1", "planner", "tok-p", t=1, scopes=["crm:read", "crm:admin"], eid="s-wide")
    esc = call("wf-1", "planner", "tok-p2", t=2, scopes=["crm:read", "crm:admin"], eid="c")
    return [narrow, wide, esc]


@pytest.mark.parametrize("order", [(0, 1, 2), (1, 2, 0), (1, 0, 2), (2, 1, 0)])
def test_two_starts_give_the_same_result_in_any_order(order: tuple[int, ...]) -> None:
    events = [_two_starts()[i] for i in order]
    r = run(events)
    assert r.codes == {("grant_conflict", "wf-1"), ("scope_escalation", "wf-1")}
    assert ("workflow", "wf-1", "grant_conflict") in r.revoked


def test_a_repeated_start_with_the_same_grant_is_not_a_conflict() -> None:
    a = started("wf-1", "planner", "tok-p", t=0, eid="s-1")
    b = started("wf-1", "planner", "tok-p", t=0.5, eid="s-2")
    assert run([b, a, call("wf-1", "planner", "tok-p", t=2)]).codes == set()


def test_outputs_are_stamped_within_the_datetime_range() -> None:
    out = _fold([_edge(call("wf-1", "planner", "tok", t=1), occurred_at=FAR)])
    assert out.findings
    assert all(f.detected_at == FAR for f in out.findings)


def test_the_worker_dead_letters_a_failed_event_and_keeps_the_rest(signer: SetSigner) -> None:
    published: list[Any] = []

    async def publish_many(entries: list[Any]) -> list[Any]:
        published.extend(entries)
        return []

    batch = [
        *_escalation("wf-a", "tok-a"),
        call("wf-a", "planner", "tok-a-p", t=2, tool="boom", eid="bad"),
        *_escalation("wf-b", "tok-b"),
    ]

    async def scenario() -> None:
        w = make_worker(signer, publish_many=publish_many)
        w.engine.ctx = Context(w.engine.ctx.cfg, _Exploding())
        await w.on_intents(records(*batch))
        await w.drain()

    asyncio.run(scenario())
    dead = [orjson.loads(e[2]) for e in published if e[0] == "tether.deadletter"]
    assert [(d["reason"], d["event_id"], d["source"]["offset"]) for d in dead] == [
        ("internal_error", "bad", 2)
    ]
    assert "policy engine fell over" in dead[0]["error"]
    findings = [orjson.loads(e[2]) for e in published if e[0] == "tether.findings"]
    assert {(f["code"], f["workflow_id"]) for f in findings} == {
        ("scope_escalation", "wf-a"),
        ("scope_escalation", "wf-b"),
    }
