"""Order and duplicate invariance: the set of findings and revocations is a function of the
events, not of how they were delivered (within the grace period)."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builders import at, call, completed, delegate, started
from scenarios import Result, run

GRACE = 5.0
WORKFLOWS = ["wf-a", "wf-b", "wf-c"]
AGENTS = ["planner", "researcher", "summarizer", "coder"]
SCOPES = ["crm:read", "crm:write", "docs:read"]
TOOLS = ["crm.search", "crm.update", "shell.exec"]

times = st.integers(min_value=0, max_value=40).map(lambda n: n / 2)
scope_sets = st.lists(st.sampled_from(SCOPES), min_size=1, max_size=3, unique=True)


@st.composite
def fleets(draw: st.DrawFn, *, conflicts: bool = False) -> list[dict[str, Any]]:
    """A random multi-workflow event set with unique ids. Some workflows are started twice with
    the same grant (a re-emitted start, dated differently); with ``conflicts``, the second start
    may differ in its scopes, tools or initiator."""
    events: list[dict[str, Any]] = []
    n = 0

    def eid() -> str:
        nonlocal n
        n += 1
        return f"ev{n}"

    for wf in draw(st.lists(st.sampled_from(WORKFLOWS), min_size=1, max_size=3, unique=True)):
        initiator = draw(st.sampled_from(AGENTS))
        if draw(st.integers(0, 9)) > 0:  # most workflows start; some never do
            events.append(
                started(
                    wf,
                    initiator,
                    f"tok-{wf}-{initiator}",
                    t=draw(times),
                    scopes=draw(scope_sets),
                    tools=draw(st.sampled_from([[], TOOLS[:2]])),
                    not_after=draw(st.sampled_from([15, 3600])),
                    eid=eid(),
                )
            )
            if draw(st.integers(0, 3)) == 0:  # a second start
                again = dict(events[-1], event_id=eid(), occurred_at=at(draw(times)))
                if conflicts and draw(st.booleans()):
                    other = started(
                        wf,
                        draw(st.sampled_from([initiator, *AGENTS])),
                        f"tok-{wf}-{initiator}",
                        t=draw(times),
                        scopes=draw(scope_sets),
                        tools=draw(st.sampled_from([[], TOOLS[:2]])),
                        not_after=draw(st.sampled_from([15, 3600])),
                        eid=eid(),
                    )
                    again = other
                events.append(again)
        for k in range(draw(st.integers(0, 4))):
            frm, to = draw(st.sampled_from(AGENTS)), draw(st.sampled_from(AGENTS))
            events.append(
                delegate(
                    wf,
                    frm,
                    to,
                    f"tok-{wf}-{frm}",
                    t=draw(times),
                    did=f"d-{wf}-{k}",
                    scopes=draw(scope_sets),
                    holder_scopes=draw(scope_sets),
                    expires=draw(st.sampled_from([8, 900])),
                    eid=eid(),
                )
            )
        for _ in range(draw(st.integers(1, 8))):
            actor = draw(st.sampled_from(AGENTS))
            holder = draw(st.sampled_from([actor, actor, *AGENTS]))
            token_wf = draw(st.sampled_from([wf, *WORKFLOWS]))
            events.append(
                call(
                    wf,
                    actor,
                    f"tok-{token_wf}-{holder}",
                    holder=holder,
                    t=draw(times),
                    scopes=draw(scope_sets),
                    tool=draw(st.sampled_from(TOOLS)),
                    sensitivity=draw(st.sampled_from(["public", "restricted"])),
                    expires=draw(st.sampled_from([12, 600])),
                    eid=eid(),
                )
            )
        if draw(st.booleans()):
            events.append(
                completed(wf, initiator, f"tok-{wf}-{initiator}", t=draw(times), eid=eid())
            )
    return events


def _time(ev: dict[str, Any]) -> float:
    from datetime import datetime

    return datetime.fromisoformat(ev["occurred_at"]).timestamp()


def in_time_order(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The canonical delivery: sorted by event time."""
    return sorted(events, key=lambda e: (_time(e), e["event_id"]))


