"""Hostile workflow shapes cost bounded work per event (issue 18, item 3).

Structural bounds, not timings (benchmarks/hostile_shapes.py prints those): the containers an
event scans stay within their caps whatever the shape, a back-dated use of a widely shared token
derives a bounded number of finding ids, and nothing is lost on the way (every call is decided,
every token reaches the index, a new workload presenting a sprayed token is still caught).
"""

from __future__ import annotations

import pytest

from builders import call, delegate, parse, started, wl
from tether.core import Context, DetectionConfig
from tether.core import codes as C
from tether.core import violations as V
from tether.core.config import StateLimits
from tether.core.engine import Monitor

SMALL = StateLimits(pending=16, tokens=32, delegations=16, recent=64, token_pairs=8)


def _monitor(limits: StateLimits = SMALL) -> Monitor:
    return Monitor(Context(DetectionConfig(limits=limits)))


def test_many_tokens_in_one_workflow_are_tracked_up_to_the_cap_and_all_indexed() -> None:
    m = _monitor()
    m.process(parse(started("wf-1", "planner", "tok-0")))
    for i in range(500):
        m.process(parse(call("wf-1", "planner", f"tok-{i + 1}", t=1 + i * 0.01)))
        assert len(m.sessions["wf-1"].tokens) <= SMALL.tokens
    m.flush()
    assert len(m.tokens) == 501


def test_calls_pending_within_one_grace_period_are_capped_and_every_one_decided() -> None:
    m = _monitor()
    decisions = 0
    for i in range(300):  # the start has not arrived: every call waits
        out = m.process(parse(call("wf-1", "planner", "tok-1", t=1 + i * 0.01)))
        decisions += sum(d.final for d in out.decisions)
        pending = m.sessions["wf-1"].pending or ()
        assert len(pending) <= SMALL.pending
    out = m.process(parse(started("wf-1", "planner", "tok-1", t=0.5)))
    decisions += sum(d.final for d in out.decisions)
    decisions += sum(d.final for d in m.flush().decisions)
    assert decisions == 300
    assert [f.code for f in out.findings] == []  # those that could wait see the start


def test_delegations_to_one_delegatee_are_capped_and_still_judged() -> None:
    m = _monitor()
    m.process(parse(started("wf-1", "planner", "tok-0")))
    codes: set[str] = set()
    for i in range(200):
        out = m.process(
            parse(
                delegate(
                    "wf-1",
                    "planner",
                    "worker",
                    "tok-0",
                    t=1 + i * 0.01,
                    did=f"d-{i}",
                    scopes=["crm:read", "admin:all"] if i == 150 else ["crm:read"],
                )
            )
        )
        codes |= {f.code for f in out.findings}
        s = m.sessions["wf-1"]
        assert len(s.delegations or ()) <= SMALL.delegations
        assert len(s.delegations_of(wl("worker"))) <= SMALL.delegations
    assert C.WORKFLOW_LIMITS_EXCEEDED in codes
    assert C.DELEGATION_AMPLIFICATION in codes  # the 151st delegation is still judged


def _sprayed(m: Monitor, workflows: int, *, workloads: bool) -> None:
    for j in range(workflows):
        agent = f"agent-{j}" if workloads else "planner"
        m.process(parse(started(f"wf-{j}", agent, "tok-0", t=j * 0.01)))
        m.process(parse(call(f"wf-{j}", agent, "tok-x", t=10 + j * 0.01, holder=None, eid=f"c{j}")))
    m.advance(m.watermark + 10)


@pytest.mark.parametrize("workloads", [False, True])
def test_a_back_dated_use_of_a_sprayed_token_derives_few_finding_ids(
    workloads: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = _monitor(StateLimits())  # the default pairs per token
    _sprayed(m, 256, workloads=workloads)
    assert len(m.tokens["tok-x"].pairs) <= StateLimits().token_pairs
    derived = 0
    real = V.derive_id

    def counting(prefix: str, *parts: str) -> str:
        nonlocal derived
        derived += 1
        return real(prefix, *parts)

    monkeypatch.setattr(V, "derive_id", counting)
    for i in range(20):  # each earlier than every use before it, in a remembered workflow
        agent = "agent-0" if workloads else "planner"
        m.process(parse(call("wf-0", agent, "tok-x", t=9.9 - i * 0.01, eid=f"b{i}")))
        m.advance(m.watermark + 10)
    # the original compared every pair with every other: 64² finding ids per use
    assert derived <= 20 * 8


def test_a_new_workload_presenting_a_token_past_the_pairs_cap_is_still_caught() -> None:
    m = _monitor()
    _sprayed(m, 40, workloads=False)  # one workload in 40 workflows: 8 pairs remembered
    assert len(m.tokens["tok-x"].pairs) == SMALL.token_pairs
    m.process(parse(started("wf-thief", "thief", "tok-t", t=30)))
    out = m.process(parse(call("wf-thief", "thief", "tok-x", t=31, holder="planner")))
    out.extend(m.flush())  # the thief's workflow is ahead of the rest: end of input decides
    assert C.CREDENTIAL_REUSE in {f.code for f in out.findings}
