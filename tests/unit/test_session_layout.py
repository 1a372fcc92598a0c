"""The session's compact layout: delegations indexed only when many, uses held by their token.

The layout must not change a single decision: the same workflow folded with the delegation
index built early and never built gives the same findings, decisions and state record.
"""

from __future__ import annotations

from typing import Any

import pytest

from builders import call, completed, delegate, parse, started, wl
from tether.core import Context, DetectionConfig, Outbox
from tether.core.credentials import CredentialUse
from tether.core.fold import fire_due, fold
from tether.models import session as session_module
from tether.models.session import DelegationRec, Session, TokenSeen, UseRec
from tether.models.state_codec import dump_session, load_session

CTX = Context(DetectionConfig(max_chain_length=4))
CHAIN = session_module.DELEGATION_INDEX_AT + 4  # longer than the threshold


def _rec(did: str, frm: str, to: str, t: float = 0.0) -> DelegationRec:
    return DelegationRec(did, frm, to, frozenset({"crm:read"}), t, t + 100, f"e-{did}")


def test_delegations_are_scanned_until_there_are_many_then_indexed() -> None:
    s = Session("wf")
    recs = [_rec(f"d-{i}", "a", f"b{i % 3}") for i in range(session_module.DELEGATION_INDEX_AT)]
    for r in recs:
        assert s.add_delegation(r)
    assert s.delegations_to is None
    scanned = {b: list(s.delegations_of(b)) for b in ("b0", "b1", "b2", "nobody")}
    assert s.add_delegation(_rec("d-last", "a", "b0"))
    assert s.delegations_to is not None
    assert s.delegation_ids == {d.delegation_id for d in s.delegations or ()}
    assert list(s.delegations_of("b0")) == [*scanned["b0"], (s.delegations or [])[-1]]
    for b in ("b1", "b2", "nobody"):
        assert list(s.delegations_of(b)) == scanned[b]


def test_a_delegation_id_seen_before_keeps_the_first() -> None:
    s = Session("wf")
    first = _rec("d-1", "a", "b")
    assert s.add_delegation(first)
    assert not s.add_delegation(_rec("d-1", "a", "c"))
    assert list(s.delegations_of("b")) == [first]
    assert list(s.delegations_of("c")) == []
    for i in range(2, session_module.DELEGATION_INDEX_AT + 2):  # indexed from here on
        assert s.add_delegation(_rec(f"d-{i}", "a", "b"))
    assert s.delegation_ids is not None
    assert not s.add_delegation(_rec("d-1", "a", "c"))
    assert not s.add_delegation(_rec(f"d-{i}", "a", "c"))
    assert s.has_delegation("d-1")
    assert not s.has_delegation("d-0")
    assert list(s.delegations_of("c")) == []


def test_a_token_holds_one_use_per_workload_then_a_list() -> None:
    tok = TokenSeen("tok-1", 1.0, 99.0, "e1")
    assert tok.recorded() == ()
    a = UseRec("a", 1.0, "e1", False, 99.0)
    tok.record(a)
    assert tok.uses is a
    b, c = UseRec("b", 2.0, "e2", True, 99.0), UseRec("c", 3.0, "e3", False, 99.0)
    tok.record(b)
    tok.record(c)
    assert list(tok.recorded()) == [a, b, c]
    assert tok.use_by("b") is b
    assert tok.use_by("d") is None


def test_tokens_are_scanned_until_there_are_many_then_indexed() -> None:
    s = Session("wf")
    for i in range(session_module.TOKEN_INDEX_AT):
        s.add_token(TokenSeen(f"tok-{i}", i, 99.0, f"e{i}"))
    assert s.token_index is None
    assert s.token("tok-3") is s.tokens[3]
    assert s.token("tok-x") is None
    s.add_token(TokenSeen("tok-last", 9.0, 99.0, "e9"))
    assert s.token_index is not None
    assert [s.token(f"tok-{i}") for i in range(session_module.TOKEN_INDEX_AT)] == s.tokens[:-1]
    assert s.token("tok-last") is s.tokens[-1]
    s.add_token(TokenSeen("tok-after", 10.0, 99.0, "e10"))
    assert s.token("tok-after") is s.tokens[-1]
    s.forget_tokens()
    assert (s.tokens, s.token_index, s.token("tok-3")) == ([], None, None)


