"""What each piece of a session costs in its encoded record, so that caps can hold it bounded.

The session record (``state_codec.dump_session``) is one changelog message; the broker refuses
one past ``message.max.bytes``, and the worker could then neither persist nor move on. The fold
keeps a running count of the bytes its growable containers add to the record
(``Session.state_bytes``) and of the event ids it remembers (``Session.seen_bytes``), from the
costs below, and refuses or sheds what would pass the caps (``tether.core.config.StateLimits``).

Costs are upper bounds of what the codec writes: strings as orjson escapes them (exact for
anything unusual, ``len`` for the printable ASCII ids nearly every event carries; a cruder
bound for recent calls, on the hot path), and every number at its longest form.
"""

from __future__ import annotations

from typing import Final

import orjson

from tether.models.events import InputEvent
from tether.models.session import ActRef, DelegationRec, Session, StartInfo

NUM: Final = 24  # a float as orjson writes it, at its longest (sign, 17 digits, exponent)


def jlen(s: str) -> int:
    """Bytes of ``s`` as a JSON string in the record, quotes included."""
    if s.isascii() and s.isprintable() and '"' not in s and "\\" not in s:
        return len(s) + 2
    return len(orjson.dumps(s))


SEEN_OVERHEAD: Final = NUM + 4  # a remembered event id's bytes beside its own: quotes, time


def seen_cost(event_id: str) -> int:
    """One remembered event id: ``"id":time,``."""
    return jlen(event_id) + NUM + 2


def token_cost(token_id: str, event_id: str, issuer: str | None = None) -> int:
    """One tracked token: ``"tok":[first, expires, "eid", "issuer"],``."""
    return jlen(token_id) + jlen(event_id) + 2 * NUM + 6 + (jlen(issuer) + 1 if issuer else 0)


def use_cost(token_id: str, workload_id: str, event_id: str) -> int:
    """One recorded use: ``["tok","wl",t,"eid",bool,exp,bool],``."""
    return jlen(token_id) + jlen(workload_id) + jlen(event_id) + 2 * NUM + 20


def delegation_cost(d: DelegationRec) -> int:
    """One delegation with its scopes."""
    scopes = sum(jlen(x) + 1 for x in d.scopes)
    ids = jlen(d.delegation_id) + jlen(d.delegator) + jlen(d.delegatee) + jlen(d.event_id)
    return ids + scopes + 2 * NUM + 12


def pending_cost(event: InputEvent) -> int:
    """One waiting event: ``[deadline, seq, "<the event as escaped JSON>"],``."""
    # ``len(orjson.dumps(event.model_dump_json()))`` without building either string twice: the
    # event's JSON holds no raw control character (pydantic escapes them), so quoting it again
    # adds one byte per ``"`` and per ``\\`` and the two quotes (tests/unit/test_state_size.py).
    raw = event.__pydantic_serializer__.to_json(event)
    return len(raw) + raw.count(b'"') + raw.count(b"\\") + 2 + 2 * NUM + 6


def recent_cost(act: ActRef) -> int:
    """One recent call: ``[t,"eid","wl","tok",exp],``, bounded without reading the strings
    (every character takes at most 6 bytes, escaped as ``\\u00XX``): this is paid twice per call, and
    a workflow holds only a grace period of them."""
    chars = len(act.event_id) + len(act.workload_id) + len(act.token_id)
    if act.token_issuer:
        chars += len(act.token_issuer) + 1
    return 6 * chars + RECENT_OVERHEAD


RECENT_OVERHEAD: Final = 2 * NUM + 14


def start_cost(start: StartInfo) -> int:
    """One remembered later start (``_start`` in the codec): its ids, grant lists and facts."""
    task_type, purpose, autonomy, _ = start.policy_facts
    strings = jlen(start.initiator) + jlen(start.event_id)
    strings += jlen(task_type) + jlen(purpose) + jlen(autonomy)
    lists = sum(
        jlen(x) + 1 for group in (start.scopes, start.tools, start.destinations) for x in group
    )
    return strings + lists + 4 * NUM + 24


def id_cost(value: str) -> int:
    """One id in a list (a finding fired, a token revoked on completion)."""
    return jlen(value) + 1


UNMEASURED: Final = -1  # ``Session.state_bytes`` of a loaded session not yet measured


def loaded(s: Session) -> None:
    """Prepare a session just loaded from its record: what the driver reads at once (the
    earliest unreported use, for its wake-up) now; its byte counts on first use (``measure``
    when ``state_bytes`` is ``UNMEASURED``), so that recovering many sessions does not pay for
    them."""
    if s.unsettled:
        s.settle_at = min(
            (u.t for tok in s.tokens for u in tok.recorded() if not u.reported),
            default=float("inf"),
        )
    s.state_bytes = UNMEASURED


def measure(s: Session) -> None:
    """Recompute a session's derived bookkeeping from its containers (after loading a record)."""
    total = 0
    unreported = float("inf")
    for tok in s.tokens:
        total += token_cost(tok.token_id, tok.event_id, tok.issuer)
        for u in tok.recorded():
            total += use_cost(tok.token_id, u.workload_id, u.event_id)
            if not u.reported:
                unreported = min(unreported, u.t)
    for d in s.delegations or ():
        total += delegation_cost(d)
    for p in s.pending or ():
        p.size = pending_cost(p.event)
        total += p.size
    total += sum(recent_cost(a) for a in s.recent or ())
    s.early_bytes = sum(pending_cost(e) for e in s.early or ())
    total += s.early_bytes
    total += sum(start_cost(x) for x in s.other_starts or ())
    total += sum(id_cost(f) for f in s.fired or ())
    total += sum(id_cost(t) for t in s.completion_revoked or ())
    s.state_bytes = total
    s.seen_bytes = sum(seen_cost(k) for k in s.seen)
    s.settle_at = unreported if s.unsettled else float("inf")
