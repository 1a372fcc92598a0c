"""The SDK's TetherSpanProcessor, on the real OpenTelemetry SDK: what it stamps, and where."""

from __future__ import annotations

from datetime import UTC, datetime

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from otel_spans import Collect, otlp_proto
from tether.otel.config import MappingConfig
from tether.otel.decode import decode
from tether.otel.mapping import map_trace
from tether.sdk.otel import TetherSpanProcessor, tether_attributes

CRED = {
    "token_id": "jti-9",
    "issuer": "https://sts.acme.example",
    "subject": "spiffe://acme.example/agent/a",
    "scopes": ["crm:read"],
    "issued_at": datetime(2026, 11, 28, 13, 0, tzinfo=UTC),
    "expires_at": datetime(2026, 11, 28, 15, 0, tzinfo=UTC),
}


def _provider(processor: TetherSpanProcessor) -> tuple[TracerProvider, Collect]:
    sink = Collect()
    provider = TracerProvider()
    provider.add_span_processor(processor)  # before the exporter's processor
    provider.add_span_processor(SimpleSpanProcessor(sink))
    return provider, sink


def test_genai_and_mcp_spans_are_stamped_and_others_are_not() -> None:
    provider, sink = _provider(
        TetherSpanProcessor(workload_id="spiffe://acme.example/agent/a", credential=CRED)
    )
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("execute_tool crm.search"):
        pass
    with tracer.start_as_current_span("x", attributes={"mcp.method.name": "tools/call"}):
        pass
    with tracer.start_as_current_span("GET /health"):
        pass
    stamped = [dict(s.attributes or {}) for s in sink.spans]
    assert stamped[0]["tether.agent.id"] == "spiffe://acme.example/agent/a"
    assert stamped[0]["tether.credential.id"] == "jti-9"
    assert stamped[0]["tether.credential.scopes"] == ("crm:read",)
    assert stamped[1]["tether.credential.expires_at"] == "2026-11-28T15:00:00+00:00"
    assert "tether.agent.id" not in stamped[2]


def test_context_values_override_per_task_and_existing_attributes_are_kept() -> None:
    provider, sink = _provider(TetherSpanProcessor(workload_id="a", workflow_id="default"))
    tracer = provider.get_tracer("t")
    with tether_attributes(workflow_id="wf-42"):
        with tracer.start_as_current_span("invoke_agent a"):
            pass
        with tracer.start_as_current_span(
            "execute_tool t", attributes={"tether.agent.id": "explicit"}
        ):
            pass
    with tracer.start_as_current_span("invoke_agent a"):
        pass
    attrs = [dict(s.attributes or {}) for s in sink.spans]
    assert attrs[0]["tether.workflow.id"] == "wf-42"
    assert attrs[1]["tether.agent.id"] == "explicit"
    assert attrs[2]["tether.workflow.id"] == "default"


def test_one_line_makes_a_bare_tool_span_checkable_with_its_credential() -> None:
    """A tool span with no agent span above it maps to a fully attributed intent."""
    provider, sink = _provider(
        TetherSpanProcessor(workload_id="spiffe://acme.example/agent/a", credential=CRED)
    )
    with provider.get_tracer("t").start_as_current_span(
        "execute_tool crm.search",
        attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "crm.search"},
    ):
        pass
    out = map_trace(decode(otlp_proto(sink.spans)).spans, MappingConfig())
    (event,) = out.events
    assert event.agent.workload_id == "spiffe://acme.example/agent/a"
    assert event.credential.token_id == "jti-9"
    assert event.credential.scopes == ["crm:read"]
    assert "no_credential" not in out.coverage[0].not_applied
