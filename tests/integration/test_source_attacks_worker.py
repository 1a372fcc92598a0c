"""Issue 17's attacks through the real streaming worker with a source registry in enforce mode:
the worker refuses them as `tether replay --sources` does (tests/unit/test_source_attacks.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from pipeline import Pipeline

from builders import call, completed, delegate, started, wl
from sources_world import World

ATTACKER = wl("attacker")


@pytest.fixture
def pipe(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Pipeline, World]]:
    world = World(tmp_path)
    monkeypatch.setenv("TETHER_SOURCES", str(world.registry_path))
    p = Pipeline(kafka_bootstrap, redis_url, tmp_path)
    yield p, world
    p.stop_all()


def test_worker_refuses_impersonation_forged_completion_self_grant_and_intrusion(
    pipe: tuple[Pipeline, World],
) -> None:
    p, w = pipe
    victim = [
        w.sign("victim-agents", started("wf-v", "victim", "jti-v", t=10)),
        w.sign("victim-agents", call("wf-v", "victim", "jti-v", t=20)),
    ]
    attacks = [
        # impersonation: the attacker's source speaks as the victim
        w.sign("attacker-agents", call("wf-v", "victim", "jti-b", holder="attacker", t=21)),
        # impersonation without any proof
        orjson.dumps(call("wf-v", "victim", "jti-b", holder="attacker", t=22)),
        # forged completion of the victim's workflow
        w.sign("attacker-agents", completed("wf-v", "attacker", t=23)),
        # self-granted authority: a delegation "from" the victim
        w.sign("attacker-agents", delegate("wf-v", "victim", "attacker", "jti-v", t=24)),
        # squatting: starting a workflow the attacker may not start
        w.sign("attacker-agents", started("wf-next", "attacker", "jti-b", t=5)),
        # intrusion into the victim's workflow (with the victim's token id, to frame it)
        w.sign("attacker-agents", call("wf-v", "attacker", "jti-v", t=25)),
    ]
    p.start_worker("w1")
    p.wait_heartbeat("w1")
    p.produce([*victim, *attacks])
    got = p.collect(quiet_s=6.0, timeout=90.0, until=None)
    reasons = sorted(d["reason"] for d in got["deadletter"])
    assert reasons == ["unauthenticated_source"] + ["unauthorized_assertion"] * 4
    for r in got["revocations"]:
        target = r["target"]
        assert target not in (
            {"kind": "workload", "id": wl("victim")},
            {"kind": "token", "id": "jti-v"},
            {"kind": "workflow", "id": "wf-v"},
        ), r
    intruder = [f for f in got["findings"] if f["workload_id"] == ATTACKER]
    assert any(f["code"] == "undelegated_actor" and f["authenticated"] for f in intruder)
    assert {"kind": "workload", "id": ATTACKER} in [r["target"] for r in got["revocations"]]
    assert not [f for f in got["findings"] if f["workload_id"] == wl("victim")]
