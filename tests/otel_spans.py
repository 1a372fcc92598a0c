"""Spans made by the real OpenTelemetry Python SDK, serialised as the Collector's Kafka exporter
writes them: one ``ExportTraceServiceRequest`` per record, ``otlp_proto`` or ``otlp_json``, a
whole batch per record or (``partition_traces_by_id``) one trace per record keyed by its hex id.

The fleet below is the OTel face of a few workflows: a GenAI agent with tool spans, an agent
that invokes another (a delegation), an MCP ``tools/call`` span, an OpenInference TOOL span;
benign ones and violating ones (a tool outside the grant, a broken hand-off, a stolen token).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Span, Status, StatusCode, Tracer

ORG = "spiffe://acme.example/agent/"
T0_NS = 1_795_874_400_000_000_000  # 2026-11-28T10:00:00Z
SEC = 1_000_000_000


class Collect(SpanExporter):
    """An exporter that keeps what the SDK exports, in export order."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


@dataclass
class Otel:
    """A tracer provider per service (resource), all exporting to one collector list."""

    sink: Collect

    def tracer(self, service: str, **resource: Any) -> Tracer:
        provider = TracerProvider(resource=Resource.create({"service.name": service, **resource}))
        provider.add_span_processor(SimpleSpanProcessor(self.sink))
        return provider.get_tracer("tether-tests", "1.0")


def cred_attrs(holder: str, jti: str, scopes: list[str], t0_s: float) -> dict[str, Any]:
    return {
        "tether.credential.id": jti,
        "tether.credential.issuer": "https://sts.acme.example",
        "tether.credential.subject": ORG + holder,
        "tether.credential.scopes": scopes,
        "tether.credential.issued_at": t0_s - 30,
        "tether.credential.expires_at": t0_s + 600,
    }


@contextmanager
def span(
    tracer: Tracer,
    name: str,
    start_ns: int,
    end_ns: int,
    attrs: dict[str, Any],
    error: bool = False,
) -> Iterator[Span]:
    s = tracer.start_span(name, start_time=start_ns, attributes=attrs)
    from opentelemetry import trace

    with trace.use_span(s, end_on_exit=False):
        yield s
    if error:
        s.set_status(Status(StatusCode.ERROR))
    s.end(end_time=end_ns)


def grant_attrs(scopes: list[str], tools: list[str], t0_s: float) -> dict[str, Any]:
    return {
        "tether.grant.task_type": "triage",
        "tether.grant.purpose": "answer a ticket",
        "tether.grant.scopes": scopes,
        "tether.grant.tools": tools,
        "tether.grant.max_sensitivity": "confidential",
        "tether.grant.not_after": t0_s + 3600,
        "tether.grant.autonomy": "low",
    }


