"""The Shared Signals (SSF 1.0) and CAEP 1.0 vocabulary of tether's SETs: event types, subjects.

Pure: builds and checks the ``sub_id`` and ``events`` claims for tether's records. How each
target kind maps onto SSF/CAEP (docs/contract.md, "Signed revocations", has the table):

* token → ``session-revoked`` about ``{"format": "jwt_id", "iss": <token issuer>, "jti": <id>}``
  (the session the token carries ends).
* workflow → ``session-revoked`` about
  ``{"format": "complex", "session": {"format": "opaque", "id": <workflow_id>}}``.
* delegation → ``session-revoked`` about ``{"format": "opaque", "id": <delegation_id>}``: the
  delegation is the grant under which the delegatee acts; every session under it ends.
* workload → ``credential-change`` with ``change_type: "revoke"`` and ``credential_type: "x509"``
  (a SPIFFE workload proves itself with an X.509-SVID; tether means every credential of the
  workload) about ``{"format": "uri", "uri": <SPIFFE/WIMSE id>}`` (``opaque`` when the id is
  not a URI).
* heartbeat → the SSF ``verification`` event, ``state`` = ``<source>:<sequence>``, about
  ``{"format": "opaque", "id": <source>}``.
"""

from __future__ import annotations

import re
from typing import Any, Final

from tether.models.outputs import Heartbeat, Reinstatement, Revocation, Target, TargetKind

CAEP: Final = "https://schemas.openid.net/secevent/caep/event-type/"
SESSION_REVOKED: Final = CAEP + "session-revoked"
CREDENTIAL_CHANGE: Final = CAEP + "credential-change"
VERIFICATION: Final = "https://schemas.openid.net/secevent/ssf/event-type/verification"
REINSTATED: Final = "urn:tether:secevent:event-type:reinstated"
"""An operator's reinstatement (docs/operators.md). CAEP has no counterpart of session-revoked
(a revoked session is not restored), so this is tether's own event type: it travels on the
revocations topic only, never to SSF receivers."""

EVENT_TYPES: Final[dict[TargetKind, str]] = {
    "token": SESSION_REVOKED,
    "workflow": SESSION_REVOKED,
    "delegation": SESSION_REVOKED,
    "workload": CREDENTIAL_CHANGE,
}
WORKLOAD_CREDENTIAL_TYPE: Final = "x509"
ANY_TOKEN_ISSUER: Final = "urn:tether:token-issuer:any"  # noqa: S105  # an issuer URN, no secret
"""The ``iss`` of a ``jwt_id`` subject when the credential's issuer is not configured: tether
identifies tokens by ``jti`` alone (the contract's ``token_id``)."""

_URI: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S+")


def subject(target: Target, *, token_issuer: str = ANY_TOKEN_ISSUER) -> dict[str, Any]:
    """The SSF subject identifier (``sub_id``) of a revocation target."""
    kind, ident = target.kind, target.id
    if kind == "token":
        return {"format": "jwt_id", "iss": token_issuer, "jti": ident}
    if kind == "workflow":
        return {"format": "complex", "session": {"format": "opaque", "id": ident}}
    if kind == "workload" and _URI.fullmatch(ident):
        return {"format": "uri", "uri": ident}
    return {"format": "opaque", "id": ident}


def reason_admin(rev: Revocation) -> str:
    """The administrator-facing reason: code, target, until when, and what caused it."""
    if rev.by is not None:
        cause = f"by operator {rev.by}: {rev.note or 'no reason given'}"
    else:
        cause = f"finding {rev.finding_id}" if rev.finding_id else "no finding"
    until = rev.not_after.isoformat().replace("+00:00", "Z")
    return (
        f"{rev.reason} ({rev.severity}): tether revoked {rev.target.kind} {rev.target.id} "
        f"until {until}; workflow {rev.workflow_id}, {cause}"
    )


def revocation_event(rev: Revocation) -> tuple[str, dict[str, Any]]:
    """The one CAEP event of a revocation: its type URI and body."""
    event_type = EVENT_TYPES[rev.target.kind]
    body: dict[str, Any] = {}
    if event_type == CREDENTIAL_CHANGE:
        body["credential_type"] = WORKLOAD_CREDENTIAL_TYPE
        body["change_type"] = "revoke"
        body["friendly_name"] = f"workload identity {rev.target.id}"
    body["event_timestamp"] = int(rev.issued_at.timestamp())
    body["initiating_entity"] = "policy" if rev.by is None else "admin"  # an operator's
    body["reason_admin"] = {"en": reason_admin(rev)}
    return event_type, body


def reinstatement_event(item: Reinstatement) -> tuple[str, dict[str, Any]]:
    """The one event of a reinstatement: tether's own type, initiated by an admin."""
    until = item.issued_at.isoformat().replace("+00:00", "Z")
    body: dict[str, Any] = {
        "event_timestamp": int(item.issued_at.timestamp()),
        "initiating_entity": "admin",
        "reason_admin": {
            "en": f"{item.by} reinstated {item.target.kind} {item.target.id} (revocations issued "
            f"at or before {until}): {item.reason}"
        },
    }
    return REINSTATED, body


def heartbeat_state(hb: Heartbeat) -> str:
    """The verification event's ``state``: which worker, which of its heartbeats."""
    return f"{hb.source}:{hb.sequence}"


def heartbeat_event(hb: Heartbeat) -> tuple[str, dict[str, Any]]:
    """The SSF verification event of a heartbeat: its type URI and body."""
    return VERIFICATION, {"state": heartbeat_state(hb)}


def heartbeat_subject(hb: Heartbeat) -> dict[str, Any]:
    """The verification event's subject: the stream, here the emitting worker (opaque)."""
    return {"format": "opaque", "id": hb.source}


def expected_event_type(record: Revocation | Heartbeat | Reinstatement) -> str:
    """The event type a SET carrying ``record`` must have."""
    if isinstance(record, Heartbeat):
        return VERIFICATION
    if isinstance(record, Reinstatement):
        return REINSTATED
    return EVENT_TYPES[record.target.kind]
