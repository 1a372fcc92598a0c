"""Every finding code, with its benign twin: the rule that must not fire."""

from __future__ import annotations

from typing import Any

import pytest

from builders import call, completed, delegate, started
from scenarios import run
from tether.core import DetectionConfig

W = "wf-1"
BASE = [started(W, "planner", "tok-p", scopes=["crm:read", "crm:write"])]


def chain(*extra: dict[str, Any]) -> list[dict[str, Any]]:
    """The base workflow plus ``extra`` events."""
    return [*BASE, *extra]


CASES: list[tuple[str, list[dict[str, Any]], set[str]]] = [
    # --- scope_escalation
    (
        "initiator refreshes to a wider token",
        chain(call(W, "planner", "tok-p2", scopes=["crm:read", "crm:admin"], t=2)),
        {"scope_escalation"},
    ),
    (
        "benign: token refresh with the same scopes",
        chain(call(W, "planner", "tok-p2", scopes=["crm:read", "crm:write"], t=2)),
        set(),
    ),
    (
        "delegatee presents more than it was delegated",
        chain(
            delegate(W, "planner", "researcher", "tok-p", scopes=["crm:read"]),
            call(W, "researcher", "tok-r", scopes=["crm:read", "crm:write"], t=2),
        ),
        {"scope_escalation"},
    ),
    (
        "benign: delegatee within its delegation",
        chain(
            delegate(W, "planner", "researcher", "tok-p", scopes=["crm:read"]),
            call(W, "researcher", "tok-r", scopes=["crm:read"], t=2),
        ),
        set(),
    ),
    # --- grant checks
    (
        "tool outside the grant",
        chain(call(W, "planner", "tok-p", tool="shell.exec", t=2)),
        {"tool_not_granted"},
    ),
    (
        "benign: unrestricted tools",
        [
            started(W, "planner", "tok-p", tools=[]),
            call(W, "planner", "tok-p", tool="any.tool", t=2),
        ],
        set(),
    ),
    (
        "sensitivity above the grant",
        chain(call(W, "planner", "tok-p", sensitivity="restricted", t=2)),
        {"sensitivity_exceeded"},
    ),
    (
        "benign: sensitivity at the grant's maximum",
        chain(call(W, "planner", "tok-p", sensitivity="confidential", t=2)),
        set(),
    ),
    (
        "exfiltration destination",
        chain(call(W, "planner", "tok-p", destination="paste.example", t=2)),
        {"destination_not_granted"},
    ),
    (
        "benign: unrestricted destinations",
        [
            started(W, "planner", "tok-p", destinations=[]),
            call(W, "planner", "tok-p", destination="anywhere.example", t=2),
        ],
        set(),
    ),
    # --- time
    (
        "expired credential",
        chain(call(W, "planner", "tok-p", t=700, expires=600)),
        {"credential_expired"},
    ),
    (
        "benign: used exactly at expiry",
        chain(call(W, "planner", "tok-p", t=600, expires=600)),
        set(),
    ),
    (
        "task window exceeded",
        [started(W, "planner", "tok-p", not_after=100), call(W, "planner", "tok-p", t=101)],
        {"task_window_exceeded"},
    ),
    (
        "benign: call exactly at not_after",
        [started(W, "planner", "tok-p", not_after=100), call(W, "planner", "tok-p", t=100)],
        set(),
    ),
    # --- identity
    (
        "credential issued to someone else",
        chain(call(W, "planner", "tok-x", holder="billing-bot", t=2)),
        {"identity_mismatch"},
    ),
    (
        "delegatee presents its delegator's token",
        chain(
            delegate(W, "planner", "researcher", "tok-p", scopes=["crm:read"]),
            call(W, "researcher", "tok-p", holder="planner", t=2),
        ),
        {"inherited_credential"},
    ),
    (
        "delegatee presents its transitive delegator's token",
        chain(
            delegate(W, "planner", "researcher", "tok-p", scopes=["crm:read"], t=0.5),
            delegate(W, "researcher", "summarizer", "tok-r", scopes=["crm:read"], t=0.7),
            call(W, "summarizer", "tok-p", holder="planner", t=2),
        ),
        {"inherited_credential"},
    ),
    (
        "benign: delegatee with its own token",
        chain(
            delegate(W, "planner", "researcher", "tok-p", scopes=["crm:read"]),
            call(W, "researcher", "tok-r", t=2),
        ),
        set(),
    ),
    # --- handoffs
    (
        "sub-agent acts with no handoff",
        chain(call(W, "summarizer", "tok-s", t=2)),
        {"undelegated_actor"},
    ),
    (
        "benign: delegation arrives after the first call, within grace",
        chain(
            call(W, "researcher", "tok-r", t=2),
            delegate(W, "planner", "researcher", "tok-p", t=1.5),
        ),
        set(),
    ),
    (
        "a delegation granted after the act never covers it",
        chain(
            call(W, "researcher", "tok-r", t=2), delegate(W, "planner", "researcher", "tok-p", t=3)
        ),
        {"undelegated_actor"},
    ),
    (
        "delegatee acts after its delegation expired",
        chain(
            delegate(W, "planner", "researcher", "tok-p", expires=30),
            call(W, "researcher", "tok-r", t=31),
        ),
        {"delegation_expired"},
    ),
    (
        "benign: proper chain A->B->C",
        chain(
            delegate(W, "planner", "researcher", "tok-p", scopes=["crm:read"], t=0.5),
            delegate(W, "researcher", "summarizer", "tok-r", scopes=["crm:read"], t=0.7),
            call(W, "summarizer", "tok-s", t=2),
        ),
        set(),
    ),
    (
        "delegation hands on scopes the delegator lacks",
        chain(
            delegate(
                W,
                "planner",
                "researcher",
                "tok-p",
                scopes=["crm:read", "hr:read"],
                holder_scopes=["crm:read"],
            )
        ),
        {"delegation_amplification"},
    ),
    (
        "sub-delegation wider than the sub-delegator's entitlement",
        chain(
            delegate(W, "planner", "researcher", "tok-p", scopes=["crm:read"], t=0.5),
            delegate(
                W,
                "researcher",
                "summarizer",
                "tok-r",
                scopes=["crm:read", "crm:write"],
                holder_scopes=["crm:read"],
                t=0.7,
            ),
        ),
        {"delegation_amplification"},
    ),
    (
        "chain longer than the maximum",
        chain(
            delegate(W, "planner", "a1", "tok-p", t=0.1),
            delegate(W, "a1", "a2", "tok-a1", t=0.2),
            delegate(W, "a2", "a3", "tok-a2", t=0.3),
            delegate(W, "a3", "a4", "tok-a3", t=0.4),
        ),
        {"delegation_depth_exceeded"},
    ),
    (
        "benign: chain at the maximum",
        chain(
            delegate(W, "planner", "a1", "tok-p", t=0.1),
            delegate(W, "a1", "a2", "tok-a1", t=0.2),
            delegate(W, "a2", "a3", "tok-a2", t=0.3),
            call(W, "a3", "tok-a3", t=1),
        ),
        set(),
    ),
    # --- lifecycle
    (
        "tool call after completion",
        chain(completed(W, "planner", "tok-p", t=10), call(W, "planner", "tok-p", t=11)),
        {"activity_after_completion"},
    ),
    (
        "completion arrives late, after a call that followed it",
        chain(call(W, "planner", "tok-p", t=11), completed(W, "planner", "tok-p", t=10)),
        {"activity_after_completion"},
    ),
    (
        "benign: call before completion delivered after it",
        chain(completed(W, "planner", "tok-p", t=10), call(W, "planner", "tok-p", t=9)),
        set(),
    ),
    (
        "tool call in a workflow never started",
        [call("wf-ghost", "planner", "tok-g", t=1), call("wf-ghost", "planner", "tok-g", t=2)],
        {"unknown_workflow"},
    ),
    (
        "benign: start delivered after the first call, within grace",
        [call(W, "planner", "tok-p", t=1), started(W, "planner", "tok-p", t=0)],
        set(),
    ),
    # --- duplicates
    (
        "benign: duplicate delivery",
        [
            BASE[0],
            BASE[0],
            call(W, "planner", "tok-p", t=1, eid="c1"),
            call(W, "planner", "tok-p", t=1, eid="c1"),
        ],
        set(),
    ),
]


