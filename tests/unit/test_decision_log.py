"""The decision log matches enforcement: each tool-call intent's decision is what a gateway's
``RevocationSet``, fed the same run's signed revocations in output order, answers for the call.

Weakness reproduced (issue 22, item 3): a call with token ``jti-p`` after it was revoked was
logged ``allow``; calls in a never-started workflow were logged ``allow``; ``credential_reuse``
never appeared in a decision; a call waiting for its grace period had no decision until then.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builders import T0, call, completed, delegate, parse, started, wl
from scenarios import run
from sdk_helpers import FakeClock
from tether.core import Context, DetectionConfig, Monitor
from tether.core.decisions import DecisionLog, judge
from tether.core.floor import NotAfterFloor
from tether.demo.fleet import FleetConfig, iter_json_lines
from tether.models.outputs import Decision, Revocation
from tether.replay import Replayer
from tether.sdk.revocation_set import RevocationSet
from tether.security.keys import generate_key
from tether.security.sets import SetSigner, SetVerifier, StaticKeys

W = "wf-1"
ISSUER = "https://tether.test"


def finals(decisions: Iterable[Decision]) -> dict[str, Decision]:
    """The last decision per intent (what a reader of the log keeps)."""
    last: dict[str, Decision] = {}
    for d in decisions:
        last[d.event_id] = d
    return last


def _log(events: list[dict[str, Any]], cfg: DetectionConfig | None = None) -> list[Decision]:
    return run(events, cfg).out.decisions


# ------------------------------------------------------------------ table: revoked -> deny


def _token_revoked() -> list[dict[str, Any]]:
    return [
        started(W, "planner", "jti-p", t=0),
        call(W, "planner", "jti-p", tool="shell.exec", t=1),  # tool_not_granted: jti-p revoked
        call(W, "planner", "jti-p", t=2, eid="probe"),
    ]


def _token_revoked_elsewhere() -> list[dict[str, Any]]:
    return [
        *_token_revoked()[:2],
        started("wf-2", "planner", "jti-q", t=0),
        call("wf-2", "planner", "jti-p", t=3, eid="probe"),  # the revoked token, another workflow
    ]


def _workflow_revoked() -> list[dict[str, Any]]:
    return [
        started(W, "planner", "jti-p", t=0),
        call(W, "intruder", "jti-i", holder="intruder", t=1),  # undelegated_actor, after grace
        call(W, "planner", "jti-p", t=10, eid="probe"),
    ]


def _workload_revoked() -> list[dict[str, Any]]:
    return [
        started(W, "planner", "jti-p", t=0),
        call(W, "planner", "jti-x", holder="other", t=1),  # identity_mismatch: quarantined
        started("wf-2", "planner", "jti-q", t=0),
        call(W, "planner", "jti-p", t=8),  # event time passes the mismatch's grace period
        call("wf-2", "planner", "jti-q", t=9, eid="probe"),
    ]


def _delegation_revoked() -> list[dict[str, Any]]:
    return [
        started(W, "planner", "jti-p", t=0, scopes=["crm:read"]),
        # wider than the delegator's grant: delegation_amplification revokes d-1 and the workflow
        delegate(W, "planner", "summarizer", "jti-p", did="d-1", scopes=["crm:write"], t=0.5),
        call(W, "summarizer", "jti-s", t=2, eid="probe"),
    ]


def _completed_token() -> list[dict[str, Any]]:
    return [
        started(W, "planner", "jti-p", t=0),
        call(W, "planner", "jti-p", t=1),
        completed(W, "planner", t=2),  # task_completed revokes jti-p
        started("wf-2", "planner", "jti-q", t=2.5),
        call("wf-2", "planner", "jti-p", t=3, eid="probe"),
    ]


@pytest.mark.parametrize(
    ("events", "target"),
    [
        (_token_revoked, "token:jti-p"),
        (_token_revoked_elsewhere, "token:jti-p"),
        (_workflow_revoked, f"workflow:{W}"),
        (_workload_revoked, f"workload:{wl('planner')}"),
        (_delegation_revoked, "delegation:d-1"),
        (_completed_token, "token:jti-p"),
    ],
    ids=["token", "token-other-workflow", "workflow", "workload", "delegation", "completion"],
)
def test_a_call_with_a_revoked_target_is_denied_as_revoked(events: Any, target: str) -> None:
    last = finals(_log(events()))
    probe = last["probe"]
    assert probe.decision == "deny"
    assert probe.reason == "revoked"
    assert target in probe.revoked_targets


def test_a_call_nothing_revokes_is_allowed() -> None:
    last = finals(_log([started(W, "planner", "jti-p", t=0), call(W, "planner", "jti-p", t=1)]))
    assert [(d.decision, d.reason, d.findings) for d in last.values()] == [("allow", None, [])]


def test_a_call_in_a_never_started_workflow_is_pending_then_decided_with_its_finding() -> None:
    log = _log([call("wf-x", "alpha", "tok-1", t=1, eid="c1"), call("wf-x", "alpha", "tok-1", t=2)])
    first = [d for d in log if d.event_id == "c1"]
    assert (first[0].decision, first[0].reason, first[0].final) == (
        "pending",
        "awaiting_checks",
        False,
    )
    last = finals(log)
    assert len(last) == 2
    for d in last.values():  # every call of the workflow says why no policy decided it
        assert d.final
        assert d.findings == ["unknown_workflow"]
        assert d.policy_ids == []
        # unknown_workflow only alerts by default: a gateway lets the call through
        assert d.decision == "allow"


def test_a_never_started_workflow_tuned_to_quarantine_is_pending_then_denied() -> None:
    cfg = DetectionConfig(response={"unknown_workflow": ("quarantine_workload",)})
    log = _log([call("wf-x", "alpha", "tok-1", t=1, eid="c1")], cfg)
    assert [(d.decision, d.final) for d in log] == [("pending", False), ("deny", True)]
    assert log[-1].revoked_targets == [f"workload:{wl('alpha')}"]
    assert log[-1].findings == ["unknown_workflow"]


def test_a_pending_call_whose_target_is_already_revoked_is_denied_at_once() -> None:
    # jti-p is revoked; a later call in a workflow not started yet must wait for its checks,
    # but a gateway denies it now
    log = _log([*_token_revoked()[:2], call("wf-late", "planner", "jti-p", t=3, eid="probe")])
    probe = [d for d in log if d.event_id == "probe"]
    assert (probe[0].decision, probe[0].final) == ("deny", False)
    assert (probe[-1].decision, probe[-1].final) == ("deny", True)


def test_credential_reuse_appears_in_the_decision_of_the_call_it_names() -> None:
    events = [
        started(W, "planner", "jti-p", t=0),
        call(W, "planner", "jti-p", t=1),
        started("wf-2", "thief", "jti-t", t=0),
        call("wf-2", "thief", "jti-p", holder="planner", t=2, eid="stolen"),
        call(W, "planner", "jti-p", t=30),  # moves event time past the uses' settlement
    ]
    log = _log(events)
    stolen = [d for d in log if d.event_id == "stolen"]
    assert len(stolen) >= 2  # decided, then updated when the token index found the reuse
    assert "credential_reuse" in stolen[-1].findings
    assert stolen[-1].decision == "deny"
    assert "token:jti-p" in stolen[-1].revoked_targets


def test_a_revocation_that_has_run_out_no_longer_denies() -> None:
    view = NotAfterFloor()
    d = Decision(
        event_id="e",
        workflow_id=W,
        workload_id="w",
        tool="t",
        decision="allow",
        findings=[],
        policy_ids=[],
        evaluated_at=T0,
        token_id="jti-1",
    )
    from sdk_helpers import revocation

    view.at_least(revocation("token", "jti-1", lasts=10, start=T0), T0.timestamp())
    assert judge(d, view).decision == "deny"
    later = d.model_copy(update={"evaluated_at": T0.replace(second=11)})
    assert judge(later, view).decision == "allow"


def test_the_log_of_decisions_kept_for_late_findings_is_bounded_in_time() -> None:
    log = DecisionLog(NotAfterFloor(), keep_s=10)
    mk = lambda i: Decision(  # noqa: E731
        event_id=f"e{i}",
        workflow_id=W,
        workload_id="w",
        tool="t",
        decision="allow",
        findings=[],
        policy_ids=[],
        evaluated_at=T0,
    )
    for i in range(3000):
        log.settle([mk(i)], 0, [], float(i))
    assert len(log) <= 11 + 256  # forgotten every 256 steps (amortized)


# -------------------------------------------- the decision log equals a Watcher, call by call


class Gateway:
    """A real ``RevocationSet`` fed the run's revocations, signed, in output order; its clock
    is the output's processing time (``evaluated_at`` / ``issued_at``)."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.clock.now = 0.0
        self.signer = SetSigner(generate_key("ES256"), issuer=ISSUER)
        verifier = SetVerifier(
            StaticKeys([self.signer.public_jwk()]), issuer=ISSUER, clock=self.clock
        )
        self.set = RevocationSet(staleness_s=math.inf, verifier=verifier, clock=self.clock)
        self.set.mark_ready()

    def apply(self, rev: Revocation) -> None:
        self.clock.now = max(self.clock.now, rev.issued_at.timestamp())
        assert self.set.apply(rev.target.key.encode(), self.signer.revocation(rev)) is not None

    def revoked(self, d: Decision, token_id: str | None) -> list[str]:
        self.clock.now = d.evaluated_at.timestamp()
        rs = self.set
        hits = []
        if rs.is_revoked(token_id=token_id) and token_id is not None:
            hits.append(f"token:{token_id}")
        if rs.is_revoked(workflow_id=d.workflow_id):
            hits.append(f"workflow:{d.workflow_id}")
        if rs.is_revoked(workload_id=d.workload_id):
            hits.append(f"workload:{d.workload_id}")
        hits.extend(f"delegation:{i}" for i in d.delegation_ids if rs.is_revoked(delegation_id=i))
        return sorted(hits)


