"""Credentials shared across workflows (SPIRE-style cached SVIDs): with sharing allowed
(``credential_shared_across_workflows`` disabled), a workflow's completion revokes only the
credentials no other live workflow of their subject still uses; a shared credential is revoked
when its last workflow completes (docs/contract.md, "Completion and shared credentials")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_invariance import _RoundTrip, in_time_order, outcome, with_duplicates, within_grace

from builders import T0, call, completed, delegate, parse, started
from scenarios import Result, run
from streams.credential_uses import decode_use, encode_use
from tether.cli import main
from tether.core import Context, DetectionConfig, Monitor, Outbox
from tether.core.credentials import CredentialUse
from tether.core.engine import TokenIndex
from tether.models.events import Trust
from tether.models.state_codec import dump_session, dump_token, load_session, load_token

SHARING = DetectionConfig(disabled=frozenset({"credential_shared_across_workflows"}))
STRICT = DetectionConfig()  # the default: sharing is a finding, completion revokes at once
SVID = "svid-planner"  # one cached credential of the planner, used in every workflow
BASE = T0.timestamp()  # the builders' time 0


def completions(r: Result) -> set[tuple[str, str]]:
    """(token, workflow) of every task_completed revocation."""
    return {(v.target.id, v.workflow_id) for v in r.out.revocations if v.reason == "task_completed"}


CASES: list[tuple[str, list[dict[str, Any]], DetectionConfig, set[tuple[str, str]]]] = [
    (
        "sharing allowed: the first completion leaves the token to the live workflow",
        [
            started("wf-a", "planner", SVID, t=0),
            started("wf-b", "planner", SVID, t=1),
            call("wf-b", "planner", SVID, t=2),
            completed("wf-a", "planner", SVID, t=10),
        ],
        SHARING,
        set(),
    ),
    (
        "sharing allowed: the last completion revokes, in that workflow's name",
        [
            started("wf-a", "planner", SVID, t=0),
            started("wf-b", "planner", SVID, t=1),
            completed("wf-a", "planner", SVID, t=10),
            call("wf-b", "planner", SVID, t=20),
            completed("wf-b", "planner", SVID, t=30),
        ],
        SHARING,
        {(SVID, "wf-b")},
    ),
    (
        "sharing allowed: a token the completed workflow used alone is revoked at once",
        [
            started("wf-a", "planner", SVID, t=0),
            call("wf-a", "planner", "tok-own", t=1),
            started("wf-b", "planner", SVID, t=1),
            completed("wf-a", "planner", SVID, t=10),
        ],
        SHARING,
        {("tok-own", "wf-a")},
    ),
    (
        "sharing allowed: the other workflow's use arrives after the completion (within grace)",
        [
            started("wf-a", "planner", SVID, t=0),
            completed("wf-a", "planner", SVID, t=10),
            started("wf-b", "planner", SVID, t=9),  # dated before the completion, arrives after
        ],
        SHARING,
        set(),
    ),
    (
        "sharing allowed: a workflow that first used the token after the completion is not live",
        [
            started("wf-a", "planner", SVID, t=0),
            completed("wf-a", "planner", SVID, t=10),
            started("wf-b", "planner", SVID, t=11),
        ],
        SHARING,
        {(SVID, "wf-a")},
    ),
    (
        "sharing allowed: a workflow completed before the completion is not live",
        [
            started("wf-a", "planner", SVID, t=0),
            started("wf-b", "planner", SVID, t=1),
            completed("wf-b", "planner", SVID, t=5),
            completed("wf-a", "planner", SVID, t=10),
        ],
        SHARING,
        {(SVID, "wf-a")},
    ),
    (
        "sharing allowed: completions at the same instant both revoke",
        [
            started("wf-a", "planner", SVID, t=0),
            started("wf-b", "planner", SVID, t=1),
            completed("wf-a", "planner", SVID, t=10),
            completed("wf-b", "planner", SVID, t=10),
        ],
        SHARING,
        {(SVID, "wf-a"), (SVID, "wf-b")},
    ),
    (
        "sharing allowed: another workload presenting the token does not keep it alive",
        [
            started("wf-a", "planner", SVID, t=0),
            started("wf-x", "billing-bot", "tok-x", t=1),
            call("wf-x", "billing-bot", SVID, holder="planner", t=2),
            completed("wf-a", "planner", SVID, t=10),
        ],
        SHARING,
        {(SVID, "wf-a")},
    ),
    (
        "sharing allowed: a delegatee's inherited use does not keep it alive",
        [
            started("wf-a", "planner", SVID, t=0),
            started("wf-b", "researcher", "tok-r", t=0),
            delegate("wf-b", "researcher", "planner", "tok-r", t=0.5),
            call("wf-b", "researcher", SVID, holder="planner", t=2),
            completed("wf-a", "planner", SVID, t=10),
        ],
        SHARING,
        {(SVID, "wf-a")},
    ),
    (
        "default (sharing is a finding): the first completion revokes, as before",
        [
            started("wf-a", "planner", SVID, t=0),
            started("wf-b", "planner", SVID, t=1),
            completed("wf-a", "planner", SVID, t=10),
        ],
        STRICT,
        {(SVID, "wf-a")},
    ),
]


@pytest.mark.parametrize(("name", "events", "cfg", "expected"), CASES, ids=[c[0] for c in CASES])
def test_completion_revocations(
    name: str, events: list[dict[str, Any]], cfg: DetectionConfig, expected: set[tuple[str, str]]
) -> None:
    assert completions(run(events, cfg)) == expected


def test_a_late_use_of_a_revoked_shared_token_is_activity_after_completion() -> None:
    """The last completion revokes; a call dated after it in that workflow is still raised."""
    r = run(
        [
            started("wf-a", "planner", SVID, t=0),
            completed("wf-a", "planner", SVID, t=10),
            call("wf-a", "planner", SVID, t=12),
        ],
        SHARING,
    )
    assert completions(r) == {(SVID, "wf-a")}
    assert ("activity_after_completion", "wf-a") in r.codes


def test_the_revocation_waits_two_grace_periods_then_follows_the_watermark() -> None:
    """Decided once uses dated before the completion have settled and reached the index."""
    mon = Monitor(Context(SHARING))
    out = Outbox()
    for raw in [started("wf-a", "planner", SVID, t=0), completed("wf-a", "planner", SVID, t=10)]:
        out.extend(mon.process(parse(raw)))
    grace = SHARING.grace_s
    out.extend(mon.advance(mon.watermark + 2 * grace - 0.5))
    assert not [v for v in out.revocations if v.reason == "task_completed"]
    out.extend(mon.advance(BASE + 10 + 2 * grace + 0.5))
    assert {v.target.id for v in out.revocations if v.reason == "task_completed"} == {SVID}


def test_a_workflow_that_never_completes_defers_the_revocation_for_at_most_idle_timeout() -> None:
    """The bound: opening workflows cannot keep a credential unrevoked forever."""
    cfg = SHARING.model_copy(update={"idle_timeout_s": 600.0})
    mon = Monitor(Context(cfg))
    out = Outbox()
    for raw in [
        started("wf-a", "planner", SVID, t=0),
        started("wf-b", "planner", SVID, t=1),  # never completes
        completed("wf-a", "planner", SVID, t=10),
    ]:
        out.extend(mon.process(parse(raw)))
    out.extend(mon.advance(BASE + 10 + 590))
    assert not [v for v in out.revocations if v.reason == "task_completed"]
    out.extend(mon.advance(BASE + 10 + 600 + 1))
    assert {(v.target.id, v.workflow_id) for v in out.revocations} == {(SVID, "wf-a")}


def test_past_the_cap_of_workflows_per_token_completion_revokes() -> None:
    """Fails toward revoking: a token in more live workflows than the index remembers."""
    cfg = SHARING.model_copy(
        update={"limits": SHARING.limits.model_copy(update={"token_workflows": 2})}
    )
    events = [started(f"wf-{i}", "planner", SVID, t=i * 0.1) for i in range(4)]
    events.append(completed("wf-0", "planner", SVID, t=10))
    assert completions(run(events, cfg)) == {(SVID, "wf-0")}


def test_completion_notes_survive_a_restart_of_the_index() -> None:
    """The token state (with its waiting completions) round-trips through the changelog
    codec and a recovered index decides them."""
    idx = TokenIndex(Context(SHARING))
    out = Outbox()
    idx.observe(CredentialUse(SVID, "wl-p", "wf-b", 1.0, "e1", False, 600.0, owner=True), 1.0, out)
    idx.observe(CredentialUse(SVID, "wl-p", "wf-a", 0.0, "e0", False, 600.0, owner=True), 1.0, out)
    idx.observe(
        CredentialUse(SVID, "", "wf-a", 10.0, "done-a", False, 600.0, completed=True), 10.0, out
    )
    recovered = {k: load_token(dump_token(v), k) for k, v in idx.tokens.items()}
    again = TokenIndex(Context(SHARING), recovered)
    again.reschedule_all()
    again.observe(
        CredentialUse(SVID, "", "wf-b", 30.0, "done-b", False, 600.0, completed=True), 30.0, out
    )
    again.decide(100.0, 100.0, out)
    assert {(v.target.id, v.workflow_id) for v in out.revocations} == {(SVID, "wf-b")}


# --- order and duplicate invariance ---------------------------------------------------------

WORKFLOWS = ["wf-a", "wf-b", "wf-c", "wf-d"]
times = st.integers(min_value=0, max_value=40).map(lambda n: n / 2)


@st.composite
def shared_fleets(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Workflows of one planner sharing its cached SVID, some completing, with stray uses of
    a second token, calls dated after their workflow's completion, and another workload
    presenting the SVID (credential_reuse: never a use that keeps a workflow live)."""
    events: list[dict[str, Any]] = []
    n = 0

    def eid() -> str:
        nonlocal n
        n += 1
        return f"ev{n}"

    for wf in draw(st.lists(st.sampled_from(WORKFLOWS), min_size=1, max_size=4, unique=True)):
        events.append(started(wf, "planner", SVID, t=draw(times), eid=eid()))
        for _ in range(draw(st.integers(0, 3))):
            token = draw(st.sampled_from([SVID, SVID, "tok-2"]))
            actor = draw(st.sampled_from(["planner", "planner", "planner", "coder"]))
            events.append(call(wf, actor, token, holder="planner", t=draw(times), eid=eid()))
        if draw(st.integers(0, 3)) > 0:
            token = draw(st.sampled_from([SVID, None]))
            events.append(completed(wf, "planner", token, t=draw(times), eid=eid()))
    return events


SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(shared_fleets(), st.integers(0, 2**32))
def test_completion_revocations_do_not_depend_on_order(
    events: list[dict[str, Any]], seed: int
) -> None:
    assert outcome(run(within_grace(events, seed), SHARING)) == outcome(
        run(in_time_order(events), SHARING)
    )


@SETTINGS
@given(shared_fleets(), st.integers(0, 2**32))
def test_completion_revocations_do_not_depend_on_duplicates(
    events: list[dict[str, Any]], seed: int
) -> None:
    ordered = within_grace(events, seed)
    assert outcome(run(with_duplicates(ordered, seed), SHARING)) == outcome(run(ordered, SHARING))


def test_an_untrusted_claim_of_use_does_not_keep_someone_elses_token_alive() -> None:
    """A use only a source untrusted with credentials vouches for is nobody's to count: it
    neither defers the completion's revocation nor causes one."""
    untrusted = Trust(source="gw-untrusted", authenticated=True, withhold=["revoke_token"])
    mon = Monitor(Context(SHARING))
    out = Outbox()
    events = [
        parse(started("wf-a", "planner", SVID, t=0)),
        parse(started("wf-b", "planner", "tok-b", t=1)),
        parse(call("wf-b", "planner", SVID, t=2)).model_copy(update={"trust": untrusted}),
        parse(completed("wf-a", "planner", SVID, t=10)),
        parse(completed("wf-b", "planner", None, t=11)),
    ]
    for ev in events:
        out.extend(mon.process(ev))
    out.extend(mon.flush())
    assert {(v.target.id, v.workflow_id) for v in out.revocations} == {
        (SVID, "wf-a"),
        ("tok-b", "wf-b"),
    }


