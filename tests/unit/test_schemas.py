"""The committed JSON Schemas match the models."""

from __future__ import annotations

from pathlib import Path

from tether.schemas import REGENERATE, generate, stale

SCHEMAS = Path(__file__).parents[2] / "schemas"


def test_committed_schemas_are_current() -> None:
    problems = stale(SCHEMAS)
    assert not problems, f"stale schemas: {problems}; regenerate with: {REGENERATE}"


def test_every_record_has_a_schema() -> None:
    names = set(generate())
    assert {
        "input-event.schema.json",
        "finding.schema.json",
        "revocation.schema.json",
        "decision.schema.json",
        "deadletter.schema.json",
        "heartbeat.schema.json",
    } <= names