def compare_with_watcher(lines: list[bytes], *, wall: bool = False) -> dict[str, int]:
    """Replay ``lines``; check every decision against a gateway fed the same output."""
    intents = {}
    for line in lines:
        raw = orjson.loads(line)
        if raw.get("event_type") == "tool_call.intent":
            intents[raw["event_id"]] = raw
    out: list[bytes] = []
    rep = Replayer(
        Monitor(Context(DetectionConfig())),
        out.append,
        decisions=True,
        clock="wall" if wall else "event",
    )
    rep.run(lines)
    gw = Gateway()
    counts = {"deny": 0, "allow": 0, "pending": 0, "reuse": 0}
    decided: set[str] = set()
    for line in out:
        rec = orjson.loads(line)
        if rec["kind"] == "revocation":
            gw.apply(Revocation.model_validate(rec))
        elif rec["kind"] == "decision":
            d = Decision.model_validate(rec)
            intent = intents[d.event_id]
            token = intent["credential"]["token_id"]
            assert d.token_id == token
            assert (d.workflow_id, d.workload_id) == (
                intent["workflow_id"],
                intent["agent"]["workload_id"],
            )
            hits = gw.revoked(d, token)
            assert d.revoked_targets == hits, d
            assert (d.decision == "deny") == bool(hits), d
            if d.decision != "deny":
                assert d.decision == ("allow" if d.final else "pending"), d
            counts[d.decision] += 1
            counts["reuse"] += "credential_reuse" in d.findings
            if d.final:
                decided.add(d.event_id)
    assert decided == set(intents), "every intent gets a final decision"
    return counts


