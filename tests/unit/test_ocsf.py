"""Every finding code's OCSF record validates against the official OCSF 1.8.0 schema.

The schema is not tether's: ``ocsf-json-schema`` packages the OCSF project's 1.8.0 export and
compiles it to JSON Schema (draft 2020-12, with the ``at_least_one`` constraints and no extra
properties allowed); ``jsonschema`` checks the record against it.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema
from test_detections import CASES

from scenarios import run
from tether.cli import main
from tether.core import codes as C
from tether.demo.sample import write_sample
from tether.models.outputs import Finding
from tether.ocsf import (
    CLASS_UID,
    DISPOSITION_DETECTED,
    DISPOSITION_QUARANTINED,
    DISPOSITION_REVOKED,
    detection_finding,
)

T0 = datetime(2026, 11, 28, 14, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    ocsf = OcsfJsonSchemaEmbedded(get_ocsf_schema(version="1.8.0"))
    assert ocsf.lookup_class_name_from_uid(CLASS_UID) == "detection_finding"
    schema = ocsf.get_class_schema("detection_finding", profiles=["security_control"])
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def valid(validator: Draft202012Validator, record: dict[str, Any]) -> None:
    errors = sorted(validator.iter_errors(record), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:5])


def finding(code: str, **kw: Any) -> Finding:
    rule = C.RULES[code]
    base: dict[str, Any] = {
        "finding_id": "f-" + code,
        "code": code,
        "severity": rule.severity,
        "workflow_id": "wf-1",
        "workload_id": "spiffe://acme.example/agent/x",
        "summary": "s",
        "evidence": ["e1"],
        "event_time": T0,
        "detected_at": T0,
        "response": list(rule.response),
        "owasp": list(rule.owasp),
    }
    base.update(kw)
    return Finding(**base)


@pytest.mark.parametrize("code", sorted(C.RULES))
def test_every_code_maps_to_a_valid_detection_finding(
    validator: Draft202012Validator, code: str
) -> None:
    bare = detection_finding(finding(code))
    valid(validator, bare)
    full = detection_finding(
        finding(
            code,
            token_id="tok-1",
            tool="crm.search",
            operation="read",
            resource="crm://accounts/1",
            destination="paste.example",
            credential_subject="spiffe://acme.example/agent/y",
            credential_issuer="https://sts.acme.example",
            event_type="tool_call.intent",
            initiator="spiffe://acme.example/agent/p",
            delegation_chain=["spiffe://acme.example/agent/p", "spiffe://acme.example/agent/x"],
            delegation_ids=["d1"],
            authenticated=True,
            source="gw",
            credential_verified=False,
        )
    )
    valid(validator, full)
    for rec in (bare, full):
        assert rec["class_uid"] == 2004
        assert rec["type_uid"] == 200401
        assert rec["finding_info"]["uid"] == "f-" + code
        assert rec["metadata"]["version"] == "1.8.0"
        assert rec["is_alert"] is True
        assert rec["status_id"] == 1
    assert full["evidences"][0]["api"] == {"operation": "read", "service": {"name": "crm.search"}}


@pytest.mark.parametrize(("name", "events", "expected"), CASES, ids=[c[0] for c in CASES])
def test_every_detector_finding_validates(
    validator: Draft202012Validator,
    name: str,
    events: list,  # type: ignore[type-arg]
    expected: set[str],
) -> None:
    for f in run(events).out.findings:
        valid(validator, detection_finding(f))


def test_disposition_says_what_tether_did() -> None:
    revoke = detection_finding(finding(C.TOOL_NOT_GRANTED))
    assert (revoke["disposition_id"], revoke["action_id"]) == (DISPOSITION_REVOKED, 2)
    quarantine = detection_finding(finding(C.CREDENTIAL_INVALID))
    assert quarantine["disposition_id"] == DISPOSITION_QUARANTINED
    alert = detection_finding(finding(C.DELEGATION_DEPTH_EXCEEDED))
    assert (alert["disposition_id"], alert["action_id"]) == (DISPOSITION_DETECTED, 3)
    shadow = detection_finding(finding(C.TOOL_NOT_GRANTED, shadow=True))
    assert shadow["disposition_id"] == DISPOSITION_DETECTED
    held = detection_finding(finding(C.TOOL_NOT_GRANTED, withheld=["revoke_token"]))
    assert held["disposition_id"] == DISPOSITION_DETECTED
    assert held["unmapped"]["tether"]["enforced"] == []


text = st.text(min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(
    code=st.sampled_from(sorted(C.RULES)),
    tool=st.none() | text,
    resource=st.none() | text,
    destination=st.none() | text,
    chain=st.lists(text, max_size=5),
    evidence=st.lists(st.text(max_size=10), max_size=3),
)
def test_any_emitter_supplied_text_still_validates(
    validator: Draft202012Validator,
    code: str,
    tool: str | None,
    resource: str | None,
    destination: str | None,
    chain: list[str],
    evidence: list[str],
) -> None:
    f = finding(
        code,
        tool=tool,
        resource=resource,
        destination=destination,
        delegation_chain=chain or None,
        delegation_ids=[f"d{i}" for i in range(max(len(chain) - 1, 0))] or None,
        evidence=evidence,
    )
    valid(validator, detection_finding(f))


def test_replay_format_ocsf_writes_one_valid_detection_finding_per_finding(
    validator: Draft202012Validator, tmp_path: Path
) -> None:
    path = tmp_path / "events.jsonl"
    buf = io.BytesIO()
    write_sample(buf, start=T0, workflows=120, seed=11, attack_rate=0.4)
    path.write_bytes(buf.getvalue())
    plain = CliRunner().invoke(main, ["replay", "-q", str(path)])
    ocsf = CliRunner().invoke(main, ["replay", "-q", "--format", "ocsf", str(path)])
    assert plain.exit_code == ocsf.exit_code == 0, ocsf.output
    findings = [r for r in map(orjson.loads, plain.stdout.splitlines()) if r["kind"] == "finding"]
    records = [orjson.loads(line) for line in ocsf.stdout.splitlines()]
    assert len(findings) > 10
    assert [r["finding_info"]["uid"] for r in records] == [f["finding_id"] for f in findings]
    for record in records:
        valid(validator, record)
    codes = {r["finding_info"]["types"][0] for r in records}
    assert C.CREDENTIAL_REUSE in codes
