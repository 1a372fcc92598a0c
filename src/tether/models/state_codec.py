"""Session and token state to bytes and back, for changelog-backed tables (compact JSON arrays)."""

from __future__ import annotations

from collections import deque
from typing import Any

import orjson

from tether.models.events import Grant, input_event_adapter
from tether.models.session import (
    ActRef,
    DelegationRec,
    PairUse,
    Pending,
    Session,
    StartInfo,
    TokenSeen,
    TokenState,
    UseRec,
)

STATE_VERSION = 1


def _act(a: ActRef | None) -> list[Any] | None:
    return None if a is None else [a.t, a.event_id, a.workload_id, a.token_id, a.token_expires]


def _unact(v: list[Any] | None) -> ActRef | None:
    return None if v is None else ActRef(*v)


def dump_session(s: Session) -> bytes:
    """Serialize a session."""
    start = s.started
    doc = {
        "v": STATE_VERSION,
        "w": s.workflow_id,
        "s": None
        if start is None
        else [start.initiator, start.started_at, start.event_id, start.grant.model_dump_json()],
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
            for d in s.delegations.values()
        ],
        "seen": s.seen,
        "f": sorted(s.fired),
        "u": [
            [tok, wl, u.t, u.event_id, u.inherited, u.expires_at, u.reported]
            for (tok, wl), u in s.uses.items()
        ],
        "us": s.unsettled,
        "tk": {tok: [ts.first_use, ts.expires_at, ts.event_id] for tok, ts in s.tokens.items()},
        "cr": sorted(s.completion_revoked),
        "p": [[p.deadline, p.seq, p.event.model_dump_json()] for p in s.pending],
        "r": [_act(a) for a in s.recent],
        "un": _act(s.unknown),
        "ud": s.unknown_done,
        "cp": s.compacted,
        "lt": s.last_time,
        "sq": s.seq,
        "pt": s.partition,
    }
    return orjson.dumps(doc)


def load_session(data: bytes) -> Session:
    """Deserialize a session written by ``dump_session``."""
    doc = orjson.loads(data)
    if doc.get("v") != STATE_VERSION:
        raise ValueError(f"unsupported session state version {doc.get('v')!r}")
    s = Session(doc["w"])
    if doc["s"] is not None:
        initiator, started_at, event_id, grant = doc["s"]
        s.started = StartInfo.of(initiator, started_at, event_id, Grant.model_validate_json(grant))
    s.completed_at = doc["c"]
    s.completed_event = doc["ce"]
    for did, frm, to, scopes, granted, expires, eid in doc["d"]:
        rec = DelegationRec(did, frm, to, frozenset(scopes), granted, expires, eid)
        s.delegations[did] = rec
        s.delegations_to.setdefault(to, []).append(rec)
    s.seen = doc["seen"]
    s.fired = set(doc["f"])
    s.uses = {
        (tok, wl): UseRec(t, eid, inh, exp, rep) for tok, wl, t, eid, inh, exp, rep in doc["u"]
    }
    s.unsettled = doc["us"]
    s.tokens = {tok: TokenSeen(*v) for tok, v in doc["tk"].items()}
    s.completion_revoked = set(doc["cr"])
    s.pending = [
        Pending(deadline, seq, input_event_adapter.validate_json(ev))
        for deadline, seq, ev in doc["p"]
    ]
    s.recent = deque(ActRef(*a) for a in doc["r"])
    s.unknown = _unact(doc["un"])
    s.unknown_done = doc["ud"]
    s.compacted = doc["cp"]
    s.last_time = doc["lt"]
    s.seq = doc["sq"]
    s.partition = doc.get("pt", -1)
    return s


def dump_token(st: TokenState) -> bytes:
    """Serialize a token's cross-workflow state."""
    return orjson.dumps(
        {
            "v": STATE_VERSION,
            "k": st.token_id,
            "x": st.expires_at,
            "p": [[wl, wf, u.t, u.event_id, u.inherited] for (wl, wf), u in st.pairs.items()],
            "f": sorted(st.fired),
            "pt": st.partition,
        }
    )


def load_token(data: bytes) -> TokenState:
    """Deserialize a token state written by ``dump_token``."""
    doc = orjson.loads(data)
    if doc.get("v") != STATE_VERSION:
        raise ValueError(f"unsupported token state version {doc.get('v')!r}")
    st = TokenState(doc["k"], doc["x"])
    st.pairs = {(wl, wf): PairUse(t, eid, inh) for wl, wf, t, eid, inh in doc["p"]}
    st.fired = set(doc["f"])
    st.partition = doc.get("pt", -1)
    return st