def scenario_lines() -> list[bytes]:
    """Every kind of revocation: token, workflow, workload, delegation, completion, reuse."""
    events: list[dict[str, Any]] = []
    for i, make in enumerate(
        (
            _token_revoked,
            _token_revoked_elsewhere,
            _workflow_revoked,
            _workload_revoked,
            _delegation_revoked,
            _completed_token,
        )
    ):
        for e in make():
            e = dict(e)  # noqa: PLW2901
            e["workflow_id"] = f"s{i}-{e['workflow_id']}"
            e["event_id"] = f"s{i}-{e['event_id']}"
            events.append(e)
    events += [
        started("r-1", "planner", "jti-r", t=0),
        call("r-1", "planner", "jti-r", t=1),
        started("r-2", "thief", "jti-t", t=0),
        call("r-2", "thief", "jti-r", holder="planner", t=2),
        call("r-1", "planner", "jti-r", t=30),
        call("never", "alpha", "jti-a", t=31),
    ]
    events.sort(key=lambda e: e["occurred_at"])
    return [orjson.dumps(e) for e in events]


def test_the_decision_log_equals_a_watcher_on_scenarios_of_every_revocation_kind() -> None:
    counts = compare_with_watcher(scenario_lines())
    assert counts["deny"] >= 6
    assert counts["allow"] > 0
    assert counts["pending"] > 0
    assert counts["reuse"] >= 1