@pytest.mark.parametrize(("name", "events", "expected"), CASES, ids=[c[0] for c in CASES])
def test_detection(name: str, events: list[dict[str, Any]], expected: set[str]) -> None:
    assert run(events).code_set == expected


def test_credential_reuse_across_workflows() -> None:
    events = [
        *BASE,
        started("wf-2", "billing-bot", "tok-b", scopes=["crm:read"]),
        call("wf-2", "billing-bot", "tok-p", holder="planner", t=3),
    ]
    r = run(events)
    assert ("credential_reuse", "wf-2") in r.codes
    assert ("identity_mismatch", "wf-2") in r.codes
    assert not any(wf == W for _, wf in r.codes), "the victim's workflow raises nothing"
    assert ("token", "tok-p", "credential_reuse") in r.revoked


def test_credential_shared_across_workflows_and_its_switch() -> None:
    events = [
        *BASE,
        started("wf-2", "planner", "tok-p", scopes=["crm:read", "crm:write"], t=1),
    ]
    assert run(events).codes == {("credential_shared_across_workflows", "wf-2")}
    off = DetectionConfig(disabled=frozenset({"credential_shared_across_workflows"}))
    assert run(events, off).codes == set()


def test_inherited_credential_is_not_reuse_or_mismatch() -> None:
    events = chain(
        delegate(W, "planner", "researcher", "tok-p"),
        call(W, "researcher", "tok-p", holder="planner", t=2),
    )
    assert run(events).code_set == {"inherited_credential"}


