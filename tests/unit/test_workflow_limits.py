"""Per-workflow state stays bounded whatever the input (issue 18, item 1).

Each reproduction feeds one workflow a shape that used to grow its changelog record past the
broker's 1 MB ``message.max.bytes``; the encoded record (``state_codec.dump_session``) must stay
under ``RECORD_CAP`` after every step, and a workflow pushed past a cap raises
``workflow_limits_exceeded`` once (high, revoke the workflow). An honest long workflow is never
flagged: what grows with its calls (event ids remembered for dedup) is summarised instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from builders import call, completed, delegate, parse, started
from tether.core import Context, DetectionConfig
from tether.core import codes as C
from tether.core.engine import Monitor
from tether.core.fold import wake_at
from tether.models.state_codec import dump_session, dump_token, load_session
from tether.models.state_size import measure

RECORD_CAP = 256 * 1024  # far below the broker's 1 MB; the defaults keep a record under it


def _long(prefix: str, i: int, n: int = 250) -> str:
    return (f"{prefix}{i}-" + "x" * n)[:n]


def _run(events: Iterable[dict[str, Any]], *, check_every: int = 1) -> tuple[Monitor, int, list]:
    m = Monitor(Context(DetectionConfig()))
    findings = []
    biggest = 0
    for i, raw in enumerate(events):
        out = m.process(parse(raw))
        findings.extend(out.findings)
        if i % check_every == 0:
            biggest = max(biggest, *(len(dump_session(s)) for s in m.sessions.values()))
    out = m.flush()
    findings.extend(out.findings)
    for s in m.sessions.values():
        biggest = max(biggest, len(dump_session(s)))
        counted = s.state_bytes, s.seen_bytes
        measure(s)  # the running counts never drift from what the session holds
        assert (s.state_bytes, s.seen_bytes) == counted
    return m, biggest, findings


def _limits(findings: list) -> list:
    return [f for f in findings if f.code == C.WORKFLOW_LIMITS_EXCEEDED]


def test_pending_events_near_the_record_bound_stay_bounded() -> None:
    # Calls into a workflow whose start has not arrived all wait a grace period, each ~60 KiB.
    scopes = [_long("scope-", j) for j in range(230)]
    events = [call("wf-p", "planner", "tok-p", t=1 + i * 0.01, scopes=scopes) for i in range(40)]
    _m, biggest, findings = _run(events)
    assert biggest < RECORD_CAP
    assert len(_limits(findings)) == 1
    assert _limits(findings)[0].severity == "high"
    assert _limits(findings)[0].response == ["revoke_workflow"]


def test_two_thousand_long_token_ids_stay_bounded() -> None:
    def events() -> Iterable[dict[str, Any]]:
        yield started("wf-t", "planner", "tok-0")
        for i in range(2000):
            yield call("wf-t", "planner", _long("tok-", i, 256), t=1 + i * 0.001)
        yield completed("wf-t", "planner", t=10)

    m, biggest, findings = _run(events(), check_every=50)
    assert biggest < RECORD_CAP
    assert len(_limits(findings)) == 1
    assert len(m.tokens) == 2001  # every token still reaches the token index


def test_tokens_past_the_cap_are_indexed_and_the_workflow_revoked() -> None:
    m = Monitor(Context(DetectionConfig()))
    out = m.process(parse(started("wf-t", "planner", "tok-0")))
    revocations = list(out.revocations)
    for i in range(1500):
        out = m.process(parse(call("wf-t", "planner", _long("tok-", i, 256), t=1 + i * 0.001)))
        revocations += out.revocations
    out = m.process(parse(completed("wf-t", "planner", t=10)))
    revocations += out.revocations
    revocations += m.advance(m.watermark + 10).revocations
    assert {("workflow", "wf-t")} == {
        (r.target.kind, r.target.id) for r in revocations if r.reason != "task_completed"
    }
    completed_tokens = {r.target.id for r in revocations if r.reason == "task_completed"}
    assert "tok-0" in completed_tokens  # the tokens the session still tracks
    assert len(m.tokens) == 1501  # and every token reached the token index


def test_thirty_two_delegations_with_long_scopes_stay_bounded() -> None:
    scopes = [_long("scope-", j) for j in range(200)]

    def events() -> Iterable[dict[str, Any]]:
        yield started("wf-d", "planner", "tok-0", scopes=scopes[:50], cred_scopes=["crm:read"])
        for i in range(32):
            yield delegate(
                "wf-d",
                "planner",
                f"agent-{i}",
                "tok-0",
                t=1 + i * 0.01,
                did=f"d-{i}",
                scopes=scopes,
                holder_scopes=["crm:read"],
            )

    _, biggest, findings = _run(events())
    assert biggest < RECORD_CAP
    assert len(_limits(findings)) == 1
    # the delegations themselves are still judged (wider than the delegator's entitlement)
    amplified = {f.evidence[0] for f in findings if f.code == C.DELEGATION_AMPLIFICATION}
    assert len(amplified) == 32


def test_an_honest_workflow_making_24k_calls_an_hour_is_bounded_and_not_flagged() -> None:
    def events() -> Iterable[dict[str, Any]]:
        yield started("wf-h", "planner", "tok-0", not_after=4000)
        for i in range(24_000):
            t = 1 + i * 0.15
            tok = f"tok-{int(t // 300)}"  # refreshed every five minutes
            yield call("wf-h", "planner", tok, t=t, expires=t + 600, eid=f"c-{i:06d}-aaaaaaaa")
        yield completed("wf-h", "planner", t=3700)

    m, biggest, findings = _run(events(), check_every=1000)
    assert biggest < RECORD_CAP
    assert findings == []
    s = m.sessions["wf-h"]
    assert s.limited is False


def test_one_token_presented_by_many_workloads_in_one_workflow_stays_bounded() -> None:
    def events() -> Iterable[dict[str, Any]]:
        yield started("wf-u", "planner", "tok-0")
        for i in range(3000):
            yield call("wf-u", _long("agent-", i, 200), "tok-shared", t=1 + i * 0.001)

    m, biggest, findings = _run(events(), check_every=100)
    assert biggest < RECORD_CAP
    assert len(_limits(findings)) == 1
    assert len(dump_token(m.tokens["tok-shared"])) < RECORD_CAP


def test_many_findings_in_one_workflow_stay_bounded() -> None:
    def events() -> Iterable[dict[str, Any]]:
        yield started("wf-f", "planner", "tok-0")
        for i in range(3000):  # each a scope escalation with its own token: a finding each
            yield call("wf-f", "planner", _long("t", i, 100), t=1 + i * 0.001, scopes=["admin:all"])

    _, biggest, findings = _run(events(), check_every=100)
    assert biggest < RECORD_CAP
    assert len(_limits(findings)) == 1
    escalations = {f.token_id for f in findings if f.code == C.SCOPE_ESCALATION}
    assert len(escalations) == 3000  # every one is still detected


def test_a_limited_session_round_trips_through_the_codec() -> None:
    scopes = [_long("scope-", j) for j in range(230)]
    m = Monitor(Context(DetectionConfig()))
    for i in range(40):
        m.process(parse(call("wf-p", "planner", "tok-p", t=1 + i * 0.01, scopes=scopes)))
    s = m.sessions["wf-p"]
    back = load_session(dump_session(s))
    assert back.limited
    assert wake_at(back, m.ctx.cfg) == wake_at(s, m.ctx.cfg)
    measure(back)  # on first use
    assert back.state_bytes == s.state_bytes


def test_a_session_recovered_mid_flood_stays_bounded() -> None:
    """A worker restarted mid-flood counts the recovered session's bytes on first use."""
    m = Monitor(Context(DetectionConfig()))
    m.process(parse(started("wf-t", "planner", "tok-0")))
    for i in range(2000):
        if i % 500 == 0:  # a restart: every session reloaded from its record
            for wf, s in list(m.sessions.items()):
                m.sessions[wf] = load_session(dump_session(s), wf)
            m.workflows.reschedule_all()
        m.process(parse(call("wf-t", "planner", _long("tok-", i, 256), t=1 + i * 0.001)))
    s = m.sessions["wf-t"]
    assert len(dump_session(s)) < RECORD_CAP
    counted = s.state_bytes
    measure(s)
    assert s.state_bytes == counted
