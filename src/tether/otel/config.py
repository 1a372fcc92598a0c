"""The mapping file: how spans become tether events where no convention says (YAML or JSON).

Everything has a default, so an empty file (or none) is a valid mapping. docs/otel.md documents
each key with an example.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tether.models.common import Autonomy, Operation, Sensitivity
from tether.otel import attributes as A

_SOURCE_KINDS = ("span", "agent_span", "resource")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)  # a typo in the file is an error


class ToolDefaults(_Strict):
    """Per-tool action fields used when the span does not carry them (or always, if ``fixed``)."""

    operation: Operation | None = None
    resource: str | None = None
    destination: str | None = None
    data_sensitivity: Sensitivity | None = None
    fixed: bool = Field(
        default=False,
        description="the operator's values win over the span's tether.action.* attributes",
    )


class ActionDefaults(_Strict):
    """Action fields of a tool call that neither the span nor the tool's entry gives."""

    operation: Operation = "execute"
    data_sensitivity: Sensitivity = "public"


class GrantSpec(_Strict):
    """A baseline grant for workflows whose root span carries no ``tether.grant.*``."""

    task_type: str
    purpose: str = ""
    scopes: list[str] = Field(default_factory=list)
    tools: list[str] = Field(default_factory=list)
    max_sensitivity: Sensitivity = "restricted"
    destinations: list[str] = Field(default_factory=list)
    window_s: float = Field(default=3600.0, gt=0, description="not_after = root start + window")
    autonomy: Autonomy = "medium"


class MappingConfig(_Strict):
    """How ``tether ingest otlp`` maps spans (see docs/otel.md, "The mapping file")."""

    source: str = Field(default="otel", description="the source name on coverage records")
    agent_sources: list[str] = Field(
        default_factory=lambda: [
            f"span:{A.AGENT_ID}",
            f"agent_span:{A.AGENT_ID}",
            f"agent_span:{A.GEN_AI_AGENT_ID}",
            f"agent_span:{A.GEN_AI_AGENT_NAME}",
            f"resource:{A.AGENT_ID}",
        ],
        description="where the acting workload id comes from, first match wins",
    )
    agent_id_template: str = Field(
        default="{value}", description="turns the matched value into a workload id"
    )
    default_action: ActionDefaults = Field(default_factory=ActionDefaults)
    tools: dict[str, ToolDefaults] = Field(default_factory=dict)
    grants: dict[str, GrantSpec] = Field(
        default_factory=dict,
        description="by the root span's gen_ai.workflow.name, else gen_ai.agent.name",
    )
    default_grant: GrantSpec | None = None
    complete_workflows: Literal["trace", "always", "never"] = Field(
        default="trace",
        description="emit workflow.completed when the root span ends: only when the workflow "
        "is the trace (its id is the trace id), always, or never",
    )
    dedupe_nested_tool_spans: bool = True
    unattested_credential_ttl_s: float = Field(default=86400.0, gt=0)
    trace_idle_s: float = Field(default=10.0, gt=0, description="flush a trace this long idle")
    trace_max_hold_s: float = Field(
        default=60.0, gt=0, description="flush a trace this long after its first span, at most"
    )
    max_held_spans: int = Field(default=200_000, ge=1, description="spans held at once, in all")
    inherit_across_resources: bool = Field(
        default=False,
        description="let a span take its agent (and credential) from an agent span that "
        "another process (resource) emitted",
    )
    max_traces: int = Field(default=10_000, ge=1, description="traces held at once")
    max_spans_per_trace: int = Field(default=2_000, ge=1)
    remembered_traces: int = Field(
        default=10_000, ge=0, description="flushed traces whose agent spans are kept for late spans"
    )

    @field_validator("agent_sources")
    @classmethod
    def _sources(cls, value: list[str]) -> list[str]:
        for item in value:
            kind, _, name = item.partition(":")
            if kind not in _SOURCE_KINDS or not name:
                raise ValueError(
                    f"{item!r}: each agent source is span:ATTR, agent_span:ATTR or resource:ATTR"
                )
        return value

    @field_validator("agent_id_template")
    @classmethod
    def _template(cls, value: str) -> str:
        if "{value}" not in value:
            raise ValueError("agent_id_template must contain {value}")
        return value

    @classmethod
    def load(cls, path: Path | None) -> MappingConfig:
        """Read a mapping file (YAML, of which JSON is a subset); no path: the defaults."""
        if path is None:
            return cls()
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(doc, dict):
            raise ValueError(f"{path}: a mapping file is a YAML mapping at the top level")
        return cls.model_validate(doc)