def _workflow(wf: str, *, complete: bool = True) -> list[dict[str, Any]]:
    """A chain of delegations longer than the index threshold, fan-out, and shared tokens."""
    n = CHAIN
    events = [started(wf, "a0", "tok-0", t=0, not_after=500)]
    for i in range(n):
        events.append(delegate(wf, f"a{i}", f"a{i + 1}", f"tok-{i}", t=1 + i, did=f"d-{i}"))
        events.append(delegate(wf, f"a{i}", f"side{i}", f"tok-{i}", t=1 + i, did=f"s-{i}"))
    for i in range(n + 1):
        events.append(call(wf, f"a{i}", f"tok-{i}", t=50 + i))
        events.append(call(wf, f"a{i}", f"tok-{i}", t=60 + i, tool="shell.exec"))
        events.append(call(wf, f"side{i}", f"tok-{i}", t=70 + i, holder=f"a{i}"))  # another's token
    events.append(delegate(wf, "a3", "a1", "tok-3", t=80, did="cycle"))  # back up the chain
    events.append(call(wf, "a1", "tok-1", t=81))
    events.append(call(wf, "stranger", "tok-s", t=82))  # never delegated to
    events.append(call(wf, "a2", "tok-2", t=45))  # late and earlier than its first use
    if complete:
        events.append(completed(wf, "a0", "tok-0", t=90))
    for i, ev in enumerate(events):
        ev["event_id"] = f"{wf}-e{i}"  # the same ids in every run
    return events


def _fold_all(events: list[dict[str, Any]]) -> tuple[Session, list[Any], list[CredentialUse]]:
    s: Session | None = None
    out = Outbox()
    uses: list[CredentialUse] = []
    for raw in events:
        s = fold(s, parse(raw), CTX, 0.0, out, uses)
    assert s is not None
    fire_due(s, s.last_time + 2 * CTX.cfg.grace_s, CTX, 0.0, out, uses)  # every use settles
    records = [f.model_dump() for f in out.findings]
    records += [d.model_dump() for d in out.decisions]
    records += [r.model_dump() for r in out.revocations]
    return s, records, uses


@pytest.mark.parametrize("complete", [False, True])
def test_the_indexes_change_no_decision(monkeypatch: pytest.MonkeyPatch, complete: bool) -> None:
    indexed, out_indexed, uses_indexed = _fold_all(_workflow("wf-x", complete=complete))
    assert indexed.delegations_to is not None
    assert indexed.token_index is not None or complete  # a completed session drops its tokens
    monkeypatch.setattr(session_module, "DELEGATION_INDEX_AT", 10_000)
    monkeypatch.setattr(session_module, "TOKEN_INDEX_AT", 10_000)
    scanned, out_scanned, uses_scanned = _fold_all(_workflow("wf-x", complete=complete))
    assert scanned.delegations_to is None
    assert scanned.token_index is None
    assert out_indexed == out_scanned
    assert uses_indexed == uses_scanned
    assert any(f["code"] == "tool_not_granted" for f in out_indexed if "code" in f)
    assert dump_session(indexed) == dump_session(scanned)


def test_uses_by_several_workloads_survive_a_round_trip() -> None:
    s, _, uses = _fold_all(_workflow("wf-y", complete=False))
    tok = s.token("tok-2")
    assert tok is not None
    assert {u.workload_id for u in tok.recorded()} == {wl("a2"), wl("side2")}
    first = tok.use_by(wl("a2"))
    assert first is not None
    assert first.t == tok.first_use == min(u.t for u in tok.recorded())  # its own delegation
    assert {(u.token_id, u.workload_id) for u in uses} == {
        (t.token_id, u.workload_id) for t in s.tokens for u in t.recorded()
    }
    back = load_session(dump_session(s))
    assert back.tokens == s.tokens
    assert back.token_index == s.token_index
    assert back.delegations == s.delegations
    assert back.delegations_to == s.delegations_to
    assert back.delegation_ids == s.delegation_ids
