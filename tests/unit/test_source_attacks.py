"""The attacks of issue 17, each reproduced without a source registry (today's behaviour: the
victim is harmed), then refused with one in ``enforce`` mode: the attacker's record is a dead
letter or a finding against the attacker, never a revocation or quarantine of the victim.

The class each test fixes is in its name; variants run through the same rules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from builders import call, completed, delegate, started, wl
from sources_world import World, plain_replay
from tether.security.proof import SourceKey

VICTIM = {"workloads": {wl("victim")}, "tokens": {"jti-v"}, "workflows": {"wf-v"}}
ATTACKER = wl("attacker")


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def victim_story(w: World) -> list[bytes]:
    """The victim starts its workflow and works in it (no completion: its own would revoke)."""
    return [
        w.sign("victim-agents", started("wf-v", "victim", "jti-v", t=10)),
        w.sign("victim-agents", call("wf-v", "victim", "jti-v", t=20)),
        w.sign("victim-agents", call("wf-v", "victim", "jti-v", t=30)),
    ]


def attacker(w: World, event: dict[str, Any]) -> bytes:
    return w.sign("attacker-agents", event)


# -- impersonation ---------------------------------------------------------------------------


def test_impersonation_quarantines_the_victim_without_a_registry(world: World) -> None:
    forged = call("wf-v", "victim", "jti-b", holder="attacker", t=25)
    out = plain_replay([*victim_story(world), orjson.dumps(forged)])
    assert any(r["target"] == {"kind": "workload", "id": wl("victim")} for r in out.revocations)


@pytest.mark.parametrize(
    "variant",
    ["signed_by_attacker", "unsigned", "attacker_key_under_victim_name", "tampered_victim_record"],
)
def test_impersonation_is_refused_in_enforce(world: World, variant: str) -> None:
    forged = call("wf-v", "victim", "jti-b", holder="attacker", t=25)
    if variant == "signed_by_attacker":
        line, reason = attacker(world, forged), "unauthorized_assertion"
    elif variant == "unsigned":
        line, reason = orjson.dumps(forged), "unauthenticated_source"
    elif variant == "attacker_key_under_victim_name":
        stolen_name = SourceKey("victim-agents", world.keys["attacker-agents"].kid, b"k" * 32)
        line, reason = stolen_name.sign(orjson.dumps(forged)), "unauthenticated_source"
    else:
        honest = world.sign("victim-agents", call("wf-v", "victim", "jti-v", t=25))
        line = honest.replace(b'"crm.search"', b'"crm.export"')
        reason = "unauthenticated_source"
    out = world.replay([*victim_story(world), line])
    assert out.reasons() == [reason]
    assert not out.harmed(**VICTIM)
    assert not out.against(wl("victim"))


# -- framing with a stolen token id ------------------------------------------------------------


def test_framing_with_stolen_token_id_revokes_the_victims_token_without_a_registry(
    world: World,
) -> None:
    framed = call("wf-b", "attacker", "jti-v", holder="victim", t=1)  # before the victim's use
    out = plain_replay(
        [orjson.dumps(framed), *(orjson.loads(x) and x for x in victim_story(world))]
    )
    assert any(r["target"] == {"kind": "token", "id": "jti-v"} for r in out.revocations)


def test_framing_credential_reuse_falls_on_the_presenter_who_is_not_the_subject(
    world: World,
) -> None:
    """Even unauthenticated: the reuse finding names the non-subject, whatever the times say."""
    framed = call("wf-b", "attacker", "jti-v", holder="victim", t=1)
    out = plain_replay([orjson.dumps(framed), *victim_story(world)])
    reuse = [f for f in out.findings if f["code"] == "credential_reuse"]
    assert reuse
    assert {f["workload_id"] for f in reuse} == {ATTACKER}


@pytest.mark.parametrize(
    "framed",
    [
        pytest.param(call("wf-b", "attacker", "jti-v", holder="victim", t=1), id="as_victim"),
        pytest.param(call("wf-b", "attacker", "jti-v", t=1), id="claimed_as_own"),
        pytest.param(call("wf-v", "attacker", "jti-v", t=11), id="inside_victim_workflow"),
        pytest.param(
            call("wf-v", "attacker", "jti-v", t=12, tool="shell.exec"), id="escalating_in_victim_wf"
        ),
        pytest.param(
            delegate("wf-b", "attacker", "victim", "jti-v", t=1), id="delegation_with_victim_token"
        ),
    ],
)
def test_framing_with_stolen_token_id_is_refused_in_enforce(
    world: World, framed: dict[str, Any]
) -> None:
    out = world.replay([attacker(world, framed), *victim_story(world)])
    assert not out.harmed(**VICTIM)
    assert not out.against(wl("victim"))
    assert out.deadletters or out.against(ATTACKER)


# -- forged completion -----------------------------------------------------------------------


def test_forged_completion_revokes_the_victims_tokens_without_a_registry(world: World) -> None:
    out = plain_replay([*victim_story(world), orjson.dumps(completed("wf-v", "attacker", t=31))])
    assert any(r["reason"] == "task_completed" for r in out.revocations)


@pytest.mark.parametrize("agent", ["attacker", "victim", "orch"])
def test_forged_completion_is_refused_in_enforce(world: World, agent: str) -> None:
    forged = attacker(world, completed("wf-v", agent, t=31))
    later = attacker(world, call("wf-v", "attacker", "jti-b", t=31 + 900, tool="shell.exec"))
    out = world.replay([*victim_story(world), forged, later])
    assert out.reasons() == ["unauthorized_assertion"]
    assert not out.harmed(**VICTIM)
    assert not any(r["reason"] == "task_completed" for r in out.revocations)
    # the attacker's later move is still judged in a live workflow, against the attacker
    assert {f["code"] for f in out.against(ATTACKER)} >= {"undelegated_actor"}


def test_completion_by_the_initiators_source_and_the_orchestrator_is_applied(
    world: World,
) -> None:
    """Applied: a later call is activity after completion. (The victim's tokens are only
    asserted by an agent source, so the completion revokes none of them: docs/SECURITY.md.)"""
    late = world.sign("victim-agents", call("wf-v", "victim", "jti-v", t=50))
    for source, agent in (("victim-agents", "victim"), ("orchestrator", "orch")):
        done = world.sign(source, completed("wf-v", agent, t=40))
        out = world.replay([*victim_story(world), done, late])
        assert not out.deadletters
        assert [f["code"] for f in out.findings] == ["activity_after_completion"]


# -- workflow squatting ------------------------------------------------------------------------


def squat(w: World, sign: bool) -> list[bytes]:
    pre = started("wf-next", "attacker", "jti-b", t=0, tools=["shell.exec"])
    real = [
        w.sign("orchestrator", started("wf-next", "orch", "jti-o", t=5)),
        w.sign("orchestrator", call("wf-next", "orch", "jti-o", t=6)),
    ]
    return [attacker(w, pre) if sign else orjson.dumps(pre), *real]


def test_workflow_squatting_makes_the_orchestrator_an_undelegated_actor_without_a_registry(
    world: World,
) -> None:
    out = plain_replay(squat(world, sign=False))
    assert any(f["code"] == "undelegated_actor" for f in out.against(wl("orch")))


@pytest.mark.parametrize("sign", [True, False])
def test_workflow_squatting_is_refused_in_enforce(world: World, sign: bool) -> None:
    out = world.replay(squat(world, sign))
    assert len(out.deadletters) == 1
    assert not out.against(wl("orch"))
    assert not out.harmed(workloads={wl("orch")}, tokens={"jti-o"}, workflows={"wf-next"})


def test_workflow_squatting_between_start_capable_sources_is_refused_by_namespaces(
    tmp_path: Path,
) -> None:
    """Two sources that may both start workflows: each in its own workflow-id namespace, so a
    compromised one cannot pre-start the other's predictable ids."""
    sources = {
        "orchestrator": {
            "workloads": [wl("orch")],
            "start": True,
            "complete": "any",
            "workflow_ids": ["wf-next", "wf-orch-*"],
        },
        "victim-agents": {"workloads": [wl("victim")], "start": True},
        "attacker-agents": {
            "workloads": [wl("attacker")],
            "start": True,
            "workflow_ids": ["wf-attacker-*"],
        },
    }
    world = World(tmp_path, sources=sources)
    out = world.replay(squat(world, sign=True))
    assert out.reasons() == ["unauthorized_assertion"]
    assert not out.against(wl("orch"))
    assert not out.harmed(workloads={wl("orch")}, tokens={"jti-o"}, workflows={"wf-next"})
    own = world.replay([attacker(world, started("wf-attacker-1", "attacker", "jti-b"))])
    assert not own.deadletters