@pytest.mark.parametrize(
    "use",
    [
        CredentialUse(SVID, "wl-p", "wf-a", 1.5, "e1", False, 600.0, owner=True, issuer="iss"),
        CredentialUse(SVID, "", "wf-a", 10.0, "done-a", False, 600.0, completed=True),
        CredentialUse(SVID, "", "wf-a", 10.0, "done-a", False, 600.0, issuer="i", completed=True),
        CredentialUse(SVID, "wl-p", "wf-a", 1.5, "e1", True, 600.0, done=10.0),
        CredentialUse(SVID, "wl-p", "wf-a", 1.5, "e1", False, 600.0),
    ],
)
def test_completions_and_uses_cross_the_wire_unchanged(use: CredentialUse) -> None:
    assert decode_use(encode_use(use)) == use


@SETTINGS
@given(shared_fleets(), st.integers(0, 2**32))
def test_completion_revocations_survive_serialized_state(
    events: list[dict[str, Any]], seed: int
) -> None:
    """Sessions and tokens read back from their changelog encoding on every access (as after
    a worker restart) decide the same completions."""
    ordered = within_grace(events, seed)
    mon = Monitor(
        Context(SHARING),
        sessions=_RoundTrip(dump_session, load_session),
        tokens=_RoundTrip(dump_token, load_token),
    )
    out = Outbox()
    for raw in ordered:
        out.extend(mon.process(parse(raw)))
    out.extend(mon.flush())
    assert outcome(Result(out)) == outcome(run(ordered, SHARING))