def within_grace(events: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """A random delivery where no event arrives after one dated more than GRACE later."""
    rng = random.Random(seed)
    keyed = [(_time(e) + rng.uniform(0, GRACE * 0.999), i, e) for i, e in enumerate(events)]
    return [e for _, _, e in sorted(keyed, key=lambda k: (k[0], k[1]))]


def with_duplicates(events: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """Deliver a random subset twice, the copy anywhere later in the stream."""
    rng = random.Random(seed)
    out = list(events)
    for e in events:
        if rng.random() < 0.3:
            pos = rng.randrange(out.index(e) + 1, len(out) + 1)
            out.insert(pos, e)
    return out


def outcome(r: Result) -> tuple[frozenset[tuple[str, ...]], frozenset[tuple[str, ...]]]:
    """What must not depend on delivery (readable, for failure messages)."""
    findings = frozenset(
        (f.finding_id, f.code, f.workflow_id, f.workload_id.rsplit("/", 1)[-1])
        for f in r.out.findings
    )
    revocations = frozenset(
        (v.revocation_id, v.reason, v.target.kind, v.target.id.rsplit("/", 1)[-1])
        for v in r.out.revocations
    )
    return findings, revocations


SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(fleets(), st.integers(0, 2**32))
def test_permuting_within_grace_changes_nothing(events: list[dict[str, Any]], seed: int) -> None:
    assert outcome(run(within_grace(events, seed))) == outcome(run(in_time_order(events)))


@SETTINGS
@given(fleets(), st.integers(0, 2**32))
def test_duplicates_change_nothing(events: list[dict[str, Any]], seed: int) -> None:
    ordered = within_grace(events, seed)
    assert outcome(run(with_duplicates(ordered, seed))) == outcome(run(ordered))


@SETTINGS
@given(fleets(conflicts=True), st.integers(0, 2**32))
def test_conflicting_starts_are_raised_in_every_order(
    events: list[dict[str, Any]], seed: int
) -> None:
    """Two different starts for one workflow: the earliest in event time is the grant, and each
    later one that differs raises grant_conflict and revokes the workflow, in every delivery
    order; workflows without a conflict keep exactly the same outcome. (Within a conflicting
    workflow, checks judged under a later start before the earliest arrived may differ.)"""
    canonical, shuffled = run(in_time_order(events)), run(within_grace(events, seed))
    conflicts = {f for f in outcome(canonical)[0] if f[1] == "grant_conflict"}
    assert conflicts == {f for f in outcome(shuffled)[0] if f[1] == "grant_conflict"}
    revoked = {r for r in outcome(canonical)[1] if r[1] == "grant_conflict"}
    assert revoked == {r for r in outcome(shuffled)[1] if r[1] == "grant_conflict"}
    assert {f[2] for f in conflicts} == {r[3] for r in revoked}
    conflicted = {f[2] for f in conflicts}
    clean = [e for e in events if e["workflow_id"] not in conflicted]
    assert outcome(run(within_grace(clean, seed))) == outcome(run(in_time_order(clean)))


class _RoundTrip(dict):  # type: ignore[type-arg]
    """A session store that serializes on every write, as a changelog-backed table does."""

    def __init__(self, dump: Any, load: Any) -> None:
        super().__init__()
        self._dump, self._load = dump, load

    def __getitem__(self, key: str) -> Any:
        return self._load(super().__getitem__(key))

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if dict.__contains__(self, key) else default  # decode

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, self._dump(value))


@SETTINGS
@given(fleets(), st.integers(0, 2**32))
def test_state_survives_serialization(events: list[dict[str, Any]], seed: int) -> None:
    """Folding through serialized state (as after a worker restart) changes nothing."""
    from builders import parse
    from tether.core import Context, DetectionConfig, Monitor, Outbox
    from tether.models.state_codec import (
        dump_session,
        dump_token,
        load_session,
        load_token,
    )

    ordered = within_grace(events, seed)
    mon = Monitor(
        Context(DetectionConfig()),
        sessions=_RoundTrip(dump_session, load_session),
        tokens=_RoundTrip(dump_token, load_token),
    )
    out = Outbox()
    for raw in ordered:
        out.extend(mon.process(parse(raw)))
    out.extend(mon.flush())
    assert outcome(Result(out)) == outcome(run(ordered))
