"""Session state to bytes and back: exact round trips, version 1 records, shared values."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from builders import call, completed, delegate, parse, started, wl
from tether.core import Context, DetectionConfig, Outbox
from tether.core.fold import fold
from tether.models import session as session_module
from tether.models.events import WorkflowStarted
from tether.models.session import Session, TokenState
from tether.models.state_codec import (
    STATE_VERSION,
    dump_session,
    dump_token,
    load_session,
    load_token,
)

CTX = Context(DetectionConfig())


def folded(events: list[dict[str, Any]]) -> Session:
    s: Session | None = None
    for raw in events:
        s = fold(s, parse(raw), CTX, 0.0, Outbox(), [])
    assert s is not None
    return s


def busy(wf: str = "wf-1") -> list[dict[str, Any]]:
    """Every kind of state: delegations, a pending check, findings, recent calls, completion."""
    return [
        started(wf, "planner", "tok-p", t=0, not_after=5),
        delegate(wf, "planner", "researcher", "tok-p", t=1, did="d-1"),
        call(wf, "researcher", "tok-r", t=2),
        call(wf, "planner", "tok-p", t=3, tool="shell.exec"),  # tool_not_granted
        call(wf, "coder", "tok-c", t=4),  # undelegated so far: waits
        call(wf, "planner", "tok-p", t=6),  # past not_after
        completed(wf, "planner", "tok-p", t=5),
    ]


def test_round_trip_is_exact() -> None:
    s = folded(busy())
    assert s.delegations
    assert s.fired
    assert s.pending
    assert s.recent
    assert s.completion_revoked
    record = dump_session(s)
    back = load_session(record)
    assert dump_session(back) == record
    assert back.started == s.started
    assert back.delegations == s.delegations
    assert back.delegations_to == s.delegations_to
    assert back.tokens == s.tokens  # with the uses recorded of each
    assert list(back.recent or ()) == list(s.recent or ())
    assert [(p.deadline, p.seq, p.event) for p in back.pending or ()] == [
        (p.deadline, p.seq, p.event) for p in s.pending or ()
    ]


def test_a_started_session_keeps_only_the_grant_facts() -> None:
    s = folded([started("wf-1", "planner", "tok-p", tools=[], destinations=["crm.internal"])])
    start = s.started
    assert start is not None
    assert start.scopes == {"crm:read", "crm:write", "docs:read"}
    assert start.tools == frozenset()
    assert start.destinations == {"crm.internal"}
    assert start.policy_facts == ("support_triage", "answer a customer ticket", "medium", 2)
    assert not hasattr(start, "grant")
    # containers most workflows never fill are not allocated
    assert (s.delegations, s.fired, s.completion_revoked, s.pending, s.recent) == (None,) * 5


def test_sessions_share_what_repeats_across_the_fleet() -> None:
    session_module._shared.clear()  # so that it cannot start over in the middle of this test
    a = folded([started("wf-a", "planner", "tok-a"), delegate("wf-a", "planner", "coder", "tok-a")])
    b = folded([started("wf-b", "planner", "tok-b"), delegate("wf-b", "planner", "coder", "tok-b")])
    sa, sb = a.started, b.started
    assert sa is not None
    assert sb is not None
    assert sa.initiator is sb.initiator
    assert sa.scopes is sb.scopes
    assert sa.tools is sb.tools
    assert sa.policy_facts is sb.policy_facts
    assert a.delegations is not None
    assert b.delegations is not None
    da, db = a.delegations[0], b.delegations[0]
    assert da.delegation_id == db.delegation_id == "d-planner-coder"
    assert da.delegatee is db.delegatee
    assert da.scopes is db.scopes
    # and again once loaded from their records
    la, lb = load_session(dump_session(a)), load_session(dump_session(b))
    assert la.started is not None
    assert lb.started is not None
    assert la.started.scopes is sb.scopes
    assert la.started.initiator is sa.initiator
    assert la.started.policy_facts is lb.started.policy_facts


def test_a_loaded_session_holds_each_event_id_once() -> None:
    s = load_session(dump_session(folded(busy())))
    ids = {id(k) for k in s.seen}
    assert s.started is not None
    assert id(s.started.event_id) in ids
    assert all(id(u.event_id) in ids for t in s.tokens for u in t.recorded())
    assert all(id(t.event_id) in ids for t in s.tokens)


def _v1(s: Session, grant: str) -> bytes:
    """``s`` as state version 1 wrote it (the grant as its JSON; every field present)."""
    start = s.started
    assert start is not None
    delegations = s.delegations or []
    return orjson.dumps(
        {
            "v": 1,
            "w": s.workflow_id,
            "s": [start.initiator, start.started_at, start.event_id, grant],
            "c": s.completed_at,
            "ce": s.completed_event,
            "d": [
                [
                    d.delegation_id,
                    d.delegator,
                    d.delegatee,
                    sorted(d.scopes),
                    d.granted_at,
                    d.expires_at,
                    d.event_id,
                ]
                for d in delegations
            ],
            "seen": s.seen,
            "f": sorted(s.fired or ()),
            "u": [
                [t.token_id, u.workload_id, u.t, u.event_id, u.inherited, u.expires_at, u.reported]
                for t in s.tokens
                for u in t.recorded()
            ],
            "us": s.unsettled,
            "tk": {t.token_id: [t.first_use, t.expires_at, t.event_id] for t in s.tokens},
            "cr": sorted(s.completion_revoked or ()),
            "p": [[p.deadline, p.seq, p.event.model_dump_json()] for p in s.pending or ()],
            "r": [list(a) for a in s.recent or ()],
            "un": None,
            "ud": s.unknown_done,
            "cp": s.compacted,
            "lt": s.last_time,
            "sq": s.seq,
            "pt": 3,
        }
    )


def test_version_1_records_still_load() -> None:
    events = busy()
    s = folded(events)
    s.partition = 3
    for token in s.tokens:  # version 1 kept no token issuer (a revocation then names the default)
        token.issuer = None
    start = parse(events[0])
    assert isinstance(start, WorkflowStarted)
    back = load_session(_v1(s, start.grant.model_dump_json()))
    assert STATE_VERSION == 2  # the version this test upgrades from is 1
    for t in s.tokens:  # a record written before credential_reuse knew owners has none
        for u in t.recorded():
            u.owner = False
    assert dump_session(back) == dump_session(s)


def test_unknown_versions_are_refused() -> None:
    doc = orjson.loads(dump_session(folded(busy())))
    doc["v"] = 99
    with pytest.raises(ValueError, match="unsupported session state version 99"):
        load_session(orjson.dumps(doc))


def test_empty_fields_are_left_out_of_the_record() -> None:
    doc = orjson.loads(dump_session(folded([started("wf-1", "planner", "tok-p")])))
    # "us": the start's credential use is reported to the token index a grace period later
    assert set(doc) == {"v", "w", "s", "seen", "u", "us", "tk", "lt", "pt"}
    assert doc["s"][0] == wl("planner")


def test_a_loaded_value_shares_its_id_with_the_key_it_was_stored_under() -> None:
    s = folded(busy())
    key = "".join(["wf-", "1"])  # equal to the workflow id, another object
    assert key is not s.workflow_id
    assert load_session(dump_session(s), key).workflow_id is key
    other = load_session(dump_session(s), "wf-2")  # a key that disagrees: the record's id wins
    assert other.workflow_id == "wf-1"
    token = TokenState("tok-1", 9.0)
    tkey = "".join(["tok-", "1"])
    assert load_token(dump_token(token), tkey).token_id is tkey
    assert load_token(dump_token(token), "tok-2").token_id == "tok-1"
