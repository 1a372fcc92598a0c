"""Evidence bundles (tether.audit.bundle), built from in-memory topics: one workflow's
decisions whole, the others' as links, anchored to signed checkpoints; verified offline, and
each edit of the bundle is named."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from tether.audit.bundle import BadBundle, Sources, build, check
from tether.audit.chain import ChainHeads, Link
from tether.audit.checkpoint import CheckpointSigner, keys_of
from tether.audit.kafka import Stored
from tether.models.codec import encode
from tether.models.outputs import Decision, Revocation, Target
from tether.security import SetSigner, generate_key

T0 = datetime(2026, 12, 6, 2, 0, tzinfo=UTC)
SIGNER = SetSigner(generate_key("ES256"), issuer="urn:tether:test")
JWKS = {"keys": [SIGNER.public_jwk()]}
KEYS = keys_of(JWKS)


def decision(i: int, wf: str) -> bytes:
    return encode(
        Decision(
            event_id=f"e-{i}",
            workflow_id=wf,
            workload_id="agent",
            tool="crm.search",
            decision="allow",
            findings=[],
            policy_ids=[],
            evaluated_at=T0,
        )
    )


def sources() -> Sources:
    """Partition 0: 12 decisions, seq 4, 7 and 10 of wf-x; checkpoints of seq 2, 8 and 11."""
    heads, cps = ChainHeads(), CheckpointSigner(SIGNER)
    heads.set_head(0, None)
    decisions, checkpoints = [], []
    for i in range(12):
        wf = "wf-x" if i in {4, 7, 10} else f"wf-other-{i}"
        value, link = heads.seal(0, decision(i, wf))
        decisions.append(Stored(0, i, wf.encode(), value))
        if i in (2, 8, 11):
            token = cps.sign(link, log="t.decisions", worker="w", now=1e9)
            checkpoints.append(Stored(0, len(checkpoints), b"0", token))
    rev = Revocation(
        revocation_id="r-1",
        target=Target(kind="workflow", id="wf-x"),
        reason="task_completed",
        severity="info",
        workflow_id="wf-x",
        issued_at=T0,
        not_after=T0 + timedelta(hours=1),
        evidence=["e-1"],
    )
    intents = [Stored(0, 0, b"wf-x", b'{"workflow_id":"wf-x","event_id":"e-1"}')]
    revocations = [Stored(0, 0, b"workflow:wf-x", SIGNER.revocation(rev))]
    return Sources(intents, decisions, checkpoints, [], revocations)


def bundle() -> dict[str, Any]:
    return build(
        "wf-x", sources(), keys=KEYS, jwks=JWKS, log="t.decisions", created_at=T0.isoformat()
    )


def test_a_bundle_holds_its_workflow_whole_and_the_rest_as_links() -> None:
    b = bundle()
    segment = b["decisions"]["0"]
    # from the checkpoint before the first wf-x decision (seq 2) to the first after its last (11)
    assert [i["offset"] for i in segment] == list(range(2, 12))
    assert [i["offset"] for i in segment if "value" in i] == [4, 7, 10]
    assert all(b"wf-other" not in orjson.dumps(i) for i in segment if "link" in i)
    assert len(b["checkpoints"]) == 3
    assert len(b["events"]) == 1
    assert len(b["revocations"]) == 1
    report = check(orjson.loads(orjson.dumps(b)), KEYS)
    assert report.ok, [i.line() for i in report.issues]


def _change(b: dict[str, Any]) -> None:
    item = next(i for i in b["decisions"]["0"] if "value" in i)
    item["value"] = item["value"].replace('"allow"', '"deny"')


def _drop_link(b: dict[str, Any]) -> None:
    del b["decisions"]["0"][3]


def _forge_checkpoint(b: dict[str, Any]) -> None:
    other = CheckpointSigner(SetSigner(generate_key("ES256"), issuer="urn:tether:test"))

    b["checkpoints"].append(
        {
            "partition": 0,
            "offset": 9,
            "token": other.sign(Link(0, 5, "x", "y" * 64), log="t", worker="w", now=1).decode(),
        }
    )


def _bad_revocation(b: dict[str, Any]) -> None:
    token = b["revocations"][0]["token"]
    head, claims, sig = token.split(".")
    b["revocations"][0]["token"] = f"{head}.{claims}.{sig[:-4]}AAAA"


def _swap_value(b: dict[str, Any]) -> None:
    segment = b["decisions"]["0"]
    full = [i for i, item in enumerate(segment) if "value" in item]
    segment[full[0]], segment[full[1]] = segment[full[1]], segment[full[0]]


EDITS: list[tuple[str, Callable[[dict[str, Any]], None], set[str]]] = [
    ("a decision changed", _change, {"changed"}),
    ("a link removed", _drop_link, {"removed"}),
    ("a forged checkpoint added", _forge_checkpoint, {"bad_checkpoint"}),
    ("a revocation's signature broken", _bad_revocation, {"bad_signature"}),
    ("two decisions swapped", _swap_value, {"reordered"}),
]


@pytest.mark.parametrize(("name", "edit", "expected"), EDITS, ids=[e[0] for e in EDITS])
def test_each_edit_of_a_bundle_is_named(
    name: str, edit: Callable[[dict[str, Any]], None], expected: set[str]
) -> None:
    b = copy.deepcopy(bundle())
    edit(b)
    report = check(b, KEYS)
    assert {i.kind for i in report.issues} >= expected, [i.line() for i in report.issues]
    assert not report.ok


def test_not_a_bundle_is_an_input_error() -> None:
    with pytest.raises(BadBundle):
        check({"format": "something else"}, KEYS)
    with pytest.raises(BadBundle):
        check({"format": "tether.audit-bundle.v1", "workflow_id": "w", "decisions": {"x": 1}}, KEYS)
