"""A SpanProcessor that makes an OpenTelemetry-instrumented agent fully checkable by tether.

The GenAI conventions carry no credential, no grant and no workload identity, and put the agent
and conversation only on the ``invoke_agent`` span. This processor stamps the ``tether.*``
attributes (tether.otel.attributes) onto every GenAI, MCP and OpenInference span as it starts,
so ``tether ingest otlp`` can attribute and check each tool call on its own::

    provider.add_span_processor(
        TetherSpanProcessor(workload_id="spiffe://acme.example/agent/planner", credential=token)
    )

and, per task, ``with tether_attributes(workflow_id="wf-42", credential=refreshed): ...``
(context-local, so concurrent tasks stamp their own). Requires ``opentelemetry-sdk``
(``pip install 'tether[otel]'``).

What it stamps is what the agent's process says about itself: docs/otel.md ("Trust") says
which detections that is enough for.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from tether.models.events import Credential
from tether.otel import attributes as A

_GENAI_NAMES = (
    A.OP_EXECUTE_TOOL,
    A.OP_INVOKE_AGENT,
    A.OP_INVOKE_WORKFLOW,
    A.MCP_TOOLS_CALL,
)
_MARKERS = (A.GEN_AI_OPERATION_NAME, A.MCP_METHOD_NAME, A.OPENINFERENCE_SPAN_KIND)


@dataclass(frozen=True, slots=True)
class _Stamp:
    workload_id: str | None = None
    workflow_id: str | None = None
    credential: Mapping[str, Any] | Credential | None = None


_current: contextvars.ContextVar[_Stamp | None] = contextvars.ContextVar(
    "tether_otel_stamp", default=None
)


@contextmanager
def tether_attributes(
    *,
    workload_id: str | None = None,
    workflow_id: str | None = None,
    credential: Mapping[str, Any] | Credential | None = None,
) -> Iterator[None]:
    """Within the block (this task/thread's context), stamp these values instead of the
    processor's own (a None keeps the processor's)."""
    token = _current.set(_Stamp(workload_id, workflow_id, credential))
    try:
        yield
    finally:
        _current.reset(token)


def credential_attributes(credential: Mapping[str, Any] | Credential) -> dict[str, Any]:
    """``tether.credential.*`` from a tether Credential or a mapping of its fields."""
    fields = credential.model_dump() if isinstance(credential, Credential) else dict(credential)
    out: dict[str, Any] = {}
    for key, attr in (
        ("token_id", A.CREDENTIAL_ID),
        ("issuer", A.CREDENTIAL_ISSUER),
        ("subject", A.CREDENTIAL_SUBJECT),
    ):
        if fields.get(key):
            out[attr] = str(fields[key])
    if fields.get("scopes") is not None:
        out[A.CREDENTIAL_SCOPES] = [str(s) for s in fields["scopes"]]
    for key, attr in (
        ("issued_at", A.CREDENTIAL_ISSUED_AT),
        ("expires_at", A.CREDENTIAL_EXPIRES_AT),
    ):
        value = fields.get(key)
        if isinstance(value, datetime):
            out[attr] = value.isoformat()
        elif isinstance(value, str | int | float) and not isinstance(value, bool):
            out[attr] = value
    return out


def is_agent_span(name: str, attributes: Mapping[str, Any] | None) -> bool:
    """A GenAI, MCP or OpenInference span (by its attributes, else its conventional name)."""
    if attributes and any(marker in attributes for marker in _MARKERS):
        return True
    return name.split(" ", 1)[0] in _GENAI_NAMES


class TetherSpanProcessor(SpanProcessor):
    """Stamps ``tether.agent.id``, ``tether.workflow.id`` and ``tether.credential.*`` onto
    GenAI, MCP and OpenInference spans at start (``all_spans=True``: onto every span).

    Attributes the span already has are kept (an instrumentation, or the application, knows
    better). Spans are stamped at start because a span's attributes are fixed once it ends;
    so mark a span by its ``gen_ai.operation.name`` (or conventional name) when starting it.
    """

    def __init__(
        self,
        *,
        workload_id: str | None = None,
        workflow_id: str | None = None,
        credential: Mapping[str, Any] | Credential | None = None,
        all_spans: bool = False,
    ) -> None:
        """Defaults for every span; :func:`tether_attributes` overrides them per task."""
        self._default = _Stamp(workload_id, workflow_id, credential)
        self._all = all_spans

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Stamp the span if it is an agent span."""
        if not self._all and not is_agent_span(span.name, span.attributes):
            return
        local = _current.get()
        default = self._default
        workload = (local and local.workload_id) or default.workload_id
        workflow = (local and local.workflow_id) or default.workflow_id
        credential = (local and local.credential) or default.credential
        stamp: dict[str, Any] = {}
        if workload:
            stamp[A.AGENT_ID] = workload
        if workflow:
            stamp[A.WORKFLOW_ID] = workflow
        if credential is not None:
            stamp.update(credential_attributes(credential))
        existing = span.attributes or {}
        for key, value in stamp.items():
            if key not in existing:
                span.set_attribute(key, value)

    def on_end(self, span: ReadableSpan) -> None:
        """Nothing to do at end."""

    def shutdown(self) -> None:
        """Nothing to release."""

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing buffered."""
        return True
