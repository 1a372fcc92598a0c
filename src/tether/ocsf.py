"""A tether finding as an OCSF 1.8.0 Detection Finding (class 2004), the shape SIEMs ingest.

Pure: a function of the finding (and the package version), so ``tether replay --format ocsf``,
the ``tether ocsf-forward`` process and the tests give the same record for the same finding.
Validated in tests against the official OCSF 1.8.0 schema, compiled to JSON Schema by a package
tether did not write (``ocsf-json-schema``) and checked with ``jsonschema``.

Choices, and why:

- ``finding_info.uid`` is tether's ``finding_id``, derived from the cause: a duplicate finding
  maps to the same OCSF uid, so a SIEM de-duplicates it as tether does. ``metadata.uid`` is the
  same id, ``metadata.correlation_uid`` the workflow.
- ``activity_id`` 1 Create, ``status_id`` 1 New, ``is_alert`` true: tether emits a finding once,
  when raised; it does not track an analyst's triage.
- The Security Control profile carries what tether did: ``disposition_id`` 24 *Access Revoked*
  when a token, workflow or delegation was revoked, 3 *Quarantined* when only the workload was,
  15 *Detected* when nothing was enforced (an alert-only code, shadow mode, or every response
  withheld for an unauthenticated source); ``action_id`` 2 Denied or 3 Observed to match.
- ``evidences[0]`` holds ``actor`` (the workload, with the token id and issuer in its session)
  and, for a tool call, ``api`` (operation, service = tool) and ``dst_endpoint``; that meets the
  schema's at-least-one constraint for every finding. ``resources`` is the tool's resource, or
  the workflow when there is none.
- Agent identity and the delegation chain go in ``unmapped.tether``, shaped like the OCSF 1.9
  draft's ``ai_agent`` (uid, name) and ``delegation`` (uid, parent_uid, issuer_uid), so that the
  move into ``evidences[].ai_agent`` is a rename once 1.9 ships.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Final

import orjson

from tether import __version__
from tether.core.rules import rule_doc
from tether.models.outputs import Finding

OCSF_VERSION: Final = "1.8.0"
CLASS_UID: Final = 2004
CATEGORY_UID: Final = 2
ACTIVITY_CREATE: Final = 1
TYPE_UID: Final = CLASS_UID * 100 + ACTIVITY_CREATE

SEVERITY_ID: Final[dict[str, int]] = {"info": 1, "low": 2, "medium": 3, "high": 4, "critical": 5}
SEVERITY_NAME: Final[dict[int, str]] = {
    1: "Informational",
    2: "Low",
    3: "Medium",
    4: "High",
    5: "Critical",
}

DISPOSITION_REVOKED: Final = 24
DISPOSITION_QUARANTINED: Final = 3
DISPOSITION_DETECTED: Final = 15
_DISPOSITION_NAME: Final = {24: "Access Revoked", 3: "Quarantined", 15: "Detected"}
_REVOKES: Final = frozenset({"revoke_token", "revoke_workflow", "revoke_delegation"})


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def enforced(f: Finding) -> list[str]:
    """The responses tether enforced for ``f``: none in shadow mode or under a tuning
    exception, none that were withheld."""
    if f.shadow or f.exception:
        return []
    withheld = set(f.withheld or ())
    return [r for r in f.response if r != "alert" and r not in withheld]


def disposition_id(f: Finding) -> int:
    """24 Access Revoked, 3 Quarantined, or 15 Detected (see the module docstring)."""
    done = set(enforced(f))
    if done & _REVOKES:
        return DISPOSITION_REVOKED
    if "quarantine_workload" in done:
        return DISPOSITION_QUARANTINED
    return DISPOSITION_DETECTED


def detection_finding(f: Finding) -> dict[str, Any]:
    """The OCSF 1.8.0 Detection Finding for ``f``."""
    doc = rule_doc(f.code)
    severity_id = SEVERITY_ID[f.severity]
    disposition = disposition_id(f)
    event_ms = _ms(f.event_time)
    detected_ms = _ms(f.detected_at)
    title = f.title or doc.title
    finding_info: dict[str, Any] = {
        "uid": f.finding_id,
        "title": title,
        "desc": f.description or doc.description or f.summary,
        "types": [f.code],
        "analytic": {"type_id": 1, "type": "Rule", "uid": f.code, "name": title},
        "created_time": detected_ms,
        "first_seen_time": event_ms,
        "last_seen_time": event_ms,
        "related_events": [{"uid": e} for e in f.evidence if e],
        "tags": _tags(f),
    }
    atlas = f.atlas if f.atlas is not None else list(doc.atlas)
    if atlas:
        finding_info["attacks"] = [{"technique": {"uid": t}} for t in atlas]
    record: dict[str, Any] = {
        "activity_id": ACTIVITY_CREATE,
        "activity_name": "Create",
        "category_uid": CATEGORY_UID,
        "category_name": "Findings",
        "class_uid": CLASS_UID,
        "class_name": "Detection Finding",
        "type_uid": TYPE_UID,
        "type_name": "Detection Finding: Create",
        "time": detected_ms,
        "start_time": event_ms,
        "end_time": event_ms,
        "severity_id": severity_id,
        "severity": SEVERITY_NAME[severity_id],
        "status_id": 1,
        "status": "New",
        "is_alert": True,
        "message": f.summary,
        "metadata": {
            "version": OCSF_VERSION,
            "product": {"name": "tether", "vendor_name": "tether", "version": __version__},
            "uid": f.finding_id,
            "correlation_uid": f.workflow_id,
            "profiles": ["security_control"],
            "event_code": f.code,
        },
        "finding_info": finding_info,
        "evidences": [_evidence(f)],
        "resources": [_resource(f)],
        "action_id": 2 if disposition != DISPOSITION_DETECTED else 3,
        "action": "Denied" if disposition != DISPOSITION_DETECTED else "Observed",
        "disposition_id": disposition,
        "disposition": _DISPOSITION_NAME[disposition],
        "unmapped": {"tether": _unmapped(f)},
    }
    remediation = f.remediation or doc.remediation
    if remediation:
        record["remediation"] = {"desc": remediation}
    return record


def _tags(f: Finding) -> list[dict[str, Any]]:
    doc = rule_doc(f.code)
    tags: list[dict[str, Any]] = [{"name": "tether.code", "value": f.code}]
    for name, values in (
        ("owasp.agentic", f.owasp),
        ("csa.maestro", list(doc.maestro)),
        ("nist.ai_rmf", [doc.ai_rmf]),
        ("nist.csf", list(doc.csf)),
    ):
        if values:
            tags.append({"name": name, "values": list(values)})
    return tags


def _evidence(f: Finding) -> dict[str, Any]:
    session: dict[str, Any] = {}
    if f.token_id:
        session["credential_uid"] = f.token_id
    if f.credential_issuer:
        session["issuer"] = f.credential_issuer
    user: dict[str, Any] = {"uid": f.workload_id, "name": f.workload_id, "type_id": 4}
    if f.token_id:
        user["credential_uid"] = f.token_id
    actor: dict[str, Any] = {"user": user, "app_name": f.workload_id}
    if session:
        actor["session"] = session
    ev: dict[str, Any] = {"name": f.event_type or "event", "actor": actor}
    if f.evidence and f.evidence[0]:
        ev["uid"] = f.evidence[0]
    if f.tool:
        api: dict[str, Any] = {"operation": f.operation or "call", "service": {"name": f.tool}}
        ev["api"] = api
    if f.destination:
        ev["dst_endpoint"] = {"name": f.destination, "hostname": f.destination}
    return ev


def _resource(f: Finding) -> dict[str, Any]:
    if f.resource:
        return {"uid": f.resource, "name": f.resource, "type": "tool resource"}
    return {"uid": f.workflow_id, "name": f.workflow_id, "type": "workflow"}


def _unmapped(f: Finding) -> dict[str, Any]:
    """tether's own fields, shaped for the OCSF 1.9 ``ai_agent`` and draft ``delegation``."""
    out: dict[str, Any] = {
        "code": f.code,
        "workflow_id": f.workflow_id,
        "response": list(f.response),
        "enforced": enforced(f),
        "shadow": f.shadow,
        "ai_agent": {"uid": f.workload_id, "name": f.workload_id},
    }
    if f.withheld:
        out["withheld"] = list(f.withheld)
    if f.exception:
        out["exception"] = f.exception
    if f.tuning_revision:
        out["tuning_revision"] = f.tuning_revision
    if f.credential_subject:
        out["credential_subject"] = f.credential_subject
    if f.initiator:
        out["initiator"] = f.initiator
    chain = f.delegation_chain or []
    ids = f.delegation_ids or []
    if chain:
        out["delegation_chain"] = list(chain)
    if ids:
        # delegation i hands authority from chain[-len(ids)-1+i] to chain[-len(ids)+i]
        offset = len(chain) - len(ids) - 1
        out["delegations"] = [
            {
                "uid": d,
                "parent_uid": ids[i - 1] if i > 0 else None,
                "issuer_uid": chain[offset + i] if 0 <= offset + i < len(chain) else None,
            }
            for i, d in enumerate(ids)
        ]
    for name in ("authenticated", "source", "credential_verified"):
        value = getattr(f, name)
        if value is not None:
            out[name] = value
    return out


def finding_line_to_ocsf(line: bytes) -> bytes | None:
    """One tether output line (JSON) as one OCSF line, or None for records that are not findings
    (revocations, decisions, dead letters: OCSF output carries findings only)."""
    if b'"kind":"finding"' not in line:
        return None
    record = orjson.loads(line)
    if not isinstance(record, dict) or record.get("kind") != "finding":
        return None
    return orjson.dumps(detection_finding(Finding.model_validate(record))) + b"\n"


def ocsf_writer(write: Callable[[bytes], object]) -> Callable[[bytes], object]:
    """Wrap a writer of tether output lines so that it writes OCSF Detection Findings only."""

    def ocsf_write(data: bytes) -> object:
        out = [o for line in data.splitlines() if (o := finding_line_to_ocsf(line)) is not None]
        return write(b"".join(out)) if out else None

    return ocsf_write