@pytest.mark.parametrize("seed", [1, 2])
def test_the_decision_log_equals_a_watcher_on_a_fleet_corpus(seed: int) -> None:
    cfg = FleetConfig(seed=seed, workflows=120, attack_rate=0.3)
    lines = list(iter_json_lines(cfg))
    counts = compare_with_watcher(lines)
    assert counts["deny"] > 0
    assert counts["allow"] > 0


def test_the_decision_log_equals_a_watcher_with_the_wall_clock() -> None:
    compare_with_watcher(scenario_lines(), wall=True)


# ------------------------------------------------------ order and duplicates (hypothesis)

_CORPUS = [parse(orjson.loads(line)) for line in scenario_lines()]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_final_decisions_are_consistent_in_any_order_and_with_duplicates(data: Any) -> None:
    """Any arrival order within a grace period, with redeliveries: every intent gets one
    final decision that agrees with the gateway fed the same output, and a redelivery
    changes nothing."""
    events = list(_CORPUS)
    # bounded disorder: swap neighbours less than a grace period apart
    for i in data.draw(st.lists(st.integers(0, len(events) - 2), max_size=20)):
        if abs(events[i].t - events[i + 1].t) < 4:
            events[i], events[i + 1] = events[i + 1], events[i]
    dups = data.draw(st.lists(st.integers(0, len(events) - 1), max_size=8))
    fed = list(events)
    for j in sorted(dups, reverse=True):
        fed.insert(j + 1, events[j])

    def decide(stream: list[Any]) -> list[Decision]:
        mon = Monitor(Context(DetectionConfig()))
        log: list[Decision] = []
        for ev in stream:
            log += mon.process(ev).decisions
        log += mon.flush().decisions
        return log

    once, twice = decide(events), decide(fed)
    assert once == twice  # a redelivery is a duplicate: the same log
    last = finals(once)
    intents = {e.event_id for e in events if e.event_type == "tool_call.intent"}
    assert set(last) == intents
    assert all(d.final for d in last.values())
    # and in that order the log is what a gateway fed the same output answers, call by call
    compare_with_watcher([orjson.dumps(e.model_dump(mode="json", exclude_none=True)) for e in fed])


def test_another_workflows_finding_naming_the_same_event_id_leaves_the_decision_alone() -> None:
    # event ids are unique within a workflow only: an intruder reusing a victim's event id in
    # a workflow of its own raises findings there, never on the victim's decision
    log = _log(
        [
            started("victim", "planner", "jti-v", t=0),
            call("victim", "planner", "jti-v", t=1, eid="x1"),
            # a delegation in a workflow never started: unknown_workflow names x1
            delegate("rogue", "alpha", "beta", "jti-r", t=2, eid="x1"),
            call("victim", "planner", "jti-v", t=30),
        ]
    )
    victim = [d for d in log if d.event_id == "x1"]
    assert [(d.workflow_id, d.decision, d.findings) for d in victim] == [("victim", "allow", [])]


def test_a_revocation_issued_beside_the_monitor_feeds_its_decisions() -> None:
    """The port an operator's revocation (or the source gate's) takes: noted into the view, it
    denies the calls it names from then on, and is never republished shorter."""
    from sdk_helpers import revocation

    mon = Monitor(Context(DetectionConfig()))
    mon.process(parse(started(W, "planner", "jti-p", t=0)))
    by_hand = [revocation("workload", wl("planner"), lasts=3600, start=T0)]
    mon.note_revocations(by_hand)
    out = mon.process(parse(call(W, "planner", "jti-p", t=1, eid="after")))
    assert [(d.decision, d.revoked_targets) for d in out.decisions] == [
        ("deny", [f"workload:{wl('planner')}"])
    ]
    shorter = [revocation("workload", wl("planner"), lasts=60, start=T0)]
    mon.note_revocations(shorter)
    assert shorter[0].not_after == by_hand[0].not_after
