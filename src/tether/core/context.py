"""The facts an analyst needs first, taken from the causing event and its workflow's handoffs.

A finding's ``summary`` says what broke; this says where: the tool and operation, the resource
and destination, whose credential (subject, issuer), and the chain of delegations by which the
actor came to act. It is built only when a violation is raised (rare), so it may walk the
session's delegations; the walk is bounded (``MAX_CHAIN_HOPS``) and guards against cycles,
because a compromised agent chooses the shape of its delegations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from tether.models.events import InputEvent, ToolCallIntent
from tether.models.session import Session

MAX_CHAIN_HOPS: Final = 16
"""How far up the delegations the chain is drawn: enough for any real handoff, and a bound on a
crafted one (a chain cut here ends in ``…``)."""

CUT: Final = "…"


@dataclass(frozen=True, slots=True)
class FindingContext:
    """Where a violation happened. Every field is optional: not every cause is a tool call."""

    event_type: str | None = None
    tool: str | None = None
    operation: str | None = None
    resource: str | None = None
    destination: str | None = None
    credential_subject: str | None = None
    credential_issuer: str | None = None
    initiator: str | None = None
    delegation_chain: tuple[str, ...] = ()
    delegation_ids: tuple[str, ...] = ()


def context_of(session: Session, event: InputEvent) -> FindingContext:
    """The context of a violation that ``event`` caused in ``session``."""
    cred = event.credential
    action = event.action if type(event) is ToolCallIntent else None
    chain, ids = delegation_chain(session, event.agent.workload_id, event.t)
    start = session.started
    return FindingContext(
        event_type=event.event_type,
        tool=action.tool if action is not None else None,
        operation=action.operation if action is not None else None,
        resource=action.resource if action is not None else None,
        destination=(action.destination or None) if action is not None else None,
        credential_subject=cred.subject if cred is not None else None,
        credential_issuer=cred.issuer if cred is not None else None,
        initiator=start.initiator if start is not None else None,
        delegation_chain=chain,
        delegation_ids=ids,
    )


def delegation_chain(
    session: Session, workload_id: str, t: float
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The workloads from the initiator down to ``workload_id`` and the delegations between
    them, following at each step the latest delegation to that workload granted by ``t``.

    An actor nobody delegated to (the initiator, or an intruder) has a chain of itself alone. A
    chain that does not reach the initiator within ``MAX_CHAIN_HOPS`` or loops starts with
    ``CUT``.
    """
    start = session.started
    initiator = start.initiator if start is not None else None
    workloads = [workload_id]
    ids: list[str] = []
    seen = {workload_id}
    current = workload_id
    for _ in range(MAX_CHAIN_HOPS):
        if current == initiator:
            break
        granted = [d for d in session.delegations_of(current) if d.granted_at <= t]
        if not granted:
            break
        d = max(granted, key=lambda r: (r.granted_at, r.delegation_id))
        ids.append(d.delegation_id)
        current = d.delegator
        if current in seen:
            workloads.append(CUT)
            break
        seen.add(current)
        workloads.append(current)
    else:
        if current != initiator:
            workloads.append(CUT)
    workloads.reverse()
    ids.reverse()
    return tuple(workloads), tuple(ids)
