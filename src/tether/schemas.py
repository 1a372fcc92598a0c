"""JSON Schemas for every record, generated from the pydantic models (``tether schemas``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, TypeAdapter

from tether.models import (
    DeadLetter,
    Decision,
    DelegationGranted,
    Finding,
    Heartbeat,
    InputEvent,
    Reinstatement,
    Revocation,
    ToolCallIntent,
    WorkflowCompleted,
    WorkflowStarted,
)
from tether.otel.coverage import CoverageRecord

REGENERATE = "make schemas   (or: tether schemas export --dir schemas)"
_BASE = "https://tether.dev/schemas/v1/"

_MODELS: dict[str, type[BaseModel]] = {
    "workflow.started": WorkflowStarted,
    "tool_call.intent": ToolCallIntent,
    "delegation.granted": DelegationGranted,
    "workflow.completed": WorkflowCompleted,
    "finding": Finding,
    "revocation": Revocation,
    "heartbeat": Heartbeat,
    "reinstatement": Reinstatement,  # an operator's (docs/operators.md)
    "decision": Decision,
    "deadletter": DeadLetter,
    "coverage": CoverageRecord,  # tether ingest otlp (docs/otel.md)
}


def generate() -> dict[str, bytes]:
    """File name -> schema document (pretty, sorted keys, trailing newline)."""
    docs: dict[str, dict[str, Any]] = {
        "input-event": TypeAdapter(InputEvent).json_schema(mode="validation"),
    }
    for name, model in _MODELS.items():
        is_input = "." in name  # event types are inputs; the rest are records tether writes
        docs[name] = model.model_json_schema(mode="validation" if is_input else "serialization")
    out = {}
    for name, body in docs.items():
        doc = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"{_BASE}{name}.schema.json",
            **body,
        }
        out[f"{name}.schema.json"] = (
            orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
        )
    return out


def export(directory: Path) -> list[Path]:
    """Write every schema into ``directory``; return the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in generate().items():
        path = directory / name
        path.write_bytes(data)
        written.append(path)
    return written


def stale(directory: Path) -> list[str]:
    """Names of schema files in ``directory`` that are missing, different, or no longer made."""
    expected = generate()
    problems = [
        name
        for name, data in expected.items()
        if not (directory / name).is_file() or (directory / name).read_bytes() != data
    ]
    problems += sorted(p.name for p in directory.glob("*.schema.json") if p.name not in expected)
    return problems
