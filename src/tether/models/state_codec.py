"""Session and token state to bytes and back, for changelog-backed tables (compact JSON arrays)."""

from __future__ import annotations

from sys import intern
from typing import Any, TypeVar

import orjson

from tether.models.events import Grant, input_event_adapter
from tether.models.jsonbytes import dumps
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
    WorkflowShare,
    shared_set,
)
from tether.models.state_size import loaded

STATE_VERSION = 2  # sessions; 2: the start's grant facts inline, empty fields left out
_READABLE = frozenset({1, STATE_VERSION})  # version 1 sessions still load
TOKEN_STATE_VERSION = 1  # workflow shares ("s") are optional: older records still load
_INF = float("inf")

_T = TypeVar("_T")


class _Once:
    """Hands back the first equal value it was given: repeats within one record share an object
    (a record repeats event ids, token ids and times that the live session held once)."""

    __slots__ = ("_known",)

    def __init__(self) -> None:
        self._known: dict[object, object] = {}

    def __call__(self, value: _T) -> _T:
        return self._known.setdefault(value, value)  # type: ignore[return-value]  # keyed by itself


def _act(a: ActRef | None) -> list[Any] | None:
    if a is None:
        return None
    out = [a.t, a.event_id, a.workload_id, a.token_id, a.token_expires]
    if a.token_issuer is not None:
        out.append(a.token_issuer)
    return out


def _unact(v: list[Any], one: _Once) -> ActRef:
    t, event_id, workload_id, token_id, token_expires, *rest = v  # the issuer: newer states
    issuer = intern(rest[0]) if rest and isinstance(rest[0], str) else None
    return ActRef(
        one(t), one(event_id), intern(workload_id), one(token_id), one(token_expires), issuer
    )


def _token_doc(ts: TokenSeen) -> list[Any]:
    doc: list[Any] = [ts.first_use, ts.expires_at, ts.event_id]
    if ts.issuer is not None:
        doc.append(ts.issuer)
    return doc


def _start(start: StartInfo | None) -> list[Any] | None:
    if start is None:
        return None
    task_type, purpose, autonomy, _ = start.policy_facts
    return [
        start.initiator,
        start.started_at,
        start.event_id,
        start.not_after,
        start.max_level,
        task_type,
        purpose,
        autonomy,
        sorted(start.scopes),
        sorted(start.tools),
        sorted(start.destinations),
    ]


def _unstart(v: list[Any] | None, version: int, one: _Once) -> StartInfo | None:
    if v is None:
        return None
    if version == 1:  # [initiator, started_at, event_id, the grant as JSON]
        initiator, started_at, event_id, grant = v
        return StartInfo.of(
            initiator, one(started_at), one(event_id), Grant.model_validate_json(grant)
        )
    (
        initiator,
        started_at,
        event_id,
        not_after,
        max_level,
        task_type,
        purpose,
        autonomy,
        scopes,
        tools,
        destinations,
    ) = v
    return StartInfo.build(
        initiator,
        one(started_at),
        one(event_id),
        scopes=scopes,
        tools=tools,
        destinations=destinations,
        max_level=max_level,
        not_after=not_after,
        policy_facts=(task_type, purpose, autonomy, max_level),
    )


def dump_session(s: Session) -> bytes:  # noqa: PLR0912  # one branch per optional field
    """Serialize a session. Fields at their initial value are left out (smaller records)."""
    doc: dict[str, Any] = {
        "v": STATE_VERSION,
        "w": s.workflow_id,
        "s": _start(s.started),
        "seen": s.seen,
        "u": [
            [
                seen.token_id,
                u.workload_id,
                u.t,
                u.event_id,
                u.inherited,
                u.expires_at,
                u.reported,
                u.owner,
            ]
            for seen in s.tokens
            for u in seen.recorded()
        ],
        "tk": {ts.token_id: _token_doc(ts) for ts in s.tokens},
        "lt": s.last_time,
        "pt": s.partition,
    }
    if s.completed_at is not None:
        doc["c"] = s.completed_at
        doc["ce"] = s.completed_event
    if s.delegations:
        doc["d"] = [
            [
                d.delegation_id,
                d.delegator,
                d.delegatee,
                sorted(d.scopes),
                d.granted_at,
                d.expires_at,
                d.event_id,
            ]
            for d in s.delegations
        ]
    if s.fired:
        doc["f"] = sorted(s.fired)
    if s.unsettled:
        doc["us"] = s.unsettled
    if s.completion_revoked:
        doc["cr"] = sorted(s.completion_revoked)
    if s.pending:
        doc["p"] = [
            [p.deadline, p.seq, p.event.model_dump_json(), *([1] if p.quiet else [])]
            for p in s.pending
        ]
    if s.recent:
        doc["r"] = [_act(a) for a in s.recent]
    if s.unknown is not None:
        doc["un"] = _act(s.unknown)
    if s.unknown_done:
        doc["ud"] = True
    if s.compacted:
        doc["cp"] = True
    if s.seq:
        doc["sq"] = s.seq
    if s.limited:
        doc["lx"] = True
    if s.tokens_until > max((t.expires_at for t in s.tokens), default=0.0):
        doc["tu"] = s.tokens_until  # else it is the latest expiry of the tokens written above
    if s.early:
        doc["e"] = [ev.model_dump_json() for ev in s.early]
    if s.other_starts:
        doc["os"] = [_start(x) for x in s.other_starts]
    return dumps(doc)


def _own_id(recorded: str, key: str | None) -> str:
    """The id a loaded value keeps: the key string it was stored under when the two agree (one
    string for the table's key and the value), else the one in its record."""
    return key if key is not None and key == recorded else recorded


