"""Findings an analyst can act on: every code has its words and maps, every finding its context."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_detections import CASES

from builders import ORG, call, delegate, started
from scenarios import run
from tether.core import codes as C
from tether.core.context import CUT, MAX_CHAIN_HOPS
from tether.core.rules import RULE_DOCS, rule_doc

W = "wf-soc"
FINDING_CODES = set(C.RULES)
ATLAS_ID = re.compile(r"^AML\.T\d{4}(\.\d{3})?$")
CSF = {"DE.CM", "DE.AE", "PR.AA", "RS.MI"}


def test_every_code_has_its_analyst_entry() -> None:
    assert set(RULE_DOCS) == FINDING_CODES
    for code, doc in RULE_DOCS.items():
        assert all((doc.title, doc.description, doc.remediation)), code
        assert all(ATLAS_ID.match(t) for t in doc.atlas), code
        assert doc.maestro, code
        assert all(m.startswith(("L3 ", "L5 ", "L6 ", "L7 ")) for m in doc.maestro)
        assert doc.ai_rmf in {"MANAGE", "MEASURE"}
        assert set(doc.csf) <= CSF
        # a code tether only reports is not labelled as a mitigation
        revokes = C.RULES[code].response != ("alert",)
        assert ("RS.MI" in doc.csf) is revokes, code


def test_an_unknown_code_still_has_a_title() -> None:
    assert rule_doc("some_future_code").title == "some future code"


@pytest.mark.parametrize(("name", "events", "expected"), CASES, ids=[c[0] for c in CASES])
def test_every_finding_carries_its_rule_words(name: str, events: list, expected: set) -> None:  # type: ignore[type-arg]
    for f in run(events).out.findings:
        doc = RULE_DOCS[f.code]
        assert (f.title, f.description, f.remediation) == (
            doc.title,
            doc.description,
            doc.remediation,
        )
        assert (f.atlas or []) == list(doc.atlas)


def test_a_tool_call_finding_names_tool_resource_credential_and_chain() -> None:
    r = run(
        [
            started(W, "planner", "tok-p", scopes=["crm:read"]),
            delegate(W, "planner", "researcher", "tok-p", did="d1"),
            delegate(W, "researcher", "writer", "tok-r", t=0.7, did="d2"),
            call(W, "writer", "tok-w", tool="crm.search", destination="paste.example", t=2),
        ]
    )
    (f,) = [f for f in r.out.findings if f.code == C.DESTINATION_NOT_GRANTED]
    assert (f.tool, f.operation, f.resource, f.destination) == (
        "crm.search",
        "read",
        "crm://accounts/123",
        "paste.example",
    )
    assert f.event_type == "tool_call.intent"
    assert f.credential_subject == ORG + "writer"
    assert f.credential_issuer == "https://sts.acme.example"
    assert f.initiator == ORG + "planner"
    assert f.delegation_chain == [ORG + "planner", ORG + "researcher", ORG + "writer"]
    assert f.delegation_ids == ["d1", "d2"]


def test_a_delegation_loop_draws_a_cut_chain_not_a_hang() -> None:
    r = run(
        [
            started(W, "planner", "tok-p", scopes=["crm:read"]),
            delegate(W, "planner", "a", "tok-p", did="d1", t=0.2),
            delegate(W, "a", "b", "tok-a", did="d2", t=0.3),
            delegate(W, "b", "a", "tok-b", did="d3", t=0.4),
            call(W, "b", "tok-b", destination="paste.example", t=2),
        ]
    )
    chains = [f.delegation_chain for f in r.out.findings if f.delegation_chain]
    assert chains
    for chain in chains:
        assert chain[-1] == ORG + "b"
        assert len(chain) <= MAX_CHAIN_HOPS + 2
    assert any(chain[0] == CUT for chain in chains)


def test_a_very_long_chain_is_cut_at_the_bound() -> None:
    hops = 3 * MAX_CHAIN_HOPS
    names = ["planner"] + [f"n{i}" for i in range(hops)]
    events = [started(W, "planner", "tok-p", scopes=["crm:read"])]
    for i in range(hops):
        events.append(
            delegate(W, names[i], names[i + 1], f"tok-{i}", did=f"d{i}", t=0.01 * (i + 1))
        )
    events.append(call(W, names[-1], f"tok-{hops}", destination="paste.example", t=2))
    last = ORG + names[-1]
    findings = [f for f in run(events).out.findings if f.workload_id == last]
    assert findings
    for f in findings:
        assert f.delegation_chain is not None
        assert f.delegation_chain[0] == CUT
        assert len(f.delegation_chain) == MAX_CHAIN_HOPS + 2


def test_the_soc_page_lists_every_code_with_its_title() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "soc.md").read_text()
    for code, doc in RULE_DOCS.items():
        assert f"| `{code}` | {doc.title} |" in page, code