# -- self-granted authority --------------------------------------------------------------------


def test_self_granted_delegation_hides_the_intruder_without_a_registry(world: World) -> None:
    grant = delegate("wf-v", "victim", "attacker", "jti-v", t=15)
    act = call("wf-v", "attacker", "jti-b", t=16, holder="attacker")
    out = plain_replay([*victim_story(world), orjson.dumps(grant), orjson.dumps(act)])
    assert not out.against(ATTACKER)  # the forged handoff covered it: a lost detection


@pytest.mark.parametrize(
    "forged",
    [
        pytest.param(started("wf-own", "attacker", "jti-b", t=0, tools=[]), id="own_workflow"),
        pytest.param(delegate("wf-v", "victim", "attacker", "jti-v", t=15), id="from_victim"),
        pytest.param(delegate("wf-v", "helper", "attacker", "jti-h", t=15), id="from_victims_peer"),
    ],
)
def test_self_granted_authority_is_refused_in_enforce(world: World, forged: dict[str, Any]) -> None:
    act = attacker(world, call(forged["workflow_id"], "attacker", "jti-b", t=16))
    out = world.replay([*victim_story(world), attacker(world, forged), act])
    assert out.reasons() == ["unauthorized_assertion"]
    assert not out.harmed(**VICTIM)
    assert out.against(ATTACKER)  # its call is judged without the authority it forged