@pytest.mark.parametrize(("env", "expected"), [("false", {"wf-b"}), ("true", {"wf-a", "wf-b"})])
def test_tether_replay_reads_the_setting_from_the_environment(
    tmp_path: Path, env: str, expected: set[str]
) -> None:
    """`TETHER_CREDENTIAL_SHARED_ACROSS_WORKFLOWS=false tether replay`, as the docs say."""
    events = [
        started("wf-a", "planner", SVID, t=0),
        started("wf-b", "planner", SVID, t=1),
        completed("wf-a", "planner", SVID, t=10),
        call("wf-b", "planner", SVID, t=12),
        completed("wf-b", "planner", SVID, t=20),
    ]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    result = CliRunner().invoke(
        main,
        ["replay", str(path), "-q", "--no-policy"],
        env={"TETHER_CREDENTIAL_SHARED_ACROSS_WORKFLOWS": env},
    )
    assert result.exit_code == 0, result.output
    records = [orjson.loads(line) for line in result.stdout.splitlines()]
    revoked = {
        r["workflow_id"]
        for r in records
        if r["kind"] == "revocation" and r["reason"] == "task_completed"
    }
    assert revoked == expected


def _note(workflow: str, t: float) -> CredentialUse:
    return CredentialUse(SVID, "", workflow, t, f"done-{workflow}", False, 600.0, completed=True)


def _use(workflow: str, t: float) -> CredentialUse:
    return CredentialUse(SVID, "wl-p", workflow, t, f"use-{workflow}", False, 600.0, owner=True)


def test_the_worker_waits_for_uses_a_catch_up_settles_with_the_completion() -> None:
    """A worker whose watermark jumps past a completion (catching up, or just restarted)
    settles the other workflow's earlier use in the same step; that use reaches the index
    through the credential-uses topic after the completion. The index waits ``wait_s`` of
    processing time after a completion arrives (and after recovery) before deciding."""
    idx = TokenIndex(Context(SHARING), wait_s=5.0)
    out = Outbox()
    idx.observe(_use("wf-a", 0.0), 1000.0, out)
    idx.observe(_note("wf-a", 10.0), 1000.0, out)
    idx.decide(500.0, 1001.0, out)  # the watermark is long past the completion: held
    assert not out.revocations
    idx.observe(_use("wf-b", 5.0), 1002.0, out)  # arrives within the wait: counted
    idx.decide(500.0, 1006.0, out)
    assert not out.revocations  # wf-b is live at the completion: deferred
    idx.observe(_note("wf-b", 30.0), 1007.0, out)
    recovered = {k: load_token(dump_token(v), k) for k, v in idx.tokens.items()}
    again = TokenIndex(Context(SHARING), recovered, wait_s=5.0)
    again.reschedule_all()
    again.decide(500.0, 2000.0, out)  # recovered: held afresh
    assert not out.revocations
    again.decide(500.0, 2005.5, out)
    assert {(v.target.id, v.workflow_id) for v in out.revocations} == {(SVID, "wf-b")}