def test_undelegated_actor_raises_no_entitlement_code() -> None:
    events = chain(call(W, "summarizer", "tok-s", scopes=["crm:read", "crm:admin"], t=2))
    assert run(events).code_set == {"undelegated_actor"}


def test_unknown_workflow_fires_once() -> None:
    events = [call("wf-ghost", "planner", "tok-g", t=i) for i in range(1, 30)]
    assert [f.code for f in run(events).out.findings] == ["unknown_workflow"]


def test_graded_response_targets() -> None:
    r = run(chain(call(W, "summarizer", "tok-s", t=2)))
    assert r.revoked == {
        ("token", "tok-s", "undelegated_actor"),
        ("workflow", W, "undelegated_actor"),
    }
    r = run(chain(call(W, "planner", "tok-x", holder="billing-bot", t=2)))
    assert ("workload", "planner", "identity_mismatch") in r.revoked
    r = run(
        chain(
            delegate(
                W,
                "planner",
                "researcher",
                "tok-p",
                did="d9",
                scopes=["crm:read", "hr:read"],
                holder_scopes=["crm:read"],
            )
        )
    )
    assert r.revoked == {
        ("delegation", "d9", "delegation_amplification"),
        ("workflow", W, "delegation_amplification"),
    }


def test_completion_revokes_every_credential_used() -> None:
    r = run(
        chain(
            delegate(W, "planner", "researcher", "tok-p"),
            call(W, "researcher", "tok-r", t=2),
            completed(W, "planner", "tok-p", t=10),
        )
    )
    assert r.code_set == set()
    assert r.revoked == {("token", "tok-p", "task_completed"), ("token", "tok-r", "task_completed")}
    assert {rv.severity for rv in r.out.revocations} == {"info"}


def test_shadow_mode_reports_but_revokes_nothing() -> None:
    r = run(
        chain(
            call(W, "planner", "tok-p", tool="shell.exec", t=2),
            completed(W, "planner", "tok-p", t=10),
        ),
        DetectionConfig(shadow=True),
    )
    assert r.code_set == {"tool_not_granted"}
    assert r.out.revocations == []
    assert all(f.shadow for f in r.out.findings)


def test_severity_and_response_are_configurable() -> None:
    cfg = DetectionConfig(
        severity={"tool_not_granted": "critical"}, response={"tool_not_granted": ("alert",)}
    )
    r = run(chain(call(W, "planner", "tok-p", tool="shell.exec", t=2)), cfg)
    (f,) = r.out.findings
    assert (f.severity, f.response) == ("critical", ["alert"])
    assert r.out.revocations == []


def test_disabled_code_never_fires() -> None:
    cfg = DetectionConfig(disabled=frozenset({"tool_not_granted"}))
    assert run(chain(call(W, "planner", "tok-p", tool="shell.exec", t=2)), cfg).code_set == set()


def test_unknown_code_in_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown finding code"):
        DetectionConfig(disabled=frozenset({"no_such_code"}))


def test_ids_derive_from_causes() -> None:
    events = chain(call(W, "planner", "tok-p", tool="shell.exec", t=2))
    a, b = run(events), run(events)
    assert a.finding_ids == b.finding_ids
    assert a.revocation_ids == b.revocation_ids


def test_refreshed_token_is_revoked_again() -> None:
    r = run(
        chain(
            call(W, "planner", "tok-p", tool="shell.exec", t=2),
            call(W, "planner", "tok-p2", tool="shell.exec", t=3),
        )
    )
    assert {t for k, t, _ in r.revoked if k == "token"} == {"tok-p", "tok-p2"}


def test_decisions_one_per_intent() -> None:
    r = run(
        chain(
            call(W, "planner", "tok-p", t=1),
            call(W, "planner", "tok-p", tool="x", t=2),
            call(W, "summarizer", "tok-s", t=3),
        )
    )
    got = {(d.tool, d.decision, tuple(d.findings)) for d in r.out.decisions if d.final}
    assert got == {
        ("crm.search", "allow", ()),
        ("x", "deny", ("tool_not_granted",)),
        ("crm.search", "deny", ("undelegated_actor",)),
    }