def load_session(data: bytes, key: str | None = None) -> Session:
    """Deserialize a session written by ``dump_session`` (this version or version 1).

    Values the live session shared are shared again (``_Once``, ``intern``, ``shared_set``), so
    that a recovered session costs about what the live one did. ``key``, the workflow id the
    record was stored under, becomes the session's own (one string for the table's key and
    the session, as in a live worker).
    """
    doc = orjson.loads(data)
    version = doc.get("v")
    if version not in _READABLE:
        raise ValueError(f"unsupported session state version {version!r}")
    one = _Once()
    s = Session(_own_id(doc["w"], key))
    s.seen = {one(k): one(t) for k, t in doc["seen"].items()}
    s.started = _unstart(doc["s"], version, one)
    s.completed_at = doc.get("c")
    s.completed_event = one(doc.get("ce"))
    for did, frm, to, scopes, granted, expires, eid in doc.get("d") or ():
        s.add_delegation(
            DelegationRec(
                did, intern(frm), intern(to), shared_set(scopes), one(granted), expires, one(eid)
            )
        )
    s.fired = set(doc["f"]) if doc.get("f") else None
    for tok, (first, exp, eid, *rest) in doc["tk"].items():
        issuer = intern(rest[0]) if rest and isinstance(rest[0], str) else None
        s.add_token(TokenSeen(one(tok), one(first), one(exp), one(eid), issuer=issuer))
    for tok, wl, t, eid, inh, exp, rep, *more in doc["u"]:
        seen = s.token(tok)
        if seen is None:  # not written by dump_session (every use's token is tracked)
            seen = s.add_token(TokenSeen(one(tok), one(t), one(exp), one(eid)))
        if seen.use_by(wl) is None:
            owner = bool(more and more[0])  # written since sources.yaml (docs/SECURITY.md)
            seen.record(UseRec(intern(wl), one(t), one(eid), inh, one(exp), rep, owner))
    s.unsettled = doc.get("us", 0)
    s.completion_revoked = {one(tok) for tok in doc["cr"]} if doc.get("cr") else None
    if doc.get("p"):
        s.pending = [
            Pending(p[0], p[1], input_event_adapter.validate_json(p[2]), len(p) > 3)  # noqa: PLR2004
            for p in doc["p"]
        ]
    if doc.get("r"):
        s.recent = [_unact(a, one) for a in doc["r"]]
    if doc.get("un") is not None:
        s.unknown = _unact(doc["un"], one)
    s.unknown_done = doc.get("ud", False)
    s.compacted = doc.get("cp", False)
    s.last_time = doc["lt"]
    s.seq = doc.get("sq", 0)
    s.tokens_until = doc.get("tu", max((t.expires_at for t in s.tokens), default=0.0))
    if doc.get("e"):
        s.early = [input_event_adapter.validate_json(ev) for ev in doc["e"]]
    if doc.get("os"):
        s.other_starts = [x for v in doc["os"] if (x := _unstart(v, version, one)) is not None]
    s.partition = doc.get("pt", -1)
    s.limited = doc.get("lx", False)
    loaded(s)
    return s


def dump_token(st: TokenState) -> bytes:
    """Serialize a token's cross-workflow state."""
    return dumps(
        {
            "v": TOKEN_STATE_VERSION,
            "k": st.token_id,
            "x": st.expires_at,
            "p": [
                [u.workload_id, u.workflow_id, u.t, u.event_id, u.inherited, u.owner]
                for u in st.pairs
            ],
            "f": sorted(st.fired or ()),
            "pt": st.partition,
            **({"i": st.issuer} if st.issuer is not None else {}),
            **({"s": _dump_shares(st)} if st.shares or st.crowded or st.backstop else {}),
        }
    )


def _dump_shares(st: TokenState) -> dict[str, object]:
    """The token's workflow shares (``tether.core.sharing``); infinity is written as null."""
    return {
        "w": {
            wf: [None if sh.first == _INF else sh.first, sh.done, sh.evidence, sh.state]
            for wf, sh in (st.shares or {}).items()
        },
        "c": st.crowded,
        "b": list(st.backstop) if st.backstop is not None else None,
    }


def _load_shares(st: TokenState, doc: dict[str, object]) -> None:
    shares = doc.get("w")
    if isinstance(shares, dict) and shares:
        st.shares = {
            wf: WorkflowShare(_INF if first is None else first, done, evidence, state)
            for wf, (first, done, evidence, state) in shares.items()
        }
    st.crowded = bool(doc.get("c"))
    backstop = doc.get("b")
    if isinstance(backstop, list):
        done, wf, evidence = backstop
        st.backstop = (done, wf, evidence)


def load_token(data: bytes, key: str | None = None) -> TokenState:
    """Deserialize a token state written by ``dump_token``; ``key`` as in ``load_session``."""
    doc = orjson.loads(data)
    if doc.get("v") != TOKEN_STATE_VERSION:
        raise ValueError(f"unsupported token state version {doc.get('v')!r}")
    st = TokenState(_own_id(doc["k"], key), doc["x"])
    st.pairs = [
        PairUse(intern(wl), wf, t, eid, inh, bool(more and more[0]))
        for wl, wf, t, eid, inh, *more in doc["p"]
    ]
    st.fired = set(doc["f"]) if doc["f"] else None
    st.partition = doc.get("pt", -1)
    issuer = doc.get("i")
    st.issuer = intern(issuer) if isinstance(issuer, str) else None
    shares = doc.get("s")
    if isinstance(shares, dict):
        _load_shares(st, shares)
    return st