# -- intrusion into a workflow -----------------------------------------------------------------


def test_intrusion_revokes_the_victims_workflow_without_a_registry(world: World) -> None:
    out = plain_replay(
        [*victim_story(world), orjson.dumps(call("wf-v", "attacker", "jti-b", t=25))]
    )
    assert any(r["target"] == {"kind": "workflow", "id": "wf-v"} for r in out.revocations)


@pytest.mark.parametrize("tool", ["crm.search", "shell.exec"])
def test_intrusion_into_a_workflow_falls_on_the_intruder_in_enforce(
    world: World, tool: str
) -> None:
    intrusion = attacker(world, call("wf-v", "attacker", "jti-b", t=25, tool=tool))
    out = world.replay([*victim_story(world), intrusion])
    assert not out.harmed(**VICTIM)
    found = out.against(ATTACKER)
    assert any(f["code"] == "undelegated_actor" for f in found)
    assert all(f["authenticated"] and f["source"] == "attacker-agents" for f in found)
    assert {"kind": "workload", "id": ATTACKER} in [r["target"] for r in out.revocations]
    assert any("revoke_workflow" in (f.get("withheld") or []) for f in found)


# -- the legitimate fleet is unaffected ----------------------------------------------------------


def test_a_legitimate_delegation_chain_runs_clean_in_enforce(world: World) -> None:
    lines = [
        *victim_story(world),
        world.sign("victim-agents", delegate("wf-v", "victim", "helper", "jti-v", t=31)),
        world.sign("victim-agents", call("wf-v", "helper", "jti-h", t=32)),
        world.sign("victim-agents", completed("wf-v", "victim", t=40)),
    ]
    out = world.replay(lines)
    assert not out.deadletters
    assert not out.findings
    decisions = out.of("decision")
    assert decisions
    assert all(d["authenticated"] and d["source"] == "victim-agents" for d in decisions)