def fleet(sink: Collect, *, tag: str, base_ns: int = T0_NS) -> list[str]:
    """Emit the test fleet's spans into ``sink``; returns the trace ids (hex), one per workflow.

    ``tag`` makes token ids unique per test run (the shared broker's token index is global).
    """
    otel = Otel(sink)
    traces: list[str] = []
    for n, kind in enumerate(
        ("benign", "tool_not_granted", "broken_handoff", "delegation_ok", "mcp_openinference")
    ):
        t0 = base_ns + n * 60 * SEC
        t0_s = t0 / SEC
        planner = otel.tracer(f"planner-{kind}", **{"tether.agent.id": ORG + "planner"})
        worker = otel.tracer(f"worker-{kind}")
        jti_p = f"jti-p-{kind}-{tag}"
        jti_w = f"jti-w-{kind}-{tag}"
        root_attrs = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.provider.name": "openai",
            "gen_ai.agent.id": ORG + "planner",
            "gen_ai.agent.name": "planner",
            **grant_attrs(["crm:read", "mail:send"], ["crm.search", "mail.send"], t0_s),
            **cred_attrs("planner", jti_p, ["crm:read", "mail:send"], t0_s),
        }
        with span(planner, "invoke_agent planner", t0, t0 + 30 * SEC, root_attrs) as root:
            traces.append(format(root.get_span_context().trace_id, "032x"))
            tool = "crm.search" if kind != "tool_not_granted" else "shell.exec"
            with span(
                planner,
                f"execute_tool {tool}",
                t0 + 1 * SEC,
                t0 + 2 * SEC,
                {
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": tool,
                    "gen_ai.tool.call.id": f"call-{n}",
                    "server.address": "crm.internal",
                    "tether.action.operation": "read",
                    "tether.action.data_sensitivity": "internal",
                },
            ):
                pass
            if kind == "broken_handoff":
                # the worker acts in the planner's trace with nobody having invoked it
                with span(
                    worker,
                    "execute_tool crm.search",
                    t0 + 3 * SEC,
                    t0 + 4 * SEC,
                    {
                        "gen_ai.operation.name": "execute_tool",
                        "gen_ai.tool.name": "crm.search",
                        "tether.agent.id": ORG + "worker",
                        "tether.action.operation": "read",
                        "tether.action.data_sensitivity": "internal",
                        **cred_attrs("worker", jti_w, ["crm:read"], t0_s),
                    },
                ):
                    pass
            if kind in ("delegation_ok", "mcp_openinference"):
                sub_attrs = {
                    "gen_ai.operation.name": "invoke_agent",
                    "gen_ai.provider.name": "openai",
                    "gen_ai.agent.id": ORG + "worker",
                    "tether.delegation.scopes": ["crm:read"],
                    **cred_attrs("worker", jti_w, ["crm:read"], t0_s),
                }
                with span(worker, "invoke_agent worker", t0 + 5 * SEC, t0 + 20 * SEC, sub_attrs):
                    if kind == "delegation_ok":
                        with span(
                            worker,
                            "execute_tool crm.search",
                            t0 + 6 * SEC,
                            t0 + 7 * SEC,
                            {
                                "gen_ai.operation.name": "execute_tool",
                                "gen_ai.tool.name": "crm.search",
                                "tether.action.operation": "read",
                                "tether.action.data_sensitivity": "internal",
                                "server.address": "crm.internal",
                            },
                        ):
                            pass
                    else:
                        # an execute_tool span with the MCP client span under it (merged into
                        # one call), then an OpenInference TOOL span sending mail: the worker
                        # holds crm:read only, but mail.send is in the grant: no finding
                        with (
                            span(
                                worker,
                                "execute_tool crm.search",
                                t0 + 6 * SEC,
                                t0 + 8 * SEC,
                                {
                                    "gen_ai.operation.name": "execute_tool",
                                    "gen_ai.tool.name": "crm.search",
                                },
                            ),
                            span(
                                worker,
                                "tools/call crm.search",
                                t0 + 6 * SEC + 1000,
                                t0 + 8 * SEC - 1000,
                                {
                                    "mcp.method.name": "tools/call",
                                    "gen_ai.tool.name": "crm.search",
                                    "mcp.session.id": "s-1",
                                    "mcp.resource.uri": "crm://accounts/7",
                                    "server.address": "crm.internal",
                                },
                            ),
                        ):
                            pass
                        with span(
                            worker,
                            "mail.send",
                            t0 + 9 * SEC,
                            t0 + 10 * SEC,
                            {"openinference.span.kind": "TOOL", "tool.name": "mail.send"},
                        ):
                            pass
    return traces


# --- the Collector's Kafka exporter ------------------------------------------------------------------
def to_request(spans: Sequence[ReadableSpan]) -> Any:
    """The ``ExportTraceServiceRequest`` the SDK's OTLP exporter sends (and the Collector's
    Kafka exporter re-marshals from pdata)."""
    return encode_spans(spans)


def otlp_proto(spans: Sequence[ReadableSpan]) -> bytes:
    return bytes(to_request(spans).SerializeToString())


def otlp_json(spans: Sequence[ReadableSpan]) -> bytes:
    """OTLP JSON as pdata's marshaler writes it: lowerCamelCase, integer enums, 64-bit
    integers as strings, and hex (not base64) trace and span ids."""
    doc = json_format.MessageToDict(to_request(spans), use_integers_for_enums=True)
    for rs in doc.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for s in ss.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in s:
                        s[key] = base64.b64decode(s[key]).hex()
    return orjson.dumps(doc)


def records(
    spans: Sequence[ReadableSpan], *, encoding: str, per_trace: bool, batch: int = 7
) -> list[tuple[bytes | None, bytes]]:
    """Kafka records (key, value) as the exporter writes them.

    Without ``partition_traces_by_id`` each record is one exported batch (here: every ``batch``
    spans in export order, so a trace's spans straddle records) with no key; with it, each
    batch is split by trace and each record is keyed by the hex trace id.
    """
    encode = otlp_json if encoding == "otlp_json" else otlp_proto
    out: list[tuple[bytes | None, bytes]] = []
    for i in range(0, len(spans), batch):
        chunk = spans[i : i + batch]
        if not per_trace:
            out.append((None, encode(chunk)))
            continue
        by_trace: dict[int, list[ReadableSpan]] = {}
        for s in chunk:
            by_trace.setdefault(s.get_span_context().trace_id, []).append(s)
        for trace_id, group in by_trace.items():
            out.append((format(trace_id, "032x").encode(), encode(group)))
    return out
